//===- ObjectLoader.cpp - Loading kernel objects into the process ---------===//

#include "attn/CPU/ObjectLoader.h"
#include "attn/CPU/OpenMPRuntime.h"

#include "llvm/ExecutionEngine/Orc/ExecutionUtils.h"
#include "llvm/ExecutionEngine/Orc/LLJIT.h"
#include "llvm/Object/ObjectFile.h"

using namespace attn;

llvm::Expected<bool> attn::objectUsesOpenMP(llvm::MemoryBufferRef object) {
  llvm::Expected<std::unique_ptr<llvm::object::ObjectFile>> file =
      llvm::object::ObjectFile::createObjectFile(object);
  if (!file)
    return file.takeError();
  for (const llvm::object::SymbolRef &symbol : (*file)->symbols()) {
    llvm::Expected<uint32_t> flags = symbol.getFlags();
    if (!flags)
      return flags.takeError();
    if (!(*flags & llvm::object::SymbolRef::SF_Undefined))
      continue;
    llvm::Expected<llvm::StringRef> name = symbol.getName();
    if (!name)
      return name.takeError();
    if (name->starts_with("__kmpc_") || name->starts_with("omp_"))
      return true;
  }
  return false;
}

LoadedObject::~LoadedObject() = default;

llvm::Expected<std::unique_ptr<LoadedObject>>
LoadedObject::load(std::unique_ptr<llvm::MemoryBuffer> object,
                   const llvm::MemoryBuffer *support) {
  std::unique_ptr<LoadedObject> loaded(new LoadedObject());
  llvm::Expected<bool> openMP = objectUsesOpenMP(object->getMemBufferRef());
  if (!openMP)
    return openMP.takeError();
  loaded->openMP = *openMP;
  // Before the JIT resolves the object's symbols against the process.
  if (loaded->openMP)
    if (llvm::Error error = loadOpenMPRuntime())
      return std::move(error);

  llvm::Expected<std::unique_ptr<llvm::orc::LLJIT>> jit =
      llvm::orc::LLJITBuilder().setLinkProcessSymbolsByDefault(true).create();
  if (!jit)
    return jit.takeError();
  loaded->jit = std::move(*jit);
  if (llvm::Error error = loaded->jit->addObjectFile(std::move(object)))
    return std::move(error);
  if (support)
    if (llvm::Error error = loaded->jit->addObjectFile(
            llvm::MemoryBuffer::getMemBuffer(support->getMemBufferRef(),
                                             /*RequiresNullTerminator=*/false)))
      return std::move(error);
  return loaded;
}

llvm::Expected<void *> LoadedObject::lookup(llvm::StringRef name) {
  // Resolving the symbol links the object now, so link errors (an
  // unresolved symbol) belong to loading, not to the first run.
  llvm::Expected<llvm::orc::ExecutorAddr> address = jit->lookup(name);
  if (!address)
    return address.takeError();
  return address->toPtr<void *>();
}
