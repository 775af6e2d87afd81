// RUN: esact-opt %s -p insert-spls --no-print-debuginfo | filecheck %s
// RUN: esact-opt %s -p 'insert-spls{attention=topk hlog-bits=6 k-ratio=0.5 pam-scale=attention}' --no-print-debuginfo | filecheck %s --check-prefix=TOPK
// RUN: esact-opt %s -p 'insert-spls{layers="0:similarity=overlap,threshold=2.0,window=2,first-reference=1"}' --no-print-debuginfo | filecheck %s --check-prefix=LAYER
// RUN: esact-opt %s -p calibrate,quantize,insert-spls --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=INT8
// RUN: not esact-opt %s -p 'insert-spls{similarity=jaccard}' 2>&1 | filecheck %s --check-prefix=BADMODE
// RUN: not esact-opt %s -p 'insert-spls{layers="3:threshold=0.5"}' 2>&1 | filecheck %s --check-prefix=BADLAYER
// RUN: not esact-opt %s -p 'insert-spls{layers="0:speed=1"}' 2>&1 | filecheck %s --check-prefix=BADNAME
// insert-spls on one pre-LN encoder layer (weights in Inputs/insert_spls_layer.npz): the
// prediction on LN1's output, then Q, O, FFN up/down row-masked by the reuse map, the attention
// masked (dense) or sparse (topk, with K and V key-masked), for FP32 and INT8 layers.

builtin.module attributes {esact.weight_store = "Inputs/insert_spls_layer.npz"} {
  func.func @main(%h: tensor<1x4x8xf32> {onnx.name = "h"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
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
    %a = transformer.attention %q, %k, %v heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
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

// CHECK:      %x = transformer.layer_norm %h
// CHECK:      %[[XC:.*]], %[[XS:.*]] = spls.hlog_quantize %x bits(6) : (tensor<1x4x8xf32>) -> (tensor<1x4x8xi32>, tensor<1xf32>)
// CHECK-NEXT: %[[WQ:.*]] = onnx.weight "wq.hlog6" : tensor<8x8xi32>
// CHECK-NEXT: %[[WQS:.*]] = onnx.weight "wq.hlog6.scale" : tensor<f32>
// CHECK-NEXT: %[[WK:.*]] = onnx.weight "wk.hlog6" : tensor<8x8xi32>
// CHECK-NEXT: %[[WKS:.*]] = onnx.weight "wk.hlog6.scale" : tensor<f32>
// CHECK-NEXT: %[[BQ:.*]] = onnx.weight "bq" : tensor<8xf32>
// CHECK-NEXT: %[[BK:.*]] = onnx.weight "bk" : tensor<8xf32>
// CHECK-NEXT: %[[PAM:.*]] = spls.predict_attention %[[XC]], %[[XS]], %[[WQ]], %[[WQS]], %[[WK]], %[[WKS]] bias(%[[BQ]], %[[BK]]) heads(2) bits(6) scale(1.000000e+00) : (tensor<1x4x8xi32>, tensor<1xf32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
// CHECK-NEXT: %[[SPA:.*]] = spls.topk %[[PAM]] k(1) : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi1>
// CHECK-NEXT: %[[REUSE:.*]], %[[KEYS:.*]] = spls.local_similarity %[[SPA]] probs(%[[PAM]]) mode("cosprob") window(8) threshold(9.950000e-01) k(1) : (tensor<1x2x4x4xi1>, tensor<1x2x4x4xf32>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)
// CHECK:      %q = transformer.linear %x, %wq, %bq rows(%[[REUSE]]) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
// CHECK:      %k = transformer.linear %x, %wk, %bk
// CHECK:      %v = transformer.linear %x, %wv, %bv
// CHECK-NEXT: %a = transformer.attention %q, %k, %v rows(%[[REUSE]]) heads(2) scale(5.000000e-01) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
// CHECK:      %o = transformer.linear %a, %wo, %bo rows(%[[REUSE]])
// CHECK-NEXT: %r1 = transformer.add %h, %o
// CHECK:      %y2 = transformer.layer_norm %r1
// CHECK:      %f1 = transformer.linear %y2, %w1, %b1 rows(%[[REUSE]]) : (tensor<1x4x8xf32>, tensor<8x16xf32>, tensor<16xf32>, tensor<1x4xi32>) -> tensor<1x4x16xf32>
// CHECK-NEXT: %act = transformer.gelu %f1
// CHECK:      %f2 = transformer.linear %act, %w2, %b2 rows(%[[REUSE]])
// CHECK-NEXT: %y = transformer.add %r1, %f2

// TOPK:      spls.hlog_quantize %x bits(6)
// TOPK:      onnx.weight "wq.hlog6" : tensor<8x8xi32>
// TOPK:      %[[PAM:.*]] = spls.predict_attention {{.*}} heads(2) bits(6) scale(5.000000e-01)
// TOPK-NEXT: %[[SPA:.*]] = spls.topk %[[PAM]] k(2)
// TOPK-NEXT: %[[REUSE:.*]], %[[KEYS:.*]] = spls.local_similarity %[[SPA]] probs(%[[PAM]]) mode("cosprob") window(8) threshold(9.950000e-01) k(2)
// TOPK:      %q = transformer.linear %x, %wq, %bq rows(%[[REUSE]])
// TOPK:      %k = transformer.linear %x, %wk, %bk keys(%[[KEYS]]) heads(2) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
// TOPK:      %v = transformer.linear %x, %wv, %bv keys(%[[KEYS]]) heads(2)
// TOPK-NEXT: %a = transformer.attention %q, %k, %v rows(%[[REUSE]]) spa(%[[SPA]]) heads(2) scale(5.000000e-01) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4xi32>, tensor<1x2x4x4xi1>) -> tensor<1x4x8xf32>

// LAYER:     spls.local_similarity %{{.*}} mode("overlap") window(2) threshold(2.000000e+00) k(1) first_reference(1) : (tensor<1x2x4x4xi1>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)

// INT8:      %[[PAM:.*]] = spls.predict_attention
// INT8:      spls.local_similarity
// INT8:      %q = transformer.linear %x, %{{.*}}, %bq weight_scale(%{{.*}}) token_scales rows(%{{.*}}) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
// INT8:      %a = transformer.attention %q, %k, %v rows(%{{.*}}) heads(2) scale(5.000000e-01) q_scale({{.*}}) k_scale({{.*}}) v_scale({{.*}}) p_row_scales
// INT8:      %o = transformer.linear %a, %{{.*}}, %bo weight_scale(%{{.*}}) token_scales rows(%{{.*}})
// INT8:      %f1 = transformer.linear %y2, %{{.*}}, %b1 weight_scale(%{{.*}}) token_scales rows(%{{.*}})
// INT8:      %f2 = transformer.linear %act, %{{.*}}, %b2 weight_scale(%{{.*}}) token_scales rows(%{{.*}})

// BADMODE:   error: insert-spls: similarity must be one of overlap|cosprob, got 'jaccard'
// BADLAYER:  error: insert-spls: per-layer options for layer(s) 3, but the model has 1 attention layer(s)
// BADNAME:   error: insert-spls: layer 0: unknown option 'speed' (valid: hlog-bits,
