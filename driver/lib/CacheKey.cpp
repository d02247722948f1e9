//===- CacheKey.cpp - The key of a compiled artifact ----------------------===//

#include "attn/Driver/CacheKey.h"

#include "mlir/IR/OperationSupport.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include "CodegenFingerprint.h"

#ifndef ATTN_VERSION
#define ATTN_VERSION "unknown"
#endif

using namespace attn;

std::string attn::toHex(const CacheKey &key) {
  return llvm::toHex(key, /*LowerCase=*/true);
}

std::string attn::printCanonicalIR(mlir::ModuleOp module) {
  mlir::OpPrintingFlags flags;
  flags.enableDebugInfo(false).printGenericOpForm().assumeVerified();
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os, flags);
  return text;
}

namespace {
/// Feeds length-prefixed fields, so that ("ab", "c") and ("a", "bc") differ.
class KeyHasher {
public:
  void add(llvm::StringRef field) {
    addInt(field.size());
    hasher.update(field);
  }
  void addInt(uint64_t value) {
    uint8_t bytes[8];
    llvm::support::endian::write64le(bytes, value);
    hasher.update(bytes);
  }
  CacheKey finish() { return hasher.final(); }

private:
  llvm::SHA256 hasher;
};
} // namespace

CacheKey attn::computeCacheKey(mlir::ModuleOp module, ArtifactKind kind,
                               llvm::ArrayRef<std::string> fields) {
  KeyHasher hasher;
  hasher.add("attnc-artifact");
  hasher.addInt(static_cast<uint32_t>(kind));
  // The compiler: a new attnc, code generator or LLVM may lower or optimize
  // differently.
  hasher.add(ATTN_VERSION);
  hasher.add(ATTN_CODEGEN_FINGERPRINT);
  hasher.add(LLVM_VERSION_STRING);
  hasher.addInt(fields.size());
  for (const std::string &field : fields)
    hasher.add(field);
  hasher.add(printCanonicalIR(module));
  return hasher.finish();
}
