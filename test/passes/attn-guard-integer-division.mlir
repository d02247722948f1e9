// RUN: attn-opt %s --pass-pipeline='builtin.module(attn.kernel(attn-guard-integer-division))' | FileCheck %s

// Divisions by a table entry and by a param become total (0 for a zero
// divisor, -a for -1 when signed); the division by a constant is left as
// it is.

// CHECK-LABEL: attn.kernel @divisions
//       CHECK:   attn.keep
//       CHECK:     %[[W:.+]] = attn.read %W[%b]
//       CHECK:     %[[D:.+]] = arith.index_cast %[[W]]
//       CHECK:     %[[ZERO:.+]] = arith.constant 0 : index
//       CHECK:     %[[IS_ZERO:.+]] = arith.cmpi eq, %[[D]], %[[ZERO]] : index
//       CHECK:     %[[IS_MINUS_ONE:.+]] = arith.cmpi eq, %[[D]], %{{.+}} : index
//       CHECK:     %[[UNSAFE:.+]] = arith.ori %[[IS_ZERO]], %[[IS_MINUS_ONE]] : i1
//       CHECK:     %[[SAFE:.+]] = arith.select %[[UNSAFE]], %{{.+}}, %[[D]] : index
//       CHECK:     %[[Q:.+]] = arith.floordivsi %m, %[[SAFE]] : index
//       CHECK:     %[[Q0:.+]] = arith.select %[[IS_ZERO]], %[[ZERO]], %[[Q]] : index
//       CHECK:     %[[NEG:.+]] = arith.subi %[[ZERO]], %m : index
//       CHECK:     %[[QUOTIENT:.+]] = arith.select %[[IS_MINUS_ONE]], %[[NEG]], %[[Q0]] : index
//       CHECK:     arith.remui %n, %{{.+}} : index
//   CHECK-NOT:     arith.select
//       CHECK:     arith.divsi %n, %[[C64:.+]] : index
//       CHECK:     arith.cmpi eq, %[[QUOTIENT]]
attn.kernel @divisions attributes {
    dim_names = ["B", "M", "N"], dim_sizes = array<i64: -9223372036854775808, -9223372036854775808, -9223372036854775808>,
    input_names = ["X", "W"], param_names = ["width"], param_defaults = [64 : i64],
    output_names = ["P"], output_types = [f32],
    shapes = [["B", "M", "N"], ["B"], ["B", "M", "N"]]} {
^bb0(%B: index, %M: index, %N: index, %X: tensor<?x?x?xf32>, %W: tensor<?xi32>, %width: i64):
  %kept = attn.keep %X ["b", "m", "n"] : tensor<?x?x?xf32> {
  ^bb0(%b: index, %m: index, %n: index):
    %w = attn.read %W[%b] : tensor<?xi32>
    %d = arith.index_cast %w : i32 to index
    %q = arith.floordivsi %m, %d : index
    %wi = arith.index_cast %width : i64 to index
    %r = arith.remui %n, %wi : index
    %c64 = arith.constant 64 : index
    %t = arith.divsi %n, %c64 : index
    %s = arith.addi %t, %r : index
    %c = arith.cmpi eq, %q, %s : index
    attn.yield %c : i1
  }
  attn.return %kept : tensor<?x?x?xf32>
}
