//===- MLIRGenTest.cpp - Tests of the .attn to attn dialect lowering ------===//

#include "TestUtil.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Location.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringSet.h"

#include "gtest/gtest.h"

using namespace ::attn::dsl;
using namespace mlir;
using ::attn::dsl::test::compile;

namespace {

/// The scalar ops docs/cascade-ir.md allows in cascade bodies.
const llvm::StringSet<> &allowedBodyOps() {
  static const llvm::StringSet<> ops = {
      "arith.constant", "arith.addf",       "arith.subf",   "arith.mulf",
      "arith.divf",     "arith.negf",       "arith.remf",   "arith.maximumf",
      "arith.minimumf", "arith.addi",       "arith.subi",   "arith.muli",
      "arith.divsi",    "arith.floordivsi", "arith.remsi",  "arith.maxsi",
      "arith.minsi",    "arith.andi",       "arith.ori",    "arith.xori",
      "arith.cmpf",     "arith.cmpi",       "arith.select", "arith.index_cast",
      "arith.sitofp",   "arith.uitofp",     "arith.fptosi", "arith.extf",
      "arith.truncf",   "arith.extui",      "math.exp",     "math.exp2",
      "math.log",       "math.log1p",       "math.sqrt",    "math.rsqrt",
      "math.tanh",      "math.absf",        "math.powf",    "math.floor",
      "math.ceil",      "attn.read",        "attn.yield"};
  return ops;
}

/// Checks the module against the contract of docs/cascade-ir.md.
void expectCascadeForm(ModuleOp module) {
  ASSERT_TRUE(succeeded(verify(module)));
  unsigned kernels = 0;
  for (Operation &op : module.getBody()->getOperations()) {
    auto kernel = dyn_cast<mlir::attn::KernelOp>(op);
    ASSERT_TRUE(kernel) << "unexpected top-level op";
    ++kernels;
    for (Operation &top : kernel.getEntryBlock()) {
      StringRef name = top.getName().getStringRef();
      bool cascade =
          isa<mlir::attn::EinsumOp, mlir::attn::KeepOp, mlir::attn::SoftmaxOp,
              mlir::attn::NormalizeOp, mlir::attn::ReturnOp>(top);
      // Extents may be computed at the top level.
      bool extent = name.starts_with("arith.");
      EXPECT_TRUE(cascade || extent) << name.str();
      EXPECT_TRUE(isa<FileLineColLoc>(top.getLoc()) ||
                  isa<mlir::attn::ReturnOp>(top))
          << name.str();
      for (Region &region : top.getRegions())
        region.walk([&](Operation *inner) {
          EXPECT_TRUE(
              allowedBodyOps().contains(inner->getName().getStringRef()))
              << inner->getName().getStringRef().str();
        });
    }
  }
  EXPECT_EQ(kernels, 1u);
}

template <typename OpTy> SmallVector<OpTy> collect(ModuleOp module) {
  SmallVector<OpTy> ops;
  module.walk([&](OpTy op) { ops.push_back(op); });
  return ops;
}

TEST(MLIRGenTest, StreamingExample) {
  auto result = compile(test::kStreamingLLM);
  ASSERT_TRUE(result.ok) << result.diagnostics;
  ModuleOp module = *result.module;
  expectCascadeForm(module);
  auto kernel = collect<mlir::attn::KernelOp>(module).front();
  EXPECT_EQ(kernel.getSymName(), "streaming_llm");
  // NP comes from the shape of Pages.
  EXPECT_EQ(kernel.getNumDims(), 7u);
  EXPECT_EQ(kernel.getDimSizes()[5], 128);
  EXPECT_EQ(kernel.getDimSizes()[0], ShapedType::kDynamic);
  EXPECT_EQ(kernel.getNumInputs(), 4u);
  EXPECT_EQ(kernel.getNumParams(), 2u);
  auto q = cast<RankedTensorType>(kernel.getInputArg(0).getType());
  EXPECT_TRUE(q.getElementType().isBF16());
  EXPECT_EQ(q.getShape()[3], 128);
  EXPECT_TRUE(kernel.getParamArg(0).getType().isInteger(32));
  EXPECT_EQ(cast<IntegerAttr>(kernel.getParamDefaults()[0]).getInt(), 1024);
  EXPECT_TRUE(cast<TypeAttr>(kernel.getOutputTypes()[0]).getValue().isBF16());

  auto einsums = collect<mlir::attn::EinsumOp>(module);
  ASSERT_EQ(einsums.size(), 4u);
  // The nested sum[d] is hoisted, then scaled elementwise.
  EXPECT_EQ(einsums[0].getKind(), mlir::attn::ReductionKind::Sum);
  EXPECT_EQ(einsums[0].getNumReducedIndices(), 1u);
  EXPECT_EQ(einsums[1].getKind(), mlir::attn::ReductionKind::None);
  EXPECT_EQ(einsums[3].getKind(), mlir::attn::ReductionKind::LogSumExp);
  auto keeps = collect<mlir::attn::KeepOp>(module);
  ASSERT_EQ(keeps.size(), 1u);
  EXPECT_EQ(keeps[0].getSinks(), 4);
  EXPECT_EQ(keeps[0].getInput(), einsums[1].getResult());
  auto softmaxes = collect<mlir::attn::SoftmaxOp>(module);
  ASSERT_EQ(softmaxes.size(), 1u);
  EXPECT_EQ(softmaxes[0].getDimension(), 3u);
  EXPECT_EQ(softmaxes[0].getInput(), keeps[0].getResult());
  // LSE reads the kept S.
  bool readsKept = false;
  einsums[3].walk([&](mlir::attn::ReadOp read) {
    readsKept |= read.getTensor() == keeps[0].getResult();
  });
  EXPECT_TRUE(readsKept);
  // Locations point at the spec: the keep statement is on line 14.
  auto loc = dyn_cast<FileLineColLoc>(keeps[0].getLoc());
  ASSERT_TRUE(loc);
  EXPECT_EQ(loc.getFilename(), "test.attn");
  EXPECT_EQ(loc.getLine(), 14u);
  EXPECT_EQ(loc.getColumn(), 3u);
}

TEST(MLIRGenTest, FloatTypeOverride) {
  FrontendOptions options;
  options.floatTypeOverride = "f32";
  auto result = compile(test::kStreamingLLM, options);
  ASSERT_TRUE(result.ok) << result.diagnostics;
  auto kernel = collect<mlir::attn::KernelOp>(*result.module).front();
  auto q = cast<RankedTensorType>(kernel.getInputArg(0).getType());
  EXPECT_TRUE(q.getElementType().isF32());
  auto pages = cast<RankedTensorType>(kernel.getInputArg(3).getType());
  EXPECT_TRUE(pages.getElementType().isInteger(32));
  EXPECT_TRUE(cast<TypeAttr>(kernel.getOutputTypes()[0]).getValue().isF32());
  // No bf16 reads remain, so no extf either.
  EXPECT_TRUE(collect<arith::ExtFOp>(*result.module).empty());

  options.floatTypeOverride = "i32";
  auto bad = compile(test::kStreamingLLM, options);
  EXPECT_FALSE(bad.ok);
  EXPECT_NE(bad.diagnostics.find("invalid float type override 'i32'"),
            std::string::npos);
}

TEST(MLIRGenTest, FixedDims) {
  FrontendOptions options;
  options.fixedDims = {{"M", 7}};
  auto result = compile(test::kStreamingLLM, options);
  ASSERT_TRUE(result.ok) << result.diagnostics;
  auto kernel = collect<mlir::attn::KernelOp>(*result.module).front();
  unsigned m = *kernel.lookupDim(mlir::StringAttr::get(
      result.context.get(), "M"));
  EXPECT_EQ(kernel.getDimSizes()[m], 7);
  auto q = cast<RankedTensorType>(kernel.getInputArg(0).getType());
  EXPECT_EQ(q.getDimSize(2), 7);

  auto error = [&](std::map<std::string, int64_t> dims) {
    FrontendOptions bad;
    bad.fixedDims = std::move(dims);
    bad.fixedDimsOption = "shapes";
    auto failed = compile(test::kStreamingLLM, bad);
    EXPECT_FALSE(failed.ok);
    return failed.diagnostics;
  };
  EXPECT_NE(error({{"X", 1}}).find("error: shapes: the spec has no dim 'X'"),
            std::string::npos);
  EXPECT_NE(error({{"D", 64}}).find("dim 'D' is already fixed by the spec"),
            std::string::npos);
  EXPECT_NE(error({{"M", 0}}).find("size of dim 'M' must be positive"),
            std::string::npos);
}

/// One spec per variant family of DESIGN.md section 2; each must compile to
/// IR of the cascade form.
struct Variant {
  const char *name;
  const char *text;
};

class VariantTest : public ::testing::TestWithParam<Variant> {};

TEST_P(VariantTest, CompilesToCascadeForm) {
  auto result = compile(GetParam().text);
  ASSERT_TRUE(result.ok) << result.diagnostics;
  expectCascadeForm(*result.module);
}

INSTANTIATE_TEST_SUITE_P(
    MLIRGen, VariantTest,
    ::testing::Values(Variant{"Causal", R"(attention causal {
  dims B, H, M, N, D
  in Q: f32[B, H, M, D]
  in K: f32[B, H, N, D]
  in V: f32[B, H, N, D]
  out O: f32[B, H, M, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  keep S where n <= m
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
})"},
                      Variant{"AlibiSoftcap", R"(attention alibi_softcap {
  dims B, H, M, N, D = 64
  in Q: bf16[B, H, M, D]
  in K: bf16[B, H, N, D]
  in V: bf16[B, H, N, D]
  in Slopes: f32[H]
  param cap: f32 = 50.0
  out O: bf16[B, H, M, D]
  out LSE: f32[B, H, M]
  S[b,h,m,n] = cap * tanh(sum[d](Q[b,h,m,d] * K[b,h,n,d]) * 0.125 / cap) + Slopes[h] * (n - m)
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
  LSE = logsumexp[n](S)
})"},
                      Variant{"DocumentMaskAndSink", R"(attention doc_sink {
  dims B, H, L, D
  in Q: f32[B, H, L, D]
  in K: f32[B, H, L, D]
  in V: f32[B, H, L, D]
  in Doc: i32[B, L]
  in Sk: f32[H]
  out O: f32[B, H, L, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d])
  keep S where Doc[b, m] == Doc[b, n] and n <= m
  P = softmax[n](S, sink = Sk[h])
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
})"},
                      Variant{"PagedKV", R"(attention paged {
  dims B, H, G, M, N, D = 128
  in Q: f16[B, H, M, D]
  in Kc: f16[NP, 16, G, D]
  in Vc: f16[NP, 16, G, D]
  in Pages: i32[B, NPB]
  in Len: i32[B]
  out O: f16[B, H, M, D]
  let g = h / (H / G)
  S[b,h,m,n < N] = sum[d](Q[b,h,m,d] * Kc[Pages[b, n / 16], n % 16, g, d])
  keep S where n < Len[b]
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * Vc[Pages[b, n / 16], n % 16, g, e])
})"},
                      Variant{"BlockSparsePerHead", R"(attention block_sparse {
  dims B, H, M, N, D
  in Q: f32[B, H, M, D]
  in K: f32[B, H, N, D]
  in V: f32[B, H, N, D]
  in Blocks: i1[B, H, MB, NB]
  in Streaming: i1[H]
  param window: i64 = 256
  out O: f32[B, H, M, D]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d])
  @block(128, 128) @per_head keep S where Blocks[b, h, m / 128, n / 128] and (not Streaming[h] or m - n < window or n < 4)
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
})"},
                      Variant{"SoftplusAndSigmoid", R"(attention normalizers {
  dims B, M, N, D
  in Q: f32[B, M, D]
  in K: f32[B, N, D]
  in V: f32[B, N, D]
  param bias: f32 = -2.0
  out O1: f32[B, M, D]
  out O2: f32[B, M, D]
  S[b,m,n] = sum[d](Q[b,m,d] * K[b,n,d])
  E = normalize[n](softplus(S))
  O1[b,m,e] = sum[n](E[b,m,n] * V[b,n,e])
  P = sigmoid(S + bias)
  O2[b,m,e] = sum[n](P[b,m,n] * V[b,n,e])
})"},
                      Variant{"ExplicitRangesAndScalars", R"(attention scalars {
  dims M, N
  in A: f32[M, N]
  in Ids: i64[N]
  out X: f32[M]
  out C: i32[M]
  out Any: i1[M]
  T[m, nb < N / 64] = max[t < 64](A[m, nb * 64 + t]) - mean[n](A[m, n]) ^ 2
  X[m] = sum[nb](T[m, nb]) + min(m, 3) + max(0.5, -m) + abs(m % -3) + relu(1 - m) + select(m < 2, 1, 2.5) + exp(log(sqrt(2.0))) % 1.5
  C[m] = m / 4 + Ids[m % N] - (m > 2)
  Any[m] = not (m == 3) or m != 4 and m >= 1
})"}),
    [](const ::testing::TestParamInfo<Variant> &info) {
      return std::string(info.param.name);
    });

TEST(MLIRGenTest, IntegerOutputHoldsDeclaredType) {
  auto result = compile(R"(attention ints {
  dims M
  in A: i32[M]
  out C: i32[M]
  C[m] = A[m] * 2 - m % 3
})");
  ASSERT_TRUE(result.ok) << result.diagnostics;
  auto ret = collect<mlir::attn::ReturnOp>(*result.module).front();
  auto type = cast<RankedTensorType>(ret.getValues()[0].getType());
  EXPECT_TRUE(type.getElementType().isInteger(32));
  // Floored modulo: remsi plus a sign fix-up with select.
  EXPECT_EQ(collect<arith::RemSIOp>(*result.module).size(), 1u);
  EXPECT_EQ(collect<arith::SelectOp>(*result.module).size(), 1u);
}

TEST(MLIRGenTest, SigmoidAndSoftplusExpansions) {
  auto result = compile(R"(attention exp {
  dims M
  in A: f32[M]
  out X: f32[M]
  X[m] = sigmoid(A[m]) + softplus(A[m])
})");
  ASSERT_TRUE(result.ok) << result.diagnostics;
  EXPECT_EQ(collect<math::ExpOp>(*result.module).size(), 2u);
  EXPECT_EQ(collect<math::Log1pOp>(*result.module).size(), 1u);
  EXPECT_EQ(collect<math::AbsFOp>(*result.module).size(), 1u);
  EXPECT_EQ(collect<arith::DivFOp>(*result.module).size(), 1u);
}

TEST(MLIRGenTest, ErrorsGiveNoModule) {
  auto result = compile("attention x {\n  dims N\n  out O: f32[N]\n}\n");
  EXPECT_FALSE(result.ok);
  EXPECT_FALSE(result.module);
  EXPECT_NE(result.diagnostics.find("test.attn:3:7: error: out 'O' is never "
                                    "defined\n  out O: f32[N]\n      ^"),
            std::string::npos)
      << result.diagnostics;
}

} // namespace
