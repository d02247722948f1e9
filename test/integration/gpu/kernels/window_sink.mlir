// Sliding-window causal attention (m - W < n <= m, W a runtime capture)
// with a per-row sink logit in the softmax denominator, and LSE.
func.func @window_sink(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>,
                       %v: tensor<?x?x?x128xbf16>, %sink: tensor<?x?x?xf32>,
                       %scale: f32, %window: index)
    -> (tensor<?x?x?x128xf32>, tensor<?x?x?xf32>) {
  %o, %lse = attn.attention <softmax> %q, %k, %v scale(%scale)
      sink(%sink : tensor<?x?x?xf32>)
      : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>
      -> tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %causal = arith.cmpi ule, %n, %m : index
    %nw = arith.addi %n, %window : index
    %inside = arith.cmpi ugt, %nw, %m : index
    %keep = arith.andi %causal, %inside : i1
    attn.yield %keep : i1
  } tile_class {
  ^bb0(%b: index, %h: index, %m0: index, %m1: index, %n0: index, %n1: index):
    // empty: n0 > m1 or n1 + W <= m0; full: n1 <= m0 and n0 + W > m1.
    %above = arith.cmpi ugt, %n0, %m1 : index
    %n1w = arith.addi %n1, %window : index
    %before = arith.cmpi ule, %n1w, %m0 : index
    %empty = arith.ori %above, %before : i1
    %below = arith.cmpi ule, %n1, %m0 : index
    %n0w = arith.addi %n0, %window : index
    %within = arith.cmpi ugt, %n0w, %m1 : index
    %full = arith.andi %below, %within : i1
    %c0 = arith.constant 0 : i32
    %c1 = arith.constant 1 : i32
    %c2 = arith.constant 2 : i32
    %pf = arith.select %full, %c2, %c1 : i32
    %r = arith.select %empty, %c0, %pf : i32
    attn.yield %r : i32
  }
  return %o, %lse : tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
}
