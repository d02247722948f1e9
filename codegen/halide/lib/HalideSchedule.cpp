//===- HalideSchedule.cpp - Scheduling a cascade's pipeline ---------------===//

#include "HalideSchedule.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringMap.h"

#include <mutex>
#include <string>

using namespace ::attn::halide;
namespace HL = Halide;

namespace {

/// The plugin file of an autoscheduler, in libhalide14-0-dev's folder.
std::string getPluginPath(llvm::StringRef scheduler) {
  return std::string(ATTN_HALIDE_PLUGIN_DIR) + "/libautoschedule_" +
         scheduler.lower() + ".so";
}

/// Loads an autoscheduler's plugin, once per process (a plugin registers
/// its scheduler when loaded; a second load would register it again).
void loadPlugin(llvm::StringRef scheduler) {
  static std::mutex mutex;
  static llvm::StringMap<bool> loaded;
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded.lookup(scheduler))
    return;
  HL::load_plugin(getPluginPath(scheduler));
  loaded[scheduler] = true;
}

/// The natural vector width of f32 on `target`.
int getVectorWidth(const HL::Target &target) {
  return target.natural_vector_size(HL::Float(32));
}

/// Parallel over the outermost pure axes and vectorized along the
/// innermost of one stage (pure vars in Halide's order, innermost first);
/// the reduction's loops stay inside the vector.
void scheduleStage(HL::Stage stage, const std::vector<HL::Var> &vars,
                   const std::vector<HL::RVar> &rvars, int vectorWidth) {
  if (vars.empty())
    return;
  HL::Var inner = vars.front();
  HL::Var vectorLanes(inner.name() + "_vi"), vectorOuter(inner.name() + "_vo");
  stage.split(inner, vectorOuter, vectorLanes, vectorWidth,
              HL::TailStrategy::GuardWithIf);
  std::vector<HL::VarOrRVar> order = {vectorLanes};
  for (const HL::RVar &r : rvars)
    order.push_back(r);
  order.push_back(vectorOuter);
  for (size_t i = 1; i < vars.size(); ++i)
    order.push_back(vars[i]);
  stage.reorder(order);
  stage.vectorize(vectorLanes);
  if (vars.size() > 2) {
    // The two outermost axes as one parallel loop: the outermost alone is
    // often the batch, of size 1.
    HL::Var both(vars.back().name() + "_" + vars[vars.size() - 2].name());
    stage.fuse(vars[vars.size() - 2], vars.back(), both);
    stage.parallel(both);
  } else if (vars.size() == 2) {
    stage.parallel(vars.back());
  } else {
    stage.parallel(vectorOuter);
  }
}

/// A Func computed at root, with scheduleStage's loops for each stage.
void scheduleFunc(HL::Func func, int vectorWidth) {
  std::vector<HL::Var> vars = func.args();
  func.compute_root();
  scheduleStage(func, vars, {}, vectorWidth);
  for (int u = 0; u < func.num_update_definitions(); ++u) {
    std::vector<HL::RVar> rvars;
    for (const HL::Internal::ReductionVariable &r :
         func.update(u).get_schedule().rvars())
      rvars.emplace_back(r.var);
    scheduleStage(func.update(u), vars, rvars, vectorWidth);
  }
}

/// The schedule attnc derives: reductions at root, the rest inlined.
void scheduleDerived(CascadePipeline &cascade, const HL::Target &target) {
  int vectorWidth = getVectorWidth(target);
  for (CascadeStage &stage : cascade.stages)
    if (stage.reduces)
      scheduleFunc(stage.func, vectorWidth);
  for (HL::Func &result : cascade.outputs)
    scheduleFunc(result, vectorWidth);
}

} // namespace

bool attn::halide::isKnownScheduler(llvm::StringRef name) {
  return name == "Derived" || name == "Mullapudi2016" || name == "Li2018" ||
         name == "Adams2019";
}

HL::Pipeline attn::halide::schedulePipeline(CascadePipeline &cascade,
                                            llvm::StringRef scheduler,
                                            const HL::Target &target,
                                            unsigned parallelism) {
  if (scheduler == "Derived") {
    scheduleDerived(cascade, target);
  } else {
    loadPlugin(scheduler);
    // Halide's defaults for the cache and the cost of a load.
    HL::MachineParams machine(static_cast<int>(parallelism), 16 * 1024 * 1024,
                              40);
    HL::Pipeline(cascade.outputs)
        .auto_schedule(scheduler.str(), target, machine);
  }
  int vectorWidth = getVectorWidth(target);
  std::vector<HL::Func> outputs;
  for (auto [result, name] :
       llvm::zip_equal(cascade.outputs, cascade.outputNames)) {
    HL::Func output(name);
    std::vector<HL::Var> vars = result.args();
    output(vars) = result(vars);
    result.compute_root();
    // Dense row-major buffers: the innermost axis has stride 1.
    if (!vars.empty())
      output.output_buffer().dim(0).set_stride(1);
    scheduleStage(output, vars, {}, vectorWidth);
    outputs.push_back(output);
  }
  return HL::Pipeline(outputs);
}
