// RUN: esact-opt %s --split-input-file --verify-diagnostics --no-print-debuginfo | filecheck %s
// The attention's disentangled position operands (DeBERTa c2p / p2c, docs/design.md 3.3):
// FP32 and INT8 forms print and parse back; each malformed use is one verifier error.

func.func @f(%x: tensor<1x8x16xf32>) -> (tensor<1x8x16xf32>, tensor<1x8x16xf32>) {
  %t = onnx.weight "t" : tensor<2x6x8xf32>
  %i = onnx.weight "i" : tensor<8x8xi32>
  %y = transformer.attention %x, %x, %x c2p_table(%t) c2p_index(%i) p2c_table(%t) p2c_index(%i) heads(2) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<2x6x8xf32>, tensor<8x8xi32>, tensor<2x6x8xf32>, tensor<8x8xi32>) -> tensor<1x8x16xf32>
  %z = transformer.attention %x, %x, %x p2c_table(%t) p2c_index(%i) heads(2) scale(0.25) q_scale(0.1) k_scale(0.1) v_scale(0.1) p_scale(0.0078125) p2c_scale(0.02) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<2x6x8xf32>, tensor<8x8xi32>) -> tensor<1x8x16xf32>
  func.return %y, %z : tensor<1x8x16xf32>, tensor<1x8x16xf32>
}

// CHECK: transformer.attention %{{.*}}, %{{.*}}, %{{.*}} c2p_table(%{{.*}}) c2p_index(%{{.*}}) p2c_table(%{{.*}}) p2c_index(%{{.*}}) heads(2) scale(2.500000e-01) :
// CHECK: transformer.attention %{{.*}}, %{{.*}}, %{{.*}} p2c_table(%{{.*}}) p2c_index(%{{.*}}) heads(2) scale(2.500000e-01) q_scale({{.*}}) k_scale({{.*}}) v_scale({{.*}}) p_scale({{.*}}) p2c_scale(2.000000e-02) :

// -----
func.func @f(%x: tensor<1x8x16xf32>, %t: tensor<2x6x8xf32>) {
  %y = transformer.attention %x, %x, %x c2p_table(%t) heads(2) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<2x6x8xf32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: c2p_table and c2p_index go together

// -----
func.func @f(%x: tensor<1x8x16xf32>, %t: tensor<4x6x4xf32>, %i: tensor<8x8xi32>) {
  %y = transformer.attention %x, %x, %x c2p_table(%t) c2p_index(%i) heads(2) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<4x6x4xf32>, tensor<8x8xi32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: c2p_table must be [2, P, 8], got 4x6x4

// -----
func.func @f(%x: tensor<1x8x16xf32>, %t: tensor<2x6x8xf32>, %i: tensor<8xi32>) {
  %y = transformer.attention %x, %x, %x c2p_table(%t) c2p_index(%i) heads(2) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<2x6x8xf32>, tensor<8xi32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: c2p_index must be [8, 8] i32 or i64, got tensor<8xi32>

// -----
func.func @f(%x: tensor<1x8x16xf32>, %t: tensor<2x6x8xf32>, %i: tensor<8x8xi32>) {
  %y = transformer.attention %x, %x, %x c2p_table(%t) c2p_index(%i) heads(2) scale(0.25) q_scale(0.1) k_scale(0.1) v_scale(0.1) p_scale(0.0078125) : (tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<1x8x16xf32>, tensor<2x6x8xf32>, tensor<8x8xi32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: a quantized attention's c2p_table needs c2p_scale (and only then)

// -----
func.func @f(%x: tensor<1x8x16xf32>, %kv: tensor<1x8x8xf32>, %t: tensor<2x6x8xf32>, %i: tensor<8x8xi32>) {
  %y = transformer.attention %x, %kv, %kv p2c_table(%t) p2c_index(%i) heads(2) kv_heads(1) scale(0.25) : (tensor<1x8x16xf32>, tensor<1x8x8xf32>, tensor<1x8x8xf32>, tensor<2x6x8xf32>, tensor<8x8xi32>) -> tensor<1x8x16xf32>
  func.return
}

// CHECK: transformer.attention: p2c_table needs one K head per query head
