//===- TileListKernelBuilder.cpp - Live key blocks of each query tile -----===//
//
// For a tile class that reads tensors (document ids, block maps, through
// the summaries the prologue kernels build), one warp per query tile
// evaluates the tile class of 32 key blocks at a time and appends the live
// ones, in ascending order, to the tile's list (see GpuTileList): a ballot
// gives each live lane its place. An entry past the last block ends it.
//
//===----------------------------------------------------------------------===//

#include "KernelBuilding.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "llvm/ADT/DenseSet.h"

using namespace mlir;
using namespace mlir::attn;

/// Whether `value`, computed in the tile class region `region`, depends on
/// the tile's bounds (arguments 2-5: m_first, m_last, n_first, n_last).
static bool dependsOnTileBounds(Value value, Region &region,
                                llvm::DenseSet<Value> &visited) {
  if (!visited.insert(value).second)
    return false;
  if (auto arg = dyn_cast<BlockArgument>(value))
    return arg.getParentRegion() == &region && arg.getArgNumber() >= 2;
  Operation *def = value.getDefiningOp();
  if (!def || !region.isAncestor(def->getParentRegion()))
    return false;
  return llvm::any_of(def->getOperands(), [&](Value operand) {
    return dependsOnTileBounds(operand, region, visited);
  });
}

bool mlir::attn::usesGpuTileList(AttentionOp op) {
  if (!op.hasTileClass())
    return false;
  // A read at a place that moves with the tile (a summary of document ids)
  // is a load per key block; one that does not (a per-head flag) is hoisted
  // out of the key loop.
  Region &region = op.getTileClass();
  llvm::DenseSet<Value> visited;
  bool readsPerTile = false;
  region.walk([&](Operation *nested) {
    if (isa<ReadOp, tensor::ExtractOp>(nested))
      readsPerTile |= llvm::any_of(nested->getOperands(), [&](Value operand) {
        return dependsOnTileBounds(operand, region, visited);
      });
  });
  return readsPerTile;
}

namespace {

class TileListEmitter : KernelIRBuilder {
public:
  TileListEmitter(OpBuilder &builder, Location loc, AttentionOp op,
                  ValueRange args, const IRMapping &captures)
      : KernelIRBuilder(builder, loc), op(op), args(args), captures(captures) {}

  void emit(int64_t blockM, int64_t blockN);

private:
  Value blockId(gpu::Dimension d) {
    return arith::IndexCastOp::create(b, loc, i32,
                                      gpu::BlockIdOp::create(b, loc, d));
  }
  Value popCount(Value x) { return LLVM::CtPopOp::create(b, loc, i32, x); }
  void storeAt(Value base, Value index, Value value) {
    LLVM::StoreOp::create(b, loc, value, gep(base, i32, index),
                          /*alignment=*/4);
  }

  Value arg(FixedParam param) { return getFixedArg(args, param); }

  AttentionOp op;
  ValueRange args;
  const IRMapping &captures;
};

} // namespace

void TileListEmitter::emit(int64_t blockM, int64_t blockN) {
  Value lane = arith::IndexCastOp::create(
      b, loc, i32, gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x));
  Value mTile = blockId(gpu::Dimension::x);
  Value head = blockId(gpu::Dimension::y);
  Value batch = blockId(gpu::Dimension::z);
  Value numHeads = arg(FixedParam::H), sizeM = arg(FixedParam::M),
        sizeN = arg(FixedParam::N);
  bool perHead = !op.getTileClass().getArgument(1).use_empty();
  Value numListHeads = perHead ? numHeads : c32(1);
  Value numBlocks = ceilDiv(sizeN, blockN);
  Value row = add(
      mul(add(mul(batch, numListHeads), head), ceilDiv(sizeM, blockM)), mTile);
  Value list = gep(arg(FixedParam::Tiles), i32,
                   mul(ext64(row), ext64(add(numBlocks, c32(1)))));
  Value firstM = mul(mTile, c32(blockM));
  Value lastM = sub(minsi(add(firstM, c32(blockM)), sizeM), c32(1));
  Value lanesBelow = sub(arith::ShLIOp::create(b, loc, c32(1), lane), c32(1));

  auto scan = scf::ForOp::create(
      b, loc, toIndex(c32(0)), toIndex(numBlocks), toIndex(c32(32)),
      ValueRange{c32(0)},
      [&](OpBuilder &nested, Location, Value first, ValueRange count) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value block = add(arith::IndexCastOp::create(b, loc, i32, first), lane);
        auto classify =
            scf::IfOp::create(b, loc, TypeRange{i32},
                              cmpi(arith::CmpIPredicate::slt, block, numBlocks),
                              /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard inIf(b);
          b.setInsertionPointToStart(classify.thenBlock());
          Value n0 = mul(block, c32(blockN));
          Value lastN = sub(minsi(add(n0, c32(blockN)), sizeN), c32(1));
          Value tileClass =
              inlineRegion(b, op.getTileClass(),
                           {toIndex(batch), toIndex(head), toIndex(firstM),
                            toIndex(lastM), toIndex(n0), toIndex(lastN)},
                           captures);
          scf::YieldOp::create(b, loc, tileClass);
          b.setInsertionPointToStart(classify.elseBlock());
          scf::YieldOp::create(b, loc, c32(0));
        }
        Value tileClass = classify.getResult(0);
        Value live = cmpi(arith::CmpIPredicate::ne, tileClass, c32(0));
        Value ballot = NVVM::VoteSyncOp::create(b, loc, i32, c32(-1), live,
                                                NVVM::VoteSyncKind::ballot);
        auto append = scf::IfOp::create(b, loc, live, false);
        {
          OpBuilder::InsertionGuard inIf(b);
          b.setInsertionPointToStart(&append.getThenRegion().front());
          Value place =
              add(count[0],
                  popCount(arith::AndIOp::create(b, loc, ballot, lanesBelow)));
          storeAt(list, place, add(mul(block, c32(4)), tileClass));
        }
        scf::YieldOp::create(b, loc, add(count[0], popCount(ballot)));
      });
  auto writeCount = scf::IfOp::create(
      b, loc, cmpi(arith::CmpIPredicate::eq, lane, c32(0)), false);
  OpBuilder::InsertionGuard inIf(b);
  b.setInsertionPointToStart(&writeCount.getThenRegion().front());
  storeAt(list, scan.getResult(0), mul(numBlocks, c32(4)));
}

void mlir::attn::emitTileList(OpBuilder &builder, Location loc, AttentionOp op,
                              int64_t blockM, int64_t blockN, ValueRange args,
                              const IRMapping &captures) {
  TileListEmitter(builder, loc, op, args, captures).emit(blockM, blockN);
}
