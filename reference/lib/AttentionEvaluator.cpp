//===- AttentionEvaluator.cpp - attn.attention in the reference -----------===//
//
// One row (b, h, m) at a time: evaluate the mask and score_mod at every key,
// then normalize and weigh the values. The arithmetic mirrors the cascade
// (einsum sums in index order, Normalizers.cpp, the logsumexp Accumulator)
// so that raising a cascade changes the reference result only by the
// reassociation `scale * dot` vs `dot * scale`, which is exact.
//
//===----------------------------------------------------------------------===//

#include "AttentionEvaluator.h"

#include "Accumulator.h"
#include "BodyAdjoint.h"
#include "Normalizers.h"

#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <limits>
#include <vector>

using namespace mlir;
using namespace mlir::attn;
using namespace ::attn::ref;
namespace ref = ::attn::ref;

namespace {
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

/// The block of `region` compiled as a BodyProgram.
FailureOr<BodyProgram> compileRegion(Region &region, const Environment &env) {
  Block &block = region.front();
  SmallVector<Operation *> ops;
  for (Operation &op : block)
    ops.push_back(&op);
  Value result = cast<YieldOp>(block.getTerminator()).getValues().front();
  return BodyProgram::compile(block.getArguments(), ops, result, env);
}

/// Entry of a row-major tensor at four subscripts.
double at4(const TensorValue &t, int64_t i, int64_t j, int64_t k, int64_t l) {
  return t.data[i * t.strides[0] + j * t.strides[1] + k * t.strides[2] +
                l * t.strides[3]];
}

LogicalResult fail(Operation *op, const Twine &message) {
  return op->emitError() << "reference evaluator: " << message;
}

LogicalResult reportFault(Operation *op, const Fault &fault, StringRef region,
                          int64_t b, int64_t h, int64_t m, int64_t n) {
  InFlightDiagnostic diag = fault.op->emitError() << fault.message;
  diag << " in " << region << " at point (b=" << b << ", h=" << h << ", m=" << m
       << ", n=" << n << ")";
  diag.attachNote(op->getLoc()) << "while evaluating this " << op->getName();
  return failure();
}

/// The mask and score_mod of an attention op at one point: whether the key
/// is kept and, if so, its modified score. Forward and backward evaluate
/// them the same way.
class KeyScorer {
public:
  KeyScorer(BodyProgram &mask, BodyProgram &scoreMod, const TensorValue &q,
            const TensorValue &k, double scale)
      : mask(mask), scoreMod(scoreMod), q(q), k(k), scale(scale),
        maskRegs(mask.makeRegisters()), modRegs(scoreMod.makeRegisters()) {}

  /// Whether key n is kept for query (b, h, m) reading key head g; reports a
  /// fault on `op` and fails.
  FailureOr<bool> score(Operation *op, int64_t b, int64_t h, int64_t g,
                        int64_t m, int64_t n) {
    Fault fault;
    Reg *r = maskRegs.data();
    r[0].i = b, r[1].i = h, r[2].i = m, r[3].i = n;
    BodyProgram::Status status = mask.run(r, fault);
    if (status == BodyProgram::Status::Error)
      return reportFault(op, fault, "mask", b, h, m, n);
    // A predicate that reads an absent entry does not keep, as in attn.keep.
    if (status != BodyProgram::Status::Present ||
        r[mask.getResultRegister()].i == 0)
      return false;
    double dot = 0.0;
    for (int64_t d = 0, D = q.shape[3]; d < D; ++d)
      dot += at4(q, b, h, m, d) * at4(k, b, g, n, d);
    Reg *s = modRegs.data();
    s[0].f = scale * dot;
    s[1].i = b, s[2].i = h, s[3].i = m, s[4].i = n;
    status = scoreMod.run(s, fault);
    if (status == BodyProgram::Status::Error)
      return reportFault(op, fault, "score_mod", b, h, m, n);
    return status != BodyProgram::Status::Absent;
  }
  /// The modified score of the last kept key.
  double getScore() const { return scoreMod.getResult(modRegs.data()); }
  /// score_mod's registers after the last kept key (for its derivative).
  const Reg *getScoreRegisters() const { return modRegs.data(); }

private:
  BodyProgram &mask, &scoreMod;
  const TensorValue &q, &k;
  double scale;
  std::vector<Reg> maskRegs, modRegs;
};
} // namespace

FailureOr<SmallVector<TensorValue, 2>>
ref::evaluateAttention(AttentionOp op, const Environment &env) {
  const TensorValue *q = env.tensors.lookup(op.getQuery());
  const TensorValue *k = env.tensors.lookup(op.getKey());
  const TensorValue *v = env.tensors.lookup(op.getValue());
  if (!q || !k || !v)
    return fail(op, "query, key or value is not a known tensor");
  auto scaleIt = env.scalars.find(op.getScale());
  if (scaleIt == env.scalars.end())
    return fail(op, "the scale is not a scalar computed at the kernel's top "
                    "level");
  const double scale = scaleIt->second.f;
  // Absent entries of Q, K or V would have no meaning here.
  if (!q->present.empty() || !k->present.empty() || !v->present.empty())
    return fail(op, "query, key and value must have no absent entries");

  const int64_t B = q->shape[0], H = q->shape[1], M = q->shape[2],
                D = q->shape[3];
  const int64_t G = k->shape[1], N = k->shape[2], E = v->shape[3];
  if (k->shape[0] != B || v->shape[0] != B || k->shape[3] != D ||
      v->shape[1] != G || v->shape[2] != N)
    return fail(op, "query [B,H,M,D], key [B,G,N,D] and value [B,G,N,E] "
                    "shapes disagree");
  if (G == 0 ? H != 0 : H % G != 0)
    return fail(op, "the " + Twine(H) +
                        " query heads are not a multiple of "
                        "the " +
                        Twine(G) + " key/value heads");

  const TensorValue *sink = nullptr;
  if (Value sinkValue = op.getSink()) {
    sink = env.tensors.lookup(sinkValue);
    if (!sink)
      return fail(op, "unknown sink tensor");
    if (sink->shape != std::vector<int64_t>{B, H, M})
      return fail(op, "the sink must have shape [B, H, M]");
  }

  FailureOr<BodyProgram> scoreMod = compileRegion(op.getScoreMod(), env);
  FailureOr<BodyProgram> mask = compileRegion(op.getMask(), env);
  if (failed(scoreMod) || failed(mask))
    return failure();
  KeyScorer scorer(*mask, *scoreMod, *q, *k, scale);

  TensorValue output = makeTensor({B, H, M, E}, /*isInteger=*/false);
  TensorValue lse = makeTensor({B, H, M}, /*isInteger=*/false);
  const Normalizer normalizer = op.getNormalizer();
  const int64_t groupSize = G == 0 ? 1 : H / G;
  std::vector<double> scores(N);
  std::vector<uint8_t> kept(N);

  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / groupSize;
      for (int64_t m = 0; m < M; ++m) {
        // Scores of the kept keys, in key order.
        bool anyKept = false;
        for (int64_t n = 0; n < N; ++n) {
          FailureOr<bool> keeps = scorer.score(op, b, h, g, m, n);
          if (failed(keeps))
            return failure();
          kept[n] = *keeps;
          if (!*keeps)
            continue;
          scores[n] = scorer.getScore();
          anyKept = true;
        }

        Accumulator logSumExp(ReductionKind::LogSumExp);
        for (int64_t n = 0; n < N; ++n)
          if (kept[n])
            logSumExp.add(scores[n]);
        lse.data[(b * H + h) * M + m] = logSumExp.result();
        // A row with no kept key has no weights: O = 0 (sink or not).
        if (!anyKept)
          continue;

        // Turn the scores into weights in place.
        if (normalizer == Normalizer::Softmax) {
          double max = kNegInf;
          for (int64_t n = 0; n < N; ++n)
            if (kept[n] && (scores[n] > max || std::isnan(scores[n])))
              max = scores[n];
          bool hasSink = sink && sink->isPresent((b * H + h) * M + m);
          double sinkLogit =
              hasSink ? sink->data[(b * H + h) * M + m] : kNegInf;
          if (sinkLogit > max || std::isnan(sinkLogit))
            max = sinkLogit;
          if (max == kNegInf) {
            for (int64_t n = 0; n < N; ++n)
              scores[n] = 0.0;
          } else {
            double denominator = hasSink ? std::exp(sinkLogit - max) : 0.0;
            for (int64_t n = 0; n < N; ++n)
              if (kept[n])
                denominator += std::exp(scores[n] - max);
            for (int64_t n = 0; n < N; ++n)
              if (kept[n])
                scores[n] = std::exp(scores[n] - max) / denominator;
          }
        } else if (normalizer == Normalizer::Normalize) {
          std::vector<double> row;
          for (int64_t n = 0; n < N; ++n)
            if (kept[n])
              row.push_back(scores[n]);
          double logDenominator = normalizeRow(row, op.getMap());
          if (op.getMap() != WeightMap::Identity)
            lse.data[(b * H + h) * M + m] = logDenominator;
          auto next = row.begin();
          for (int64_t n = 0; n < N; ++n)
            if (kept[n])
              scores[n] = *next++;
        }

        for (int64_t e = 0; e < E; ++e) {
          double sum = 0.0;
          for (int64_t n = 0; n < N; ++n)
            if (kept[n])
              sum += scores[n] * at4(*v, b, g, n, e);
          output.data[((b * H + h) * M + m) * E + e] = sum;
        }
      }
    }
  }

  SmallVector<TensorValue, 2> results;
  results.push_back(std::move(output));
  if (op.getLse())
    results.push_back(std::move(lse));
  return results;
}

FailureOr<TensorValue> ref::evaluateExpandShape(tensor::ExpandShapeOp op,
                                                const Environment &env) {
  const TensorValue *source = env.tensors.lookup(op.getSrc());
  if (!source)
    return op->emitError() << "reference evaluator: expands an unknown tensor";
  std::vector<int64_t> shape;
  for (OpFoldResult size : op.getMixedOutputShape()) {
    if (auto attr = dyn_cast<Attribute>(size)) {
      shape.push_back(cast<IntegerAttr>(attr).getInt());
      continue;
    }
    auto it = env.scalars.find(cast<Value>(size));
    if (it == env.scalars.end())
      return op->emitError() << "reference evaluator: an output size is not "
                                "a scalar computed at the kernel's top level";
    shape.push_back(it->second.i);
  }
  if (countElements(shape) != source->getNumElements())
    return op->emitError() << "reference evaluator: expand_shape changes the "
                              "number of elements";
  TensorValue result = makeTensor(std::move(shape), source->isInteger);
  result.data = source->data;
  result.present = source->present;
  return result;
}

FailureOr<SmallVector<TensorValue, 4>>
ref::evaluateAttentionBackward(AttentionBackwardOp op, const Environment &env) {
  const TensorValue *q = env.tensors.lookup(op.getQuery());
  const TensorValue *k = env.tensors.lookup(op.getKey());
  const TensorValue *v = env.tensors.lookup(op.getValue());
  const TensorValue *o = env.tensors.lookup(op.getOutput());
  const TensorValue *lse = env.tensors.lookup(op.getStatistic());
  const TensorValue *dO = env.tensors.lookup(op.getOutputGrad());
  if (!q || !k || !v || !o || !lse || !dO)
    return fail(op, "an operand is not a known tensor");
  auto scaleIt = env.scalars.find(op.getScale());
  if (scaleIt == env.scalars.end())
    return fail(op, "the scale is not a scalar computed at the kernel's top "
                    "level");
  const double scale = scaleIt->second.f;
  const int64_t B = q->shape[0], H = q->shape[1], M = q->shape[2],
                D = q->shape[3];
  const int64_t G = k->shape[1], N = k->shape[2], E = v->shape[3];
  if (k->shape[0] != B || v->shape[0] != B || k->shape[3] != D ||
      v->shape[1] != G || v->shape[2] != N ||
      o->shape != std::vector<int64_t>{B, H, M, E} || dO->shape != o->shape ||
      lse->shape != std::vector<int64_t>{B, H, M})
    return fail(op, "the operands' shapes disagree");
  if (G == 0 ? H != 0 : H % G != 0)
    return fail(op, "the query heads are not a multiple of the key/value "
                    "heads");
  const TensorValue *sink = nullptr;
  if (Value sinkValue = op.getSink()) {
    sink = env.tensors.lookup(sinkValue);
    if (!sink || sink->shape != std::vector<int64_t>{B, H, M})
      return fail(op, "the sink must be a tensor of shape [B, H, M]");
  }
  const TensorValue *lseGrad = nullptr;
  if (Value lseGradValue = op.getLseGrad()) {
    lseGrad = env.tensors.lookup(lseGradValue);
    if (!lseGrad || lseGrad->shape != lse->shape)
      return fail(op, "the LSE's adjoint must be a tensor shaped as the LSE");
  }

  FailureOr<BodyProgram> scoreMod = compileRegion(op.getScoreMod(), env);
  FailureOr<BodyProgram> mask = compileRegion(op.getMask(), env);
  if (failed(scoreMod) || failed(mask))
    return failure();
  KeyScorer scorer(*mask, *scoreMod, *q, *k, scale);
  BodyAdjoint modAdjoint(*scoreMod);

  TensorValue dQ = makeTensor({B, H, M, D}, /*isInteger=*/false);
  TensorValue dK = makeTensor({B, G, N, D}, /*isInteger=*/false);
  TensorValue dV = makeTensor({B, G, N, E}, /*isInteger=*/false);
  TensorValue dSink = makeTensor({B, H, M}, /*isInteger=*/false);
  // Per row, the sum over its kept scores of ds' times the derivative with
  // respect to each grad_reads read (read sites count score_mod's reads in
  // block order, as grad_reads does).
  std::vector<TensorValue> readGrads;
  for (size_t i = 0; i < op.getGradReads().size(); ++i)
    readGrads.push_back(makeTensor({B, H, M}, /*isInteger=*/false));
  const bool softmax = op.getNormalizer() == Normalizer::Softmax;
  // normalize with a map: P = map(s) e^-LSE, its score adjoint times
  // map'/map (the verifier refused normalize without a map).
  const bool normalize = op.getNormalizer() == Normalizer::Normalize;
  const WeightMap map = op.getMap();
  const int64_t groupSize = G == 0 ? 1 : H / G;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const int64_t g = h / groupSize;
      for (int64_t m = 0; m < M; ++m) {
        const int64_t row = (b * H + h) * M + m;
        // LSE' = LSE (+) sink: the softmax's whole denominator.
        double total = lse->data[row];
        bool hasSink = sink && sink->isPresent(row);
        if (softmax && hasSink) {
          double z = sink->data[row];
          double high = std::max(total, z);
          total = high == kNegInf
                      ? kNegInf
                      : high + std::log(std::exp(total - high) +
                                        std::exp(z - high));
        }
        double delta = 0.0;
        for (int64_t e = 0; e < E; ++e)
          delta += at4(*dO, b, h, m, e) * at4(*o, b, h, m, e);
        if (softmax && hasSink)
          dSink.data[row] = total == kNegInf
                                ? 0.0
                                : -std::exp(sink->data[row] - total) * delta;
        for (int64_t n = 0; n < N; ++n) {
          FailureOr<bool> keeps = scorer.score(op, b, h, g, m, n);
          if (failed(keeps))
            return failure();
          if (!*keeps)
            continue;
          double score = scorer.getScore();
          modAdjoint.propagate(scorer.getScoreRegisters(), 1.0);
          double slope = modAdjoint.getArgumentAdjoint(0);
          double p = score;
          if (softmax)
            p = total == kNegInf ? 0.0 : std::exp(score - total);
          else if (normalize)
            p = normalizedWeight(score, total, map);
          double dp = 0.0;
          for (int64_t e = 0; e < E; ++e)
            dp += at4(*dO, b, h, m, e) * at4(*v, b, g, n, e);
          double ds = dp;
          if (softmax)
            ds = p * (dp - delta);
          else if (normalize)
            ds = p * mapLogDerivative(score, map) * (dp - delta);
          // The LSE is of the scores alone: its adjoint adds
          // dLSE e^(s - LSE), taken as written rather than folded into
          // Delta as the kernels do (the sink's gradient does not see it).
          if (softmax && lseGrad && lse->data[row] != kNegInf)
            ds += lseGrad->data[row] * std::exp(score - lse->data[row]);
          double dt = ds * slope;
          for (auto [i, site] : llvm::enumerate(op.getGradReads()))
            readGrads[i].data[row] += ds * modAdjoint.getReadSiteAdjoint(site);
          for (int64_t e = 0; e < E; ++e)
            dV.data[((b * G + g) * N + n) * E + e] += p * at4(*dO, b, h, m, e);
          for (int64_t d = 0; d < D; ++d) {
            dQ.data[row * D + d] += scale * dt * at4(*k, b, g, n, d);
            dK.data[((b * G + g) * N + n) * D + d] +=
                scale * dt * at4(*q, b, h, m, d);
          }
        }
      }
    }
  }
  SmallVector<TensorValue, 4> results;
  results.push_back(std::move(dQ));
  results.push_back(std::move(dK));
  results.push_back(std::move(dV));
  if (sink)
    results.push_back(std::move(dSink));
  for (TensorValue &readGrad : readGrads)
    results.push_back(std::move(readGrad));
  return results;
}

FailureOr<TensorValue>
ref::evaluateCollapseShape(tensor::CollapseShapeOp op, const Environment &env) {
  const TensorValue *source = env.tensors.lookup(op.getSrc());
  if (!source)
    return op->emitError()
           << "reference evaluator: collapses an unknown tensor";
  std::vector<int64_t> shape;
  for (const ReassociationIndices &group : op.getReassociationIndices()) {
    int64_t size = 1;
    for (int64_t axis : group)
      size *= source->shape[axis];
    shape.push_back(size);
  }
  TensorValue result = makeTensor(std::move(shape), source->isInteger);
  result.data = source->data;
  result.present = source->present;
  return result;
}
