//===- Package.h - Kernel packages (.attnpkg) -------------------*- C++ -*-===//
//
// A package is what `attnc compile --target sm_90a -o X.attnpkg` produces and
// what the runtime launches on a machine that has only the runtime: the
// kernel's signature, how to launch each GPU entry point (grid formulas,
// block, shared memory, kernel parameter order) and the PTX or cubin modules.
// The file format is documented in runtime/README.md.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_RUNTIME_PACKAGE_H
#define ATTN_RUNTIME_PACKAGE_H

#include "attn/Runtime/DimExpr.h"
#include "attn/Runtime/Status.h"
#include "attn/Runtime/Tensor.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace attn {

/// The container version this runtime reads and writes.
constexpr int kPackageFormatVersion = 1;

/// A dimension of the kernel: symbolic (bound from tensor shapes at launch)
/// or fixed at compile time.
struct DimSpec {
  std::string name;
  std::optional<int64_t> size;
};

/// One axis of a tensor: a dim, or a literal size.
struct AxisSpec {
  std::string dim; ///< Empty when `size` is the literal.
  int64_t size = 0;

  static AxisSpec ofDim(std::string name) { return {std::move(name), 0}; }
  static AxisSpec ofSize(int64_t n) { return {std::string(), n}; }
  bool isDim() const { return !dim.empty(); }
};

enum class ArgKind : uint8_t { Input, Param, Output };

enum class Layout : uint8_t {
  Contiguous = ATTNC_LAYOUT_CONTIGUOUS,
  InnerContiguous = ATTNC_LAYOUT_INNER_CONTIGUOUS,
  Strided = ATTNC_LAYOUT_STRIDED,
};

/// An input, output or runtime scalar param of the kernel.
struct ArgSpec {
  std::string name;
  ArgKind kind = ArgKind::Input;
  DType dtype = DType::F32;
  /// Tensors only.
  std::vector<AxisSpec> axes;
  Layout layout = Layout::Contiguous;
  /// Tensors: required alignment of the data pointer in bytes (0: one
  /// element).
  int64_t alignment = 0;
  /// Params only.
  std::optional<double> defaultValue;
};

/// The C type of one kernel parameter slot. TensorMap is a CUtensorMap, 128
/// bytes passed by value (PTX `.param .align 64 .b8 name[128]`).
enum class SlotType : uint8_t { Ptr, I32, I64, F32, F64, TensorMap };

/// How a tensor map arranges a tile in shared memory: the bank swizzle
/// pattern (its span in bytes), as `wgmma` reads the tile.
enum class TmaSwizzle : uint8_t { None, B32, B64, B128 };
/// What a tensor map loads for elements outside the tensor.
enum class TmaOobFill : uint8_t { Zero, Nan };
/// How far the L2 cache reads ahead of a tensor map's loads.
enum class TmaL2Promotion : uint8_t { None, B64, B128, B256 };

/// The tile a Tma slot's tensor map loads: what `cp.async.bulk.tensor`
/// copies from global to shared memory per instruction.
struct TmaTile {
  /// Elements per axis of the map, outer to inner (the driver's order is
  /// reversed).
  std::vector<int64_t> box;
  TmaSwizzle swizzle = TmaSwizzle::None;
  TmaOobFill oobFill = TmaOobFill::Zero;
  TmaL2Promotion l2Promotion = TmaL2Promotion::B128;
  /// Where TMA cannot describe the launch's tensor, the kernel gets an
  /// all-zero map (and does without it) instead of the entry's fallback or
  /// an error.
  bool optional = false;
  /// The tensor's axis behind each axis of the map, in increasing order, or
  /// -1 for an axis of extent 1 the tensor lacks (a K without a head axis
  /// in a kernel whose map has one); empty: the tensor's axes as they are.
  std::vector<int64_t> axes = {};
};

/// What one kernel parameter is, in the order of the PTX .entry's params.
struct ParamSlot {
  enum class Kind : uint8_t {
    Ptr,       ///< data pointer (+ byte offset) of tensor `arg`
    Stride,    ///< stride (elements) of axis `axis` of tensor `arg`
    Size,      ///< extent of axis `axis` of tensor `arg`
    Dim,       ///< value of dim `arg`
    Param,     ///< value of param `arg`
    Const,     ///< the literal `value`
    Workspace, ///< device pointer of workspace `arg` (null when 0 bytes)
    Expr,      ///< value of the formula `arg` over the dims
    Tma,       ///< tensor map of tensor `arg` (or of workspace `arg`'s tensor)
               ///< loading `tile` (type TensorMap)
  };
  Kind kind = Kind::Ptr;
  std::string arg;
  int64_t axis = 0;
  SlotType type = SlotType::Ptr;
  double value = 0;
  TmaTile tile; ///< Tma slots only
};

/// One GPU kernel launch of the package.
struct EntrySpec {
  std::string name;              ///< for attnc_launch's entry_name
  std::string function;          ///< the PTX .entry name
  std::string module;            ///< which module holds it
  std::vector<std::string> grid; ///< 1 to 3 formulas over dims (x, y, z)
  int64_t block[3] = {1, 1, 1};
  int64_t sharedBytes = 0; ///< dynamic shared memory
  /// Nonzero: the kernel's CTAs take the grid's tiles in turn (by their
  /// linear index and the number of CTAs launched), so that a grid larger
  /// than this many CTAs per SM is launched as one of that many, 1-d, and
  /// the CTAs stay resident; a smaller grid is launched as it is.
  int64_t persistentCtasPerSm = 0;
  std::vector<ParamSlot> params;
  /// A formula over dims: the entry runs only when it is nonzero (empty:
  /// always), so that one package picks its kernels by problem size.
  std::string when;
  /// The entries that run in this one's place, in order (empty: none), when
  /// a launch's tensors cannot be described by its Tma slots' tensor maps
  /// (strides TMA cannot express, a misaligned data pointer, a driver
  /// without TMA): a kernel and what only it needs first, such as its tile
  /// list.
  std::vector<std::string> fallback;
};

/// A device scratch buffer the runtime owns and passes to kernels through
/// Workspace slots, e.g. the partial results a split-K kernel hands to its
/// merge kernel. Its contents are not initialised.
struct WorkspaceSpec {
  std::string name;
  std::string bytes; ///< size in bytes: a formula over dims
  /// The dense row-major tensor the workspace begins with, which Tma slots
  /// may name as they name a tensor argument.
  struct Tensor {
    DType dtype = DType::F32;
    std::vector<std::string> shape; ///< formulas over dims, outer first
  };
  std::optional<Tensor> tensor = std::nullopt;
  /// Its kernels need it all zero as they start, and leave it so: the
  /// runtime zeroes its own buffer where it allocates it, a caller's at
  /// every launch.
  bool zeroed = false;
};

enum class ModuleFormat : uint8_t { Ptx, Cubin };

struct ModuleBlob {
  std::string name;
  ModuleFormat format = ModuleFormat::Ptx;
  std::string bytes;
};

/// The manifest: everything but the module bytes.
struct PackageManifest {
  int formatVersion = kPackageFormatVersion;
  std::string name;
  std::string target;   ///< sm_80, sm_90, sm_90a, ...
  std::string producer; ///< free text, e.g. "attnc 0.1.0"
  std::vector<DimSpec> dims;
  std::vector<ArgSpec> args;
  std::vector<std::string> constraints; ///< formulas that must be nonzero
  std::vector<WorkspaceSpec> workspaces;
  std::vector<EntrySpec> entries;
};

/// A validated package with its formulas parsed.
struct Package {
  PackageManifest manifest;
  std::vector<ModuleBlob> modules;

  /// Parsed forms, parallel to manifest.entries[i].grid and constraints.
  std::vector<std::vector<DimExpr>> gridExprs;
  std::vector<DimExpr> constraintExprs;
  /// Parallel to manifest.entries: the `when` formula, if any.
  std::vector<std::optional<DimExpr>> whenExprs;
  /// Parallel to manifest.workspaces: the `bytes` formula.
  std::vector<DimExpr> workspaceExprs;
  /// Parallel to manifest.workspaces: the tensor it begins with, described
  /// as an argument (name, dtype, rank) for the Tma slots that name it, and
  /// the formulas of its shape.
  std::vector<std::optional<ArgSpec>> workspaceTensors;
  std::vector<std::vector<DimExpr>> workspaceShapeExprs;
  /// Parallel to manifest.entries[i].params: the formula of an Expr slot.
  std::vector<std::vector<std::optional<DimExpr>>> slotExprs;
  /// Parallel to manifest.entries: the indices of its fallback entries, in
  /// order (empty: none), and the index of the entry it is a fallback of (-1:
  /// none).
  std::vector<std::vector<size_t>> fallbackOf;
  std::vector<int> standsInFor;

  int findDim(std::string_view name) const;
  int findArg(std::string_view name) const;
  int findWorkspace(std::string_view name) const;
  const ModuleBlob *findModule(std::string_view name) const;
  /// Whether entry `e` has Tma slots.
  bool usesTma(size_t e) const;
  /// The workspace whose tensor Tma slot `slot` names, or -1 where it names
  /// a tensor argument.
  int tmaWorkspace(const ParamSlot &slot) const;
};

/// Checks a manifest (and its modules) for consistency: names unique and
/// well formed, every referenced dim/arg/workspace/module exists, formulas
/// parse, every symbolic dim appears in some tensor's axes, limits
/// respected. On success `out` holds the parsed formulas.
Status validatePackage(const PackageManifest &manifest,
                       std::vector<ModuleBlob> modules, Package &out);

/// Manifest <-> JSON text.
std::string manifestToJson(const PackageManifest &manifest);
Status manifestFromJson(std::string_view json, PackageManifest &out);

/// Builds .attnpkg files. Used by `attnc compile` and by tests.
class PackageWriter {
public:
  explicit PackageWriter(PackageManifest manifest)
      : manifest(std::move(manifest)) {}

  void addModule(std::string name, ModuleFormat format, std::string bytes) {
    modules.push_back({std::move(name), format, std::move(bytes)});
  }

  /// Validates, then serializes to the container format.
  Status serialize(std::string &out) const;
  /// Validates, serializes and writes `path` (atomically via a temp file).
  Status writeFile(const std::string &path) const;

private:
  PackageManifest manifest;
  std::vector<ModuleBlob> modules;
};

/// Parses and validates a serialized package.
Status readPackage(std::string_view bytes, Package &out);
/// Reads `path` and parses it.
Status readPackageFile(const std::string &path, Package &out);

std::string_view slotTypeName(SlotType type);
/// The manifest's spellings: "128B", "nan", "256B", ...
std::string_view tmaSwizzleName(TmaSwizzle swizzle);
std::string_view tmaOobFillName(TmaOobFill fill);
std::string_view tmaL2PromotionName(TmaL2Promotion promotion);

} // namespace attn

#endif // ATTN_RUNTIME_PACKAGE_H
