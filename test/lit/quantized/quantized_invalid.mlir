// RUN: esact-opt %s --split-input-file --verify-diagnostics --no-print-debuginfo | filecheck %s
// One chunk per error the quantized dialect verifiers report.

func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xi8>, %s: tensor<8xf32>) {
  %y = quantized.linear %x, %w, %s input_scale(0.0) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: quantized.linear: input_scale must be finite and positive, got 0.0

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xi8>, %s: tensor<4xf32>) {
  %y = quantized.linear %x, %w, %s input_scale(1.0) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<4xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: quantized.linear: shapes x (1, 4, 8), weight (8, 8), weight_scale (4,) -> (1, 4, 8) do not agree

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = quantized.attention %x, %x, %x heads(3) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.0078) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: quantized.attention: num_heads 3 does not divide D 8 and Dv 8

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = quantized.attention %x, %x, %x heads(2) scale(0.5) q_scale(-1.0) k_scale(0.125) v_scale(0.0625) p_scale(0.0078) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: quantized.attention: q_scale must be finite and positive, got -1.0
