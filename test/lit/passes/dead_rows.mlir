// RUN: esact-opt %s -p esact-dead-rows --no-print-debuginfo | filecheck %s
// RUN: esact-opt %s -p esact-dead-rows,lower-to-esact --no-print-debuginfo | filecheck %s --check-prefix=ESACT
// esact-dead-rows on one INT8 pre-LN layer, batch 2, whose output is read only at token rows
// 1 and 3 (a host Gather of indices [-1, 1]): Q, the attention rows, O, the residual add and
// the final norm run on those 2 rows of 4; K, V and LN1 on all 4 (every query reads all keys).

builtin.module attributes {esact.weight_store = "Inputs/tiny_layer.npz"} {
  func.func @main(%x: tensor<2x4x8xf32> {onnx.name = "x"}) -> (tensor<2x2x8xf32> {onnx.name = "y"}) {
    %w = onnx.weight "w8" : tensor<8x8xi8>
    %s = onnx.weight "s8" : tensor<8xf32>
    %b = onnx.weight "b" : tensor<8xf32>
    %g = onnx.weight "gamma" : tensor<8xf32>
    %be = onnx.weight "beta" : tensor<8xf32>
    %ln = transformer.layer_norm %x, %g, %be eps(1.0e-05) {layer = 0 : i64, role = "norm"} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %q = transformer.linear %ln, %w, %b weight_scale(%s) input_scale(0.02) {layer = 0 : i64, role = "q"} : (tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %k = transformer.linear %ln, %w, %b weight_scale(%s) input_scale(0.02) {layer = 0 : i64, role = "k"} : (tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %v = transformer.linear %ln, %w, %b weight_scale(%s) input_scale(0.02) {layer = 0 : i64, role = "v"} : (tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %a = transformer.attention %q, %k, %v heads(2) scale(0.5) q_scale(0.03) k_scale(0.04) v_scale(0.02) p_scale(0.00787401572) {layer = 0 : i64, role = "attention"} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %o = transformer.linear %a, %w, %b weight_scale(%s) input_scale(0.02) {layer = 0 : i64, role = "o"} : (tensor<2x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %r = transformer.add %x, %o {layer = 0 : i64, role = "residual"} : (tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x4x8xf32>
    %n = transformer.layer_norm %r, %g, %be eps(1.0e-05) {layer = -1 : i64, role = "norm"} : (tensor<2x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x4x8xf32>
    %y = transformer.host(%n) {layer = -1 : i64, role = "host"} : (tensor<2x4x8xf32>) -> tensor<2x2x8xf32> {
    ^bb0(%t: tensor<2x4x8xf32>):
      %i = onnx.Constant {value = dense<[-1, 1]> : tensor<2xi64>} : () -> tensor<2xi64>
      %gathered = onnx.Gather %t, %i {axis = 1 : i64} : (tensor<2x4x8xf32>, tensor<2xi64>) -> tensor<2x2x8xf32>
      transformer.yield %gathered : tensor<2x2x8xf32>
    }
    func.return %y : tensor<2x2x8xf32>
  }

  // Every row is returned: nothing changes.
  func.func @all_rows(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
    %g = onnx.weight "gamma" : tensor<8xf32>
    %n = transformer.layer_norm %x, %g eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    func.return %n : tensor<1x4x8xf32>
  }

  // Causal attention puts its Lq queries last: row 0 alone is not a suffix, so the
  // attention keeps every query row and the narrowing starts after it.
  func.func @causal(%x: tensor<1x4x8xf32>) -> tensor<1x8xf32> {
    %g = onnx.weight "gamma" : tensor<8xf32>
    %a = transformer.attention %x, %x, %x heads(2) scale(0.5) causal q_scale(0.03) k_scale(0.04) v_scale(0.02) p_scale(0.00787401572) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %n = transformer.layer_norm %a, %g eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %y = transformer.host(%n) : (tensor<1x4x8xf32>) -> tensor<1x8xf32> {
    ^bb0(%t: tensor<1x4x8xf32>):
      %i = onnx.Constant {value = dense<0> : tensor<i64>} : () -> tensor<i64>
      %gathered = onnx.Gather %t, %i {axis = 1 : i64} : (tensor<1x4x8xf32>, tensor<i64>) -> tensor<1x8xf32>
      transformer.yield %gathered : tensor<1x8xf32>
    }
    func.return %y : tensor<1x8xf32>
  }

  // A host Slice of rows 1:3 (step 1) reads those rows; one of step 2 reads them all.
  func.func @sliced(%x: tensor<1x4x8xf32>) -> (tensor<1x2x8xf32>, tensor<1x2x8xf32>) {
    %g = onnx.weight "gamma" : tensor<8xf32>
    %n = transformer.layer_norm %x, %g eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %y = transformer.host(%n) : (tensor<1x4x8xf32>) -> tensor<1x2x8xf32> {
    ^bb0(%t: tensor<1x4x8xf32>):
      %s = onnx.Constant {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
      %e = onnx.Constant {value = dense<[3]> : tensor<1xi64>} : () -> tensor<1xi64>
      %a = onnx.Constant {value = dense<[1]> : tensor<1xi64>} : () -> tensor<1xi64>
      %sl = onnx.Slice %t, %s, %e, %a : (tensor<1x4x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x2x8xf32>
      transformer.yield %sl : tensor<1x2x8xf32>
    }
    %m = transformer.layer_norm %x, %g eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %z = transformer.host(%m) : (tensor<1x4x8xf32>) -> tensor<1x2x8xf32> {
    ^bb0(%t: tensor<1x4x8xf32>):
      %s = onnx.Constant {value = dense<[0]> : tensor<1xi64>} : () -> tensor<1xi64>
      %e = onnx.Constant {value = dense<[4]> : tensor<1xi64>} : () -> tensor<1xi64>
      %a = onnx.Constant {value = dense<[-2]> : tensor<1xi64>} : () -> tensor<1xi64>
      %st = onnx.Constant {value = dense<[2]> : tensor<1xi64>} : () -> tensor<1xi64>
      %sl = onnx.Slice %t, %s, %e, %a, %st : (tensor<1x4x8xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x2x8xf32>
      transformer.yield %sl : tensor<1x2x8xf32>
    }
    func.return %y, %z : tensor<1x2x8xf32>, tensor<1x2x8xf32>
  }
}

// CHECK-LABEL: func.func @main
// CHECK:      %ln = transformer.layer_norm %x, %g, %be {{.*}} -> tensor<2x4x8xf32>
// CHECK-NEXT: %[[LNQ:.*]] = transformer.select_rows %ln rows [1, 3] {layer = 0 : i64, role = "select_rows"} : (tensor<2x4x8xf32>) -> tensor<2x2x8xf32>
// CHECK-NEXT: %q = transformer.linear %[[LNQ]], {{.*}} -> tensor<2x2x8xf32>
// CHECK-NEXT: %k = transformer.linear %ln, {{.*}} -> tensor<2x4x8xf32>
// CHECK-NEXT: %v = transformer.linear %ln, {{.*}} -> tensor<2x4x8xf32>
// CHECK-NEXT: %a = transformer.attention %q, %k, %v {{.*}} : (tensor<2x2x8xf32>, tensor<2x4x8xf32>, tensor<2x4x8xf32>) -> tensor<2x2x8xf32>
// CHECK-NEXT: %o = transformer.linear %a, {{.*}} -> tensor<2x2x8xf32>
// CHECK-NEXT: %[[XR:.*]] = transformer.select_rows %x rows [1, 3] {layer = 0 : i64, role = "select_rows"}
// CHECK-NEXT: %r = transformer.add %[[XR]], %o {{.*}} -> tensor<2x2x8xf32>
// CHECK-NEXT: %n = transformer.layer_norm %r, {{.*}} -> tensor<2x2x8xf32>
// CHECK-NEXT: %y = transformer.host(%n) {{.*}} : (tensor<2x2x8xf32>) -> tensor<2x2x8xf32> {
// CHECK-NEXT: ^bb0(%t: tensor<2x2x8xf32>):
// Row 3 (index -1) is at position 1 of the narrowed value, row 1 at position 0.
// CHECK-NEXT: %{{.*}} = onnx.Constant {value = dense<[1, 0]> : tensor<2xi64>}
// CHECK-NEXT: %gathered = onnx.Gather %t, %{{.*}} {axis = 1 : i64} : (tensor<2x2x8xf32>, tensor<2xi64>) -> tensor<2x2x8xf32>

// CHECK-LABEL: func.func @all_rows
// CHECK-NOT:  select_rows
// CHECK:      transformer.layer_norm %x, %g {{.*}} -> tensor<1x4x8xf32>

// CHECK-LABEL: func.func @causal
// CHECK:      %a = transformer.attention %x, %x, %x {{.*}} -> tensor<1x4x8xf32>
// CHECK-NEXT: %[[AR:.*]] = transformer.select_rows %a rows [0]
// CHECK-NEXT: %n = transformer.layer_norm %[[AR]], %g {{.*}} -> tensor<1x1x8xf32>

// CHECK-LABEL: func.func @sliced
// CHECK:      %[[XS:.*]] = transformer.select_rows %x rows [1, 2]
// CHECK-NEXT: %n = transformer.layer_norm %[[XS]], %g {{.*}} -> tensor<1x2x8xf32>
// CHECK:      %[[S:.*]] = onnx.Constant {value = dense<0> : tensor<1xi64>}
// CHECK-NEXT: %[[E:.*]] = onnx.Constant {value = dense<2> : tensor<1xi64>}
// CHECK-NEXT: %sl = onnx.Slice %t, %[[S]], %[[E]], %a : (tensor<1x2x8xf32>,
// CHECK:      %m = transformer.layer_norm %x, %g {{.*}} -> tensor<1x4x8xf32>

// Lowered: the select_rows of %ln (kept in VBUF) copies each batch element's rows 1 and 3
// (runs of one row) on chip, SCATTER_ROWS with an identity reuse map, into the INT8 form Q
// reads (its only reader is that linear); the attention runs 2 query rows against 4 keys.
// ESACT:      esact.load {{.*}} buf = MBUF, {{.*}} rows = 1, cols = 2,
// ESACT-NEXT: esact.scatter_rows {{.*}} buf = VBUF, {{.*}} rows = 1, cols = 8,
// ESACT-COUNT-3: esact.scatter_rows {{.*}} buf = VBUF, {{.*}} rows = 1, cols = 8,
// ESACT-NEXT: esact.quant {{.*}} rows = 4, cols = 8,
// ESACT-NEXT: esact.store {{.*}} buf = ABUF, {{.*}} rows = 4, cols = 8,
// ESACT:      esact.attn_qk {{.*}} lq = 2, lk = 4, d = 4,
