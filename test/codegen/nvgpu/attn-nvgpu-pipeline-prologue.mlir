// A tile class that reads per-tile summaries of a tensor (here: the min
// and max of document ids over 64-key tiles, and a sparse-table level
// built from them), as attn-analyze-mask generates for document masks:
// - the einsums before the attention become prologue kernels in their own
//   module, one per level of dependency: reductions one CTA per element
//   (warp shuffles, one partial per warp through shared memory), the
//   elementwise level one thread per element;
// - the attention module gets a one-warp kernel that lists the live key
//   blocks of each query tile (ballot + popc), and the attention kernel
//   walks that list instead of evaluating the tile class.
//
// RUN: attn-gpu-gen %s --emit-mlir | FileCheck %s --check-prefix=BINARY
// RUN: attn-gpu-gen %s -o %t.ptx --prologue-o=%t.prologue.ptx --manifest=%t.json
// RUN: FileCheck %s --input-file=%t.prologue.ptx --check-prefix=PROLOGUE \
// RUN:   --implicit-check-not=.local --implicit-check-not=__nv_
// RUN: FileCheck %s --input-file=%t.ptx --implicit-check-not=.local \
// RUN:   --implicit-check-not=__nv_
// RUN: FileCheck %s --input-file=%t.json --check-prefix=MANIFEST

// BINARY: gpu.binary @attn_gpu_0 [
// BINARY-SAME: .entry attn_fwd_tiles(
// BINARY-SAME: .entry attn_fwd(
// BINARY: gpu.binary @attn_gpu_0_prologue [
// BINARY-SAME: .entry attn_fwd_prologue0(
// BINARY-SAME: .entry attn_fwd_prologue1(

// PROLOGUE: .visible .entry attn_fwd_prologue0(
// PROLOGUE: .maxntid 256, 1, 1
// PROLOGUE: .shared .align 4 .b8 attn_prologue_partials[32];
// PROLOGUE: ld.global.nc.b32
// PROLOGUE: shfl.sync.bfly.b32
// PROLOGUE: min.f32
// PROLOGUE: st.shared.b32
// PROLOGUE: bar.sync 0;
// PROLOGUE: st.global.b32
// PROLOGUE: max.f32
// PROLOGUE: .visible .entry attn_fwd_prologue1(
// PROLOGUE: .maxntid 256, 1, 1
// PROLOGUE-NOT: bar.sync
// PROLOGUE: max.NaN.f32
// PROLOGUE: st.global.b32

// CHECK: .visible .entry attn_fwd_tiles(
// CHECK: .maxntid 32, 1, 1
// CHECK-DAG: vote.sync.ballot.b32
// CHECK-DAG: popc.b32
// CHECK-DAG: st.global.b32
// CHECK: .visible .entry attn_fwd(
// CHECK: .maxntid 128, 1, 1
// CHECK-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// CHECK-DAG: ld.global.b32

// The summaries are passed as bare pointers (dense, sizes recomputed).
// MANIFEST: "tiles", "ptr"
// MANIFEST-SAME: "captures": [
// MANIFEST-SAME: {"source": "einsum:2", "tensor": true, "type": "f32", "rank": 2
// MANIFEST-SAME: "tile_list": {"kernel": "attn_fwd_tiles", "block_m": 128, "block_n": 32, "per_head": false}
// MANIFEST-SAME: "prologue": [{"kernel": "attn_fwd_prologue0", "einsums": [0, 1], "params": {{[0-9]+}}}, {"kernel": "attn_fwd_prologue1", "einsums": [2], "params": {{[0-9]+}}}]

func.func @documents(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>,
                     %v: tensor<?x?x?x128xbf16>, %doc: tensor<?x?xi32>,
                     %B: index, %N: index, %scale: f32)
    -> tensor<?x?x?x128xf32> {
  %c1 = arith.constant 1 : index
  %c63 = arith.constant 63 : index
  %c64 = arith.constant 64 : index
  %n63 = arith.addi %N, %c63 : index
  %tiles = arith.floordivsi %n63, %c64 : index
  %lo = attn.einsum <min> ["b", "t"] reduce ["r"] extents(%B, %tiles, %c64)
      : tensor<?x?xf32> {
  ^bb0(%b: index, %t: index, %r: index):
    %t64 = arith.muli %t, %c64 : index
    %n = arith.addi %t64, %r : index
    %last = arith.subi %N, %c1 : index
    %nc = arith.minsi %n, %last : index
    %id = attn.read %doc[%b, %nc] : tensor<?x?xi32>
    %f = arith.sitofp %id : i32 to f32
    attn.yield %f : f32
  }
  %hi = attn.einsum <max> ["b", "t"] reduce ["r"] extents(%B, %tiles, %c64)
      : tensor<?x?xf32> {
  ^bb0(%b: index, %t: index, %r: index):
    %t64 = arith.muli %t, %c64 : index
    %n = arith.addi %t64, %r : index
    %last = arith.subi %N, %c1 : index
    %nc = arith.minsi %n, %last : index
    %id = attn.read %doc[%b, %nc] : tensor<?x?xi32>
    %f = arith.sitofp %id : i32 to f32
    attn.yield %f : f32
  }
  // Level 1: the max over two adjacent tiles.
  %hi2 = attn.einsum <none> ["b", "t"] extents(%B, %tiles) : tensor<?x?xf32> {
  ^bb0(%b: index, %t: index):
    %t1 = arith.addi %t, %c1 : index
    %lastTile = arith.subi %tiles, %c1 : index
    %tn = arith.minsi %t1, %lastTile : index
    %x = attn.read %hi[%b, %t] : tensor<?x?xf32>
    %y = attn.read %hi[%b, %tn] : tensor<?x?xf32>
    %z = arith.maximumf %x, %y : f32
    attn.yield %z : f32
  }
  %o = attn.attention <softmax> %q, %k, %v scale(%scale)
      : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>
      -> tensor<?x?x?x128xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    attn.yield %s : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    %causal = arith.cmpi ule, %n, %m : index
    %dn = attn.read %doc[%b, %n] : tensor<?x?xi32>
    %dm = attn.read %doc[%b, %m] : tensor<?x?xi32>
    %same = arith.cmpi eq, %dn, %dm : i32
    %keep = arith.andi %causal, %same : i1
    attn.yield %keep : i1
  } tile_class {
  ^bb0(%b: index, %h: index, %m0: index, %m1: index, %n0: index, %n1: index):
    // Empty when every key of the tile is after the rows, or its documents
    // end before the first row's; partial otherwise.
    %after = arith.cmpi ugt, %n0, %m1 : index
    %tn = arith.floordivsi %n0, %c64 : index
    %tm = arith.floordivsi %m0, %c64 : index
    %keysHi = attn.read %hi2[%b, %tn] : tensor<?x?xf32>
    %rowsLo = attn.read %lo[%b, %tm] : tensor<?x?xf32>
    %before = arith.cmpf olt, %keysHi, %rowsLo : f32
    %empty = arith.ori %after, %before : i1
    %zero = arith.constant 0 : i32
    %one = arith.constant 1 : i32
    %r = arith.select %empty, %zero, %one : i32
    attn.yield %r : i32
  }
  return %o : tensor<?x?x?x128xf32>
}
