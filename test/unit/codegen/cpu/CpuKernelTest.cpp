//===- CpuKernelTest.cpp - JIT-run kernels against plain loops ------------===//
//
// Each test writes a kernel as MLIR text, compiles it with the unfused CPU
// pipeline, runs it on random data at sizes that are not multiples of 8 and
// compares with a double-precision loop nest written here.
//
//===----------------------------------------------------------------------===//

#include "attn/CPU/CpuKernel.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/CPU/Pipeline.h"
#include "attn/Linalg/Pipelines.h"
#include "attn/Runtime/Tensor.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <functional>
#include <random>
#include <string>

using namespace attn;

namespace {

constexpr const char *kDyn = "-9223372036854775808";

/// The attribute dictionary of a kernel with the given dims, all symbolic.
std::string dynamicDims(int count) {
  std::string text = "array<i64: ";
  for (int i = 0; i < count; ++i)
    text += std::string(i ? ", " : "") + kDyn;
  return text + ">";
}

class CpuKernelTest : public ::testing::Test {
protected:
  CpuKernelTest() {
    mlir::DialectRegistry registry;
    mlir::attn::registerCodegenDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  /// Parses and compiles `text`; fails the test on error.
  std::unique_ptr<CpuKernel> compile(const std::string &text) {
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceString<mlir::ModuleOp>(text, &context);
    if (!module) {
      ADD_FAILURE() << "cannot parse the kernel";
      return nullptr;
    }
    llvm::Expected<std::unique_ptr<CpuKernel>> kernel =
        CpuKernel::compile(*module, CpuKernelOptions());
    if (!kernel) {
      ADD_FAILURE() << llvm::toString(kernel.takeError());
      return nullptr;
    }
    return std::move(*kernel);
  }

  HostTensor random(DType type, std::vector<int64_t> shape) {
    HostTensor tensor(type, std::move(shape));
    std::normal_distribution<double> normal(0.0, 1.0);
    for (int64_t i = 0; i < tensor.getNumElements(); ++i)
      tensor.setFromDouble(i, normal(rng));
    return tensor;
  }

  mlir::MLIRContext context{mlir::MLIRContext::Threading::DISABLED};
  std::mt19937 rng{1234};
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

/// What the reference attention needs to know about a variant.
struct Variant {
  using Accessor = std::function<double(int64_t, int64_t, int64_t, int64_t)>;
  Variant(Accessor q, Accessor k, Accessor v)
      : q(std::move(q)), k(std::move(k)), v(std::move(v)) {}

  /// q(b, h, m, d), k(b, h, n, d), v(b, h, n, e).
  Accessor q, k, v;
  std::function<bool(int64_t m, int64_t n)> keep = [](int64_t, int64_t) {
    return true;
  };
  /// Sink logit per head, if any.
  std::function<double(int64_t h)> sink;
  /// sigmoid(S + bias) instead of softmax.
  bool sigmoid = false;
  double bias = 0;
  double scale = 1;
};

/// O[b, h, m, e] and LSE[b, h, m] computed in double.
void referenceAttention(const Variant &var, int64_t B, int64_t H, int64_t M,
                        int64_t N, int64_t D, HostTensor &O, HostTensor *LSE) {
  std::vector<double> s(N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t m = 0; m < M; ++m) {
        double max = var.sink ? var.sink(h) : -INFINITY;
        for (int64_t n = 0; n < N; ++n) {
          double acc = 0;
          for (int64_t d = 0; d < D; ++d)
            acc += var.q(b, h, m, d) * var.k(b, h, n, d);
          s[n] = acc * var.scale;
          if (var.keep(m, n))
            max = std::max(max, s[n]);
        }
        double sum =
            var.sink && max != -INFINITY ? std::exp(var.sink(h) - max) : 0.0;
        double lseSum = 0;
        for (int64_t n = 0; n < N; ++n)
          if (var.keep(m, n)) {
            sum += std::exp(s[n] - max);
            lseSum += std::exp(s[n] - max);
          }
        if (LSE)
          LSE->setFromDouble(at(*LSE, {b, h, m}),
                             lseSum == 0 ? -INFINITY : max + std::log(lseSum));
        for (int64_t e = 0; e < D; ++e) {
          double acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            if (!var.keep(m, n))
              continue;
            double p = var.sigmoid ? 1 / (1 + std::exp(-(s[n] + var.bias)))
                                   : std::exp(s[n] - max) / sum;
            acc += p * var.v(b, h, n, e);
          }
          O.setFromDouble(at(O, {b, h, m, e}), acc);
        }
      }
}

/// Accessor for a dense [B, H, L, D] tensor.
std::function<double(int64_t, int64_t, int64_t, int64_t)>
dense(const HostTensor &t) {
  return [&t](int64_t b, int64_t h, int64_t l, int64_t d) {
    return t.getAsDouble(at(t, {b, h, l, d}));
  };
}

/// The S = sum[d](Q K) * scale einsum over 4-D Q and K.
const char *kScores = R"(
  %S = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
    %q = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xf32>
    %k = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xf32>
    %p = arith.mulf %q, %k : f32
    %s = arith.mulf %p, %scale : f32
    attn.yield %s : f32
  })";

/// O = sum[n](P V) over 4-D P and V.
const char *kOutput = R"(
  %O = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
    %p = attn.read %P[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %v = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xf32>
    %pv = arith.mulf %p, %v : f32
    attn.yield %pv : f32
  })";

/// A kernel over dims B, H, M, N, D with inputs Q, K, V (f32, 4-D), the
/// param `scale`, extra inputs/params/outputs and a body.
std::string makeKernel(const std::string &name, const std::string &inputNames,
                       const std::string &outputs, const std::string &outTypes,
                       const std::string &shapes, const std::string &args,
                       const std::string &paramNames,
                       const std::string &paramDefaults,
                       const std::string &body) {
  return "attn.kernel @" + name + " attributes {\n" +
         "  dim_names = [\"B\", \"H\", \"M\", \"N\", \"D\"], dim_sizes = " +
         dynamicDims(5) + ",\n  input_names = [" + inputNames +
         "], param_names = [" + paramNames + "], param_defaults = [" +
         paramDefaults + "],\n  output_names = [" + outputs +
         "], output_types = [" + outTypes + "],\n  shapes = [" + shapes +
         "]} {\n^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, " +
         args + "):" + body + "\n}\n";
}

const char *kQKVShapes =
    R"(["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"])";
const char *kQKVArgs = "%Q: tensor<?x?x?x?xf32>, %K: tensor<?x?x?x?xf32>, "
                       "%V: tensor<?x?x?x?xf32>";

void expectClose(const HostTensor &out, const HostTensor &ref, double tol) {
  for (int64_t i = 0; i < out.getNumElements(); ++i)
    ASSERT_FALSE(std::isnan(out.getAsDouble(i))) << "NaN at " << i;
  EXPECT_LE(relativeError(out, ref), tol);
}

TEST_F(CpuKernelTest, PlainSoftmaxAttention) {
  std::string text = makeKernel(
      "plain", R"("Q", "K", "V")", R"("O")", "f32",
      std::string(kQKVShapes) + R"(, ["B", "H", "M", "D"])",
      std::string(kQKVArgs) + ", %scale: f32", R"("scale")", "1.0 : f32",
      std::string(kScores) + R"(
  %P = attn.softmax %S dimension(3) : tensor<?x?x?x?xf32>)" +
          kOutput + "\n  attn.return %O : tensor<?x?x?x?xf32>");
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  std::fprintf(stderr, "JIT: lowering %.3f s, LLVM %.3f s\n",
               kernel->getLoweringSeconds(), kernel->getCodegenSeconds());
  int64_t B = 2, H = 3, M = 13, N = 19, D = 7;
  HostTensor Q = random(DType::F32, {B, H, M, D});
  HostTensor K = random(DType::F32, {B, H, N, D});
  HostTensor V = random(DType::F32, {B, H, N, D});
  HostTensor O(DType::F32, {B, H, M, D}), ref(DType::F32, {B, H, M, D});
  double scale = 1 / std::sqrt(double(D));
  ASSERT_FALSE(llvm::errorToBool(
      kernel->run({B, H, M, N, D}, {&Q, &K, &V}, {scale}, {&O})));
  Variant var{dense(Q), dense(K), dense(V)};
  var.scale = float(scale);
  referenceAttention(var, B, H, M, N, D, ref, nullptr);
  expectClose(O, ref, 1e-5);
}

TEST_F(CpuKernelTest, CausalWithFullyMaskedRows) {
  // M > N with the causal diagonal aligned to the bottom right: the first
  // M - N query rows see no key at all.
  std::string text = makeKernel(
      "causal", R"("Q", "K", "V")", R"("O", "LSE")", "f32, f32",
      std::string(kQKVShapes) + R"(, ["B", "H", "M", "D"], ["B", "H", "M"])",
      std::string(kQKVArgs) + ", %scale: f32", R"("scale")", "1.0 : f32",
      std::string(kScores) + R"(
  %kept = attn.keep %S ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %lim = arith.addi %m, %off : index
    %c = arith.cmpi sle, %n, %lim : index
    attn.yield %c : i1
  }
  %P = attn.softmax %kept dimension(3) : tensor<?x?x?x?xf32>)" +
          kOutput + R"(
  %L = attn.einsum <logsumexp> ["b", "h", "m"] reduce ["n"] extents(%B, %H, %M, %N) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %s = attn.read %kept[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    attn.yield %s : f32
  }
  attn.return %O, %L : tensor<?x?x?x?xf32>, tensor<?x?x?xf32>)");
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  int64_t B = 1, H = 2, M = 17, N = 11, D = 5;
  HostTensor Q = random(DType::F32, {B, H, M, D});
  HostTensor K = random(DType::F32, {B, H, N, D});
  HostTensor V = random(DType::F32, {B, H, N, D});
  HostTensor O(DType::F32, {B, H, M, D}), refO(DType::F32, {B, H, M, D});
  HostTensor L(DType::F32, {B, H, M}), refL(DType::F32, {B, H, M});
  // Poison the outputs: every entry must be written.
  for (int64_t i = 0; i < O.getNumElements(); ++i)
    O.setFromDouble(i, NAN);
  ASSERT_FALSE(llvm::errorToBool(
      kernel->run({B, H, M, N, D}, {&Q, &K, &V}, {0.5}, {&O, &L})));
  Variant var{dense(Q), dense(K), dense(V)};
  var.scale = 0.5;
  var.keep = [&](int64_t m, int64_t n) { return n <= m + (N - M); };
  referenceAttention(var, B, H, M, N, D, refO, &refL);
  expectClose(O, refO, 1e-5);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t m = 0; m < M; ++m) {
      double lse = L.getAsDouble(at(L, {0, h, m}));
      double want = refL.getAsDouble(at(refL, {0, h, m}));
      if (m < M - N) {
        EXPECT_EQ(lse, -INFINITY) << "row " << m;
        for (int64_t e = 0; e < D; ++e)
          EXPECT_EQ(O.getAsDouble(at(O, {0, h, m, e})), 0.0);
      } else {
        EXPECT_NEAR(lse, want, 1e-5 * std::max(1.0, std::fabs(want)));
      }
    }
}

TEST_F(CpuKernelTest, SinkTensor) {
  std::string text =
      makeKernel("sink", R"("Q", "K", "V", "Sk")", R"("O")", "f32",
                 std::string(kQKVShapes) + R"(, ["H"], ["B", "H", "M", "D"])",
                 std::string(kQKVArgs) + ", %Sk: tensor<?xf32>, %scale: f32",
                 R"("scale")", "1.0 : f32",
                 std::string(kScores) + R"(
  %kept = attn.keep %S ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  %E = attn.einsum <none> ["b", "h", "m"] extents(%B, %H, %M) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index):
    %s = attn.read %Sk[%h] : tensor<?xf32>
    attn.yield %s : f32
  }
  %P = attn.softmax %kept dimension(3) sink(%E : tensor<?x?x?xf32>) : tensor<?x?x?x?xf32>)" +
                     kOutput + "\n  attn.return %O : tensor<?x?x?x?xf32>");
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  int64_t B = 2, H = 3, M = 9, N = 9, D = 5;
  HostTensor Q = random(DType::F32, {B, H, M, D});
  HostTensor K = random(DType::F32, {B, H, N, D});
  HostTensor V = random(DType::F32, {B, H, N, D});
  HostTensor Sk = random(DType::F32, {H});
  HostTensor O(DType::F32, {B, H, M, D}), ref(DType::F32, {B, H, M, D});
  ASSERT_FALSE(llvm::errorToBool(
      kernel->run({B, H, M, N, D}, {&Q, &K, &V, &Sk}, {0.7}, {&O})));
  Variant var{dense(Q), dense(K), dense(V)};
  var.scale = float(0.7);
  var.keep = [](int64_t m, int64_t n) { return n <= m; };
  var.sink = [&](int64_t h) { return Sk.getAsDouble(h); };
  referenceAttention(var, B, H, M, N, D, ref, nullptr);
  expectClose(O, ref, 1e-5);
}

TEST_F(CpuKernelTest, PagedGather) {
  // K and V live in pages of 4 rows; Pages[b, n / 4] names the page.
  const char *text = R"(
attn.kernel @paged attributes {
  dim_names = ["B", "H", "M", "N", "D", "P", "NP"],
  dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
  input_names = ["Q", "Kc", "Vc", "Pages"], param_names = [], param_defaults = [],
  output_names = ["O"], output_types = [f32],
  shapes = [["B", "H", "M", "D"], ["P", 4, "H", "D"], ["P", 4, "H", "D"], ["B", "NP"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %P: index, %NP: index,
     %Q: tensor<?x?x?x?xf32>, %Kc: tensor<?x4x?x?xf32>, %Vc: tensor<?x4x?x?xf32>, %Pages: tensor<?x?xi32>):
  %S = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
    %c4 = arith.constant 4 : index
    %pg = arith.floordivsi %n, %c4 : index
    %slot = arith.remsi %n, %c4 : index
    %id32 = attn.read %Pages[%b, %pg] : tensor<?x?xi32>
    %id = arith.index_cast %id32 : i32 to index
    %q = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xf32>
    %k = attn.read %Kc[%id, %slot, %h, %d] : tensor<?x4x?x?xf32>
    %p = arith.mulf %q, %k : f32
    attn.yield %p : f32
  }
  %Pr = attn.softmax %S dimension(3) : tensor<?x?x?x?xf32>
  %O = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
    %c4 = arith.constant 4 : index
    %pg = arith.floordivsi %n, %c4 : index
    %slot = arith.remsi %n, %c4 : index
    %id32 = attn.read %Pages[%b, %pg] : tensor<?x?xi32>
    %id = arith.index_cast %id32 : i32 to index
    %p = attn.read %Pr[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %v = attn.read %Vc[%id, %slot, %h, %e] : tensor<?x4x?x?xf32>
    %pv = arith.mulf %p, %v : f32
    attn.yield %pv : f32
  }
  attn.return %O : tensor<?x?x?x?xf32>
}
)";
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  int64_t B = 2, H = 3, M = 5, N = 11, D = 6, NP = 3, P = 7;
  HostTensor Q = random(DType::F32, {B, H, M, D});
  HostTensor Kc = random(DType::F32, {P, 4, H, D});
  HostTensor Vc = random(DType::F32, {P, 4, H, D});
  HostTensor Pages(DType::I32, {B, NP});
  for (int64_t i = 0; i < B * NP; ++i)
    Pages.setFromDouble(i, (5 * i + 3) % P);
  HostTensor O(DType::F32, {B, H, M, D}), ref(DType::F32, {B, H, M, D});
  ASSERT_FALSE(llvm::errorToBool(
      kernel->run({B, H, M, N, D, P, NP}, {&Q, &Kc, &Vc, &Pages}, {}, {&O})));
  auto paged = [&](const HostTensor &cache) {
    return [&](int64_t b, int64_t h, int64_t n, int64_t d) {
      int64_t page = int64_t(Pages.getAsDouble(at(Pages, {b, n / 4})));
      return cache.getAsDouble(at(cache, {page, n % 4, h, d}));
    };
  };
  Variant var{dense(Q), paged(Kc), paged(Vc)};
  referenceAttention(var, B, H, M, N, D, ref, nullptr);
  expectClose(O, ref, 1e-5);
}

TEST_F(CpuKernelTest, BF16InputsAndOutputs) {
  const char *text = R"(
attn.kernel @bf16 attributes {
  dim_names = ["B", "H", "M", "N", "D"],
  dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
  input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
  output_names = ["O"], output_types = [bf16],
  shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>):
  %S = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
    %q = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
    %k = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xbf16>
    %qf = arith.extf %q : bf16 to f32
    %kf = arith.extf %k : bf16 to f32
    %p = arith.mulf %qf, %kf : f32
    attn.yield %p : f32
  }
  %P = attn.softmax %S dimension(3) : tensor<?x?x?x?xf32>
  %O = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
    %p = attn.read %P[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %v = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xbf16>
    %vf = arith.extf %v : bf16 to f32
    %pv = arith.mulf %p, %vf : f32
    attn.yield %pv : f32
  }
  attn.return %O : tensor<?x?x?x?xf32>
}
)";
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  int64_t B = 1, H = 2, M = 7, N = 23, D = 9;
  HostTensor Q = random(DType::BF16, {B, H, M, D});
  HostTensor K = random(DType::BF16, {B, H, N, D});
  HostTensor V = random(DType::BF16, {B, H, N, D});
  HostTensor O(DType::BF16, {B, H, M, D}), ref(DType::F32, {B, H, M, D});
  ASSERT_FALSE(
      llvm::errorToBool(kernel->run({B, H, M, N, D}, {&Q, &K, &V}, {}, {&O})));
  Variant var{dense(Q), dense(K), dense(V)};
  referenceAttention(var, B, H, M, N, D, ref, nullptr);
  // Only the final rounding to bf16 (8 bits of mantissa) differs: every
  // element is within half a bf16 ulp of the f32 result.
  for (int64_t i = 0; i < O.getNumElements(); ++i) {
    double want = ref.getAsDouble(i);
    EXPECT_NEAR(O.getAsDouble(i), want, std::fabs(want) * 0x1p-8 + 1e-6)
        << "at " << i;
  }
}

TEST_F(CpuKernelTest, SigmoidWithMask) {
  std::string text = makeKernel(
      "sigmoid", R"("Q", "K", "V")", R"("O")", "f32",
      std::string(kQKVShapes) + R"(, ["B", "H", "M", "D"])",
      std::string(kQKVArgs) + ", %scale: f32, %bias: f32", R"("scale", "bias")",
      "1.0 : f32, 0.0 : f32", std::string(kScores) + R"(
  %kept = attn.keep %S ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  %P = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %s = attn.read %kept[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %x = arith.addf %s, %bias : f32
    %nx = arith.negf %x : f32
    %e = math.exp %nx : f32
    %one = arith.constant 1.0 : f32
    %d = arith.addf %one, %e : f32
    %r = arith.divf %one, %d : f32
    attn.yield %r : f32
  })" + kOutput + "\n  attn.return %O : tensor<?x?x?x?xf32>");
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  int64_t B = 2, H = 1, M = 15, N = 15, D = 3;
  HostTensor Q = random(DType::F32, {B, H, M, D});
  HostTensor K = random(DType::F32, {B, H, N, D});
  HostTensor V = random(DType::F32, {B, H, N, D});
  HostTensor O(DType::F32, {B, H, M, D}), ref(DType::F32, {B, H, M, D});
  ASSERT_FALSE(llvm::errorToBool(
      kernel->run({B, H, M, N, D}, {&Q, &K, &V}, {0.5, -1.25}, {&O})));
  Variant var{dense(Q), dense(K), dense(V)};
  var.scale = 0.5;
  var.sigmoid = true;
  var.bias = -1.25;
  var.keep = [](int64_t m, int64_t n) { return n <= m; };
  referenceAttention(var, B, H, M, N, D, ref, nullptr);
  expectClose(O, ref, 1e-5);
}

TEST_F(CpuKernelTest, ReductionsOverMaskedRows) {
  // mean, max, min and normalize over a mask that empties row 0 entirely:
  // identities there (mean 0, max -inf, min +inf), 0 from normalize.
  const char *text = R"(
attn.kernel @reductions attributes {
  dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
  input_names = ["X"], param_names = [], param_defaults = [],
  output_names = ["Mean", "Max", "Min", "Norm"], output_types = [f32, f32, f32, f32],
  shapes = [["M", "N"], ["M"], ["M"], ["M"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %E = attn.einsum <none> ["m", "n"] extents(%M, %N) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    %e = math.exp %x : f32
    attn.yield %e : f32
  }
  %kept = attn.keep %E ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi slt, %n, %m : index
    attn.yield %c : i1
  }
  %mean = attn.einsum <mean> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %max = attn.einsum <max> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %min = attn.einsum <min> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %norm = attn.normalize %kept dimension(1) : tensor<?x?xf32>
  attn.return %mean, %max, %min, %norm : tensor<?xf32>, tensor<?xf32>, tensor<?xf32>, tensor<?x?xf32>
}
)";
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  int64_t M = 6, N = 9;
  HostTensor X = random(DType::F32, {M, N});
  HostTensor mean(DType::F32, {M}), max(DType::F32, {M}), min(DType::F32, {M}),
      norm(DType::F32, {M, N});
  ASSERT_FALSE(llvm::errorToBool(
      kernel->run({M, N}, {&X}, {}, {&mean, &max, &min, &norm})));
  for (int64_t m = 0; m < M; ++m) {
    double sum = 0, hi = -INFINITY, lo = INFINITY;
    int64_t count = 0;
    for (int64_t n = 0; n < std::min(m, N); ++n) {
      double e = std::exp(X.getAsDouble(m * N + n));
      sum += e;
      hi = std::max(hi, e);
      lo = std::min(lo, e);
      ++count;
    }
    EXPECT_NEAR(mean.getAsDouble(m), count ? sum / count : 0.0, 1e-5 * sum);
    EXPECT_EQ(max.getAsDouble(m), float(hi));
    EXPECT_EQ(min.getAsDouble(m), float(lo));
    for (int64_t n = 0; n < N; ++n) {
      double want = n < m ? std::exp(X.getAsDouble(m * N + n)) / sum : 0.0;
      EXPECT_NEAR(norm.getAsDouble(m * N + n), want, 1e-6);
    }
  }
}

TEST_F(CpuKernelTest, RejectsWrongArguments) {
  std::string text = makeKernel(
      "plain", R"("Q", "K", "V")", R"("O")", "f32",
      std::string(kQKVShapes) + R"(, ["B", "H", "M", "D"])",
      std::string(kQKVArgs) + ", %scale: f32", R"("scale")", "1.0 : f32",
      std::string(kScores) + R"(
  %P = attn.softmax %S dimension(3) : tensor<?x?x?x?xf32>)" +
          kOutput + "\n  attn.return %O : tensor<?x?x?x?xf32>");
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  HostTensor Q(DType::BF16, {1, 1, 2, 2}), K(DType::F32, {1, 1, 2, 2}),
      V(DType::F32, {1, 1, 2, 2}), O(DType::F32, {1, 1, 2, 2});
  llvm::Error error = kernel->run({1, 1, 2, 2, 2}, {&Q, &K, &V}, {1.0}, {&O});
  ASSERT_TRUE(bool(error));
  EXPECT_NE(llvm::toString(std::move(error)).find("input #0"),
            std::string::npos);
}

} // namespace

namespace {

TEST_F(CpuKernelTest, EmitsLinalgAndLLVMIR) {
  std::string text = makeKernel(
      "plain", R"("Q", "K", "V")", R"("O")", "f32",
      std::string(kQKVShapes) + R"(, ["B", "H", "M", "D"])",
      std::string(kQKVArgs) + ", %scale: f32", R"("scale")", "1.0 : f32",
      std::string(kScores) + R"(
  %P = attn.softmax %S dimension(3) : tensor<?x?x?x?xf32>)" +
          kOutput + "\n  attn.return %O : tensor<?x?x?x?xf32>");
  mlir::OwningOpRef<mlir::ModuleOp> linalg =
      mlir::parseSourceString<mlir::ModuleOp>(text, &context);
  ASSERT_TRUE(linalg);
  ASSERT_TRUE(mlir::succeeded(mlir::attn::lowerToLinalg(*linalg)));
  std::string printed;
  llvm::raw_string_ostream os(printed);
  linalg->print(os);
  EXPECT_NE(printed.find("linalg.generic"), std::string::npos);
  EXPECT_EQ(printed.find("attn."), std::string::npos);

  mlir::OwningOpRef<mlir::ModuleOp> llvmModule =
      mlir::parseSourceString<mlir::ModuleOp>(text, &context);
  ASSERT_TRUE(llvmModule);
  llvm::Expected<std::string> ir = emitLLVMIR(*llvmModule, /*optLevel=*/3);
  ASSERT_TRUE(bool(ir)) << llvm::toString(ir.takeError());
  EXPECT_NE(ir->find("define void @plain("), std::string::npos);
}

} // namespace

namespace {

/// Prints compile and run times of plain attention at a moderate size. Not
/// a check (speed is measured by bench/): run it with
/// --gtest_also_run_disabled_tests.
TEST_F(CpuKernelTest, DISABLED_TimePlainAttention) {
  std::string text = makeKernel(
      "plain", R"("Q", "K", "V")", R"("O")", "f32",
      std::string(kQKVShapes) + R"(, ["B", "H", "M", "D"])",
      std::string(kQKVArgs) + ", %scale: f32", R"("scale")", "1.0 : f32",
      std::string(kScores) + R"(
  %P = attn.softmax %S dimension(3) : tensor<?x?x?x?xf32>)" +
          kOutput + "\n  attn.return %O : tensor<?x?x?x?xf32>");
  auto start = std::chrono::steady_clock::now();
  std::unique_ptr<CpuKernel> kernel = compile(text);
  ASSERT_TRUE(kernel);
  double compileSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  int64_t B = 1, H = 8, M = 512, N = 512, D = 64;
  HostTensor Q = random(DType::F32, {B, H, M, D});
  HostTensor K = random(DType::F32, {B, H, N, D});
  HostTensor V = random(DType::F32, {B, H, N, D});
  HostTensor O(DType::F32, {B, H, M, D});
  start = std::chrono::steady_clock::now();
  ASSERT_FALSE(llvm::errorToBool(
      kernel->run({B, H, M, N, D}, {&Q, &K, &V}, {0.125}, {&O})));
  double runSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  double flops = 4.0 * B * H * M * N * D;
  std::fprintf(stderr,
               "compile %.3f s (lowering %.3f s, LLVM %.3f s); run %.4f s, "
               "%.2f GFLOP/s\n",
               compileSeconds, kernel->getLoweringSeconds(),
               kernel->getCodegenSeconds(), runSeconds,
               flops / runSeconds * 1e-9);
}

} // namespace
