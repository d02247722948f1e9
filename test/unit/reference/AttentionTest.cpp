//===- AttentionTest.cpp - The evaluator on attention variants ------------===//
//
// Each variant is written as the cascade the front end emits and compared with
// plain C++ loops on random data, including M != N and fully masked rows.
//
//===----------------------------------------------------------------------===//

#include "ReferenceTestSupport.h"

#include <chrono>

using namespace attn;
using namespace attn::ref;
using namespace attn::ref::test;

namespace {

/// The attention cascade over Q[B,H,M,D], K/V[B,H,N,D] with `{MASK}` (ops
/// defining %kept from %T, the scaled scores) and `{NORM}` (ops defining %P
/// from {KEPT}). `{XIN*}` and `{XPARAM*}` add inputs and params after the
/// fixed ones.
const char *kAttentionTemplate = R"mlir(
attn.kernel @attention attributes {
    dim_names = ["B", "H", "M", "N", "D"],
    dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V"{XIN_NAMES}], param_names = ["scale"{XPARAM_NAMES}],
    param_defaults = [1.0 : f32{XPARAM_DEFAULTS}],
    output_names = ["O", "LSE"], output_types = [f32, f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"]{XIN_SHAPES}, ["B", "H", "M", "D"], ["B", "H", "M"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x?xf32>, %K: tensor<?x?x?x?xf32>, %V: tensor<?x?x?x?xf32>{XIN_ARGS},
     %scale: f32{XPARAM_ARGS}):
  %dot = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
    %q = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xf32>
    %k = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xf32>
    %p = arith.mulf %q, %k : f32
    attn.yield %p : f32
  }
  %T = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %s = attn.read %dot[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %t = arith.mulf %s, %scale : f32
    attn.yield %t : f32
  }
{MASK}
{NORM}
  %O = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
    %p = attn.read %P[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %v = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xf32>
    %pv = arith.mulf %p, %v : f32
    attn.yield %pv : f32
  }
  %LSE = attn.einsum <logsumexp> ["b", "h", "m"] reduce ["n"] extents(%B, %H, %M, %N) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %s = attn.read {KEPT}[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    attn.yield %s : f32
  }
  attn.return %O, %LSE : tensor<?x?x?x?xf32>, tensor<?x?x?xf32>
}
)mlir";

const char *kSoftmax =
    "  %P = attn.softmax {KEPT} dimension(3) : tensor<?x?x?x?xf32>";

/// keep n <= m + (N - M): causal with the queries at the end of the keys.
const char *kCausalMask = R"mlir(
  %kept = attn.keep %T ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %lim = arith.addi %m, %off : index
    %c = arith.cmpi sle, %n, %lim : index
    attn.yield %c : i1
  })mlir";

struct KernelText {
  std::string mask, norm = kSoftmax;
  std::string xinNames, xinShapes, xinArgs;
  std::string xparamNames, xparamDefaults, xparamArgs;

  std::string str() const {
    std::string text = kAttentionTemplate;
    text = substitute(text, "MASK", mask);
    text = substitute(text, "NORM", norm);
    text = substitute(text, "KEPT", mask.empty() ? "%T" : "%kept");
    text = substitute(text, "XIN_NAMES", xinNames);
    text = substitute(text, "XIN_SHAPES", xinShapes);
    text = substitute(text, "XIN_ARGS", xinArgs);
    text = substitute(text, "XPARAM_NAMES", xparamNames);
    text = substitute(text, "XPARAM_DEFAULTS", xparamDefaults);
    text = substitute(text, "XPARAM_ARGS", xparamArgs);
    return text;
  }
};

class AttentionTest : public ReferenceTest {
protected:
  /// Evaluates `text` on random Q, K, V of the oracle's sizes (plus
  /// `extraInputs`, `extraParams`) and compares O and LSE with the oracle.
  void check(const std::string &text, const AttentionOracle &oracle,
             DType type = DType::F32,
             std::vector<const HostTensor *> extraInputs = {},
             std::vector<double> extraParams = {}) {
    auto [B, H, M, N, D] =
        std::make_tuple(oracle.B, oracle.H, oracle.M, oracle.N, oracle.D);
    HostTensor q = randomTensor(type, {B, H, M, D}, 1);
    HostTensor k = randomTensor(type, {B, H, N, D}, 2);
    HostTensor v = randomTensor(type, {B, H, N, D}, 3);
    KernelArguments args;
    args.dims = {B, H, M, N, D};
    args.inputs = {&q, &k, &v};
    args.inputs.insert(args.inputs.end(), extraInputs.begin(),
                       extraInputs.end());
    args.params = {oracle.scale};
    args.params.insert(args.params.end(), extraParams.begin(),
                       extraParams.end());
    std::vector<HostTensor> outputs = run(parse(text), args);
    ASSERT_EQ(outputs.size(), 2u);
    EXPECT_EQ(outputs[0].getDType(), DType::F64);
    EXPECT_EQ(outputs[0].getShape(), (std::vector<int64_t>{B, H, M, D}));
    EXPECT_EQ(outputs[1].getShape(), (std::vector<int64_t>{B, H, M}));
    std::vector<double> out, lse;
    oracle.compute(q, k, v, out, lse);
    EXPECT_LT(maxAbsDiff(outputs[0], out), 1e-12);
    EXPECT_LT(maxAbsDiff(outputs[1], lse), 1e-12);
  }
};

TEST_F(AttentionTest, PlainSoftmax) {
  AttentionOracle oracle{2, 3, 5, 7, 4};
  oracle.scale = 0.5;
  check(KernelText{}.str(), oracle);
}

TEST_F(AttentionTest, CausalWithMoreKeysThanQueries) {
  AttentionOracle oracle{1, 2, 5, 9, 3};
  oracle.scale = 0.25;
  oracle.keep = [](int64_t, int64_t, int64_t m, int64_t n) {
    return n <= m + 4;
  };
  KernelText text;
  text.mask = kCausalMask;
  check(text.str(), oracle);
}

TEST_F(AttentionTest, CausalFullyMaskedRowsGiveZeroAndMinusInfinity) {
  // N - M = -3: queries 0..2 see no key at all.
  AttentionOracle oracle{1, 2, 7, 4, 3};
  oracle.keep = [](int64_t, int64_t, int64_t m, int64_t n) {
    return n <= m - 3;
  };
  KernelText text;
  text.mask = kCausalMask;
  check(text.str(), oracle);

  HostTensor q = randomTensor(DType::F32, {1, 2, 7, 3}, 1);
  HostTensor k = randomTensor(DType::F32, {1, 2, 4, 3}, 2);
  HostTensor v = randomTensor(DType::F32, {1, 2, 4, 3}, 3);
  std::vector<HostTensor> outputs =
      run(parse(text.str()), {{1, 2, 7, 4, 3}, {&q, &k, &v}, {1.0}});
  ASSERT_EQ(outputs.size(), 2u);
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t m = 0; m < 7; ++m) {
      double lse = at(outputs[1], {0, h, m});
      EXPECT_FALSE(std::isnan(lse));
      if (m < 3) {
        EXPECT_EQ(lse, kNegInf);
        for (int64_t e = 0; e < 3; ++e)
          EXPECT_EQ(at(outputs[0], {0, h, m, e}), 0.0);
      } else {
        EXPECT_TRUE(std::isfinite(lse));
      }
    }
}

TEST_F(AttentionTest, CausalTimingAtTestSize) {
  AttentionOracle oracle{1, 2, 100, 130, 64};
  oracle.scale = 0.125;
  oracle.keep = [](int64_t, int64_t, int64_t m, int64_t n) {
    return n <= m + 30;
  };
  KernelText text;
  text.mask = kCausalMask;
  HostTensor q = randomTensor(DType::F32, {1, 2, 100, 64}, 1);
  HostTensor k = randomTensor(DType::F32, {1, 2, 130, 64}, 2);
  HostTensor v = randomTensor(DType::F32, {1, 2, 130, 64}, 3);
  mlir::attn::KernelOp kernel = parse(text.str());
  auto start = std::chrono::steady_clock::now();
  std::vector<HostTensor> outputs =
      run(kernel, {{1, 2, 100, 130, 64}, {&q, &k, &v}, {0.125}});
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  // Reported, not asserted: speed is measured by bench/, not by tests.
  std::printf("[ timing ] causal B=1,H=2,M=100,N=130,D=64: %.3f s\n", seconds);
  ASSERT_EQ(outputs.size(), 2u);
  std::vector<double> out, lse;
  oracle.compute(q, k, v, out, lse);
  EXPECT_LT(maxAbsDiff(outputs[0], out), 1e-12);
  EXPECT_LT(maxAbsDiff(outputs[1], lse), 1e-12);
}

TEST_F(AttentionTest, SlidingWindow) {
  AttentionOracle oracle{1, 2, 6, 10, 3};
  oracle.keep = [](int64_t, int64_t, int64_t m, int64_t n) {
    int64_t pos = m + 4;
    return n <= pos && pos - n < 3;
  };
  KernelText text;
  text.xparamNames = ", \"window\"";
  text.xparamDefaults = ", 1024 : i32";
  text.xparamArgs = ", %window: i32";
  text.mask = R"mlir(
  %kept = attn.keep %T ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %pos = arith.addi %m, %off : index
    %causal = arith.cmpi sle, %n, %pos : index
    %dist = arith.subi %pos, %n : index
    %w = arith.index_cast %window : i32 to index
    %near = arith.cmpi slt, %dist, %w : index
    %c = arith.andi %causal, %near : i1
    attn.yield %c : i1
  })mlir";
  check(text.str(), oracle, DType::F32, {}, {3});
}

TEST_F(AttentionTest, LearnableSinkLogit) {
  AttentionOracle oracle{2, 3, 5, 6, 4};
  HostTensor sinks = randomTensor(DType::F32, {3}, 7);
  // Head 1's sink is large, so it takes most of the mass there.
  sinks.setFromDouble(1, 4.0);
  oracle.sink = [&](int64_t h) -> std::optional<double> {
    return sinks.getAsDouble(h);
  };
  oracle.keep = [](int64_t, int64_t, int64_t m, int64_t n) {
    return n <= m + 1;
  };
  KernelText text;
  text.mask = kCausalMask;
  text.xinNames = ", \"Sk\"";
  text.xinShapes = ", [\"H\"]";
  text.xinArgs = ", %Sk: tensor<?xf32>";
  text.norm = R"mlir(
  %E = attn.einsum <none> ["b", "h", "m"] extents(%B, %H, %M) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index):
    %s = attn.read %Sk[%h] : tensor<?xf32>
    attn.yield %s : f32
  }
  %P = attn.softmax %kept dimension(3) sink(%E : tensor<?x?x?xf32>) : tensor<?x?x?x?xf32>)mlir";
  check(text.str(), oracle, DType::F32, {&sinks});
}

TEST_F(AttentionTest, SoftplusNormalize) {
  AttentionOracle oracle{1, 2, 6, 8, 4};
  oracle.normalizer = Normalizer::SoftplusNormalize;
  oracle.keep = [](int64_t, int64_t, int64_t m, int64_t n) {
    return n <= m + 2;
  };
  KernelText text;
  text.mask = kCausalMask;
  // softplus(x) = max(x, 0) + log1p(exp(-|x|)), as the front end writes it.
  text.norm = R"mlir(
  %E = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %x = attn.read %kept[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %zero = arith.constant 0.0 : f32
    %pos = arith.maximumf %x, %zero : f32
    %abs = math.absf %x : f32
    %neg = arith.negf %abs : f32
    %e = math.exp %neg : f32
    %l = math.log1p %e : f32
    %sp = arith.addf %pos, %l : f32
    attn.yield %sp : f32
  }
  %P = attn.normalize %E dimension(3) : tensor<?x?x?x?xf32>)mlir";
  check(text.str(), oracle);
}

TEST_F(AttentionTest, SigmoidWithMaskSkipsAbsentEntries) {
  AttentionOracle oracle{1, 2, 5, 9, 3};
  oracle.normalizer = Normalizer::Sigmoid;
  oracle.sigmoidBias = -1.5;
  oracle.keep = [](int64_t, int64_t, int64_t m, int64_t n) {
    return n <= m + 4;
  };
  KernelText text;
  text.mask = kCausalMask;
  text.xparamNames = ", \"bias\"";
  text.xparamDefaults = ", 0.0 : f32";
  text.xparamArgs = ", %bias: f32";
  text.norm = R"mlir(
  %P = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %x = attn.read %kept[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %y = arith.addf %x, %bias : f32
    %one = arith.constant 1.0 : f32
    %ny = arith.negf %y : f32
    %e = math.exp %ny : f32
    %d = arith.addf %one, %e : f32
    %s = arith.divf %one, %d : f32
    attn.yield %s : f32
  })mlir";
  check(text.str(), oracle, DType::F32, {}, {-1.5});
}

TEST_F(AttentionTest, Bf16Inputs) {
  AttentionOracle oracle{1, 2, 4, 6, 8};
  oracle.scale = 0.3;
  std::string text = KernelText{}.str();
  // Q, K, V become bf16; every read of them is widened by arith.extf.
  for (const char *name : {"Q", "K", "V"}) {
    std::string arg = std::string("%") + name + ": tensor<?x?x?x?xf32>";
    size_t pos = text.find(arg);
    ASSERT_NE(pos, std::string::npos);
    text.replace(pos, arg.size(),
                 std::string("%") + name + ": tensor<?x?x?x?xbf16>");
  }
  auto replaceAll = [&](const std::string &from, const std::string &to) {
    for (size_t pos = text.find(from); pos != std::string::npos;
         pos = text.find(from, pos + to.size()))
      text.replace(pos, from.size(), to);
  };
  replaceAll("%q = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xf32>",
             "%q16 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>\n"
             "    %q = arith.extf %q16 : bf16 to f32");
  replaceAll("%k = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xf32>",
             "%k16 = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xbf16>\n"
             "    %k = arith.extf %k16 : bf16 to f32");
  replaceAll("%v = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xf32>",
             "%v16 = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xbf16>\n"
             "    %v = arith.extf %v16 : bf16 to f32");
  check(text, oracle, DType::BF16);
}

TEST_F(AttentionTest, PagedKVGather) {
  // K and V live in pages of 4 rows; Pages[b, p] names the physical page of
  // logical page p. K[b, h, n, d] = Kc[Pages[b, n / 4], n % 4, h, d].
  const int64_t B = 2, H = 2, M = 3, N = 10, D = 4, P = 6, NP = 3;
  HostTensor q = randomTensor(DType::F32, {B, H, M, D}, 1);
  HostTensor kc = randomTensor(DType::F32, {P, 4, H, D}, 2);
  HostTensor vc = randomTensor(DType::F32, {P, 4, H, D}, 3);
  HostTensor pages(DType::I32, {B, NP});
  int pageIds[B][NP] = {{5, 0, 3}, {2, 4, 1}};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t p = 0; p < NP; ++p)
      pages.setFromDouble(b * NP + p, pageIds[b][p]);
  std::string text = R"mlir(
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
    %lp = arith.floordivsi %n, %c4 : index
    %pg32 = attn.read %Pages[%b, %lp] : tensor<?x?xi32>
    %pg = arith.index_cast %pg32 : i32 to index
    %row = arith.remsi %n, %c4 : index
    %q = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xf32>
    %k = attn.read %Kc[%pg, %row, %h, %d] : tensor<?x4x?x?xf32>
    %p = arith.mulf %q, %k : f32
    attn.yield %p : f32
  }
  %W = attn.softmax %S dimension(3) : tensor<?x?x?x?xf32>
  %O = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
    %c4 = arith.constant 4 : index
    %lp = arith.floordivsi %n, %c4 : index
    %pg32 = attn.read %Pages[%b, %lp] : tensor<?x?xi32>
    %pg = arith.index_cast %pg32 : i32 to index
    %row = arith.remsi %n, %c4 : index
    %w = attn.read %W[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
    %v = attn.read %Vc[%pg, %row, %h, %e] : tensor<?x4x?x?xf32>
    %pv = arith.mulf %w, %v : f32
    attn.yield %pv : f32
  }
  attn.return %O : tensor<?x?x?x?xf32>
}
)mlir";
  std::vector<HostTensor> outputs =
      run(parse(text), {{B, H, M, N, D, P, NP}, {&q, &kc, &vc, &pages}, {}});
  ASSERT_EQ(outputs.size(), 1u);

  // Gather into contiguous K and V, then run the plain oracle.
  HostTensor k(DType::F32, {B, H, N, D}), v(DType::F32, {B, H, N, D});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t d = 0; d < D; ++d) {
          int64_t page = pageIds[b][n / 4];
          k.setFromDouble(linearIndex(k, {b, h, n, d}),
                          at(kc, {page, n % 4, h, d}));
          v.setFromDouble(linearIndex(v, {b, h, n, d}),
                          at(vc, {page, n % 4, h, d}));
        }
  AttentionOracle oracle{B, H, M, N, D};
  std::vector<double> out, lse;
  oracle.compute(q, k, v, out, lse);
  EXPECT_LT(maxAbsDiff(outputs[0], out), 1e-12);
}

} // namespace
