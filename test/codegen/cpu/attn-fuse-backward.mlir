// RUN: attn-opt %s --attn-fuse-backward --split-input-file | FileCheck %s
// RUN: attn-opt %s --attn-fuse-backward="lane-tile=8 row-tile=16" --split-input-file | FileCheck %s --check-prefix=TILE8

// Causal softmax with a tile classifier, a softcap and a sink logit. First
// the dQ pass, parallel over (b, h, query tile) with one query per lane:
// Qt and dOt transposed once, Delta = dO·O and LSE (+) sink per row (stored
// for the other pass), then over the key tiles (empty ones skipped) S and
// dP, the adjoints (full tiles without the mask; tanh and its derivative
// from score_mod) and dQ += dS K; dQ scaled and dSink = -P_sink Delta at
// the end. Then the dK/dV pass, parallel over (b, g, key tile) with one key
// per lane: over the heads of the group and their query tiles, the same
// adjoints from the stored rows, and dV += P dO, dK += dS Q.

// CHECK-LABEL: func.func @causal_softcap_sink
//  CHECK-SAME:   %[[SCALE:[a-zA-Z0-9]+]]: f32)
//       CHECK:   %[[DQ:.+]] = memref.alloc({{.*}}) : memref<?x?x?x64xf32>
//       CHECK:   %[[DK:.+]] = memref.alloc({{.*}}) : memref<?x?x?x64xf32>
//       CHECK:   %[[DV:.+]] = memref.alloc({{.*}}) : memref<?x?x?x64xf32>
//       CHECK:   %[[DSINK:.+]] = memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   %[[ROWLSE:.+]] = memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   %[[ROWDELTA:.+]] = memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   scf.parallel (%[[B:.+]], %[[H:.+]], %{{.+}}) =
//       CHECK:     memref.alloca() : memref<64x32xf32>
//       CHECK:     memref.alloca() : memref<32x32xf32>
//       CHECK:     %[[DELTA:.+]] = scf.for {{.*}} -> (vector<32xf32>) {
//       CHECK:       vector.fma {{.*}} : vector<32xf32>
//       CHECK:     math.log1p {{.*}} : vector<32xf32>
//       CHECK:     memref.store %{{.+}}, %[[ROWDELTA]][%[[B]], %[[H]], %{{.+}}]
//       CHECK:     memref.store %{{.+}}, %[[ROWLSE]][%[[B]], %[[H]], %{{.+}}]
//       CHECK:     scf.for
//       CHECK:       %[[NONEMPTY:.+]] = arith.cmpi ne, %{{.+}}, %{{.+}} : i32
//       CHECK:       scf.if %[[NONEMPTY]] {
//       CHECK:         vector.fma {{.*}} : vector<32xf32>
//       CHECK:         %[[FULL:.+]] = arith.andi
//       CHECK:         scf.if %[[FULL]] {
//   CHECK-NOT:           arith.cmpi sle
//       CHECK:           math.tanh {{.*}} : vector<32xf32>
//       CHECK:           math.exp {{.*}} : vector<32xf32>
//       CHECK:           arith.subf %{{.+}}, %[[DELTA]] : vector<32xf32>
//       CHECK:         } else {
//       CHECK:           math.tanh {{.*}} : vector<32xf32>
//       CHECK:           math.exp {{.*}} : vector<32xf32>
//       CHECK:           arith.cmpi sle, %{{.+}}, %{{.+}} : vector<32xindex>
//       CHECK:           arith.select %{{.+}}, %{{.+}}, %{{.+}} : vector<32xi1>, vector<32xf32>
//       CHECK:         }
//       CHECK:         vector.fma {{.*}} : vector<32xf32>
//       CHECK:     arith.mulf %{{.+}}, %[[SCALE]] : f32
//       CHECK:     memref.store %{{.+}}, %[[DQ]][%[[B]], %[[H]], %{{.+}}, %{{.+}}]
//       CHECK:     arith.negf {{.*}} : vector<32xf32>
//       CHECK:     memref.store %{{.+}}, %[[DSINK]][%[[B]], %[[H]], %{{.+}}]
//       CHECK:   scf.parallel (%[[B2:.+]], %[[G:.+]], %{{.+}}) =
//       CHECK:     scf.for %{{.+}} = %{{.+}} to %[[GROUPHEADS:.+]] step
//       CHECK:       scf.for
//       CHECK:         scf.if
//       CHECK:           vector.fma {{.*}} : vector<32xf32>
//       CHECK:           memref.load %[[ROWLSE]]
//       CHECK:           memref.load %[[ROWDELTA]]
//       CHECK:           math.exp {{.*}} : vector<32xf32>
//       CHECK:         } else {
//       CHECK:           arith.cmpi sle, %{{.+}}, %{{.+}} : vector<32xindex>
//       CHECK:         vector.fma {{.*}} : vector<32xf32>
//       CHECK:         vector.fma {{.*}} : vector<32xf32>
//       CHECK:     memref.store %{{.+}}, %[[DK]][%[[B2]], %[[G]], %{{.+}}, %{{.+}}]
//       CHECK:     memref.store %{{.+}}, %[[DV]][%[[B2]], %[[G]], %{{.+}}, %{{.+}}]
//       CHECK:   bufferization.to_tensor %[[DQ]] restrict writable
//       CHECK:   bufferization.to_tensor %[[DK]] restrict writable
//       CHECK:   bufferization.to_tensor %[[DV]] restrict writable
//       CHECK:   bufferization.to_tensor %[[DSINK]] restrict writable
//   CHECK-NOT:   attn.attention_backward

// TILE8-LABEL: func.func @causal_softcap_sink
//       TILE8:   scf.parallel
//       TILE8:     memref.alloca() : memref<16x8xf32>
//       TILE8:     math.exp {{.*}} : vector<8xf32>
//       TILE8:   scf.parallel
//       TILE8:     memref.alloca() : memref<16x8xf32>
func.func @causal_softcap_sink(%q: tensor<?x?x?x64xf32>, %k: tensor<?x?x?x64xf32>, %v: tensor<?x?x?x64xf32>,
                               %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %do: tensor<?x?x?x64xf32>,
                               %sink: tensor<?x?x?xf32>, %scale: f32)
    -> (tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>) {
  %dq, %dk, %dv, %dsink = attn.attention_backward <softmax> %q, %k, %v, %o, %lse, %do scale(%scale) sink(%sink : tensor<?x?x?xf32>)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %cap = arith.constant 2.5 : f32
    %x = arith.divf %s, %cap : f32
    %t = math.tanh %x : f32
    %r = arith.mulf %t, %cap : f32
    attn.yield %r : f32
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
  return %dq, %dk, %dv, %dsink : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
}

// -----

// none with a sigmoid score_mod and bf16 inputs, a trivial mask and no
// tile classifier: every tile is full (only the last one checks bounds); no
// statistic is read (no row buffers, no Delta, no exp but the sigmoid's),
// dS = dP sigmoid'(s); the rows the micro-kernels broadcast from (K in the
// dQ pass, Q and dO in the dK/dV pass) are widened to f32 scratch, 16
// elements at a time, once per tile.

// CHECK-LABEL: func.func @none_sigmoid_bf16
//   CHECK-NOT:   memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   scf.parallel
//   CHECK-NOT:     math.log1p
//       CHECK:     arith.extf {{.*}} : bf16 to f32
//       CHECK:     %[[FULLCLASS:.+]] = arith.constant 2 : i32
//       CHECK:     arith.cmpi ne, %[[FULLCLASS]], %{{.+}} : i32
//       CHECK:       arith.extf {{.*}} : vector<16xbf16> to vector<16xf32>
//       CHECK:           math.exp {{.*}} : vector<32xf32>
//       CHECK:           arith.divf {{.*}} : vector<32xf32>
//       CHECK:           vector.store
//       CHECK:   scf.parallel
//       CHECK:       arith.extf {{.*}} : vector<16xbf16> to vector<16xf32>
//   CHECK-NOT:   attn.attention_backward
func.func @none_sigmoid_bf16(%q: tensor<?x?x?x?xbf16>, %k: tensor<?x?x?x?xbf16>, %v: tensor<?x?x?x?xbf16>,
                             %o: tensor<?x?x?x?xf32>, %stat: tensor<?x?x?xf32>, %do: tensor<?x?x?x?xf32>, %scale: f32)
    -> (tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>) {
  %dq, %dk, %dv = attn.attention_backward <none> %q, %k, %v, %o, %stat, %do scale(%scale)
      : tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16>, tensor<?x?x?x?xbf16>, tensor<?x?x?x?xf32>, tensor<?x?x?xf32>, tensor<?x?x?x?xf32>
      -> tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %ns = arith.negf %s : f32
    %e = math.exp %ns : f32
    %one = arith.constant 1.0 : f32
    %den = arith.addf %one, %e : f32
    %r = arith.divf %one, %den : f32
    attn.yield %r : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return %dq, %dk, %dv : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>
}

// -----

// An LSE adjoint with a sink logit: the dQ pass gathers each row's dLSE
// and lowers Delta by dLSE (1 + e^(min(sink - LSE, 80))), 0 where
// LSE = -inf; the scores' adjoints (and the rows stored for the dK/dV pass)
// read that Delta', the sink's gradient Delta itself.

// CHECK-LABEL: func.func @lse_grad_sink
//  CHECK-SAME:   %[[DLSE:[a-zA-Z0-9]+]]: tensor<?x?x?xf32>, %{{[a-zA-Z0-9]+}}: f32)
//       CHECK:   %[[DLSEBUF:.+]] = bufferization.to_buffer %[[DLSE]] read_only
//       CHECK:   %[[DSINK:.+]] = memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   %[[ROWLSE:.+]] = memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   %[[ROWDELTA:.+]] = memref.alloc({{.*}}) : memref<?x?x?xf32>
//       CHECK:   scf.parallel (%[[B:.+]], %[[H:.+]], %{{.+}}) =
//       CHECK:     %[[DELTA:.+]] = scf.for {{.*}} -> (vector<32xf32>) {
//       CHECK:     memref.load %[[DLSEBUF]][%[[B]], %[[H]], %{{.+}}]
//       CHECK:     %[[GRAD:.+]] = vector.insert %{{.+}}, %{{.+}} [31] : f32 into vector<32xf32>
//       CHECK:     %[[ZMINUSLSE:.+]] = arith.subf %{{.+}}, %[[LSE:.+]] : vector<32xf32>
//       CHECK:     %[[EXCESS:.+]] = arith.minimumf %[[ZMINUSLSE]], %{{.+}} : vector<32xf32>
//       CHECK:     %[[E:.+]] = math.exp %[[EXCESS]]
//       CHECK:     %[[RATIO:.+]] = arith.addf %{{.+}}, %[[E]]
//       CHECK:     %[[SHARE:.+]] = arith.mulf %[[GRAD]], %[[RATIO]]
//       CHECK:     %[[EMPTY:.+]] = arith.cmpf oeq, %[[LSE]], %{{.+}} : vector<32xf32>
//       CHECK:     %[[KEPT:.+]] = arith.select %[[EMPTY]], %{{.+}}, %[[SHARE]]
//       CHECK:     %[[SCOREDELTA:.+]] = arith.subf %[[DELTA]], %[[KEPT]] : vector<32xf32>
//       CHECK:     vector.store %[[SCOREDELTA]], %[[STAGED:.+]][%{{.+}}]
//       CHECK:     memref.load %[[STAGED]]
//  CHECK-NEXT:     memref.store %{{.+}}, %[[ROWDELTA]][%[[B]], %[[H]], %{{.+}}]
//       CHECK:     scf.for
//       CHECK:           arith.subf %{{.+}}, %[[SCOREDELTA]] : vector<32xf32>
//       CHECK:           arith.subf %{{.+}}, %[[SCOREDELTA]] : vector<32xf32>
//       CHECK:     arith.mulf %{{.+}}, %[[DELTA]] : vector<32xf32>
//  CHECK-NEXT:     arith.negf
//       CHECK:     memref.store %{{.+}}, %[[DSINK]]
//       CHECK:   scf.parallel
//       CHECK:           memref.load %[[ROWDELTA]]
func.func @lse_grad_sink(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x32xf32>, %v: tensor<?x?x?x32xf32>,
                         %o: tensor<?x?x?x32xf32>, %lse: tensor<?x?x?xf32>, %do: tensor<?x?x?x32xf32>,
                         %sink: tensor<?x?x?xf32>, %dlse: tensor<?x?x?xf32>, %scale: f32)
    -> (tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?xf32>) {
  %dq, %dk, %dv, %dsink = attn.attention_backward <softmax> %q, %k, %v, %o, %lse, %do scale(%scale) sink(%sink : tensor<?x?x?xf32>) lse_grad(%dlse : tensor<?x?x?xf32>)
      : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?xf32>, tensor<?x?x?x32xf32>
      -> tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  return %dq, %dk, %dv, %dsink : tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?x32xf32>, tensor<?x?x?xf32>
}
