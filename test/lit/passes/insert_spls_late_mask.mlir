// RUN: esact-opt %s -p insert-spls --no-print-debuginfo 2>%t.err | filecheck %s
// RUN: filecheck %s --check-prefix=WARN < %t.err
// An additive attention mask written after the Q/K/V projections (Swin exports its relative-position
// bias there): when nothing in it reads the projections it is moved in front of them and the layer
// is predicted; when it reads them (a mask computed from Q) the layer stays dense, with one warning.

builtin.module attributes {esact.weight_store = "Inputs/insert_spls_late_mask.npz"} {
  func.func @late_constant_mask(%h: tensor<1x4x8xf32> {onnx.name = "h"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
    %g1 = onnx.weight "g1" : tensor<8xf32>
    %be1 = onnx.weight "be1" : tensor<8xf32>
    %x = transformer.layer_norm %h, %g1, %be1 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wq = onnx.weight "wq" : tensor<8x8xf32>
    %bq = onnx.weight "bq" : tensor<8xf32>
    %q = transformer.linear %x, %wq, %bq : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wk = onnx.weight "wk" : tensor<8x8xf32>
    %bk = onnx.weight "bk" : tensor<8xf32>
    %k = transformer.linear %x, %wk, %bk : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wv = onnx.weight "wv" : tensor<8x8xf32>
    %bv = onnx.weight "bv" : tensor<8xf32>
    %v = transformer.linear %x, %wv, %bv : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %bias = onnx.weight "bias" : tensor<1x2x4x4xf32>
    %m = onnx.Add %bias, %bias : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32>
    %a = transformer.attention %q, %k, %v mask %m heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x2x4x4xf32>) -> tensor<1x4x8xf32>
    %wo = onnx.weight "wo" : tensor<8x8xf32>
    %bo = onnx.weight "bo" : tensor<8xf32>
    %o = transformer.linear %a, %wo, %bo : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %r1 = transformer.add %h, %o : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %g2 = onnx.weight "g2" : tensor<8xf32>
    %be2 = onnx.weight "be2" : tensor<8xf32>
    %y2 = transformer.layer_norm %r1, %g2, %be2 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %w1 = onnx.weight "w1" : tensor<8x16xf32>
    %b1 = onnx.weight "b1" : tensor<16xf32>
    %f1 = transformer.linear %y2, %w1, %b1 : (tensor<1x4x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
    %act = transformer.gelu %f1 approximate("none") : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %w2 = onnx.weight "w2" : tensor<16x8xf32>
    %b2 = onnx.weight "b2" : tensor<8xf32>
    %f2 = transformer.linear %act, %w2, %b2 : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %y = transformer.add %r1, %f2 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
  func.func @mask_from_q(%h: tensor<1x4x8xf32> {onnx.name = "h"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
    %g1 = onnx.weight "g1" : tensor<8xf32>
    %be1 = onnx.weight "be1" : tensor<8xf32>
    %x = transformer.layer_norm %h, %g1, %be1 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wq = onnx.weight "wq" : tensor<8x8xf32>
    %bq = onnx.weight "bq" : tensor<8xf32>
    %q = transformer.linear %x, %wq, %bq : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wk = onnx.weight "wk" : tensor<8x8xf32>
    %bk = onnx.weight "bk" : tensor<8xf32>
    %k = transformer.linear %x, %wk, %bk : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wv = onnx.weight "wv" : tensor<8x8xf32>
    %bv = onnx.weight "bv" : tensor<8xf32>
    %v = transformer.linear %x, %wv, %bv : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %shape = onnx.weight "mask_shape" : tensor<4xi64>
    %m = onnx.Reshape %q, %shape {allowzero = 0 : i64} : (tensor<1x4x8xf32>, tensor<4xi64>) -> tensor<1x2x4x4xf32>
    %a = transformer.attention %q, %k, %v mask %m heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x2x4x4xf32>) -> tensor<1x4x8xf32>
    %wo = onnx.weight "wo" : tensor<8x8xf32>
    %bo = onnx.weight "bo" : tensor<8xf32>
    %o = transformer.linear %a, %wo, %bo : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %r1 = transformer.add %h, %o : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %g2 = onnx.weight "g2" : tensor<8xf32>
    %be2 = onnx.weight "be2" : tensor<8xf32>
    %y2 = transformer.layer_norm %r1, %g2, %be2 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %w1 = onnx.weight "w1" : tensor<8x16xf32>
    %b1 = onnx.weight "b1" : tensor<16xf32>
    %f1 = transformer.linear %y2, %w1, %b1 : (tensor<1x4x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
    %act = transformer.gelu %f1 approximate("none") : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %w2 = onnx.weight "w2" : tensor<16x8xf32>
    %b2 = onnx.weight "b2" : tensor<8xf32>
    %f2 = transformer.linear %act, %w2, %b2 : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %y = transformer.add %r1, %f2 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}

// CHECK-LABEL: func.func @late_constant_mask
// CHECK:      %bias = onnx.weight "bias"
// CHECK-NEXT: %m = onnx.Add %bias, %bias
// CHECK:      spls.predict_attention {{.*}} mask %m heads(2)
// CHECK:      %q = transformer.linear %x, %wq, %bq rows(
// CHECK:      %a = transformer.attention %q, %k, %v mask %m rows(

// CHECK-LABEL: func.func @mask_from_q
// CHECK-NOT:  spls.
// CHECK:      %a = transformer.attention %q, %k, %v mask %m heads(2)

// WARN: warning: insert-spls: transformer.attention: the attention mask is computed after the Q/K/V projections; layer left dense
// WARN-NOT: warning
