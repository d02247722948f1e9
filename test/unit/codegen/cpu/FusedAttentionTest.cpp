//===- FusedAttentionTest.cpp - JIT-run the fused attention path ----------===//
//
// Each test writes an attn.attention in a function (what convert-attn-to-
// linalg{keep-attention} produces from a raised kernel), lowers it with
// attn-cpu-pipeline (attn-fuse-online, OpenMP, LLVM), JIT-compiles it with
// mlir::ExecutionEngine and compares with a double-precision loop nest
// written here. Sizes are not multiples of the tiles.
//
// FUSED_ATTENTION_BENCH=1 also runs the single-thread benchmark (set
// OMP_NUM_THREADS=1).
//
//===----------------------------------------------------------------------===//

#include "attn/CPU/Pipeline.h"
#include "attn/Linalg/Pipelines.h"

#include "mlir/ExecutionEngine/CRunnerUtils.h"
#include "mlir/ExecutionEngine/ExecutionEngine.h"
#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Parser/Parser.h"
#include "llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h"
#include "llvm/Support/TargetSelect.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>

namespace {

/// The OpenMP runtime the fused kernels call (Debian's libomp-22-dev).
constexpr const char *kLibOmp = "/usr/lib/llvm-22/lib/libomp.so";

/// A rank-4 (or rank-3) row-major tensor of floats, optionally stored as
/// bf16; `values` always holds what the kernel sees (rounded to bf16).
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> values;
  std::vector<uint16_t> bf16;
  StridedMemRefType<float, 4> desc4;
  StridedMemRefType<float, 3> desc3;
  StridedMemRefType<uint16_t, 4> descBf16;

  int64_t index(std::initializer_list<int64_t> idx) const {
    int64_t linear = 0;
    size_t axis = 0;
    for (int64_t i : idx)
      linear = linear * shape[axis++] + i;
    return linear;
  }
  float at(std::initializer_list<int64_t> idx) const {
    return values[index(idx)];
  }

  /// The descriptor the C interface takes.
  void *descriptor() {
    auto fill = [&](auto &desc, auto *data) {
      desc.basePtr = desc.data = data;
      desc.offset = 0;
      int64_t stride = 1;
      for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
        desc.sizes[i] = shape[i];
        desc.strides[i] = stride;
        stride *= shape[i];
      }
    };
    if (!bf16.empty()) {
      fill(descBf16, bf16.data());
      return &descBf16;
    }
    if (shape.size() == 3) {
      fill(desc3, values.data());
      return &desc3;
    }
    fill(desc4, values.data());
    return &desc4;
  }
};

uint16_t toBf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  bits += 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

float fromBf16(uint16_t value) {
  uint32_t bits = static_cast<uint32_t>(value) << 16;
  float result;
  std::memcpy(&result, &bits, 4);
  return result;
}

enum class Norm { Softmax, Normalize, None };

/// One attention variant: its MLIR regions and the same math in C++.
struct Case {
  std::string name;
  bool bf16 = false;
  int64_t B = 1, H = 1, G = 1, M = 1, N = 1, D = 1, E = 1;
  Norm norm = Norm::Softmax;
  bool sink = false, lse = false, doc = false;
  /// Static D and E in the tensor types.
  bool staticHeadDims = false;
  double scale = 0.25;
  /// Region bodies (MLIR text). score_mod: block args %s %b %h %m %n,
  /// yields %r. mask: %b %h %m %n, yields %keep. tile_class: %b %h %m0 %m1
  /// %n0 %n1, yields %cls; empty: none. Captured: %off (index), %doc.
  std::string scoreMod = "%r = arith.addf %s, %zero : f32\n";
  std::string mask = "%keep = arith.constant true\n";
  std::string tileClass;
  int64_t offset = 0;
  std::function<double(double s, int64_t h, int64_t m, int64_t n)> refScore =
      [](double s, int64_t, int64_t, int64_t) { return s; };
  std::function<bool(int64_t b, int64_t m, int64_t n)> refKeep =
      [](int64_t, int64_t, int64_t) { return true; };
};

std::string normName(Norm norm) {
  switch (norm) {
  case Norm::Softmax:
    return "softmax";
  case Norm::Normalize:
    return "normalize";
  case Norm::None:
    return "none";
  }
  return "";
}

/// The function `@attn(q, k, v, [sink], [doc], scale, off, o, [lse])`.
std::string kernelText(const Case &c) {
  std::string elem = c.bf16 ? "bf16" : "f32";
  std::string hd = c.staticHeadDims ? std::to_string(c.D) : "?";
  std::string ve = c.staticHeadDims ? std::to_string(c.E) : "?";
  std::string qType = "tensor<?x?x?x" + hd + "x" + elem + ">";
  std::string vType = "tensor<?x?x?x" + ve + "x" + elem + ">";
  std::string oType = "tensor<?x?x?x" + ve + "xf32>";
  std::string oMem = "memref<?x?x?x" + ve + "xf32>";
  std::string s = "func.func @attn(%q: " + qType + ", %k: " + qType +
                  ", %v: " + vType;
  if (c.sink)
    s += ", %sink: tensor<?x?x?xf32>";
  if (c.doc)
    s += ", %doc: tensor<?x?xi32>";
  s += ", %scale: f32, %off: index, %o: " + oMem;
  if (c.lse)
    s += ", %lse: memref<?x?x?xf32>";
  s += ") attributes {llvm.emit_c_interface} {\n";
  s += "  %zero = arith.constant 0.0 : f32\n";
  s += std::string("  ") + (c.lse ? "%out, %l" : "%out") +
       " = attn.attention <" + normName(c.norm) +
       "> %q, %k, %v scale(%scale)";
  if (c.sink)
    s += " sink(%sink : tensor<?x?x?xf32>)";
  s += " : " + qType + ", " + qType + ", " + vType + " -> " + oType;
  if (c.lse)
    s += ", tensor<?x?x?xf32>";
  s += "\n  score_mod {\n  ^bb0(%s: f32, %b: index, %h: index, %m: index, "
       "%n: index):\n" +
       c.scoreMod + "    attn.yield " + (c.scoreMod.empty() ? "%s" : "%r") +
       " : f32\n  } mask {\n"
       "  ^bb0(%b: index, %h: index, %m: index, %n: index):\n" +
       c.mask + "    attn.yield %keep : i1\n  }";
  if (!c.tileClass.empty())
    s += " tile_class {\n  ^bb0(%b: index, %h: index, %m0: index, %m1: "
         "index, %n0: index, %n1: index):\n" +
         c.tileClass + "    attn.yield %cls : i32\n  }";
  s += "\n  bufferization.materialize_in_destination %out in restrict "
       "writable %o : (" +
       oType + ", " + oMem + ") -> ()\n";
  if (c.lse)
    s += "  bufferization.materialize_in_destination %l in restrict writable "
         "%lse : (tensor<?x?x?xf32>, memref<?x?x?xf32>) -> ()\n";
  s += "  return\n}\n";
  return s;
}

class FusedAttentionTest : public ::testing::Test {
protected:
  FusedAttentionTest() {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    mlir::DialectRegistry registry;
    mlir::attn::registerCodegenDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  Tensor random(std::vector<int64_t> shape, bool bf16, double stddev = 1.0) {
    Tensor t;
    t.shape = std::move(shape);
    int64_t count = 1;
    for (int64_t s : t.shape)
      count *= s;
    std::normal_distribution<double> normal(0.0, stddev);
    for (int64_t i = 0; i < count; ++i) {
      float v = static_cast<float>(normal(rng));
      if (bf16) {
        t.bf16.push_back(toBf16(v));
        v = fromBf16(t.bf16.back());
      }
      t.values.push_back(v);
    }
    return t;
  }

  Tensor zeros(std::vector<int64_t> shape) {
    Tensor t;
    t.shape = std::move(shape);
    int64_t count = 1;
    for (int64_t s : t.shape)
      count *= s;
    t.values.assign(count, std::nanf(""));
    return t;
  }

  /// Lowers and JIT-compiles `text`; null (with a test failure) on error.
  std::unique_ptr<mlir::ExecutionEngine>
  compile(const std::string &text, const mlir::attn::CpuPipelineOptions &opts) {
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceString<mlir::ModuleOp>(text, &context);
    if (!module) {
      ADD_FAILURE() << "cannot parse\n" << text;
      return nullptr;
    }
    if (failed(mlir::attn::lowerToLLVMDialect(*module, opts))) {
      ADD_FAILURE() << "the fused pipeline failed on\n" << text;
      return nullptr;
    }
    auto builder = llvm::orc::JITTargetMachineBuilder::detectHost();
    if (!builder) {
      ADD_FAILURE() << llvm::toString(builder.takeError());
      return nullptr;
    }
    auto tm = builder->createTargetMachine();
    if (!tm) {
      ADD_FAILURE() << llvm::toString(tm.takeError());
      return nullptr;
    }
    targetMachine = std::move(*tm);
    std::function<llvm::Error(llvm::Module *)> transformer =
        mlir::makeOptimizingTransformer(3, 0, targetMachine.get());
    mlir::ExecutionEngineOptions options;
    options.transformer = transformer;
    options.jitCodeGenOptLevel = llvm::CodeGenOptLevel::Aggressive;
    llvm::StringRef libs[] = {kLibOmp};
    options.sharedLibPaths = libs;
    auto engine = mlir::ExecutionEngine::create(*module, options);
    if (!engine) {
      ADD_FAILURE() << llvm::toString(engine.takeError());
      return nullptr;
    }
    return std::move(*engine);
  }

  /// Runs `c` and compares O (and LSE) with the reference; returns the
  /// seconds of the kernel call.
  double check(const Case &c, double tolerance,
               const mlir::attn::CpuPipelineOptions &opts = {},
               bool compare = true);

  mlir::MLIRContext context{mlir::MLIRContext::Threading::DISABLED};
  std::unique_ptr<llvm::TargetMachine> targetMachine;
  std::mt19937 rng{42};
};

double FusedAttentionTest::check(const Case &c, double tolerance,
                                 const mlir::attn::CpuPipelineOptions &opts,
                                 bool compare) {
  std::string text = kernelText(c);
  std::unique_ptr<mlir::ExecutionEngine> engine = compile(text, opts);
  if (!engine)
    return 0;
  Tensor q = random({c.B, c.H, c.M, c.D}, c.bf16);
  Tensor k = random({c.B, c.G, c.N, c.D}, c.bf16);
  Tensor v = random({c.B, c.G, c.N, c.E}, c.bf16);
  Tensor sink = random({c.B, c.H, c.M}, false, 2.0);
  Tensor o = zeros({c.B, c.H, c.M, c.E});
  Tensor lse = zeros({c.B, c.H, c.M});
  // Documents of 5 tokens, offset by the batch.
  std::vector<int32_t> docIds;
  int64_t maxLen = std::max(c.M, c.N);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t i = 0; i < maxLen; ++i)
      docIds.push_back(static_cast<int32_t>((i + b) / 5));
  StridedMemRefType<int32_t, 2> docDesc{docIds.data(), docIds.data(), 0,
                                        {c.B, maxLen}, {maxLen, 1}};

  void *qd = q.descriptor(), *kd = k.descriptor(), *vd = v.descriptor();
  void *sd = sink.descriptor(), *od = o.descriptor(), *ld = lse.descriptor();
  void *docd = &docDesc;
  float scale = static_cast<float>(c.scale);
  int64_t off = c.offset;
  llvm::SmallVector<void *> args = {&qd, &kd, &vd};
  if (c.sink)
    args.push_back(&sd);
  if (c.doc)
    args.push_back(&docd);
  args.append({&scale, &off, &od});
  if (c.lse)
    args.push_back(&ld);
  // The first call pays for starting the OpenMP threads: benchmarks keep
  // the fastest of three.
  double seconds = INFINITY;
  for (int repeat = 0; repeat < (compare ? 1 : 3); ++repeat) {
    auto start = std::chrono::steady_clock::now();
    llvm::Error error = engine->invokePacked("_mlir_ciface_attn", args);
    seconds = std::min(seconds, std::chrono::duration<double>(
                                    std::chrono::steady_clock::now() - start)
                                    .count());
    if (error) {
      ADD_FAILURE() << llvm::toString(std::move(error));
      return 0;
    }
  }
  if (!compare)
    return seconds;

  auto keep = [&](int64_t b, int64_t m, int64_t n) {
    if (!c.doc)
      return c.refKeep(b, m, n);
    return docIds[b * maxLen + m] == docIds[b * maxLen + n] &&
           c.refKeep(b, m, n);
  };
  double maxRef = 0, maxErr = 0, maxLseErr = 0;
  std::vector<double> s(c.N);
  std::vector<char> kept(c.N);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.H; ++h)
      for (int64_t m = 0; m < c.M; ++m) {
        int64_t g = h / (c.H / c.G);
        double max = c.sink ? sink.at({b, h, m}) : -INFINITY;
        bool any = false;
        for (int64_t n = 0; n < c.N; ++n) {
          double dot = 0;
          for (int64_t d = 0; d < c.D; ++d)
            dot += static_cast<double>(q.at({b, h, m, d})) * k.at({b, g, n, d});
          s[n] = c.refScore(static_cast<float>(c.scale) * dot, h, m, n);
          kept[n] = keep(b, m, n);
          if (kept[n]) {
            max = std::max(max, s[n]);
            any = true;
          }
        }
        double den = 0, lseSum = 0;
        std::vector<double> p(c.N, 0.0);
        for (int64_t n = 0; n < c.N; ++n) {
          if (!kept[n])
            continue;
          p[n] = c.norm == Norm::Softmax ? std::exp(s[n] - max) : s[n];
          den += p[n];
          lseSum += p[n];
        }
        if (c.sink && max != -INFINITY)
          den += std::exp(sink.at({b, h, m}) - max);
        if (c.norm == Norm::None)
          den = 1;
        for (int64_t e = 0; e < c.E; ++e) {
          double acc = 0;
          for (int64_t n = 0; n < c.N; ++n)
            acc += p[n] * v.at({b, g, n, e});
          double ref = den == 0 ? 0 : acc / den;
          double got = o.at({b, h, m, e});
          maxRef = std::max(maxRef, std::abs(ref));
          double err = std::abs(got - ref);
          if (!(err <= maxErr))
            maxErr = std::isnan(err) ? INFINITY : err;
        }
        if (c.lse) {
          double ref = any ? max + std::log(lseSum) : -INFINITY;
          double got = lse.at({b, h, m});
          if (std::isinf(ref)) {
            EXPECT_TRUE(std::isinf(got) && got < 0)
                << c.name << ": LSE of an empty row is " << got;
          } else {
            maxLseErr = std::max(maxLseErr, std::abs(got - ref) /
                                                std::max(1.0, std::abs(ref)));
          }
        }
      }
  double rel = maxErr / std::max(maxRef, 1e-30);
  EXPECT_LE(rel, tolerance) << c.name << ": max abs err " << maxErr
                            << ", max |ref| " << maxRef;
  if (c.lse) {
    EXPECT_LE(maxLseErr, tolerance) << c.name << ": LSE";
  }
  return seconds;
}

/// Causal with the diagonal offset `off` = N - M; M > N leaves the first
/// rows fully masked.
Case causalCase(int64_t M, int64_t N, bool withTileClass) {
  Case c;
  c.name = "causal";
  c.B = 2, c.H = 3, c.G = 3, c.M = M, c.N = N, c.D = 24, c.E = 20;
  c.offset = N - M;
  c.lse = true;
  c.scoreMod = "";
  c.mask = "    %lim = arith.addi %m, %off : index\n"
           "    %keep = arith.cmpi sle, %n, %lim : index\n";
  if (withTileClass)
    c.tileClass = "    %c0 = arith.constant 0 : i32\n"
                  "    %c1 = arith.constant 1 : i32\n"
                  "    %c2 = arith.constant 2 : i32\n"
                  "    %lo = arith.addi %m0, %off : index\n"
                  "    %hi = arith.addi %m1, %off : index\n"
                  "    %empty = arith.cmpi sgt, %n0, %hi : index\n"
                  "    %full = arith.cmpi sle, %n1, %lo : index\n"
                  "    %x = arith.select %full, %c2, %c1 : i32\n"
                  "    %cls = arith.select %empty, %c0, %x : i32\n";
  int64_t off = c.offset;
  c.refKeep = [off](int64_t, int64_t m, int64_t n) { return n <= m + off; };
  return c;
}

TEST_F(FusedAttentionTest, CausalFullyMaskedRowsWithTileClass) {
  check(causalCase(53, 45, true), 1e-5);
}

TEST_F(FusedAttentionTest, NoHeadsRunsNoHeadAndDoesNotTrap) {
  // H = G = 0: the kernel's H / G must not divide by zero (SIGFPE).
  Case c = causalCase(5, 7, true);
  c.H = 0, c.G = 0;
  check(c, 1e-5);
}

TEST_F(FusedAttentionTest, CausalWithoutTileClass) {
  check(causalCase(37, 70, false), 1e-5);
}

TEST_F(FusedAttentionTest, SlidingWindowWithSinksAndSinkLogit) {
  Case c;
  c.name = "window+sinks";
  c.B = 1, c.H = 2, c.G = 1, c.M = 77, c.N = 77, c.D = 16, c.E = 16;
  c.staticHeadDims = true;
  c.sink = true;
  c.lse = true;
  // Keep the first 4 keys and a window of 9 keys ending at the query.
  c.mask = "    %c4 = arith.constant 4 : index\n"
           "    %c9 = arith.constant 9 : index\n"
           "    %first = arith.cmpi slt, %n, %c4 : index\n"
           "    %d = arith.subi %m, %n : index\n"
           "    %past = arith.cmpi sge, %d, %off : index\n"
           "    %near = arith.cmpi slt, %d, %c9 : index\n"
           "    %win = arith.andi %past, %near : i1\n"
           "    %keep = arith.ori %first, %win : i1\n";
  c.refKeep = [](int64_t, int64_t m, int64_t n) {
    return n < 4 || (m - n >= 0 && m - n < 9);
  };
  check(c, 1e-5);
}

TEST_F(FusedAttentionTest, SoftplusNormalize) {
  Case c;
  c.name = "softplus";
  c.B = 1, c.H = 2, c.G = 2, c.M = 19, c.N = 41, c.D = 8, c.E = 9;
  c.norm = Norm::Normalize;
  c.scoreMod = "    %pos = arith.maximumf %s, %zero : f32\n"
               "    %a = math.absf %s : f32\n"
               "    %na = arith.negf %a : f32\n"
               "    %e = math.exp %na : f32\n"
               "    %lp = math.log1p %e : f32\n"
               "    %r = arith.addf %pos, %lp : f32\n";
  c.refScore = [](double s, int64_t, int64_t, int64_t) {
    return std::max(s, 0.0) + std::log1p(std::exp(-std::abs(s)));
  };
  check(c, 1e-5);
}

TEST_F(FusedAttentionTest, SigmoidNoneWithQueryDependentBias) {
  Case c;
  c.name = "sigmoid";
  c.B = 2, c.H = 1, c.G = 1, c.M = 21, c.N = 33, c.D = 12, c.E = 17;
  c.norm = Norm::None;
  // sigmoid(s - 0.01 * (m - n)): an ALiBi-like bias that varies per lane.
  c.scoreMod = "    %mi = arith.index_cast %m : index to i64\n"
               "    %ni = arith.index_cast %n : index to i64\n"
               "    %di = arith.subi %mi, %ni : i64\n"
               "    %df = arith.sitofp %di : i64 to f32\n"
               "    %slope = arith.constant 0.01 : f32\n"
               "    %bias = arith.mulf %df, %slope : f32\n"
               "    %x = arith.subf %s, %bias : f32\n"
               "    %nx = arith.negf %x : f32\n"
               "    %ex = math.exp %nx : f32\n"
               "    %one = arith.constant 1.0 : f32\n"
               "    %den = arith.addf %one, %ex : f32\n"
               "    %r = arith.divf %one, %den : f32\n";
  c.refScore = [](double s, int64_t, int64_t m, int64_t n) {
    double x = s - 0.01f * static_cast<double>(m - n);
    return 1 / (1 + std::exp(-x));
  };
  check(c, 1e-5);
}

TEST_F(FusedAttentionTest, GroupedQuerySoftcap) {
  Case c;
  c.name = "gqa+softcap";
  c.B = 1, c.H = 6, c.G = 2, c.M = 29, c.N = 35, c.D = 32, c.E = 32;
  c.staticHeadDims = true;
  c.scoreMod = "    %cap = arith.constant 2.0 : f32\n"
               "    %x = arith.divf %s, %cap : f32\n"
               "    %t = math.tanh %x : f32\n"
               "    %r = arith.mulf %t, %cap : f32\n";
  c.refScore = [](double s, int64_t, int64_t, int64_t) {
    return 2.0 * std::tanh(s / 2.0);
  };
  check(c, 1e-5);
}

TEST_F(FusedAttentionTest, DocumentMaskGathers) {
  Case c = causalCase(40, 40, false);
  c.name = "document";
  c.doc = true;
  c.mask = "    %lim = arith.addi %m, %off : index\n"
           "    %causal = arith.cmpi sle, %n, %lim : index\n"
           "    %dm = attn.read %doc[%b, %m] : tensor<?x?xi32>\n"
           "    %dn = attn.read %doc[%b, %n] : tensor<?x?xi32>\n"
           "    %same = arith.cmpi eq, %dm, %dn : i32\n"
           "    %keep = arith.andi %causal, %same : i1\n";
  check(c, 1e-5);
}

TEST_F(FusedAttentionTest, Bf16Inputs) {
  Case c = causalCase(50, 50, true);
  c.name = "bf16";
  c.bf16 = true;
  check(c, 1e-5);
}

TEST_F(FusedAttentionTest, OtherTileSizes) {
  mlir::attn::CpuPipelineOptions options;
  options.queryTile = 8;
  options.keyTile = 16;
  check(causalCase(45, 45, true), 1e-5, options);
}

/// Single-thread GFLOP/s of causal fp32 attention (4 D flops per kept
/// (query, key) pair), for the report; FUSED_ATTENTION_BENCH=1 enables it.
TEST_F(FusedAttentionTest, Benchmark) {
  const char *enabled = std::getenv("FUSED_ATTENTION_BENCH");
  if (!enabled || std::string(enabled) != "1")
    GTEST_SKIP() << "set FUSED_ATTENTION_BENCH=1";
  const char *heads = std::getenv("FUSED_ATTENTION_HEADS");
  for (int64_t L : {1024, 4096}) {
    Case c = causalCase(L, L, true);
    c.B = 1;
    c.H = c.G = heads ? std::atoi(heads) : 4;
    c.D = c.E = 128;
    c.staticHeadDims = true;
    c.lse = false;
    double seconds = check(c, 0, {}, /*compare=*/false);
    double pairs = static_cast<double>(L) * (L + 1) / 2 * c.B * c.H;
    double gflops = 4.0 * c.D * pairs / seconds * 1e-9;
    std::printf("causal fp32 L=%lld H=%lld D=128: %.3f s, %.2f GFLOP/s\n",
                static_cast<long long>(L), static_cast<long long>(c.H),
                seconds, gflops);
  }
}

} // namespace
