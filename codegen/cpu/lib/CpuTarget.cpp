//===- CpuTarget.cpp - The CPU a kernel object is compiled for ------------===//

#include "attn/CPU/CpuTarget.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"
#include "llvm/TargetParser/Triple.h"

#include <mutex>

using namespace attn;

namespace {

llvm::Error makeError(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

void initializeNativeTarget() {
  static std::once_flag once;
  std::call_once(once, [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
  });
}

llvm::Expected<const llvm::Target *> lookupTarget(const std::string &triple) {
  initializeNativeTarget();
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(llvm::Triple(triple), error);
  if (!target)
    return makeError("no LLVM target for '" + triple + "': " + error);
  return target;
}

llvm::CodeGenOptLevel getCodeGenOptLevel(unsigned optLevel) {
  switch (optLevel) {
  case 0:
    return llvm::CodeGenOptLevel::None;
  case 1:
    return llvm::CodeGenOptLevel::Less;
  case 2:
    return llvm::CodeGenOptLevel::Default;
  default:
    return llvm::CodeGenOptLevel::Aggressive;
  }
}

} // namespace

llvm::Expected<CpuTarget> attn::getHostCpuTarget() {
  // Computed once: reading the host's features costs a few cpuid calls, and
  // it is on the cache-hit path.
  static const CpuTarget host = [] {
    CpuTarget target;
    target.triple = llvm::sys::getProcessTriple();
    target.cpu = llvm::sys::getHostCPUName().str();
    llvm::SubtargetFeatures features;
    for (const auto &feature : llvm::sys::getHostCPUFeatures())
      features.AddFeature(feature.first(), feature.second);
    target.features = features.getString();
    return target;
  }();
  return host;
}

llvm::Expected<CpuTarget> attn::getNamedCpuTarget(llvm::StringRef cpu) {
  CpuTarget target;
  target.triple = llvm::sys::getProcessTriple();
  target.cpu = cpu.str();
  llvm::Expected<const llvm::Target *> llvmTarget = lookupTarget(target.triple);
  if (!llvmTarget)
    return llvmTarget.takeError();
  std::unique_ptr<llvm::MCSubtargetInfo> info(
      (*llvmTarget)
          ->createMCSubtargetInfo(llvm::Triple(target.triple), target.cpu, ""));
  if (!info || !info->isCPUStringValid(target.cpu))
    return makeError("unknown CPU '" + cpu + "' for " + target.triple);
  return target;
}

llvm::Expected<std::unique_ptr<llvm::TargetMachine>>
attn::createCpuTargetMachine(const CpuTarget &target, unsigned optLevel) {
  llvm::Expected<const llvm::Target *> llvmTarget = lookupTarget(target.triple);
  if (!llvmTarget)
    return llvmTarget.takeError();
  llvm::TargetOptions options;
  std::unique_ptr<llvm::TargetMachine> tm(
      (*llvmTarget)
          ->createTargetMachine(llvm::Triple(target.triple), target.cpu,
                                target.features, options, llvm::Reloc::PIC_,
                                llvm::CodeModel::Small,
                                getCodeGenOptLevel(optLevel)));
  if (!tm)
    return makeError("cannot create a target machine for " + target.triple +
                     " (" + target.cpu + ")");
  return tm;
}
