// RUN: esact-opt %s -p 'insert-spls{layers="0:prediction=off"}' --no-print-debuginfo 2>&1 | filecheck %s --check-prefix=OFF0
// RUN: esact-opt %s -p 'insert-spls{prediction=off layers="1:prediction=on,threshold=0.9"}' --no-print-debuginfo 2>&1 | filecheck %s --check-prefix=ON1
// RUN: esact-opt %s -p 'insert-spls{prediction=off}' --no-print-debuginfo 2>&1 | filecheck %s --check-prefix=ALLOFF
// RUN: esact-opt %s -p 'insert-spls{threshold=2.0 k-ratio=1.0}' --no-print-debuginfo | filecheck %s --check-prefix=REUSEOFF
// RUN: not esact-opt %s -p 'insert-spls{layers="1:prediction=off,threshold=0.9,window=2"}' 2>&1 | filecheck %s --check-prefix=UNUSED
// RUN: not esact-opt %s -p 'insert-spls{prediction=off layers="0:window=2"}' 2>&1 | filecheck %s --check-prefix=UNUSED-BASE
// RUN: not esact-opt %s -p 'insert-spls{prediction=maybe}' 2>&1 | filecheck %s --check-prefix=BADVALUE
// `prediction=off` on two pre-LN encoder layers (each the layer of insert_spls.mlir, the same
// weights): a layer with the prediction off keeps its ops exactly as they were (no HLog, no
// masks); reuse off (threshold > 1) still inserts the whole prediction.

builtin.module attributes {esact.weight_store = "Inputs/insert_spls_layer.npz"} {
  func.func @main(%h: tensor<1x4x8xf32> {onnx.name = "h"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
    %g10 = onnx.weight "g1" : tensor<8xf32>
    %be10 = onnx.weight "be1" : tensor<8xf32>
    %x0 = transformer.layer_norm %h, %g10, %be10 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wq0 = onnx.weight "wq" : tensor<8x8xf32>
    %bq0 = onnx.weight "bq" : tensor<8xf32>
    %q0 = transformer.linear %x0, %wq0, %bq0 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wk0 = onnx.weight "wk" : tensor<8x8xf32>
    %bk0 = onnx.weight "bk" : tensor<8xf32>
    %k0 = transformer.linear %x0, %wk0, %bk0 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wv0 = onnx.weight "wv" : tensor<8x8xf32>
    %bv0 = onnx.weight "bv" : tensor<8xf32>
    %v0 = transformer.linear %x0, %wv0, %bv0 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %a0 = transformer.attention %q0, %k0, %v0 heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %wo0 = onnx.weight "wo" : tensor<8x8xf32>
    %bo0 = onnx.weight "bo" : tensor<8xf32>
    %o0 = transformer.linear %a0, %wo0, %bo0 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %r10 = transformer.add %h, %o0 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %g20 = onnx.weight "g2" : tensor<8xf32>
    %be20 = onnx.weight "be2" : tensor<8xf32>
    %y20 = transformer.layer_norm %r10, %g20, %be20 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %w10 = onnx.weight "w1" : tensor<8x16xf32>
    %b10 = onnx.weight "b1" : tensor<16xf32>
    %f10 = transformer.linear %y20, %w10, %b10 : (tensor<1x4x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
    %act0 = transformer.gelu %f10 approximate("none") : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %w20 = onnx.weight "w2" : tensor<16x8xf32>
    %b20 = onnx.weight "b2" : tensor<8xf32>
    %f20 = transformer.linear %act0, %w20, %b20 : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %y0 = transformer.add %r10, %f20 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %g11 = onnx.weight "g1" : tensor<8xf32>
    %be11 = onnx.weight "be1" : tensor<8xf32>
    %x1 = transformer.layer_norm %h, %g11, %be11 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wq1 = onnx.weight "wq" : tensor<8x8xf32>
    %bq1 = onnx.weight "bq" : tensor<8xf32>
    %q1 = transformer.linear %x1, %wq1, %bq1 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wk1 = onnx.weight "wk" : tensor<8x8xf32>
    %bk1 = onnx.weight "bk" : tensor<8xf32>
    %k1 = transformer.linear %x1, %wk1, %bk1 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %wv1 = onnx.weight "wv" : tensor<8x8xf32>
    %bv1 = onnx.weight "bv" : tensor<8xf32>
    %v1 = transformer.linear %x1, %wv1, %bv1 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %a1 = transformer.attention %q1, %k1, %v1 heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %wo1 = onnx.weight "wo" : tensor<8x8xf32>
    %bo1 = onnx.weight "bo" : tensor<8xf32>
    %o1 = transformer.linear %a1, %wo1, %bo1 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %r11 = transformer.add %h, %o1 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %g21 = onnx.weight "g2" : tensor<8xf32>
    %be21 = onnx.weight "be2" : tensor<8xf32>
    %y21 = transformer.layer_norm %r11, %g21, %be21 eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %w11 = onnx.weight "w1" : tensor<8x16xf32>
    %b11 = onnx.weight "b1" : tensor<16xf32>
    %f11 = transformer.linear %y21, %w11, %b11 : (tensor<1x4x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
    %act1 = transformer.gelu %f11 approximate("none") : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %w21 = onnx.weight "w2" : tensor<16x8xf32>
    %b21 = onnx.weight "b2" : tensor<8xf32>
    %f21 = transformer.linear %act1, %w21, %b21 : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %y1 = transformer.add %r11, %f21 : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    func.return %y1 : tensor<1x4x8xf32>
  }
}

// OFF0-NOT:  note:
// OFF0:      %x0 = transformer.layer_norm %h
// OFF0-NOT:  spls.
// OFF0:      %q0 = transformer.linear %x0, %wq0, %bq0 : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
// OFF0-NOT:  spls.
// OFF0:      %a0 = transformer.attention %q0, %k0, %v0 heads(2) scale(5.000000e-01) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
// OFF0-NOT:  spls.
// OFF0:      %f20 = transformer.linear %act0, %w20, %b20 : (tensor<1x4x16xf32>, tensor<16x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
// OFF0:      spls.hlog_quantize %x1 bits(6)
// OFF0:      spls.local_similarity {{.*}} threshold(9.950000e-01)
// OFF0:      %q1 = transformer.linear %x1, %wq1, %bq1 rows(

// ON1-NOT:   spls.
// ON1:       %f20 = transformer.linear %act0, %w20, %b20 :
// ON1:       spls.hlog_quantize %x1 bits(6)
// ON1:       spls.local_similarity {{.*}} threshold(9.000000e-01)
// ON1:       %a1 = transformer.attention %q1, %k1, %v1 rows(

// ALLOFF:     note: insert-spls: prediction=off in every layer: the program is the dense one
// ALLOFF-NOT: spls.
// ALLOFF-NOT: rows(

// REUSEOFF:   spls.predict_attention
// REUSEOFF:   spls.local_similarity {{.*}} threshold(2.000000e+00)
// REUSEOFF:   spls.predict_attention
// REUSEOFF:   spls.local_similarity {{.*}} threshold(2.000000e+00)

// UNUSED:      error: insert-spls: layer 1: prediction=off leaves the layer dense, so threshold, window would do nothing
// UNUSED-BASE: error: insert-spls: layer 0: prediction=off leaves the layer dense, so window would do nothing
// BADVALUE:    error: insert-spls: prediction must be one of on|off, got 'maybe'
