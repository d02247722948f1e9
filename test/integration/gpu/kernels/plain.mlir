// Plain softmax attention: no mask, no score_mod, no tile_class.
func.func @plain(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>,
                 %v: tensor<?x?x?x128xbf16>, %scale: f32)
    -> tensor<?x?x?x128xf32> {
  %o = attn.attention <softmax> %q, %k, %v scale(%scale)
      : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>
      -> tensor<?x?x?x128xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return %o : tensor<?x?x?x128xf32>
}
