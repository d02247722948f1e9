//===- GpuKernel.h - attn.attention as a tensor-core GPU kernel -*- C++ -*-===//
//
// The GPU backend's entry points: build device-only `gpu.module`s for one
// attn.attention (a FlashAttention-2 style mma.sync skeleton, and on sm_90a
// FlashAttention-3's TMA + wgmma one, with the op's score_mod, mask and
// tile_class regions inlined), lower them to PTX, and
// describe the kernel's parameters so that a runtime with no MLIR can launch
// it.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NVGPU_GPUKERNEL_H
#define ATTN_NVGPU_GPUKERNEL_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LLVM.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace mlir {
class DialectRegistry;
class OpBuilder;
namespace gpu {
class GPUModuleOp;
} // namespace gpu
namespace attn {
class AttentionOp;
class AttentionBackwardOp;
class EinsumOp;

/// What to build. The same mma.sync code serves sm_80 and sm_90a; only the
/// `.target` line of the PTX differs.
struct GpuOptions {
  /// "sm_80" or "sm_90a" (any sm_8x/sm_9x chip NVPTX knows works).
  std::string chip = "sm_90a";
  /// PTX ISA version, as an LLVM feature. 8.0 is accepted by CUDA 12+ ptxas
  /// for both chips and is the lowest that knows sm_90a.
  std::string features = "+ptx80";
  /// Query rows per CTA: 64 or 128.
  int64_t blockM = 128;
  /// Query rows per warp: 16 keeps Q in registers; 32 re-reads Q from shared
  /// memory but feeds each K and V fragment to two row tiles, halving the
  /// shared-memory reads per tensor-core instruction.
  int64_t warpRows = 32;
  /// Keys per iteration of the main loop: 32 or 64; 0 chooses per variant
  /// (64 unless the variant's per-score code would make the kernel spill).
  int64_t blockN = 0;
  /// NVPTX optimisation level.
  int optLevel = 3;
  /// Element type O is stored with: "f32" (the accumulators as they are),
  /// "bf16" or "f16" (rounded to nearest even in registers, so that a spec
  /// whose output is bf16 gets it from the kernel itself).
  std::string outputElementType = "f32";
  /// Also build the split-key decode kernel and the kernel that merges its
  /// partial results (flash-decoding), in a second module compiled beside
  /// the first, for ops that `supportsGpuDecode`.
  bool decode = false;
  /// Also build the Hopper forward kernel (GpuWgmmaKernel) for ops that
  /// `supportsWgmmaAttention`, and multiply on wgmma in the backward
  /// kernels, on an sm_90a chip.
  bool wgmma = false;
  /// Backward kernels that give the same bits on every run: no atomics
  /// (on sm_90a, dQ from a kernel of its own).
  bool deterministic = false;
  /// dQ is a whole output of the package, [B, H, M, D] in that order: the
  /// sm_90a dK/dV kernel that computes dQ adds its shares through a tensor
  /// map of it (the kernel's one TensorMap parameter), all zeros where TMA
  /// cannot describe the launch's dQ (atomics then).
  bool queryGradTensorMap = false;
  /// Q is a whole input, [B, H, M, D]: that kernel loads the blocks of Q
  /// and of dO's 16-bit copy (a workspace, dense [B, H, M, E]) with TMA
  /// through maps of them (after dQ's), issued by one thread instead of
  /// every thread's cp.async copies. Both maps are optional slots: all
  /// zeros (cp.async then) where the driver cannot make them, since a
  /// launch's Q keeps its rows 16-byte aligned, all else TMA needs of it.
  bool streamTensorMaps = false;

  /// Report the time of each pass that lowers the kernels to PTX (`attnc
  /// compile --time-passes`): one report, on stderr, once every gpu.module
  /// of the compilation is lowered. The PTX does not depend on it.
  bool timePasses = false;

  /// Whether the kernels take wgmma: asked for, on a chip that has it.
  bool usesWgmma() const { return wgmma && chip == "sm_90a"; }
};

/// Levels of the sparse table of mask summaries (attn-analyze-mask's
/// `summary-levels`) the kernels use: they classify at most 128 query rows
/// against 64 keys at a time, ranges of at most 4 summary tiles of 64, which
/// one level covers (each further level would cost a prologue kernel and a
/// larger tile class).
constexpr unsigned kGpuMaskSummaryLevels = 1;

/// The decode kernel packs the query rows of one key/value head, (query m,
/// head of the group) in that order, into 16-row tiles: one warp per CTA.
constexpr int64_t kDecodeRows = 16;
constexpr int64_t kDecodeThreads = 32;
/// Keys per iteration of the decode kernel's loop.
constexpr int64_t kDecodeKeys = 64;
/// Threads of the merge kernel: 8 per packed row.
constexpr int64_t kMergeThreads = 8 * kDecodeRows;

/// One kernel parameter, in launch order. Pointers are device addresses
/// (8 bytes); scalars are passed by value with the width of `type`.
struct GpuKernelParam {
  enum class Kind {
    Pointer, ///< a device pointer (`.param .u64 .ptr`)
    I32,
    I64,
    F32,
    F64,
    /// A TMA tensor map (CUtensorMap, 128 bytes) passed by value: the
    /// kernel reads it where the driver put it (`.param .align 64 .b8
    /// name[128]`, a grid constant).
    TensorMap,
  };
  /// For the fixed parameters, FixedParam's name; for captures,
  /// "capture.<i>", "capture.<i>.size.<d>" or "capture.<i>.stride.<d>"
  /// (values score_mod, mask or tile_class read from above, see
  /// `GpuKernelSignature::captures`).
  std::string name;
  Kind kind;
};

/// The parameters every kernel of an attention's modules takes first, in
/// launch order: the one definition that the kernel builders read their
/// arguments by, the signature lists and the package fills.
enum class FixedParam : unsigned {
  // Base pointers; Lse and Sink are null when the op has none.
  Q, K, V, O, Lse, Sink,
  // Sizes (i32) over Q's and K's axes.
  B, H, G, M, N,
  // Strides in elements (i64) of the named tensor's axes.
  QStrideB, QStrideH, QStrideM,
  KStrideB, KStrideG, KStrideN,
  VStrideB, VStrideG, VStrideN,
  OStrideB, OStrideH, OStrideM,
  LseStrideB, LseStrideH,
  SinkStrideB, SinkStrideH, SinkStrideM,
  /// The op's scale operand (f32).
  Scale,
  /// The decode kernels' workspace (see GpuDecodeKernels) and how many
  /// parts they split the keys into (i32); null and 0 elsewhere.
  Partials, Splits,
  /// The lists of live key blocks (see GpuTileList); null without one.
  Tiles,
  /// The backward kernels' (GpuBackwardKernels; null and 0 elsewhere): the
  /// adjoint dO as given and its strides, the adjoint dLSE of the forward's
  /// LSE as given and its strides (null unless the backward has one), the
  /// workspaces of dO's 16-bit copy
  /// (laid out as O; two such, see backwardSplitsOutputGrad), of the rows' Delta = dO·O and of the rows' sink
  /// gradients (both laid out as LSE; the latter null unless the sink's
  /// gradient is used), of the rows' sums of the grad_reads read's adjoint
  /// (laid out as LSE; null without one), and the gradients dQ, dK, dV
  /// (f32) with their strides.
  DO, DOStrideB, DOStrideH, DOStrideM,
  DLse, DLseStrideB, DLseStrideH, DLseStrideM,
  DO16, Delta, DSink, ReadGrad,
  DQ, DQStrideB, DQStrideH, DQStrideM,
  DK, DKStrideB, DKStrideG, DKStrideN,
  DV, DVStrideB, DVStrideG, DVStrideN,
};
constexpr unsigned kNumFixedParams =
    static_cast<unsigned>(FixedParam::DVStrideN) + 1;

/// The name ("q", "k.stride.n", "scale", ...) and kind of a fixed parameter.
GpuKernelParam getFixedParam(FixedParam param);

/// A value from above that a region of the op reads, passed as parameters.
struct GpuCapture {
  /// Where the value comes from: "dim:<name>", "input:<name>",
  /// "param:<name>" for an attn.kernel's entry block arguments, "arg:<n>"
  /// for another block argument, "sink_grad" for the rows' sink gradients
  /// of an attn.attention_backward (f32 [B, H, M], in a workspace).
  std::string source;
  /// A scalar (index is passed as i64) or a tensor (a pointer, then one i64
  /// size per dim, then one i64 stride in elements per dim).
  bool isTensor = false;
  /// A tensor passed as its pointer only: the buffer of a prologue einsum
  /// ("einsum:<k>"), dense row-major, whose sizes the kernel recomputes
  /// from the einsum's extents.
  bool dense = false;
  /// The scalar's type, or the tensor's element type, as MLIR prints it.
  std::string elementType;
  int64_t rank = 0;
  /// Index of its first parameter in `GpuKernelSignature::params`.
  unsigned firstParam = 0;
};

/// The calling convention of a generated kernel (bare pointers, no memref
/// descriptors): the FixedParams, then the captures. Every kernel of a
/// module takes the same list. The last dim of Q, K, V and O, and the m dim
/// of LSE, must be contiguous; Q/K/V base pointers and row strides must keep
/// 16-byte alignment (strides multiples of 8 elements), O rows 8-byte
/// alignment (4 for a bf16/f16 O).
struct GpuKernelSignature {
  std::vector<GpuKernelParam> params;
  std::vector<GpuCapture> captures;
};

/// The decode kernels of a module built with `GpuOptions::decode`.
///
/// With R = M·H/G packed rows per key/value head and RB = ceil(R / 16),
/// `kernelName` runs on grid [S·RB, G, B] (S = the "splits" param; x =
/// split·RB + row tile) with one warp, and writes, per (b, g, split, row
/// tile, row), the row's O normalised by its own partial sum (`E` floats)
/// and its partial log-sum-exp: the workspace holds
/// rows = B·G·S·RB·16 rows of O, then rows LSEs (f32). `mergeKernelName`
/// runs on grid [RB, G, B] with kMergeThreads threads, combines the S
/// parts of each row (and the sink logit) and writes O and LSE.
struct GpuDecodeKernels {
  /// The PTX module holding both kernels.
  std::string ptx;
  std::string kernelName, mergeKernelName;
  int64_t sharedMemoryBytes = 0;
};

/// The kernel that lists the live key blocks of every query tile, for a
/// tile class that reads tensors (the summaries of a document or block
/// mask): evaluated in the attention's key loop, such a tile class costs
/// about what computing the tile does (its loads are latency the loop
/// waits for), so it is evaluated once per tile, in parallel, beforehand.
///
/// `kernelName` runs on grid [ceil(M / blockM), perHead ? H : 1, B] with one
/// warp and writes, for query tile t of (b, h), at element
/// ((b·Hc + h)·ceil(M / blockM) + t)·(ceil(N / blockN) + 1) of the "tiles"
/// workspace (i32, Hc = H or 1): block·4 + class (1 partial, 2 full) of
/// each live key block, in ascending order, then ceil(N / blockN)·4. The
/// attention kernel (same module, same parameters) then walks that list.
struct GpuTileList {
  std::string kernelName;
  int64_t blockM = 0, blockN = 0;
  /// Whether the tile class reads the head (one list per head).
  bool perHead = false;
};

/// Whether the attention kernel for `op` walks a GpuTileList.
bool usesGpuTileList(AttentionOp op);

/// Threads per CTA of a prologue kernel.
constexpr int64_t kPrologueThreads = 256;

/// A kernel that computes attn.einsum results the attention reads (the
/// per-tile summaries of mask tensors that tile_class reads, sink logits)
/// into buffers, each f32 and dense row-major over the einsum's output
/// extents. An elementwise einsum gets one thread per element, a reduction
/// one CTA per element (getPrologueElementsPerBlock); grid [max over its
/// einsums of ceil(elements / per block), 1, 1], kPrologueThreads threads.
struct GpuPrologueKernel {
  std::string name;
  /// The einsums it computes, as positions in the list given to
  /// buildPrologueGpuModule; parameter i < einsums.size() is the buffer of
  /// einsums[i].
  std::vector<unsigned> einsums;
  /// The buffers ("out.<position>"), then the captures. A capture whose
  /// source is "einsum:<position>" is the buffer of an earlier kernel.
  GpuKernelSignature signature;
};

/// The prologue kernels of an attention, launched in order before it.
struct GpuPrologue {
  /// The PTX module holding them.
  std::string ptx;
  std::vector<GpuPrologueKernel> kernels;
};

/// The sm_90a forward kernel (FlashAttention-3's structure: TMA into a ring
/// of shared-memory stages, mbarriers, wgmma, a producer warp group and two
/// consumer ones), in a module of its own: its parameters are the
/// FixedParams, then the tensor maps of Q, K and V (Kind::TensorMap, each a
/// 4-d map of the tensor [B, heads, rows, head dim] with a box of
/// [1, 1, `rowsBox` or `keysBox`, 64] and the 128-byte swizzle), then the
/// tile counter (a u32 in global memory, 0 at launch, which the kernel
/// leaves at 0), then the captures. Its CTAs take the tiles of
/// [ceil(M / blockM), H, B] in turn, so that one CTA per SM may serve them
/// all (the manifest entry's `persistent`); the mma.sync kernel, one CTA
/// per tile, runs instead where a tensor cannot have a map.
struct GpuWgmmaKernel {
  std::string ptx;
  std::string kernelName;
  int64_t blockM = 0, blockN = 0;
  int64_t threads = 0;
  int64_t sharedMemoryBytes = 0;
  GpuKernelSignature signature;
  /// Present when `usesGpuTileList`: the list of its own tiles, in a
  /// workspace of its own, by a kernel of the mma.sync module (the
  /// artifact's `ptx`, whose parameters have no tensor maps).
  std::optional<GpuTileList> tileList;
};

/// Whether the Hopper forward kernel serves `op`: head dims D and E of 64
/// or 128.
bool supportsWgmmaAttention(AttentionOp op);
/// Whether it is built with `options` (GpuOptions::wgmma, chip sm_90a).
bool buildsWgmmaAttention(AttentionOp op, const GpuOptions &options);

/// Everything a runtime needs to launch the kernel.
struct GpuKernelArtifact {
  std::string ptx;
  std::string kernelName;
  std::string chip;
  /// Threads per CTA: [32 * blockM / warpRows, 1, 1].
  int64_t blockDim[3] = {128, 1, 1};
  /// Grid = [ceil(M / blockM), H, B].
  int64_t blockM = 64;
  /// Dynamic shared memory in bytes; above 48 KiB the launcher must raise
  /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES first.
  int64_t dynamicSharedMemoryBytes = 0;
  /// The element type of Q/K/V: "bf16" or "f16"; head dims D and E.
  std::string elementType;
  /// The element type of O: "f32", "bf16" or "f16" (GpuOptions).
  std::string outputElementType = "f32";
  int64_t headDim = 0, valueDim = 0;
  bool hasLse = false, hasSink = false;
  GpuKernelSignature signature;
  /// Present when built with `GpuOptions::decode`.
  std::optional<GpuDecodeKernels> decode;
  /// Present when `usesGpuTileList`; its kernel is in `ptx`.
  std::optional<GpuTileList> tileList;
  /// Present when attn.einsum ops precede the attention in its block.
  std::optional<GpuPrologue> prologue;
  /// Present when built with `GpuOptions::wgmma` and supported.
  std::optional<GpuWgmmaKernel> wgmma;
};

/// The backward of an attention (attn.attention_backward), FlashAttention-2
/// style, in one module, after the forward kernel has written O (f32) and
/// LSE into workspaces laid out densely as [B, H, M, E] and [B, H, M]:
///  - `preprocessName`, grid [ceil(M / kBackwardPreprocessRows), H, B]:
///    Delta = rowsum(dO ∘ O), less dLSE e^(LSE' - LSE) where the LSE has
///    an adjoint (see attn.attention_backward), LSE replaced by the
///    log-denominator LSE' = LSE (+) sink, and dO rounded to the operands'
///    16-bit type;
///  - `keyValueName`, grid [ceil(N / keyBlock), G, B]: dK and dV of one key
///    block, over the query heads of its group and their live query blocks;
///  - `queryName`, grid [ceil(M / queryBlock), H, B]: dQ of one query block
///    over its live key blocks. Empty where `keyValueName` computes dQ too
///    (sm_90a, see buildBackwardGpuModule): `preprocessName` zeroes dQ and
///    each key block adds its share with f32 tensor reductions (TMA; with
///    GpuOptions::queryGradTensorMap and a map the driver could make) or
///    atomics, whose order varies from run to run.
/// When the sink logits' gradient is used, `preprocessName` also writes
/// each row's dSink = -P_sink Delta into the DSink workspace (laid out as
/// LSE), and the einsums after the backward that reduce it (to one
/// gradient per head, say) are `epilogue`'s kernels, launched last. So for
/// a tensor score_mod reads that needs a gradient (grad_reads, one on the
/// GPU): `queryName` writes each row's sum into the ReadGrad workspace.
/// Otherwise each gradient element is summed by one thread in a fixed
/// order: no atomics, the same bits on every run.
struct GpuBackwardKernels {
  std::string ptx;
  std::string preprocessName, keyValueName, queryName;
  int64_t queryBlock = 0, keyBlock = 0;
  int64_t preprocessThreads = 0, keyValueThreads = 0, queryThreads = 0;
  int64_t keyValueSharedBytes = 0, querySharedBytes = 0;
  /// The tensor maps of the signature, in order: of which tensor, and the
  /// box (rows, columns) each loads or stores, 128-byte swizzled.
  struct TensorMap {
    enum class Of {
      /// dQ (GpuOptions::queryGradTensorMap), f32 rows.
      QueryGrad,
      /// Q and dO's 16-bit copy (GpuOptions::streamTensorMaps).
      Query,
      OutputGrad16,
    };
    Of of;
    int64_t boxRows, boxColumns;
  };
  std::vector<TensorMap> tensorMaps;
  GpuKernelSignature signature;
  /// Present when attn.einsum ops follow the backward in its block: the
  /// prologue kernels (buildPrologueGpuModule) of those einsums, each
  /// writing its f32 result dense row-major. An einsum reads the rows'
  /// sink gradients as a capture whose source is "sink_grad".
  std::optional<GpuPrologue> epilogue;
};

/// Whether dO's 16-bit copy has two parts, dO's rounding and the rounding
/// of what that leaves (DO16 then holds twice O's elements, Delta two
/// planes of rows: with the first part, which the dK/dV kernel reads, and
/// with both, which the dQ kernel reads): for an f32 dO where the dQ kernel
/// sums the adjoint of a tensor score_mod reads (grad_reads), whose sums
/// weigh each error of dP by a position, so that dP = dO Vᵀ is taken to
/// f32's precision of dO there.
bool backwardSplitsOutputGrad(AttentionBackwardOp op);

/// Query rows per CTA of the backward's preprocessing kernel.
constexpr int64_t kBackwardPreprocessRows = 16;

/// Checks that `op` fits the backward kernels (softmax or none, with or
/// without a sink; D and E multiples of 16 up to 128).
LogicalResult checkGpuBackwardSupport(AttentionBackwardOp op);

/// Builds, at `builder`'s insertion point, a `gpu.module` named
/// `moduleName` holding the backward kernels of `op` (named
/// `kernelPrefix` + "_pre", "_dkdv", "_dq") and fills `kernels`' names,
/// shapes and signature. Where `options` use wgmma (an sm_90a chip), the
/// dK/dV and dQ kernels multiply on wgmma where D and E are multiples of
/// 64, and unless `options.deterministic` or the op has grad_reads the
/// dK/dV kernel also computes dQ, adding its shares into dQ, without a dQ
/// kernel (`queryName` empty).
FailureOr<gpu::GPUModuleOp>
buildBackwardGpuModule(OpBuilder &builder, AttentionBackwardOp op,
                       StringRef moduleName, StringRef kernelPrefix,
                       const GpuOptions &options, GpuBackwardKernels &kernels);

/// Compiles the backward kernels of `op` to PTX.
llvm::Expected<GpuBackwardKernels>
compileAttentionBackwardForGpu(AttentionBackwardOp op,
                               const GpuOptions &options);

/// Checks that `op` fits the skeleton (rank-4 Q/K/V of bf16 or f16 with
/// static D, E multiples of 16 and at most 256, captures it can pass).
LogicalResult checkGpuSupport(AttentionOp op, const GpuOptions &options);

/// Whether `op` can get the decode kernels: a normalizer whose partial
/// results merge exactly (softmax, none).
bool supportsGpuDecode(AttentionOp op);

/// Builds, at `builder`'s insertion point, a `gpu.module` named
/// `moduleName` holding one kernel `kernelName` for `op` and fills
/// `signature`. Nothing outside the new module is changed.
FailureOr<gpu::GPUModuleOp>
buildAttentionGpuModule(OpBuilder &builder, AttentionOp op,
                        const GpuOptions &options, StringRef moduleName,
                        StringRef kernelName, GpuKernelSignature &signature);

/// The same for the decode kernels `kernelName`_decode and
/// `kernelName`_merge (see GpuDecodeKernels); the signature is the same.
FailureOr<gpu::GPUModuleOp>
buildDecodeGpuModule(OpBuilder &builder, AttentionOp op,
                     const GpuOptions &options, StringRef moduleName,
                     StringRef kernelName, GpuKernelSignature &signature);

/// The same for the Hopper forward kernel `kernelName`_wgmma, filling
/// `kernel` but its PTX (see GpuWgmmaKernel).
FailureOr<gpu::GPUModuleOp>
buildWgmmaGpuModule(OpBuilder &builder, AttentionOp op,
                    const GpuOptions &options, StringRef moduleName,
                    StringRef kernelName, GpuWgmmaKernel &kernel);

/// Builds, at `builder`'s insertion point, a `gpu.module` named
/// `moduleName` holding the prologue kernels of `einsums` (attn.einsum ops
/// of one block, in block order), one per level of dependency, named
/// `kernelPrefix` followed by the level.
FailureOr<gpu::GPUModuleOp>
buildPrologueGpuModule(OpBuilder &builder, ArrayRef<EinsumOp> einsums,
                       StringRef moduleName, StringRef kernelPrefix,
                       std::vector<GpuPrologueKernel> &kernels);

/// The attn.einsum ops before `op` in its block: its prologue.
std::vector<EinsumOp> getPrologueEinsums(AttentionOp op);

/// The attn.einsum ops after `op` in its block: its epilogue (see
/// GpuBackwardKernels::epilogue).
std::vector<EinsumOp> getEpilogueEinsums(AttentionBackwardOp op);

/// Elements of `op` that one CTA of a prologue kernel computes.
int64_t getPrologueElementsPerBlock(EinsumOp op);

/// Keys per iteration of the attention kernel for (`op`, `options`).
int64_t getAttentionBlockN(AttentionOp op, const GpuOptions &options);

/// Dynamic shared memory the kernel for (`op`, `options`) uses, in bytes.
/// Threads per CTA: one warp per `warpRows` query rows.
int64_t getAttentionThreadsPerBlock(const GpuOptions &options);

int64_t getAttentionSharedMemoryBytes(AttentionOp op,
                                      const GpuOptions &options);
/// Dynamic shared memory of the decode kernel for `op`, in bytes.
int64_t getDecodeSharedMemoryBytes(AttentionOp op);

/// Compiles the single attn.attention of `module` (anywhere inside it), and
/// the attn.einsum ops before it in its block (GpuPrologue), to PTX. Their
/// attn.read ops become tensor.extract; nothing else is changed.
llvm::Expected<GpuKernelArtifact>
compileAttentionForGpu(ModuleOp module, const GpuOptions &options);
llvm::Expected<GpuKernelArtifact>
compileAttentionForGpu(AttentionOp op, const GpuOptions &options);

/// The kernels of an attention and those of its backward.
struct GpuAttentionWithBackward {
  GpuKernelArtifact forward;
  GpuBackwardKernels backward;
};

/// Compiles `forward` as compileAttentionForGpu does and `backward` (of the
/// same context) as compileAttentionBackwardForGpu does, to the same PTX,
/// but builds the modules of both before lowering any, so that all of their
/// lowerings run side by side instead of the forward's after the
/// backward's. Where neither can be built, the backward's error is the one
/// returned.
llvm::Expected<GpuAttentionWithBackward> compileAttentionWithBackwardForGpu(
    AttentionOp forward, const GpuOptions &forwardOptions,
    AttentionBackwardOp backward, const GpuOptions &backwardOptions);

/// Registers `attn-build-gpu-kernels` and the `attn-nvgpu-pipeline`
/// pipeline (attn.attention → gpu.module → gpu.binary with PTX).
void registerAttnGPUPasses();

/// Dialects the GPU pipeline creates, for tools that parse and lower.
void registerGpuCodegenDialects(DialectRegistry &registry);

} // namespace attn
} // namespace mlir

#endif // ATTN_NVGPU_GPUKERNEL_H
