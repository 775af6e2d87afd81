// RUN: esact-opt %s --split-input-file --verify-diagnostics --no-print-debuginfo | filecheck %s
// One chunk per error the modern-block op verifiers report.

func.func @f(%x: tensor<1x8x16xf32>, %g: tensor<8xf32>) {
  %y = transformer.rms_norm %x, %g eps(1.0e-06) : (tensor<1x8x16xf32>, tensor<8xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.rms_norm: gamma must be [16], got 8

// -----
func.func @f(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>) {
  %y = transformer.rms_norm %x, %g eps(0.0) : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.rms_norm: epsilon must be finite and positive, got 0.0

// -----
func.func @f(%a: tensor<1x8x16xf32>, %b: tensor<1x8x1xf32>) {
  %y = transformer.mul %a, %b : (tensor<1x8x16xf32>, tensor<1x8x1xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.mul: operands and result must have one shape, got 1x8x16, 1x8x1 -> 1x8x16

// -----
func.func @f(%x: tensor<1x8x16xf32>, %c: tensor<8x4xf32>) {
  %y = transformer.rotary %x, %c, %c heads(3) rotary_dim(4) : (tensor<1x8x16xf32>, tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.rotary: heads 3 does not divide width 16

// -----
func.func @f(%x: tensor<1x8x16xf32>, %c: tensor<8x4xf32>) {
  %y = transformer.rotary %x, %c, %c heads(4) rotary_dim(6) : (tensor<1x8x16xf32>, tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.rotary: rotary_dim 6 must be even, >= 2 and <= the head width 4

// -----
func.func @f(%x: tensor<1x8x16xf32>, %c: tensor<8x4xf32>, %s: tensor<4x4xf32>) {
  %y = transformer.rotary %x, %c, %s heads(2) rotary_dim(4) : (tensor<1x8x16xf32>, tensor<8x4xf32>, tensor<4x4xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.rotary: sin must be 8x4 or 1x8x4, got 4x4
