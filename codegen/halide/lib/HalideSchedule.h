//===- HalideSchedule.h - Scheduling a cascade's pipeline -------*- C++ -*-===//
//
// A pipeline is scheduled either by one of the autoschedulers libHalide14
// ships (plugins loaded once, from where libhalide14-0-dev installs them),
// with the launch's sizes as estimates, or by the schedule attnc derives
// from the cascade's shape ("attnc"): every reduction and row statistic
// computed at root, parallel over its outermost axis and vectorized along
// its innermost, elementwise stages inlined into their consumers.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_HALIDE_LIB_HALIDESCHEDULE_H
#define ATTN_HALIDE_LIB_HALIDESCHEDULE_H

#include "CascadeToHalide.h"

#include "llvm/ADT/StringRef.h"

namespace attn::halide {

/// Whether `name` is a scheduler schedulePipeline knows.
bool isKnownScheduler(llvm::StringRef name);

/// Schedules `pipeline` with `scheduler` for `target` and `parallelism`
/// worker threads. Throws Halide's errors (the caller catches them).
void schedulePipeline(CascadePipeline &cascade, Halide::Pipeline &pipeline,
                      llvm::StringRef scheduler, const Halide::Target &target,
                      unsigned parallelism);

} // namespace attn::halide

#endif // ATTN_HALIDE_LIB_HALIDESCHEDULE_H
