//===- RaiseTest.cpp - attn-raise on every example ------------------------===//
//
// Compiles each examples/*.attn, runs attn-raise, checks which cascades
// became attn.attention, and compares the float64 reference evaluation of
// the raised kernel with that of the original cascade on random data.
//
//===----------------------------------------------------------------------===//

#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"
#include "attn/Driver/Launch.h"
#include "attn/Frontend/Frontend.h"
#include "attn/Reference/Evaluator.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"

#include "gtest/gtest.h"

#include <cmath>
#include <string>
#include <vector>

using namespace mlir;
using namespace mlir::attn;

namespace {

/// The examples folder, found from this file's path so the test runs from
/// any build directory.
std::string examplePath(llvm::StringRef name) {
  llvm::SmallString<256> path(__FILE__);
  for (int i = 0; i < 4; ++i)
    llvm::sys::path::remove_filename(path);
  llvm::sys::path::append(path, "examples", name + ".attn");
  return std::string(path);
}

struct Expectation {
  const char *name;
  /// Whether attn-raise should turn the cascade into attn.attention.
  bool raised;
  /// For cascades that stay, a fragment of the remark.
  const char *remark = "";
};

/// Every example and what attn-raise must do with it. paged_kv reads K and V
/// through a page table, which attn.attention's fixed [b, g, n, d] map
/// cannot express; sink_reweight rescales the softmax weights and
/// renormalizes them, a second normalizer the fused op does not have.
const Expectation kExamples[] = {
    {"alibi", true},
    {"bidirectional", true},
    {"block_sparse", true},
    {"causal", true},
    {"cross_attention", true},
    {"document_mask", true},
    {"duo_attention", true},
    {"gqa", true},
    {"label_mask", true},
    {"lse_output", true},
    {"mqa", true},
    {"paged_kv", false, "the key is read through a gather"},
    {"prefix_lm", true},
    {"sigmoid", true},
    {"sink_logit", true},
    {"sink_reweight", false, "the weights are modified"},
    {"sinks_fixed", true},
    {"sliding_window", true},
    {"softcap", true},
    {"softplus", true},
    {"streaming_llm", true},
};

class RaiseTest : public ::testing::TestWithParam<Expectation> {
protected:
  RaiseTest() { context.loadDialect<AttnDialect, tensor::TensorDialect>(); }

  /// Compiles the example into `module`.
  void compile(llvm::StringRef name) {
    auto buffer = llvm::MemoryBuffer::getFile(examplePath(name));
    ASSERT_TRUE(bool(buffer)) << "cannot read " << examplePath(name);
    sourceMgr.AddNewSourceBuffer(std::move(*buffer), llvm::SMLoc());
    auto compiled = ::attn::dsl::compileSpec(sourceMgr, context);
    ASSERT_TRUE(succeeded(compiled));
    module = std::move(*compiled);
  }

  static KernelOp getKernel(ModuleOp module) {
    return *module.getOps<KernelOp>().begin();
  }

  /// Runs attn-raise on `module`, collecting the remarks.
  LogicalResult raise(ModuleOp module) {
    ScopedDiagnosticHandler handler(&context, [&](Diagnostic &diag) {
      if (diag.getSeverity() == DiagnosticSeverity::Remark)
        remarks.push_back(diag.str());
      else
        errors.push_back(diag.str());
      return success();
    });
    PassManager pm(&context);
    pm.addNestedPass<KernelOp>(createAttnRaise());
    return pm.run(module);
  }

  /// The largest |a - b| over the largest |a| of the outputs, evaluating
  /// both kernels at `shape` (dims not named there get the driver's
  /// defaults).
  void compareAt(KernelOp original, KernelOp raised,
                 llvm::StringMap<int64_t> shape, uint64_t seed) {
    // Only name dims the kernel has and has not fixed.
    llvm::StringMap<int64_t> given;
    for (auto [i, name] : llvm::enumerate(original.getDimNames())) {
      llvm::StringRef dim = cast<StringAttr>(name).getValue();
      if (shape.count(dim) && ShapedType::isDynamic(original.getDimSizes()[i]))
        given[dim] = shape[dim];
    }
    auto dims = ::attn::bindDims(original, given);
    ASSERT_TRUE(bool(dims)) << llvm::toString(dims.takeError());
    auto params = ::attn::bindParams(original, {});
    ASSERT_TRUE(bool(params)) << llvm::toString(params.takeError());
    std::vector<::attn::HostTensor> inputs =
        ::attn::makeRandomInputs(original, *dims, seed);
    // Some variants refuse some sizes (document_mask reads Doc at the
    // query's key position, which does not exist for M > N): the cascade
    // itself cannot run there, so there is nothing to compare.
    ::attn::Launch launch{*dims, *params, inputs};
    if (llvm::Error error = ::attn::checkLaunch(original, launch)) {
      llvm::consumeError(std::move(error));
      ++refusedLaunches;
      return;
    }
    ++comparedLaunches;
    ::attn::ref::KernelArguments args;
    args.dims = *dims;
    args.params = *params;
    for (const ::attn::HostTensor &input : inputs)
      args.inputs.push_back(&input);

    auto expected = ::attn::ref::evaluate(original, args);
    auto actual = ::attn::ref::evaluate(raised, args);
    ASSERT_TRUE(succeeded(expected));
    ASSERT_TRUE(succeeded(actual)) << (errors.empty() ? "" : errors.front());
    ASSERT_EQ(expected->size(), actual->size());
    for (size_t o = 0; o < expected->size(); ++o) {
      const ::attn::HostTensor &e = (*expected)[o], &a = (*actual)[o];
      ASSERT_EQ(e.getShape(), a.getShape());
      double maxDiff = 0.0, maxAbs = 0.0;
      int64_t count = 1;
      for (int64_t size : e.getShape())
        count *= size;
      for (int64_t i = 0; i < count; ++i) {
        double x = e.getAsDouble(i), y = a.getAsDouble(i);
        // -inf LSE rows must stay -inf.
        if (std::isinf(x) || std::isinf(y)) {
          EXPECT_EQ(x, y) << "output " << o << " entry " << i;
          continue;
        }
        maxDiff = std::max(maxDiff, std::fabs(x - y));
        maxAbs = std::max(maxAbs, std::fabs(x));
      }
      EXPECT_LE(maxDiff, 1e-12 * std::max(maxAbs, 1e-300))
          << "output " << o << ": max |diff| " << maxDiff << ", max |O| "
          << maxAbs;
    }
  }

  MLIRContext context;
  llvm::SourceMgr sourceMgr;
  OwningOpRef<ModuleOp> module;
  std::vector<std::string> remarks, errors;
  unsigned comparedLaunches = 0, refusedLaunches = 0;
};

TEST_P(RaiseTest, RaisesAndMatchesTheCascade) {
  const Expectation &expectation = GetParam();
  compile(expectation.name);
  ASSERT_TRUE(module);
  OwningOpRef<ModuleOp> original = module->clone();
  ASSERT_TRUE(succeeded(raise(*module)));
  ASSERT_TRUE(succeeded(verify(*module)));
  KernelOp kernel = getKernel(*module);

  unsigned attentions = 0, cascadeOps = 0;
  kernel.getEntryBlock().walk([&](Operation *op) {
    if (isa<AttentionOp>(op))
      ++attentions;
    if (isa<SoftmaxOp, NormalizeOp, KeepOp>(op))
      ++cascadeOps;
  });
  if (!expectation.raised) {
    EXPECT_EQ(attentions, 0u);
    ASSERT_EQ(remarks.size(), 1u);
    EXPECT_NE(remarks.front().find(expectation.remark), std::string::npos)
        << remarks.front();
    // Untouched: same IR as before.
    std::string before, after;
    llvm::raw_string_ostream(before) << *original;
    llvm::raw_string_ostream(after) << *module;
    EXPECT_EQ(before, after);
    return;
  }
  EXPECT_EQ(attentions, 1u);
  EXPECT_EQ(cascadeOps, 0u) << "cascade ops left after raising";
  EXPECT_TRUE(remarks.empty()) << remarks.front();

  KernelOp originalKernel = getKernel(*original);
  compareAt(originalKernel, kernel,
            {{"B", 1}, {"H", 4}, {"G", 2}, {"M", 37}, {"N", 53}, {"D", 16}},
            /*seed=*/1);
  compareAt(originalKernel, kernel,
            {{"B", 1}, {"H", 4}, {"G", 2}, {"M", 45}, {"N", 29}, {"D", 16}},
            /*seed=*/2);
  EXPECT_GE(comparedLaunches, 1u);
}

INSTANTIATE_TEST_SUITE_P(Examples, RaiseTest, ::testing::ValuesIn(kExamples),
                         [](const auto &info) {
                           return std::string(info.param.name);
                         });

} // namespace
