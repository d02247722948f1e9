// RUN: attn-opt %s --attn-unfused-cpu-pipeline | FileCheck %s
// RUN: attn-opt %s --attn-unfused-cpu-pipeline | mlir-translate --mlir-to-llvmir | FileCheck %s --check-prefix=LLVMIR

// A whole kernel (scores, a causal keep, softmax, P.V, an LSE output, a tanh
// softcap, bf16 inputs and a bf16 output) lowers to the llvm dialect only and
// translates to LLVM IR. Each memref argument is expanded into (allocated,
// aligned, offset, sizes..., strides...), as the JIT passes them.

// CHECK-LABEL: llvm.func @causal(
//  CHECK-SAME:   %{{.+}}: i64, %{{.+}}: i64, %{{.+}}: i64, %{{.+}}: i64, %{{.+}}: !llvm.ptr, %{{.+}}: !llvm.ptr, %{{.+}}: i64
//   CHECK-NOT:   func.func
//   CHECK-NOT:   linalg.
//   CHECK-NOT:   memref.
//   CHECK-DAG:   llvm.call @malloc
//   CHECK-DAG:   llvm.intr.exp
//   CHECK-DAG:   llvm.intr.tanh
//   CHECK-DAG:   llvm.intr.log
//       CHECK:   llvm.call @free
//       CHECK:   llvm.return

// LLVMIR-LABEL: define void @causal(
//       LLVMIR:   call ptr @malloc
//       LLVMIR:   call float @llvm.exp.f32
//       LLVMIR:   call void @free
//       LLVMIR:   ret void
attn.kernel @causal attributes {
    dim_names = ["B", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V"], param_names = ["scale"], param_defaults = [1.0 : f32],
    output_names = ["O", "LSE"], output_types = [bf16, f32],
    shapes = [["B", "M", "D"], ["B", "N", "D"], ["B", "N", "D"], ["B", "M", "D"], ["B", "M"]]} {
^bb0(%B: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x64xbf16>, %K: tensor<?x?x64xbf16>, %V: tensor<?x?x64xbf16>, %scale: f32):
  %S = attn.einsum <sum> ["b", "m", "n"] reduce ["d"] extents(%B, %M, %N, %D) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index, %d: index):
    %q = attn.read %Q[%b, %m, %d] : tensor<?x?x64xbf16>
    %k = attn.read %K[%b, %n, %d] : tensor<?x?x64xbf16>
    %qf = arith.extf %q : bf16 to f32
    %kf = arith.extf %k : bf16 to f32
    %p = arith.mulf %qf, %kf : f32
    %s = arith.mulf %p, %scale : f32
    attn.yield %s : f32
  }
  %capped = attn.einsum <none> ["b", "m", "n"] extents(%B, %M, %N) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index):
    %s = attn.read %S[%b, %m, %n] : tensor<?x?x?xf32>
    %cap = arith.constant 30.0 : f32
    %x = arith.divf %s, %cap : f32
    %t = math.tanh %x : f32
    %y = arith.mulf %t, %cap : f32
    attn.yield %y : f32
  }
  %kept = attn.keep %capped ["b", "m", "n"] : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %lim = arith.addi %m, %off : index
    %c = arith.cmpi sle, %n, %lim : index
    attn.yield %c : i1
  }
  %P = attn.softmax %kept dimension(2) : tensor<?x?x?xf32>
  %O = attn.einsum <sum> ["b", "m", "e"] reduce ["n"] extents(%B, %M, %D, %N) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %e: index, %n: index):
    %p = attn.read %P[%b, %m, %n] : tensor<?x?x?xf32>
    %v = attn.read %V[%b, %n, %e] : tensor<?x?x64xbf16>
    %vf = arith.extf %v : bf16 to f32
    %pv = arith.mulf %p, %vf : f32
    attn.yield %pv : f32
  }
  %L = attn.einsum <logsumexp> ["b", "m"] reduce ["n"] extents(%B, %M, %N) : tensor<?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index):
    %s = attn.read %kept[%b, %m, %n] : tensor<?x?x?xf32>
    attn.yield %s : f32
  }
  attn.return %O, %L : tensor<?x?x?xf32>, tensor<?x?xf32>
}
