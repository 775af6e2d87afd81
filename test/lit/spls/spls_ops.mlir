// RUN: esact-opt %s | esact-opt | filecheck %s
// Round trip of every spls op, feeding the masks of transformer ops.

builtin.module {
  func.func @main(%x: tensor<1x4x8xf32>, %m: tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32> {
    %wq = onnx.weight "wq.hlog4" : tensor<8x8xi32>
    %wqs = onnx.weight "wq.hlog4.scale" : tensor<f32>
    %wk = onnx.weight "wk.hlog4" : tensor<8x8xi32>
    %wks = onnx.weight "wk.hlog4.scale" : tensor<f32>
    %bq = onnx.weight "bq" : tensor<8xf32>
    %bk = onnx.weight "bk" : tensor<8xf32>
    %w = onnx.weight "w" : tensor<8x8xf32>
    %w8 = onnx.weight "w.int8" : tensor<8x8xi8>
    %ws = onnx.weight "w.scale" : tensor<8xf32>
    %xc, %xs = spls.hlog_quantize %x bits(4) : (tensor<1x4x8xf32>) -> (tensor<1x4x8xi32>, tensor<1xf32>)
    %xc2, %xs2 = spls.hlog_quantize %x bits(6) scale(0.25) : (tensor<1x4x8xf32>) -> (tensor<1x4x8xi32>, tensor<1xf32>)
    %pam = spls.predict_attention %xc, %xs, %wq, %wqs, %wk, %wks bias(%bq, %bk) mask %m heads(2) bits(4) scale(0.5) : (tensor<1x4x8xi32>, tensor<1xf32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x2x4x4xf32>
    %pam2 = spls.predict_attention %xc, %xs, %wq, %wqs, %wk, %wks bias(%bq, %bk) heads(2) bits(4) scale(0.5) causal : (tensor<1x4x8xi32>, tensor<1xf32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x2x4x4xf32>
    %wk1 = onnx.weight "wk1.hlog4" : tensor<8x4xi32>
    %bk1 = onnx.weight "bk1" : tensor<4xf32>
    %pam3 = spls.predict_attention %xc, %xs, %wq, %wqs, %wk1, %wks bias(%bq, %bk1) heads(2) kv_heads(1) bits(4) scale(0.5) causal : (tensor<1x4x8xi32>, tensor<1xf32>, tensor<8x8xi32>, tensor<f32>, tensor<8x4xi32>, tensor<f32>, tensor<8xf32>, tensor<4xf32>) -> tensor<1x2x4x4xf32>
    %spa = spls.topk %pam k(2) : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi1>
    %reuse, %keys = spls.local_similarity %spa probs(%pam) mode("cosprob") window(4) threshold(0.9) k(2) : (tensor<1x2x4x4xi1>, tensor<1x2x4x4xf32>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)
    %reuse2, %keys2 = spls.local_similarity %spa mode("overlap") window(2) threshold(0.5) k(2) : (tensor<1x2x4x4xi1>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)
    %reuse3, %keys3 = spls.local_similarity %spa mode("overlap") window(2) threshold(0.5) k(2) first_reference(1) : (tensor<1x2x4x4xi1>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)
    %q = transformer.linear %x, %w, %bq rows(%reuse) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
    %k = transformer.linear %x, %w keys(%keys) heads(2) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
    %v = transformer.linear %x, %w8, %bq weight_scale(%ws) input_scale(0.1) keys(%keys) heads(2) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>, tensor<1x2x4xi1>) -> tensor<1x4x8xf32>
    %a = transformer.attention %q, %k, %v mask %m rows(%reuse) spa(%spa) heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>, tensor<1x4xi32>, tensor<1x2x4x4xi1>) -> tensor<1x4x8xf32>
    %a1 = transformer.attention %q, %k, %v rows(%reuse) heads(2) scale(0.5) causal : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
    %a2 = transformer.attention %q, %k, %v rows(%reuse) heads(2) scale(0.5) q_scale(0.1) k_scale(0.1) v_scale(0.1) p_scale(0.0078125) causal : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
    %a3 = transformer.attention %q, %k, %v mask %m rows(%reuse) spa(%spa) heads(2) scale(0.5) q_scale(0.1) k_scale(0.1) v_scale(0.1) p_scale(0.0078125) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>, tensor<1x4xi32>, tensor<1x2x4x4xi1>) -> tensor<1x4x8xf32>
    %o = transformer.linear %a2, %w8 weight_scale(%ws) input_scale(0.1) rows(%reuse) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
    func.return %o : tensor<1x4x8xf32>
  }
}

// CHECK:      %xc, %xs = spls.hlog_quantize %x bits(4) : (tensor<1x4x8xf32>) -> (tensor<1x4x8xi32>, tensor<1xf32>)
// CHECK-NEXT: %xc2, %xs2 = spls.hlog_quantize %x bits(6) scale(2.500000e-01)
// CHECK-NEXT: %pam = spls.predict_attention %xc, %xs, %wq, %wqs, %wk, %wks bias(%bq, %bk) mask %m heads(2) bits(4) scale(5.000000e-01) : (tensor<1x4x8xi32>, tensor<1xf32>, tensor<8x8xi32>, tensor<f32>, tensor<8x8xi32>, tensor<f32>, tensor<8xf32>, tensor<8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x2x4x4xf32>
// CHECK-NEXT: %pam2 = spls.predict_attention %xc, %xs, %wq, %wqs, %wk, %wks bias(%bq, %bk) heads(2) bits(4) scale(5.000000e-01) causal :
// CHECK:      %pam3 = spls.predict_attention %xc, %xs, %wq, %wqs, %wk1, %wks bias(%bq, %bk1) heads(2) kv_heads(1) bits(4) scale(5.000000e-01) causal : (tensor<1x4x8xi32>, tensor<1xf32>, tensor<8x8xi32>, tensor<f32>, tensor<8x4xi32>, tensor<f32>, tensor<8xf32>, tensor<4xf32>) -> tensor<1x2x4x4xf32>
// CHECK-NEXT: %spa = spls.topk %pam k(2) : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xi1>
// CHECK-NEXT: %reuse, %keys = spls.local_similarity %spa probs(%pam) mode("cosprob") window(4) threshold(9.000000e-01) k(2) : (tensor<1x2x4x4xi1>, tensor<1x2x4x4xf32>) -> (tensor<1x4xi32>, tensor<1x2x4xi1>)
// CHECK-NEXT: %reuse2, %keys2 = spls.local_similarity %spa mode("overlap") window(2) threshold(5.000000e-01) k(2) :
// CHECK-NEXT: %reuse3, %keys3 = spls.local_similarity %spa mode("overlap") window(2) threshold(5.000000e-01) k(2) first_reference(1) :
// CHECK-NEXT: %q = transformer.linear %x, %w, %bq rows(%reuse) : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>, tensor<1x4xi32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %k = transformer.linear %x, %w keys(%keys) heads(2) :
// CHECK-NEXT: %v = transformer.linear %x, %w8, %bq weight_scale(%ws) input_scale(1.000000e-01) keys(%keys) heads(2) :
// CHECK-NEXT: %a = transformer.attention %q, %k, %v mask %m rows(%reuse) spa(%spa) heads(2) scale(5.000000e-01) :
// CHECK-NEXT: %a1 = transformer.attention %q, %k, %v rows(%reuse) heads(2) scale(5.000000e-01) causal :
// CHECK-NEXT: %a2 = transformer.attention %q, %k, %v rows(%reuse) heads(2) scale(5.000000e-01) q_scale(1.000000e-01) k_scale(1.000000e-01) v_scale(1.000000e-01) p_scale(7.812500e-03) causal :
// CHECK-NEXT: %a3 = transformer.attention %q, %k, %v mask %m rows(%reuse) spa(%spa) heads(2) scale(5.000000e-01) q_scale(1.000000e-01) k_scale(1.000000e-01) v_scale(1.000000e-01) p_scale(7.812500e-03) :
// CHECK-NEXT: %o = transformer.linear %a2, %w8 weight_scale(%ws) input_scale(1.000000e-01) rows(%reuse) :
