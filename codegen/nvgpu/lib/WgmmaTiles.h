//===- WgmmaTiles.h - Warp-group tensor-core pieces -------------*- C++ -*-===//
//
// Private to codegen/nvgpu: what the sm_90a kernels are built from, beside
// the mma.sync pieces: wgmma.mma_async m64nNk16 with B (and A, or A from
// registers in the mma.sync fragment layout of each warp's 16 rows) in
// shared memory laid out with the 128-byte swizzle, its fences and groups,
// mbarriers, TMA box loads and register reallocation. All as inline PTX,
// which MLIR 22's NVVM ops do not cover with the swizzled descriptors and
// register A operands these kernels need.
//
// The swizzled layout of a [rows][cols] tile of 16-bit elements: cols / 64
// chunks of [rows][64] one after the other, rows 128 bytes apart, 16-byte
// unit u of row r at unit u ^ (r % 8); TMA with CU_TENSOR_MAP_SWIZZLE_128B
// writes it, and MmaTileBuilder::loadTileAsync(..., swizzled) too.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_NVGPU_WGMMATILES_H
#define ATTN_NVGPU_WGMMATILES_H

#include "KernelBuilding.h"

namespace mlir {
namespace attn {

/// Bytes of a row of a swizzled 64-column chunk, and of its 8-row atom (the
/// alignment a swizzled tile needs).
constexpr int64_t kSwizzledRowBytes = 128;
constexpr int64_t kSwizzleAtomBytes = 8 * kSwizzledRowBytes;

/// An asm statement with side effects, results of `resultTypes`.
LLVM::InlineAsmOp emitAsm(OpBuilder &b, Location loc, TypeRange resultTypes,
                          ValueRange operands, StringRef text,
                          StringRef constraints);

/// The values `values` given back by an empty asm that takes them: an order
/// point for registers that asynchronous instructions read or write. Every
/// wgmma result passes through one after wgmma.wait_group, so that no use
/// of it is scheduled before the wait; its A fragments and accumulators
/// pass through one before wgmma.fence for the same reason.
SmallVector<Value> fenceOperands(OpBuilder &b, Location loc,
                                 ArrayRef<Value> values);

class WgmmaTileBuilder : protected MmaTileBuilder {
public:
  using MmaTileBuilder::MmaTileBuilder;

protected:
  /// A wgmma operand descriptor of the swizzled tile at shared address
  /// `address` (i32) with the given leading and stride byte offsets.
  Value operandDescriptor(Value address, int64_t leadingBytes,
                          int64_t strideBytes);
  /// The descriptor of k-step `kk` of a K-major operand: a swizzled
  /// [rows][K] tile at shared address `tile` (A, or B of a product
  /// contracting over the tile's columns).
  Value kMajorOperand(Value tile, int64_t rows, int64_t kk);
  /// The descriptor of k-step `kk` of an MN-major operand: a swizzled
  /// [rows = K][M or N] tile at shared address `tile` (a product contracting
  /// over the tile's rows).
  Value mnMajorOperand(Value tile, int64_t rows, int64_t kk);
  /// acc = A B (+ acc unless `accumulate` is false) on one m64nNk16 wgmma,
  /// A from shared memory (`aDescriptor`, MN-major if `transposeA`) or from
  /// registers (`aFragment`), B from shared memory, transposed (MN-major) or
  /// not.
  void wgmma(MutableArrayRef<Value> acc, Value aDescriptor,
             ArrayRef<Value> aFragment, Value bDescriptor, bool transposeB,
             bool accumulate, bool transposeA = false);
  void wgmmaFence();
  /// Closes the warp group's wgmma group issued since the last commit.
  void wgmmaCommit();
  /// Waits until at most `pending` of the warp group's committed wgmma
  /// groups are still running.
  void wgmmaWait(int64_t pending);
  /// The shared-memory address (i32) of a pointer into shared memory.
  Value sharedAddressOf(Value pointer);
  /// Orders this thread's earlier shared-memory writes (st.shared,
  /// cp.async) before later reads of the async proxy (wgmma, TMA stores).
  void asyncProxyFence();
  void initBarrier(Value address, int64_t count);
  void arriveExpectingBytes(Value address, int64_t bytes);
  /// Raises the bytes the mbarrier's current phase waits for, without
  /// arriving on it.
  void expectBytes(Value address, int64_t bytes);
  void arrive(Value address);
  void waitBarrier(Value address, Value parity);
  /// Arrives on the mbarrier at `address` once this thread's cp.async
  /// copies issued so far are complete (without raising its count: the
  /// barrier expects one such arrival per thread that copies).
  void arriveOnCopies(Value address);
  /// Loads the box of tensor map `map` at coordinates (innermost first) into
  /// shared address `dst`, completing on the barrier at `barrier`.
  void loadBox(Value map, Value dst, ArrayRef<Value> coordinates,
               Value barrier);
  void setMaxRegisters(int64_t count, bool increase);
  /// Whether the runtime made tensor map `map` (a kernel parameter): it
  /// passes all zeros for an optional map TMA cannot describe.
  Value isMapMade(Value map);
  /// Adds the box at shared address `source` (laid out as tensor map `map`
  /// arranges it) into the map's tensor at coordinates (innermost first)
  /// with TMA, in this thread's current bulk group; elements outside the
  /// tensor are left out.
  void reduceAddBox(Value map, Value source, ArrayRef<Value> coordinates);
  /// Closes this thread's bulk group issued since the last commit.
  void bulkCommit();
  /// Waits until this thread's bulk groups have read their sources (and,
  /// unless `readOnly`, completed).
  void bulkWait(bool readOnly);
};

} // namespace attn
} // namespace mlir

#endif // ATTN_NVGPU_WGMMATILES_H
