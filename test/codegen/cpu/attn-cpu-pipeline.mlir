// RUN: attn-opt %s --attn-cpu-pipeline | FileCheck %s
// RUN: attn-opt %s --attn-cpu-pipeline | mlir-translate --mlir-to-llvmir | FileCheck %s --check-prefix=LLVMIR
// RUN: attn-opt %s --attn-cpu-pipeline="fused=false" | FileCheck %s --check-prefix=UNFUSED

// A causal cascade with bf16 inputs and a bf16 output: attn-raise makes it an
// attn.attention, attn-analyze-mask classifies its tiles, attn-fuse-online
// turns it into an OpenMP loop over (b, h, query tile) whose micro-kernels are
// vector FMAs and whose exp is a polynomial (no libm call), and only the llvm
// and omp dialects remain.

// CHECK-LABEL: llvm.func @causal
//       CHECK:   omp.parallel
//       CHECK:     omp.wsloop
//       CHECK:       omp.loop_nest
//       CHECK:         llvm.intr.fma({{.*}}) : (vector<16xf32>, vector<16xf32>, vector<16xf32>) -> vector<16xf32>
//   CHECK-NOT:   llvm.intr.exp(
//   CHECK-NOT:   attn.
//   CHECK-NOT:   memref.
//   CHECK-NOT:   scf.

// LLVMIR: call void {{.*}}@__kmpc_fork_call
// LLVMIR: call <16 x float> @llvm.fma.v16f32

// UNFUSED-LABEL: llvm.func @causal
//   UNFUSED-NOT:   omp.parallel



module {
  attn.kernel @causal attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %5 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %6 = arith.extf %5 : bf16 to f32
      %7 = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xbf16>
      %8 = arith.extf %7 : bf16 to f32
      %9 = arith.mulf %6, %8 : f32
      attn.yield %9 : f32
    }
    %1 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %5 = attn.read %0[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %6 = arith.index_cast %D : index to i64
      %7 = arith.sitofp %6 : i64 to f32
      %8 = math.rsqrt %7 : f32
      %9 = arith.mulf %5, %8 : f32
      attn.yield %9 : f32
    }
    %2 = attn.keep %1 ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %5 = arith.subi %N, %M : index
      %6 = arith.addi %m, %5 : index
      %7 = arith.cmpi sle, %n, %6 : index
      attn.yield %7 : i1
    }
    %3 = attn.softmax %2 dimension(3) : tensor<?x?x?x?xf32>
    %4 = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
      %5 = attn.read %3[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %6 = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xbf16>
      %7 = arith.extf %6 : bf16 to f32
      %8 = arith.mulf %5, %7 : f32
      attn.yield %8 : f32
    }
    attn.return %4 : tensor<?x?x?x?xf32>
  }
}

