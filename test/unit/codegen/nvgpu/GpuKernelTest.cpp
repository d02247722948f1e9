//===- GpuKernelTest.cpp - Compiling an attention and its backward --------===//
//
// compileAttentionWithBackwardForGpu lowers the modules of a forward and of
// its backward together; each must come out as compileAttentionForGpu and
// compileAttentionBackwardForGpu give it on their own, also in a context
// without threading, where the lowerings run one by one.
//
//===----------------------------------------------------------------------===//

#include "attn/NVGPU/GpuKernel.h"
#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"
#include "mlir/Parser/Parser.h"

#include <gtest/gtest.h>

namespace {

using namespace mlir;
using namespace mlir::attn;

/// A causal softmax attention over bf16 Q, K, V with head dims of 64 (which
/// every kernel serves, wgmma ones included) feeding its backward.
constexpr const char *kKernel = R"mlir(
attn.kernel @causal_grad attributes {
  dim_names = ["B", "H", "G", "M", "N"],
  dim_sizes = array<i64: -9223372036854775808, -9223372036854775808,
                         -9223372036854775808, -9223372036854775808,
                         -9223372036854775808>,
  input_names = ["Q", "K", "V", "dO"], param_names = ["scale"],
  param_defaults = [1.0 : f32], output_names = ["dQ", "dK", "dV"],
  output_types = [f32, f32, f32],
  shapes = [["B", "H", "M", 64], ["B", "G", "N", 64], ["B", "G", "N", 64],
            ["B", "H", "M", 64], ["B", "H", "M", 64], ["B", "G", "N", 64],
            ["B", "G", "N", 64]]} {
^bb0(%B: index, %H: index, %G: index, %M: index, %N: index,
     %Q: tensor<?x?x?x64xbf16>, %K: tensor<?x?x?x64xbf16>,
     %V: tensor<?x?x?x64xbf16>, %dO: tensor<?x?x?x64xf32>, %scale: f32):
  %O, %L = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %keep = arith.cmpi sle, %n, %m : index
    attn.yield %keep : i1
  }
  %dQ, %dK, %dV = attn.attention_backward <softmax> %Q, %K, %V, %O, %L, %dO
      scale(%scale)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>,
        tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %keep = arith.cmpi sle, %n, %m : index
    attn.yield %keep : i1
  }
  attn.return %dQ, %dK, %dV
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
}
)mlir";

/// Parameterized on whether the context has threading.
class GpuKernelTest : public ::testing::TestWithParam<bool> {
protected:
  GpuKernelTest()
      : context(GetParam() ? MLIRContext::Threading::ENABLED
                           : MLIRContext::Threading::DISABLED) {
    DialectRegistry registry;
    registerGpuCodegenDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadDialect<AttnDialect, arith::ArithDialect>();
  }

  /// The attention and its backward in `module`, parsed from `text`.
  void parse(StringRef text, OwningOpRef<ModuleOp> &module,
             AttentionOp &forward, AttentionBackwardOp &backward) {
    module = parseSourceString<ModuleOp>(text, ParserConfig(&context));
    ASSERT_TRUE(module);
    module->walk([&](AttentionOp op) { forward = op; });
    module->walk([&](AttentionBackwardOp op) { backward = op; });
    ASSERT_TRUE(forward && backward);
  }

  MLIRContext context;
};

/// The forward with every module it can have here (the mma.sync kernel, the
/// decode kernels, the wgmma kernel) and the backward's module: four modules
/// of different sizes lowered together.
TEST_P(GpuKernelTest, ForwardWithBackwardIsTheirPtxAlone) {
  OwningOpRef<ModuleOp> module;
  AttentionOp forward;
  AttentionBackwardOp backward;
  ASSERT_NO_FATAL_FAILURE(parse(kKernel, module, forward, backward));

  GpuOptions forwardOptions;
  forwardOptions.decode = true;
  forwardOptions.wgmma = true;
  GpuOptions backwardOptions;
  backwardOptions.wgmma = true;

  llvm::Expected<GpuKernelArtifact> forwardAlone =
      compileAttentionForGpu(forward, forwardOptions);
  ASSERT_TRUE(bool(forwardAlone)) << llvm::toString(forwardAlone.takeError());
  llvm::Expected<GpuBackwardKernels> backwardAlone =
      compileAttentionBackwardForGpu(backward, backwardOptions);
  ASSERT_TRUE(bool(backwardAlone)) << llvm::toString(backwardAlone.takeError());
  llvm::Expected<GpuAttentionWithBackward> together =
      compileAttentionWithBackwardForGpu(forward, forwardOptions, backward,
                                         backwardOptions);
  ASSERT_TRUE(bool(together)) << llvm::toString(together.takeError());

  const GpuKernelArtifact &artifact = together->forward;
  EXPECT_FALSE(artifact.ptx.empty());
  EXPECT_EQ(artifact.ptx, forwardAlone->ptx);
  EXPECT_EQ(artifact.kernelName, forwardAlone->kernelName);
  EXPECT_EQ(artifact.dynamicSharedMemoryBytes,
            forwardAlone->dynamicSharedMemoryBytes);
  EXPECT_EQ(artifact.signature.params.size(),
            forwardAlone->signature.params.size());
  ASSERT_TRUE(artifact.decode && forwardAlone->decode);
  EXPECT_FALSE(artifact.decode->ptx.empty());
  EXPECT_EQ(artifact.decode->ptx, forwardAlone->decode->ptx);
  EXPECT_EQ(artifact.decode->kernelName, forwardAlone->decode->kernelName);
  ASSERT_TRUE(artifact.wgmma && forwardAlone->wgmma);
  EXPECT_FALSE(artifact.wgmma->ptx.empty());
  EXPECT_EQ(artifact.wgmma->ptx, forwardAlone->wgmma->ptx);
  EXPECT_EQ(artifact.wgmma->sharedMemoryBytes,
            forwardAlone->wgmma->sharedMemoryBytes);
  EXPECT_FALSE(artifact.prologue || forwardAlone->prologue);

  const GpuBackwardKernels &kernels = together->backward;
  EXPECT_FALSE(kernels.ptx.empty());
  EXPECT_EQ(kernels.ptx, backwardAlone->ptx);
  EXPECT_EQ(kernels.keyValueName, backwardAlone->keyValueName);
  EXPECT_EQ(kernels.queryName, backwardAlone->queryName);
  EXPECT_EQ(kernels.keyValueSharedBytes, backwardAlone->keyValueSharedBytes);
  EXPECT_EQ(kernels.signature.params.size(),
            backwardAlone->signature.params.size());
  EXPECT_FALSE(kernels.epilogue || backwardAlone->epilogue);
}

/// Where neither can be built, the backward's error is reported, as when the
/// backward is compiled first on its own.
TEST_P(GpuKernelTest, BackwardErrorComesFirst) {
  std::string text = kKernel;
  // f32 operands, which no kernel takes.
  for (size_t at; (at = text.find("xbf16")) != std::string::npos;)
    text.replace(at, 5, "xf32");
  OwningOpRef<ModuleOp> module;
  AttentionOp forward;
  AttentionBackwardOp backward;
  ASSERT_NO_FATAL_FAILURE(parse(text, module, forward, backward));
  llvm::Expected<GpuAttentionWithBackward> together =
      compileAttentionWithBackwardForGpu(forward, GpuOptions(), backward,
                                         GpuOptions());
  ASSERT_FALSE(bool(together));
  std::string message = llvm::toString(together.takeError());
  EXPECT_NE(message.find("cannot build the backward kernels"),
            std::string::npos)
      << message;
}

INSTANTIATE_TEST_SUITE_P(Context, GpuKernelTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool> &info) {
                           return std::string(info.param ? "Threading"
                                                         : "NoThreading");
                         });

} // namespace
