// RUN: attn-opt %s --split-input-file --convert-attn-to-linalg | FileCheck %s

// An elementwise einsum: one parallel generic, reads of distinct loop indices
// become structured inputs; outputs are memrefs written in place.

// CHECK-LABEL: func.func @elementwise
//  CHECK-SAME:   (%[[M:.+]]: index, %[[N:.+]]: index, %[[X:.+]]: tensor<?x?xf32> {bufferization.writable = false}, %[[Y:.+]]: tensor<?xf32> {bufferization.writable = false}, %[[OUT:.+]]: memref<?x?xf32>)
//       CHECK:   %[[E:.+]] = tensor.empty(%[[M]], %[[N]]) : tensor<?x?xf32>
//       CHECK:   %[[R:.+]] = linalg.generic
//  CHECK-SAME:     iterator_types = ["parallel", "parallel"]
//  CHECK-SAME:     ins(%[[X]], %[[Y]] : tensor<?x?xf32>, tensor<?xf32>) outs(%[[E]] : tensor<?x?xf32>)
//       CHECK:     ^bb0(%[[A:.+]]: f32, %[[B:.+]]: f32, %{{.+}}: f32):
//       CHECK:       %[[S:.+]] = arith.addf %[[A]], %[[B]] : f32
//       CHECK:       linalg.yield %[[S]] : f32
//       CHECK:   bufferization.materialize_in_destination %[[R]] in restrict writable %[[OUT]]
//       CHECK:   return
attn.kernel @elementwise attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X", "Y"], param_names = [], param_defaults = [],
    output_names = ["Z"], output_types = [f32],
    shapes = [["M", "N"], ["N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>, %Y: tensor<?xf32>):
  %Z = attn.einsum <none> ["m", "n"] extents(%M, %N) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    %y = attn.read %Y[%n] : tensor<?xf32>
    %s = arith.addf %x, %y : f32
    attn.yield %s : f32
  }
  attn.return %Z : tensor<?x?xf32>
}

// -----

// A sum reduction: the output starts at the identity, the reduced index is a
// reduction loop, bf16 reads stay bf16 until the body's extf, and the result
// is rounded to the declared bf16 output.

// CHECK-LABEL: func.func @matmul
//  CHECK-SAME:   %[[OUT:[^:]+]]: memref<?x?xbf16>)
//       CHECK:   %[[ZERO:.+]] = arith.constant 0.000000e+00 : f32
//       CHECK:   %[[FILL:.+]] = linalg.fill ins(%[[ZERO]] : f32)
//       CHECK:   %[[MM:.+]] = linalg.generic
//  CHECK-SAME:     iterator_types = ["parallel", "parallel", "reduction"]
//  CHECK-SAME:     outs(%[[FILL]] : tensor<?x?xf32>)
//       CHECK:     ^bb0(%[[A:.+]]: bf16, %[[B:.+]]: bf16, %[[ACC:.+]]: f32):
//       CHECK:       arith.extf %[[A]] : bf16 to f32
//       CHECK:       %[[P:.+]] = arith.mulf
//       CHECK:       %[[S:.+]] = arith.addf %[[ACC]], %[[P]] : f32
//       CHECK:       linalg.yield %[[S]] : f32
//       CHECK:   %[[ROUND:.+]] = linalg.generic
//       CHECK:       arith.truncf %{{.+}} : f32 to bf16
//       CHECK:   bufferization.materialize_in_destination %[[ROUND]] in restrict writable %[[OUT]] : (tensor<?x?xbf16>, memref<?x?xbf16>) -> ()
attn.kernel @matmul attributes {
    dim_names = ["M", "N", "K"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["A", "B"], param_names = [], param_defaults = [],
    output_names = ["C"], output_types = [bf16],
    shapes = [["M", "K"], ["K", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %K: index, %A: tensor<?x?xbf16>, %B: tensor<?x?xbf16>):
  %C = attn.einsum <sum> ["m", "n"] reduce ["k"] extents(%M, %N, %K) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index, %k: index):
    %a = attn.read %A[%m, %k] : tensor<?x?xbf16>
    %b = attn.read %B[%k, %n] : tensor<?x?xbf16>
    %af = arith.extf %a : bf16 to f32
    %bf = arith.extf %b : bf16 to f32
    %p = arith.mulf %af, %bf : f32
    attn.yield %p : f32
  }
  attn.return %C : tensor<?x?xf32>
}

// -----

// keep builds an i1 presence tensor; an elementwise einsum that reads the
// kept tensor ANDs the presence of its reads; the output stores absent
// entries as 0.

// CHECK-LABEL: func.func @keep
//       CHECK:   %[[PRES:.+]] = linalg.generic
//  CHECK-SAME:     outs(%{{.+}} : tensor<?x?xi1>)
//       CHECK:       %[[I:.+]] = linalg.index 0 : index
//       CHECK:       %[[J:.+]] = linalg.index 1 : index
//       CHECK:       %[[C:.+]] = arith.cmpi sle, %[[J]], %[[I]] : index
//       CHECK:       linalg.yield %[[C]] : i1
//       CHECK:   %[[EW:.+]]:2 = linalg.generic
//  CHECK-SAME:     ins(%{{.+}}, %[[PRES]] : tensor<?x?xf32>, tensor<?x?xi1>)
//  CHECK-SAME:     outs(%{{.+}}, %{{.+}} : tensor<?x?xf32>, tensor<?x?xi1>)
//       CHECK:     ^bb0(%[[V:.+]]: f32, %[[P:.+]]: i1, %{{.+}}: f32, %{{.+}}: i1):
//       CHECK:       %[[T:.+]] = math.tanh %[[V]] : f32
//       CHECK:       linalg.yield %[[T]], %[[P]] : f32, i1
//       CHECK:   %[[STORE:.+]] = linalg.generic
//  CHECK-SAME:     ins(%[[EW]]#0, %[[EW]]#1 : tensor<?x?xf32>, tensor<?x?xi1>)
//       CHECK:       arith.select %{{.+}}, %{{.+}}, %{{.+}} : f32
//       CHECK:   bufferization.materialize_in_destination %[[STORE]]
attn.kernel @keep attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["Y"], output_types = [f32],
    shapes = [["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  %Y = attn.einsum <none> ["m", "n"] extents(%M, %N) : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    %t = math.tanh %x : f32
    attn.yield %t : f32
  }
  attn.return %Y : tensor<?x?xf32>
}

// -----

// softmax over a kept tensor, two passes over each row: the max over present
// entries, then the sum of their weights exp(x - max), subtracting 0 while
// the max is -inf (never exp(-inf - -inf)); per row the factor 1 / sum, 0
// for a row without present entries; the weights times the factor. The
// result keeps the input's presence.

// CHECK-LABEL: func.func @softmax
//       CHECK:   %[[PRES:.+]] = linalg.generic
//  CHECK-SAME:     outs(%{{.+}} : tensor<?x?xi1>)
//       CHECK:   %[[MAX:.+]] = linalg.generic
//  CHECK-SAME:     iterator_types = ["parallel", "reduction"]
//  CHECK-SAME:     ins(%{{.+}}, %[[PRES]] :
//       CHECK:       %[[MX:.+]] = arith.maximumf
//       CHECK:       arith.select %{{.+}}, %[[MX]], %{{.+}} : f32
//       CHECK:   %[[SUM:.+]] = linalg.generic
//  CHECK-SAME:     ins(%{{.+}}, %{{.+}}, %[[MAX]] :
//       CHECK:       %[[NOMAX:.+]] = arith.cmpf oeq, %{{.+}}, %{{.+}} : f32
//       CHECK:       %[[SHIFT:.+]] = arith.select %[[NOMAX]], %{{.+}}, %{{.+}} : f32
//       CHECK:       %[[D:.+]] = arith.subf %{{.+}}, %[[SHIFT]] : f32
//       CHECK:       math.exp %[[D]] : f32
//       CHECK:   %[[FACTOR:.+]] = linalg.generic
//  CHECK-SAME:     iterator_types = ["parallel"]
//  CHECK-SAME:     ins(%[[MAX]], %[[SUM]] :
//       CHECK:       %[[EMPTY:.+]] = arith.cmpf oeq
//       CHECK:       %[[INVERSE:.+]] = arith.divf
//       CHECK:       arith.select %[[EMPTY]], %{{.+}}, %[[INVERSE]] : f32
//       CHECK:   linalg.generic
//  CHECK-SAME:     iterator_types = ["parallel", "parallel"]
//  CHECK-SAME:     ins(%{{.+}}, %{{.+}}, %[[MAX]], %[[FACTOR]] :
//       CHECK:       %[[P:.+]] = math.exp
//       CHECK:       arith.mulf %[[P]], %{{.+}} : f32
attn.kernel @softmax attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["P"], output_types = [f32],
    shapes = [["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  %P = attn.softmax %kept dimension(1) : tensor<?x?xf32>
  attn.return %P : tensor<?x?xf32>
}

// -----

// With a sink, the max and the sum cover the entries only; the sink joins
// the denominator in the factor: with t = max(max, sink), e^(max - t) /
// (sum e^(max - t) + e^(sink - t)). A fully present input needs no presence
// tensor.

// CHECK-LABEL: func.func @softmax_sink
//       CHECK:   %[[SINK:.+]] = linalg.generic
//  CHECK-SAME:     outs(%{{.+}} : tensor<?xf32>)
//       CHECK:       tensor.extract %{{.+}}[%{{.+}}] : tensor<1xf32>
//       CHECK:   %[[MAX:.+]] = linalg.generic
//       CHECK:       arith.maximumf
//   CHECK-NOT:       arith.select
//       CHECK:   %[[SUM:.+]] = linalg.generic
//       CHECK:       math.exp
//       CHECK:   %[[FACTOR:.+]] = linalg.generic
//  CHECK-SAME:     ins(%[[MAX]], %[[SUM]], %[[SINK]] :
//       CHECK:       %[[TOP:.+]] = arith.maximumf
//       CHECK:       %[[KEEP:.+]] = math.exp
//       CHECK:       math.exp
//       CHECK:       %[[DEN:.+]] = arith.addf
//       CHECK:       arith.divf %[[KEEP]], %[[DEN]] : f32
//       CHECK:   linalg.generic
//  CHECK-SAME:     ins(%{{.+}}, %[[MAX]], %[[FACTOR]] :
attn.kernel @softmax_sink attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X", "Sk"], param_names = [], param_defaults = [],
    output_names = ["P"], output_types = [f32],
    shapes = [["M", "N"], [1], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>, %Sk: tensor<1xf32>):
  %E = attn.einsum <none> ["m"] extents(%M) : tensor<?xf32> {
  ^bb0(%m: index):
    %c0 = arith.constant 0 : index
    %s = attn.read %Sk[%c0] : tensor<1xf32>
    attn.yield %s : f32
  }
  %P = attn.softmax %X dimension(1) sink(%E : tensor<?xf32>) : tensor<?x?xf32>
  attn.return %P : tensor<?x?xf32>
}

// -----

// normalize: the sum over present entries and their count (an empty row
// has factor 0), then the entries times the factor 1 / sum.

// CHECK-LABEL: func.func @normalize
//       CHECK:   %[[STATE:.+]]:2 = linalg.generic
//  CHECK-SAME:     iterator_types = ["reduction", "parallel"]
//       CHECK:       arith.addf
//       CHECK:       arith.uitofp
//       CHECK:   %[[FACTOR:.+]] = linalg.generic
//  CHECK-SAME:     ins(%[[STATE]]#0, %[[STATE]]#1 : tensor<?xf32>, tensor<?xf32>)
//       CHECK:       arith.divf
//       CHECK:   linalg.generic
//  CHECK-SAME:     ins(%{{.+}}, %[[FACTOR]] : tensor<?x?xf32>, tensor<?xf32>)
//       CHECK:       arith.mulf
attn.kernel @normalize attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["P"], output_types = [f32],
    shapes = [["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %P = attn.normalize %X dimension(0) : tensor<?x?xf32>
  attn.return %P : tensor<?x?xf32>
}

// -----

// normalize with map sigmoid: as softmax, a pass for the row max, then the
// sum of the weights relative to the clamped max (the exponential tail, or
// sigmoid(x) e^-shift), the factor, and the weights times the factor.

// CHECK-LABEL: func.func @normalize_sigmoid
//       CHECK:   %[[MAX:.+]] = linalg.generic
//       CHECK:       arith.maximumf
//       CHECK:   %[[SUM:.+]] = linalg.generic
//  CHECK-SAME:     ins(%{{.+}}, %[[MAX]] : tensor<?x?xf32>, tensor<?xf32>)
//       CHECK:       arith.select
//       CHECK:       arith.addf
//       CHECK:   %[[FACTOR:.+]] = linalg.generic
//  CHECK-SAME:     ins(%[[MAX]], %[[SUM]] : tensor<?xf32>, tensor<?xf32>)
//       CHECK:       arith.divf
//       CHECK:   linalg.generic
//  CHECK-SAME:     ins(%{{.+}}, %[[MAX]], %[[FACTOR]] : tensor<?x?xf32>, tensor<?xf32>, tensor<?xf32>)
//       CHECK:       arith.mulf
attn.kernel @normalize_sigmoid attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["P"], output_types = [f32],
    shapes = [["M", "N"], ["M", "N"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %P = attn.normalize %X dimension(0) map(<sigmoid>) : tensor<?x?xf32>
  attn.return %P : tensor<?x?xf32>
}

// -----

// logsumexp in one stable pass, the softmax state updated by one term at a
// time (running max, sum rescaled by exp(max - max'), subtracting 0 while
// the max is -inf; absent terms leave it), then max + log(sum) with -inf for
// empty rows.

// CHECK-LABEL: func.func @logsumexp
//       CHECK:   %[[R:.+]]:2 = linalg.generic
//  CHECK-SAME:     iterator_types = ["parallel", "reduction"]
//       CHECK:     ^bb0(%[[T:.+]]: f32, %[[P:.+]]: i1, %[[MAX:.+]]: f32, %[[SUM:.+]]: f32):
//       CHECK:       %[[NM:.+]] = arith.maximumf %[[MAX]], %[[T]] : f32
//       CHECK:       %[[NOMAX:.+]] = arith.cmpf oeq, %[[NM]], %{{.+}} : f32
//       CHECK:       %[[SHIFT:.+]] = arith.select %[[NOMAX]], %{{.+}}, %[[NM]] : f32
//       CHECK:       math.exp
//       CHECK:       arith.mulf %[[SUM]]
//       CHECK:       math.exp
//       CHECK:       arith.select %[[P]], %[[NM]], %[[MAX]] : f32
//       CHECK:   linalg.generic
//  CHECK-SAME:     ins(%[[R]]#0, %[[R]]#1 : tensor<?xf32>, tensor<?xf32>)
//       CHECK:       math.log
attn.kernel @logsumexp attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["L"], output_types = [f32],
    shapes = [["M", "N"], ["M"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %kept = attn.keep %X ["m", "n"] : tensor<?x?xf32> {
  ^bb0(%m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  %L = attn.einsum <logsumexp> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %kept[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  attn.return %L : tensor<?xf32>
}

// -----

// mean carries a sum and a count; an empty mean is 0.

// CHECK-LABEL: func.func @mean
//       CHECK:   %[[R:.+]]:2 = linalg.generic
//       CHECK:       arith.addf
//       CHECK:       arith.addf
//       CHECK:   linalg.generic
//  CHECK-SAME:     ins(%[[R]]#0, %[[R]]#1 : tensor<?xf32>, tensor<?xf32>)
//       CHECK:       arith.cmpf oeq
//       CHECK:       arith.divf
//       CHECK:       arith.select
attn.kernel @mean attributes {
    dim_names = ["M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808>,
    input_names = ["X"], param_names = [], param_defaults = [],
    output_names = ["A"], output_types = [f32],
    shapes = [["M", "N"], ["M"]]} {
^bb0(%M: index, %N: index, %X: tensor<?x?xf32>):
  %A = attn.einsum <mean> ["m"] reduce ["n"] extents(%M, %N) : tensor<?xf32> {
  ^bb0(%m: index, %n: index):
    %x = attn.read %X[%m, %n] : tensor<?x?xf32>
    attn.yield %x : f32
  }
  attn.return %A : tensor<?xf32>
}

// -----

// A gather through an i32 page table becomes tensor.extract inside the body.
// The reduced index `t` subscripts no tensor directly, so an unread shape
// carrier gives linalg its range.

// CHECK-LABEL: func.func @gather
//  CHECK-SAME:   (%{{[^:]+}}: index, %[[T:[^:]+]]: index, %{{[^:]+}}: index, %{{[^:]+}}: index, %[[KC:[^:]+]]: tensor<?x4xf32> {{.*}}, %[[PAGES:[^:]+]]: tensor<?x?xi32>
//       CHECK:   %[[CARRIER:.+]] = tensor.empty(%[[T]]) : tensor<?xi8>
//       CHECK:   linalg.generic
//  CHECK-SAME:     ins(%[[CARRIER]] : tensor<?xi8>)
//       CHECK:       %[[I:.+]] = linalg.index 0 : index
//       CHECK:       %[[J:.+]] = linalg.index 1 : index
//       CHECK:       %[[ID:.+]] = tensor.extract %[[PAGES]][%[[I]], %{{.+}}] : tensor<?x?xi32>
//       CHECK:       %[[IDX:.+]] = arith.index_cast %[[ID]] : i32 to index
//       CHECK:       tensor.extract %[[KC]][%[[IDX]], %{{.+}}] : tensor<?x4xf32>
attn.kernel @gather attributes {
    dim_names = ["B", "T", "P", "NP"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["Kc", "Pages"], param_names = [], param_defaults = [],
    output_names = ["S"], output_types = [f32],
    shapes = [["P", 4], ["B", "NP"], ["B"]]} {
^bb0(%B: index, %T: index, %P: index, %NP: index, %Kc: tensor<?x4xf32>, %Pages: tensor<?x?xi32>):
  %S = attn.einsum <sum> ["b"] reduce ["t"] extents(%B, %T) : tensor<?xf32> {
  ^bb0(%b: index, %t: index):
    %c4 = arith.constant 4 : index
    %pg = arith.floordivsi %t, %c4 : index
    %slot = arith.remsi %t, %c4 : index
    %id32 = attn.read %Pages[%b, %pg] : tensor<?x?xi32>
    %id = arith.index_cast %id32 : i32 to index
    %k = attn.read %Kc[%id, %slot] : tensor<?x4xf32>
    attn.yield %k : f32
  }
  attn.return %S : tensor<?xf32>
}
