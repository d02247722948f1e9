//===- FusedBackwardTest.cpp - JIT-run the fused attention backward -------===//
//
// Each test writes an attn.kernel holding an attn.attention (the recomputed
// forward, with its LSE) that feeds an attn.attention_backward, compiles it
// with the fused CPU pipeline (attn-fuse-online and attn-fuse-backward) and
// compares dQ, dK, dV and dSink with a double-precision loop nest of the
// same formulas written here. Sizes are not multiples of the tiles.
//
// FUSED_BACKWARD_BENCH=1 also runs the single-thread benchmark.
//
//===----------------------------------------------------------------------===//

#include "attn/CPU/CpuKernel.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>

using namespace attn;

namespace {

constexpr const char *kDyn = "-9223372036854775808";

/// One variant: its MLIR regions and the same math in C++.
struct Case {
  std::string name;
  bool bf16 = false, none = false, sink = false;
  int64_t B = 1, H = 1, G = 1, M = 1, N = 1, D = 1, E = 1;
  /// Head dims as literal sizes in the kernel's shapes.
  bool staticHeadDims = false;
  double scale = 0.3;
  /// score_mod body: block args %s %b %h %m %n, yields %r (empty: the
  /// score itself). mask body: %b %h %m %n, yields %keep. Both may use the
  /// kernel's dims (%M, %N).
  std::string scoreMod;
  std::string mask = "    %keep = arith.constant true\n";
  /// score_mod and its derivative at s (for query m, key n).
  std::function<double(double s, int64_t m, int64_t n)> refScore =
      [](double s, int64_t, int64_t) { return s; };
  std::function<double(double s, int64_t m, int64_t n)> refDerivative =
      [](double, int64_t, int64_t) { return 1.0; };
  std::function<bool(int64_t m, int64_t n)> refKeep = [](int64_t, int64_t) {
    return true;
  };
};

/// Causal with the diagonal at the bottom right (n <= m + N - M): M > N
/// leaves the first M - N rows with no key.
void makeCausal(Case &c) {
  c.mask = "    %off = arith.subi %N, %M : index\n"
           "    %lim = arith.addi %m, %off : index\n"
           "    %keep = arith.cmpi sle, %n, %lim : index\n";
  int64_t off = c.N - c.M;
  c.refKeep = [off](int64_t m, int64_t n) { return n <= m + off; };
}

/// score_mod = cap tanh(s / cap).
void makeSoftcap(Case &c, double cap) {
  std::string capText = std::to_string(cap);
  c.scoreMod = "    %cap = arith.constant " + capText + " : f32\n"
               "    %x = arith.divf %s, %cap : f32\n"
               "    %t = math.tanh %x : f32\n"
               "    %r = arith.mulf %t, %cap : f32\n";
  float capF = static_cast<float>(cap);
  c.refScore = [capF](double s, int64_t, int64_t) {
    return capF * std::tanh(s / capF);
  };
  c.refDerivative = [capF](double s, int64_t, int64_t) {
    double t = std::tanh(s / capF);
    return 1 - t * t;
  };
}

/// What a kernel of kernelText computes.
enum class Mode {
  /// The forward (with its LSE) feeding the backward: dQ, dK, dV, dSink.
  ForwardAndBackward,
  /// The forward alone: O and LSE.
  Forward,
  /// The backward alone, O and LSE given as inputs.
  Backward,
};

std::string kernelText(const Case &c, Mode mode = Mode::ForwardAndBackward) {
  std::string elem = c.bf16 ? "bf16" : "f32";
  std::string d = c.staticHeadDims ? std::to_string(c.D) : "?";
  std::string e = c.staticHeadDims ? std::to_string(c.E) : "?";
  std::string dShape = c.staticHeadDims ? std::to_string(c.D) : "\"D\"";
  std::string eShape = c.staticHeadDims ? std::to_string(c.E) : "\"E\"";
  std::string qType = "tensor<?x?x?x" + d + "x" + elem + ">";
  std::string vType = "tensor<?x?x?x" + e + "x" + elem + ">";
  std::string oType = "tensor<?x?x?x" + e + "xf32>";
  std::string dqType = "tensor<?x?x?x" + d + "xf32>";
  std::string rowType = "tensor<?x?x?xf32>";
  std::string qShape = "[\"B\", \"H\", \"M\", " + dShape + "]";
  std::string kShape = "[\"B\", \"G\", \"N\", " + dShape + "]";
  std::string vShape = "[\"B\", \"G\", \"N\", " + eShape + "]";
  std::string oShape = "[\"B\", \"H\", \"M\", " + eShape + "]";
  std::string rowShape = "[\"B\", \"H\", \"M\"]";
  std::string sinkOperand =
      c.sink ? " sink(%Sk : " + rowType + ")" : std::string();
  std::string regions =
      "\n  score_mod {\n  ^bb0(%s: f32, %b: index, %h: index, %m: index, "
      "%n: index):\n" +
      c.scoreMod + "    attn.yield " + (c.scoreMod.empty() ? "%s" : "%r") +
      " : f32\n  } mask {\n  ^bb0(%b: index, %h: index, %m: index, %n: "
      "index):\n" +
      c.mask + "    attn.yield %keep : i1\n  }\n";

  // Inputs and outputs: (name, MLIR type, shape).
  using Arg = std::tuple<std::string, std::string, std::string>;
  std::vector<Arg> inputs = {
      {"Q", qType, qShape}, {"K", qType, kShape}, {"V", vType, vShape}};
  if (mode == Mode::Backward) {
    inputs.push_back({"O", oType, oShape});
    inputs.push_back({"L", rowType, rowShape});
  }
  if (mode != Mode::Forward)
    inputs.push_back({"dO", oType, oShape});
  if (c.sink)
    inputs.push_back({"Sk", rowType, rowShape});
  std::vector<Arg> outputs;
  if (mode == Mode::Forward) {
    outputs = {{"O", oType, oShape}, {"L", rowType, rowShape}};
  } else {
    outputs = {{"dQ", dqType, qShape},
               {"dK", dqType, kShape},
               {"dV", oType, vShape}};
    if (c.sink)
      outputs.push_back({"dSk", rowType, rowShape});
  }

  std::string dims, inputNames, outputNames, outputTypes, shapes, args;
  for (int i = 0; i < 7; ++i)
    dims += std::string(i ? ", " : "") + kDyn;
  for (auto &[name, type, shape] : inputs) {
    inputNames += (inputNames.empty() ? "\"" : ", \"") + name + "\"";
    shapes += (shapes.empty() ? "" : ", ") + shape;
    args += ", %" + name + ": " + type;
  }
  std::string results, resultTypes;
  for (auto &[name, type, shape] : outputs) {
    outputNames += (outputNames.empty() ? "\"" : ", \"") + name + "\"";
    outputTypes += std::string(outputTypes.empty() ? "" : ", ") + "f32";
    shapes += ", " + shape;
    results += (results.empty() ? "%" : ", %") + name;
    resultTypes += (resultTypes.empty() ? "" : ", ") + type;
  }
  std::string s =
      "attn.kernel @bwd attributes {\n"
      "  dim_names = [\"B\", \"H\", \"G\", \"M\", \"N\", \"D\", \"E\"], "
      "dim_sizes = array<i64: " +
      dims + ">,\n  input_names = [" + inputNames +
      "], param_names = [\"scale\"], param_defaults = [1.0 : f32],\n"
      "  output_names = [" +
      outputNames + "], output_types = [" + outputTypes + "],\n  shapes = [" +
      shapes + "]} {\n^bb0(%B: index, %H: index, %G: index, %M: index, %N: "
               "index, %D: index, %E: index" +
      args + ", %scale: f32):\n";
  std::string types = qType + ", " + qType + ", " + vType;
  if (mode != Mode::Backward) {
    if (c.none)
      s += "  %O = attn.attention <none> %Q, %K, %V scale(%scale) : " + types +
           " -> " + oType + regions;
    else
      s += "  %O, %L = attn.attention <softmax> %Q, %K, %V scale(%scale)" +
           sinkOperand + " : " + types + " -> " + oType + ", " + rowType +
           regions;
  }
  if (mode != Mode::Forward) {
    // none reads no statistic: zeros of its shape, as attn-grad gives it.
    if (c.none && mode != Mode::Backward)
      s += "  %L = attn.einsum <none> [\"b\", \"h\", \"m\"] extents(%B, %H, "
           "%M) : " +
           rowType +
           " {\n  ^bb0(%b: index, %h: index, %m: index):\n"
           "    %z = arith.constant 0.0 : f32\n    attn.yield %z : f32\n  }\n";
    s += "  " + results + " = attn.attention_backward <" +
         (c.none ? "none" : "softmax") +
         "> %Q, %K, %V, %O, %L, %dO scale(%scale)" + sinkOperand + " : " +
         types + ", " + oType + ", " + rowType + ", " + oType + " -> " +
         resultTypes + regions;
  }
  s += "  attn.return " + results + " : " + resultTypes + "\n}\n";
  return s;
}

/// The gradients of one case, in double.
struct Gradients {
  std::vector<double> dQ, dK, dV, dSink;
};

/// Row-major linear index.
int64_t at(const HostTensor &t, std::initializer_list<int64_t> idx) {
  int64_t linear = 0;
  auto shape = t.getShape();
  size_t axis = 0;
  for (int64_t i : idx)
    linear = linear * shape[axis++] + i;
  return linear;
}

/// FlashAttention-2's backward of L = <dO, O> written plainly.
Gradients referenceBackward(const Case &c, const HostTensor &Q,
                            const HostTensor &K, const HostTensor &V,
                            const HostTensor &dO, const HostTensor *Sk) {
  Gradients g;
  g.dQ.assign(c.B * c.H * c.M * c.D, 0.0);
  g.dK.assign(c.B * c.G * c.N * c.D, 0.0);
  g.dV.assign(c.B * c.G * c.N * c.E, 0.0);
  g.dSink.assign(c.B * c.H * c.M, 0.0);
  auto q = [&](int64_t b, int64_t h, int64_t m, int64_t d) {
    return Q.getAsDouble(at(Q, {b, h, m, d}));
  };
  auto k = [&](int64_t b, int64_t h, int64_t n, int64_t d) {
    return K.getAsDouble(at(K, {b, h, n, d}));
  };
  auto v = [&](int64_t b, int64_t h, int64_t n, int64_t e) {
    return V.getAsDouble(at(V, {b, h, n, e}));
  };
  double scale = static_cast<float>(c.scale);
  std::vector<double> s(c.N), t(c.N), p(c.N), o(c.E);
  std::vector<char> kept(c.N);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t m = 0; m < c.M; ++m) {
        int64_t gh = h / (c.H / c.G);
        double max = -INFINITY;
        for (int64_t n = 0; n < c.N; ++n) {
          double dot = 0;
          for (int64_t d = 0; d < c.D; ++d)
            dot += q(b, h, m, d) * k(b, gh, n, d);
          s[n] = scale * dot;
          t[n] = c.refScore(s[n], m, n);
          kept[n] = c.refKeep(m, n);
          if (kept[n])
            max = std::max(max, t[n]);
        }
        // LSE' = log(sum over kept of e^t + e^sink).
        double z = c.sink ? Sk->getAsDouble(at(*Sk, {b, h, m})) : -INFINITY;
        double top = std::max(max, z);
        double sum = 0;
        for (int64_t n = 0; n < c.N; ++n)
          if (kept[n])
            sum += std::exp(t[n] - top);
        if (c.sink)
          sum += std::exp(z - top);
        double logDen = sum == 0 ? -INFINITY : top + std::log(sum);
        for (int64_t n = 0; n < c.N; ++n)
          p[n] = !kept[n] ? 0 : c.none ? t[n] : std::exp(t[n] - logDen);
        double delta = 0;
        for (int64_t e = 0; e < c.E; ++e) {
          o[e] = 0;
          for (int64_t n = 0; n < c.N; ++n)
            o[e] += p[n] * v(b, gh, n, e);
          delta += dO.getAsDouble(at(dO, {b, h, m, e})) * o[e];
        }
        for (int64_t n = 0; n < c.N; ++n) {
          if (!kept[n])
            continue;
          double dp = 0;
          for (int64_t e = 0; e < c.E; ++e) {
            double go = dO.getAsDouble(at(dO, {b, h, m, e}));
            dp += go * v(b, gh, n, e);
            g.dV[((b * c.G + gh) * c.N + n) * c.E + e] += p[n] * go;
          }
          double ds = c.none ? dp : p[n] * (dp - delta);
          double dt = ds * c.refDerivative(s[n], m, n);
          for (int64_t d = 0; d < c.D; ++d) {
            g.dQ[((b * c.H + h) * c.M + m) * c.D + d] +=
                scale * dt * k(b, gh, n, d);
            g.dK[((b * c.G + gh) * c.N + n) * c.D + d] +=
                scale * dt * q(b, h, m, d);
          }
        }
        if (c.sink)
          g.dSink[(b * c.H + h) * c.M + m] =
              logDen == -INFINITY ? -delta : -std::exp(z - logDen) * delta;
      }
  return g;
}

class FusedBackwardTest : public ::testing::Test {
protected:
  FusedBackwardTest() {
    mlir::DialectRegistry registry;
    mlir::attn::registerCodegenDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  std::unique_ptr<CpuKernel> compile(const std::string &text,
                                     const CpuKernelOptions &options) {
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceString<mlir::ModuleOp>(text, &context);
    if (!module) {
      ADD_FAILURE() << "cannot parse\n" << text;
      return nullptr;
    }
    llvm::Expected<std::unique_ptr<CpuKernel>> kernel =
        CpuKernel::compile(*module, options);
    if (!kernel) {
      ADD_FAILURE() << llvm::toString(kernel.takeError()) << "\n" << text;
      return nullptr;
    }
    return std::move(*kernel);
  }

  HostTensor random(DType type, std::vector<int64_t> shape,
                    double stddev = 1.0) {
    HostTensor tensor(type, std::move(shape));
    std::normal_distribution<double> normal(0.0, stddev);
    for (int64_t i = 0; i < tensor.getNumElements(); ++i)
      tensor.setFromDouble(i, normal(rng));
    return tensor;
  }

  /// A tensor every entry of which is NaN: the kernel must write them all.
  HostTensor poisoned(std::vector<int64_t> shape) {
    HostTensor tensor(DType::F32, std::move(shape));
    for (int64_t i = 0; i < tensor.getNumElements(); ++i)
      tensor.setFromDouble(i, NAN);
    return tensor;
  }

  /// Random inputs of `c`: Q, K, V, dO and the sink logits.
  struct Inputs {
    HostTensor Q, K, V, dO, Sk;
  };
  Inputs makeInputs(const Case &c);

  /// Compiles `c` with `options` and runs it on `in`: dQ, dK, dV and, with a
  /// sink, dSink. Empty (with a test failure) on error.
  std::vector<HostTensor> run(const Case &c, const Inputs &in,
                              const CpuKernelOptions &options);

  /// Compiles and runs `c` and compares every gradient with the
  /// reference: max |error| / max |reference| at most `tolerance`.
  void check(const Case &c, double tolerance,
             const CpuKernelOptions &options = {});

  mlir::MLIRContext context{mlir::MLIRContext::Threading::DISABLED};
  std::mt19937 rng{7};
};

void expectClose(const std::string &what, const HostTensor &out,
                 const std::vector<double> &ref, double tolerance) {
  ASSERT_EQ(out.getNumElements(), static_cast<int64_t>(ref.size())) << what;
  double maxRef = 0, maxErr = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    double got = out.getAsDouble(static_cast<int64_t>(i));
    ASSERT_TRUE(std::isfinite(got)) << what << "[" << i << "] = " << got;
    maxRef = std::max(maxRef, std::abs(ref[i]));
    maxErr = std::max(maxErr, std::abs(got - ref[i]));
  }
  EXPECT_LE(maxErr, tolerance * std::max(maxRef, 1e-30))
      << what << ": max abs err " << maxErr << ", max |ref| " << maxRef;
}

FusedBackwardTest::Inputs FusedBackwardTest::makeInputs(const Case &c) {
  DType elem = c.bf16 ? DType::BF16 : DType::F32;
  Inputs in;
  in.Q = random(elem, {c.B, c.H, c.M, c.D});
  in.K = random(elem, {c.B, c.G, c.N, c.D});
  in.V = random(elem, {c.B, c.G, c.N, c.E});
  in.dO = random(DType::F32, {c.B, c.H, c.M, c.E});
  in.Sk = random(DType::F32, {c.B, c.H, c.M}, 2.0);
  return in;
}

std::vector<HostTensor> FusedBackwardTest::run(const Case &c, const Inputs &in,
                                               const CpuKernelOptions &options) {
  std::unique_ptr<CpuKernel> kernel = compile(kernelText(c), options);
  if (!kernel)
    return {};
  EXPECT_TRUE(kernel->isFused());
  std::vector<HostTensor> outputs;
  outputs.push_back(poisoned({c.B, c.H, c.M, c.D}));
  outputs.push_back(poisoned({c.B, c.G, c.N, c.D}));
  outputs.push_back(poisoned({c.B, c.G, c.N, c.E}));
  if (c.sink)
    outputs.push_back(poisoned({c.B, c.H, c.M}));
  std::vector<const HostTensor *> inputs = {&in.Q, &in.K, &in.V, &in.dO};
  if (c.sink)
    inputs.push_back(&in.Sk);
  std::vector<HostTensor *> outputPointers;
  for (HostTensor &output : outputs)
    outputPointers.push_back(&output);
  if (llvm::Error error =
          kernel->run({c.B, c.H, c.G, c.M, c.N, c.D, c.E}, inputs,
                      {static_cast<double>(static_cast<float>(c.scale))},
                      outputPointers)) {
    ADD_FAILURE() << llvm::toString(std::move(error));
    return {};
  }
  return outputs;
}

void FusedBackwardTest::check(const Case &c, double tolerance,
                              const CpuKernelOptions &options) {
  Inputs in = makeInputs(c);
  std::vector<HostTensor> got = run(c, in, options);
  ASSERT_FALSE(got.empty());
  Gradients ref =
      referenceBackward(c, in.Q, in.K, in.V, in.dO, c.sink ? &in.Sk : nullptr);
  expectClose(c.name + " dQ", got[0], ref.dQ, tolerance);
  expectClose(c.name + " dK", got[1], ref.dK, tolerance);
  expectClose(c.name + " dV", got[2], ref.dV, tolerance);
  if (c.sink)
    expectClose(c.name + " dSink", got[3], ref.dSink, tolerance);
}

TEST_F(FusedBackwardTest, CausalFullyMaskedRowsGroupedQuery) {
  Case c;
  c.name = "causal gqa";
  c.B = 2, c.H = 6, c.G = 2, c.M = 53, c.N = 45, c.D = 24, c.E = 20;
  makeCausal(c);
  check(c, 1e-5);
}

TEST_F(FusedBackwardTest, SoftcapWithSinkGroupedQuery) {
  Case c;
  c.name = "softcap+sink";
  c.B = 1, c.H = 6, c.G = 2, c.M = 37, c.N = 70, c.D = 32, c.E = 17;
  c.sink = true;
  makeCausal(c);
  makeSoftcap(c, 2.5);
  check(c, 1e-5);
}

TEST_F(FusedBackwardTest, SinkOnFullyMaskedRows) {
  // Rows with no key still have the sink: LSE = -inf, P_sink = 1.
  Case c;
  c.name = "sink, empty rows";
  c.B = 2, c.H = 2, c.G = 1, c.M = 40, c.N = 19, c.D = 16, c.E = 16;
  c.staticHeadDims = true;
  c.sink = true;
  makeCausal(c);
  check(c, 1e-5);
}

TEST_F(FusedBackwardTest, NoneWithSigmoidAndWindow) {
  Case c;
  c.name = "none+sigmoid";
  c.B = 2, c.H = 2, c.G = 1, c.M = 21, c.N = 33, c.D = 12, c.E = 17;
  c.none = true;
  c.scoreMod = "    %ns = arith.negf %s : f32\n"
               "    %ex = math.exp %ns : f32\n"
               "    %one = arith.constant 1.0 : f32\n"
               "    %den = arith.addf %one, %ex : f32\n"
               "    %r = arith.divf %one, %den : f32\n";
  c.refScore = [](double s, int64_t, int64_t) {
    return 1 / (1 + std::exp(-s));
  };
  c.refDerivative = [](double s, int64_t, int64_t) {
    double sig = 1 / (1 + std::exp(-s));
    return sig * (1 - sig);
  };
  // Keys within 9 of the query, either side.
  c.mask = "    %c9 = arith.constant 9 : index\n"
           "    %lo = arith.subi %m, %c9 : index\n"
           "    %hi = arith.addi %m, %c9 : index\n"
           "    %a = arith.cmpi sge, %n, %lo : index\n"
           "    %z = arith.cmpi sle, %n, %hi : index\n"
           "    %keep = arith.andi %a, %z : i1\n";
  c.refKeep = [](int64_t m, int64_t n) { return std::abs(m - n) <= 9; };
  check(c, 1e-5);
}

TEST_F(FusedBackwardTest, Bf16Inputs) {
  Case c;
  c.name = "bf16";
  c.bf16 = true;
  c.B = 1, c.H = 3, c.G = 3, c.M = 50, c.N = 50, c.D = 40, c.E = 24;
  makeCausal(c);
  makeSoftcap(c, 4.0);
  check(c, 1e-5);
}

TEST_F(FusedBackwardTest, OtherTileSizes) {
  Case c;
  c.name = "tiles 8x16";
  c.B = 1, c.H = 4, c.G = 2, c.M = 45, c.N = 38, c.D = 9, c.E = 11;
  makeCausal(c);
  CpuKernelOptions options;
  options.pipeline.queryTile = 8;
  options.pipeline.keyTile = 16;
  options.pipeline.backwardLaneTile = 8;
  options.pipeline.backwardRowTile = 16;
  check(c, 1e-5, options);
}

TEST_F(FusedBackwardTest, SameBitsWhateverTheThreadCount) {
  // Each pass writes only its own rows and sums each element in one order:
  // no races, and the thread count cannot change a bit.
  Case c;
  c.name = "threads";
  c.B = 2, c.H = 6, c.G = 2, c.M = 75, c.N = 67, c.D = 16, c.E = 24;
  c.sink = true;
  makeCausal(c);
  makeSoftcap(c, 3.0);
  Inputs in = makeInputs(c);
  CpuKernelOptions options;
  options.threads = 1;
  std::vector<HostTensor> one = run(c, in, options);
  for (unsigned threads : {2u, 3u}) {
    options.threads = threads;
    std::vector<HostTensor> many = run(c, in, options);
    ASSERT_EQ(one.size(), many.size());
    for (size_t i = 0; i < one.size(); ++i) {
      size_t bytes = one[i].getNumElements() * sizeof(float);
      EXPECT_EQ(std::memcmp(one[i].data(), many[i].data(), bytes), 0)
          << "gradient " << i << " with " << threads << " threads";
    }
  }
}

/// Single-thread GFLOP/s of the fused backward on causal fp32 attention at
/// D = 128, counting 2.5 times the forward's 4 D FLOPs per kept (query, key)
/// pair (S, dP, dV, dK and dQ at 2 D each; the recomputation of S and dP
/// in the second pass is not counted), and their share of the fp32 FMA peak
/// given in FUSED_BACKWARD_PEAK (GFLOP/s, from attn-fma-peak).
/// FUSED_BACKWARD_BENCH=1 enables it; FUSED_BACKWARD_L sets L (4096).
TEST_F(FusedBackwardTest, Benchmark) {
  const char *enabled = std::getenv("FUSED_BACKWARD_BENCH");
  if (!enabled || std::string(enabled) != "1")
    GTEST_SKIP() << "set FUSED_BACKWARD_BENCH=1";
  const char *length = std::getenv("FUSED_BACKWARD_L");
  const char *peakText = std::getenv("FUSED_BACKWARD_PEAK");
  double peak = peakText ? std::atof(peakText) : 0;
  int64_t L = length ? std::atoll(length) : 4096;
  Case c;
  c.B = 1, c.H = c.G = 1, c.M = c.N = L, c.D = c.E = 128;
  c.staticHeadDims = true;
  c.scale = 1 / std::sqrt(128.0);
  makeCausal(c);
  CpuKernelOptions options;
  options.threads = 1;
  std::unique_ptr<CpuKernel> forward = compile(kernelText(c, Mode::Forward),
                                               options);
  std::unique_ptr<CpuKernel> backward =
      compile(kernelText(c, Mode::Backward), options);
  ASSERT_TRUE(forward && backward);
  std::vector<int64_t> dims = {1, 1, 1, L, L, 128, 128};
  HostTensor Q = random(DType::F32, {1, 1, L, 128});
  HostTensor K = random(DType::F32, {1, 1, L, 128});
  HostTensor V = random(DType::F32, {1, 1, L, 128});
  HostTensor dO = random(DType::F32, {1, 1, L, 128});
  HostTensor O(DType::F32, {1, 1, L, 128}), LSE(DType::F32, {1, 1, L});
  HostTensor dQ(DType::F32, {1, 1, L, 128}), dK(DType::F32, {1, 1, L, 128}),
      dV(DType::F32, {1, 1, L, 128});
  // The fastest of three runs of each.
  auto time = [&](const std::function<void()> &run) {
    double best = INFINITY;
    for (int repeat = 0; repeat < 3; ++repeat) {
      auto start = std::chrono::steady_clock::now();
      run();
      best = std::min(best, std::chrono::duration<double>(
                                std::chrono::steady_clock::now() - start)
                                .count());
    }
    return best;
  };
  double forwardSeconds = time([&] {
    ASSERT_FALSE(llvm::errorToBool(
        forward->run(dims, {&Q, &K, &V}, {c.scale}, {&O, &LSE})));
  });
  double backwardSeconds = time([&] {
    ASSERT_FALSE(llvm::errorToBool(backward->run(
        dims, {&Q, &K, &V, &O, &LSE, &dO}, {c.scale}, {&dQ, &dK, &dV})));
  });
  double pairs = static_cast<double>(L) * (L + 1) / 2;
  double forwardGflops = 4.0 * 128 * pairs / forwardSeconds * 1e-9;
  double backwardGflops = 2.5 * 4.0 * 128 * pairs / backwardSeconds * 1e-9;
  std::printf("causal fp32 L=%lld D=128, 1 thread: forward %.3f s %.2f "
              "GFLOP/s, backward %.3f s %.2f GFLOP/s",
              static_cast<long long>(L), forwardSeconds, forwardGflops,
              backwardSeconds, backwardGflops);
  if (peak > 0)
    std::printf(" (forward %.1f%%, backward %.1f%% of the %.2f GFLOP/s FMA "
                "peak)",
                100 * forwardGflops / peak, 100 * backwardGflops / peak, peak);
  std::printf("\n");
}

} // namespace
