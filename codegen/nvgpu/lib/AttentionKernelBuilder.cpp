//===- AttentionKernelBuilder.cpp - The mma.sync attention skeleton -------===//
//
// Builds one device-only kernel for an attn.attention: a FlashAttention-2
// style skeleton (one CTA per (query block, head, batch), one warp per 16 or
// 32 query rows, K/V blocks of 32 or 64 keys streamed into shared memory by
// cp.async while the other product runs, S = Q Kᵀ and O += P V on mma.sync
// m16n8k16, online softmax in registers, only the key blocks the mask keeps
// visited) into which the op's score_mod, mask and tile_class regions are
// inlined, as FlexAttention inlines score_mod into its template.
//
// Every loop over registers is unrolled here, in C++: a register array
// indexed at run time would go to local memory.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 with .bf16/.f16):
//  - accumulator c0..c3 of lane l: rows l/4 (c0, c1) and l/4 + 8 (c2, c3),
//    columns 2 (l%4) + {0, 1};
//  - A a0..a3: (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
//    (rows 8-15, k 8-15), which ldmatrix.x4 yields when lane l points at row
//    l%16, column 8 (l/16);
//  - B b0, b1: k 0-7 and k 8-15 of an 8-column slice, which ldmatrix (no
//    .trans) yields from K stored [key][d], and ldmatrix.trans from V stored
//    [key][e].
// So the S accumulator of two adjacent 8-key tiles is, once rounded to
// 16 bits, exactly the A operand of the P V product.
//
//===----------------------------------------------------------------------===//

#include "AttentionKernelEmitter.h"

#include "attn/Dialect/Attn/IR/AttnOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/Matchers.h"

#include <limits>

using namespace mlir;
using namespace mlir::attn;

namespace {

/// Key blocks the scan for the next live block crosses at once when none of
/// them is live.
constexpr int64_t kScanSpan = 16;

/// The most per-score operations of a variant that gets 64-key tiles with
/// 32 query rows per warp (see hasLightScoreCode).
constexpr int64_t kMaxLightScoreOps = 9;

} // namespace

//===----------------------------------------------------------------------===//
// Prologue: indices, base pointers, Q.
//===----------------------------------------------------------------------===//

void AttentionKernelEmitter::emitIndices() {
  emitThreadIndices();
  Value mBlock = lastFirstBlockIndexAlong(gpu::Dimension::x);
  batch = blockIndexAlong(gpu::Dimension::z);
  Value numHeads = arg(FixedParam::H), numKvHeads = arg(FixedParam::G);
  sizeM = arg(FixedParam::M);
  sizeN = arg(FixedParam::N);
  groupSize = divu(numHeads, numKvHeads);
  if (shape.splitKeys) {
    // x = split * rowBlocks + row tile: the CTAs that read the same keys
    // run side by side.
    rowLimit = mul(sizeM, groupSize);
    rowBlocks = ceilDiv(rowLimit, shape.blockM);
    Value x = blockIndexAlong(gpu::Dimension::x);
    rowBlock = remu(x, rowBlocks);
    split = divu(x, rowBlocks);
    numSplits = arg(FixedParam::Splits);
    kvHead = blockIndexAlong(gpu::Dimension::y);
    head = mul(kvHead, groupSize);
    m0 = mul(rowBlock, c32(shape.blockM));
  } else {
    rowLimit = sizeM;
    head = blockIndexAlong(gpu::Dimension::y);
    // GQA: query head h reads key/value head h / (H / G).
    kvHead = divu(head, groupSize);
    m0 = mul(mBlock, c32(shape.blockM));
  }
  batchIdx = toIndex(batch);
  headIdx = toIndex(head);
  scale = arg(FixedParam::Scale);
}

void AttentionKernelEmitter::emitPrologue() {
  emitIndices();
  smem = LLVM::AddressOfOp::create(b, loc, sharedPtr, "attn_smem");
  kBase = gep(arg(FixedParam::K), elementType,
              add(mul(ext64(batch), arg(FixedParam::KStrideB)),
                  mul(ext64(kvHead), arg(FixedParam::KStrideG))));
  vBase = gep(arg(FixedParam::V), elementType,
              add(mul(ext64(batch), arg(FixedParam::VStrideB)),
                  mul(ext64(kvHead), arg(FixedParam::VStrideG))));
  if (shape.splitKeys) {
    // Packed row p is query p / (H / G) of head kvHead (H / G) + p % (H / G).
    Value q = gep(arg(FixedParam::Q), elementType,
                  mul(ext64(batch), arg(FixedParam::QStrideB)));
    loadTileAsync(0, shape.blockM, shape.headDim, shape.qkPitch(), q, Value(),
                  m0, rowLimit, [&](Value row) {
                    Value rowHead = add(head, remu(row, groupSize));
                    return add(mul(ext64(rowHead), arg(FixedParam::QStrideH)),
                               mul(ext64(divu(row, groupSize)),
                                   arg(FixedParam::QStrideM)));
                  });
  } else {
    Value q = gep(arg(FixedParam::Q), elementType,
                  add(mul(ext64(batch), arg(FixedParam::QStrideB)),
                      mul(ext64(head), arg(FixedParam::QStrideH))));
    loadTileAsync(0, shape.blockM, shape.headDim, shape.qkPitch(), q,
                  arg(FixedParam::QStrideM), m0, sizeM);
  }
  waitForCopies();

  // Lane l reads row l % 16, column 8 (l / 16) of a 16-row tile.
  Value row = add(mul(warp, c32(shape.warpRows)),
                  arith::AndIOp::create(b, loc, lane, c32(15)));
  Value col = mul(arith::ShRUIOp::create(b, loc, lane, c32(4)), c32(8));
  qAddr = gep(smem, elementType, add(mul(row, c32(shape.qkPitch())), col));
  if (shape.qInRegisters())
    for (int64_t kk = 0; kk < shape.headDim / 16; ++kk)
      qFrag.push_back(ldmatrix(gep(qAddr, elementType, c32(16 * kk)), false));
}

//===----------------------------------------------------------------------===//
// Key loop.
//===----------------------------------------------------------------------===//

/// The class of the tile (this CTA's rows) x (keys n0 .. n0 + numKeys - 1,
/// numKeys = blockN unless given): 0 empty, 1 partial, 2 full. Without a
/// tile_class region, every tile is partial unless the mask is the constant
/// true.
Value AttentionKernelEmitter::emitTileClass(Value n0, int64_t numKeys) {
  if (!op.hasTileClass())
    return c32(op.hasTrivialMask() ? 2 : 1);
  if (!numKeys)
    numKeys = shape.blockN;
  Value firstM = m0;
  Value lastM = sub(minsi(add(m0, c32(shape.blockM)), rowLimit), c32(1));
  if (shape.splitKeys) {
    firstM = divu(firstM, groupSize);
    lastM = divu(lastM, groupSize);
  }
  Value lastN = sub(minsi(add(n0, c32(numKeys)), sizeN), c32(1));
  auto classFor = [&](Value headIndex) {
    return inlineRegion(b, op.getTileClass(),
                        {batchIdx, headIndex, toIndex(firstM), toIndex(lastM),
                         toIndex(n0), toIndex(lastN)},
                        captures);
  };
  if (!shape.splitKeys || op.getTileClass().getArgument(1).use_empty())
    return classFor(headIdx);
  // Decode rows belong to every head of the group: the tile is empty (full)
  // only if it is so for each of them.
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  auto heads = scf::ForOp::create(
      b, loc, headIdx, toIndex(add(head, groupSize)), one,
      ValueRange{c32(2), c32(0)},
      [&](OpBuilder &nested, Location, Value headIndex, ValueRange bounds) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value tileClass = classFor(headIndex);
        scf::YieldOp::create(
            b, loc,
            ValueRange{minsi(bounds[0], tileClass),
                       arith::MaxSIOp::create(b, loc, bounds[1], tileClass)});
      });
  Value lowest = heads.getResult(0), highest = heads.getResult(1);
  return select(
      cmpi(arith::CmpIPredicate::eq, highest, c32(0)), c32(0),
      select(cmpi(arith::CmpIPredicate::eq, lowest, c32(2)), c32(2), c32(1)));
}

/// The query row and head, as indices the regions take, of this thread's
/// accumulator row `i`; rows past the problem are clamped into it so that
/// reads of captured tensors stay in bounds.
std::pair<Value, Value> AttentionKernelEmitter::rowCoordinates(int64_t i) {
  Value row = minsi(add(m0, ownedRow(i)), sub(rowLimit, c32(1)));
  if (!shape.splitKeys)
    return {toIndex(row), headIdx};
  return {toIndex(divu(row, groupSize)),
          toIndex(add(head, remu(row, groupSize)))};
}

void AttentionKernelEmitter::forEachScore(
    Value n0, function_ref<void(const ScorePlace &)> visit) {
  const int64_t nTiles = shape.blockN / 8;
  Value lastN = arith::SubIOp::create(b, loc, sizeN, c32(1));
  Value colBase = add(n0, mul(quadCol, c32(2)));
  // Regions see indices clamped into the tensors, so that reads of captured
  // tensors stay in bounds for the rows and keys past M and N.
  SmallVector<std::pair<Value, Value>> rowIdx;
  for (int64_t i = 0; i < shape.ownedRows(); ++i)
    rowIdx.push_back(rowCoordinates(i));
  for (int64_t j = 0; j < nTiles; ++j) {
    for (int64_t c = 0; c < 2; ++c) {
      Value col = add(colBase, c32(8 * j + c));
      Value colIdx = toIndex(minsi(col, lastN));
      Value inRange = cmpi(arith::CmpIPredicate::slt, col, sizeN);
      for (int64_t i = 0; i < shape.ownedRows(); ++i) {
        const int64_t t = i / 2, r = i % 2;
        visit({4 * (nTiles * t + j) + 2 * r + c, i, rowIdx[i].first,
               rowIdx[i].second, colIdx, inRange});
      }
    }
  }
}

Value AttentionKernelEmitter::maskAt(const ScorePlace &place) {
  return inlineRegion(b, op.getMask(),
                      {batchIdx, place.head, place.query, place.key}, captures);
}

/// Scores of this thread's accumulator elements (`qk`, in accumulator order
/// [rowTiles][blockN / 8][4]) after scale, score_mod and mask: absent keys
/// (masked, or past N) get the normalizer's absent score. `kept` receives,
/// when the normalizer counts them, per owned row the number of this
/// thread's kept keys.
SmallVector<Value>
AttentionKernelEmitter::emitScores(ArrayRef<Value> qk, Value n0, bool full,
                                   SmallVectorImpl<Value> &kept,
                                   ArrayRef<Value> keepBits) {
  Value absent = normalizer.getAbsentScore(b, loc, f32);
  SmallVector<Value> scores(qk.size());
  SmallVector<Value> count(shape.ownedRows(), cf(0.0));
  forEachScore(n0, [&](const ScorePlace &place) {
    Value x = mulf(qk[place.slot], scale);
    Value s =
        op.hasTrivialScoreMod()
            ? x
            : inlineRegion(b, op.getScoreMod(),
                           {x, batchIdx, place.head, place.query, place.key},
                           captures);
    // A select on the bounds is cheaper than a separate full-tile path
    // without it (measured): full tiles skip only the mask.
    Value keep = place.inRange;
    if (!full)
      keep = arith::AndIOp::create(
          b, loc, keep,
          keepBits.empty() ? maskAt(place) : testKeepBit(keepBits, place.slot));
    scores[place.slot] = select(keep, s, absent);
    if (normalizer.hasKeptCount())
      count[place.row] = normalizer.countKept(b, loc, count[place.row], keep);
  });
  if (normalizer.hasKeptCount())
    kept.assign(count.begin(), count.end());
  return scores;
}

SmallVector<Value> AttentionKernelEmitter::emitKeepBits(Value n0,
                                                        Value tileClass) {
  const int64_t numSlots = 4 * (shape.blockN / 8) * shape.rowTiles();
  const int64_t numWords = llvm::divideCeil(numSlots, 32);
  // Full tiles read no bit.
  return evaluateByClass(
      tileClass, SmallVector<Type>(numWords, i32), [&](bool full) {
        SmallVector<Value> words(numWords, c32(0));
        if (full)
          return words;
        forEachScore(n0, [&](const ScorePlace &place) {
          Value bit = arith::ShLIOp::create(
              b, loc, arith::ExtUIOp::create(b, loc, i32, maskAt(place)),
              c32(place.slot % 32));
          Value &word = words[place.slot / 32];
          word = arith::OrIOp::create(b, loc, word, bit);
        });
        return words;
      });
}

Value AttentionKernelEmitter::testKeepBit(ArrayRef<Value> keepBits,
                                          int64_t slot) {
  Value bit = arith::AndIOp::create(b, loc, keepBits[slot / 32],
                                    c32(int32_t(1u << (slot % 32))));
  return cmpi(arith::CmpIPredicate::ne, bit, c32(0));
}

void AttentionKernelEmitter::loadKeys(Value n0) {
  loadTileAsync(shape.kOffset(), shape.blockN, shape.headDim, shape.qkPitch(),
                kBase, arg(FixedParam::KStrideN), n0, sizeN);
}

void AttentionKernelEmitter::loadValues(Value n0) {
  loadTileAsync(shape.vOffset(), shape.blockN, shape.valueDim, shape.vPitch(),
                vBase, arg(FixedParam::VStrideN), n0, sizeN);
}

/// The first key block at or after `from` that the mask keeps something of,
/// and its tile class; `numBlocks` and class 0 when there is none. Uniform
/// over the CTA.
std::pair<Value, Value> AttentionKernelEmitter::findLiveBlock(Value from,
                                                     Value numBlocks) {
  // Without a tile_class region every block is live: no scan.
  if (!op.hasTileClass())
    return {from, emitTileClass(mul(from, c32(shape.blockN)))};
  auto scan = scf::WhileOp::create(
      b, loc, TypeRange{i32, i32, i32}, ValueRange{from, c32(0), c32(1)},
      [&](OpBuilder &nested, Location, ValueRange args) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value block = args[0];
        Value inRange = cmpi(arith::CmpIPredicate::slt, block, numBlocks);
        // Gaps (the keys before a window, between the sinks and the window,
        // other documents) are crossed kScanSpan blocks at a time: the tile
        // class of a span is 0 only if every block in it is empty. Not with
        // the mma.sync skeleton's 64-key tiles, whose registers are all
        // taken (ptxas would spill); the Hopper skeleton's consumers have
        // room, and its producer scans before any load starts.
        const bool spans = shape.blockN < 64 || shape.wgmma;
        auto ifInRange = scf::IfOp::create(b, loc, TypeRange{i32, i32},
                                           inRange, /*withElseRegion=*/true);
        {
          OpBuilder::InsertionGuard inner(b);
          b.setInsertionPointToStart(ifInRange.thenBlock());
          Value n0 = mul(block, c32(shape.blockN));
          Value step = c32(1);
          if (spans)
            step = select(
                cmpi(arith::CmpIPredicate::eq,
                     emitTileClass(n0, kScanSpan * shape.blockN), c32(0)),
                c32(kScanSpan), step);
          scf::YieldOp::create(b, loc, ValueRange{emitTileClass(n0), step});
          b.setInsertionPointToStart(ifInRange.elseBlock());
          scf::YieldOp::create(b, loc, ValueRange{c32(0), c32(1)});
        }
        Value tileClass = ifInRange.getResult(0);
        Value empty = cmpi(arith::CmpIPredicate::eq, tileClass, c32(0));
        scf::ConditionOp::create(
            b, loc, arith::AndIOp::create(b, loc, inRange, empty),
            ValueRange{block, tileClass, ifInRange.getResult(1)});
      },
      [&](OpBuilder &nested, Location, ValueRange args) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        scf::YieldOp::create(
            b, loc, ValueRange{add(args[0], args[2]), args[1], args[2]});
      });
  return {scan.getResult(0), scan.getResult(1)};
}

/// Finds this CTA's list of live key blocks (see GpuTileList).
void AttentionKernelEmitter::emitTileListStart(Value numBlocks) {
  bool perHead = !op.getTileClass().getArgument(1).use_empty();
  Value numListHeads = perHead ? arg(FixedParam::H) : c32(1);
  Value mTile = divu(m0, c32(shape.blockM));
  Value row = add(mul(add(mul(batch, numListHeads), perHead ? head : c32(0)),
                      ceilDiv(sizeM, shape.blockM)),
                  mTile);
  tileList = gep(arg(FixedParam::Tiles), i32,
                 mul(ext64(row), ext64(add(numBlocks, c32(1)))));
}

/// Entry `position` of the tile list: block·4 + class, or at its end
/// `numBlocks`·4, which ends the loop.
Value AttentionKernelEmitter::readTileList(Value position) {
  return LLVM::LoadOp::create(b, loc, i32, gep(tileList, i32, position), 4);
}

SmallVector<Value> AttentionKernelEmitter::emitBlockScores(Value n0,
                                                          Value tileClass) {
  return scoreBlock(multiplyKeys(), n0, tileClass);
}

/// S = Q Kᵀ with K in shared memory, on mma.sync.
SmallVector<Value> AttentionKernelEmitter::multiplyKeys() {
  const int64_t nTiles = shape.blockN / 8;
  // S = Q Kᵀ, one k-step of 16 at a time so that only that step's Q
  // fragments are live. ldmatrix.x4 on K rows 16 jp + 8 (l/16) + l%8,
  // columns 16 kk + 8 ((l/8) % 2) gives the B fragments of key tiles 2 jp
  // (regs 0, 1) and 2 jp + 1 (regs 2, 3); each feeds every row tile.
  Value kRow = add(arith::AndIOp::create(b, loc, lane, c32(7)),
                   mul(arith::ShRUIOp::create(b, loc, lane, c32(4)), c32(8)));
  Value kCol = mul(arith::AndIOp::create(
                       b, loc, arith::ShRUIOp::create(b, loc, lane, c32(3)),
                       c32(1)),
                   c32(8));
  Value kAddr = gep(smem, elementType,
                    add(c32(shape.kOffset()),
                        add(mul(kRow, c32(shape.qkPitch())), kCol)));
  SmallVector<Value> qk(4 * nTiles * shape.rowTiles(), cf(0.0));
  for (int64_t kk = 0; kk < shape.headDim / 16; ++kk) {
    SmallVector<SmallVector<Value, 4>> qf;
    for (int64_t t = 0; t < shape.rowTiles(); ++t)
      qf.push_back(getQFragment(t, kk));
    for (int64_t jp = 0; jp < nTiles / 2; ++jp) {
      SmallVector<Value, 4> kf = ldmatrix(
          gep(kAddr, elementType, c32(16 * jp * shape.qkPitch() + 16 * kk)),
          false);
      for (int64_t t = 0; t < shape.rowTiles(); ++t)
        for (int64_t half = 0; half < 2; ++half) {
          MutableArrayRef<Value> acc(
              qk.data() + 4 * (nTiles * t + 2 * jp + half), 4);
          llvm::copy(mma(qf[t], {kf[2 * half], kf[2 * half + 1]}, acc),
                     acc.begin());
        }
    }
  }

  return qk;
}

SmallVector<Value>
AttentionKernelEmitter::scoreBlock(ArrayRef<Value> qk, Value n0,
                                   Value tileClass, ArrayRef<Value> keepBits) {
  // Mask and score_mod; the mask is skipped on full tiles.
  SmallVector<Type> scoreTypes(qk.size(), f32);
  if (normalizer.hasKeptCount())
    scoreTypes.append(shape.ownedRows(), f32);
  auto evaluate = [&](bool full) {
    SmallVector<Value> kept;
    SmallVector<Value> results = emitScores(qk, n0, full, kept, keepBits);
    llvm::append_range(results, kept);
    return results;
  };
  return evaluateByClass(tileClass, scoreTypes, evaluate);
}

AttentionLoopState
AttentionKernelEmitter::emitBlockUpdate(ArrayRef<Value> scored,
                                        const AttentionLoopState &state) {
  AttentionLoopState next = state;
  SmallVector<Value> p = updateNormalizer(scored, next);
  accumulateValues(p, next);
  return next;
}

SmallVector<Value>
AttentionKernelEmitter::updateNormalizer(ArrayRef<Value> scored,
                                         AttentionLoopState &next,
                                         SmallVectorImpl<BlockShift> *shifts) {
  const AttentionLoopState state = next;
  const int64_t nTiles = shape.blockN / 8;
  const int64_t numScores = 4 * nTiles * shape.rowTiles();
  SmallVector<Value> p(scored.begin(), scored.begin() + numScores);
  // Score slots of owned row i = (row tile t, half r).
  auto pSlot = [&](int64_t i, int64_t j, int64_t c) {
    return 4 * (nTiles * (i / 2) + j) + 2 * (i % 2) + c;
  };

  // The block's kept counts (after the p operands) join the rows' counts.
  SmallVector<Value> keptCounts(shape.ownedRows());
  if (normalizer.hasKeptCount())
    for (int64_t i = 0; i < shape.ownedRows(); ++i)
      keptCounts[i] = normalizer.accumulate(b, loc, state.rows[i].keptCount,
                                            scored[numScores + i]);

  for (int64_t i = 0; i < shape.ownedRows(); ++i) {
    const NormalizerState &row = state.rows[i];
    Value blockMax;
    if (normalizer.hasMax()) {
      blockMax = negInf();
      for (int64_t j = 0; j < nTiles; ++j)
        for (int64_t c = 0; c < 2; ++c)
          blockMax = normalizer.maxOf(b, loc, blockMax, p[pSlot(i, j, c)]);
    }
    BlockShift shift = normalizer.beginBlock(b, loc, row, blockMax);
    Value sum;
    if (normalizer.hasSum())
      sum = normalizer.rescale(b, loc, row.sum, shift);
    for (int64_t j = 0; j < nTiles; ++j)
      for (int64_t c = 0; c < 2; ++c) {
        Value &x = p[pSlot(i, j, c)];
        x = normalizer.weight(b, loc, shift, x);
        if (sum)
          sum = normalizer.accumulate(b, loc, sum, x);
      }
    if (shifts)
      shifts->push_back(shift);
    else
      rescaleRow(next.acc, i, shift);
    next.rows[i] = normalizer.endBlock(shift, sum, keptCounts[i]);
  }
  return p;
}

void AttentionKernelEmitter::rescaleRow(MutableArrayRef<Value> acc, int64_t i,
                                        const BlockShift &shift) {
  const int64_t eTiles = shape.valueDim / 8;
  for (int64_t e = 0; e < eTiles; ++e)
    for (int64_t c = 0; c < 2; ++c) {
      Value &a = acc[4 * (eTiles * (i / 2) + e) + 2 * (i % 2) + c];
      a = normalizer.rescale(b, loc, a, shift);
    }
}

/// O += P V with V in shared memory, on mma.sync.
void AttentionKernelEmitter::accumulateValues(ArrayRef<Value> p,
                                              AttentionLoopState &next) {
  const int64_t nTiles = shape.blockN / 8;
  const int64_t eTiles = shape.valueDim / 8;

  // O += P V. P of keys 16 kk .. 16 kk + 15 is the A operand; ldmatrix.trans
  // on V rows 16 kk + l%16, columns 16 ep + 8 (l/16) gives the B fragments
  // of value columns 16 ep (regs 0, 1) and 16 ep + 8 (regs 2, 3), which feed
  // every row tile of the warp.
  Value vRow = arith::AndIOp::create(b, loc, lane, c32(15));
  Value vCol = mul(arith::ShRUIOp::create(b, loc, lane, c32(4)), c32(8));
  Value vAddr = gep(smem, elementType,
                    add(c32(shape.vOffset()),
                        add(mul(vRow, c32(shape.vPitch())), vCol)));
  for (int64_t kk = 0; kk < shape.blockN / 16; ++kk) {
    SmallVector<SmallVector<Value, 4>> a;
    for (int64_t t = 0; t < shape.rowTiles(); ++t) {
      const int64_t t0 = 4 * (nTiles * t + 2 * kk), t1 = t0 + 4;
      a.push_back({pack(p[t0], p[t0 + 1]), pack(p[t0 + 2], p[t0 + 3]),
                   pack(p[t1], p[t1 + 1]), pack(p[t1 + 2], p[t1 + 3])});
    }
    for (int64_t ep = 0; ep < shape.valueDim / 16; ++ep) {
      SmallVector<Value, 4> vf = ldmatrix(
          gep(vAddr, elementType, c32(16 * kk * shape.vPitch() + 16 * ep)),
          true);
      for (int64_t t = 0; t < shape.rowTiles(); ++t)
        for (int64_t half = 0; half < 2; ++half) {
          MutableArrayRef<Value> acc(
              next.acc.data() + 4 * (eTiles * t + 2 * ep + half), 4);
          llvm::copy(mma(a[t], {vf[2 * half], vf[2 * half + 1]}, acc),
                     acc.begin());
        }
    }
  }
}

//===----------------------------------------------------------------------===//
// Epilogue: normalise, store O and LSE.
//===----------------------------------------------------------------------===//

/// This thread's columns of accumulator row `i` times `factor`, as `type`:
/// one vector of two per 8-column tile (columns 8 e + 2 c4, + 1).
SmallVector<Value>
AttentionKernelEmitter::rowPairs(const AttentionLoopState &state, int64_t i,
                                 Value factor, Type type) {
  const int64_t eTiles = shape.valueDim / 8;
  auto pairType = VectorType::get({2}, f32);
  auto storedType = VectorType::get({2}, type);
  SmallVector<Value> pairs;
  for (int64_t e = 0; e < eTiles; ++e) {
    const int64_t slot = 4 * (eTiles * (i / 2) + e) + 2 * (i % 2);
    Value pair = vector::FromElementsOp::create(
        b, loc, pairType,
        ValueRange{mulf(state.acc[slot], factor),
                   mulf(state.acc[slot + 1], factor)});
    if (storedType != pairType)
      pair = arith::TruncFOp::create(b, loc, storedType, pair);
    pairs.push_back(pair);
  }
  return pairs;
}

/// Stores `pairs` (rowPairs) at `rowPtr`, this thread's first column: two
/// adjacent columns per store where `pairsAligned` holds, else one (an
/// output's base and row stride may be odd multiples of an element: the
/// store is then split, never misaligned). A condition known only at launch
/// stores both ways, one taken.
void AttentionKernelEmitter::storePairs(ArrayRef<Value> pairs, Value rowPtr,
                                        Type type, Value pairsAligned) {
  const int64_t elementBytes = type.getIntOrFloatBitWidth() / 8;
  auto store = [&](int64_t alignment) {
    for (auto [e, pair] : llvm::enumerate(pairs))
      LLVM::StoreOp::create(b, loc, pair, gep(rowPtr, type, c32(8 * e)),
                            alignment);
  };
  if (auto known = getConstantIntValue(pairsAligned)) {
    store(*known ? 2 * elementBytes : elementBytes);
    return;
  }
  auto ifAligned =
      scf::IfOp::create(b, loc, pairsAligned, /*withElseRegion=*/true);
  OpBuilder::InsertionGuard insertion(b);
  b.setInsertionPointToStart(ifAligned.thenBlock());
  store(2 * elementBytes);
  b.setInsertionPointToStart(ifAligned.elseBlock());
  store(elementBytes);
}

SmallVector<Value>
AttentionKernelEmitter::transposeQuadWords(ArrayRef<Value> pairs) {
  // Per group of four tiles, lane c4 of the quad holds word k of tile
  // 4 q + k (columns 2 c4, + 1 of it) and takes word c4 of each lane's
  // (all 8 columns of tile 4 q + c4): a 4 x 4 transpose of words, swapping
  // the off-diagonal halves between lanes 2 apart, then between
  // neighbours. Every lane of the warp takes part.
  Value high = cmpi(arith::CmpIPredicate::ne,
                    arith::AndIOp::create(b, loc, quadCol, c32(2)), c32(0));
  Value low = cmpi(arith::CmpIPredicate::ne,
                   arith::AndIOp::create(b, loc, quadCol, c32(1)), c32(0));
  // One exchange: the words of the slots whose bit differs from the lane's
  // go to the partner (lane ^ mask), whose own take their place.
  auto exchange = [&](std::array<Value, 4> w, Value bit, int64_t mask,
                      int64_t stride) {
    std::array<Value, 4> out = w;
    for (int64_t k = 0; k < 4; ++k) {
      if (k & stride)
        continue;
      // Slots k (bit 0) and k + stride (bit 1): the lane sends the one
      // whose bit is not its own.
      Value sent = select(bit, w[k], w[k + stride]);
      Value got = shuffleXor(sent, mask);
      out[k] = select(bit, got, w[k]);
      out[k + stride] = select(bit, w[k + stride], got);
    }
    return out;
  };
  SmallVector<Value> words;
  for (size_t q = 0; q + 4 <= pairs.size(); q += 4) {
    std::array<Value, 4> w;
    for (int64_t k = 0; k < 4; ++k)
      w[k] = LLVM::BitcastOp::create(b, loc, i32, pairs[q + k]);
    w = exchange(w, high, 2, 2);
    w = exchange(w, low, 1, 1);
    words.push_back(vector::FromElementsOp::create(
        b, loc, VectorType::get({4}, i32), ValueRange(w)));
  }
  return words;
}

Value AttentionKernelEmitter::outputAligned(int64_t bytes) {
  // Rows start `bytes`-aligned where O's base is and its strides (in
  // elements) are multiples of bytes / element.
  const int64_t elementBytes = outputType.getIntOrFloatBitWidth() / 8;
  Value strides = arith::OrIOp::create(
      b, loc, arg(FixedParam::OStrideB),
      arith::OrIOp::create(b, loc, arg(FixedParam::OStrideH),
                           arg(FixedParam::OStrideM)));
  Value address =
      LLVM::PtrToIntOp::create(b, loc, b.getI64Type(), arg(FixedParam::O));
  Value misaligned = arith::OrIOp::create(
      b, loc, arith::AndIOp::create(b, loc, address, c64(bytes - 1)),
      arith::AndIOp::create(b, loc, strides, c64(bytes / elementBytes - 1)));
  return cmpi(arith::CmpIPredicate::eq, misaligned, c64(0));
}

void AttentionKernelEmitter::emitEpilogue(const AttentionLoopState &state) {
  Value oBase = gep(arg(FixedParam::O), outputType,
                    add(mul(ext64(batch), arg(FixedParam::OStrideB)),
                        mul(ext64(head), arg(FixedParam::OStrideH))));
  // The Hopper kernel, which writes O once per tile of many, stores 16-bit
  // outputs 16 bytes per thread (8 adjacent columns, a quad's words
  // transposed) where the rows are 16-byte aligned, as the usual contiguous
  // layouts are: a quarter of the stores of pairs. Else (and in the
  // mma.sync kernels, whose registers hold no more without spills) in
  // pairs, else one column per store.
  const int64_t elementBytes = outputType.getIntOrFloatBitWidth() / 8;
  Value pairsAligned = outputAligned(2 * elementBytes);
  Value vectorsAligned;
  if (shape.wgmma && elementBytes == 2 && shape.valueDim % 32 == 0)
    vectorsAligned = outputAligned(16);
  for (int64_t i = 0; i < shape.ownedRows(); ++i) {
    Value row = add(m0, ownedRow(i));
    Value inRange = cmpi(arith::CmpIPredicate::slt, row, sizeM);
    NormalizerState rowState = normalizer.combineLanes(b, loc, state.rows[i]);
    Value sink;
    if (normalizer.hasSink()) {
      Value clamped = minsi(row, arith::SubIOp::create(b, loc, sizeM, c32(1)));
      Value offset = add(add(mul(ext64(batch), arg(FixedParam::SinkStrideB)),
                             mul(ext64(head), arg(FixedParam::SinkStrideH))),
                         mul(ext64(clamped), arg(FixedParam::SinkStrideM)));
      sink = LLVM::LoadOp::create(b, loc, f32,
                                  gep(arg(FixedParam::Sink), f32, offset),
                                  /*alignment=*/4);
    }
    Value factor = normalizer.getOutputFactor(b, loc, rowState, sink);
    if (!factor)
      factor = cf(1.0);
    Value lse;
    if (op.getLse())
      lse = normalizer.getStatistic(b, loc, rowState);

    Value rowBase =
        gep(oBase, outputType, mul(ext64(row), arg(FixedParam::OStrideM)));
    SmallVector<Value> pairs = rowPairs(state, i, factor, outputType);
    // Pairs (or single columns) in range; the lanes' shuffles of the
    // transposition stay outside the guard.
    auto storeInRange = [&](function_ref<void()> store) {
      auto ifRow = scf::IfOp::create(b, loc, inRange, /*withElseRegion=*/false);
      OpBuilder::InsertionGuard insertion(b);
      b.setInsertionPointToStart(ifRow.thenBlock());
      store();
    };
    auto storeAsPairs = [&] {
      storeInRange([&] {
        storePairs(pairs, gep(rowBase, outputType, ext64(mul(quadCol, c32(2)))),
                   outputType, pairsAligned);
      });
    };
    if (vectorsAligned) {
      auto ifVectors =
          scf::IfOp::create(b, loc, vectorsAligned, /*withElseRegion=*/true);
      OpBuilder::InsertionGuard insertion(b);
      b.setInsertionPointToStart(ifVectors.thenBlock());
      SmallVector<Value> words = transposeQuadWords(pairs);
      storeInRange([&] {
        for (auto [q, word] : llvm::enumerate(words)) {
          Value column = add(c32(32 * q), mul(quadCol, c32(8)));
          LLVM::StoreOp::create(b, loc, word,
                                gep(rowBase, outputType, ext64(column)), 16);
        }
      });
      b.setInsertionPointToStart(ifVectors.elseBlock());
      storeAsPairs();
    } else {
      storeAsPairs();
    }
    if (op.getLse()) {
      auto ifWriter = scf::IfOp::create(
          b, loc,
          arith::AndIOp::create(
              b, loc, inRange, cmpi(arith::CmpIPredicate::eq, quadCol, c32(0))),
          /*withElseRegion=*/false);
      OpBuilder::InsertionGuard insertion(b);
      b.setInsertionPointToStart(ifWriter.thenBlock());
      Value offset = add(add(mul(ext64(batch), arg(FixedParam::LseStrideB)),
                             mul(ext64(head), arg(FixedParam::LseStrideH))),
                         ext64(row));
      LLVM::StoreOp::create(b, loc, lse, gep(arg(FixedParam::Lse), f32, offset),
                            /*alignment=*/4);
    }
  }
}

/// Decode: this CTA's part of each of its packed rows, for the merge
/// kernel: the part finalized without the sink (softmax: O divided by the
/// part's own sum, and its LSE; `none`: the plain sums). Rows past the
/// problem are not stored (the workspace has room for them; the merge does
/// not read them): with a GQA group of 4 and one query, that is 12 of the 16
/// rows.
void AttentionKernelEmitter::emitPartials(const AttentionLoopState &state) {
  Value numKvHeads = arg(FixedParam::G);
  Value rowsPerSplit = ext64(mul(rowBlocks, c32(shape.blockM)));
  // Workspace row of this CTA's row 0: ((b G + g) S + split) RB 16 + m0.
  Value part = add(mul(add(mul(ext64(batch), ext64(numKvHeads)), ext64(kvHead)),
                       ext64(numSplits)),
                   ext64(split));
  Value firstRow = add(mul(part, rowsPerSplit), ext64(m0));
  Value numRows = mul(
      mul(mul(ext64(arg(FixedParam::B)), ext64(numKvHeads)), ext64(numSplits)),
      rowsPerSplit);
  Value partials = arg(FixedParam::Partials);
  for (int64_t i = 0; i < shape.ownedRows(); ++i) {
    // The shuffles of combineLanes stay outside the guard: all lanes take
    // part.
    NormalizerState rowState = normalizer.combineLanes(b, loc, state.rows[i]);
    auto ifRow = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::slt, add(m0, ownedRow(i)), rowLimit),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(ifRow.thenBlock());
    Value row = add(firstRow, ext64(ownedRow(i)));
    Value factor = normalizer.getOutputFactor(b, loc, rowState, Value());
    if (!factor)
      factor = cf(1.0);
    Value lse;
    if (normalizer.hasStatistic())
      lse = normalizer.getStatistic(b, loc, rowState);
    storePairs(
        rowPairs(state, i, factor, f32),
        gep(partials, f32,
            add(mul(row, c64(shape.valueDim)), ext64(mul(quadCol, c32(2))))),
        f32, /*pairsAligned=*/arith::ConstantIntOp::create(b, loc, 1, 1));
    if (lse) {
      auto ifWriter = scf::IfOp::create(
          b, loc, cmpi(arith::CmpIPredicate::eq, quadCol, c32(0)),
          /*withElseRegion=*/false);
      b.setInsertionPointToStart(ifWriter.thenBlock());
      Value offset = add(mul(numRows, c64(shape.valueDim)), row);
      LLVM::StoreOp::create(b, loc, lse, gep(partials, f32, offset),
                            /*alignment=*/4);
    }
  }
}

/// The key loop visits only live blocks and overlaps copies with math, as
/// FlashAttention-2 does: V of block j streams in while S = Q Kᵀ and the
/// mask run, and K of the next live block while the softmax and P V run.
/// Single K and V buffers suffice because each copy starts right after the
/// barrier that ends the reads of the buffer it overwrites.
void AttentionKernelEmitter::emit() {
  emitPrologue();

  AttentionLoopState init;
  const int64_t numRows = shape.ownedRows();
  init.acc.assign(4 * shape.rowTiles() * shape.valueDim / 8, cf(0.0));
  init.rows.assign(numRows, normalizer.getInitialState(b, loc, f32));
  const int64_t numAcc = init.acc.size();

  Value numBlocks = ceilDiv(sizeN, shape.blockN);
  // Decode: this CTA's split visits blocks [split P, split P + P), P =
  // ceil(blocks / splits).
  Value fromBlock = c32(0);
  if (shape.splitKeys) {
    Value perSplit = divu(add(numBlocks, sub(numSplits, c32(1))), numSplits);
    fromBlock = mul(split, perSplit);
    numBlocks = minsi(add(fromBlock, perSplit), numBlocks);
  }
  auto blockStart = [&](Value block) { return mul(block, c32(shape.blockN)); };
  // Starts the copy of K of `block` unless it is past the last block.
  auto prefetchKeys = [&](Value block) {
    auto guard = scf::IfOp::create(
        b, loc, cmpi(arith::CmpIPredicate::slt, block, numBlocks),
        /*withElseRegion=*/false);
    OpBuilder::InsertionGuard insertion(b);
    b.setInsertionPointToStart(guard.thenBlock());
    loadKeys(blockStart(block));
  };

  // The loop carries the block and its class, or with a tile list the
  // block's entry and place in the list (one register fewer).
  SmallVector<Value> carried;
  if (shape.tileList) {
    emitTileListStart(numBlocks);
    carried = {readTileList(c32(0)), c32(0)};
  } else {
    auto [block, tileClass] = findLiveBlock(fromBlock, numBlocks);
    carried = {block, tileClass};
  }
  const size_t numCursor = carried.size();
  auto blockOf = [&](ValueRange cursor) {
    return shape.tileList ? arith::ShRUIOp::create(b, loc, cursor[0], c32(2))
                          : cursor[0];
  };
  prefetchKeys(blockOf(carried));
  llvm::append_range(carried, init.flatten(normalizer));
  auto loop = scf::WhileOp::create(
      b, loc, TypeRange(ValueRange(carried)), carried,
      [&](OpBuilder &nested, Location, ValueRange args) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        scf::ConditionOp::create(
            b, loc, cmpi(arith::CmpIPredicate::slt, blockOf(args), numBlocks),
            args);
      },
      [&](OpBuilder &nested, Location, ValueRange args) {
        OpBuilder::InsertionGuard insertion(b);
        b.setInsertionPoint(nested.getInsertionBlock(),
                            nested.getInsertionPoint());
        Value block = blockOf(args);
        Value tileClass = shape.tileList
                              ? arith::AndIOp::create(b, loc, args[0], c32(3))
                              : args[1];
        AttentionLoopState state = AttentionLoopState::unflatten(args.drop_front(numCursor),
                                               numAcc, numRows, normalizer);
        Value n0 = blockStart(block);
        // K of this block has landed; no warp still reads V.
        waitForCopies();
        loadValues(n0);
        SmallVector<Value> scored = emitBlockScores(n0, tileClass);
        SmallVector<Value> next;
        if (shape.tileList) {
          Value position = add(args[1], c32(1));
          next = {readTileList(position), position};
        } else {
          auto [nextBlock, nextClass] =
              findLiveBlock(add(block, c32(1)), numBlocks);
          next = {nextBlock, nextClass};
        }
        // V has landed; no warp still reads K.
        waitForCopies();
        prefetchKeys(blockOf(next));
        SmallVector<Value> results = next;
        llvm::append_range(results,
                           emitBlockUpdate(scored, state).flatten(normalizer));
        scf::YieldOp::create(b, loc, results);
      });
  AttentionLoopState final = AttentionLoopState::unflatten(
      loop.getResults().drop_front(numCursor), numAcc, numRows, normalizer);
  if (shape.splitKeys)
    emitPartials(final);
  else
    emitEpilogue(final);
}

//===----------------------------------------------------------------------===//
// Entry points.
//===----------------------------------------------------------------------===//

/// Whether the score_mod and mask regions have at most kMaxLightScoreOps
/// operations, all from `dialects`.
static bool isShortScoreCode(AttentionOp op, ArrayRef<StringRef> dialects) {
  int64_t numOps = 0;
  bool allowed = true;
  for (Region *region : {&op.getScoreMod(), &op.getMask()})
    region->walk([&](Operation *nested) {
      if (isa<YieldOp>(nested))
        return;
      ++numOps;
      allowed &=
          llvm::is_contained(dialects, nested->getDialect()->getNamespace());
    });
  return allowed && numOps <= kMaxLightScoreOps;
}

/// Whether the variant's per-score code is light enough for 64-key tiles
/// with 32 query rows per warp: there the scores and the output accumulators
/// fill the register file, and anything per score that needs registers of
/// its own (reads of captured tensors, transcendental functions, the kept
/// counts of `normalize`, more than a few integer and float operations, and
/// an LSE output or sink logits)
/// makes ptxas spill inside the key loop. Calibrated with ptxas on the
/// examples: every variant this accepts assembles without spills.
static bool hasLightScoreCode(AttentionOp op) {
  // An LSE output or a sink keeps per-row values and pointers live too.
  if (op.getNormalizer() != Normalizer::Softmax || op.getLse() || op.getSink())
    return false;
  return isShortScoreCode(op, {"arith", "index"});
}

/// The operations the Hopper consumers run per score for `region` (a
/// score_mod or mask): those computed from `perScore`, its arguments that
/// vary from score to score (the query and key indices, the score), or
/// nullopt if one is outside arith, index and math, divides by a value that
/// is not a constant, or reads a tensor at a subscript that moves with them.
/// The rest (a head's ALiBi slope, a head's flag, N - M) is computed once per
/// tile and is not counted.
static std::optional<int64_t> countPerScoreOps(Region &region,
                                               ArrayRef<Value> perScore) {
  int64_t numOps = 0;
  bool allowed = true;
  // Values computed from `perScore`, in one walk: definitions come first.
  llvm::DenseSet<Value> varying(perScore.begin(), perScore.end());
  auto varies = [&](Value value) { return varying.contains(value); };
  region.walk<WalkOrder::PreOrder>([&](Operation *nested) {
    if (isa<YieldOp>(nested))
      return;
    if (llvm::any_of(nested->getOperands(), varies))
      varying.insert(nested->getResults().begin(), nested->getResults().end());
    // A read's operands: the tensor, then its subscripts.
    if (isa<ReadOp, tensor::ExtractOp>(nested)) {
      allowed &= llvm::none_of(nested->getOperands().drop_front(), varies);
      return;
    }
    if (llvm::none_of(nested->getResults(), varies))
      return;
    // An integer division by a value that is not a constant is a sequence
    // of some twenty instructions with temporaries of its own: with it
    // 128-key blocks spilled (ptxas, a mask (m - n) / stride * stride ==
    // m - n: 32 bytes).
    if (isa<arith::DivSIOp, arith::DivUIOp, arith::RemSIOp, arith::RemUIOp,
            arith::FloorDivSIOp, arith::CeilDivSIOp, arith::CeilDivUIOp>(
            nested) &&
        !matchPattern(nested->getOperand(1), m_Constant()))
      allowed = false;
    ++numOps;
    allowed &= llvm::is_contained({"arith", "index", "math"},
                                  nested->getDialect()->getNamespace());
  });
  if (!allowed)
    return std::nullopt;
  return numOps;
}

/// countPerScoreOps of an op's score_mod (arguments score, b, h, m, n) and
/// mask (b, h, m, n).
static std::optional<int64_t> countPerScoreOps(AttentionOp op, bool mask) {
  Region &region = mask ? op.getMask() : op.getScoreMod();
  ArrayRef<BlockArgument> args = region.getArguments();
  SmallVector<Value> perScore(args.take_back(2).begin(),
                              args.take_back(2).end());
  if (!mask)
    perScore.push_back(args.front());
  return countPerScoreOps(region, perScore);
}

/// The most operations of a mask the Hopper consumers evaluate beside the
/// scores, after S.
constexpr int64_t kMaxMaskOpsBesideScores = 6;

/// The most operations of a mask the Hopper consumers evaluate while S runs
/// (AttentionTileShape::maskBesideProduct).
constexpr int64_t kMaxMaskOpsBesideProduct = 24;

/// The Hopper kernel's keys per block and where its mask is evaluated. The
/// consumers' 232 registers hold the scores of 128 keys beside the output
/// accumulators and the weights P V reads where the per-score code after S
/// is short: at most kMaxLightScoreOps operations (transcendental functions
/// included: each result dies at once), whatever the normalizer, LSE and
/// sink. A longer mask of index arithmetic (a window with sinks, a per-head
/// flag) is evaluated while S runs, into one bit per score, so that only
/// the bits are live beside the scores. Masks that read tensors per key or
/// query (documents, labels, block maps) keep 64-key blocks: evaluated
/// beside the product they fit 128 keys too, but were slower at 1k and 4k
/// (document, H200). Calibrated with ptxas on the examples: each choice
/// assembles without spills.
static void chooseWgmmaKeys(AttentionOp op, AttentionTileShape &shape) {
  std::optional<int64_t> scoreOps = countPerScoreOps(op, /*mask=*/false);
  std::optional<int64_t> maskOps = countPerScoreOps(op, /*mask=*/true);
  shape.blockN = 64;
  if (!scoreOps || *scoreOps > kMaxLightScoreOps || !maskOps)
    return;
  if (*scoreOps + *maskOps <= kMaxLightScoreOps &&
      *maskOps <= kMaxMaskOpsBesideScores) {
    shape.blockN = 128;
  } else if (*maskOps <= kMaxMaskOpsBesideProduct) {
    shape.blockN = 128;
    shape.maskBesideProduct = true;
  }
}

/// Keys per iteration when the options leave it open: 64 feeds the tensor
/// cores best (about 8% faster than 32 on causal attention, H100); 32 when
/// 64 would spill.
static int64_t chooseBlockN(AttentionOp op, const GpuOptions &options) {
  if (options.blockN)
    return options.blockN;
  // ptxas for sm_8x needs a few more registers for the same code.
  bool hopper = StringRef(options.chip).starts_with("sm_9");
  if (options.warpRows == 16 || (hopper && hasLightScoreCode(op)))
    return 64;
  return 32;
}

/// The Hopper kernel's tiles: 128 rows (two consumer warp groups), 128 keys
/// where they fit (chooseWgmmaKeys), else 64 (the scores and the output
/// accumulators share the consumers' 232 registers).
static AttentionTileShape getWgmmaTileShape(AttentionOp op) {
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  AttentionTileShape shape{128, 64, query.getDimSize(3), value.getDimSize(3),
                           16};
  shape.wgmma = true;
  chooseWgmmaKeys(op, shape);
  return shape;
}

static AttentionTileShape getTileShape(AttentionOp op, const GpuOptions &options) {
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  return {options.blockM, chooseBlockN(op, options), query.getDimSize(3),
          value.getDimSize(3), options.warpRows};
}

/// The decode kernel: one warp of 16 packed rows, 64 keys per iteration
/// (registers are plentiful with one row tile).
static AttentionTileShape getDecodeTileShape(AttentionOp op) {
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  return {kDecodeRows,         kDecodeKeys, query.getDimSize(3),
          value.getDimSize(3), kDecodeRows, /*splitKeys=*/true};
}

bool mlir::attn::supportsGpuDecode(AttentionOp op) {
  return op.getNormalizer() != Normalizer::Normalize;
}

int64_t mlir::attn::getAttentionBlockN(AttentionOp op,
                                       const GpuOptions &options) {
  return chooseBlockN(op, options);
}

int64_t mlir::attn::getAttentionThreadsPerBlock(const GpuOptions &options) {
  return 32 * options.blockM / options.warpRows;
}

int64_t mlir::attn::getAttentionSharedMemoryBytes(AttentionOp op,
                                                  const GpuOptions &options) {
  return 2 * getTileShape(op, options).sharedElements();
}

int64_t mlir::attn::getDecodeSharedMemoryBytes(AttentionOp op) {
  return 2 * getDecodeTileShape(op).sharedElements();
}

LogicalResult mlir::attn::checkGpuSupport(AttentionOp op,
                                          const GpuOptions &options) {
  if (options.blockM != 64 && options.blockM != 128)
    return op.emitError() << "attn-nvgpu: block-m must be 64 or 128";
  if (options.blockN != 0 && options.blockN != 32 && options.blockN != 64)
    return op.emitError() << "attn-nvgpu: block-n must be 32, 64 or 0 (chosen "
                             "per variant)";
  if ((options.warpRows != 16 && options.warpRows != 32) ||
      options.warpRows > options.blockM / 2)
    return op.emitError() << "attn-nvgpu: warp-rows must be 16 or 32, and "
                             "at most half of block-m";
  if (options.outputElementType != "f32" &&
      options.outputElementType != "bf16" &&
      options.outputElementType != "f16")
    return op.emitError() << "attn-nvgpu: the output element type must be "
                             "f32, bf16 or f16, got '"
                          << options.outputElementType << "'";
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto key = cast<RankedTensorType>(op.getKey().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  Type element = query.getElementType();
  if (!element.isBF16() && !element.isF16())
    return op.emitError() << "attn-nvgpu: Q, K and V must hold bf16 or f16, "
                             "got "
                          << element;
  if (key.getElementType() != element || value.getElementType() != element)
    return op.emitError() << "attn-nvgpu: Q, K and V must share one element "
                             "type";
  int64_t d = query.getDimSize(3), e = value.getDimSize(3);
  if (ShapedType::isDynamic(d) || ShapedType::isDynamic(e))
    return op.emitError() << "attn-nvgpu: the head dims D and E must be "
                             "static";
  if (d % 32 != 0 || d > 256 || e % 16 != 0 || e > 256)
    return op.emitError() << "attn-nvgpu: needs D a multiple of 32 and E a "
                             "multiple of 16, both at most 256; got D = "
                          << d << ", E = " << e;
  return success();
}

/// The element type O is stored with (GpuOptions::outputElementType).
static Type getOutputElementType(OpBuilder &builder,
                                 const GpuOptions &options) {
  if (options.outputElementType == "bf16")
    return builder.getBF16Type();
  if (options.outputElementType == "f16")
    return builder.getF16Type();
  return builder.getF32Type();
}

static Type getOperandElementType(AttentionOp op) {
  return cast<RankedTensorType>(op.getQuery().getType()).getElementType();
}

static LogicalResult addAttention(KernelModuleBuilder &kernels,
                                  AttentionOp op, const GpuOptions &options,
                                  const Twine &name, const AttentionTileShape &shape) {
  OpBuilder &builder = kernels.getBuilder();
  return kernels.addRegionKernel(
      name, shape.numThreads(),
      [&](ValueRange args, const IRMapping &captures) {
        AttentionKernelEmitter(builder, op.getLoc(), op, shape,
                      getOperandElementType(op),
                      getOutputElementType(builder, options), args, captures)
            .emit();
      });
}

static LogicalResult addTileList(KernelModuleBuilder &kernels, AttentionOp op,
                                 const Twine &name, const AttentionTileShape &shape) {
  OpBuilder &builder = kernels.getBuilder();
  return kernels.addRegionKernel(
      name, 32, [&](ValueRange args, const IRMapping &captures) {
        emitTileList(builder, op.getLoc(), op, shape.blockM, shape.blockN,
                     args, captures);
      });
}

FailureOr<gpu::GPUModuleOp> mlir::attn::buildAttentionGpuModule(
    OpBuilder &builder, AttentionOp op, const GpuOptions &options,
    StringRef moduleName, StringRef kernelName, GpuKernelSignature &signature) {
  if (failed(checkGpuSupport(op, options)))
    return failure();
  KernelModuleBuilder kernels(builder, op, signature);
  FailureOr<gpu::GPUModuleOp> module = kernels.create(moduleName);
  if (failed(module))
    return failure();
  AttentionTileShape shape = getTileShape(op, options);
  if (usesGpuTileList(op)) {
    shape.tileList = true;
    if (failed(addTileList(kernels, op, kernelName + "_tiles", shape)))
      return failure();
    // The Hopper kernel's list, for its tiles (see buildWgmmaGpuModule).
    if (buildsWgmmaAttention(op, options) &&
        failed(addTileList(kernels, op, kernelName + "_wgmma_tiles",
                           getWgmmaTileShape(op))))
      return failure();
  }
  if (failed(addAttention(kernels, op, options, kernelName, shape)))
    return failure();
  return module;
}

bool mlir::attn::buildsWgmmaAttention(AttentionOp op,
                                      const GpuOptions &options) {
  return options.usesWgmma() && supportsWgmmaAttention(op);
}

bool mlir::attn::supportsWgmmaAttention(AttentionOp op) {
  auto query = cast<RankedTensorType>(op.getQuery().getType());
  auto value = cast<RankedTensorType>(op.getValue().getType());
  auto fits = [](int64_t dim) { return dim == 64 || dim == 128; };
  return fits(query.getDimSize(3)) && fits(value.getDimSize(3));
}

FailureOr<gpu::GPUModuleOp> mlir::attn::buildWgmmaGpuModule(
    OpBuilder &builder, AttentionOp op, const GpuOptions &options,
    StringRef moduleName, StringRef kernelName, GpuWgmmaKernel &kernel) {
  if (failed(checkGpuSupport(op, options)))
    return failure();
  if (!supportsWgmmaAttention(op))
    return op.emitError() << "attn-nvgpu: no Hopper kernel for this "
                             "attention (it needs D and E of 64 or 128)";
  KernelModuleBuilder kernels(builder, op, kernel.signature);
  FailureOr<gpu::GPUModuleOp> module =
      kernels.create(moduleName, kWgmmaTensorMaps, {"tile_counter"});
  if (failed(module))
    return failure();
  AttentionTileShape shape = getWgmmaTileShape(op);
  kernel.kernelName = (kernelName + "_wgmma").str();
  // Its own list of live blocks, for its tiles, listed by a kernel of the
  // mma.sync module (buildAttentionGpuModule), whose parameters have no
  // tensor maps.
  if (usesGpuTileList(op)) {
    shape.tileList = true;
    kernel.tileList =
        GpuTileList{kernel.kernelName + "_tiles", shape.blockM, shape.blockN,
                    !op.getTileClass().getArgument(1).use_empty()};
  }
  kernel.blockM = shape.blockM;
  kernel.blockN = shape.blockN;
  kernel.threads = shape.numThreads();
  kernel.sharedMemoryBytes = getWgmmaSharedMemoryBytes(shape);
  if (failed(kernels.addRegionKernel(
          kernel.kernelName, shape.numThreads(),
          [&](ValueRange args, const IRMapping &captures) {
            AttentionKernelEmitter(builder, op.getLoc(), op, shape,
                                   getOperandElementType(op),
                                   getOutputElementType(builder, options),
                                   args, captures)
                .emitWgmma();
          },
          // The mma.sync and decode kernels keep the clamps: without them
          // ptxas spilled 8 bytes in block_sparse's sm_80 decode kernel.
          /*trustInRangeReads=*/true)))
    return failure();
  return module;
}

FailureOr<gpu::GPUModuleOp> mlir::attn::buildDecodeGpuModule(
    OpBuilder &builder, AttentionOp op, const GpuOptions &options,
    StringRef moduleName, StringRef kernelName, GpuKernelSignature &signature) {
  if (!supportsGpuDecode(op))
    return op.emitError() << "attn-nvgpu: no decode kernel for `normalize` "
                             "(its parts do not merge through a "
                             "log-sum-exp)";
  if (failed(checkGpuSupport(op, options)))
    return failure();
  KernelModuleBuilder kernels(builder, op, signature);
  FailureOr<gpu::GPUModuleOp> module = kernels.create(moduleName);
  if (failed(module) ||
      failed(addAttention(kernels, op, options, kernelName + "_decode",
                          getDecodeTileShape(op))))
    return failure();
  gpu::GPUFuncOp merge =
      kernels.createKernel(kernelName + "_merge", kMergeThreads);
  OpBuilder::InsertionGuard insertion(builder);
  builder.setInsertionPointToStart(&merge.getBody().front());
  emitDecodeMerge(builder, op.getLoc(), op,
                  getOutputElementType(builder, options),
                  merge.getBody().front().getArguments());
  gpu::ReturnOp::create(builder, op.getLoc());
  return module;
}
