//===- KernelSignature.cpp - The signature of an attn.kernel --------------===//

#include "attn/Driver/KernelSignature.h"

#include "llvm/Support/raw_ostream.h"

using namespace attn;
using mlir::attn::KernelOp;

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::vector<std::string> getNames(mlir::ArrayAttr names) {
  std::vector<std::string> result;
  for (mlir::Attribute name : names)
    result.push_back(llvm::cast<mlir::StringAttr>(name).getValue().str());
  return result;
}

std::vector<KernelAxis> getAxes(KernelOp kernel, unsigned tensor) {
  std::vector<KernelAxis> axes;
  for (mlir::Attribute axis : kernel.getShapeOf(tensor)) {
    if (auto name = llvm::dyn_cast<mlir::StringAttr>(axis))
      axes.push_back({name.getValue().str(), 0});
    else
      axes.push_back({"", llvm::cast<mlir::IntegerAttr>(axis).getInt()});
  }
  return axes;
}

} // namespace

std::optional<DType> attn::getDType(mlir::Type type) {
  if (type.isIndex())
    return DType::I64;
  // MLIR prints scalar types with the spellings dtypeName uses ("f32",
  // "bf16", "i32", ...).
  std::string name;
  llvm::raw_string_ostream(name) << type;
  return parseDType(name);
}

llvm::Expected<KernelSignature> KernelSignature::read(KernelOp kernel) {
  KernelSignature signature;
  signature.name = kernel.getSymName().str();
  std::vector<std::string> dimNames = getNames(kernel.getDimNames());
  for (unsigned i = 0; i < kernel.getNumDims(); ++i) {
    KernelDim dim{dimNames[i], std::nullopt};
    int64_t size = kernel.getDimSizes()[i];
    if (!mlir::ShapedType::isDynamic(size))
      dim.size = size;
    signature.dims.push_back(std::move(dim));
  }
  auto where = [&](const char *what, unsigned i, const std::string &name) {
    return "kernel '" + signature.name + "': " + what + " #" +
           std::to_string(i) + " ('" + name + "')";
  };
  std::vector<std::string> inputNames = getNames(kernel.getInputNames());
  for (unsigned i = 0; i < kernel.getNumInputs(); ++i) {
    auto type =
        llvm::cast<mlir::RankedTensorType>(kernel.getInputArg(i).getType());
    std::optional<DType> dtype = getDType(type.getElementType());
    if (!dtype)
      return makeError(where("input", i, inputNames[i]) +
                       " has an element type no runtime tensor holds");
    signature.inputs.push_back({inputNames[i], *dtype, getAxes(kernel, i)});
  }
  std::vector<std::string> paramNames = getNames(kernel.getParamNames());
  for (unsigned i = 0; i < kernel.getNumParams(); ++i) {
    std::optional<DType> dtype = getDType(kernel.getParamArg(i).getType());
    if (!dtype || (*dtype != DType::F32 && *dtype != DType::F64 &&
                   *dtype != DType::I32 && *dtype != DType::I64))
      return makeError(where("param", i, paramNames[i]) +
                       " has a type no kernel can take");
    KernelParam param{paramNames[i], *dtype, std::nullopt};
    mlir::Attribute value = kernel.getParamDefaults()[i];
    if (auto f = llvm::dyn_cast_or_null<mlir::FloatAttr>(value))
      param.defaultValue = f.getValueAsDouble();
    else if (auto n = llvm::dyn_cast_or_null<mlir::IntegerAttr>(value))
      param.defaultValue = static_cast<double>(n.getInt());
    signature.params.push_back(std::move(param));
  }
  std::vector<std::string> outputNames = getNames(kernel.getOutputNames());
  for (unsigned i = 0; i < kernel.getNumOutputs(); ++i) {
    std::optional<DType> dtype = getDType(
        llvm::cast<mlir::TypeAttr>(kernel.getOutputTypes()[i]).getValue());
    if (!dtype)
      return makeError(where("output", i, outputNames[i]) +
                       " has an element type no runtime tensor holds");
    signature.outputs.push_back({outputNames[i], *dtype,
                                 getAxes(kernel, kernel.getNumInputs() + i)});
  }
  return signature;
}

llvm::Expected<KernelSignature> KernelSignature::read(mlir::ModuleOp module) {
  KernelOp kernel;
  unsigned count = 0;
  module.walk([&](KernelOp k) {
    kernel = k;
    ++count;
  });
  if (count != 1)
    return makeError("expected one attn.kernel in the module, found " +
                     llvm::Twine(count));
  return read(kernel);
}

DType attn::getInputDType(KernelOp kernel, unsigned i) {
  auto type =
      llvm::cast<mlir::RankedTensorType>(kernel.getInputArg(i).getType());
  return getDType(type.getElementType()).value_or(DType::I64);
}

std::vector<int64_t> attn::getTensorShape(KernelOp kernel, unsigned i,
                                          llvm::ArrayRef<int64_t> dims) {
  std::vector<int64_t> shape;
  for (mlir::Attribute axis : kernel.getShapeOf(i)) {
    if (auto literal = llvm::dyn_cast<mlir::IntegerAttr>(axis))
      shape.push_back(literal.getInt());
    else
      shape.push_back(
          dims[*kernel.lookupDim(llvm::cast<mlir::StringAttr>(axis))]);
  }
  return shape;
}
