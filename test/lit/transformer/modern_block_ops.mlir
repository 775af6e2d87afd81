// RUN: esact-opt %s --no-print-debuginfo | esact-opt --no-print-debuginfo | filecheck %s
// The modern-block ops (RMSNorm, SiLU, ReLU, the gate product, rotary) print and parse back.

func.func @ops(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>, %cos: tensor<8x4xf32>, %sin: tensor<8x4xf32>) -> tensor<1x8x16xf32> {
  %n = transformer.rms_norm %x, %g eps(1.0e-06) : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  %s = transformer.silu %n : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %m = transformer.mul %s, %n : (tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %u = transformer.relu %m : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  %r = transformer.rotary %m, %cos, %sin heads(2) rotary_dim(4) : (tensor<1x8x16xf32>, tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<1x8x16xf32>
  func.return %r : tensor<1x8x16xf32>
}

// CHECK:      %n = transformer.rms_norm %x, %g eps(1.000000e-06) : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %s = transformer.silu %n : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %m = transformer.mul %s, %n : (tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %u = transformer.relu %m : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
// CHECK-NEXT: %r = transformer.rotary %m, %cos, %sin heads(2) rotary_dim(4) : (tensor<1x8x16xf32>, tensor<8x4xf32>, tensor<8x4xf32>) -> tensor<1x8x16xf32>
