// RUN: esact-opt %s --split-input-file --verify-diagnostics --no-print-debuginfo | filecheck %s
// One chunk per error the spls dialect verifiers report.

func.func @f(%x: tensor<1x4x8xf32>) {
  %c, %s = spls.hlog_quantize %x bits(1) : (tensor<1x4x8xf32>) -> (tensor<1x4x8xi32>, tensor<f32>)
  func.return
}

// CHECK: spls.hlog_quantize: bits must be in [2, 16], got 1

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %c, %s = spls.hlog_quantize %x bits(4) : (tensor<1x4x8xf32>) -> (tensor<1x4x8xi8>, tensor<f32>)
  func.return
}

// CHECK: spls.hlog_quantize: codes must have element type i32, got i8

// -----
func.func @f(%x: tensor<1x4x8xi32>, %s: tensor<f32>, %w: tensor<4x8xi32>, %b: tensor<8xf32>) {
  %p = spls.predict_attention %x, %s, %w, %s, %w, %s bias(%b, %b) heads(2) bits(4) scale(0.5) : (tensor<1x4x8xi32>, tensor<f32>, tensor<4x8xi32>, tensor<f32>, tensor<4x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  func.return
}

// CHECK: spls.predict_attention: wq must be [8, N] i32 HLog codes, got tensor<4x8xi32>

// -----
func.func @f(%x: tensor<1x4x8xi32>, %s: tensor<f32>, %w: tensor<8x8xi32>, %b: tensor<8xf32>) {
  %p = spls.predict_attention %x, %s, %w, %s, %w, %s bias(%b, %b) heads(3) bits(4) scale(0.5) : (tensor<1x4x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x3x4x4xf32>
  func.return
}

// CHECK: spls.predict_attention: num_heads 3 does not divide N = 8

// -----
func.func @f(%x: tensor<1x4x8xi32>, %s: tensor<f32>, %w: tensor<8x8xi32>, %b: tensor<8xf32>, %m: tensor<1x1x3x4xf32>) {
  %p = spls.predict_attention %x, %s, %w, %s, %w, %s bias(%b, %b) mask %m heads(2) bits(4) scale(0.5) : (tensor<1x4x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>, tensor<1x1x3x4xf32>) -> tensor<1x2x4x4xf32>
  func.return
}

// CHECK: spls.predict_attention: mask 1x1x3x4 does not broadcast to 1x2x4x4

// -----
func.func @f(%x: tensor<1x4x8xi32>, %s: tensor<f32>, %w: tensor<8x8xi32>, %b: tensor<8xf32>) {
  %p = spls.predict_attention %x, %s, %w, %s, %w, %s bias(%b, %b) heads(2) kv_heads(3) bits(4) scale(0.5) : (tensor<1x4x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  func.return
}

// CHECK: spls.predict_attention: kv_heads 3 does not divide num_heads 2

// -----
func.func @f(%x: tensor<1x4x8xi32>, %s: tensor<f32>, %w: tensor<8x8xi32>, %b: tensor<8xf32>) {
  %p = spls.predict_attention %x, %s, %w, %s, %w, %s bias(%b, %b) heads(2) kv_heads(1) bits(4) scale(0.5) : (tensor<1x4x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
  func.return
}

// CHECK: spls.predict_attention: wk must be 8x4, got 8x8

// -----
func.func @f(%p: tensor<1x2x4x4xf32>) {
  %t = spls.topk %p k(5) : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi1>
  func.return
}

// CHECK: spls.topk: k must be in [1, 4], got 5

// -----
func.func @f(%p: tensor<2x4x4xf32>) {
  %t = spls.topk %p k(2) : (tensor<2x4x4xf32>) -> tensor<2x4x4xi1>
  func.return
}

// CHECK: spls.topk: scores must be [B, H, Lq, Lk], got 2x4x4

// -----
func.func @f(%s: tensor<1x2x4x4xi1>) {
  %r, %k = spls.local_similarity %s mode("cosprob") window(4) threshold(0.9) k(2) : (tensor<1x2x4x4xi1>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)
  func.return
}

// CHECK: spls.local_similarity: mode cosprob needs the probs (PAM) operand

// -----
func.func @f(%s: tensor<1x2x4x4xi1>) {
  %r, %k = spls.local_similarity %s mode("jaccard") window(4) threshold(0.9) k(2) : (tensor<1x2x4x4xi1>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)
  func.return
}

// CHECK: spls.local_similarity: mode must be one of overlap, cosprob, got 'jaccard'

// -----
func.func @f(%s: tensor<1x2x4x4xi1>) {
  %r, %k = spls.local_similarity %s mode("overlap") window(4) threshold(0.9) k(2) : (tensor<1x2x4x4xi1>) -> (tensor<1x4xi64>, tensor<1x2x4xi1>)
  func.return
}

// CHECK: spls.local_similarity: reuse map must have element type i32, got i64

// -----
func.func @f(%x: tensor<2x4x8xf32>) {
  %c, %s = spls.hlog_quantize %x bits(4) : (tensor<2x4x8xf32>) -> (tensor<2x4x8xi32>, tensor<f32>)
  func.return
}

// CHECK: spls.hlog_quantize: scale result must be 2, got scalar

// -----
func.func @f(%x: tensor<2x4x8xi32>, %s: tensor<f32>, %w: tensor<8x8xi32>, %b: tensor<8xf32>) {
  %p = spls.predict_attention %x, %s, %w, %s, %w, %s bias(%b, %b) heads(2) bits(4) scale(0.5) : (tensor<2x4x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>) -> tensor<2x2x4x4xf32>
  func.return
}

// CHECK: spls.predict_attention: x_scale must be 2, got scalar
