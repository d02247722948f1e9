// RUN: attn-opt %s --split-input-file --attn-analyze-mask 2>/dev/null | FileCheck %s

// Causal with offset N - M: decided exactly from the tile corners.
// CHECK-LABEL: attn.kernel @causal
//   CHECK-NOT:   attn.einsum
//       CHECK:   } tile_class {
//  CHECK-NEXT:   ^bb0(%b: index, %h: index, %m_first: index, %m_last: index, %n_first: index, %n_last: index):
//       CHECK:     %[[OFF:.+]] = arith.subi %N, %M : index
//   CHECK-DAG:     %[[QLO:.+]] = arith.addi %m_first, %[[OFF]] : index
//   CHECK-DAG:     %[[QHI:.+]] = arith.addi %m_last, %[[OFF]] : index
//   CHECK-DAG:     %[[MAYT:.+]] = arith.cmpi sle, %n_first, %[[QHI]] : index
//   CHECK-DAG:     %[[MAYF:.+]] = arith.cmpi sgt, %n_last, %[[QLO]] : index
//   CHECK-DAG:     %[[PARTIAL:.+]] = arith.constant 1 : i32
//   CHECK-DAG:     %[[FULL:.+]] = arith.constant 2 : i32
//       CHECK:     %[[NONEMPTY:.+]] = arith.select %[[MAYF]], %[[PARTIAL]], %[[FULL]] : i32
//       CHECK:     %[[EMPTY:.+]] = arith.constant 0 : i32
//       CHECK:     %[[CLASS:.+]] = arith.select %[[MAYT]], %[[NONEMPTY]], %[[EMPTY]] : i32
//       CHECK:     attn.yield %[[CLASS]] : i32
attn.kernel @causal attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %lim = arith.addi %m, %off : index
    %keep = arith.cmpi sle, %n, %lim : index
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// Sliding window with sinks: the window distance is bounded by
// [q_lo - n_last, q_hi - n_first]; sinks by n_first / n_last.
// CHECK-LABEL: attn.kernel @window_sinks
//   CHECK-NOT:   attn.einsum
//       CHECK:   } tile_class {
//       CHECK:     %[[DLO:.+]] = arith.subi %{{.+}}, %n_last : index
//       CHECK:     %[[DHI:.+]] = arith.subi %{{.+}}, %n_first : index
//       CHECK:     %[[W:.+]] = arith.index_cast %window : i32 to index
//       CHECK:     arith.cmpi slt, %[[DLO]], %[[W]] : index
//       CHECK:     arith.cmpi sge, %[[DHI]], %[[W]] : index
//       CHECK:     %[[S:.+]] = arith.index_cast %sinks : i32 to index
//       CHECK:     arith.cmpi slt, %n_first, %[[S]] : index
//       CHECK:     arith.cmpi sge, %n_last, %[[S]] : index
//       CHECK:     attn.yield %{{.+}} : i32
attn.kernel @window_sinks attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V"], param_names = ["window", "sinks"], param_defaults = [0 : i32, 0 : i32],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>,
     %window: i32, %sinks: i32):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %q = arith.addi %m, %off : index
    %causal = arith.cmpi sle, %n, %q : index
    %d = arith.subi %q, %n : index
    %w = arith.index_cast %window : i32 to index
    %near = arith.cmpi slt, %d, %w : index
    %s = arith.index_cast %sinks : i32 to index
    %sink = arith.cmpi slt, %n, %s : index
    %either = arith.ori %near, %sink : i1
    %keep = arith.andi %causal, %either : i1
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// Prefix-LM: causal or n < prefix.
// CHECK-LABEL: attn.kernel @prefix_lm
//       CHECK:   } tile_class {
//       CHECK:     %[[P:.+]] = arith.index_cast %prefix : i32 to index
//       CHECK:     arith.cmpi slt, %n_first, %[[P]] : index
//       CHECK:     arith.cmpi sge, %n_last, %[[P]] : index
//       CHECK:     arith.ori
//       CHECK:     arith.andi
//       CHECK:     attn.yield %{{.+}} : i32
attn.kernel @prefix_lm attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V"], param_names = ["prefix"], param_defaults = [0 : i32],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>,
     %prefix: i32):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %q = arith.addi %m, %off : index
    %causal = arith.cmpi sle, %n, %q : index
    %p = arith.index_cast %prefix : i32 to index
    %inprefix = arith.cmpi slt, %n, %p : index
    %keep = arith.ori %causal, %inprefix : i1
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// Block-periodic: n / 64 <= m / 64 is monotone in the bounds; the floored
// modulo n mod 4 is exact within one period and [0, 3] across periods.
// CHECK-LABEL: attn.kernel @block_periodic
//       CHECK:   } tile_class {
//   CHECK-DAG:     %[[C64:.+]] = arith.constant 64 : index
//       CHECK:     %[[MB0:.+]] = arith.floordivsi %m_first, %[[C64]] : index
//       CHECK:     %[[MB1:.+]] = arith.floordivsi %m_last, %[[C64]] : index
//       CHECK:     %[[NB0:.+]] = arith.floordivsi %n_first, %[[C64]] : index
//       CHECK:     %[[NB1:.+]] = arith.floordivsi %n_last, %[[C64]] : index
//       CHECK:     arith.cmpi sle, %[[NB0]], %[[MB1]] : index
//       CHECK:     arith.cmpi sgt, %[[NB1]], %[[MB0]] : index
//       CHECK:     %[[Q0:.+]] = arith.floordivsi %n_first, %[[C4:.+]] : index
//       CHECK:     %[[Q1:.+]] = arith.floordivsi %n_last, %[[C4]] : index
//       CHECK:     %[[SAME:.+]] = arith.cmpi eq, %[[Q0]], %[[Q1]] : index
//       CHECK:     %[[C3:.+]] = arith.constant 3 : index
//       CHECK:     arith.select %[[SAME]], %{{.+}}, %[[C3]] : index
//   CHECK-NOT:     arith.remsi
//       CHECK:     attn.yield %{{.+}} : i32
attn.kernel @block_periodic attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c64 = arith.constant 64 : index
    %mb = arith.floordivsi %m, %c64 : index
    %nb = arith.floordivsi %n, %c64 : index
    %same = arith.cmpi sle, %nb, %mb : index
    %c4 = arith.constant 4 : index
    %r = arith.remsi %n, %c4 : index
    %c0 = arith.constant 0 : index
    %nz = arith.cmpi ne, %r, %c0 : index
    %rneg = arith.cmpi slt, %r, %c0 : index
    %dneg = arith.cmpi slt, %c4, %c0 : index
    %mis = arith.xori %rneg, %dneg : i1
    %fix = arith.andi %nz, %mis : i1
    %rd = arith.addi %r, %c4 : index
    %mod = arith.select %fix, %rd, %r : index
    %first = arith.cmpi eq, %mod, %c0 : index
    %keep = arith.ori %same, %first : i1
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// Document ids: per-tile min/max summaries of Doc (64 keys each), a sparse
// table of spans of 2, 4 and 8 tiles, and the whole-row min/max, all before
// the attention; the tile_class reads them.
// CHECK-LABEL: attn.kernel @document
//       CHECK:   %[[TILES:.+]] = arith.floordivsi
//       CHECK:   %[[MIN0:.+]] = attn.einsum <min> ["i0", "t1"] reduce ["r1"] extents(%B, %[[TILES]], %{{.+}}) : tensor<?x?xf32>
//       CHECK:     arith.minsi
//       CHECK:     attn.read %Doc[%i0, %{{.+}}] : tensor<?x?xi32>
//       CHECK:     arith.sitofp
//       CHECK:   %[[MAX0:.+]] = attn.einsum <max> ["i0", "t1"] reduce ["r1"]
//       CHECK:   %[[MIN1:.+]] = attn.einsum <none> ["i0", "t1"] extents(%B, %[[TILES]])
//       CHECK:     attn.read %[[MIN0]][%i0, %t1]
//       CHECK:     arith.minimumf
//       CHECK:   %[[MAX1:.+]] = attn.einsum <none> ["i0", "t1"]
//       CHECK:     arith.maximumf
//       CHECK:   %[[MIN2:.+]] = attn.einsum <none>
//       CHECK:   %[[MAX2:.+]] = attn.einsum <none>
//       CHECK:   %[[MIN3:.+]] = attn.einsum <none>
//       CHECK:   %[[MAX3:.+]] = attn.einsum <none>
//       CHECK:   %[[WMIN:.+]] = attn.einsum <min> ["i0"] reduce ["r1"] extents(%B, %N) : tensor<?xf32>
//       CHECK:   %[[WMAX:.+]] = attn.einsum <max> ["i0"] reduce ["r1"] extents(%B, %N) : tensor<?xf32>
//       CHECK:   attn.attention
//       CHECK:   } tile_class {
//   CHECK-DAG:     attn.read %[[WMIN]][%b] : tensor<?xf32>
//   CHECK-DAG:     attn.read %[[MIN3]][%b, %{{.+}}] : tensor<?x?xf32>
//   CHECK-DAG:     attn.read %[[MIN0]][%b, %{{.+}}] : tensor<?x?xf32>
//   CHECK-DAG:     attn.read %[[MAX0]][%b, %{{.+}}] : tensor<?x?xf32>
//   CHECK-DAG:     attn.read %Doc[%b, %{{.+}}] : tensor<?x?xi32>
//   CHECK-DAG:     arith.fptosi
//       CHECK:     attn.yield %{{.+}} : i32
attn.kernel @document attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V", "Doc"], param_names = ["pad"], param_defaults = [0 : i32],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "N"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>, %Doc: tensor<?x?xi32>,
     %pad: i32):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %q = arith.addi %m, %off : index
    %causal = arith.cmpi sle, %n, %q : index
    %kd = attn.read %Doc[%b, %n] : tensor<?x?xi32>
    %kdi = arith.index_cast %kd : i32 to index
    %qd = attn.read %Doc[%b, %q] : tensor<?x?xi32>
    %qdi = arith.index_cast %qd : i32 to index
    %same = arith.cmpi eq, %kdi, %qdi : index
    %p = arith.index_cast %pad : i32 to index
    %notpad = arith.cmpi ne, %kdi, %p : index
    %a = arith.andi %causal, %same : i1
    %keep = arith.andi %a, %notpad : i1
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// Block map: two ranged axes (m / 64, n / 64): per-tile and whole any/all
// summaries of the i1 map, and exact corner reads for spans of two blocks.
// CHECK-LABEL: attn.kernel @block_map
//       CHECK:   %[[ALL:.+]] = attn.einsum <min> ["i0", "i1", "t2", "t3"] reduce ["r2", "r3"]
//       CHECK:     attn.read %Blocks
//       CHECK:     arith.uitofp
//       CHECK:   %[[ANY:.+]] = attn.einsum <max> ["i0", "i1", "t2", "t3"] reduce ["r2", "r3"]
//       CHECK:   attn.einsum <min> ["i0", "i1"] reduce ["r2", "r3"] extents(%B, %H, %MB, %NB)
//       CHECK:   attn.einsum <max> ["i0", "i1"] reduce ["r2", "r3"] extents(%B, %H, %MB, %NB)
//       CHECK:   attn.attention
//       CHECK:   } tile_class {
//   CHECK-DAG:     attn.read %[[ALL]][%b, %h, %{{.+}}, %{{.+}}] : tensor<?x?x?x?xf32>
//   CHECK-DAG:     attn.read %[[ANY]][%b, %h, %{{.+}}, %{{.+}}] : tensor<?x?x?x?xf32>
//   CHECK-DAG:     attn.read %Blocks[%b, %h, %{{.+}}, %{{.+}}] : tensor<?x?x?x?xi1>
//       CHECK:     attn.yield %{{.+}} : i32
attn.kernel @block_map attributes {
    dim_names = ["B", "H", "M", "N", "MB", "NB", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V", "Blocks"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "MB", "NB"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %MB: index, %NB: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>, %Blocks: tensor<?x?x?x?xi1>):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %c64 = arith.constant 64 : index
    %mb = arith.floordivsi %m, %c64 : index
    %nb = arith.floordivsi %n, %c64 : index
    %keep = attn.read %Blocks[%b, %h, %mb, %nb] : tensor<?x?x?x?xi1>
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// Per-head flags: Streaming[h] is the same over the tile, read exactly.
// CHECK-LABEL: attn.kernel @per_head
//   CHECK-NOT:   attn.einsum
//       CHECK:   } tile_class {
//       CHECK:     %[[ST:.+]] = attn.read %Streaming[%h] : tensor<?xi1>
//       CHECK:     arith.xori %[[ST]], %{{.+}} : i1
//       CHECK:     attn.yield %{{.+}} : i32
attn.kernel @per_head attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V", "Streaming"], param_names = ["window"], param_defaults = [0 : i32],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["H"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>, %Streaming: tensor<?xi1>,
     %window: i32):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %off = arith.subi %N, %M : index
    %q = arith.addi %m, %off : index
    %causal = arith.cmpi sle, %n, %q : index
    %st = attn.read %Streaming[%h] : tensor<?xi1>
    %true = arith.constant true
    %retrieval = arith.xori %st, %true : i1
    %d = arith.subi %q, %n : index
    %w = arith.index_cast %window : i32 to index
    %near = arith.cmpi slt, %d, %w : index
    %either = arith.ori %retrieval, %near : i1
    %keep = arith.andi %causal, %either : i1
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// A float predicate over a range cannot be bounded: always partial.
// CHECK-LABEL: attn.kernel @float_mask
//   CHECK-NOT:   attn.einsum
//       CHECK:   } tile_class {
//  CHECK-NEXT:   ^bb0
//  CHECK-NEXT:     %[[P:.+]] = arith.constant 1 : i32
//  CHECK-NEXT:     attn.yield %[[P]] : i32
attn.kernel @float_mask attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V", "Bias"], param_names = [], param_defaults = [],
    output_names = ["O"], output_types = [f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["M", "N"], ["B", "H", "M", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>, %Bias: tensor<?x?xf32>):
  %scale = arith.constant 0.125 : f32
  %O = attn.attention <softmax> %Q, %K, %V scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> -> tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %x = attn.read %Bias[%m, %n] : tensor<?x?xf32>
    %zero = arith.constant 0.0 : f32
    %keep = arith.cmpf ogt, %x, %zero : f32
    attn.yield %keep : i1
  }
  attn.return %O : tensor<?x?x?x64xf32>
}

// -----

// attn.attention_backward is classified as the forward is.
// CHECK-LABEL: attn.kernel @backward
//       CHECK:   attn.attention_backward <softmax>
//       CHECK:   } tile_class {
//  CHECK-NEXT:   ^bb0(%b: index, %h: index, %m_first: index, %m_last: index, %n_first: index, %n_last: index):
//   CHECK-DAG:     arith.cmpi sle, %n_first, %m_last : index
//   CHECK-DAG:     arith.cmpi sgt, %n_last, %m_first : index
//       CHECK:     attn.yield %{{.+}} : i32
attn.kernel @backward attributes {
    dim_names = ["B", "H", "M", "N", "D"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808, -9223372036854775808, 64>,
    input_names = ["Q", "K", "V", "O", "L", "dO"], param_names = [], param_defaults = [],
    output_names = ["dQ", "dK", "dV"], output_types = [f32, f32, f32],
    shapes = [["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"], ["B", "H", "M", "D"], ["B", "H", "M"], ["B", "H", "M", "D"],
              ["B", "H", "M", "D"], ["B", "H", "N", "D"], ["B", "H", "N", "D"]]} {
^bb0(%B: index, %H: index, %M: index, %N: index, %D: index,
     %Q: tensor<?x?x?x64xf32>, %K: tensor<?x?x?x64xf32>, %V: tensor<?x?x?x64xf32>,
     %O: tensor<?x?x?x64xf32>, %L: tensor<?x?x?xf32>, %dO: tensor<?x?x?x64xf32>):
  %scale = arith.constant 0.125 : f32
  %dQ, %dK, %dV = attn.attention_backward <softmax> %Q, %K, %V, %O, %L, %dO scale(%scale)
      : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %keep = arith.cmpi sle, %n, %m : index
    attn.yield %keep : i1
  }
  attn.return %dQ, %dK, %dV : tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
}
