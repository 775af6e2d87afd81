// RUN: esact-opt %s --no-print-debuginfo | esact-opt --no-print-debuginfo | filecheck %s
// Every quantized op prints and parses back to itself.

func.func @ops(%x: tensor<1x4x8xf32>, %m: tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32> {
  %w = onnx.weight "w.int8" : tensor<8x8xi8>
  %s = onnx.weight "w.scale" : tensor<8xf32>
  %b = onnx.weight "b" : tensor<8xf32>
  %y = quantized.linear %x, %w, %s, %b input_scale(0.03125) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %y2 = quantized.linear %y, %w, %s input_scale(0.0123456791) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %a = quantized.attention %y, %y2, %y mask %m heads(2) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.00787401572) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
  %c = quantized.attention %a, %a, %a heads(4) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.00787401572) causal : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return %c : tensor<1x4x8xf32>
}

// CHECK:      %y = quantized.linear %x, %w, %s, %b input_scale(3.125000e-02) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %y2 = quantized.linear %y, %w, %s input_scale(0.0123456791) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %a = quantized.attention %y, %y2, %y mask %m heads(2) scale(5.000000e-01) q_scale(2.500000e-01) k_scale(1.250000e-01) v_scale(6.250000e-02) p_scale(0.00787401572) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %c = quantized.attention %a, %a, %a heads(4) scale(5.000000e-01) q_scale(2.500000e-01) k_scale(1.250000e-01) v_scale(6.250000e-02) p_scale(0.00787401572) causal : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
