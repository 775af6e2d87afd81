// RUN: esact-opt %s --no-print-debuginfo | esact-opt --no-print-debuginfo | filecheck %s
// Every transformer op prints and parses back to itself.

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
