//===- HalideSchedule.h - Scheduling a cascade's pipeline -------*- C++ -*-===//
//
// A pipeline is scheduled either by one of the autoschedulers libHalide14
// ships (plugins loaded once, from where libhalide14-0-dev installs them),
// with the launch's sizes as estimates, or by the schedule attnc derives
// from the cascade's shape ("Derived"): every reduction and row statistic
// computed at root, parallel over its two outermost axes and vectorized
// along its innermost, elementwise stages inlined into their consumers.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_HALIDE_LIB_HALIDESCHEDULE_H
#define ATTN_HALIDE_LIB_HALIDESCHEDULE_H

#include "CascadeToHalide.h"

#include "llvm/ADT/StringRef.h"

namespace attn::halide {

/// Whether `name` is a scheduler schedulePipeline knows.
bool isKnownScheduler(llvm::StringRef name);

/// Schedules the pipeline of `cascade`'s outputs with `scheduler` for
/// `target` and `parallelism` worker threads, and returns the pipeline to
/// compile: the outputs computed at root, copied into the entry's outputs
/// with loops that never leave them. (A schedule made for the estimates
/// computes whole tiles, shifted before the start of a smaller launch; into
/// the caller's buffers that would be out of bounds.) Throws Halide's
/// errors (the caller catches them).
Halide::Pipeline schedulePipeline(CascadePipeline &cascade,
                                  llvm::StringRef scheduler,
                                  const Halide::Target &target,
                                  unsigned parallelism);

} // namespace attn::halide

#endif // ATTN_HALIDE_LIB_HALIDESCHEDULE_H
