//===- ObjectABI.h - How a harness calls a kernel object --------*- C++ -*-===//
//
// `attnc compile -o kernel.o` builds an object for a machine that has no
// LLVM; a harness there needs the symbols and the argument order, which
// this describes as JSON.
//
//===----------------------------------------------------------------------===//

#ifndef ATTN_CPU_OBJECTABI_H
#define ATTN_CPU_OBJECTABI_H

#include "attn/CPU/CpuKernel.h"
#include "attn/CPU/CpuTarget.h"

#include "llvm/Support/JSON.h"

namespace attn {

/// The ABI of `object`'s kernel: the direct symbol and its flattened
/// arguments (dims, inputs and outputs as unpacked memref descriptors,
/// params), the packed symbol, the target and the runtime libraries needed.
llvm::json::Object describeCpuKernelABI(const CpuKernelObject &object,
                                        const CpuTarget &target);

} // namespace attn

#endif // ATTN_CPU_OBJECTABI_H
