// RUN: attn-opt %s --split-input-file --verify-diagnostics

// expected-error @+1 {{has 1 dim sizes for 2 dims}}
attn.kernel @dim_sizes attributes {dim_names = ["M", "N"], dim_sizes = array<i64: 4>,
    input_names = [], param_names = [], param_defaults = [], output_names = [],
    output_types = [], shapes = []} {
^bb0(%M: index, %N: index):
  attn.return
}

// -----

// expected-error @+1 {{has two dims named 'M'}}
attn.kernel @duplicate_dim attributes {dim_names = ["M", "M"], dim_sizes = array<i64: 4, 4>,
    input_names = [], param_names = [], param_defaults = [], output_names = [],
    output_types = [], shapes = []} {
^bb0(%M: index, %N: index):
  attn.return
}

// -----

// expected-error @+1 {{shape #0 names unknown dim 'K'}}
attn.kernel @unknown_dim attributes {dim_names = ["M"], dim_sizes = array<i64: 4>,
    input_names = ["X"], param_names = [], param_defaults = [], output_names = [],
    output_types = [], shapes = [["K"]]} {
^bb0(%M: index, %X: tensor<4xf32>):
  attn.return
}

// -----

// expected-error @+1 {{input #0 has rank 2 but its shape names 1 axes}}
attn.kernel @input_rank attributes {dim_names = ["M"], dim_sizes = array<i64: 4>,
    input_names = ["X"], param_names = [], param_defaults = [], output_names = [],
    output_types = [], shapes = [["M"]]} {
^bb0(%M: index, %X: tensor<4x4xf32>):
  attn.return
}

// -----

// expected-error @+1 {{entry block takes 1 arguments, expected 2 (dims, inputs, params)}}
attn.kernel @arguments attributes {dim_names = ["M"], dim_sizes = array<i64: 4>,
    input_names = ["X"], param_names = [], param_defaults = [], output_names = [],
    output_types = [], shapes = [["M"]]} {
^bb0(%M: index):
  attn.return
}

// -----

// expected-error @+1 {{returns 0 values for 1 outputs}}
attn.kernel @outputs attributes {dim_names = ["M"], dim_sizes = array<i64: 4>,
    input_names = [], param_names = [], param_defaults = [], output_names = ["O"],
    output_types = [f32], shapes = [["M"]]} {
^bb0(%M: index):
  attn.return
}

// -----

// expected-error @+1 {{has two arguments named 'X'}}
attn.kernel @duplicate_argument attributes {dim_names = ["M"], dim_sizes = array<i64: 4>,
    input_names = ["X"], param_names = ["X"], param_defaults = [unit], output_names = [],
    output_types = [], shapes = [["M"]]} {
^bb0(%M: index, %X: tensor<4xf32>, %p: f32):
  attn.return
}

// -----

func.func @einsum_rank(%n: index) {
  // expected-error @+1 {{result has rank 1 but 2 indices}}
  %0 = attn.einsum <none> ["m", "n"] extents(%n, %n) : tensor<?xf32> {
  ^bb0(%m: index, %k: index):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @einsum_extents(%n: index) {
  // expected-error @+1 {{has 1 extents, expected one per index (2)}}
  %0 = attn.einsum <sum> ["m"] reduce ["d"] extents(%n) : tensor<?xf32> {
  ^bb0(%m: index, %d: index):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @reduction_without_index(%n: index) {
  // expected-error @+1 {{reduction 'max' has no reduced index}}
  %0 = attn.einsum <max> ["m"] extents(%n) : tensor<?xf32> {
  ^bb0(%m: index):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @none_with_index(%n: index) {
  // expected-error @+1 {{reduces over indices but its kind is 'none'}}
  %0 = attn.einsum <none> ["m"] reduce ["d"] extents(%n, %n) : tensor<?xf32> {
  ^bb0(%m: index, %d: index):
    %c = arith.constant 1.0 : f32
    attn.yield %c : f32
  }
  return
}

// -----

func.func @duplicate_index(%n: index, %x: tensor<?xf32>) {
  // expected-error @+1 {{has two indexs named 'm'}}
  %0 = attn.einsum <sum> ["m"] reduce ["m"] extents(%n, %n) : tensor<?xf32> {
  ^bb0(%m: index, %d: index):
    %v = attn.read %x[%d] : tensor<?xf32>
    attn.yield %v : f32
  }
  return
}

// -----

func.func @integer_reduction(%n: index, %x: tensor<?xi32>) {
  // expected-error @+1 {{reduces 'sum' over a non-float element type 'i32'}}
  %0 = attn.einsum <sum> ["m"] reduce ["d"] extents(%n, %n) : tensor<?xi32> {
  ^bb0(%m: index, %d: index):
    %v = attn.read %x[%d] : tensor<?xi32>
    attn.yield %v : i32
  }
  return
}

// -----

func.func @unused_reduction_index(%n: index, %x: tensor<?xf32>) {
  // expected-error @+1 {{reduces over index 'd' that its body does not use}}
  %0 = attn.einsum <sum> ["m"] reduce ["d"] extents(%n, %n) : tensor<?xf32> {
  ^bb0(%m: index, %d: index):
    %v = attn.read %x[%m] : tensor<?xf32>
    attn.yield %v : f32
  }
  return
}

// -----

func.func @yield_type(%n: index, %x: tensor<?xf32>) {
  // expected-error @+1 {{body yields 'i1' but the result holds 'f32'}}
  %0 = attn.einsum <none> ["m"] extents(%n) : tensor<?xf32> {
  ^bb0(%m: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @body_arguments(%n: index, %x: tensor<?xf32>) {
  // expected-error @+1 {{body takes 2 arguments, expected one index per axis (1)}}
  %0 = attn.einsum <none> ["m"] extents(%n) : tensor<?xf32> {
  ^bb0(%m: index, %k: index):
    %v = attn.read %x[%m] : tensor<?xf32>
    attn.yield %v : f32
  }
  return
}

// -----

func.func @read_rank(%n: index, %x: tensor<?x?xf32>) {
  %0 = attn.einsum <none> ["m"] extents(%n) : tensor<?xf32> {
  ^bb0(%m: index):
    // expected-error @+1 {{reads a rank-2 tensor with 1 subscripts}}
    %v = attn.read %x[%m] : tensor<?x?xf32>
    attn.yield %v : f32
  }
  return
}

// -----

func.func @read_outside(%n: index, %x: tensor<?xf32>) {
  // expected-error @+1 {{must be inside an attn.einsum, attn.keep, attn.attention or attn.attention_backward body}}
  %v = attn.read %x[%n] : tensor<?xf32>
  return
}

// -----

func.func @float_mask(%x: tensor<?xf32>) {
  // expected-error @+1 {{predicate must be i1, got 'f32'}}
  %0 = attn.keep %x ["m"] : tensor<?xf32> {
  ^bb0(%m: index):
    %v = attn.read %x[%m] : tensor<?xf32>
    attn.yield %v : f32
  }
  return
}

// -----

func.func @keep_indices(%x: tensor<?x?xf32>) {
  // expected-error @+1 {{names 1 indices for a rank-2 tensor}}
  %0 = attn.keep %x ["m"] : tensor<?x?xf32> {
  ^bb0(%m: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @negative_sinks(%x: tensor<?xf32>) {
  // expected-error @+1 {{sinks must be non-negative, got -1}}
  %0 = attn.keep %x ["m"] {sinks = -1} : tensor<?xf32> {
  ^bb0(%m: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @bad_block(%x: tensor<?xf32>) {
  // expected-error @+1 {{block must hold two positive sizes}}
  %0 = attn.keep %x ["m"] {block = array<i64: 64>} : tensor<?xf32> {
  ^bb0(%m: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @softmax_dimension(%x: tensor<?x?xf32>) {
  // expected-error @+1 {{dimension 2 is out of range for a rank-2 tensor}}
  %0 = attn.softmax %x dimension(2) : tensor<?x?xf32>
  return
}

// -----

func.func @softmax_sink_rank(%x: tensor<?x?xf32>, %s: tensor<?x?xf32>) {
  // expected-error @+1 {{sink has rank 2, expected 1 (the input without dimension 1)}}
  %0 = attn.softmax %x dimension(1) sink(%s : tensor<?x?xf32>) : tensor<?x?xf32>
  return
}

// -----

func.func @softmax_sink_type(%x: tensor<?x?xf32>, %s: tensor<?xf16>) {
  // expected-error @+1 {{sink holds 'f16' but the input holds 'f32'}}
  %0 = attn.softmax %x dimension(1) sink(%s : tensor<?xf16>) : tensor<?x?xf32>
  return
}

// -----

func.func @normalize_integer(%x: tensor<?x?xi32>) {
  // expected-error @+1 {{normalizes a non-float tensor of 'i32'}}
  %0 = attn.normalize %x dimension(1) : tensor<?x?xi32>
  return
}

// -----

func.func @attention_rank(%q: tensor<?x?x?xf32>, %k: tensor<?x?x?x?xf32>, %s: f32) {
  // expected-error @+1 {{query must have rank 4, got 3}}
  %o = attn.attention <softmax> %q, %k, %k scale(%s)
      : tensor<?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %x : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @attention_head_dim(%q: tensor<?x?x?x32xf32>, %k: tensor<?x?x?x16xf32>, %s: f32) {
  // expected-error @+1 {{query and key head dims differ: 32 vs 16}}
  %o = attn.attention <softmax> %q, %k, %k scale(%s)
      : tensor<?x?x?x32xf32>, tensor<?x?x?x16xf32>, tensor<?x?x?x16xf32> -> tensor<?x?x?x16xf32>
  score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %x : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @attention_lse_normalizer(%q: tensor<?x?x?x?xf32>, %s: f32) {
  // expected-error @+1 {{lse needs the softmax normalizer}}
  %o, %l = attn.attention <none> %q, %q, %q scale(%s)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %x : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @attention_float_mask(%q: tensor<?x?x?x?xf32>, %s: f32) {
  // expected-error @+1 {{mask must yield one 'i1'}}
  %o = attn.attention <softmax> %q, %q, %q scale(%s)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %x : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  }
  return
}

// -----

func.func @attention_score_mod_arguments(%q: tensor<?x?x?x?xf32>, %s: f32) {
  // expected-error @+1 {{score_mod must take 5 arguments of types ('f32', 'index', 'index', 'index', 'index')}}
  %o = attn.attention <softmax> %q, %q, %q scale(%s)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%x: f32):
    attn.yield %x : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @attention_sink_normalizer(%q: tensor<?x?x?x?xf32>, %sink: tensor<?x?x?xf32>, %s: f32) {
  // expected-error @+1 {{a sink logit needs the softmax normalizer}}
  %o = attn.attention <normalize> %q, %q, %q scale(%s) sink(%sink : tensor<?x?x?xf32>)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %x : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @attention_map_normalizer(%q: tensor<?x?x?x?xf32>, %s: f32) {
  // expected-error @+1 {{a weight map needs the normalize normalizer}}
  %o = attn.attention <softmax> map(<softplus>) %q, %q, %q scale(%s)
      : tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32>, tensor<?x?x?x?xf32> -> tensor<?x?x?x?xf32>
  score_mod {
  ^bb0(%x: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %x : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @backward_of_normalize(%q: tensor<?x?x?x64xbf16>, %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %scale: f32) {
  // expected-error @below {{differentiates normalize with a weight map only}}
  %dq, %dk, %dv = attn.attention_backward <normalize> %q, %q, %q, %o, %lse, %o scale(%scale)
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
  return
}

// -----

func.func @backward_gradient_type(%q: tensor<?x?x?x64xbf16>, %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %scale: f32) {
  // expected-error @below {{gradient type 'tensor<?x?x?x32xf32>' must be f32 and shaped as 'tensor<?x?x?x64xbf16>'}}
  %dq, %dk, %dv = attn.attention_backward <softmax> %q, %q, %q, %o, %lse, %o scale(%scale)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x32xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @backward_lse_grad_rank(%q: tensor<?x?x?x64xbf16>, %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %dlse: tensor<?x?xf32>, %scale: f32) {
  // expected-error @below {{lse_grad must be a rank-3 f32 tensor, got 'tensor<?x?xf32>'}}
  %dq, %dk, %dv = attn.attention_backward <softmax> %q, %q, %q, %o, %lse, %o scale(%scale) lse_grad(%dlse : tensor<?x?xf32>)
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
  return
}

// -----

func.func @backward_lse_grad_shape(%q: tensor<?x?x?x64xbf16>, %o: tensor<?x?x?x64xf32>, %lse: tensor<3x?x?xf32>, %dlse: tensor<2x?x?xf32>, %scale: f32) {
  // expected-error @below {{lse_grad 'tensor<2x?x?xf32>' must be shaped as the statistic 'tensor<3x?x?xf32>'}}
  %dq, %dk, %dv = attn.attention_backward <softmax> %q, %q, %q, %o, %lse, %o scale(%scale) lse_grad(%dlse : tensor<2x?x?xf32>)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<3x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @backward_lse_grad_none(%q: tensor<?x?x?x64xbf16>, %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %dlse: tensor<?x?x?xf32>, %scale: f32) {
  // expected-error @below {{lse_grad needs the softmax normalizer}}
  %dq, %dk, %dv = attn.attention_backward <none> %q, %q, %q, %o, %lse, %o scale(%scale) lse_grad(%dlse : tensor<?x?x?xf32>)
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
  return
}

// -----

func.func @backward_grad_read_at_key(%q: tensor<?x?x?x64xbf16>, %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %bias: tensor<?x?xf32>, %scale: f32) {
  // expected-error @below {{grad_reads entry 0 reads at a position that depends on the score or the key index n}}
  %dq, %dk, %dv, %dr = attn.attention_backward <softmax> %q, %q, %q, %o, %lse, %o scale(%scale) {grad_reads = array<i64: 0>}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32> reads(tensor<?x?x?xf32>)
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %x = attn.read %bias[%h, %n] : tensor<?x?xf32>
    %y = arith.addf %s, %x : f32
    attn.yield %y : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}

// -----

func.func @backward_grad_reads_count(%q: tensor<?x?x?x64xbf16>, %o: tensor<?x?x?x64xf32>, %lse: tensor<?x?x?xf32>, %slopes: tensor<?xf32>, %scale: f32) {
  // expected-error @below {{has one read gradient per grad_reads entry, got 0 for 1}}
  %dq, %dk, %dv = attn.attention_backward <softmax> %q, %q, %q, %o, %lse, %o scale(%scale) {grad_reads = array<i64: 0>}
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xf32>, tensor<?x?x?xf32>, tensor<?x?x?x64xf32>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>, tensor<?x?x?x64xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %x = attn.read %slopes[%h] : tensor<?xf32>
    %y = arith.addf %s, %x : f32
    attn.yield %y : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %t = arith.constant true
    attn.yield %t : i1
  }
  return
}
