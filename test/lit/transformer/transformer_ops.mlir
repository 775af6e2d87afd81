// RUN: esact-opt %s --no-print-debuginfo | esact-opt --no-print-debuginfo | filecheck %s
// Every transformer op, in each of its forms, prints and parses back to itself.

func.func @ops(%x: tensor<1x8x16xf32>, %m: tensor<1x1x1x8xf32>, %ids: tensor<1x8xi64>) -> tensor<1x8x16xf32> {
  %w = onnx.weight "w" : tensor<16x16xf32>
  %b = onnx.weight "b" : tensor<16xf32>
  %y = transformer.linear %x, %w, %b : (tensor<1x8x16xf32>, tensor<16x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  %y2 = transformer.linear %x, %w : (tensor<1x8x16xf32>, tensor<16x16xf32>) -> tensor<1x8x16xf32>
  %a = transformer.attention %y, %y2, %y mask %m heads(4) scale(0.25) causal : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x1x1x8xf32>) -> tensor<1x8x16xf32>
  %a2 = transformer.attention %a, %a, %a heads(2) scale(0.125) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %l = transformer.layer_norm %a2, %b, %b eps(1.0e-12) : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  %l2 = transformer.layer_norm %l, %b eps(1.0e-05) : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  %g = transformer.gelu %l2 approximate("none") : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %g2 = transformer.gelu %g approximate("tanh") : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %s = transformer.softmax %g2 : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %r = transformer.add %s, %x : (tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %h:2 = transformer.host(%ids, %r) : (tensor<1x8xi64>, tensor<1x8x16xf32>) -> (tensor<1x8x16xf32>, tensor<1x8x16xf32>) {
  ^bb0(%i: tensor<1x8xi64>, %v: tensor<1x8x16xf32>):
    %table = onnx.weight "table" : tensor<100x16xf32>
    %e = onnx.Gather %table, %i {axis = 0 : i64} : (tensor<100x16xf32>, tensor<1x8xi64>) -> tensor<1x8x16xf32>
    %t = onnx.Tanh %v : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
    transformer.yield %e, %t : tensor<1x8x16xf32>, tensor<1x8x16xf32>
  }
  transformer.host() : () -> () {
    transformer.yield
  }
  func.return %h#1 : tensor<1x8x16xf32>
}

// CHECK:      %y = transformer.linear %x, %w, %b : (tensor<1x8x16xf32>, tensor<16x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %y2 = transformer.linear %x, %w : (tensor<1x8x16xf32>, tensor<16x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %a = transformer.attention %y, %y2, %y mask %m heads(4) scale(2.500000e-01) causal : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x1x1x8xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %a2 = transformer.attention %a, %a, %a heads(2) scale(1.250000e-01) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %l = transformer.layer_norm %a2, %b, %b eps(1.000000e-12) : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %l2 = transformer.layer_norm %l, %b eps(1.000000e-05) : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %g = transformer.gelu %l2 approximate("none") : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %g2 = transformer.gelu %g approximate("tanh") : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %s = transformer.softmax %g2 : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %r = transformer.add %s, %x : (tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %h, %h_1 = transformer.host(%ids, %r) : (tensor<1x8xi64>, tensor<1x8x16xf32>) -> (tensor<1x8x16xf32>, tensor<1x8x16xf32>) {
// CHECK-NEXT: ^bb0(%i: tensor<1x8xi64>, %v: tensor<1x8x16xf32>):
// CHECK-NEXT:   %table = onnx.weight "table" : tensor<100x16xf32>
// CHECK-NEXT:   %e = onnx.Gather %table, %i {axis = 0 : i64} : (tensor<100x16xf32>, tensor<1x8xi64>) -> tensor<1x8x16xf32>
// CHECK-NEXT:   %t = onnx.Tanh %v : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT:   transformer.yield %e, %t : tensor<1x8x16xf32>, tensor<1x8x16xf32>
// CHECK-NEXT: }
// CHECK-NEXT: transformer.host() : () -> () {
// CHECK-NEXT:   transformer.yield
// CHECK-NEXT: }
// CHECK-NEXT: func.return %h_1 : tensor<1x8x16xf32>

// INT8 forms (quantize), masked forms (insert-spls or a constant mask from the weight store)
// and grouped-query attention are the same two ops with more operands and properties.
func.func @int8_and_masked(%x: tensor<1x4x8xf32>, %m: tensor<1x1x1x4xf32>, %reuse: tensor<1x4xi32>, %keys: tensor<1x2x4xi1>) -> tensor<1x4x8xf32> {
  %w = onnx.weight "w.int8" : tensor<8x8xi8>
  %s = onnx.weight "w.scale" : tensor<8xf32>
  %b = onnx.weight "b" : tensor<8xf32>
  %rows = onnx.weight "every_second_row" : tensor<4xi8>
  %spa = onnx.weight "key_mask" : tensor<2x4x4xi8>
  %y = transformer.linear %x, %w, %b weight_scale(%s) input_scale(0.03125) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %y2 = transformer.linear %y, %w weight_scale(%s) input_scale(0.0123456791) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %g = transformer.linear %y, %w, %b weight_scale(%s) input_scale(0.25) group_scales("gs") group_size(4) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %r = transformer.linear %y, %w, %b weight_scale(%s) input_scale(0.25) rows(%reuse) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
  %r2 = transformer.linear %y, %w, %b weight_scale(%s) input_scale(0.25) rows(%rows) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>, tensor<4xi8>) -> tensor<1x4x8xf32>
  %k = transformer.linear %y, %w weight_scale(%s) input_scale(0.25) keys(%keys) heads(2) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
  %a = transformer.attention %y, %y2, %y mask %m heads(2) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.00787401572) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
  %c = transformer.attention %a, %a, %a heads(4) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.00787401572) causal : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %e = transformer.attention %r, %k, %r2 rows(%rows) spa(%spa) heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<4xi8>, tensor<2x4x4xi8>) -> tensor<1x4x8xf32>
  %w4 = onnx.weight "w4" : tensor<8x4xf32>
  %kv = transformer.linear %y, %w4 : (tensor<1x4x8xf32>, tensor<8x4xf32>) -> tensor<1x4x4xf32>
  %gqa = transformer.attention %y, %kv, %kv heads(2) kv_heads(1) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x4xf32>, tensor<1x4x4xf32>) -> tensor<1x4x8xf32>
  func.return %c : tensor<1x4x8xf32>
}

// CHECK:      %y = transformer.linear %x, %w, %b weight_scale(%s) input_scale(3.125000e-02) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %y2 = transformer.linear %y, %w weight_scale(%s) input_scale(0.0123456791) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %g = transformer.linear %y, %w, %b weight_scale(%s) input_scale(2.500000e-01) group_scales("gs") group_size(4) :
// CHECK-NEXT: %r = transformer.linear %y, %w, %b weight_scale(%s) input_scale(2.500000e-01) rows(%reuse) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %r2 = transformer.linear %y, %w, %b weight_scale(%s) input_scale(2.500000e-01) rows(%rows) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>, tensor<4xi8>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %k = transformer.linear %y, %w weight_scale(%s) input_scale(2.500000e-01) keys(%keys) heads(2) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %a = transformer.attention %y, %y2, %y mask %m heads(2) scale(5.000000e-01) q_scale(2.500000e-01) k_scale(1.250000e-01) v_scale(6.250000e-02) p_scale(0.00787401572) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %c = transformer.attention %a, %a, %a heads(4) scale(5.000000e-01) q_scale(2.500000e-01) k_scale(1.250000e-01) v_scale(6.250000e-02) p_scale(0.00787401572) causal : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %e = transformer.attention %r, %k, %r2 rows(%rows) spa(%spa) heads(2) scale(5.000000e-01) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<4xi8>, tensor<2x4x4xi8>) -> tensor<1x4x8xf32>
// CHECK:      %kv = transformer.linear %y, %w4 :
// CHECK-NEXT: %gqa = transformer.attention %y, %kv, %kv heads(2) kv_heads(1) scale(5.000000e-01) : (tensor<1x4x8xf32>, tensor<1x4x4xf32>, tensor<1x4x4xf32>) -> tensor<1x4x8xf32>
