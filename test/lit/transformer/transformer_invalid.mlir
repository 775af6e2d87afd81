// RUN: esact-opt %s --split-input-file --verify-diagnostics --no-print-debuginfo | filecheck %s
// One chunk per error the transformer dialect verifiers report.

func.func @f(%s: tensor<f32>, %w: tensor<16x16xf32>) {
  %y = transformer.linear %s, %w : (tensor<f32>, tensor<16x16xf32>) -> tensor<16xf32>
  func.return
}

// CHECK: transformer.linear: x must have rank >= 1, got scalar

// -----
func.func @f(%x: tensor<1x8x16xf32>, %b: tensor<16xf32>) {
  %y = transformer.linear %x, %b : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.linear: weight must have rank 2, got 16

// -----
func.func @f(%x: tensor<1x8x16xf32>, %w: tensor<8x16xf32>) {
  %y = transformer.linear %x, %w : (tensor<1x8x16xf32>, tensor<8x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.linear: x's last dim 16 does not match weight [in, out] = 8x16

// -----
func.func @f(%x: tensor<1x8x16xf32>, %w: tensor<16x16xf32>, %c: tensor<8xf32>) {
  %y = transformer.linear %x, %w, %c : (tensor<1x8x16xf32>, tensor<16x16xf32>, tensor<8xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.linear: bias must be [16], got 8

// -----
func.func @f(%x: tensor<1x8x16xf32>, %w: tensor<16x16xf32>) {
  %y = transformer.linear %x, %w : (tensor<1x8x16xf32>, tensor<16x16xf32>) -> tensor<1x8x32xf32>
  func.return
}

// CHECK: transformer.linear: result must be 1x8x16, got 1x8x32

// -----
func.func @f(%q: tensor<8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(0.25) : (tensor<8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: q must have rank 3, got 8x16

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<2x8x16xf32>, %v: tensor<1x8x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(0.25) : (tensor<1x8x16xf32>, tensor<2x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: batch sizes differ: q 1x8x16, k 2x8x16, v 1x8x16

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x32xf32>, %v: tensor<1x8x32xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x32xf32>, tensor<1x8x32xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: q and k widths differ: 1x8x16 vs 1x8x32

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x4x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x4x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: k and v lengths differ: 1x8x16 vs 1x4x16

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(0) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: num_heads must be positive, got 0

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(3) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: num_heads 3 does not divide D = 16

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x18xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x18xf32>) -> tensor<1x8x18xf32>
  func.return
}

// CHECK: transformer.attention: num_heads 4 does not divide Dv = 18

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(-1.0) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: scale must be finite and positive, got -1.0

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x4x16xf32>, %v: tensor<1x4x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(0.25) causal : (tensor<1x8x16xf32>, tensor<1x4x16xf32>, tensor<1x4x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: causal attention needs Lq <= Lk, got 8 > 4

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>, %m: tensor<8xf32>) {
  %y = transformer.attention %q, %k, %v mask %m heads(4) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<8xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: mask must have rank 2 or 3 or 4, got 8

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>, %m: tensor<1x1x3x8xf32>) {
  %y = transformer.attention %q, %k, %v mask %m heads(4) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x1x3x8xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: mask 1x1x3x8 does not broadcast to scores 1x4x8x8

// -----
func.func @f(%q: tensor<1x8x16xf32>, %k: tensor<1x8x16xf32>, %v: tensor<1x8x16xf32>) {
  %y = transformer.attention %q, %k, %v heads(4) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x32xf32>
  func.return
}

// CHECK: transformer.attention: result must be 1x8x16, got 1x8x32

// -----
func.func @f(%x: tensor<1x8x16xf32>, %g: tensor<8xf32>, %b: tensor<16xf32>) {
  %y = transformer.layer_norm %x, %g, %b eps(1.0e-05) : (tensor<1x8x16xf32>, tensor<8xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.layer_norm: gamma must be [16], got 8

// -----
func.func @f(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>, %c: tensor<4xf32>) {
  %y = transformer.layer_norm %x, %g, %c eps(1.0e-05) : (tensor<1x8x16xf32>, tensor<16xf32>, tensor<4xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.layer_norm: beta must be [16], got 4

// -----
func.func @f(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>) {
  %y = transformer.layer_norm %x, %g eps(0.0) : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.layer_norm: epsilon must be finite and positive, got 0.0

// -----
func.func @f(%x: tensor<1x8x16xf32>, %g: tensor<16xf32>) {
  %y = transformer.layer_norm %x, %g eps(1.0e-05) : (tensor<1x8x16xf32>, tensor<16xf32>) -> tensor<1x16x8xf32>
  func.return
}

// CHECK: transformer.layer_norm: result must be 1x8x16, got 1x16x8

// -----
func.func @f(%x: tensor<1x8x16xf32>) {
  %y = transformer.gelu %x approximate("sigmoid") : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.gelu: approximate must be one of none, tanh, got 'sigmoid'

// -----
func.func @f(%x: tensor<1x8x16xf32>) {
  %y = transformer.gelu %x approximate("none") : (tensor<1x8x16xf32>) -> tensor<8x16xf32>
  func.return
}

// CHECK: transformer.gelu: result must be 1x8x16, got 8x16

// -----
func.func @f(%x: tensor<1x8x16xf32>) {
  %y = transformer.softmax %x : (tensor<1x8x16xf32>) -> tensor<1x8x8xf32>
  func.return
}

// CHECK: transformer.softmax: result must be 1x8x16, got 1x8x8

// -----
func.func @f(%x: tensor<1x8x16xf32>, %z: tensor<1x1x16xf32>) {
  %y = transformer.add %x, %z : (tensor<1x8x16xf32>, tensor<1x1x16xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.add: operands and result must have one shape, got 1x8x16, 1x1x16 -> 1x8x16

// -----
func.func @f(%x: tensor<1x8x16xf32>) {
  %y = transformer.host(%x) : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32> {
  ^bb0(%a: tensor<8x16xf32>):
    transformer.yield %a : tensor<8x16xf32>
  }
  func.return
}

// CHECK: transformer.host: block argument types (tensor<8x16xf32>) differ from operand types (tensor<1x8x16xf32>)

// -----
func.func @f(%x: tensor<1x8x16xf32>) {
  %y = transformer.host(%x) : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32> {
  ^bb0(%a: tensor<1x8x16xf32>):
    %n = onnx.Neg %a : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
    %r = onnx.ReduceMean %n {axes = array<i64: 2>, keepdims = 0 : i64} : (tensor<1x8x16xf32>) -> tensor<1x8xf32>
    transformer.yield %r : tensor<1x8xf32>
  }
  func.return
}

// CHECK: transformer.host: yielded types (tensor<1x8xf32>) differ from result types (tensor<1x8x16xf32>)

// -----
func.func @f(%x: tensor<1x8x16xf32>) {
  %y = transformer.host(%x) : (tensor<1x8x16xf32>) -> tensor<1x8x16xf32> {
  ^bb0(%a: tensor<1x8x16xf32>):
    %n = onnx.Add %a, %x : (tensor<1x8x16xf32>, tensor<1x8x16xf32>) -> tensor<1x8x16xf32>
    transformer.yield %n : tensor<1x8x16xf32>
  }
  func.return
}

// CHECK: Operation using value defined out of its IsolatedFromAbove parent

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xi8>, %s: tensor<8xf32>) {
  %y = transformer.linear %x, %w weight_scale(%s) input_scale(0.0) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: input_scale must be finite and positive, got 0.0

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xi8>, %s: tensor<4xf32>) {
  %y = transformer.linear %x, %w weight_scale(%s) input_scale(1.0) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<4xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: weight_scale must be [8], got 4

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = transformer.attention %x, %x, %x heads(3) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.0078) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: num_heads 3 does not divide D = 8

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = transformer.attention %x, %x, %x heads(2) scale(0.5) q_scale(-1.0) k_scale(0.125) v_scale(0.0625) p_scale(0.0078) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: q_scale must be finite and positive, got -1.0

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xf32>, %r: tensor<1x5xi32>) {
  %y = transformer.linear %x, %w rows(%r) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<1x5xi32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: rows (reuse map) must be 1x4 or 4, got 1x5

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xf32>, %k: tensor<1x2x4xi1>) {
  %y = transformer.linear %x, %w keys(%k) heads(3) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: heads 3 does not divide out = 8

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xi8>, %s: tensor<4xf32>, %r: tensor<1x4xi32>) {
  %y = transformer.linear %x, %w weight_scale(%s) input_scale(0.1) rows(%r) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<4xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: weight_scale must be [8], got 4

// -----
func.func @f(%q: tensor<1x4x8xf32>, %r: tensor<1x4xi32>, %s: tensor<1x2x4x3xi1>) {
  %a = transformer.attention %q, %q, %q rows(%r) spa(%s) heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4xi32>, tensor<1x2x4x3xi1>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: spa must be 1x2x4x4 or 2x4x4, got 1x2x4x3

// -----
func.func @f(%q: tensor<1x4x8xf32>, %k: tensor<1x3x8xf32>, %r: tensor<1x4xi32>) {
  %a = transformer.attention %q, %k, %k rows(%r) heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x3x8xf32>, tensor<1x3x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: row reuse needs self-attention (Lq = Lk), got q 1x4x8, k 1x3x8

// -----
func.func @f(%q: tensor<1x4x8xf32>, %r: tensor<1x4xi32>) {
  %a = transformer.attention %q, %q, %q rows(%r) heads(2) scale(0.5) q_scale(0.0) k_scale(0.1) v_scale(0.1) p_scale(0.1) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: q_scale must be finite and positive, got 0.0

// -----
func.func @f(%q: tensor<2x4x8xf32>, %k: tensor<1x4x8xf32>) {
  %a = transformer.attention %q, %k, %k heads(2) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.0078) : (tensor<2x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<2x4x8xf32>
  func.return
}

// CHECK: transformer.attention: batch sizes differ: q 2x4x8, k 1x4x8, v 1x4x8

// -----
func.func @f(%q: tensor<1x4x8xf32>, %k: tensor<1x4x4xf32>) {
  %a = transformer.attention %q, %k, %k heads(4) kv_heads(3) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x4xf32>, tensor<1x4x4xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: kv_heads 3 does not divide num_heads 4

// -----
func.func @f(%q: tensor<1x4x8xf32>, %k: tensor<1x4x8xf32>) {
  %a = transformer.attention %q, %k, %k heads(4) kv_heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x16xf32>
  func.return
}

// CHECK: transformer.attention: q and k head widths differ: 1x4x8 vs 1x4x8

// -----
func.func @f(%q: tensor<1x4x8xf32>, %k: tensor<1x4x4xf32>) {
  %a = transformer.attention %q, %k, %k heads(4) kv_heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x4xf32>, tensor<1x4x4xf32>) -> tensor<1x4x4xf32>
  func.return
}

// CHECK: transformer.attention: result must be 1x4x8, got 1x4x4

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = "transformer.attention"(%x, %x, %x) <{num_heads = 2 : i64, scale = 5.000000e-01 : f32, q_scale = 1.000000e-01 : f32, operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0>}> : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: q_scale, k_scale, v_scale go together

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = transformer.attention %x, %x, %x heads(2) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) p_scale(0.0078) p_row_scales : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: a quantized attention has p_scale or p_row_scales (one), an FP32 one neither

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = transformer.attention %x, %x, %x heads(2) scale(0.5) q_scale(0.25) k_scale(0.125) v_scale(0.0625) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: a quantized attention has p_scale or p_row_scales (one), an FP32 one neither

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %a = transformer.attention %x, %x, %x heads(2) scale(0.5) p_row_scales : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.attention: a quantized attention has p_scale or p_row_scales (one), an FP32 one neither

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xi8>, %s: tensor<8xf32>) {
  %y = transformer.linear %x, %w weight_scale(%s) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: weight_scale and input_scale go together

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xf32>) {
  %y = transformer.linear %x, %w group_scales("g") group_size(4) : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: input groups need an INT8 weight

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xi8>, %s: tensor<8xf32>) {
  %y = transformer.linear %x, %w weight_scale(%s) input_scale(0.5) group_scales("g") group_size(0) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: group size must be positive

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xf32>, %k: tensor<1x2x4xi1>) {
  %y = transformer.linear %x, %w keys(%k) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: keys and heads go together

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xf32>, %r: tensor<1x4xi32>, %k: tensor<1x2x4xi1>) {
  %y = transformer.linear %x, %w rows(%r) keys(%k) heads(2) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<1x4xi32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: rows and keys masks are exclusive

// -----
func.func @f(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>, %r: tensor<4xi32>) {
  %y = transformer.linear %x, %w rows(%r) : (tensor<4x8xf32>, tensor<8x8xf32>, tensor<4xi32>) -> tensor<4x8xf32>
  func.return
}

// CHECK: transformer.linear: a masked linear needs x [B, L, in], got 4x8

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xf32>, %r: tensor<1x4xf32>) {
  %y = transformer.linear %x, %w rows(%r) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<1x4xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: rows (reuse map) must have element type i8, i32, got f32

// -----
func.func @f(%x: tensor<1x4x8xf32>, %w: tensor<8x8xf32>, %k: tensor<1x2x4xf32>) {
  %y = transformer.linear %x, %w keys(%k) heads(2) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<1x2x4xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.linear: keys (key mask) must have element type i1, i8, i32, got f32
