// RUN: attn-opt %s --split-input-file --attn-check-only-llvm --verify-diagnostics | FileCheck %s

// Only llvm ops: the check passes and changes nothing.

// CHECK-LABEL: llvm.func @ok
llvm.func @ok() {
  llvm.return
}

// -----

// A leftover op is named.

llvm.func @leftover(%a: f32) -> f32 {
  // expected-error @below {{'math.tanh' was not lowered to the llvm dialect}}
  %t = math.tanh %a : f32
  llvm.return %t : f32
}
