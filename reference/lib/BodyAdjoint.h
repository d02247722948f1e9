//===- BodyAdjoint.h - Reverse mode through a cascade body ------*- C++ -*-===//
//
// Internal to the reference evaluator. The derivative of a BodyProgram at one
// point: a reverse sweep over its instructions, with the rule of every scalar
// op in one switch, that accumulates the adjoint of each float attn.read into
// the adjoint of the tensor read, at the entry read. Working per point rather
// than per subscript pattern makes every subscript (affine, modular, a
// gather through a page table) differentiate the same way.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_REFERENCE_LIB_BODYADJOINT_H
#define ATTN_REFERENCE_LIB_BODYADJOINT_H

#include "BodyProgram.h"

#include <cstdint>
#include <vector>

namespace attn::ref {

class BodyAdjoint {
public:
  explicit BodyAdjoint(const BodyProgram &program);

  /// Where the adjoint of read site `site` accumulates: a buffer laid out
  /// like the site's tensor, or null (the default) to drop it, as for
  /// tensors nothing is differentiated with respect to.
  /// `squares`, laid out likewise or null, accumulates the square of what
  /// each propagate adds to an entry of `buffer` (the sum over the body's
  /// reads of the same entry): Gradients::scales.
  void setReadAdjoint(size_t site, double *buffer, double *squares = nullptr) {
    readAdjoints[site] = buffer;
    readSquares[site] = squares;
  }

  /// Adds `seed` times the derivative of the body's result at the point in
  /// `regs` to the adjoints of the reads. `regs` must hold a run of the
  /// program that returned Present; an integer result has no derivative.
  void propagate(const Reg *regs, double seed);

  /// After propagate: the derivative times the seed with respect to the
  /// body's argument `i` (a float argument, such as score_mod's score).
  double getArgumentAdjoint(unsigned i) const { return adjoints[i]; }

  /// After propagate: the derivative times the seed with respect to the
  /// value read site `site` yielded (0 for an integer read).
  double getReadSiteAdjoint(size_t site) const;

private:
  const BodyProgram &program;
  /// The adjoint of every register, reset at each propagate.
  std::vector<double> adjoints;
  std::vector<double *> readAdjoints;
  std::vector<double *> readSquares;
  /// What one propagate adds to an entry that has a squares buffer; a body
  /// that reads an entry twice gives one term, not two.
  struct Term {
    double *squares;
    int64_t offset;
    double value;
  };
  std::vector<Term> terms;
};

} // namespace attn::ref

#endif // ATTN_REFERENCE_LIB_BODYADJOINT_H
