//===- GpuPackage.cpp - A GPU kernel package from a spec -----------------===//

#include "attn/NVGPU/GpuPackage.h"

#include "DecodePolicy.h"
#include "SubscriptConstraints.h"
#include "attn/Driver/KernelSignature.h"
#include "attn/NVGPU/GpuKernel.h"
#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/SmallPtrSet.h"

#include <cmath>
#include <set>

using namespace mlir;
using namespace ::attn;
using mlir::attn::EinsumOp;
using mlir::attn::GpuCapture;
using mlir::attn::GpuKernelArtifact;
using mlir::attn::GpuKernelParam;
using mlir::attn::GpuKernelSignature;
using mlir::attn::GpuOptions;
using mlir::attn::KernelOp;

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// The value of `value` when it is computed only from constants and fixed
/// dims: the scale `rsqrt(D)` of a spec compiled with D fixed.
std::optional<double> evaluateScalar(Value value, KernelOp kernel) {
  if (auto arg = dyn_cast<BlockArgument>(value)) {
    if (arg.getOwner() != &kernel.getEntryBlock() ||
        arg.getArgNumber() >= kernel.getNumDims())
      return std::nullopt;
    int64_t size = kernel.getDimSizes()[arg.getArgNumber()];
    if (ShapedType::isDynamic(size))
      return std::nullopt;
    return static_cast<double>(size);
  }
  Operation *op = value.getDefiningOp();
  if (!op || op->getNumResults() != 1)
    return std::nullopt;
  if (auto constant = dyn_cast<arith::ConstantOp>(op)) {
    if (auto attr = dyn_cast<FloatAttr>(constant.getValue()))
      return attr.getValueAsDouble();
    if (auto attr = dyn_cast<IntegerAttr>(constant.getValue()))
      return static_cast<double>(attr.getInt());
    return std::nullopt;
  }
  llvm::SmallVector<double, 2> operands;
  for (Value operand : op->getOperands()) {
    std::optional<double> v = evaluateScalar(operand, kernel);
    if (!v)
      return std::nullopt;
    operands.push_back(*v);
  }
  if (isa<arith::IndexCastOp, arith::SIToFPOp, arith::UIToFPOp,
          arith::ExtFOp, arith::TruncFOp>(op))
    return operands[0];
  if (isa<math::RsqrtOp>(op))
    return 1.0 / std::sqrt(operands[0]);
  if (isa<math::SqrtOp>(op))
    return std::sqrt(operands[0]);
  if (isa<arith::MulFOp, arith::MulIOp>(op))
    return operands[0] * operands[1];
  if (isa<arith::DivFOp>(op))
    return operands[0] / operands[1];
  if (isa<arith::AddFOp, arith::AddIOp>(op))
    return operands[0] + operands[1];
  if (isa<arith::SubFOp, arith::SubIOp>(op))
    return operands[0] - operands[1];
  if (isa<arith::NegFOp>(op))
    return -operands[0];
  return std::nullopt;
}

/// The buffers of the prologue einsums (see GpuPrologue): workspace
/// `einsum<k>` holds the k-th einsum's f32 result, dense row-major; these
/// are its size and stride formulas.
struct PrologueBuffer {
  std::string workspace;
  std::vector<std::string> sizes, strides;
  std::string elements;

  static llvm::Expected<std::vector<PrologueBuffer>>
  describe(llvm::ArrayRef<EinsumOp> einsums, KernelOp kernel) {
    std::vector<PrologueBuffer> buffers;
    for (auto [k, constEinsum] : llvm::enumerate(einsums)) {
      EinsumOp einsum = constEinsum;
      PrologueBuffer buffer;
      buffer.workspace = "einsum" + std::to_string(k);
      for (Value extent : einsum.getOutputExtents()) {
        std::optional<std::string> size = getDimFormula(kernel, extent);
        if (!size)
          return makeError("kernel '" + kernel.getSymName() +
                           "': an extent of a tensor computed before the "
                           "attention is not a formula of the dims");
        buffer.sizes.push_back(*size);
      }
      // Row-major: the stride of an axis is the product of the later sizes.
      std::string product;
      buffer.strides.resize(buffer.sizes.size());
      for (size_t d = buffer.sizes.size(); d-- > 0;) {
        buffer.strides[d] = product.empty() ? "1" : product;
        std::string factor = "(" + buffer.sizes[d] + ")";
        product = product.empty() ? factor : factor + "*" + product;
      }
      buffer.elements = product.empty() ? "1" : product;
      buffers.push_back(std::move(buffer));
    }
    return buffers;
  }

  ParamSlot pointerSlot() const {
    ParamSlot slot;
    slot.kind = ParamSlot::Kind::Workspace;
    slot.arg = workspace;
    slot.type = SlotType::Ptr;
    return slot;
  }
  static ParamSlot exprSlot(const std::string &formula, SlotType type) {
    ParamSlot slot;
    slot.kind = ParamSlot::Kind::Expr;
    slot.arg = formula;
    slot.type = type;
    return slot;
  }
};

/// Where axis `axis` of a 4-D attention operand lives in a kernel tensor:
/// an axis of the input, or a unit axis that tensor.expand_shape inserted
/// (MQA's single key/value head).
struct OperandAxis {
  int input = -1; ///< kernel input index
  int64_t axis = -1; ///< -1: a unit axis (size 1, stride 0)
};

/// Maps the axes of `value` (Q, K, V or the sink) to a kernel input, or
/// fails with a message.
llvm::Expected<llvm::SmallVector<OperandAxis>>
mapOperandAxes(Value value, KernelOp kernel, llvm::StringRef what) {
  auto inputIndex = [&](Value v) -> int {
    auto arg = dyn_cast<BlockArgument>(v);
    if (!arg || arg.getOwner() != &kernel.getEntryBlock())
      return -1;
    int64_t i = static_cast<int64_t>(arg.getArgNumber()) - kernel.getNumDims();
    return i >= 0 && i < kernel.getNumInputs() ? static_cast<int>(i) : -1;
  };
  int64_t rank = cast<RankedTensorType>(value.getType()).getRank();
  llvm::SmallVector<OperandAxis> axes(rank);
  if (int input = inputIndex(value); input >= 0) {
    for (int64_t d = 0; d < rank; ++d)
      axes[d] = {input, d};
    return axes;
  }
  if (auto expand = value.getDefiningOp<tensor::ExpandShapeOp>()) {
    int input = inputIndex(expand.getSrc());
    if (input >= 0) {
      auto resultType = expand.getResultType();
      bool ok = true;
      for (auto [source, group] :
           llvm::enumerate(expand.getReassociationIndices())) {
        int nonUnit = 0;
        for (int64_t d : group) {
          if (group.size() > 1 && resultType.getDimSize(d) == 1) {
            axes[d] = {input, -1};
          } else {
            axes[d] = {input, static_cast<int64_t>(source)};
            ++nonUnit;
          }
        }
        ok &= nonUnit == 1;
      }
      if (ok)
        return axes;
    }
  }
  return llvm::createStringError(
      (what + " of the attention is computed in the kernel, not read from an "
              "input; the GPU backend needs it to be an input (or an input "
              "with unit axes inserted)")
          .str());
}

/// Whether `einsum` is the statistic attn-grad gives the backward of a
/// `none` attention (zeros of LSE's shape): that backward reads no
/// statistic, so nothing needs to compute it.
bool isUnreadStatistic(EinsumOp einsum) {
  return !einsum->use_empty() &&
         llvm::all_of(einsum->getUses(), [](OpOperand &use) {
           auto backward =
               dyn_cast<mlir::attn::AttentionBackwardOp>(use.getOwner());
           return backward &&
                  backward.getNormalizer() == mlir::attn::Normalizer::None &&
                  &use == &backward.getStatisticMutable();
         });
}

/// Whether `value` (an integer) reaches an index, through integer
/// arithmetic, anywhere in the kernel.
bool becomesIndex(Value value) {
  SmallVector<Value> work{value};
  llvm::SmallPtrSet<Operation *, 8> seen;
  while (!work.empty()) {
    Value next = work.pop_back_val();
    for (Operation *user : next.getUsers()) {
      if (!seen.insert(user).second)
        continue;
      if (isa<arith::IndexCastOp, arith::IndexCastUIOp>(user))
        return true;
      if (user->getNumResults() == 1 &&
          user->getResult(0).getType().isSignlessInteger() &&
          !isa<arith::CmpIOp>(user))
        work.push_back(user->getResult(0));
    }
  }
  return false;
}

SlotType toSlotType(GpuKernelParam::Kind kind) {
  switch (kind) {
  case GpuKernelParam::Kind::Pointer:
    return SlotType::Ptr;
  case GpuKernelParam::Kind::I32:
    return SlotType::I32;
  case GpuKernelParam::Kind::I64:
    return SlotType::I64;
  case GpuKernelParam::Kind::F32:
    return SlotType::F32;
  case GpuKernelParam::Kind::F64:
    return SlotType::F64;
  case GpuKernelParam::Kind::TensorMap:
    return SlotType::TensorMap;
  }
  return SlotType::I64;
}

} // namespace

namespace attn {

std::vector<std::string>
describeGpuPackageOptions(const GpuPackageOptions &options) {
  return {"target=" + options.target, "producer=" + options.producer,
          "decode=" + std::to_string(options.decode),
          "wgmma=" + std::to_string(options.wgmma),
          "deterministic=" + std::to_string(options.deterministic)};
}

llvm::Expected<PackageWriter>
buildGpuPackage(ModuleOp module, const GpuPackageOptions &options) {
  KernelOp kernel = *module.getOps<KernelOp>().begin();
  std::string kernelName = kernel.getSymName().str();
  auto unsupported = [&](const llvm::Twine &what) {
    return makeError("kernel '" + kernelName + "': " + what +
                     " is not supported by the GPU backend yet");
  };

  auto notRaised = [&] {
    return makeError("kernel '" + kernelName +
                     "': the cascade is not raised (see remark), so the GPU "
                     "backend cannot compile it");
  };
  // Masks that read tensors get a tile_class over per-tile summaries of
  // them, which prologue kernels compute before the attention.
  mlir::attn::AttnAnalyzeMaskOptions mask;
  mask.summaryLevels = mlir::attn::kGpuMaskSummaryLevels;
  PassManager pm(module.getContext());
  mlir::attn::buildAttentionRecognitionPipeline(pm, mask);
  if (failed(pm.run(module)))
    return makeError("kernel '" + kernelName +
                     "': recognising the attention failed");
  kernel = *module.getOps<KernelOp>().begin();

  // The kernel body must be scalars, expand_shapes, einsums whose results
  // the attention reads (its prologue) and one attention; an adjoint kernel
  // (attn-grad) adds the attention's backward, whose gradients of unit-axis
  // operands are collapsed back to the inputs' shapes, and einsums after it
  // that compute gradients from its sink gradient (its epilogue).
  mlir::attn::AttentionOp attention;
  mlir::attn::AttentionBackwardOp backward;
  for (Operation &op : kernel.getEntryBlock()) {
    if (auto found = dyn_cast<mlir::attn::AttentionOp>(op)) {
      if (attention)
        return unsupported("more than one attention in a kernel");
      attention = found;
      continue;
    }
    if (auto found = dyn_cast<mlir::attn::AttentionBackwardOp>(op)) {
      // A `none` backward reads no statistic (see isUnreadStatistic).
      bool readsStatistic =
          found.getNormalizer() != mlir::attn::Normalizer::None;
      if (backward || !attention ||
          found.getOutput() != attention.getOutput() ||
          (readsStatistic && found.getStatistic() != attention.getLse()) ||
          found.getScale() != attention.getScale() ||
          found.getSink() != attention.getSink() ||
          found.getNormalizer() != attention.getNormalizer() ||
          found.getMap() != attention.getMap())
        return unsupported("a backward that is not of the kernel's attention");
      backward = found;
      continue;
    }
    if (backward && isa<tensor::CollapseShapeOp>(op) &&
        op.getOperand(0).getDefiningOp() == backward)
      continue;
    if (isa<tensor::ExpandShapeOp>(op) || op.hasTrait<OpTrait::IsTerminator>())
      continue;
    if (auto einsum = dyn_cast<EinsumOp>(op);
        einsum && (!attention || backward || isUnreadStatistic(einsum)))
      continue;
    auto isTensor = [](Type t) { return isa<ShapedType>(t); };
    if (llvm::any_of(op.getOperandTypes(), isTensor) ||
        llvm::any_of(op.getResultTypes(), isTensor)) {
      if (!llvm::any_of(kernel.getEntryBlock(), [](Operation &o) {
            return isa<mlir::attn::AttentionOp>(o);
          }))
        return notRaised();
      return unsupported(llvm::Twine("a tensor computed outside the "
                                     "attention ('") +
                         op.getName().getStringRef() + "')");
    }
  }
  if (!attention)
    return notRaised();

  // Outputs: O (and LSE) of the attention, as the spec declares them; for
  // an adjoint kernel, dQ, dK and dV (the forward's O and LSE go to
  // workspaces) and the results of the epilogue einsums, which their
  // kernels write directly.
  auto returnOp = kernel.getEntryBlock().getTerminator();
  int oOutput = -1, lseOutput = -1;
  int gradOutputs[3] = {-1, -1, -1};
  std::vector<EinsumOp> epilogueEinsums;
  if (backward)
    epilogueEinsums = mlir::attn::getEpilogueEinsums(backward);
  std::vector<int> epilogueOutputs(epilogueEinsums.size(), -1);
  auto epiloguePosition = [&](Value value) -> int {
    auto einsum = value.getDefiningOp<EinsumOp>();
    auto found = llvm::find(epilogueEinsums, einsum);
    return einsum && found != epilogueEinsums.end()
               ? static_cast<int>(found - epilogueEinsums.begin())
               : -1;
  };
  auto gradientIndex = [&](Value value) -> int {
    if (auto collapse = value.getDefiningOp<tensor::CollapseShapeOp>())
      value = collapse.getSrc();
    for (int g = 0; g < 3; ++g)
      if (value == backward->getResult(g))
        return g;
    return -1;
  };
  for (auto [i, value] : llvm::enumerate(returnOp->getOperands())) {
    if (backward) {
      if (int g = gradientIndex(value); g >= 0) {
        gradOutputs[g] = i;
      } else if (int e = epiloguePosition(value); e >= 0) {
        epilogueOutputs[e] = i;
      } else {
        return unsupported("a gradient that is neither of Q, K, V nor "
                           "computed by an einsum after the backward (the "
                           "GPU backward computes those only)");
      }
    } else if (value == attention.getOutput()) {
      oOutput = i;
    } else if (attention.getLse() && value == attention.getLse()) {
      lseOutput = i;
    } else {
      return unsupported("an output that is not the attention's O or LSE");
    }
  }
  if (!backward && (oOutput < 0 || (attention.getLse() && lseOutput < 0)))
    return unsupported("an attention whose O is not an output");
  if (backward && llvm::is_contained(gradOutputs, -1))
    return unsupported("an adjoint kernel without all of dQ, dK and dV");
  // Each epilogue einsum writes one output, and nothing else reads it.
  for (auto [position, einsum] : llvm::enumerate(epilogueEinsums))
    if (epilogueOutputs[position] < 0 || !einsum->hasOneUse())
      return unsupported("an einsum after the backward whose result is not "
                         "just a gradient");
  GpuOptions gpuOptions;
  gpuOptions.chip = options.target;
  gpuOptions.wgmma = !backward && options.wgmma;
  gpuOptions.deterministic = options.deterministic;
  gpuOptions.timePasses = options.timePasses;
  gpuOptions.decode = !backward && options.decode &&
                      mlir::attn::supportsGpuDecode(attention);
  llvm::Expected<KernelSignature> declared = KernelSignature::read(kernel);
  if (!declared)
    return declared.takeError();
  if (!backward) {
    DType oType = declared->outputs[oOutput].dtype;
    if (oType != DType::F32 && oType != DType::BF16 && oType != DType::F16)
      return unsupported("an O of type " + std::string(dtypeName(oType)));
    gpuOptions.outputElementType = std::string(dtypeName(oType));
  }
  if (lseOutput >= 0 && declared->outputs[lseOutput].dtype != DType::F32)
    return unsupported("an LSE output that is not f32");

  unsigned numInputs = kernel.getNumInputs();
  auto q = mapOperandAxes(attention.getQuery(), kernel, "Q");
  if (!q)
    return q.takeError();
  auto k = mapOperandAxes(attention.getKey(), kernel, "K");
  if (!k)
    return k.takeError();
  auto v = mapOperandAxes(attention.getValue(), kernel, "V");
  if (!v)
    return v.takeError();
  // Whether an operand is a whole input, its axes in order (what a tensor
  // map of the input describes), but for unit axes inserted (K and V
  // without a head axis, which a map with those axes describes,
  // TmaTile::axes); isWholeInput: without them.
  auto isWholeInputWithUnitAxes =
      [&](const llvm::SmallVector<OperandAxis> &axes) {
        int64_t next = 0;
        for (const OperandAxis &a : axes) {
          if (a.input != axes[0].input || (a.axis != -1 && a.axis != next))
            return false;
          next += a.axis != -1;
        }
        return axes.back().axis != -1 &&
               static_cast<int64_t>(
                   declared->inputs[axes[0].input].axes.size()) == next;
      };
  auto isWholeInput = [&](const llvm::SmallVector<OperandAxis> &axes) {
    return isWholeInputWithUnitAxes(axes) &&
           llvm::none_of(axes, [](const OperandAxis &a) { return a.axis < 0; });
  };
  std::vector<EinsumOp> prologueEinsums =
      mlir::attn::getPrologueEinsums(attention);
  auto buffers = PrologueBuffer::describe(prologueEinsums, kernel);
  if (!buffers)
    return buffers.takeError();
  // The sink logits: an input, or the buffer of a prologue einsum.
  llvm::SmallVector<OperandAxis> sink;
  const PrologueBuffer *sinkBuffer = nullptr;
  if (Value sinkValue = attention.getSink()) {
    auto einsum = llvm::find(prologueEinsums, sinkValue.getDefiningOp());
    if (einsum != prologueEinsums.end()) {
      sinkBuffer = &(*buffers)[einsum - prologueEinsums.begin()];
      if (sinkBuffer->strides.size() != 3)
        return unsupported("sink logits computed with other than 3 axes");
    } else {
      auto s = mapOperandAxes(sinkValue, kernel, "the sink logits");
      if (!s)
        return unsupported("sink logits computed in the kernel other than "
                           "by an einsum");
      sink = std::move(*s);
    }
  }

  // The scale: a constant once the dims it reads are fixed, or a param.
  std::optional<double> scale = evaluateScalar(attention.getScale(), kernel);
  int scaleParam = -1;
  if (!scale) {
    auto arg = dyn_cast<BlockArgument>(attention.getScale());
    unsigned firstParam = kernel.getNumDims() + numInputs;
    if (!arg || arg.getOwner() != &kernel.getEntryBlock() ||
        arg.getArgNumber() < firstParam)
      return makeError("kernel '" + kernelName +
                       "': the scale is computed from symbolic dims; fix "
                       "them with " +
                       options.shapeOption + " (e.g. " + options.shapeExample +
                       ") so that it is a constant");
    scaleParam = arg.getArgNumber() - firstParam;
  }

  auto toAxes = [](const KernelTensor &tensor) {
    std::vector<AxisSpec> axes;
    for (const KernelAxis &axis : tensor.axes)
      axes.push_back(axis.isDim() ? AxisSpec::ofDim(axis.dim)
                                  : AxisSpec::ofSize(axis.size));
    return axes;
  };
  auto axesOf = [&](unsigned tensor) {
    return toAxes(tensor < numInputs ? declared->inputs[tensor]
                                     : declared->outputs[tensor - numInputs]);
  };
  auto axisFormula = [&](const OperandAxis &a) -> std::string {
    if (a.axis < 0)
      return "1";
    AxisSpec spec = axesOf(a.input)[a.axis];
    return spec.isDim() ? spec.dim : std::to_string(spec.size);
  };
  // The regions' reads inside their tensors, given the sizes of their
  // indices b, h, m, n: the manifest's constraints, and the reads they keep
  // in range marked (read without clamping) before the kernels are built.
  std::string heads = axisFormula((*q)[1]), groups = axisFormula((*k)[1]);
  std::vector<std::string> subscriptConstraints =
      constrainSubscripts(kernel, attention,
                          {axisFormula((*q)[0]), heads, axisFormula((*q)[2]),
                           axisFormula((*k)[2])});

  auto withShapeHint = [&](llvm::Error error) {
    std::string message = llvm::toString(std::move(error));
    if (message.find("must be static") != std::string::npos)
      message += " (fix them with " + options.shapeOption + ", e.g. " +
                 options.shapeExample + ")";
    return makeError(message);
  };
  llvm::SmallVector<OperandAxis> dO, dLse;
  std::optional<mlir::attn::GpuBackwardKernels> backwardKernels;
  std::optional<GpuKernelArtifact> artifact;
  if (backward) {
    auto axes = mapOperandAxes(backward.getOutputGrad(), kernel, "dO");
    if (!axes)
      return axes.takeError();
    dO = std::move(*axes);
    if (Value lseGrad = backward.getLseGrad()) {
      auto lseAxes = mapOperandAxes(lseGrad, kernel, "dLSE");
      if (!lseAxes)
        return lseAxes.takeError();
      dLse = std::move(*lseAxes);
    }
    // The backward's own kernels take wgmma on sm_90a; the forward it
    // recomputes from stays the mma.sync kernel (gpuOptions.wgmma).
    GpuOptions backwardOptions = gpuOptions;
    backwardOptions.wgmma = options.wgmma;
    // dQ as the output it is, [B, H, M, D]: a tensor map describes it.
    backwardOptions.queryGradTensorMap =
        isWholeInput(*q) &&
        declared->outputs[gradOutputs[0]].axes.size() == q->size();
    // Q as the input it is, [B, H, M, D]: a tensor map describes it (and
    // dO's 16-bit copy, a workspace laid out alike).
    backwardOptions.streamTensorMaps = q->size() == 4 && isWholeInput(*q);
    // Compiled together, so that the backward's modules and the forward's
    // are lowered to PTX side by side.
    llvm::Expected<mlir::attn::GpuAttentionWithBackward> kernels =
        mlir::attn::compileAttentionWithBackwardForGpu(
            attention, gpuOptions, backward, backwardOptions);
    if (!kernels)
      return withShapeHint(kernels.takeError());
    artifact = std::move(kernels->forward);
    backwardKernels = std::move(kernels->backward);
  } else {
    llvm::Expected<GpuKernelArtifact> kernels =
        compileAttentionForGpu(attention, gpuOptions);
    if (!kernels)
      return withShapeHint(kernels.takeError());
    artifact = std::move(*kernels);
  }

  // The manifest: the kernel's signature as the spec declares it.
  PackageManifest manifest;
  manifest.name = kernelName;
  manifest.target = options.target;
  manifest.producer = options.producer;
  for (const KernelDim &dim : declared->dims)
    manifest.dims.push_back({dim.name, dim.size});
  auto inputName = [&](int i) { return declared->inputs[i].name; };
  auto outputName = [&](int i) { return declared->outputs[i].name; };
  for (auto [i, input] : llvm::enumerate(declared->inputs)) {
    ArgSpec arg;
    arg.name = input.name;
    arg.kind = ArgKind::Input;
    arg.dtype = input.dtype;
    arg.axes = toAxes(input);
    // Q, K, V: rows read with 16-byte vector loads; other tensors (sinks,
    // mask inputs) are read through their strides.
    bool isQkv = (*q)[0].input == static_cast<int>(i) ||
                 (*k)[0].input == static_cast<int>(i) ||
                 (*v)[0].input == static_cast<int>(i);
    // dO: rows read element by element.
    bool isOutputGrad = !dO.empty() && dO[0].input == static_cast<int>(i);
    arg.layout = isQkv || isOutputGrad ? Layout::InnerContiguous
                                       : Layout::Strided;
    arg.alignment = isQkv ? 16 : 0;
    manifest.args.push_back(arg);
  }
  for (auto [p, param] : llvm::enumerate(declared->params)) {
    ArgSpec arg;
    arg.name = param.name;
    arg.kind = ArgKind::Param;
    arg.dtype = param.dtype;
    arg.defaultValue = param.defaultValue;
    // The kernels compute indices in 32 bits: a wider param that becomes an
    // index is declared i32, so that the runtime refuses values it would
    // truncate instead of computing with them.
    if (param.dtype == DType::I64 &&
        becomesIndex(kernel.getParamArg(static_cast<unsigned>(p)))) {
      if (param.defaultValue &&
          !fitsIntegerDType(*param.defaultValue, DType::I32))
        return makeError("param '" + param.name +
                         "': the GPU kernels compute indices in 32 bits, and "
                         "its default does not fit them");
      arg.dtype = DType::I32;
    }
    manifest.args.push_back(arg);
  }
  for (auto [o, output] : llvm::enumerate(declared->outputs)) {
    ArgSpec arg;
    arg.name = output.name;
    arg.kind = ArgKind::Output;
    arg.dtype = output.dtype;
    arg.axes = toAxes(output);
    // The epilogue kernels write their results dense row-major.
    arg.layout = llvm::is_contained(epilogueOutputs, static_cast<int>(o))
                     ? Layout::Contiguous
                     : Layout::InnerContiguous;
    manifest.args.push_back(arg);
  }

  // Launch geometry: grid [ceil(M/BM), H, B] over Q's axes.
  EntrySpec entry;
  entry.name = "attn_fwd";
  entry.function = artifact->kernelName;
  entry.module = "attn";
  entry.grid = {"ceil(" + axisFormula((*q)[2]) + "/" +
                    std::to_string(artifact->blockM) + ")",
                axisFormula((*q)[1]), axisFormula((*q)[0])};
  for (int d = 0; d < 3; ++d)
    entry.block[d] = artifact->blockDim[d];
  entry.sharedBytes = artifact->dynamicSharedMemoryBytes;
  // Query heads share key/value heads in groups of H / G.
  if (heads != groups)
    manifest.constraints.push_back(heads + " % " + groups + " == 0");
  // Element reads of the mask and score_mod inside their tensors.
  for (std::string &constraint : subscriptConstraints)
    manifest.constraints.push_back(std::move(constraint));

  auto tensorSlot = [](ParamSlot::Kind kind, const std::string &arg,
                       int64_t axis, SlotType type) {
    ParamSlot slot;
    slot.kind = kind;
    slot.arg = arg;
    slot.axis = axis;
    slot.type = type;
    return slot;
  };
  auto constSlot = [](double value, SlotType type) {
    ParamSlot slot;
    slot.kind = ParamSlot::Kind::Const;
    slot.value = value;
    slot.type = type;
    return slot;
  };
  /// Size or stride of axis `a` of an operand: a unit axis inserted by
  /// expand_shape has size 1 and stride 0.
  auto axisSlot = [&](const OperandAxis &a, bool stride, SlotType type) {
    if (a.axis < 0)
      return constSlot(stride ? 0 : 1, type);
    return tensorSlot(stride ? ParamSlot::Kind::Stride : ParamSlot::Kind::Size,
                      inputName(a.input), a.axis, type);
  };
  auto outputStride = [&](int output, int64_t axis) {
    return tensorSlot(ParamSlot::Kind::Stride, outputName(output), axis,
                      SlotType::I64);
  };
  const GpuKernelSignature &signature = artifact->signature;
  // An absent tensor is a null pointer (eight zero bytes) with zero strides.
  auto absent = [&] { return constSlot(0, SlotType::I64); };
  auto pointerOf = [&](const llvm::SmallVector<OperandAxis> &axes) {
    return tensorSlot(ParamSlot::Kind::Ptr, inputName(axes[0].input), 0,
                      SlotType::Ptr);
  };
  auto sinkStride = [&](int axis) {
    return sinkBuffer ? PrologueBuffer::exprSlot(sinkBuffer->strides[axis],
                                                 SlotType::I64)
           : !sink.empty() ? axisSlot(sink[axis], true, SlotType::I64)
                           : absent();
  };
  // An adjoint kernel's forward writes O (f32) and LSE into workspaces,
  // dense over [B, H, M, E] and [B, H, M], which the backward reads.
  std::string bDim = axisFormula((*q)[0]), hDim = axisFormula((*q)[1]),
              mDim = axisFormula((*q)[2]), eDim = axisFormula((*v)[3]);
  auto product = [](std::initializer_list<std::string> factors) {
    std::string result;
    for (const std::string &factor : factors)
      result += (result.empty() ? "(" : "*(") + factor + ")";
    return result;
  };
  auto workspaceSlot = [](const std::string &name) {
    ParamSlot slot;
    slot.kind = ParamSlot::Kind::Workspace;
    slot.arg = name;
    slot.type = SlotType::Ptr;
    return slot;
  };
  auto exprSlot = [](const std::string &formula) {
    return PrologueBuffer::exprSlot(formula, SlotType::I64);
  };
  // The rows' sink gradients (see GpuBackwardKernels) where an epilogue
  // einsum reads them: dense [B, H, M] as LSE.
  bool hasSinkGrad =
      backward && backward.getSinkGrad() && !backward.getSinkGrad().use_empty();
  // The rows' sums of the one grad_reads read's adjoint, dense [B, H, M].
  bool hasReadGrad = backward && !backward.getReadGrads().empty();
  if (backward) {
    manifest.workspaces.push_back(
        {"o", "4*" + product({bDim, hDim, mDim, eDim})});
    manifest.workspaces.push_back({"lse", "4*" + product({bDim, hDim, mDim})});
    // A split dO (backwardSplitsOutputGrad) doubles dO's 16-bit copy and
    // the rows' Deltas.
    std::string parts =
        mlir::attn::backwardSplitsOutputGrad(backward) ? "2*" : "";
    manifest.workspaces.push_back(
        {"delta", parts + "4*" + product({bDim, hDim, mDim})});
    WorkspaceSpec outputGrad16{
        "do16", parts + "2*" + product({bDim, hDim, mDim, eDim}), {}};
    // Where the kernels load it through a tensor map: its first part is dO
    // rounded to Q's type, dense [B, H, M, E].
    if (llvm::any_of(backwardKernels->tensorMaps, [](const auto &map) {
          return map.of ==
                 mlir::attn::GpuBackwardKernels::TensorMap::Of::OutputGrad16;
        }))
      outputGrad16.tensor = WorkspaceSpec::Tensor{
          declared->inputs[(*q)[0].input].dtype, {bDim, hDim, mDim, eDim}};
    manifest.workspaces.push_back(std::move(outputGrad16));
    if (hasSinkGrad)
      manifest.workspaces.push_back(
          {"dsink", "4*" + product({bDim, hDim, mDim})});
    if (hasReadGrad)
      manifest.workspaces.push_back(
          {"readgrad", "4*" + product({bDim, hDim, mDim})});
  }
  auto oStride = [&](int axis) {
    if (!backward)
      return outputStride(oOutput, axis);
    return exprSlot(axis == 0   ? product({hDim, mDim, eDim})
                    : axis == 1 ? product({mDim, eDim})
                                : product({eDim}));
  };
  auto lseStride = [&](int axis) {
    if (backward)
      return exprSlot(axis == 0 ? product({hDim, mDim}) : product({mDim}));
    return lseOutput >= 0 ? outputStride(lseOutput, axis) : absent();
  };
  /// The pointer and strides of gradient `g` (0 dQ, 1 dK, 2 dV), laid out
  /// as the operand whose axes are `axes`: unit axes get stride 0.
  auto gradientPointer = [&](int g) {
    return backward ? tensorSlot(ParamSlot::Kind::Ptr,
                                 outputName(gradOutputs[g]), 0, SlotType::Ptr)
                    : absent();
  };
  auto gradientStride = [&](int g, const llvm::SmallVector<OperandAxis> &axes,
                            int axis) {
    if (!backward)
      return absent();
    if (axes[axis].axis < 0)
      return constSlot(0, SlotType::I64);
    return outputStride(gradOutputs[g], axes[axis].axis);
  };
  using mlir::attn::FixedParam;
  for (unsigned p = 0; p < mlir::attn::kNumFixedParams; ++p) {
    ParamSlot slot;
    switch (static_cast<FixedParam>(p)) {
    case FixedParam::Q:
      slot = pointerOf(*q);
      break;
    case FixedParam::K:
      slot = pointerOf(*k);
      break;
    case FixedParam::V:
      slot = pointerOf(*v);
      break;
    case FixedParam::O:
      slot = backward ? workspaceSlot("o")
                      : tensorSlot(ParamSlot::Kind::Ptr, outputName(oOutput),
                                   0, SlotType::Ptr);
      break;
    case FixedParam::Lse:
      slot = backward         ? workspaceSlot("lse")
             : lseOutput >= 0 ? tensorSlot(ParamSlot::Kind::Ptr,
                                           outputName(lseOutput), 0,
                                           SlotType::Ptr)
                              : absent();
      break;
    case FixedParam::Sink:
      slot = sinkBuffer      ? sinkBuffer->pointerSlot()
             : !sink.empty() ? tensorSlot(ParamSlot::Kind::Ptr,
                                          inputName(sink[0].input), 0,
                                          SlotType::Ptr)
                             : absent();
      break;
    case FixedParam::B:
      slot = axisSlot((*q)[0], /*stride=*/false, SlotType::I32);
      break;
    case FixedParam::H:
      slot = axisSlot((*q)[1], /*stride=*/false, SlotType::I32);
      break;
    case FixedParam::M:
      slot = axisSlot((*q)[2], /*stride=*/false, SlotType::I32);
      break;
    case FixedParam::G:
      slot = axisSlot((*k)[1], /*stride=*/false, SlotType::I32);
      break;
    case FixedParam::N:
      slot = axisSlot((*k)[2], /*stride=*/false, SlotType::I32);
      break;
    case FixedParam::QStrideB:
    case FixedParam::QStrideH:
    case FixedParam::QStrideM:
      slot = axisSlot((*q)[p - unsigned(FixedParam::QStrideB)], true,
                      SlotType::I64);
      break;
    case FixedParam::KStrideB:
    case FixedParam::KStrideG:
    case FixedParam::KStrideN:
      slot = axisSlot((*k)[p - unsigned(FixedParam::KStrideB)], true,
                      SlotType::I64);
      break;
    case FixedParam::VStrideB:
    case FixedParam::VStrideG:
    case FixedParam::VStrideN:
      slot = axisSlot((*v)[p - unsigned(FixedParam::VStrideB)], true,
                      SlotType::I64);
      break;
    case FixedParam::OStrideB:
    case FixedParam::OStrideH:
    case FixedParam::OStrideM:
      slot = oStride(p - unsigned(FixedParam::OStrideB));
      break;
    case FixedParam::LseStrideB:
    case FixedParam::LseStrideH:
      slot = lseStride(p - unsigned(FixedParam::LseStrideB));
      break;
    case FixedParam::SinkStrideB:
    case FixedParam::SinkStrideH:
    case FixedParam::SinkStrideM:
      slot = sinkStride(p - unsigned(FixedParam::SinkStrideB));
      break;
    case FixedParam::Scale:
      if (scale) {
        slot = constSlot(*scale, SlotType::F32);
      } else {
        slot.kind = ParamSlot::Kind::Param;
        slot.arg = cast<StringAttr>(kernel.getParamNames()[scaleParam])
                       .getValue()
                       .str();
        slot.type = SlotType::F32;
      }
      break;
    case FixedParam::Partials:
      // The decode entries pass the workspace (addDecodeEntries).
      slot = absent();
      break;
    case FixedParam::Splits:
      slot = constSlot(0, SlotType::I32);
      break;
    case FixedParam::Tiles:
      if (artifact->tileList) {
        slot.kind = ParamSlot::Kind::Workspace;
        slot.arg = "tiles";
        slot.type = SlotType::Ptr;
      } else {
        slot = absent();
      }
      break;
    case FixedParam::DO:
      slot = backward ? pointerOf(dO) : absent();
      break;
    case FixedParam::DOStrideB:
    case FixedParam::DOStrideH:
    case FixedParam::DOStrideM:
      slot = backward ? axisSlot(dO[p - unsigned(FixedParam::DOStrideB)], true,
                                 SlotType::I64)
                      : absent();
      break;
    case FixedParam::DLse:
      slot = !dLse.empty() ? pointerOf(dLse) : absent();
      break;
    case FixedParam::DLseStrideB:
    case FixedParam::DLseStrideH:
    case FixedParam::DLseStrideM:
      slot = !dLse.empty()
                 ? axisSlot(dLse[p - unsigned(FixedParam::DLseStrideB)], true,
                            SlotType::I64)
                 : absent();
      break;
    case FixedParam::DO16:
      slot = backward ? workspaceSlot("do16") : absent();
      break;
    case FixedParam::Delta:
      slot = backward ? workspaceSlot("delta") : absent();
      break;
    case FixedParam::DSink:
      slot = hasSinkGrad ? workspaceSlot("dsink") : absent();
      break;
    case FixedParam::ReadGrad:
      slot = hasReadGrad ? workspaceSlot("readgrad") : absent();
      break;
    case FixedParam::DQ:
      slot = gradientPointer(0);
      break;
    case FixedParam::DQStrideB:
    case FixedParam::DQStrideH:
    case FixedParam::DQStrideM:
      slot = gradientStride(0, *q, p - unsigned(FixedParam::DQStrideB));
      break;
    case FixedParam::DK:
      slot = gradientPointer(1);
      break;
    case FixedParam::DKStrideB:
    case FixedParam::DKStrideG:
    case FixedParam::DKStrideN:
      slot = gradientStride(1, *k, p - unsigned(FixedParam::DKStrideB));
      break;
    case FixedParam::DV:
      slot = gradientPointer(2);
      break;
    case FixedParam::DVStrideB:
    case FixedParam::DVStrideG:
    case FixedParam::DVStrideN:
      slot = gradientStride(2, *v, p - unsigned(FixedParam::DVStrideB));
      break;
    }
    entry.params.push_back(slot);
  }
  /// The slots of the values a kernel's code reads from above.
  auto appendCaptureSlots = [&](const GpuKernelSignature &kernelSignature,
                                std::vector<ParamSlot> &params) -> llvm::Error {
    for (const GpuCapture &capture : kernelSignature.captures) {
      llvm::StringRef source = capture.source;
      SlotType type =
          toSlotType(kernelSignature.params[capture.firstParam].kind);
      bool isDim = source.consume_front("dim:");
      if (isDim || source.consume_front("param:")) {
        ParamSlot slot;
        slot.kind = isDim ? ParamSlot::Kind::Dim : ParamSlot::Kind::Param;
        slot.arg = source.str();
        slot.type = type;
        params.push_back(slot);
      } else if (source.consume_front("input:")) {
        params.push_back(
            tensorSlot(ParamSlot::Kind::Ptr, source.str(), 0, SlotType::Ptr));
        for (int64_t d = 0; d < capture.rank; ++d)
          params.push_back(tensorSlot(ParamSlot::Kind::Size, source.str(), d,
                                      SlotType::I64));
        for (int64_t d = 0; d < capture.rank; ++d)
          params.push_back(tensorSlot(ParamSlot::Kind::Stride, source.str(), d,
                                      SlotType::I64));
      } else if (unsigned k; source.consume_front("einsum:") &&
                             !source.getAsInteger(10, k) &&
                             k < buffers->size()) {
        params.push_back((*buffers)[k].pointerSlot());
      } else if (((source == "sink_grad" && hasSinkGrad) ||
                  (source == "read_grad" && hasReadGrad)) &&
                 capture.rank == 3) {
        params.push_back(
            workspaceSlot(source == "sink_grad" ? "dsink" : "readgrad"));
        for (const std::string &size : {bDim, hDim, mDim})
          params.push_back(exprSlot(size));
        for (const std::string &stride :
             {product({hDim, mDim}), product({mDim}), std::string("1")})
          params.push_back(exprSlot(stride));
      } else {
        return unsupported("a mask, score_mod or einsum that reads a value "
                           "computed in the kernel ('" +
                           source + "')");
      }
    }
    return llvm::Error::success();
  };
  std::vector<ParamSlot> fixedSlots(entry.params);
  if (llvm::Error error = appendCaptureSlots(signature, entry.params))
    return std::move(error);

  /// The entries of the kernels of `einsums` (a GpuPrologue of module
  /// `module`), whose k-th einsum, with `described[k]`'s element count,
  /// writes to `outputSlot(k)`.
  auto addEinsumEntries =
      [&](const mlir::attn::GpuPrologue &kernels,
          llvm::ArrayRef<EinsumOp> einsums,
          llvm::ArrayRef<PrologueBuffer> described, const std::string &module,
          llvm::function_ref<ParamSlot(unsigned)> outputSlot) -> llvm::Error {
    for (const auto &kernelInfo : kernels.kernels) {
      EntrySpec einsumEntry;
      einsumEntry.name = kernelInfo.name;
      einsumEntry.function = kernelInfo.name;
      einsumEntry.module = module;
      std::string blocks;
      std::set<std::string> counts;
      for (unsigned k : kernelInfo.einsums) {
        int64_t perBlock = mlir::attn::getPrologueElementsPerBlock(einsums[k]);
        std::string count = perBlock == 1
                                ? described[k].elements
                                : "cdiv(" + described[k].elements + ", " +
                                      std::to_string(perBlock) + ")";
        if (counts.insert(count).second)
          blocks =
              blocks.empty() ? count : "max(" + blocks + ", " + count + ")";
        einsumEntry.params.push_back(outputSlot(k));
      }
      einsumEntry.grid = {blocks, "1", "1"};
      einsumEntry.block[0] = mlir::attn::kPrologueThreads;
      if (llvm::Error error =
              appendCaptureSlots(kernelInfo.signature, einsumEntry.params))
        return error;
      manifest.entries.push_back(std::move(einsumEntry));
    }
    return llvm::Error::success();
  };

  // The prologue: one entry per kernel, before the attention's, and one
  // workspace per einsum.
  if (artifact->prologue) {
    for (const PrologueBuffer &buffer : *buffers)
      manifest.workspaces.push_back({buffer.workspace, "4*" + buffer.elements});
    if (llvm::Error error = addEinsumEntries(
            *artifact->prologue, prologueEinsums, *buffers, "attn_prologue",
            [&](unsigned k) { return (*buffers)[k].pointerSlot(); }))
      return std::move(error);
  }
  EntrySpec tiles = entry;
  if (artifact->decode)
    addDecodeEntries(manifest, entry, *artifact, axisFormula((*q)[0]), heads,
                     groups, axisFormula((*q)[2]), axisFormula((*k)[2]));
  else
    manifest.entries.push_back(std::move(entry));

  // The lists of live key blocks, written just before the attention kernel
  // reads them and under the same condition.
  /// Makes `list` an entry writing the tile list `tileList` into workspace
  /// `workspace` (added here): one warp per query tile (and head).
  auto listEntry = [&](EntrySpec &list,
                       const mlir::attn::GpuTileList &tileList,
                       const std::string &workspace) {
    std::string b = axisFormula((*q)[0]), m = axisFormula((*q)[2]),
                n = axisFormula((*k)[2]);
    std::string listHeads = tileList.perHead ? "(" + heads + ")" : "1";
    std::string headFactor = tileList.perHead ? listHeads + "*" : "";
    std::string mTiles =
        "cdiv(" + m + ", " + std::to_string(tileList.blockM) + ")";
    manifest.workspaces.push_back(
        {workspace, "4*(" + b + ")*" + headFactor + mTiles + "*(cdiv(" + n +
                        ", " + std::to_string(tileList.blockN) + ") + 1)"});
    list.function = tileList.kernelName;
    list.grid = {mTiles, listHeads, b};
    list.block[0] = 32;
    list.sharedBytes = 0;
  };
  if (const auto &tileList = artifact->tileList) {
    tiles.name = "attn_tiles";
    listEntry(tiles, *tileList, "tiles");
    auto attention = llvm::find_if(manifest.entries, [&](const EntrySpec &e) {
      return e.function == artifact->kernelName;
    });
    tiles.when = attention->when;
    manifest.entries.insert(attention, std::move(tiles));
  }

  // The Hopper kernel, where Q, K and V are the inputs as they are, unit
  // axes aside (a tensor map describes a whole input): it runs in the mma.sync
  // kernel's place, under its condition, and that kernel (after its tile
  // list, if any) in its own place for tensors TMA cannot load.
  bool addsWgmma = false;
  if (const auto &wgmma = artifact->wgmma;
      wgmma && isWholeInputWithUnitAxes(*q) && isWholeInputWithUnitAxes(*k) &&
      isWholeInputWithUnitAxes(*v)) {
    addsWgmma = true;
    auto mmaEntry = llvm::find_if(manifest.entries, [&](const EntrySpec &e) {
      return e.function == artifact->kernelName;
    });
    // With a tile list: its own, for its tiles, listed just before it under
    // the same condition by a kernel of the mma.sync module (that module's
    // parameters, but the list's workspace).
    auto tilesSlot = static_cast<unsigned>(FixedParam::Tiles);
    std::optional<EntrySpec> hopperTiles;
    if (const auto &tileList = wgmma->tileList) {
      hopperTiles = *mmaEntry;
      hopperTiles->name = "attn_tiles_wgmma";
      hopperTiles->params[tilesSlot] = workspaceSlot("tiles_wgmma");
      listEntry(*hopperTiles, *tileList, "tiles_wgmma");
    }
    EntrySpec hopper = *mmaEntry;
    hopper.name = "attn_fwd_wgmma";
    hopper.function = wgmma->kernelName;
    hopper.module = "attn_wgmma";
    hopper.grid[0] = "ceil(" + axisFormula((*q)[2]) + "/" +
                     std::to_string(wgmma->blockM) + ")";
    hopper.block[0] = wgmma->threads;
    hopper.sharedBytes = wgmma->sharedMemoryBytes;
    // One CTA fills an SM (its shared memory and registers).
    hopper.persistentCtasPerSm = 1;
    hopper.fallback = {mmaEntry->name};
    mmaEntry->when.clear();
    // The mma.sync kernel's tile list stands in with it: built only for a
    // launch that runs that kernel.
    if (artifact->tileList) {
      auto mmaTiles = llvm::find_if(manifest.entries, [](const EntrySpec &e) {
        return e.name == "attn_tiles";
      });
      mmaTiles->when.clear();
      hopper.fallback.insert(hopper.fallback.begin(), mmaTiles->name);
    }
    hopper.params = fixedSlots;
    if (hopperTiles)
      hopper.params[tilesSlot] = workspaceSlot("tiles_wgmma");
    auto mapSlot = [&](const llvm::SmallVector<OperandAxis> &axes,
                       int64_t rows) {
      ParamSlot slot;
      slot.kind = ParamSlot::Kind::Tma;
      slot.arg = inputName(axes[0].input);
      slot.type = SlotType::TensorMap;
      slot.tile.box = {1, 1, rows, 64};
      slot.tile.swizzle = TmaSwizzle::B128;
      // The kernel's coordinates are (batch, head, row, column): an input
      // without a head axis (MQA's K and V) gets one of extent 1.
      if (llvm::any_of(axes, [](const OperandAxis &a) { return a.axis < 0; }))
        for (const OperandAxis &a : axes)
          slot.tile.axes.push_back(a.axis);
      return slot;
    };
    hopper.params.push_back(mapSlot(*q, wgmma->blockM));
    hopper.params.push_back(mapSlot(*k, wgmma->blockN));
    hopper.params.push_back(mapSlot(*v, wgmma->blockN));
    // The tiles' counter: zeroed where it is allocated (or at every launch,
    // in a caller's workspace) and left at 0 by each launch.
    WorkspaceSpec counter{"tile_counter", "4"};
    counter.zeroed = true;
    manifest.workspaces.push_back(std::move(counter));
    hopper.params.push_back(workspaceSlot("tile_counter"));
    if (llvm::Error error = appendCaptureSlots(wgmma->signature, hopper.params))
      return std::move(error);
    if (hopperTiles)
      mmaEntry = manifest.entries.insert(mmaEntry, std::move(*hopperTiles)) + 1;
    manifest.entries.insert(mmaEntry, std::move(hopper));
  }

  // The backward, after the forward: preprocessing, dK/dV, dQ.
  if (backwardKernels) {
    std::string g = groups, n = axisFormula((*k)[2]);
    auto addBackwardEntry = [&](const std::string &name,
                                const std::string &function,
                                std::vector<std::string> grid, int64_t threads,
                                int64_t sharedBytes) -> llvm::Error {
      EntrySpec backwardEntry;
      backwardEntry.name = name;
      backwardEntry.function = function;
      backwardEntry.module = "attn_bwd";
      backwardEntry.grid = std::move(grid);
      backwardEntry.block[0] = threads;
      backwardEntry.sharedBytes = sharedBytes;
      backwardEntry.params = fixedSlots;
      // The kernels' tensor maps of dQ (GpuOptions::queryGradTensorMap), Q
      // and dO (GpuOptions::streamTensorMaps): all zeros where TMA cannot
      // describe the tensor, and the kernel adds dQ's shares with atomics,
      // or copies Q and dO with cp.async, instead.
      using TensorMap = mlir::attn::GpuBackwardKernels::TensorMap;
      for (const TensorMap &map : backwardKernels->tensorMaps) {
        ParamSlot slot;
        slot.kind = ParamSlot::Kind::Tma;
        switch (map.of) {
        case TensorMap::Of::QueryGrad:
          slot.arg = outputName(gradOutputs[0]);
          break;
        case TensorMap::Of::Query:
          slot.arg = inputName((*q)[0].input);
          break;
        case TensorMap::Of::OutputGrad16:
          slot.arg = "do16";
          break;
        }
        slot.type = SlotType::TensorMap;
        slot.tile.box = {1, 1, map.boxRows, map.boxColumns};
        slot.tile.swizzle = TmaSwizzle::B128;
        slot.tile.optional = true;
        backwardEntry.params.push_back(slot);
      }
      if (llvm::Error error = appendCaptureSlots(backwardKernels->signature,
                                                 backwardEntry.params))
        return error;
      manifest.entries.push_back(std::move(backwardEntry));
      return llvm::Error::success();
    };
    auto cdiv = [](const std::string &x, int64_t y) {
      return "cdiv(" + x + ", " + std::to_string(y) + ")";
    };
    const mlir::attn::GpuBackwardKernels &kernels = *backwardKernels;
    if (llvm::Error error = addBackwardEntry(
            "attn_bwd_pre", kernels.preprocessName,
            {cdiv(mDim, mlir::attn::kBackwardPreprocessRows), hDim, bDim},
            kernels.preprocessThreads, 0))
      return std::move(error);
    if (llvm::Error error = addBackwardEntry(
            "attn_bwd_dkdv", kernels.keyValueName,
            {cdiv(n, kernels.keyBlock), g, bDim}, kernels.keyValueThreads,
            kernels.keyValueSharedBytes))
      return std::move(error);
    if (!kernels.queryName.empty())
      if (llvm::Error error =
              addBackwardEntry("attn_bwd_dq", kernels.queryName,
                               {cdiv(mDim, kernels.queryBlock), hDim, bDim},
                               kernels.queryThreads, kernels.querySharedBytes))
        return std::move(error);
    // The epilogue, last: its einsums write their outputs.
    if (kernels.epilogue) {
      auto described = PrologueBuffer::describe(epilogueEinsums, kernel);
      if (!described)
        return described.takeError();
      if (llvm::Error error = addEinsumEntries(
              *kernels.epilogue, epilogueEinsums, *described,
              "attn_bwd_epilogue", [&](unsigned k) {
                return tensorSlot(ParamSlot::Kind::Ptr,
                                  outputName(epilogueOutputs[k]), 0,
                                  SlotType::Ptr);
              }))
        return std::move(error);
    }
  }

  PackageWriter writer(std::move(manifest));
  if (backwardKernels)
    writer.addModule("attn_bwd", ModuleFormat::Ptx, backwardKernels->ptx);
  if (backwardKernels && backwardKernels->epilogue)
    writer.addModule("attn_bwd_epilogue", ModuleFormat::Ptx,
                     backwardKernels->epilogue->ptx);
  writer.addModule("attn", ModuleFormat::Ptx, artifact->ptx);
  if (artifact->decode)
    writer.addModule("attn_decode", ModuleFormat::Ptx, artifact->decode->ptx);
  if (addsWgmma)
    writer.addModule("attn_wgmma", ModuleFormat::Ptx, artifact->wgmma->ptx);
  if (artifact->prologue)
    writer.addModule("attn_prologue", ModuleFormat::Ptx,
                     artifact->prologue->ptx);
  return writer;
}

} // namespace attn
