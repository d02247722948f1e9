// Causal attention (n <= m) with LSE and the tile_class attn-analyze-mask
// gives causal masks: empty above the diagonal, full below it.
func.func @causal(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>,
                  %v: tensor<?x?x?x128xbf16>, %scale: f32)
    -> (tensor<?x?x?x128xf32>, tensor<?x?x?xf32>) {
  %o, %lse = attn.attention <softmax> %q, %k, %v scale(%scale)
      : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>
      -> tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c = arith.cmpi ule, %n, %m : index
    attn.yield %c : i1
  } tile_class {
  ^bb0(%b: index, %h: index, %m0: index, %m1: index, %n0: index, %n1: index):
    %empty = arith.cmpi ugt, %n0, %m1 : index
    %full = arith.cmpi ule, %n1, %m0 : index
    %c0 = arith.constant 0 : i32
    %c1 = arith.constant 1 : i32
    %c2 = arith.constant 2 : i32
    %pf = arith.select %full, %c2, %c1 : i32
    %r = arith.select %empty, %c0, %pf : i32
    attn.yield %r : i32
  }
  return %o, %lse : tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
}
