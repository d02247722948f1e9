// The GPU backend's first step: an attn.attention (causal mask, softcap
// score_mod, bf16) becomes a device-only kernel on mma.sync tensor cores.
// Its division by the constant cap is a product with the reciprocal (no
// div.rn subroutine per score).
//
// RUN: attn-gpu-gen %s --emit-mlir | FileCheck %s --check-prefix=BINARY
// RUN: attn-gpu-gen %s --chip=sm_90a -o %t.sm_90a.ptx --manifest=%t.json
// RUN: FileCheck %s --input-file=%t.sm_90a.ptx --implicit-check-not=.local \
// RUN:   --implicit-check-not=__nv_ --implicit-check-not=div.rn
// RUN: FileCheck %s --input-file=%t.json --check-prefix=MANIFEST
// RUN: attn-gpu-gen %s --chip=sm_80 --block-m=128 --warp-rows=16 -o %t.sm_80.ptx
// RUN: FileCheck %s --input-file=%t.sm_80.ptx --check-prefix=SM80

// The pipeline keeps the host function and adds a gpu.binary with PTX.
// BINARY: module attributes {gpu.container_module}
// BINARY: func.func @causal_softcap
// BINARY: attn.attention
// BINARY: gpu.binary @attn_gpu_0 [#gpu.object<#nvvm.target<O = 3, chip = "sm_90a", features = "+ptx80">
// BINARY-SAME: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32

// CHECK: .target sm_90a
// CHECK: .extern .shared .align 16 .b8 attn_smem[];
// CHECK: .visible .entry attn_fwd(
// CHECK-NEXT: .param .u64 .ptr .global .align 1 attn_fwd_param_0,
// CHECK: .param .f32 attn_fwd_param_28,
// CHECK-NEXT: .param .u64 .ptr .global .align 1 attn_fwd_param_29,
// CHECK-NEXT: .param .u32 attn_fwd_param_30,
// CHECK-NEXT: .param .u64 .ptr .global .align 1 attn_fwd_param_31,
// CHECK: .param .u64 attn_fwd_param_55
// CHECK-NEXT: )
// CHECK: .maxntid 128, 1, 1
// CHECK-DAG: cp.async.cg.shared.global [{{.*}}], [{{.*}}], 16, {{.*}};
// CHECK-DAG: cp.async.commit_group;
// CHECK-DAG: cp.async.wait_group 0;
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK-DAG: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// CHECK-DAG: shfl.sync.bfly.b32
// CHECK-DAG: ex2.approx.ftz.f32
// CHECK-DAG: ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16
// CHECK-DAG: lg2.approx.ftz.f32

// MANIFEST: "kernel": "attn_fwd", "chip": "sm_90a", "dtype": "bf16", "D": 64, "E": 64, "block": [128, 1, 1], "grid": ["ceil(M/128)", "H", "B"], "block_m": 128, "shared_bytes": 27648, "lse": true, "sink": false
// MANIFEST-SAME: ["scale", "f32"], ["partials", "ptr"], ["splits", "i32"], ["tiles", "ptr"], ["do", "ptr"], ["do.stride.b", "i64"], ["do.stride.h", "i64"], ["do.stride.m", "i64"], ["dlse", "ptr"], ["dlse.stride.b", "i64"], ["dlse.stride.h", "i64"], ["dlse.stride.m", "i64"], ["do16", "ptr"], ["delta", "ptr"], ["dsink", "ptr"], ["read_grad", "ptr"], ["dq", "ptr"], ["dq.stride.b", "i64"], ["dq.stride.h", "i64"], ["dq.stride.m", "i64"], ["dk", "ptr"], ["dk.stride.b", "i64"], ["dk.stride.g", "i64"], ["dk.stride.n", "i64"], ["dv", "ptr"], ["dv.stride.b", "i64"], ["dv.stride.g", "i64"], ["dv.stride.n", "i64"]]

// SM80: .target sm_80
// SM80: .maxntid 256, 1, 1
// SM80: mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32

func.func @causal_softcap(%q: tensor<?x?x?x64xbf16>, %k: tensor<?x?x?x64xbf16>,
                          %v: tensor<?x?x?x64xbf16>, %scale: f32)
    -> (tensor<?x?x?x64xf32>, tensor<?x?x?xf32>) {
  %o, %lse = attn.attention <softmax> %q, %k, %v scale(%scale)
      : tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>, tensor<?x?x?x64xbf16>
      -> tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
  score_mod {
  ^bb0(%s: f32, %b: index, %h: index, %m: index, %n: index):
    %cap = arith.constant 50.0 : f32
    %x = arith.divf %s, %cap : f32
    %t = math.tanh %x : f32
    %y = arith.mulf %t, %cap : f32
    attn.yield %y : f32
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
  return %o, %lse : tensor<?x?x?x64xf32>, tensor<?x?x?xf32>
}
