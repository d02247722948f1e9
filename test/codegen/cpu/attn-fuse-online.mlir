// RUN: attn-opt %s --attn-fuse-online --split-input-file | FileCheck %s
// RUN: attn-opt %s --attn-fuse-online="query-tile=8" --split-input-file | FileCheck %s --check-prefix=TILE8

// Causal softmax with a tile classifier and an LSE result: a parallel loop
// over (b, h, query tile), a key-tile loop carrying the running max and
// denominator, empty tiles skipped, full tiles without the mask, exp for the
// rescaling and P, one division at the end, -inf LSE for empty rows.

// CHECK-LABEL: func.func @causal_lse
// TILE8-LABEL: func.func @causal_lse
//       TILE8:   memref.alloca() : memref<32x8xf32>
//       TILE8:   scf.for {{.*}} -> (vector<8xf32>, vector<8xf32>)
//       CHECK:   %[[O:.+]] = memref.alloc({{.*}}) : memref<?x?x?x64xf32>
//       CHECK:   %[[L:.+]] = memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   scf.parallel (%[[B:.+]], %[[H:.+]], %[[QT:.+]]) =
//       CHECK:     memref.alloca() : memref<64x16xf32>
//       CHECK:     memref.alloca() : memref<32x16xf32>
//       CHECK:     %[[STATE:.+]]:2 = scf.for %{{.+}} = %{{.+}} to %{{.+}} step %{{.+}} iter_args(%[[M:.+]] = %{{.+}}, %[[DEN:.+]] = %{{.+}}) -> (vector<16xf32>, vector<16xf32>)
//       CHECK:       %[[NONEMPTY:.+]] = arith.cmpi ne, %{{.+}}, %{{.+}} : i32
//       CHECK:       scf.if %[[NONEMPTY]] -> (vector<16xf32>, vector<16xf32>)
//       CHECK:         vector.fma {{.*}} : vector<16xf32>
//       CHECK:         %[[FULL:.+]] = arith.andi
//       CHECK:         scf.if %[[FULL]] -> (vector<16xf32>, vector<16xf32>, vector<16xf32>)
//   CHECK-NOT:           arith.cmpi sle
//       CHECK:           arith.maximumf
//       CHECK:           math.exp
//       CHECK:         } else {
//       CHECK:           arith.cmpi sle, %{{.+}}, %{{.+}} : vector<16xindex>
//       CHECK:           arith.select %{{.+}}, %{{.+}}, %{{.+}} : vector<16xi1>, vector<16xf32>
//       CHECK:           arith.maximumf
//       CHECK:           math.exp
//       CHECK:         vector.fma {{.*}} : vector<16xf32>
//       CHECK:       } else {
//       CHECK:         scf.yield %[[M]], %[[DEN]] : vector<16xf32>, vector<16xf32>
//       CHECK:     arith.divf %{{.+}}, %{{.+}} : vector<16xf32>
//       CHECK:     memref.store %{{.+}}, %[[O]][
//       CHECK:     math.log
//       CHECK:     memref.store %{{.+}}, %[[L]][
//       CHECK:   bufferization.to_tensor %[[O]] restrict writable
//       CHECK:   bufferization.to_tensor %[[L]] restrict writable
//   CHECK-NOT:   attn.attention
func.func @causal_lse(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>, %scale: f32) -> (tensor<?x?x?x64xf32>, tensor<?x?x?xf32>) {
  %o, %lse = attn.attention <softmax> %q, %k, %v scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  } tile_class {
  ^bb0(%b: index, %h: index, %m0: index, %m1: index, %n0: index, %n1: index):
    %c0 = arith.constant 0 : i32
    %c1 = arith.constant 1 : i32
    %c2 = arith.constant 2 : i32
    %empty = arith.cmpi sgt, %n0, %m1 : index
    %full = arith.cmpi sle, %n1, %m0 : index
    %x = arith.select %full, %c2, %c1 : i32
    %y = arith.select %empty, %c0, %x : i32
    attn.yield %y : i32
  }
  return %o, %lse : tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
}

// -----

// A sink logit seeds the running max (one load per lane) and joins the
// denominator at the end, not the running sum: with t = max(m, sink),
// O = acc e^(m - t) / (l e^(m - t) + e^(sink - t)); bf16 inputs are
// extended after loading (K and V 16 elements at a time into f32 scratch
// rows); GQA reads the kv head h / (H / G).

// CHECK-LABEL: func.func @sink_bf16_gqa
//       CHECK:   %[[RATIO:.+]] = arith.divui
//       CHECK:   %[[GROUP:.+]] = arith.maxui %[[RATIO]], %{{.+}} : index
//       CHECK:   scf.parallel (%{{.+}}, %[[H:.+]], %{{.+}}) =
//       CHECK:     arith.divui %[[H]], %[[GROUP]] : index
//       CHECK:     arith.extf %{{.+}} : bf16 to f32
//       CHECK:     %[[SEED:.+]] = vector.insert %{{.+}}, %{{.+}} [15] : f32 into vector<16xf32>
//       CHECK:     %[[STATE:.+]]:2 = scf.for {{.*}} iter_args(%{{.+}} = %[[SEED]], {{.*}}) -> (vector<16xf32>, vector<16xf32>)
//       CHECK:       arith.extf %{{.+}} : vector<16xbf16> to vector<16xf32>
//       CHECK:       math.tanh %{{.+}} : vector<16xf32>
//       CHECK:       arith.extf %{{.+}} : vector<16xbf16> to vector<16xf32>
//       CHECK:       vector.fma
//       CHECK:     %[[SINK:.+]] = vector.insert %{{.+}}, %{{.+}} [15] : f32 into vector<16xf32>
//       CHECK:     %[[TOP:.+]] = arith.maximumf %[[STATE]]#0, %[[SINK]] : vector<16xf32>
//       CHECK:     %[[KEPTSHIFT:.+]] = arith.subf %[[STATE]]#0, %[[TOP]] : vector<16xf32>
//       CHECK:     %[[KEEP:.+]] = math.exp %[[KEPTSHIFT]] : vector<16xf32>
//       CHECK:     %[[SCALED:.+]] = arith.mulf %[[STATE]]#1, %[[KEEP]] : vector<16xf32>
//       CHECK:     %[[SINKSHIFT:.+]] = arith.subf %[[SINK]], %[[TOP]] : vector<16xf32>
//       CHECK:     %[[SINKTERM:.+]] = math.exp %[[SINKSHIFT]] : vector<16xf32>
//       CHECK:     %[[DEN:.+]] = arith.addf %[[SCALED]], %[[SINKTERM]] : vector<16xf32>
//       CHECK:     arith.divf %[[KEEP]], %[[DEN]] : vector<16xf32>
func.func @sink_bf16_gqa(%q: tensor<?x?x?x?xbf16>, %k: tensor<?x?x?x?xbf16>, %v: tensor<?x?x?x?xbf16>, %sink: tensor<?x?x?xf32>, %scale: f32) -> tensor<?x?x?x?xf32> {
  %o = attn.attention <softmax> %q, %k, %v scale(%scale) sink(%sink : tensor<?x?x?xf32>)
      : tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %t = math.tanh %s : f32
    attn.yield %t : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return %o : tensor<?x?x?x?xf32>
}

// -----

// normalize: no running max and no exp; the state is the sum of the kept
// scores and their count, which alone tells an empty row (kept scores may
// sum to 0).

// CHECK-LABEL: func.func @normalize
//       CHECK:   scf.parallel
//       CHECK:     %[[STATE:.+]]:2 = scf.for {{.*}} iter_args({{.*}}) -> (vector<16xf32>, vector<16xf32>)
//   CHECK-NOT:       math.exp
//       CHECK:       arith.addf %{{.+}}, %{{.+}} : vector<16xf32>
//       CHECK:       arith.uitofp %{{.+}} : vector<16xi1> to vector<16xf32>
//   CHECK-NOT:       math.exp
//       CHECK:     %[[EMPTY:.+]] = arith.cmpf oeq, %[[STATE]]#1, %{{.+}} : vector<16xf32>
//       CHECK:     %[[INVERSE:.+]] = arith.divf %{{.+}}, %[[STATE]]#0 : vector<16xf32>
//       CHECK:     arith.select %[[EMPTY]], %{{.+}}, %[[INVERSE]]
func.func @normalize(%q: tensor<?x?x?x?xf32>, %k: tensor<?x?x?x?xf32>, %v: tensor<?x?x?x?xf32>, %scale: f32) -> tensor<?x?x?x?xf32> {
  %o = attn.attention <normalize> %q, %k, %v scale(%scale)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %z = arith.constant 0.0 : f32
    %r = arith.maximumf %s, %z : f32
    attn.yield %r : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return %o : tensor<?x?x?x?xf32>
}

// -----

// normalize with map softplus: a running max, as softmax (pass 1 its
// block max, pass 2 the weights): scores in the exponential tail weigh
// exp(s - shift), the others softplus(s) e^-shift, with the shift the max
// clamped to at most 0. The sum tells an empty row; no kept count.

// CHECK-LABEL: func.func @normalize_softplus
//       CHECK:   scf.parallel
//       CHECK:     scf.for {{.*}} -> (vector<16xf32>, vector<16xf32>)
//       CHECK:       %[[MAX:.+]] = scf.for {{.*}} -> (vector<16xf32>)
//       CHECK:         arith.maximumf
//       CHECK:       arith.cmpf olt, %{{.+}}, %{{.+}} : vector<16xf32>
//       CHECK:       scf.for
//       CHECK:         %[[TAIL:.+]] = arith.cmpf olt, %{{.+}}, %cst{{.*}} : vector<16xf32>
//       CHECK:         math.log1p
//       CHECK:         %[[MAPPED:.+]] = arith.mulf
//       CHECK:         arith.select %[[TAIL]], %{{.+}}, %[[MAPPED]] : vector<16xi1>, vector<16xf32>
//   CHECK-NOT:       arith.uitofp
//       CHECK:     arith.cmpf oeq, %{{.+}}, %{{.+}} : vector<16xf32>
//       CHECK:     arith.divf
func.func @normalize_softplus(%q: tensor<?x?x?x?xf32>, %k: tensor<?x?x?x?xf32>, %v: tensor<?x?x?x?xf32>, %scale: f32) -> tensor<?x?x?x?xf32> {
  %o = attn.attention <normalize> map(<softplus>) %q, %k, %v scale(%scale)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  return %o : tensor<?x?x?x?xf32>
}

// -----

// none: neither max nor denominator, and no division at the end; the mask
// reads a tensor at a query-dependent subscript (one load per lane).

// CHECK-LABEL: func.func @none_gather
//       CHECK:   scf.parallel
//       CHECK:     scf.for
//       CHECK:       math.exp %{{.+}} : vector<16xf32>
//       CHECK:       memref.load %{{.+}} : memref<?x?xi32>
//       CHECK:       vector.insert %{{.+}}, %{{.+}} [15] : i32 into vector<16xi32>
//       CHECK:       vector.fma
//   CHECK-NOT:   arith.divf %{{.+}}, %{{.+}} : vector<16xf32>
//       CHECK:   return
func.func @none_gather(%q: tensor<?x?x?x?xf32>, %k: tensor<?x?x?x?xf32>, %v: tensor<?x?x?x?xf32>, %doc: tensor<?x?xi32>, %scale: f32) -> tensor<?x?x?x?xf32> {
  %o = attn.attention <none> %q, %k, %v scale(%scale)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %one = arith.constant 1.0 : f32
    %ns = arith.negf %s : f32
    %e = math.exp %ns : f32
    %d = arith.addf %one, %e : f32
    %r = arith.divf %one, %d : f32
    attn.yield %r : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %dm = attn.read %doc[%b, %m] : tensor<?x?xi32>
    %dn = attn.read %doc[%b, %n] : tensor<?x?xi32>
    %c = arith.cmpi eq, %dm, %dn : i32
    attn.yield %c : i1
  }
  return %o : tensor<?x?x?x?xf32>
}
