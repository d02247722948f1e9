//===- ObjectLoader.h - Loading kernel objects into the process -*- C++ -*-===//
//
// Links a relocatable object into the running process with ORC's LLJIT.
// Undefined symbols resolve against the process (libm, libc) and, for
// objects that call the OpenMP runtime, against libomp.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_OBJECTLOADER_H
#define ATTN_CPU_OBJECTLOADER_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>

namespace llvm::orc {
class LLJIT;
} // namespace llvm::orc

namespace attn {

/// An object linked into the process; its code lives as long as this does.
class LoadedObject {
public:
  ~LoadedObject();

  /// Links `object`, and `support` (an object it calls, when given) beside
  /// it. Loads libomp first when the object references it.
  static llvm::Expected<std::unique_ptr<LoadedObject>>
  load(std::unique_ptr<llvm::MemoryBuffer> object,
       const llvm::MemoryBuffer *support = nullptr);

  /// The address of the function `name` (as written, unmangled).
  llvm::Expected<void *> lookup(llvm::StringRef name);

  /// Whether the object calls the OpenMP runtime (`__kmpc_*`).
  bool usesOpenMP() const { return openMP; }

private:
  LoadedObject() = default;

  std::unique_ptr<llvm::orc::LLJIT> jit;
  bool openMP = false;
};

/// Whether `object` has an undefined symbol of the OpenMP runtime.
llvm::Expected<bool> objectUsesOpenMP(llvm::MemoryBufferRef object);

} // namespace attn

#endif // ATTN_CPU_OBJECTLOADER_H
