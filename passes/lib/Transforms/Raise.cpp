//===- Raise.cpp - Cascades to attn.attention -----------------------------===//
//
// attn-raise walks the top level of an attn.kernel looking for the shape
//
//   S  = einsum<sum>[b,h,m,n] reduce [d] (Q[b,h,m,d] * K[b,g,n,d])
//   S' = (elementwise einsums over S | keeps of S)*
//   P  = softmax[n](S' [, sink]) | normalize[n](S'') | S'
//   O  = einsum<sum>[b,h,m,e] reduce [n] (P[b,h,m,n] * V[b,g,n,e])
//   L  = einsum<logsumexp>[b,h,m] reduce [n] (S')        (optional)
//
// and replaces it with one attn.attention. The matcher is deliberately
// strict: every subscript, extent and use is checked, because the fused op
// materialises none of the intermediate tensors and reads Q, K and V through
// its own fixed index map. Whatever does not fit stays as it is, with a
// remark saying why.
//
//===----------------------------------------------------------------------===//

#include "attn/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/Matchers.h"
#include "llvm/ADT/SetVector.h"

namespace mlir::attn {
#define GEN_PASS_DEF_ATTNRAISE
#include "attn/Transforms/Passes.h.inc"
} // namespace mlir::attn

using namespace mlir;
using namespace mlir::attn;

namespace mlir::attn {
namespace {

/// How the key/value head is derived from the query head.
enum class HeadMap {
  /// K[b, h, n, d]: as many key heads as query heads.
  Same,
  /// K[b, h floordiv (H floordiv G), n, d]: grouped-query heads.
  Grouped,
  /// K[b, n, d]: one key head shared by every query head.
  Shared,
};

/// One recognised cascade, everything needed to build the attention.
struct Cascade {
  EinsumOp scores;
  BlockArgument query, key, value;
  HeadMap headMap = HeadMap::Same;
  /// For HeadMap::Grouped, the H and G of `h floordiv (H floordiv G)`.
  Value groupHeads, groupKeyHeads;
  /// Elementwise einsums and keeps between the scores and the normalizer,
  /// in program order.
  SmallVector<Operation *> chain;
  /// The factor `c` of a leading `S * c` folded into `scale`, if any.
  Value scaleFactor;
  Operation *scaleMul = nullptr;
  /// SoftmaxOp, NormalizeOp or null (normalizer none).
  Operation *normalizer = nullptr;
  Value sink;
  EinsumOp output;
  EinsumOp lse;
};

/// Why a cascade was not raised, for the remark.
using Reason = std::string;

/// The value before an optional arith.extf.
static Value peelExtF(Value value) {
  if (auto ext = value.getDefiningOp<arith::ExtFOp>())
    return ext.getIn();
  return value;
}

/// Whether `value` is the `i`th argument of `block`.
static bool isArg(Value value, Block &block, unsigned i) {
  return value == block.getArgument(i);
}

/// Whether `value` (inside a body) depends on an attn.read.
static bool dependsOnRead(Value value) {
  SmallVector<Value> worklist{value};
  DenseSet<Value> seen;
  while (!worklist.empty()) {
    Value v = worklist.pop_back_val();
    if (!seen.insert(v).second)
      continue;
    Operation *def = v.getDefiningOp();
    if (!def)
      continue;
    if (isa<ReadOp>(def))
      return true;
    llvm::append_range(worklist, def->getOperands());
  }
  return false;
}

/// Whether tensor `value` may have absent entries (docs/cascade-ir.md):
/// then a read of it in a score_mod or mask would change meaning.
static bool mayHaveAbsent(Value value) {
  Operation *def = value.getDefiningOp();
  if (!def)
    return false;
  if (isa<KeepOp>(def))
    return true;
  if (auto softmax = dyn_cast<SoftmaxOp>(def))
    return mayHaveAbsent(softmax.getInput());
  if (auto normalize = dyn_cast<NormalizeOp>(def))
    return mayHaveAbsent(normalize.getInput());
  if (isa<AttentionOp>(def))
    return false;
  if (auto einsum = dyn_cast<EinsumOp>(def)) {
    if (einsum.getKind() != ReductionKind::None)
      return false;
    bool absent = false;
    einsum.getBodyBlock().walk(
        [&](ReadOp read) { absent |= mayHaveAbsent(read.getTensor()); });
    return absent;
  }
  return true;
}

/// Recognises one cascade at a time, starting from its scores einsum.
class CascadeMatcher {
public:
  explicit CascadeMatcher(KernelOp kernel) : kernel(kernel) {}

  /// Whether `op` looks like the scores einsum of an attention (a sum over
  /// four indices and one reduced index of a product of two kernel-input
  /// reads); only those get a remark when they do not raise.
  bool isCandidate(EinsumOp op);
  /// Matches the cascade whose scores einsum is `op`; on failure `op` is
  /// where the remark goes and `reason` says why.
  FailureOr<Cascade> match(EinsumOp op, Reason &reason);

private:
  std::optional<unsigned> getInputIndex(Value value);
  bool isExtentOfAxis(Value extent, Value tensor, unsigned axis);
  LogicalResult matchHeadRead(ReadOp read, Block &body, unsigned nArg,
                              unsigned xArg, StringRef what, HeadMap &map,
                              Value &heads, Value &keyHeads, Reason &reason);
  LogicalResult matchScores(Cascade &c, Reason &reason);
  LogicalResult matchChain(Cascade &c, Reason &reason);
  LogicalResult matchOutput(Cascade &c, EinsumOp op, Value weights,
                            Reason &reason);
  bool isLseOf(EinsumOp op, Value scores);
  LogicalResult checkCapturedReads(Block &body, Value chainTensor,
                                   bool chainReadAllowed, StringRef what,
                                   Reason &reason);
  void matchScaleFactor(Cascade &c, EinsumOp first);

  KernelOp kernel;
  /// Extents of the scores einsum: B, H, M, N, D.
  SmallVector<Value, 5> extents;
};

std::optional<unsigned> CascadeMatcher::getInputIndex(Value value) {
  auto arg = dyn_cast<BlockArgument>(value);
  if (!arg || arg.getOwner() != &kernel.getEntryBlock())
    return std::nullopt;
  unsigned number = arg.getArgNumber();
  if (number < kernel.getNumDims() ||
      number >= kernel.getNumDims() + kernel.getNumInputs())
    return std::nullopt;
  return number - kernel.getNumDims();
}

/// Whether the kernel-level index `extent` is the size of axis `axis` of
/// kernel input `tensor`, as the kernel's `shapes` declare it. The fused op
/// iterates over its operands' full axes, so the cascade must too.
bool CascadeMatcher::isExtentOfAxis(Value extent, Value tensor, unsigned axis) {
  std::optional<unsigned> input = getInputIndex(tensor);
  if (!input)
    return false;
  ArrayAttr shape = kernel.getShapeOf(*input);
  if (axis >= shape.size())
    return false;
  Attribute entry = shape[axis];
  if (auto name = dyn_cast<StringAttr>(entry)) {
    std::optional<unsigned> dim = kernel.lookupDim(name.getValue());
    return dim && kernel.getDimArg(*dim) == extent;
  }
  auto size = dyn_cast<IntegerAttr>(entry);
  if (!size)
    return false;
  APInt constant;
  if (matchPattern(extent, m_ConstantInt(&constant)))
    return constant.getSExtValue() == size.getInt();
  for (unsigned i = 0; i < kernel.getNumDims(); ++i)
    if (kernel.getDimArg(i) == extent)
      return kernel.getDimSizes()[i] == size.getInt();
  return false;
}

/// Whether `read` reads `tensor` at exactly the arguments `args` of `body`.
static bool readsAt(ReadOp read, Value tensor, Block &body,
                    ArrayRef<unsigned> args) {
  if (read.getTensor() != tensor || read.getSubscripts().size() != args.size())
    return false;
  for (auto [subscript, arg] : llvm::zip(read.getSubscripts(), args))
    if (!isArg(subscript, body, arg))
      return false;
  return true;
}

bool CascadeMatcher::isCandidate(EinsumOp op) {
  if (op.getKind() != ReductionKind::Sum || op.getNumOutputIndices() != 4 ||
      op.getNumReducedIndices() != 1)
    return false;
  auto mul = op.getYieldedValue().getDefiningOp<arith::MulFOp>();
  if (!mul)
    return false;
  auto lhs = peelExtF(mul.getLhs()).getDefiningOp<ReadOp>();
  auto rhs = peelExtF(mul.getRhs()).getDefiningOp<ReadOp>();
  return lhs && rhs && getInputIndex(lhs.getTensor()) &&
         getInputIndex(rhs.getTensor());
}

/// Matches a read of K or V: [b, head, n, x], or [b, n, x] for a shared
/// head, where n and x are the body arguments `nArg` and `xArg`.
LogicalResult CascadeMatcher::matchHeadRead(ReadOp read, Block &body,
                                            unsigned nArg, unsigned xArg,
                                            StringRef what, HeadMap &map,
                                            Value &heads, Value &keyHeads,
                                            Reason &reason) {
  ValueRange subs = read.getSubscripts();
  for (auto [i, sub] : llvm::enumerate(subs))
    if (dependsOnRead(sub)) {
      reason = (what + " is read through a gather (subscript " + Twine(i) +
                " depends on a tensor read)")
                   .str();
      return failure();
    }
  auto bad = [&](unsigned i, StringRef expected) {
    reason = (what + " subscript " + Twine(i) + " is not " + expected).str();
    return failure();
  };
  if (subs.size() == 3) {
    map = HeadMap::Shared;
    if (!isArg(subs[0], body, 0))
      return bad(0, "the batch index");
    if (!isArg(subs[1], body, nArg))
      return bad(1, "the key index");
    if (!isArg(subs[2], body, xArg))
      return bad(2, "the head-dim index");
    return success();
  }
  if (subs.size() != 4) {
    reason = (what + " has rank " + Twine(subs.size()) + ", not 3 or 4").str();
    return failure();
  }
  if (!isArg(subs[0], body, 0))
    return bad(0, "the batch index");
  if (!isArg(subs[2], body, nArg))
    return bad(2, "the key index");
  if (!isArg(subs[3], body, xArg))
    return bad(3, "the head-dim index");
  if (isArg(subs[1], body, 1)) {
    map = HeadMap::Same;
    return success();
  }
  auto outer = subs[1].getDefiningOp<arith::FloorDivSIOp>();
  auto inner =
      outer ? outer.getRhs().getDefiningOp<arith::FloorDivSIOp>() : nullptr;
  if (!outer || !inner || !isArg(outer.getLhs(), body, 1))
    return bad(1, "the query head h or h / (H / G)");
  map = HeadMap::Grouped;
  heads = inner.getLhs();
  keyHeads = inner.getRhs();
  return success();
}

LogicalResult CascadeMatcher::matchScores(Cascade &c, Reason &reason) {
  EinsumOp op = c.scores;
  Block &body = op.getBodyBlock();
  llvm::append_range(extents, op.getExtents());
  auto mul = op.getYieldedValue().getDefiningOp<arith::MulFOp>();
  ReadOp reads[2] = {peelExtF(mul.getLhs()).getDefiningOp<ReadOp>(),
                     peelExtF(mul.getRhs()).getDefiningOp<ReadOp>()};
  // The query is the operand read at [b, h, m, d].
  int queryAt = -1;
  for (int i = 0; i < 2; ++i)
    if (readsAt(reads[i], reads[i].getTensor(), body, {0, 1, 2, 4}))
      queryAt = i;
  if (queryAt < 0) {
    reason = "neither operand of the scores product is a query read at "
             "[b, h, m, d]";
    return failure();
  }
  ReadOp queryRead = reads[queryAt], keyRead = reads[1 - queryAt];
  c.query = cast<BlockArgument>(queryRead.getTensor());
  c.key = cast<BlockArgument>(keyRead.getTensor());
  if (failed(matchHeadRead(keyRead, body, 3, 4, "the key", c.headMap,
                           c.groupHeads, c.groupKeyHeads, reason)))
    return failure();

  auto floatTensor = [](Value v) {
    return isa<FloatType>(cast<RankedTensorType>(v.getType()).getElementType());
  };
  if (!floatTensor(c.query) || !floatTensor(c.key)) {
    reason = "the query or the key does not hold floats";
    return failure();
  }
  // Every index must range over the full axis it subscripts.
  Value B = extents[0], H = extents[1], M = extents[2], N = extents[3],
        D = extents[4];
  bool shared = c.headMap == HeadMap::Shared;
  unsigned kN = shared ? 1 : 2, kD = shared ? 2 : 3;
  if (!isExtentOfAxis(B, c.query, 0) || !isExtentOfAxis(H, c.query, 1) ||
      !isExtentOfAxis(M, c.query, 2) || !isExtentOfAxis(D, c.query, 3)) {
    reason = "the extents of b, h, m, d are not the query's axes";
    return failure();
  }
  if (!isExtentOfAxis(B, c.key, 0) || !isExtentOfAxis(N, c.key, kN) ||
      !isExtentOfAxis(D, c.key, kD)) {
    reason = "the extents of b, n, d are not the key's axes (n ranges over "
             "part of the keys)";
    return failure();
  }
  if (c.headMap == HeadMap::Same && !isExtentOfAxis(H, c.key, 1)) {
    reason = "the key is read at head h but its head axis is not the "
             "query's";
    return failure();
  }
  if (c.headMap == HeadMap::Grouped &&
      (c.groupHeads != H || !isExtentOfAxis(c.groupKeyHeads, c.key, 1))) {
    reason = "the key head is h / (X / Y) with X, Y not the query and key "
             "head counts";
    return failure();
  }
  return success();
}

/// Reads in bodies that move into score_mod or mask are evaluated by the
/// fused op at points the cascade may never have visited, and absent
/// entries have no meaning there: allow only tensors without absent entries
/// and never the cascade's own intermediates.
LogicalResult CascadeMatcher::checkCapturedReads(Block &body, Value chainTensor,
                                                 bool chainReadAllowed,
                                                 StringRef what,
                                                 Reason &reason) {
  WalkResult result = body.walk([&](ReadOp read) {
    Value tensor = read.getTensor();
    if (tensor == chainTensor) {
      if (chainReadAllowed)
        return WalkResult::advance();
      reason = (what + " reads the scores it applies to").str();
      return WalkResult::interrupt();
    }
    if (mayHaveAbsent(tensor)) {
      reason = (what + " reads a tensor that may have absent entries").str();
      return WalkResult::interrupt();
    }
    return WalkResult::advance();
  });
  return failure(result.wasInterrupted());
}

/// Whether `op` is a logsumexp over n of `scores` at [b, h, m, n].
bool CascadeMatcher::isLseOf(EinsumOp op, Value scores) {
  if (op.getKind() != ReductionKind::LogSumExp ||
      op.getNumOutputIndices() != 3 || op.getNumReducedIndices() != 1)
    return false;
  ValueRange e = op.getExtents();
  if (e[0] != extents[0] || e[1] != extents[1] || e[2] != extents[2] ||
      e[3] != extents[3])
    return false;
  auto read = op.getYieldedValue().getDefiningOp<ReadOp>();
  return read && readsAt(read, scores, op.getBodyBlock(), {0, 1, 2, 3});
}

/// A leading `S * c` with `c` independent of the indices becomes the
/// scale operand, so that backends can fold it into Q.
void CascadeMatcher::matchScaleFactor(Cascade &c, EinsumOp first) {
  Block &body = first.getBodyBlock();
  Value scores = c.scores.getResult();
  ReadOp scoreRead;
  for (Operation &op : body)
    if (auto read = dyn_cast<ReadOp>(op); read && read.getTensor() == scores) {
      if (scoreRead)
        return;
      scoreRead = read;
    }
  if (!scoreRead || !scoreRead->hasOneUse())
    return;
  auto mul = dyn_cast<arith::MulFOp>(*scoreRead->user_begin());
  if (!mul)
    return;
  Value factor =
      mul.getLhs() == scoreRead.getResult() ? mul.getRhs() : mul.getLhs();
  if (factor == scoreRead.getResult())
    return;
  // The factor's slice in the body must use no index and no read.
  SmallVector<Value> worklist{factor};
  DenseSet<Value> seen;
  while (!worklist.empty()) {
    Value v = worklist.pop_back_val();
    if (!seen.insert(v).second)
      continue;
    if (auto arg = dyn_cast<BlockArgument>(v)) {
      if (arg.getOwner() == &body)
        return;
      continue;
    }
    Operation *def = v.getDefiningOp();
    if (!body.findAncestorOpInBlock(*def))
      continue;
    if (isa<ReadOp>(def) || def->getNumRegions() != 0 ||
        def->getNumResults() != 1)
      return;
    llvm::append_range(worklist, def->getOperands());
  }
  c.scaleFactor = factor;
  c.scaleMul = mul;
}

LogicalResult CascadeMatcher::matchOutput(Cascade &c, EinsumOp op,
                                          Value weights, Reason &reason) {
  if (op.getKind() != ReductionKind::Sum || op.getNumOutputIndices() != 4 ||
      op.getNumReducedIndices() != 1) {
    reason = "the weights are not consumed by a sum over n into [b, h, m, e]";
    return failure();
  }
  Block &body = op.getBodyBlock();
  ValueRange e = op.getExtents();
  if (e[0] != extents[0] || e[1] != extents[1] || e[2] != extents[2] ||
      e[4] != extents[3]) {
    reason = "the weighted sum's extents are not (B, H, M, E, N)";
    return failure();
  }
  auto mul = op.getYieldedValue().getDefiningOp<arith::MulFOp>();
  ReadOp lhs = mul ? peelExtF(mul.getLhs()).getDefiningOp<ReadOp>() : nullptr;
  ReadOp rhs = mul ? peelExtF(mul.getRhs()).getDefiningOp<ReadOp>() : nullptr;
  if (!lhs || !rhs) {
    reason = "the weighted sum is not a product of two reads";
    return failure();
  }
  // The weights are f32 cascade tensors, read without extf.
  ReadOp weightRead, valueRead;
  if (mul.getLhs() == lhs.getResult() &&
      readsAt(lhs, weights, body, {0, 1, 2, 4})) {
    weightRead = lhs;
    valueRead = rhs;
  } else if (mul.getRhs() == rhs.getResult() &&
             readsAt(rhs, weights, body, {0, 1, 2, 4})) {
    weightRead = rhs;
    valueRead = lhs;
  }
  if (!weightRead) {
    reason = "the weighted sum does not read the weights at [b, h, m, n]";
    return failure();
  }
  if (valueRead.getTensor() == weights) {
    reason = "the weighted sum reads the weights twice";
    return failure();
  }
  std::optional<unsigned> input = getInputIndex(valueRead.getTensor());
  if (!input ||
      !isa<FloatType>(cast<RankedTensorType>(valueRead.getTensor().getType())
                          .getElementType())) {
    reason = "the value tensor is not a float kernel input";
    return failure();
  }
  c.value = cast<BlockArgument>(valueRead.getTensor());
  HeadMap map;
  Value heads, keyHeads;
  if (failed(matchHeadRead(valueRead, body, 4, 3, "the value", map, heads,
                           keyHeads, reason)))
    return failure();
  if (map != c.headMap || heads != c.groupHeads ||
      keyHeads != c.groupKeyHeads) {
    reason = "the value's head is not derived like the key's";
    return failure();
  }
  bool shared = map == HeadMap::Shared;
  unsigned vN = shared ? 1 : 2, vE = shared ? 2 : 3;
  if (!isExtentOfAxis(extents[0], c.value, 0) ||
      !isExtentOfAxis(extents[3], c.value, vN) ||
      !isExtentOfAxis(e[3], c.value, vE)) {
    reason = "the extents of b, n, e are not the value's axes";
    return failure();
  }
  if (!shared) {
    std::optional<unsigned> keyInput = getInputIndex(c.key);
    Attribute keyHeadAxis = kernel.getShapeOf(*keyInput)[1];
    Attribute valueHeadAxis = kernel.getShapeOf(*input)[1];
    if (keyHeadAxis != valueHeadAxis) {
      reason = "the key and the value have different head axes";
      return failure();
    }
  }
  c.output = op;
  return success();
}

/// The ops of the kernel's body that use `value`, directly or through reads
/// in their bodies, each once.
static SetVector<Operation *> topLevelUsers(Value value) {
  SetVector<Operation *> users;
  Block *block = value.getParentBlock();
  for (Operation *user : value.getUsers())
    if (Operation *ancestor = block->findAncestorOpInBlock(*user))
      users.insert(ancestor);
  return users;
}

/// A short description of why `user` blocks the raise of `tensor`.
static std::string describeExtraUse(Operation *user, StringRef tensor) {
  if (isa<ReturnOp>(user))
    return ("the " + tensor + " is also returned as an output").str();
  return ("the " + tensor + " is also used by " +
          user->getName().getStringRef())
      .str();
}

LogicalResult CascadeMatcher::matchChain(Cascade &c, Reason &reason) {
  Value current = c.scores.getResult();
  StringRef role = "scores tensor S";
  while (true) {
    Operation *next = nullptr;
    EinsumOp lse;
    for (Operation *user : topLevelUsers(current)) {
      auto einsum = dyn_cast<EinsumOp>(user);
      if (einsum && !lse && isLseOf(einsum, current)) {
        lse = einsum;
        continue;
      }
      if (next && next != user) {
        // Name the use that is not part of an attention, if one is.
        reason = describeExtraUse(isa<ReturnOp>(next) ? next : user, role);
        return failure();
      }
      next = user;
    }
    if (!next) {
      reason = ("the " + role + " has no normalizer or weighted sum").str();
      return failure();
    }
    if (lse) {
      // Only the logsumexp of the softmax's input is the LSE result.
      auto softmax = dyn_cast<SoftmaxOp>(next);
      if (!softmax) {
        reason =
            ("the " + role + " has a logsumexp but is not the softmax's input")
                .str();
        return failure();
      }
      c.lse = lse;
    }

    if (auto keep = dyn_cast<KeepOp>(next)) {
      if (failed(checkCapturedReads(keep.getBodyBlock(), current,
                                    /*chainReadAllowed=*/false,
                                    "a mask predicate", reason)))
        return failure();
      c.chain.push_back(keep);
      current = keep.getResult();
      role = "masked scores tensor";
      continue;
    }
    if (auto softmax = dyn_cast<SoftmaxOp>(next)) {
      if (softmax.getDimension() != 3) {
        reason = "the softmax is not along n (dimension 3)";
        return failure();
      }
      if (Value sink = softmax.getSink()) {
        auto def = sink.getDefiningOp<EinsumOp>();
        auto type = cast<RankedTensorType>(sink.getType());
        if (!def || def.getNumOutputIndices() != 3 ||
            !type.getElementType().isF32() ||
            def.getExtents()[0] != extents[0] ||
            def.getExtents()[1] != extents[1] ||
            def.getExtents()[2] != extents[2]) {
          reason = "the sink is not an einsum over [b, h, m]";
          return failure();
        }
        if (mayHaveAbsent(sink)) {
          reason = "the sink may have absent entries";
          return failure();
        }
        c.sink = sink;
      }
      c.normalizer = softmax;
      current = softmax.getResult();
      break;
    }
    if (auto normalize = dyn_cast<NormalizeOp>(next)) {
      if (normalize.getDimension() != 3) {
        reason = "the normalize is not along n (dimension 3)";
        return failure();
      }
      c.normalizer = normalize;
      current = normalize.getResult();
      break;
    }
    auto einsum = dyn_cast<EinsumOp>(next);
    if (!einsum) {
      reason = describeExtraUse(next, role);
      return failure();
    }
    if (einsum.getKind() != ReductionKind::None) {
      // Normalizer none: the chain feeds the weighted sum directly.
      if (failed(matchOutput(c, einsum, current, reason)))
        return failure();
      return success();
    }
    // An elementwise step of score_mod.
    Block &body = einsum.getBodyBlock();
    if (einsum.getNumOutputIndices() != 4 ||
        !llvm::equal(einsum.getExtents(), ArrayRef(extents).take_front(4))) {
      reason = ("the " + role +
                " is used by an elementwise einsum over other indices")
                   .str();
      return failure();
    }
    if (!cast<RankedTensorType>(einsum.getType()).getElementType().isF32()) {
      reason = "an elementwise step on the scores does not give f32";
      return failure();
    }
    bool readsOk = true;
    body.walk([&](ReadOp read) {
      if (read.getTensor() == current &&
          !readsAt(read, current, body, {0, 1, 2, 3}))
        readsOk = false;
    });
    if (!readsOk) {
      reason = ("an elementwise step reads the " + role +
                " at subscripts other than [b, h, m, n]")
                   .str();
      return failure();
    }
    if (failed(checkCapturedReads(body, current, /*chainReadAllowed=*/true,
                                  "an elementwise step", reason)))
      return failure();
    if (c.chain.empty() && !c.scaleFactor)
      matchScaleFactor(c, einsum);
    c.chain.push_back(einsum);
    current = einsum.getResult();
    role = "modified scores tensor";
  }

  // After the normalizer: the weights feed the weighted sum only.
  Operation *sumUser = nullptr;
  for (Operation *user : topLevelUsers(current)) {
    if (sumUser && user != sumUser) {
      reason = describeExtraUse(isa<ReturnOp>(sumUser) ? sumUser : user,
                                "weights tensor P");
      return failure();
    }
    sumUser = user;
  }
  auto output = dyn_cast_or_null<EinsumOp>(sumUser);
  if (!output) {
    reason = sumUser ? describeExtraUse(sumUser, "weights tensor P")
                     : "the weights tensor P is unused";
    return failure();
  }
  if (output.getKind() == ReductionKind::None) {
    reason = "the weights are modified by an elementwise einsum before the "
             "weighted sum";
    return failure();
  }
  return matchOutput(c, output, current, reason);
}

FailureOr<Cascade> CascadeMatcher::match(EinsumOp op, Reason &reason) {
  Cascade c;
  c.scores = op;
  extents.clear();
  if (failed(matchScores(c, reason)) || failed(matchChain(c, reason)))
    return failure();
  // The fused op replaces O (and LSE) where the first of them stands; the
  // sink must be computed by then.
  Operation *insertion = c.output;
  if (c.lse && c.lse->isBeforeInBlock(insertion))
    insertion = c.lse;
  if (c.sink && !c.sink.getDefiningOp()->isBeforeInBlock(insertion)) {
    reason = "the sink is computed after the outputs";
    return failure();
  }
  return c;
}

/// Builds the attn.attention for `c` and erases the cascade.
class CascadeRewriter {
public:
  CascadeRewriter(KernelOp kernel, Cascade &c) : kernel(kernel), c(c) {}
  /// Builds the attention and erases the cascade, adding its ops to
  /// `erased`.
  LogicalResult rewrite(DenseSet<Operation *> &erased);

private:
  Value buildScale(OpBuilder &builder);
  Value expandSharedHead(OpBuilder &builder, Value tensor);
  void buildScoreMod(OpBuilder &builder, Region &region);
  void buildMask(OpBuilder &builder, Region &region);

  KernelOp kernel;
  Cascade &c;
};

Value CascadeRewriter::buildScale(OpBuilder &builder) {
  Location loc = c.scores.getLoc();
  if (!c.scaleFactor)
    return arith::ConstantOp::create(builder, loc,
                                     builder.getF32FloatAttr(1.0));
  // Clone the factor's slice inside the body to the kernel level, in order.
  Block &body = cast<EinsumOp>(c.chain.front()).getBodyBlock();
  IRMapping mapping;
  SetVector<Operation *> slice;
  SmallVector<Value> worklist{c.scaleFactor};
  while (!worklist.empty()) {
    Operation *def = worklist.pop_back_val().getDefiningOp();
    if (!def || !body.findAncestorOpInBlock(*def) || !slice.insert(def))
      continue;
    llvm::append_range(worklist, def->getOperands());
  }
  for (Operation &op : body)
    if (slice.contains(&op))
      builder.clone(op, mapping);
  return mapping.lookupOrDefault(c.scaleFactor);
}

/// A rank-3 key or value [B, N, X] seen as [B, 1, N, X].
Value CascadeRewriter::expandSharedHead(OpBuilder &builder, Value tensor) {
  auto type = cast<RankedTensorType>(tensor.getType());
  unsigned input =
      cast<BlockArgument>(tensor).getArgNumber() - kernel.getNumDims();
  ArrayAttr shape = kernel.getShapeOf(input);
  SmallVector<OpFoldResult> outputShape;
  SmallVector<int64_t> resultShape;
  for (int64_t axis = 0; axis < 3; ++axis) {
    if (axis == 1) {
      outputShape.push_back(builder.getIndexAttr(1));
      resultShape.push_back(1);
    }
    int64_t size = type.getDimSize(axis);
    resultShape.push_back(size);
    if (!ShapedType::isDynamic(size)) {
      outputShape.push_back(builder.getIndexAttr(size));
      continue;
    }
    // The matcher checked the extents against `shapes`: the names exist.
    if (auto name = dyn_cast<StringAttr>(shape[axis]))
      outputShape.push_back(
          kernel.getDimArg(*kernel.lookupDim(name.getValue())));
    else
      outputShape.push_back(
          builder.getIndexAttr(cast<IntegerAttr>(shape[axis]).getInt()));
  }
  auto resultType = RankedTensorType::get(resultShape, type.getElementType());
  SmallVector<ReassociationIndices> reassociation = {{0, 1}, {2}, {3}};
  return tensor::ExpandShapeOp::create(builder, tensor.getLoc(), resultType,
                                       tensor, reassociation, outputShape);
}

void CascadeRewriter::buildScoreMod(OpBuilder &builder, Region &region) {
  Location loc = c.scores.getLoc();
  Type index = builder.getIndexType();
  Block *block = builder.createBlock(
      &region, {}, {builder.getF32Type(), index, index, index, index},
      SmallVector<Location>(5, loc));
  Value score = block->getArgument(0);
  Value previous = c.scores.getResult();
  for (Operation *step : c.chain) {
    auto einsum = dyn_cast<EinsumOp>(step);
    if (!einsum) {
      previous = cast<KeepOp>(step).getResult();
      continue;
    }
    Block &body = einsum.getBodyBlock();
    IRMapping mapping;
    for (unsigned i = 0; i < 4; ++i)
      mapping.map(body.getArgument(i), block->getArgument(i + 1));
    for (Operation &op : body.without_terminator()) {
      if (auto read = dyn_cast<ReadOp>(op);
          read && read.getTensor() == previous) {
        mapping.map(read.getResult(), score);
        continue;
      }
      if (&op == c.scaleMul) {
        // The scale operand already multiplied the score.
        mapping.map(op.getResult(0), score);
        continue;
      }
      builder.clone(op, mapping);
    }
    score = mapping.lookupOrDefault(einsum.getYieldedValue());
    previous = einsum.getResult();
  }
  YieldOp::create(builder, loc, score);
}

void CascadeRewriter::buildMask(OpBuilder &builder, Region &region) {
  Location loc = c.scores.getLoc();
  Type index = builder.getIndexType();
  Block *block = builder.createBlock(&region, {}, {index, index, index, index},
                                     SmallVector<Location>(4, loc));
  Value predicate;
  for (Operation *step : c.chain) {
    auto keep = dyn_cast<KeepOp>(step);
    if (!keep)
      continue;
    Block &body = keep.getBodyBlock();
    IRMapping mapping;
    for (unsigned i = 0; i < 4; ++i)
      mapping.map(body.getArgument(i), block->getArgument(i));
    for (Operation &op : body.without_terminator())
      builder.clone(op, mapping);
    Value kept = mapping.lookupOrDefault(keep.getPredicate());
    predicate =
        predicate
            ? arith::AndIOp::create(builder, loc, predicate, kept).getResult()
            : kept;
  }
  if (!predicate)
    predicate =
        arith::ConstantOp::create(builder, loc, builder.getBoolAttr(true));
  YieldOp::create(builder, loc, predicate);
}

/// Erases the pure ops of `block` whose results are unused, last first.
static void eraseDeadOps(Block &block) {
  SmallVector<Operation *> ops;
  for (Operation &op : block.without_terminator())
    ops.push_back(&op);
  for (Operation *op : llvm::reverse(ops))
    if (op->use_empty() && isPure(op))
      op->erase();
}

LogicalResult CascadeRewriter::rewrite(DenseSet<Operation *> &erased) {
  Operation *insertion = c.output;
  if (c.lse && c.lse->isBeforeInBlock(insertion))
    insertion = c.lse;
  OpBuilder builder(insertion);
  Location loc = c.scores.getLoc();
  Value scale = buildScale(builder);
  Value key = c.key, value = c.value;
  if (c.headMap == HeadMap::Shared) {
    key = expandSharedHead(builder, key);
    value = expandSharedHead(builder, value);
  }
  Normalizer normalizer = Normalizer::None;
  WeightMap map = WeightMap::Identity;
  if (isa_and_nonnull<SoftmaxOp>(c.normalizer)) {
    normalizer = Normalizer::Softmax;
  } else if (auto normalize = dyn_cast_or_null<NormalizeOp>(c.normalizer)) {
    normalizer = Normalizer::Normalize;
    map = normalize.getMap();
  }
  auto attention = AttentionOp::create(
      builder, loc, c.output.getType(), c.lse ? c.lse.getType() : Type(),
      c.query, key, value, scale, c.sink,
      NormalizerAttr::get(builder.getContext(), normalizer),
      WeightMapAttr::get(builder.getContext(), map));
  {
    OpBuilder::InsertionGuard guard(builder);
    buildScoreMod(builder, attention.getScoreMod());
    eraseDeadOps(attention.getScoreModBlock());
    buildMask(builder, attention.getMask());
    eraseDeadOps(attention.getMaskBlock());
  }
  // With a single keep its hints still describe the whole mask.
  SmallVector<KeepOp> keeps;
  for (Operation *step : c.chain)
    if (auto keep = dyn_cast<KeepOp>(step))
      keeps.push_back(keep);
  if (keeps.size() == 1) {
    for (StringRef hint : {"sinks", "block", "per_head"})
      if (Attribute attr = keeps.front()->getAttr(hint))
        attention->setAttr(hint, attr);
  }

  c.output.getResult().replaceAllUsesWith(attention.getOutput());
  if (c.lse)
    c.lse.getResult().replaceAllUsesWith(attention.getLse());
  SmallVector<Operation *> dead{c.output};
  if (c.lse)
    dead.push_back(c.lse);
  if (c.normalizer)
    dead.push_back(c.normalizer);
  for (Operation *step : llvm::reverse(c.chain))
    dead.push_back(step);
  dead.push_back(c.scores);
  for (Operation *op : dead) {
    if (!op->use_empty())
      return op->emitError("attn-raise: a raised op still has uses");
    erased.insert(op);
    op->erase();
  }
  return success();
}

/// Whether `value` reaches a softmax or normalize, or a weighted sum (a
/// summing einsum: normalizer none), through elementwise einsums and
/// keeps: a sum that does is meant as the scores of an attention, and not
/// raising it deserves a remark.
static bool feedsNormalizer(Value value) {
  SmallVector<Value> worklist{value};
  DenseSet<Value> seen;
  while (!worklist.empty()) {
    Value next = worklist.pop_back_val();
    if (!seen.insert(next).second)
      continue;
    for (Operation *user : next.getUsers()) {
      // Einsums read tensors in their bodies.
      if (isa<ReadOp>(user))
        user = user->getParentOp();
      if (isa<SoftmaxOp, NormalizeOp>(user))
        return true;
      auto einsum = dyn_cast<EinsumOp>(user);
      if (einsum && einsum.getKind() == ReductionKind::Sum)
        return true;
      if (isa<KeepOp>(user) ||
          (einsum && einsum.getKind() == ReductionKind::None))
        worklist.push_back(user->getResult(0));
    }
  }
  return false;
}

/// Whether `op` looks like scores (a sum over one index into four) without
/// being the product of two kernel inputs that isCandidate wants.
static bool isScoresLike(EinsumOp op) {
  return op.getKind() == ReductionKind::Sum &&
         op.getNumOutputIndices() == 4 && op.getNumReducedIndices() == 1 &&
         feedsNormalizer(op.getResult());
}

struct AttnRaisePass : impl::AttnRaiseBase<AttnRaisePass> {
  using Base::Base;

  void runOnOperation() override {
    KernelOp kernel = getOperation();
    CascadeMatcher matcher(kernel);
    SmallVector<EinsumOp> candidates;
    for (Operation &op : kernel.getEntryBlock()) {
      auto einsum = dyn_cast<EinsumOp>(op);
      if (!einsum)
        continue;
      if (matcher.isCandidate(einsum))
        candidates.push_back(einsum);
      else if (isScoresLike(einsum))
        einsum->emitRemark()
            << "not raised: the scores are not the product of two kernel "
               "inputs (a factor or a computed operand inside the sum over "
               "the head dim; scale outside the sum instead)";
    }
    DenseSet<Operation *> erased;
    for (EinsumOp scores : candidates) {
      // A cascade raised earlier may have consumed this einsum.
      if (erased.contains(scores))
        continue;
      Reason reason;
      FailureOr<Cascade> cascade = matcher.match(scores, reason);
      if (failed(cascade)) {
        scores->emitRemark() << "not raised: " << reason;
        continue;
      }
      if (failed(CascadeRewriter(kernel, *cascade).rewrite(erased)))
        return signalPassFailure();
    }
  }
};

} // namespace
} // namespace mlir::attn
