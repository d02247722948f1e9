// The decode kernels (`decode` option): a second gpu.module beside the
// attention kernel's, with the split-key kernel (one warp of 16 packed
// (query, head) rows, mma.sync, cp.async, its partial O and log-sum-exp
// stored for the merge) and the merge kernel (8 threads per row, the sink
// logit in the denominator, O and LSE stored). The score_mod and the tile
// class read the head, so the decode kernel evaluates them per packed row
// and per head of the group.
//
// RUN: attn-gpu-gen %s --emit-mlir --decode-o=%t.unused | FileCheck %s --check-prefix=BINARY
// RUN: attn-gpu-gen %s -o %t.ptx --decode-o=%t.decode.ptx --manifest=%t.json
// RUN: FileCheck %s --input-file=%t.decode.ptx --implicit-check-not=.local \
// RUN:   --implicit-check-not=__nv_
// RUN: FileCheck %s --input-file=%t.json --check-prefix=MANIFEST
// RUN: FileCheck %s --input-file=%t.ptx --check-prefix=MAIN
// Without the option there is no decode module.
// RUN: attn-gpu-gen %s -o %t.plain.ptx --manifest=%t.plain.json
// RUN: FileCheck %s --input-file=%t.plain.json --check-prefix=PLAIN

// BINARY: gpu.binary @attn_gpu_0 [
// BINARY: gpu.binary @attn_gpu_0_decode [
// BINARY-SAME: .entry attn_fwd_decode(
// BINARY-SAME: .entry attn_fwd_merge(

// CHECK: .target sm_90a
// CHECK: .visible .entry attn_fwd_decode(
// CHECK: .param .u64 .ptr .global .align 1 attn_fwd_decode_param_29,
// CHECK-NEXT: .param .u32 attn_fwd_decode_param_30,
// CHECK: .maxntid 32, 1, 1
// CHECK-DAG: cp.async.cg.shared.global [{{.*}}], [{{.*}}], 16, {{.*}};
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16
// CHECK-DAG: ex2.approx.ftz.f32
// CHECK-DAG: lg2.approx.ftz.f32
// CHECK-DAG: st.global.v2.b32
// CHECK: .visible .entry attn_fwd_merge(
// CHECK: .maxntid 128, 1, 1
// CHECK-NOT: mma.sync
// CHECK-DAG: ex2.approx.ftz.f32
// CHECK-DAG: lg2.approx.ftz.f32
// CHECK-DAG: st.global.b32

// MAIN: .visible .entry attn_fwd(
// MAIN-NOT: .entry

// MANIFEST: "kernel": "attn_fwd",
// MANIFEST-SAME: "sink": true
// MANIFEST-SAME: ["partials", "ptr"], ["splits", "i32"], ["tiles", "ptr"], ["do", "ptr"], ["do.stride.b", "i64"], ["do.stride.h", "i64"], ["do.stride.m", "i64"], ["dlse", "ptr"], ["dlse.stride.b", "i64"], ["dlse.stride.h", "i64"], ["dlse.stride.m", "i64"], ["do16", "ptr"], ["delta", "ptr"], ["dsink", "ptr"], ["read_grad", "ptr"], ["dq", "ptr"], ["dq.stride.b", "i64"], ["dq.stride.h", "i64"], ["dq.stride.m", "i64"], ["dk", "ptr"], ["dk.stride.b", "i64"], ["dk.stride.g", "i64"], ["dk.stride.n", "i64"], ["dv", "ptr"], ["dv.stride.b", "i64"], ["dv.stride.g", "i64"], ["dv.stride.n", "i64"], ["capture.0", "i64"]]
// MANIFEST-SAME: "decode": {"kernel": "attn_fwd_decode", "merge": "attn_fwd_merge", "rows": 16, "shared_bytes": 39168, "merge_threads": 128}

// PLAIN-NOT: "decode"

func.func @alibi_window_sink(%q: tensor<?x?x?x128xbf16>, %k: tensor<?x?x?x128xbf16>,
                             %v: tensor<?x?x?x128xbf16>, %sink: tensor<?x?x?xf32>,
                             %scale: f32, %window: index)
    -> (tensor<?x?x?x128xf32>, tensor<?x?x?xf32>) {
  %o, %lse = attn.attention <softmax> %q, %k, %v scale(%scale)
      sink(%sink : tensor<?x?x?xf32>)
      : tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>, tensor<?x?x?x128xbf16>
      -> tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %hi = arith.index_cast %h : index to i32
    %hf = arith.sitofp %hi : i32 to f32
    %d = arith.subi %n, %m : index
    %di = arith.index_cast %d : index to i32
    %df = arith.sitofp %di : i32 to f32
    %slope = arith.mulf %hf, %df : f32
    %r = arith.addf %s, %slope : f32
    attn.yield %r : f32
  } mask {
  ^bb0(%b: index, %h: index, %m: index, %n: index):
    // A window of window * (h + 1) keys.
    %c1 = arith.constant 1 : index
    %h1 = arith.addi %h, %c1 : index
    %w = arith.muli %window, %h1 : index
    %causal = arith.cmpi ule, %n, %m : index
    %nw = arith.addi %n, %w : index
    %inside = arith.cmpi ugt, %nw, %m : index
    %keep = arith.andi %causal, %inside : i1
    attn.yield %keep : i1
  } tile_class {
  ^bb0(%b: index, %h: index, %m0: index, %m1: index, %n0: index, %n1: index):
    %c1 = arith.constant 1 : index
    %h1 = arith.addi %h, %c1 : index
    %w = arith.muli %window, %h1 : index
    %after = arith.cmpi ugt, %n0, %m1 : index
    %n1w = arith.addi %n1, %w : index
    %before = arith.cmpi ule, %n1w, %m0 : index
    %empty = arith.ori %after, %before : i1
    %causal = arith.cmpi ule, %n1, %m0 : index
    %n0w = arith.addi %n0, %w : index
    %inside = arith.cmpi ugt, %n0w, %m1 : index
    %full = arith.andi %causal, %inside : i1
    %zero = arith.constant 0 : i32
    %one = arith.constant 1 : i32
    %two = arith.constant 2 : i32
    %pf = arith.select %full, %two, %one : i32
    %r = arith.select %empty, %zero, %pf : i32
    attn.yield %r : i32
  }
  return %o, %lse : tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
}
