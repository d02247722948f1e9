// RUN: attn-opt %s --attn-split-destinations | FileCheck %s

// Two reductions into one filled empty tensor and two elementwise ops into
// one empty tensor (as CSE leaves them): each op gets its own destination,
// so that empty-tensor elimination can hand one of them an output buffer
// without the other writing into it too.

// CHECK-LABEL: func.func @shared
//       CHECK:   %[[E1:.+]] = tensor.empty
//       CHECK:   %[[F1:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%[[E1]]
//       CHECK:   linalg.generic {{.*}} outs(%[[F1]] : tensor<?xf32>)
//       CHECK:   %[[E2:.+]] = tensor.empty
//       CHECK:   %[[F2:.+]] = linalg.fill ins(%{{.+}} : f32) outs(%[[E2]]
//       CHECK:   linalg.generic {{.*}} outs(%[[F2]] : tensor<?xf32>)
//       CHECK:   %[[E3:.+]] = tensor.empty
//       CHECK:   linalg.generic {{.*}} outs(%[[E3]] : tensor<?x?xf32>)
//       CHECK:   %[[E4:.+]] = tensor.empty
//       CHECK:   linalg.generic {{.*}} outs(%[[E4]] : tensor<?x?xf32>)
#row = affine_map<(i, j) -> (i)>
#full = affine_map<(i, j) -> (i, j)>
func.func @shared(%x: tensor<?x?xf32>, %m: index, %n: index)
    -> (tensor<?xf32>, tensor<?xf32>, tensor<?x?xf32>, tensor<?x?xf32>) {
  %zero = arith.constant 0.0 : f32
  %two = arith.constant 2.0 : f32
  %rows = tensor.empty(%m) : tensor<?xf32>
  %filled = linalg.fill ins(%zero : f32) outs(%rows : tensor<?xf32>) -> tensor<?xf32>
  %sum = linalg.generic {indexing_maps = [#full, #row], iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<?x?xf32>) outs(%filled : tensor<?xf32>) {
  ^bb0(%a: f32, %acc: f32):
    %s = arith.addf %a, %acc : f32
    linalg.yield %s : f32
  } -> tensor<?xf32>
  %max = linalg.generic {indexing_maps = [#full, #row], iterator_types = ["parallel", "reduction"]}
      ins(%x : tensor<?x?xf32>) outs(%filled : tensor<?xf32>) {
  ^bb0(%a: f32, %acc: f32):
    %s = arith.maximumf %a, %acc : f32
    linalg.yield %s : f32
  } -> tensor<?xf32>
  %all = tensor.empty(%m, %n) : tensor<?x?xf32>
  %doubled = linalg.generic {indexing_maps = [#full, #full], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<?x?xf32>) outs(%all : tensor<?x?xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.mulf %a, %two : f32
    linalg.yield %s : f32
  } -> tensor<?x?xf32>
  %halved = linalg.generic {indexing_maps = [#full, #full], iterator_types = ["parallel", "parallel"]}
      ins(%x : tensor<?x?xf32>) outs(%all : tensor<?x?xf32>) {
  ^bb0(%a: f32, %o: f32):
    %s = arith.divf %a, %two : f32
    linalg.yield %s : f32
  } -> tensor<?x?xf32>
  return %sum, %max, %doubled, %halved : tensor<?xf32>, tensor<?xf32>, tensor<?x?xf32>, tensor<?x?xf32>
}
