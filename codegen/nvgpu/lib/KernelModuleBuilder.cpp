//===- KernelModuleBuilder.cpp - A gpu.module of region kernels -----------===//

#include "KernelBuilding.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

using namespace mlir;
using namespace mlir::attn;

FailureOr<gpu::GPUModuleOp>
KernelModuleBuilder::create(StringRef moduleName, unsigned tensorMaps,
                            ArrayRef<StringRef> pointers) {
  if (failed(collectCaptures(regionOwner, captureValues)))
    return failure();
  signature = GpuKernelSignature();
  for (unsigned p = 0; p < kNumFixedParams; ++p)
    signature.params.push_back(getFixedParam(static_cast<FixedParam>(p)));
  for (unsigned m = 0; m < tensorMaps; ++m)
    signature.params.push_back(
        {"map." + std::to_string(m), GpuKernelParam::Kind::TensorMap});
  for (StringRef pointer : pointers)
    signature.params.push_back({pointer.str(), GpuKernelParam::Kind::Pointer});
  auto globalPtr = LLVM::LLVMPointerType::get(builder.getContext(), 1);
  for (const GpuKernelParam &param : signature.params) {
    switch (param.kind) {
    case GpuKernelParam::Kind::Pointer:
      argTypes.push_back(globalPtr);
      break;
    case GpuKernelParam::Kind::I32:
      argTypes.push_back(builder.getI32Type());
      break;
    case GpuKernelParam::Kind::I64:
      argTypes.push_back(builder.getI64Type());
      break;
    case GpuKernelParam::Kind::F32:
      argTypes.push_back(builder.getF32Type());
      break;
    case GpuKernelParam::Kind::F64:
      argTypes.push_back(builder.getF64Type());
      break;
    case GpuKernelParam::Kind::TensorMap:
      // Its address in the parameter space, as a generic pointer.
      argTypes.push_back(LLVM::LLVMPointerType::get(builder.getContext()));
      break;
    }
  }
  appendCaptureParams(captureValues, signature, argTypes);

  module = gpu::GPUModuleOp::create(builder, loc, moduleName);
  OpBuilder::InsertionGuard insertion(builder);
  builder.setInsertionPointToStart(module.getBody());
  // Dynamic shared memory: a zero-sized array in the shared space, whose
  // real size is given at launch.
  LLVM::GlobalOp::create(builder, loc,
                         LLVM::LLVMArrayType::get(builder.getI8Type(), 0),
                         /*isConstant=*/false, LLVM::Linkage::External,
                         "attn_smem", Attribute(), /*alignment=*/16,
                         /*addrSpace=*/3);
  return module;
}

gpu::GPUFuncOp KernelModuleBuilder::createKernel(const Twine &name,
                                                 int64_t threads) {
  OpBuilder::InsertionGuard insertion(builder);
  builder.setInsertionPointToEnd(module.getBody());
  auto func = gpu::GPUFuncOp::create(builder, loc, name.str(),
                                     builder.getFunctionType(argTypes, {}));
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                builder.getUnitAttr());
  func.setKnownBlockSizeAttr(
      builder.getDenseI32ArrayAttr({static_cast<int32_t>(threads), 1, 1}));
  // Q, K, V are only read and O, LSE only written: noalias lets NVPTX use
  // the read-only data path (ld.global.nc).
  for (unsigned i = 0; i < 6; ++i)
    func.setArgAttr(i, LLVM::LLVMDialect::getNoAliasAttrName(),
                    builder.getUnitAttr());
  SmallVector<int32_t> tensorMaps;
  for (auto [i, param] : llvm::enumerate(signature.params))
    if (param.kind == GpuKernelParam::Kind::TensorMap)
      tensorMaps.push_back(static_cast<int32_t>(i));
  if (!tensorMaps.empty())
    func->setAttr(kTensorMapArgsAttrName,
                  builder.getDenseI32ArrayAttr(tensorMaps));
  return func;
}

LogicalResult KernelModuleBuilder::addRegionKernel(
    const Twine &name, int64_t threads,
    llvm::function_ref<void(ValueRange, const IRMapping &)> emitBody,
    bool trustInRangeReads) {
  gpu::GPUFuncOp func = createKernel(name, threads);
  Block &entry = func.getBody().front();
  OpBuilder::InsertionGuard insertion(builder);
  builder.setInsertionPointToStart(&entry);
  IRMapping captures;
  mapCaptures(builder, loc, regionOwner, captureValues, signature,
              entry.getArguments(), captures);
  emitBody(entry.getArguments(), captures);
  gpu::ReturnOp::create(builder, loc);
  if (failed(lowerCapturedTensorAccesses(func, trustInRangeReads)))
    return failure();
  return lowerMathForNVPTX(func);
}
