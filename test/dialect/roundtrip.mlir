// RUN: attn-opt %s | attn-opt | FileCheck %s

// CHECK-LABEL: attn.kernel @causal
//       CHECK:   ^bb0(%B: index, %M: index, %N: index, %D: index, %Q: tensor<?x?x64xf32>, %K: tensor<?x?x64xf32>, %V: tensor<?x?x64xf32>, %scale: f32):
//       CHECK:   %[[S:.+]] = attn.einsum <sum> ["b", "m", "n"] reduce ["d"] extents(%B, %M, %N, %D) : tensor<?x?x?xf32> {
//       CHECK:   ^bb0(%b: index, %m: index, %n: index, %d: index):
//       CHECK:     attn.read %Q[%b, %m, %d] : tensor<?x?x64xf32>
//       CHECK:     attn.yield %{{.+}} : f32
//       CHECK:   %[[KEPT:.+]] = attn.keep %[[S]] ["b", "m", "n"] {sinks = 4 : i64} : tensor<?x?x?xf32> {
//       CHECK:     attn.yield %{{.+}} : i1
//       CHECK:   %[[P:.+]] = attn.softmax %[[KEPT]] dimension(2) : tensor<?x?x?xf32>
//       CHECK:   attn.normalize %[[P]] dimension(2) : tensor<?x?x?xf32>
//       CHECK:   attn.normalize %[[KEPT]] dimension(2) map(<softplus>) : tensor<?x?x?xf32>
//       CHECK:   attn.einsum <logsumexp> ["b", "m"] reduce ["n"]
//       CHECK:   attn.return
attn.kernel @causal attributes {
    dim_names = ["B", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V"], param_names = ["scale"], param_defaults = [1.0 : f32],
    output_names = ["O", "LSE"], output_types = [f32, f32],
    shapes = [["B", "M", "D"], ["B", "N", "D"], ["B", "N", "D"], ["B", "M", "D"], ["B", "M"]]} {
^bb0(%B: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x64xf32>, %K: tensor<?x?x64xf32>, %V: tensor<?x?x64xf32>, %scale: f32):
  %S = attn.einsum <sum> ["b", "m", "n"] reduce ["d"] extents(%B, %M, %N, %D) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index, %d: index):
    %q = attn.read %Q[%b, %m, %d] : tensor<?x?x64xf32>
    %k = attn.read %K[%b, %n, %d] : tensor<?x?x64xf32>
    %p = arith.mulf %q, %k : f32
    %s = arith.mulf %p, %scale : f32
    attn.yield %s : f32
  }
  %kept = attn.keep %S ["b", "m", "n"] {sinks = 4} : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %lim = arith.addi %m, %off : index
    %c = arith.cmpi sle, %n, %lim : index
    attn.yield %c : i1
  }
  %P = attn.softmax %kept dimension(2) : tensor<?x?x?xf32>
  %P2 = attn.normalize %P dimension(2) : tensor<?x?x?xf32>
  %P3 = attn.normalize %kept dimension(2) map(<softplus>) : tensor<?x?x?xf32>
  %O = attn.einsum <sum> ["b", "m", "e"] reduce ["n"] extents(%B, %M, %D, %N) : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %e: index, %n: index):
    %p = attn.read %P2[%b, %m, %n] : tensor<?x?x?xf32>
    %v = attn.read %V[%b, %n, %e] : tensor<?x?x64xf32>
    %pv = arith.mulf %p, %v : f32
    attn.yield %pv : f32
  }
  %L = attn.einsum <logsumexp> ["b", "m"] reduce ["n"] extents(%B, %M, %N) : tensor<?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index):
    %s = attn.read %S[%b, %m, %n] : tensor<?x?x?xf32>
    attn.yield %s : f32
  }
  attn.return %O, %L : tensor<?x?x?xf32>, tensor<?x?xf32>
}

// CHECK-LABEL: func.func @attention
//       CHECK:   %[[O:.+]]:2 = attn.attention <softmax> %{{.+}}, %{{.+}}, %{{.+}} scale(%{{.+}}) sink(%{{.+}} : tensor<?x?x?xf32>) : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xf32>, tensor<?x?x?xf32> score_mod {
//       CHECK:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//       CHECK:     math.tanh
//       CHECK:   } mask {
//       CHECK:   ^bb0(%b: index, %h: index, %m: index, %n: index):
//       CHECK:     attn.yield %{{.+}} : i1
//       CHECK:   } tile_class {
//       CHECK:   ^bb0(%b: index, %h: index, %m_first: index, %m_last: index, %n_first: index, %n_last: index):
//       CHECK:     attn.yield %{{.+}} : i32
//       CHECK:   attn.attention <none>
func.func @attention(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>,
                     %sink: tensor<?x?x?xf32>, %scale: f32, %offset: index) -> tensor<?x?x?x64xf32> {
  %o, %lse = attn.attention <softmax> %q, %k, %v scale(%scale) sink(%sink : tensor<?x?x?xf32>)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %t = math.tanh %s : f32
    attn.yield %t : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %lim = arith.addi %m, %offset : index
    %c = arith.cmpi sle, %n, %lim : index
    attn.yield %c : i1
  } tile_class {
  ^bb0(%b: index, %h: index, %m0: index, %m1: index, %n0: index, %n1: index):
    %c1 = arith.constant 1 : i32
    attn.yield %c1 : i32
  }
  %o2 = attn.attention <none> %q, %k, %v scale(%scale)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return %o2 : tensor<?x?x?x64xf32>
}

// CHECK-LABEL: func.func @attention_backward
//       CHECK:   %{{.+}}:4 = attn.attention_backward <softmax> %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} scale(%{{.+}}) sink(%{{.+}} : tensor<?x?x?xf32>) : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32> score_mod {
//       CHECK:   ^bb0(%score: f32, %b: index, %h: index, %m: index, %n: index):
//       CHECK:   } mask {
//       CHECK:   ^bb0(%b: index, %h: index, %m: index, %n: index):
//       CHECK:   attn.attention_backward <none>
//       CHECK:   attn.attention_backward <softmax> {{.*}} sink(%{{.+}} : tensor<?x?x?xf32>) lse_grad(%{{.+}} : tensor<?x?x?xf32>) : {{.*}} -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32> score_mod
func.func @attention_backward(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>, %v: tensor<?x?x?x64xbf16>,
                              %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %do: tensor<?x?x?x64xf32>,
                              %sink: tensor<?x?x?xf32>, %scale: f32) -> tensor<?x?x?x64xf32> {
  %dq, %dk, %dv, %dsink = attn.attention_backward <softmax> %q, %k, %v, %o, %lse, %do scale(%scale) sink(%sink : tensor<?x?x?xf32>)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %t = math.tanh %s : f32
    attn.yield %t : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi sle, %n, %m : index
    attn.yield %c : i1
  }
  %dq2, %dk2, %dv2 = attn.attention_backward <none> %q, %k, %v, %o, %lse, %do scale(%scale)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  %dq3, %dk3, %dv3, %dsink3 = attn.attention_backward <softmax> %q, %k, %v, %o, %lse, %do scale(%scale) sink(%sink : tensor<?x?x?xf32>) lse_grad(%lse : tensor<?x?x?xf32>)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return %dq2 : tensor<?x?x?x64xf32>
}
