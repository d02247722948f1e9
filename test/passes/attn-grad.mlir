// RUN: attn-opt %s --split-input-file --attn-grad --verify-diagnostics | FileCheck %s

// The signature: inputs, then one adjoint per float output; one gradient per
// float input, none for the integer table. A read through a plain index maps
// that index; the reduction of the forward becomes the reduction of the
// adjoint (dX[m, n] = dY[m] * W[m, n]).

// CHECK-LABEL: attn.kernel @rowdot_grad
//  CHECK-SAME: input_names = ["X", "W", "Ids", "dY"]
//  CHECK-SAME: output_names = ["dX", "dW"]
//       CHECK: ^bb0(%M: index, %N: index, %X: tensor<?x?xf32>, %W: tensor<?x?xf32>, %Ids: tensor<?xi32>, %dY: tensor<?xf32>):
//       CHECK:   attn.einsum <sum> ["m", "n"] reduce ["z"]
//       CHECK:     %[[W:.+]] = attn.read %W[%m, %n]
//       CHECK:     %[[DY:.+]] = attn.read %dY[%m]
//       CHECK:     arith.mulf %[[DY]], %{{.+}}
//       CHECK:     arith.cmpi eq, %z, %{{.+}}
//       CHECK:   attn.return
attn.kernel @rowdot attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X", "W", "Ids"], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M", "N"], ["M", "N"], ["M"], ["M"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>, %W: tensor<?x?xf32>, %Ids: tensor<?xi32>):
  %y = attn.einsum <sum> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    %w = attn.read %W[%m, %n] : tensor<?x?xf32>
    %p = arith.mulf %x, %w : f32
    attn.yield %p : f32
  }
  attn.return %y : tensor<?xf32>
}

// -----

// A subscript that is not a plain index (the key head h / 2) gets a fresh
// index and a guard, and the query heads are summed over.

// CHECK-LABEL: attn.kernel @grouped_grad
//       CHECK:   attn.einsum <sum> ["x0", "n"] reduce ["h"]
//       CHECK:     %[[G:.+]] = arith.divui %h, %{{.+}} : index
//       CHECK:     %[[SAME:.+]] = arith.cmpi eq, %[[G]], %x0 : index
//       CHECK:     arith.select %[[SAME]]
attn.kernel @grouped attributes {
    dim_names = ["H", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["K"], param_names = [], param_defaults = [],
    output_names = ["S"], output_types = [f32],
    shapes = [["H", "N"], ["H", "N"]]} {
^bb0(%H: index, %N: index, %K: tensor<?x?xf32>):
  %s = attn.einsum <none> ["h", "n"] extents(%H, %N) : tensor<?x?xf32> {
  ^bb0(%h: index, %n: index):
    %c2 = arith.constant 2 : index
    %g = arith.divui %h, %c2 : index
    %k = attn.read %K[%g, %n] : tensor<?x?xf32>
    %e = math.exp %k : f32
    attn.yield %e : f32
  }
  attn.return %s : tensor<?x?xf32>
}

// -----

// Softmax: Delta = sum P dP over the row, dS = P (dP - Delta); the sink
// logit gets -sigmoid(z - LSE) Delta with the LSE of the kept scores.

// CHECK-LABEL: attn.kernel @softmax_sink_grad
//       CHECK:   %[[DELTA:.+]] = attn.einsum <sum> ["i0"] reduce ["i1"]
//       CHECK:     arith.mulf
//       CHECK:   attn.einsum <sum> ["i0", "i1"] reduce ["z"]
//       CHECK:     %[[P:.+]] = attn.read %{{.+}}[%i0, %i1]
//       CHECK:     %[[G:.+]] = attn.read %{{.+}}[%i0, %i1]
//       CHECK:     %[[D:.+]] = attn.read %[[DELTA]][%i0]
//       CHECK:     arith.subf %[[G]], %[[D]]
//       CHECK:   %[[LSE:.+]] = attn.einsum <logsumexp> ["i0"] reduce ["i1"]
//       CHECK:   attn.einsum <sum> ["i0"] reduce ["z"]
//       CHECK:     attn.read %[[LSE]][%i0]
//       CHECK:     math.exp
//       CHECK:     arith.negf
attn.kernel @softmax_sink attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["S", "Z"], param_names = [], param_defaults = [],
    output_names = ["P"], output_types = [f32],
    shapes = [["M", "N"], ["M"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %S: tensor<?x?xf32>, %Z: tensor<?xf32>):
  %kept = attn.keep %S ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  %z = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %v = attn.read %Z[%m] : tensor<?xf32>
    attn.yield %v : f32
  }
  %p = attn.softmax %kept dimension(1) sink(%z : tensor<?xf32>) : tensor<?x?xf32>
  attn.return %p : tensor<?x?xf32>
}

// -----

// normalize with the softplus map: the factor sigmoid(s) / softplus(s),
// 1 in the exponential tail.

// CHECK-LABEL: attn.kernel @softplus_grad
//       CHECK:   attn.einsum <sum> ["i0", "i1"] reduce ["z"]
//       CHECK:     arith.divf
//       CHECK:     math.log1p
//       CHECK:     arith.cmpf olt, %{{.+}}, %{{.+}}
//       CHECK:     arith.select
attn.kernel @softplus attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["S"], param_names = [], param_defaults = [],
    output_names = ["P"], output_types = [f32],
    shapes = [["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %S: tensor<?x?xf32>):
  %p = attn.normalize %S dimension(1) map(<softplus>) : tensor<?x?xf32>
  attn.return %p : tensor<?x?xf32>
}

// -----

// normalize without a map: (dP - Delta) / the row's sum.

// CHECK-LABEL: attn.kernel @plain_normalize_grad
//       CHECK:   %[[DELTA:.+]] = attn.einsum <sum> ["i0"] reduce ["i1"]
//       CHECK:   %[[SUM:.+]] = attn.einsum <sum> ["i0"] reduce ["i1"]
//       CHECK:   attn.einsum <sum> ["i0", "i1"] reduce ["z"]
//       CHECK:     attn.read %[[SUM]][%i0]
attn.kernel @plain_normalize attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["S"], param_names = [], param_defaults = [],
    output_names = ["P"], output_types = [f32],
    shapes = [["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %S: tensor<?x?xf32>):
  %p = attn.normalize %S dimension(1) : tensor<?x?xf32>
  attn.return %p : tensor<?x?xf32>
}

// -----

// max sends its adjoint to the first extreme term: the position of the
// first term equal to the max, by a min reduction; logsumexp weighs its
// terms by exp(y - T); mean divides by the count of present terms.

// CHECK-LABEL: attn.kernel @reductions_grad
//       CHECK:   %[[FIRST:.+]] = attn.einsum <min> ["m"] reduce ["n"]
//       CHECK:     arith.cmpf oeq
//       CHECK:     arith.sitofp
//       CHECK:   attn.einsum <sum> ["m", "n"] reduce ["z"]
//       CHECK:     attn.read %[[FIRST]][%m]
//       CHECK:   attn.einsum <sum> ["m", "n"] reduce ["z"]
//       CHECK:     math.exp
//       CHECK:   %[[COUNT:.+]] = attn.einsum <sum> ["m"] reduce ["n"]
//       CHECK:   attn.einsum <sum> ["m", "n"] reduce ["z"]
//       CHECK:     attn.read %[[COUNT]][%m]
attn.kernel @reductions attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["Mean", "LSE", "Max"], output_types = [f32, f32, f32],
    shapes = [["M", "N"], ["M"], ["M"], ["M"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %mean = attn.einsum <mean> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %lse = attn.einsum <logsumexp> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  %max = attn.einsum <max> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  attn.return %mean, %lse, %max : tensor<?xf32>, tensor<?xf32>, tensor<?xf32>
}

// -----

// One rule per scalar op: d tanh = (1 - y^2) dx, d log = dx / x,
// d (a / b) = (da - y db) / b, d max selects the operand it takes.

// CHECK-LABEL: attn.kernel @rules_grad
//       CHECK:   attn.einsum <sum> ["m"] reduce ["z"]
//       CHECK:     %[[T:.+]] = math.tanh %[[X:.+]] : f32
//       CHECK:     %[[L:.+]] = math.log %[[X]] : f32
//       CHECK:     %[[Q:.+]] = arith.divf %[[T]], %[[L]] : f32
//       CHECK:     %[[SQ:.+]] = arith.mulf %[[T]], %[[T]] : f32
//       CHECK:     arith.subf %{{.+}}, %[[SQ]] : f32
//       CHECK:     arith.divf %{{.+}}, %[[X]] : f32
//       CHECK:     arith.mulf %[[Q]], %{{.+}} : f32
//       CHECK:     arith.cmpf oge, %[[Q]], %{{.+}} : f32
attn.kernel @rules attributes {
    dim_names = ["M"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M"], ["M"]]} {
^bb0(%M: index, %X: tensor<?xf32>):
  %y = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %x = attn.read %X[%m] : tensor<?xf32>
    %t = math.tanh %x : f32
    %l = math.log %x : f32
    %q = arith.divf %t, %l : f32
    %c = arith.constant 0.5 : f32
    %r = arith.maximumf %q, %c : f32
    attn.yield %r : f32
  }
  attn.return %y : tensor<?xf32>
}

// -----

// A kernel with no float input has nothing to differentiate.

// expected-error @below {{attn-grad: the kernel has no float input to differentiate}}
attn.kernel @integers_only attributes {
    dim_names = ["M"], dim_sizes = array<i64: -9223372036854775808>,
    input_names = ["Ids"], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M"], ["M"]]} {
^bb0(%M: index, %Ids: tensor<?xi32>):
  %y = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %i = attn.read %Ids[%m] : tensor<?xi32>
    %f = arith.sitofp %i : i32 to f32
    attn.yield %f : f32
  }
  attn.return %y : tensor<?xf32>
}

// -----

// A raised kernel: the recomputed attn.attention gets an LSE result, and its
// adjoint is attn.attention_backward with the same regions, reading O, the
// LSE and dO.

// CHECK-LABEL: attn.kernel @raised_grad
//       CHECK:   %[[FWD:.+]]:2 = attn.attention <softmax> %Q, %K, %V scale(%{{.+}}) : {{.+}} -> tensor<?x?x?x16xf32>, tensor<?x?x?xf32> score_mod {
//       CHECK:   %[[BWD:.+]]:3 = attn.attention_backward <softmax> %Q, %K, %V, %[[FWD]]#0, %[[FWD]]#1, %dO scale(%{{.+}})
//       CHECK:     math.tanh
//       CHECK:   } mask {
//       CHECK:     arith.cmpi sle
//       CHECK:   attn.return %[[BWD]]#0, %[[BWD]]#1, %[[BWD]]#2
attn.kernel @raised attributes {
    dim_names = ["B", "H", "M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", 16], ["B", "H", "N", 16], ["B", "H", "N", 16], ["B", "H", "M", 16]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %Q: tensor<?x?x?x16xf32>, %K: tensor<?x?x?x16xf32>, %V: tensor<?x?x?x16xf32>):
  %scale = arith.constant 0.25 : f32
  %o = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %t = math.tanh %s : f32
    attn.yield %t : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  attn.return %o : tensor<?x?x?x16xf32>
}

// -----

// An LSE output with an adjoint: it becomes the backward's lse_grad, beside
// the sink (the backward lowers Delta by it for the scores only; see
// attn.attention_backward).

// CHECK-LABEL: attn.kernel @raised_lse_grad
//  CHECK-SAME:   input_names = ["Q", "K", "V", "Sinks", "dO", "dLSE"]
//  CHECK-SAME:   output_names = ["dQ", "dK", "dV", "dSinks"]
//       CHECK:   %[[FWD:.+]]:2 = attn.attention <softmax> %Q, %K, %V scale(%{{.+}}) sink(%Sinks : tensor<?x?x?xf32>)
//       CHECK:   %[[BWD:.+]]:4 = attn.attention_backward <softmax> %Q, %K, %V, %[[FWD]]#0, %[[FWD]]#1, %dO scale(%{{.+}}) sink(%Sinks : tensor<?x?x?xf32>) lse_grad(%dLSE : tensor<?x?x?xf32>)
//       CHECK:   attn.return %[[BWD]]#0, %[[BWD]]#1, %[[BWD]]#2, %[[BWD]]#3
attn.kernel @raised_lse attributes {
    dim_names = ["B", "H", "M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V", "Sinks"], param_names = [], param_defaults = [],
    output_names = ["O", "LSE"], output_types = [f32, f32],
    shapes = [["B", "H", "M", 16], ["B", "H", "N", 16], ["B", "H", "N", 8], ["B", "H", "M"], ["B", "H", "M", 8], ["B", "H", "M"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %Q: tensor<?x?x?x16xf32>, %K: tensor<?x?x?x16xf32>, %V: tensor<?x?x?x8xf32>, %Sinks: tensor<?x?x?xf32>):
  %scale = arith.constant 0.25 : f32
  %o, %lse = attn.attention <softmax> %Q, %K, %V scale(%scale) sink(%Sinks : tensor<?x?x?xf32>)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x8xf32> -> tensor<?x?x?x8xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  attn.return %o, %lse : tensor<?x?x?x8xf32>, tensor<?x?x?xf32>
}

// -----

// Only the LSE reaches the outputs, twice: its adjoint is the sum of dLSE
// and the einsum's contribution, over [B, H, M]; O's adjoint is zeros of
// O's shape [B, H, M, E].

// CHECK-LABEL: attn.kernel @raised_lse_only_grad
//       CHECK:   %[[FWD:.+]]:2 = attn.attention <softmax>
//       CHECK:   %[[PART:.+]] = attn.einsum <sum> ["b", "h", "m"] reduce ["z"]
//       CHECK:   %[[DLSE:.+]] = attn.einsum <none> ["i0", "i1", "i2"] extents(%B, %H, %M) : tensor<?x?x?xf32> {
//       CHECK:     attn.read %dLSE
//       CHECK:     attn.read %[[PART]]
//       CHECK:   %[[C8:.+]] = arith.constant 8 : index
//       CHECK:   %[[DO:.+]] = attn.einsum <none> ["i0", "i1", "i2", "i3"] extents(%B, %H, %M, %[[C8]]) : tensor<?x?x?x8xf32> {
//       CHECK:   attn.attention_backward <softmax> %Q, %K, %V, %[[FWD]]#0, %[[FWD]]#1, %[[DO]] scale(%{{.+}}) lse_grad(%[[DLSE]] : tensor<?x?x?xf32>)
attn.kernel @raised_lse_only attributes {
    dim_names = ["B", "H", "M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
    output_names = ["LSE", "L2"], output_types = [f32, f32],
    shapes = [["B", "H", "M", 16], ["B", "H", "N", 16], ["B", "H", "N", 8], ["B", "H", "M"], ["B", "H", "M"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %Q: tensor<?x?x?x16xf32>, %K: tensor<?x?x?x16xf32>, %V: tensor<?x?x?x8xf32>):
  %scale = arith.constant 0.25 : f32
  %o, %lse = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x8xf32> -> tensor<?x?x?x8xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.constant true
    attn.yield %c : i1
  }
  %l2 = attn.einsum <none> ["b", "h", "m"] extents(%B, %H, %M) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %h: index, %m: index):
    %x = attn.read %lse[%b, %h, %m] : tensor<?x?x?xf32>
    %y = arith.mulf %x, %x : f32
    attn.yield %y : f32
  }
  attn.return %lse, %l2 : tensor<?x?x?xf32>, tensor<?x?x?xf32>
}

// -----

// normalize with a weight map: the recomputed forward gets the log of each
// row's denominator as its statistic, which the backward (with the map)
// recomputes the weights from.

// CHECK-LABEL: attn.kernel @raised_softplus_grad
//       CHECK:   %[[FWD:.+]]:2 = attn.attention <normalize> map(<softplus>) %Q, %K, %V
//       CHECK:   attn.attention_backward <normalize> map(<softplus>) %Q, %K, %V, %[[FWD]]#0, %[[FWD]]#1, %dO
attn.kernel @raised_softplus attributes {
    dim_names = ["B", "H", "M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", 16], ["B", "H", "N", 16], ["B", "H", "N", 16], ["B", "H", "M", 16]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %Q: tensor<?x?x?x16xf32>, %K: tensor<?x?x?x16xf32>, %V: tensor<?x?x?x16xf32>):
  %scale = arith.constant 0.25 : f32
  %o = attn.attention <normalize> map(<softplus>) %Q, %K, %V scale(%scale)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  attn.return %o : tensor<?x?x?x16xf32>
}

// -----

// normalize without a map has no statistic to recompute its weights from:
// the caller differentiates the cascade instead.

attn.kernel @raised_normalize attributes {
    dim_names = ["B", "H", "M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", 16], ["B", "H", "N", 16], ["B", "H", "N", 16], ["B", "H", "M", 16]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %Q: tensor<?x?x?x16xf32>, %K: tensor<?x?x?x16xf32>, %V: tensor<?x?x?x16xf32>):
  %scale = arith.constant 0.25 : f32
  // expected-error @below {{attn-grad: no fused backward: normalize without a weight map has no row statistic}}
  %o = attn.attention <normalize> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  attn.return %o : tensor<?x?x?x16xf32>
}
