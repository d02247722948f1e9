//===- KernelIRBuilder.cpp - Scalar code shared by the GPU kernels --------===//

#include "KernelBuilding.h"

#include <cmath>

using namespace mlir;
using namespace mlir::attn;

std::pair<Value, Value> KernelIRBuilder::normalizeSoftmax(Value max, Value sum,
                                                          Value sink) {
  Value empty = cmpf(arith::CmpFPredicate::OEQ, sum, cf(0.0));
  Value factor;
  if (sink) {
    Value log2e = cf(M_LOG2E);
    Value top = maxf(max, sink);
    Value keep = createExp2(b, loc, mulf(subf(max, top), log2e));
    Value denominator =
        addf(mulf(sum, keep), createExp2(b, loc, mulf(subf(sink, top), log2e)));
    factor = arith::DivFOp::create(b, loc, keep, denominator);
  } else {
    factor = arith::DivFOp::create(b, loc, cf(1.0), sum);
  }
  Value lse = addf(max, mulf(createLog2(b, loc, sum), cf(M_LN2)));
  return {select(empty, cf(0.0), factor), select(empty, negInf(), lse)};
}
