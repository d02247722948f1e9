//===- NVGPUPipeline.cpp - attn.attention to a gpu.binary with PTX --------===//
//
// `attn-build-gpu-kernels` adds, for every attn.attention of a module, a
// device-only gpu.module holding its kernel, and modules for its decode and
// prologue kernels (the host side is the runtime's: it launches by name
// with the parameters GpuKernelSignature lists). `attn-nvgpu-pipeline` then
// lowers those modules to NVVM and serialises them to PTX in gpu.binary ops.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"

#include "attn/Dialect/Attn/IR/AttnDialect.h"
#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "llvm/Support/CommandLine.h"

#include <mutex>

#include "mlir/Conversion/ArithToLLVM/ArithToLLVM.h"
#include "mlir/Conversion/ControlFlowToLLVM/ControlFlowToLLVM.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVM.h"
#include "mlir/Conversion/IndexToLLVM/IndexToLLVM.h"
#include "mlir/Conversion/MathToLLVM/MathToLLVM.h"
#include "mlir/Conversion/NVVMToLLVM/NVVMToLLVM.h"
#include "mlir/Conversion/Passes.h"
#include "mlir/Conversion/UBToLLVM/UBToLLVM.h"
#include "mlir/Conversion/VectorToLLVM/ConvertVectorToLLVM.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"

#include <mutex>

using namespace mlir;
using namespace mlir::attn;

void mlir::attn::registerGpuCodegenDialects(DialectRegistry &registry) {
  registry.insert<arith::ArithDialect, cf::ControlFlowDialect, gpu::GPUDialect, LLVM::LLVMDialect,
                  math::MathDialect, NVVM::NVVMDialect, scf::SCFDialect,
                  vector::VectorDialect>();
  // convert-gpu-to-nvvm lowers every dialect that offers a to-LLVM
  // interface; tools that do not register all extensions need these.
  arith::registerConvertArithToLLVMInterface(registry);
  cf::registerConvertControlFlowToLLVMInterface(registry);
  index::registerConvertIndexToLLVMInterface(registry);
  registerConvertMathToLLVMInterface(registry);
  registerConvertNVVMToLLVMInterface(registry);
  ub::registerConvertUBToLLVMInterface(registry);
  vector::registerConvertVectorToLLVMInterface(registry);
  NVVM::registerConvertGpuToNVVMInterface(registry);
  // gpu-module-to-binary translates the modules to LLVM IR and needs the
  // NVVM target attribute's implementation.
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
  registerGPUDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
}

/// Makes NVPTX address shared memory with 32-bit pointers (its
/// `-nvptx-short-ptr`): every shared-memory address the kernel keeps in a
/// register (the ldmatrix and cp.async bases) then takes one register, not
/// two. The option is process-wide and only read by the NVPTX backend.
static void useShortSharedPointers() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto &options = llvm::cl::getRegisteredOptions();
    if (llvm::cl::Option *option = options.lookup("nvptx-short-ptr"))
      option->addOccurrence(/*pos=*/0, "nvptx-short-ptr", "true");
  });
}

namespace {
/// Makes the arguments a kernel lists under kTensorMapArgsAttrName what the
/// driver passes a CUtensorMap as: 128 bytes by value in the parameter
/// space, 64-byte aligned, read in place (a grid constant, whose address
/// cp.async.bulk.tensor takes). gpu.func keeps neither attribute through
/// convert-gpu-to-nvvm, hence a step after it.
struct PassTensorMapsByValuePass
    : PassWrapper<PassTensorMapsByValuePass,
                  OperationPass<gpu::GPUModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(PassTensorMapsByValuePass)
  StringRef getArgument() const override {
    return "attn-pass-tensor-maps-by-value";
  }
  void runOnOperation() override {
    getOperation().walk([](LLVM::LLVMFuncOp func) {
      auto maps =
          func->getAttrOfType<DenseI32ArrayAttr>(kTensorMapArgsAttrName);
      if (!maps)
        return;
      MLIRContext *context = func.getContext();
      Builder builder(context);
      auto mapType =
          LLVM::LLVMArrayType::get(IntegerType::get(context, 8), 128);
      for (int32_t i : maps.asArrayRef()) {
        func.setArgAttr(i, LLVM::LLVMDialect::getByValAttrName(),
                        TypeAttr::get(mapType));
        func.setArgAttr(i, LLVM::LLVMDialect::getAlignAttrName(),
                        builder.getI64IntegerAttr(64));
        func.setArgAttr(i, NVVM::NVVMDialect::getGridConstantAttrName(),
                        builder.getUnitAttr());
      }
      func->removeAttr(kTensorMapArgsAttrName);
    });
  }
};
} // namespace

void mlir::attn::addGpuLoweringPasses(OpPassManager &pm,
                                      const GpuOptions &options) {
  useShortSharedPointers();
  OpPassManager &device = pm.nest<gpu::GPUModuleOp>();
  // scf first: convert-gpu-to-nvvm then lowers cf, arith and the kernel in
  // one conversion (convert-cf-to-llvm cannot run on a gpu.module).
  device.addPass(createSCFToControlFlowPass());
  // 32-bit indices: every index the kernel computes (rows, keys, shared
  // memory offsets) fits, and global offsets are built in i64 explicitly.
  ConvertGpuOpsToNVVMOpsOptions gpuToNVVM;
  gpuToNVVM.indexBitwidth = 32;
  gpuToNVVM.useBarePtrCallConv = true;
  device.addPass(createConvertGpuOpsToNVVMOps(gpuToNVVM));
  device.addPass(createConvertNVVMToLLVMPass());
  device.addPass(createConvertVectorToLLVMPass());
  ArithToLLVMConversionPassOptions arithToLLVM;
  arithToLLVM.indexBitwidth = 32;
  device.addPass(createArithToLLVMConversionPass(arithToLLVM));
  ConvertIndexToLLVMPassOptions indexToLLVM;
  indexToLLVM.indexBitwidth = 32;
  device.addPass(createConvertIndexToLLVMPass(indexToLLVM));
  device.addPass(createReconcileUnrealizedCastsPass());
  device.addPass(std::make_unique<PassTensorMapsByValuePass>());
  device.addPass(createCanonicalizerPass());
  device.addPass(createCSEPass());

  GpuNVVMAttachTargetOptions target;
  target.chip = options.chip;
  target.features = options.features;
  target.optLevel = options.optLevel;
  pm.addPass(createGpuNVVMAttachTarget(target));
  GpuModuleToBinaryPassOptions toBinary;
  toBinary.compilationTarget = "isa";
  pm.addPass(createGpuModuleToBinaryPass(toBinary));
}

namespace {

/// Options shared by the pass and the pipeline.
struct NVGPUOptionsBase {
  static void fill(GpuOptions &options, StringRef chip, StringRef features,
                   int64_t blockM, int64_t blockN, int64_t warpRows,
                   bool decode) {
    options.chip = chip.str();
    options.features = features.str();
    options.blockM = blockM;
    options.blockN = blockN;
    options.warpRows = warpRows;
    options.decode = decode;
  }
};

struct BuildGpuKernelsPass
    : PassWrapper<BuildGpuKernelsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(BuildGpuKernelsPass)

  /// Registered on its own, the pass builds the default tiles; the tile
  /// options are the pipeline's.
  BuildGpuKernelsPass() = default;
  BuildGpuKernelsPass(const GpuOptions &options) : options(options) {}

  StringRef getArgument() const final { return "attn-build-gpu-kernels"; }
  StringRef getDescription() const final {
    return "Build a device-only gpu.module (mma.sync FlashAttention "
           "skeleton) for every attn.attention";
  }
  void getDependentDialects(DialectRegistry &registry) const override {
    registerGpuCodegenDialects(registry);
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<AttentionOp> ops;
    module.walk([&](AttentionOp op) { ops.push_back(op); });
    OpBuilder builder(module.getBodyRegion());
    builder.setInsertionPointToEnd(module.getBody());
    for (auto [index, op] : llvm::enumerate(ops)) {
      GpuKernelSignature signature;
      std::string name = "attn_gpu_" + std::to_string(index);
      if (failed(buildAttentionGpuModule(builder, op, options, name,
                                         "attn_fwd", signature)))
        return signalPassFailure();
      if (options.decode && supportsGpuDecode(op) &&
          failed(buildDecodeGpuModule(builder, op, options, name + "_decode",
                                      "attn_fwd", signature)))
        return signalPassFailure();
      std::vector<EinsumOp> einsums = getPrologueEinsums(op);
      std::vector<GpuPrologueKernel> prologue;
      if (!einsums.empty() &&
          failed(buildPrologueGpuModule(builder, einsums, name + "_prologue",
                                        "attn_fwd_prologue", prologue)))
        return signalPassFailure();
    }
    if (!ops.empty())
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                      builder.getUnitAttr());
  }

  GpuOptions options;
};

struct NVGPUPipelineOptions
    : PassPipelineOptions<NVGPUPipelineOptions> {
  Option<std::string> chip{*this, "chip",
                           llvm::cl::desc("sm_80, sm_90a, ..."),
                           llvm::cl::init("sm_90a")};
  Option<std::string> features{*this, "features",
                               llvm::cl::desc("PTX ISA feature"),
                               llvm::cl::init("+ptx80")};
  Option<int64_t> blockM{*this, "block-m",
                         llvm::cl::desc("Query rows per CTA (64 or 128)"),
                         llvm::cl::init(128)};
  Option<int64_t> blockN{*this, "block-n",
                         llvm::cl::desc("Keys per main-loop iteration (32 or "
                                        "64; 0: chosen per variant)"),
                         llvm::cl::init(0)};
  Option<int64_t> warpRows{*this, "warp-rows",
                           llvm::cl::desc("Query rows per warp (16 or 32)"),
                           llvm::cl::init(32)};
  Option<bool> decode{*this, "decode",
                      llvm::cl::desc("Also build the split-key decode kernel "
                                     "and its merge"),
                      llvm::cl::init(false)};
};

} // namespace

void mlir::attn::registerAttnGPUPasses() {
  PassRegistration<BuildGpuKernelsPass>();
  PassPipelineRegistration<NVGPUPipelineOptions>(
      "attn-nvgpu-pipeline",
      "Lower every attn.attention to a tensor-core (mma.sync) kernel in a "
      "gpu.binary holding PTX",
      [](OpPassManager &pm, const NVGPUPipelineOptions &pipelineOptions) {
        GpuOptions options;
        NVGPUOptionsBase::fill(options, pipelineOptions.chip,
                               pipelineOptions.features, pipelineOptions.blockM,
                               pipelineOptions.blockN, pipelineOptions.warpRows,
                               pipelineOptions.decode);
        pm.addPass(std::make_unique<BuildGpuKernelsPass>(options));
        addGpuLoweringPasses(pm, options);
      });
}
