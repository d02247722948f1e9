// RUN: attn-opt %s --split-input-file --pass-pipeline='builtin.module(attn.kernel(attn-raise))' --verify-diagnostics | FileCheck %s

// Kernels are the front end's output for examples/*.attn (attnc compile
// --emit=attn), so the raise is tested on exactly what it will see.

// causal: the rsqrt(D) factor becomes the scale, the keep the mask.
// CHECK-LABEL: attn.kernel @causal
//   CHECK-NOT:   attn.einsum
//       CHECK:   %[[I:.+]] = arith.index_cast %D : index to i64
//  CHECK-NEXT:   %[[F:.+]] = arith.sitofp %[[I]] : i64 to f32
//  CHECK-NEXT:   %[[SCALE:.+]] = math.rsqrt %[[F]] : f32
//  CHECK-NEXT:   %[[O:.+]] = attn.attention <softmax> %Q, %K, %V scale(%[[SCALE]]) : tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16> -> tensor<?x?x?x?xf32> score_mod {
//  CHECK-NEXT:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//  CHECK-NEXT:     attn.yield %score : f32
//  CHECK-NEXT:   } mask {
//  CHECK-NEXT:   ^bb0(%b: index, %h: index, %m: index, %n: index):
//  CHECK-NEXT:     %[[OFF:.+]] = arith.subi %N, %M : index
//  CHECK-NEXT:     %[[LAST:.+]] = arith.addi %m, %[[OFF]] : index
//  CHECK-NEXT:     %[[KEEP:.+]] = arith.cmpi sle, %n, %[[LAST]] : index
//  CHECK-NEXT:     attn.yield %[[KEEP]] : i1
//  CHECK-NEXT:   }
//  CHECK-NEXT:   attn.return %[[O]] : tensor<?x?x?x?xf32>
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

// -----

// gqa: K and V are read at h / (H / G), the attention's own head map.
// CHECK-LABEL: attn.kernel @gqa
//   CHECK-NOT:   attn.einsum
//       CHECK:   %[[O:.+]] = attn.attention <softmax> %Q, %K, %V scale(%{{.+}}) : tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16> -> tensor<?x?x?x?xf32> score_mod {
//   CHECK-NOT:   attn.einsum
//       CHECK:   attn.return %[[O]]
module {
  attn.kernel @gqa attributes {dim_names = ["B", "H", "G", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "G", "N", "D"], ["B", "G", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %G: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %5 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %6 = arith.extf %5 : bf16 to f32
      %7 = arith.floordivsi %H, %G : index
      %8 = arith.floordivsi %h, %7 : index
      %9 = attn.read %K[%b, %8, %n, %d] : tensor<?x?x?x?xbf16>
      %10 = arith.extf %9 : bf16 to f32
      %11 = arith.mulf %6, %10 : f32
      attn.yield %11 : f32
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
      %6 = arith.floordivsi %H, %G : index
      %7 = arith.floordivsi %h, %6 : index
      %8 = attn.read %V[%b, %7, %n, %e] : tensor<?x?x?x?xbf16>
      %9 = arith.extf %8 : bf16 to f32
      %10 = arith.mulf %5, %9 : f32
      attn.yield %10 : f32
    }
    attn.return %4 : tensor<?x?x?x?xf32>
  }
}

// -----

// mqa: rank-3 K and V get a unit head axis.
// CHECK-LABEL: attn.kernel @mqa
//       CHECK:   %[[K:.+]] = tensor.expand_shape %K {{\[\[}}0, 1], [2], [3]] output_shape [%B, 1, %N, %D] : tensor<?x?x?xbf16> into tensor<?x1x?x?xbf16>
//       CHECK:   %[[V:.+]] = tensor.expand_shape %V {{\[\[}}0, 1], [2], [3]] output_shape [%B, 1, %N, %D] : tensor<?x?x?xbf16> into tensor<?x1x?x?xbf16>
//       CHECK:   attn.attention <softmax> %Q, %[[K]], %[[V]] scale(%{{.+}}) : tensor<?x?x?x?xbf16>, tensor<?x1x?x?xbf16>, tensor<?x1x?x?xbf16> -> tensor<?x?x?x?xf32>
module {
  attn.kernel @mqa attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "N", "D"], ["B", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?xbf16>, %V: tensor<?x?x?xbf16>):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %5 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %6 = arith.extf %5 : bf16 to f32
      %7 = attn.read %K[%b, %n, %d] : tensor<?x?x?xbf16>
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
      %6 = attn.read %V[%b, %n, %e] : tensor<?x?x?xbf16>
      %7 = arith.extf %6 : bf16 to f32
      %8 = arith.mulf %5, %7 : f32
      attn.yield %8 : f32
    }
    attn.return %4 : tensor<?x?x?x?xf32>
  }
}

// -----

// alibi: the bias after the scale reads Slopes from score_mod.
// CHECK-LABEL: attn.kernel @alibi
//       CHECK:   %[[SCALE:.+]] = math.rsqrt
//       CHECK:   attn.attention <softmax> %Q, %K, %V scale(%[[SCALE]])
//  CHECK-NEXT:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//  CHECK-NEXT:     %[[SLOPE:.+]] = attn.read %Slopes[%h] : tensor<?xf32>
//       CHECK:     %[[BIAS:.+]] = arith.mulf %[[SLOPE]], %{{.+}} : f32
//  CHECK-NEXT:     %[[S:.+]] = arith.addf %score, %[[BIAS]] : f32
//  CHECK-NEXT:     attn.yield %[[S]] : f32
//  CHECK-NEXT:   } mask {
module {
  attn.kernel @alibi attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V", "Slopes"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["H"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %Slopes: tensor<?xf32>):
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
      %10 = attn.read %Slopes[%h] : tensor<?xf32>
      %11 = arith.subi %n, %m : index
      %12 = arith.subi %N, %M : index
      %13 = arith.subi %11, %12 : index
      %14 = arith.index_cast %13 : index to i64
      %15 = arith.sitofp %14 : i64 to f32
      %16 = arith.mulf %10, %15 : f32
      %17 = arith.addf %9, %16 : f32
      attn.yield %17 : f32
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

// -----

// softcap: cap * tanh(s / cap) on the scaled score.
// CHECK-LABEL: attn.kernel @softcap
//       CHECK:   attn.attention <softmax> %Q, %K, %V scale(%{{.+}})
//  CHECK-NEXT:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//  CHECK-NEXT:     %[[X:.+]] = arith.divf %score, %cap : f32
//  CHECK-NEXT:     %[[T:.+]] = math.tanh %[[X]] : f32
//  CHECK-NEXT:     %[[S:.+]] = arith.mulf %cap, %[[T]] : f32
//  CHECK-NEXT:     attn.yield %[[S]] : f32
module {
  attn.kernel @softcap attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [bf16], param_defaults = [3.000000e+01 : f32], param_names = ["cap"], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %cap: f32):
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
      %10 = arith.divf %9, %cap : f32
      %11 = math.tanh %10 : f32
      %12 = arith.mulf %cap, %11 : f32
      attn.yield %12 : f32
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

// -----

// sink_logit: the sink einsum over [b, h, m] stays and feeds the sink operand.
// CHECK-LABEL: attn.kernel @sink_logit
//       CHECK:   %[[SINK:.+]] = attn.einsum <none> ["b", "h", "m"] extents(%B, %H, %M) : tensor<?x?x?xf32>
//       CHECK:   attn.attention <softmax> %Q, %K, %V scale(%{{.+}}) sink(%[[SINK]] : tensor<?x?x?xf32>) :
//   CHECK-NOT:   attn.softmax
module {
  attn.kernel @sink_logit attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V", "Sinks"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["H"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %Sinks: tensor<?xf32>):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %6 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %7 = arith.extf %6 : bf16 to f32
      %8 = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xbf16>
      %9 = arith.extf %8 : bf16 to f32
      %10 = arith.mulf %7, %9 : f32
      attn.yield %10 : f32
    }
    %1 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = attn.read %0[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %7 = arith.index_cast %D : index to i64
      %8 = arith.sitofp %7 : i64 to f32
      %9 = math.rsqrt %8 : f32
      %10 = arith.mulf %6, %9 : f32
      attn.yield %10 : f32
    }
    %2 = attn.keep %1 ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = arith.subi %N, %M : index
      %7 = arith.addi %m, %6 : index
      %8 = arith.cmpi sle, %n, %7 : index
      attn.yield %8 : i1
    }
    %3 = attn.einsum <none> ["b", "h", "m"] extents(%B, %H, %M) : tensor<?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index):
      %6 = attn.read %Sinks[%h] : tensor<?xf32>
      attn.yield %6 : f32
    }
    %4 = attn.softmax %2 dimension(3) sink(%3 : tensor<?x?x?xf32>) : tensor<?x?x?x?xf32>
    %5 = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
      %6 = attn.read %4[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %7 = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xbf16>
      %8 = arith.extf %7 : bf16 to f32
      %9 = arith.mulf %6, %8 : f32
      attn.yield %9 : f32
    }
    attn.return %5 : tensor<?x?x?x?xf32>
  }
}

// -----

// softplus: the softplus after the keep joins score_mod; normalize.
// CHECK-LABEL: attn.kernel @softplus
//       CHECK:   attn.attention <normalize> %Q, %K, %V scale(%{{.+}})
//  CHECK-NEXT:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//  CHECK-NEXT:     %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
//  CHECK-NEXT:     %[[POS:.+]] = arith.maximumf %score, %[[ZERO]] : f32
//  CHECK-NEXT:     %[[ABS:.+]] = math.absf %score : f32
//       CHECK:     attn.yield
//  CHECK-NEXT:   } mask {
//   CHECK-NOT:   attn.normalize
module {
  attn.kernel @softplus attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %6 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %7 = arith.extf %6 : bf16 to f32
      %8 = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xbf16>
      %9 = arith.extf %8 : bf16 to f32
      %10 = arith.mulf %7, %9 : f32
      attn.yield %10 : f32
    }
    %1 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = attn.read %0[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %7 = arith.index_cast %D : index to i64
      %8 = arith.sitofp %7 : i64 to f32
      %9 = math.rsqrt %8 : f32
      %10 = arith.mulf %6, %9 : f32
      attn.yield %10 : f32
    }
    %2 = attn.keep %1 ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = arith.subi %N, %M : index
      %7 = arith.addi %m, %6 : index
      %8 = arith.cmpi sle, %n, %7 : index
      attn.yield %8 : i1
    }
    %3 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = attn.read %2[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %cst = arith.constant 0.000000e+00 : f32
      %7 = arith.maximumf %6, %cst : f32
      %8 = math.absf %6 : f32
      %9 = arith.negf %8 : f32
      %10 = math.exp %9 : f32
      %11 = math.log1p %10 : f32
      %12 = arith.addf %7, %11 : f32
      attn.yield %12 : f32
    }
    %4 = attn.normalize %3 dimension(3) : tensor<?x?x?x?xf32>
    %5 = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
      %6 = attn.read %4[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %7 = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xbf16>
      %8 = arith.extf %7 : bf16 to f32
      %9 = arith.mulf %6, %8 : f32
      attn.yield %9 : f32
    }
    attn.return %5 : tensor<?x?x?x?xf32>
  }
}

// -----

// normalize with a weight map: the map stays on the attention (it is not
// score_mod), so that backends keep the row relative to its max.
// CHECK-LABEL: attn.kernel @softplus_map
//       CHECK:   attn.attention <normalize> map(<exp>) %Q, %K, %V scale(%{{.+}})
//  CHECK-NEXT:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//  CHECK-NEXT:     attn.yield %score : f32
//  CHECK-NEXT:   } mask {
//   CHECK-NOT:   attn.normalize
module {
  attn.kernel @softplus_map attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [f32], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xf32>, %K: tensor<?x?x?x?xf32>, %V: tensor<?x?x?x?xf32>):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %6 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xf32>
      %8 = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xf32>
      %10 = arith.mulf %6, %8 : f32
      attn.yield %10 : f32
    }
    %2 = attn.keep %0 ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %8 = arith.cmpi sle, %n, %m : index
      attn.yield %8 : i1
    }
    %4 = attn.normalize %2 dimension(3) map(<exp>) : tensor<?x?x?x?xf32>
    %5 = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
      %6 = attn.read %4[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %7 = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xf32>
      %9 = arith.mulf %6, %7 : f32
      attn.yield %9 : f32
    }
    attn.return %5 : tensor<?x?x?x?xf32>
  }
}

// -----

// sigmoid: no normalizer, the sigmoid is score_mod.
// CHECK-LABEL: attn.kernel @sigmoid
//       CHECK:   attn.attention <none> %Q, %K, %V scale(%{{.+}})
//  CHECK-NEXT:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//  CHECK-NEXT:     %[[X:.+]] = arith.addf %score, %bias : f32
//  CHECK-NEXT:     arith.negf %[[X]] : f32
module {
  attn.kernel @sigmoid attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [bf16], param_defaults = [-8.000000e+00 : f32], param_names = ["bias"], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %bias: f32):
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
    %3 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %5 = attn.read %2[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %6 = arith.addf %5, %bias : f32
      %7 = arith.negf %6 : f32
      %8 = math.exp %7 : f32
      %cst = arith.constant 1.000000e+00 : f32
      %9 = arith.addf %cst, %8 : f32
      %10 = arith.divf %cst, %9 : f32
      attn.yield %10 : f32
    }
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

// -----

// lse_output: the logsumexp of the masked scores becomes the LSE result.
// CHECK-LABEL: attn.kernel @lse_output
//   CHECK-NOT:   attn.einsum
//       CHECK:   %[[R:.+]]:2 = attn.attention <softmax> %Q, %K, %V scale(%{{.+}}) : tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16> -> tensor<?x?x?x?xf32>, tensor<?x?x?xf32> score_mod {
//   CHECK-NOT:   attn.einsum
//       CHECK:   attn.return %[[R]]#0, %[[R]]#1 : tensor<?x?x?x?xf32>, tensor<?x?x?xf32>
module {
  attn.kernel @lse_output attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O", "LSE"], output_types = [bf16, f32], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"], ["B", "H", "M"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %6 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %7 = arith.extf %6 : bf16 to f32
      %8 = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xbf16>
      %9 = arith.extf %8 : bf16 to f32
      %10 = arith.mulf %7, %9 : f32
      attn.yield %10 : f32
    }
    %1 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = attn.read %0[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %7 = arith.index_cast %D : index to i64
      %8 = arith.sitofp %7 : i64 to f32
      %9 = math.rsqrt %8 : f32
      %10 = arith.mulf %6, %9 : f32
      attn.yield %10 : f32
    }
    %2 = attn.keep %1 ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = arith.subi %N, %M : index
      %7 = arith.addi %m, %6 : index
      %8 = arith.cmpi sle, %n, %7 : index
      attn.yield %8 : i1
    }
    %3 = attn.softmax %2 dimension(3) : tensor<?x?x?x?xf32>
    %4 = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
      %6 = attn.read %3[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %7 = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xbf16>
      %8 = arith.extf %7 : bf16 to f32
      %9 = arith.mulf %6, %8 : f32
      attn.yield %9 : f32
    }
    %5 = attn.einsum <logsumexp> ["b", "h", "m"] reduce ["n"] extents(%B, %H, %M, %N) : tensor<?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %6 = attn.read %2[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      attn.yield %6 : f32
    }
    attn.return %4, %5 : tensor<?x?x?x?xf32>, tensor<?x?x?xf32>
  }
}

// -----

// document_mask: the mask reads Doc.
// CHECK-LABEL: attn.kernel @document_mask
//       CHECK:   } mask {
//  CHECK-NEXT:   ^bb0(%b: index, %h: index, %m: index, %n: index):
//       CHECK:     attn.read %Doc[%b, %n] : tensor<?x?xi32>
//       CHECK:     arith.cmpi ne, %{{.+}}, %{{.+}} : index
//       CHECK:     attn.yield %{{.+}} : i1
module {
  attn.kernel @document_mask attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V", "Doc"], output_names = ["O"], output_types = [bf16], param_defaults = [-1 : i32], param_names = ["pad"], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "N"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %Doc: tensor<?x?xi32>, %pad: i32):
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
      %8 = attn.read %Doc[%b, %n] : tensor<?x?xi32>
      %9 = arith.index_cast %8 : i32 to index
      %10 = arith.subi %N, %M : index
      %11 = arith.addi %m, %10 : index
      %12 = attn.read %Doc[%b, %11] : tensor<?x?xi32>
      %13 = arith.index_cast %12 : i32 to index
      %14 = arith.cmpi eq, %9, %13 : index
      %15 = arith.andi %7, %14 : i1
      %16 = attn.read %Doc[%b, %n] : tensor<?x?xi32>
      %17 = arith.index_cast %16 : i32 to index
      %18 = arith.index_cast %pad : i32 to index
      %19 = arith.cmpi ne, %17, %18 : index
      %20 = arith.andi %15, %19 : i1
      attn.yield %20 : i1
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

// -----

// duo_attention: GQA with a per-head mask; the keep's hint moves over.
// CHECK-LABEL: attn.kernel @duo_attention
//       CHECK:   attn.attention <softmax> %Q, %K, %V scale(%{{.+}}) {per_head} :
//       CHECK:     attn.read %Streaming[%h] : tensor<?xi1>
module {
  attn.kernel @duo_attention attributes {dim_names = ["B", "H", "G", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V", "Streaming"], output_names = ["O"], output_types = [bf16], param_defaults = [256 : i32, 16 : i32], param_names = ["window", "sinks"], shapes = [["B", "H", "M", "D"], ["B", "G", "N", "D"], ["B", "G", "N", "D"], ["H"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %G: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %Streaming: tensor<?xi1>, %window: i32, %sinks: i32):
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %5 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %6 = arith.extf %5 : bf16 to f32
      %7 = arith.floordivsi %H, %G : index
      %8 = arith.floordivsi %h, %7 : index
      %9 = attn.read %K[%b, %8, %n, %d] : tensor<?x?x?x?xbf16>
      %10 = arith.extf %9 : bf16 to f32
      %11 = arith.mulf %6, %10 : f32
      attn.yield %11 : f32
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
    %2 = attn.keep %1 ["b", "h", "m", "n"] {per_head} : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %5 = arith.subi %N, %M : index
      %6 = arith.addi %m, %5 : index
      %7 = arith.cmpi sle, %n, %6 : index
      %8 = attn.read %Streaming[%h] : tensor<?xi1>
      %true = arith.constant true
      %9 = arith.xori %8, %true : i1
      %10 = arith.subi %N, %M : index
      %11 = arith.addi %m, %10 : index
      %12 = arith.subi %11, %n : index
      %13 = arith.index_cast %window : i32 to index
      %14 = arith.cmpi slt, %12, %13 : index
      %15 = arith.ori %9, %14 : i1
      %16 = arith.index_cast %sinks : i32 to index
      %17 = arith.cmpi slt, %n, %16 : index
      %18 = arith.ori %15, %17 : i1
      %19 = arith.andi %7, %18 : i1
      attn.yield %19 : i1
    }
    %3 = attn.softmax %2 dimension(3) : tensor<?x?x?x?xf32>
    %4 = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
      %5 = attn.read %3[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %6 = arith.floordivsi %H, %G : index
      %7 = arith.floordivsi %h, %6 : index
      %8 = attn.read %V[%b, %7, %n, %e] : tensor<?x?x?x?xbf16>
      %9 = arith.extf %8 : bf16 to f32
      %10 = arith.mulf %5, %9 : f32
      attn.yield %10 : f32
    }
    attn.return %4 : tensor<?x?x?x?xf32>
  }
}

// -----

// sinks_fixed: the sinks hint moves over.
// CHECK-LABEL: attn.kernel @sinks_fixed
//       CHECK:   attn.attention <softmax> %Q, %K, %V scale(%{{.+}}) {sinks = 4 : i64} :
module {
  attn.kernel @sinks_fixed attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O"], output_types = [bf16], param_defaults = [256 : i32], param_names = ["window"], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %window: i32):
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
    %2 = attn.keep %1 ["b", "h", "m", "n"] {sinks = 4 : i64} : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %5 = arith.subi %N, %M : index
      %6 = arith.addi %m, %5 : index
      %7 = arith.cmpi sle, %n, %6 : index
      %8 = arith.subi %N, %M : index
      %9 = arith.addi %m, %8 : index
      %10 = arith.subi %9, %n : index
      %11 = arith.index_cast %window : i32 to index
      %12 = arith.cmpi slt, %10, %11 : index
      %c4 = arith.constant 4 : index
      %13 = arith.cmpi slt, %n, %c4 : index
      %14 = arith.ori %12, %13 : i1
      %15 = arith.andi %7, %14 : i1
      attn.yield %15 : i1
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

// -----

// paged_kv: K and V go through the page table; stays a cascade.
// CHECK-LABEL: attn.kernel @paged_kv
//   CHECK-NOT:   attn.attention
//       CHECK:   attn.softmax
module {
  attn.kernel @paged_kv attributes {dim_names = ["B", "H", "G", "M", "N", "D", "P", "NP"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "Kc", "Vc", "Pages"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["P", 16, "G", "D"], ["P", 16, "G", "D"], ["B", "NP"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %G: index, %M: index, %N: index, %D: index, %P: index, %NP: index, %Q: tensor<?x?x?x?xbf16>, %Kc: tensor<?x16x?x?xbf16>, %Vc: tensor<?x16x?x?xbf16>, %Pages: tensor<?x?xi32>):
    // expected-remark @below {{not raised: the key is read through a gather (subscript 0 depends on a tensor read)}}
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %5 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %6 = arith.extf %5 : bf16 to f32
      %c16 = arith.constant 16 : index
      %7 = arith.floordivsi %n, %c16 : index
      %8 = attn.read %Pages[%b, %7] : tensor<?x?xi32>
      %9 = arith.index_cast %8 : i32 to index
      %c16_0 = arith.constant 16 : index
      %10 = arith.remsi %n, %c16_0 : index
      %c0 = arith.constant 0 : index
      %11 = arith.cmpi ne, %10, %c0 : index
      %12 = arith.cmpi slt, %10, %c0 : index
      %13 = arith.cmpi slt, %c16_0, %c0 : index
      %14 = arith.xori %12, %13 : i1
      %15 = arith.andi %11, %14 : i1
      %16 = arith.addi %10, %c16_0 : index
      %17 = arith.select %15, %16, %10 : index
      %18 = arith.floordivsi %H, %G : index
      %19 = arith.floordivsi %h, %18 : index
      %20 = attn.read %Kc[%9, %17, %19, %d] : tensor<?x16x?x?xbf16>
      %21 = arith.extf %20 : bf16 to f32
      %22 = arith.mulf %6, %21 : f32
      attn.yield %22 : f32
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
      %c16 = arith.constant 16 : index
      %6 = arith.floordivsi %n, %c16 : index
      %7 = attn.read %Pages[%b, %6] : tensor<?x?xi32>
      %8 = arith.index_cast %7 : i32 to index
      %c16_0 = arith.constant 16 : index
      %9 = arith.remsi %n, %c16_0 : index
      %c0 = arith.constant 0 : index
      %10 = arith.cmpi ne, %9, %c0 : index
      %11 = arith.cmpi slt, %9, %c0 : index
      %12 = arith.cmpi slt, %c16_0, %c0 : index
      %13 = arith.xori %11, %12 : i1
      %14 = arith.andi %10, %13 : i1
      %15 = arith.addi %9, %c16_0 : index
      %16 = arith.select %14, %15, %9 : index
      %17 = arith.floordivsi %H, %G : index
      %18 = arith.floordivsi %h, %17 : index
      %19 = attn.read %Vc[%8, %16, %18, %e] : tensor<?x16x?x?xbf16>
      %20 = arith.extf %19 : bf16 to f32
      %21 = arith.mulf %5, %20 : f32
      attn.yield %21 : f32
    }
    attn.return %4 : tensor<?x?x?x?xf32>
  }
}

// -----

// causal with the weights P also returned: the fused op would not produce them.
// CHECK-LABEL: attn.kernel @returns_weights
//   CHECK-NOT:   attn.attention
//       CHECK:   %[[P:.+]] = attn.softmax
//       CHECK:   attn.return %{{.+}}, %[[P]]
module {
  attn.kernel @returns_weights attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V"], output_names = ["O", "P"], output_types = [bf16, f32], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"], ["B", "H", "M", "N"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>):
    // expected-remark @below {{not raised: the weights tensor P is also returned as an output}}
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
    attn.return %4, %3 : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>
  }
}

// -----

// sink_reweight: the softmax weights are rescaled and renormalized.
// CHECK-LABEL: attn.kernel @sink_reweight
//   CHECK-NOT:   attn.attention
//       CHECK:   attn.normalize
module {
  attn.kernel @sink_reweight attributes {dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>, input_names = ["Q", "K", "V", "Gamma"], output_names = ["O"], output_types = [bf16], param_defaults = [], param_names = [], shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["H"], ["B", "H", "M", "D"]]} {
  ^bb0(%B: index, %H: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x?x?xbf16>, %K: tensor<?x?x?x?xbf16>, %V: tensor<?x?x?x?xbf16>, %Gamma: tensor<?xf32>):
    // expected-remark @below {{not raised: the weights are modified by an elementwise einsum before the weighted sum}}
    %0 = attn.einsum <sum> ["b", "h", "m", "n"] reduce ["d"] extents(%B, %H, %M, %N, %D) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index, %d: index):
      %7 = attn.read %Q[%b, %h, %m, %d] : tensor<?x?x?x?xbf16>
      %8 = arith.extf %7 : bf16 to f32
      %9 = attn.read %K[%b, %h, %n, %d] : tensor<?x?x?x?xbf16>
      %10 = arith.extf %9 : bf16 to f32
      %11 = arith.mulf %8, %10 : f32
      attn.yield %11 : f32
    }
    %1 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %7 = attn.read %0[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %8 = arith.index_cast %D : index to i64
      %9 = arith.sitofp %8 : i64 to f32
      %10 = math.rsqrt %9 : f32
      %11 = arith.mulf %7, %10 : f32
      attn.yield %11 : f32
    }
    %2 = attn.keep %1 ["b", "h", "m", "n"] : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %7 = arith.subi %N, %M : index
      %8 = arith.addi %m, %7 : index
      %9 = arith.cmpi sle, %n, %8 : index
      attn.yield %9 : i1
    }
    %3 = attn.softmax %2 dimension(3) : tensor<?x?x?x?xf32>
    %4 = attn.einsum <none> ["b", "h", "m", "n"] extents(%B, %H, %M, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %n: index):
      %7 = attn.read %3[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %c0 = arith.constant 0 : index
      %8 = arith.cmpi eq, %n, %c0 : index
      %9 = attn.read %Gamma[%h] : tensor<?xf32>
      %10 = math.absf %9 : f32
      %cst = arith.constant 1.000000e+00 : f32
      %11 = arith.select %8, %10, %cst : f32
      %12 = arith.mulf %7, %11 : f32
      attn.yield %12 : f32
    }
    %5 = attn.normalize %4 dimension(3) : tensor<?x?x?x?xf32>
    %6 = attn.einsum <sum> ["b", "h", "m", "e"] reduce ["n"] extents(%B, %H, %M, %D, %N) : tensor<?x?x?x?xf32> {
    ^bb0(%b: index, %h: index, %m: index, %e: index, %n: index):
      %7 = attn.read %5[%b, %h, %m, %n] : tensor<?x?x?x?xf32>
      %8 = attn.read %V[%b, %h, %n, %e] : tensor<?x?x?x?xbf16>
      %9 = arith.extf %8 : bf16 to f32
      %10 = arith.mulf %7, %9 : f32
      attn.yield %10 : f32
    }
    attn.return %6 : tensor<?x?x?x?xf32>
  }
}
