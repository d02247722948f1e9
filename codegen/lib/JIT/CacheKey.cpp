//===- CacheKey.cpp - The key of a compiled kernel object -----------------===//

#include "attn/JIT/CacheKey.h"

#include "mlir/IR/OperationSupport.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/Endian.h"
#include "llvm/Support/SHA256.h"
#include "llvm/Support/raw_ostream.h"

#include "CodegenFingerprint.h"

#ifndef ATTN_VERSION
#define ATTN_VERSION "unknown"
#endif

using namespace attn;

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

CacheKey attn::computeCacheKey(mlir::ModuleOp module, const CpuTarget &target,
                               const mlir::attn::CpuPipelineOptions &pipeline,
                               unsigned optLevel) {
  KeyHasher hasher;
  hasher.add("attnc-cpu-kernel-object");
  // The compiler: a new attnc or LLVM may lower or optimize differently.
  hasher.add(ATTN_VERSION);
  hasher.add(ATTN_CODEGEN_FINGERPRINT);
  hasher.add(LLVM_VERSION_STRING);
  hasher.add(target.triple);
  hasher.add(target.cpu);
  hasher.add(target.features);
  hasher.addInt(optLevel);
  // Every field of CpuPipelineOptions; a new field must be added here.
  hasher.addInt(pipeline.fused);
  hasher.addInt(static_cast<uint64_t>(pipeline.queryTile));
  hasher.addInt(static_cast<uint64_t>(pipeline.keyTile));
  hasher.add(printCanonicalIR(module));
  return hasher.finish();
}
