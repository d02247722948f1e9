// The generated PTX assembles for sm_90a and sm_80 without spills or local
// memory, the captured window reaching the kernel as an i64 parameter.
//
// REQUIRES: ptxas
// RUN: attn-gpu-gen %s --chip=sm_90a -o %t.sm_90a.ptx --manifest=%t.json
// RUN: %ptxas -arch=sm_90a -v %t.sm_90a.ptx -o %t.sm_90a.cubin 2>&1 | FileCheck %s
// RUN: attn-gpu-gen %s --chip=sm_80 -o %t.sm_80.ptx
// RUN: %ptxas -arch=sm_80 -v %t.sm_80.ptx -o %t.sm_80.cubin 2>&1 | FileCheck %s
// RUN: FileCheck %s --input-file=%t.json --check-prefix=MANIFEST

// CHECK: Compiling entry function 'attn_fwd'
// CHECK: 0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads

// MANIFEST: "sink": true
// MANIFEST-SAME: ["scale", "f32"], ["partials", "ptr"], ["splits", "i32"], ["tiles", "ptr"], ["do", "ptr"], ["do.stride.b", "i64"], ["do.stride.h", "i64"], ["do.stride.m", "i64"], ["dlse", "ptr"], ["dlse.stride.b", "i64"], ["dlse.stride.h", "i64"], ["dlse.stride.m", "i64"], ["do16", "ptr"], ["delta", "ptr"], ["dsink", "ptr"], ["read_grad", "ptr"], ["dq", "ptr"], ["dq.stride.b", "i64"], ["dq.stride.h", "i64"], ["dq.stride.m", "i64"], ["dk", "ptr"], ["dk.stride.b", "i64"], ["dk.stride.g", "i64"], ["dk.stride.n", "i64"], ["dv", "ptr"], ["dv.stride.b", "i64"], ["dv.stride.g", "i64"], ["dv.stride.n", "i64"], ["capture.0", "i64"]]
// MANIFEST-SAME: "captures": [{"source": "arg:5", "tensor": false, "type": "index", "rank": 0, "first_param": 56}]

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
  }
  return %o, %lse : tensor<?x?x?x128xf32>, tensor<?x?x?xf32>
}
