// Softcap (Gemma 2): s -> 30 tanh(s / 30), no mask, with LSE.
func.func @softcap(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>,
                   %v: tensor<?x?x?x128xbf16>, %scale: f32)
    -> (tensor<?x?x?x128xf32>, tensor<?x?x?xf32>) {
  %o, %lse = attn.attention <softmax> %q, %k, %v scale(%scale)
      : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>
      -> tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %cap = arith.constant 30.0 : f32
    %x = arith.divf %s, %cap : f32
    %t = math.tanh %x : f32
    %y = arith.mulf %t, %cap : f32
    attn.yield %y : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return %o, %lse : tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
}
