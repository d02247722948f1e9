//===- OpenMPRuntime.cpp - libomp for the JIT-compiled kernels ------------===//

#include "attn/CPU/OpenMPRuntime.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Threading.h"

#include <mutex>
#include <string>

using namespace attn;

namespace {
/// libomp's own name for omp_set_num_threads, once libomp is in the
/// process. Not omp_set_num_threads itself: where another OpenMP runtime
/// was loaded first (PyTorch's libgomp), a search by that name finds it,
/// which neither runs the kernels' `__kmpc_*` calls nor counts as libomp.
using SetNumThreadsFn = void (*)(int);

SetNumThreadsFn findSetNumThreads() {
  return reinterpret_cast<SetNumThreadsFn>(
      llvm::sys::DynamicLibrary::SearchForAddressOfSymbol(
          "ompc_set_num_threads"));
}
} // namespace

llvm::Error attn::loadOpenMPRuntime() {
  static std::once_flag once;
  static std::string failure;
  std::call_once(once, [] {
    if (findSetNumThreads())
      return;
    llvm::SmallVector<std::string, 4> candidates;
    if (std::optional<std::string> path =
            llvm::sys::Process::GetEnv("ATTN_LIBOMP"))
      candidates.push_back(*path);
#ifdef ATTN_LLVM_LIBRARY_DIR
    candidates.push_back(ATTN_LLVM_LIBRARY_DIR "/libomp.so");
#endif
    candidates.push_back("libomp.so.5");
    candidates.push_back("libomp.so");
    std::string errors;
    for (const std::string &candidate : candidates) {
      std::string error;
      // Global visibility: the kernels' `__kmpc_*` references resolve
      // through the process's symbols.
      if (!llvm::sys::DynamicLibrary::LoadLibraryPermanently(candidate.c_str(),
                                                             &error))
        return;
      errors += "\n  " + error;
    }
    failure = "cannot load the OpenMP runtime (libomp; install "
              "libomp-22-dev or set ATTN_LIBOMP):" +
              errors;
  });
  if (!failure.empty())
    return llvm::createStringError(llvm::inconvertibleErrorCode(), failure);
  return llvm::Error::success();
}

bool attn::isOpenMPRuntimeLoaded() { return findSetNumThreads() != nullptr; }

void attn::setOpenMPThreads(unsigned threads) {
  static SetNumThreadsFn setNumThreads = nullptr;
  if (!setNumThreads)
    setNumThreads = findSetNumThreads();
  if (setNumThreads && threads > 0)
    setNumThreads(static_cast<int>(threads));
}

unsigned attn::getDefaultThreadCount() {
  return llvm::hardware_concurrency().compute_thread_count();
}
