//===- HalideKernelTest.cpp - The Halide backend end to end ---------------===//
//
// Cascades compiled through Halide and checked against the float64
// reference: masked rows, empty reductions, gathers, several outputs, an MLIR
// kernel and a Halide kernel in one process (two LLVMs), and Halide's
// errors as llvm::Errors.
//
//===----------------------------------------------------------------------===//

#include "attn/CPU/CpuKernel.h"
#include "attn/Driver/Compile.h"
#include "attn/Driver/CpuBackendChoice.h"
#include "attn/Driver/Launch.h"
#include "attn/Driver/Spec.h"
#include "attn/Frontend/Frontend.h"
#include "attn/Halide/HalideKernel.h"
#include "attn/Linalg/Pipelines.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/TargetSelect.h"

#include <gtest/gtest.h>

#include <dlfcn.h>
#include <link.h>

#include <cmath>
#include <cstring>
#include <string>

using namespace attn;

namespace {

class HalideKernelTest : public ::testing::Test {
protected:
  HalideKernelTest() {
    // The MLIR path's JIT, and the JIT that links Halide objects (LLVM 22).
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    mlir::DialectRegistry registry;
    mlir::attn::registerCodegenDialects(registry);
    context.appendDialectRegistry(registry);
    context.loadAllAvailableDialects();
  }

  /// `spec` through the front end.
  LoadedSpec load(llvm::StringRef spec) {
    llvm::SourceMgr sourceMgr;
    sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(spec),
                                 llvm::SMLoc());
    auto module = dsl::compileSpec(sourceMgr, context);
    EXPECT_TRUE(mlir::succeeded(module));
    llvm::Expected<LoadedSpec> loaded = LoadedSpec::fromModule(
        mlir::OwningOpRef<mlir::ModuleOp>(module->release()));
    EXPECT_TRUE(bool(loaded)) << llvm::toString(loaded.takeError());
    return std::move(*loaded);
  }

  /// Compiles `spec` with `backend`, runs it at `shape` on random inputs and
  /// returns each output's relative error against the reference.
  std::vector<double> runAgainstReference(const LoadedSpec &spec,
                                          CpuBackend backend,
                                          const llvm::StringMap<int64_t> &shape,
                                          std::vector<HostTensor> *results =
                                              nullptr) {
    mlir::attn::KernelOp kernel = spec.getKernel();
    llvm::Expected<std::vector<int64_t>> dims = bindDims(kernel, shape);
    EXPECT_TRUE(bool(dims)) << llvm::toString(dims.takeError());
    llvm::Expected<std::vector<double>> params = bindParams(kernel, {});
    EXPECT_TRUE(bool(params)) << llvm::toString(params.takeError());
    std::vector<HostTensor> inputs = makeRandomInputs(kernel, *dims, 7);
    CpuKernelOptions options;
    options.backend = backend;
    options.halide.dimEstimates = *dims;
    auto compiled = spec.compileForHost(options, CacheOptions::standard(true));
    EXPECT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
    if (!compiled)
      return {};
    EXPECT_EQ((*compiled)->isHalide(), backend == CpuBackend::Halide);
    const KernelSignature &signature = spec.getSignature();
    std::vector<HostTensor> outputs;
    for (unsigned i = 0; i < signature.outputs.size(); ++i)
      outputs.emplace_back(
          signature.outputs[i].dtype,
          getTensorShape(kernel, signature.inputs.size() + i, *dims));
    std::vector<const HostTensor *> in;
    for (const HostTensor &t : inputs)
      in.push_back(&t);
    std::vector<HostTensor *> out;
    for (HostTensor &t : outputs)
      out.push_back(&t);
    llvm::Error error = (*compiled)->run(*dims, in, *params, out);
    EXPECT_FALSE(bool(error)) << llvm::toString(std::move(error));
    llvm::Expected<std::vector<HostTensor>> expected =
        spec.evaluateReference(*dims, in, *params);
    EXPECT_TRUE(bool(expected)) << llvm::toString(expected.takeError());
    std::vector<double> errors;
    for (size_t o = 0; o < outputs.size(); ++o) {
      double diff = 0, norm = 0;
      for (int64_t i = 0; i < outputs[o].getNumElements(); ++i) {
        double want = (*expected)[o].getAsDouble(i);
        double got = outputs[o].getAsDouble(i);
        if (std::isinf(want) && want == got)
          continue;
        diff += (got - want) * (got - want);
        norm += want * want;
      }
      errors.push_back(norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff));
    }
    if (results)
      *results = std::move(outputs);
    return errors;
  }

  mlir::MLIRContext context;
};

/// Rows m < 3 keep no key: O is 0 there and LSE -inf; the window and sizes
/// (M != N, neither a multiple of a vector) leave partial rows.
constexpr const char *kMaskedRows = R"(
attention masked_rows {
  dims  B, H, M, N, D = 24
  in    Q: f32[B, H, M, D]
  in    K: f32[B, H, N, D]
  in    V: f32[B, H, N, D]
  out   O: f32[B, H, M, D]
  out   LSE: f32[B, H, M]
  S[b,h,m,n] = sum[d](Q[b,h,m,d] * K[b,h,n,d]) * rsqrt(D)
  keep S where m >= 3 and n <= m and m - n < 9
  P = softmax[n](S)
  O[b,h,m,e] = sum[n](P[b,h,m,n] * V[b,h,n,e])
  LSE = logsumexp[n](S)
}
)";

TEST_F(HalideKernelTest, FullyMaskedRowsGiveZerosAndMinusInfinity) {
  LoadedSpec spec = load(kMaskedRows);
  std::vector<HostTensor> outputs;
  std::vector<double> errors = runAgainstReference(
      spec, CpuBackend::Halide, {{"B", 2}, {"H", 3}, {"M", 13}, {"N", 11}},
      &outputs);
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_LT(errors[0], 1e-5);
  EXPECT_LT(errors[1], 1e-5);
  // Row m = 1 of (b, h) = (0, 0): no key kept.
  for (int64_t e = 0; e < 24; ++e)
    EXPECT_EQ(outputs[0].getAsDouble(24 + e), 0.0);
  EXPECT_EQ(outputs[1].getAsDouble(1), -INFINITY);
}

/// Paged keys (a gather), a mean and a min over masked terms, an empty
/// reduction (W = 0 columns kept for odd rows).
constexpr const char *kGatherAndReductions = R"(
attention gather_reductions {
  dims  B, H, M, N, D = 8, P, NP
  in    Q: f32[B, H, M, D]
  in    Kc: f32[NP, P, H, D]
  in    Pages: i32[B, NP]
  out   Avg: f32[B, H, M]
  out   Lo: f32[B, H, M]
  S[b,h,m,n < N] = sum[d](Q[b,h,m,d] * Kc[Pages[b, n / P], n % P, h, d])
  keep S where m % 2 == 0 and n <= m
  Avg = mean[n](S)
  Lo = min[n](S)
}
)";

TEST_F(HalideKernelTest, GathersAndMaskedReductions) {
  LoadedSpec spec = load(kGatherAndReductions);
  std::vector<double> errors = runAgainstReference(
      spec, CpuBackend::Halide,
      {{"B", 2}, {"H", 2}, {"M", 7}, {"N", 12}, {"P", 4}, {"NP", 5}});
  ASSERT_EQ(errors.size(), 2u);
  EXPECT_LT(errors[0], 1e-5);
  EXPECT_LT(errors[1], 1e-5);
}

/// Whether a library whose file name contains `name` is mapped.
bool isLoaded(const char *name) {
  struct Search {
    const char *name;
    bool found = false;
  } search{name};
  dl_iterate_phdr(
      [](struct dl_phdr_info *info, size_t, void *data) {
        auto *s = static_cast<Search *>(data);
        if (info->dlpi_name && std::strstr(info->dlpi_name, s->name))
          s->found = true;
        return 0;
      },
      &search);
  return search.found;
}

// libHalide14 links LLVM 14, attnc LLVM 22: both are mapped, and a kernel
// of each (MLIR's JIT through LLVM 22, Halide's code generator through
// LLVM 14, both linked by the LLVM 22 JIT) runs correctly in one process,
// in either order. Their symbols are versioned (LLVM_14, LLVM_22.1), so
// neither library binds to the other's.
TEST_F(HalideKernelTest, TwoLLVMsInOneProcess) {
  LoadedSpec spec = load(kMaskedRows);
  llvm::StringMap<int64_t> shape = {{"B", 1}, {"H", 2}, {"M", 9}, {"N", 10}};
  for (CpuBackend backend :
       {CpuBackend::Halide, CpuBackend::Mlir, CpuBackend::Halide}) {
    std::vector<double> errors = runAgainstReference(spec, backend, shape);
    ASSERT_EQ(errors.size(), 2u);
    EXPECT_LT(errors[0], 1e-5);
  }
  EXPECT_TRUE(isLoaded("libHalide"));
  EXPECT_TRUE(isLoaded("libLLVM-14") || isLoaded("libLLVM.so.14"));
  EXPECT_TRUE(isLoaded("libLLVM.so.22") || isLoaded("libLLVM-22"));
  // The mechanism: the same symbol, once per version node, each in its own
  // library; libHalide14's references name LLVM_14, attnc's LLVM_22.1.
  void *llvm14 = dlvsym(RTLD_DEFAULT, "LLVMContextCreate", "LLVM_14");
  void *llvm22 = dlvsym(RTLD_DEFAULT, "LLVMContextCreate", "LLVM_22.1");
  EXPECT_NE(llvm14, nullptr);
  EXPECT_NE(llvm22, nullptr);
  EXPECT_NE(llvm14, llvm22);
}

/// The backend `--backend auto` gives `spec`.
CpuBackend resolveAuto(const LoadedSpec &spec) {
  mlir::OwningOpRef<mlir::ModuleOp> copy(spec.getModule().clone());
  return resolveCpuBackend(*copy, CpuBackend::Auto);
}

TEST_F(HalideKernelTest, AutoTakesHalideOnlyForUnfusedCascades) {
  EXPECT_EQ(resolveAuto(load(kMaskedRows)), CpuBackend::Mlir);
  EXPECT_EQ(resolveAuto(load(kGatherAndReductions)), CpuBackend::Halide);
}

TEST_F(HalideKernelTest, ErrorsComeBackAsErrors) {
  LoadedSpec spec = load(kMaskedRows);
  mlir::OwningOpRef<mlir::ModuleOp> copy(spec.getModule().clone());
  HalideScheduleOptions options;
  options.scheduler = "NoSuchScheduler";
  llvm::Expected<CpuKernelObject> object =
      compileHalideKernelObject(*copy, options);
  ASSERT_FALSE(bool(object));
  EXPECT_NE(llvm::toString(object.takeError()).find("unknown Halide scheduler"),
            std::string::npos);

  // A launch whose tensors are smaller than its sizes say is refused.
  CpuKernelOptions kernelOptions;
  kernelOptions.backend = CpuBackend::Halide;
  auto compiled =
      spec.compileForHost(kernelOptions, CacheOptions::standard(true));
  ASSERT_TRUE(bool(compiled)) << llvm::toString(compiled.takeError());
  HostTensor q(DType::F32, {1, 1, 4, 24}), k(DType::F32, {1, 1, 2, 24}),
      v(DType::F32, {1, 1, 2, 24});
  HostTensor o(DType::F32, {1, 1, 4, 24}), lse(DType::F32, {1, 1, 4});
  llvm::Error error =
      (*compiled)->run({1, 1, 4, 6, 24}, {&q, &k, &v}, {}, {&o, &lse});
  ASSERT_TRUE(bool(error));
  std::string message = llvm::toString(std::move(error));
  EXPECT_NE(message.find("tensor 'K' of kernel 'masked_rows' has shape [1, "
                         "1, 2, 24], but the sizes make it [1, 1, 6, 24]"),
            std::string::npos)
      << message;
}

} // namespace
