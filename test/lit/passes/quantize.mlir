// RUN: esact-opt %s -p 'calibrate,quantize{activation-scales=tensor probability-scales=tensor}' --no-print-debuginfo 2>&1 | filecheck %s
// RUN: esact-opt %s -p calibrate,quantize --no-print-debuginfo 2>&1 | filecheck %s --check-prefix=AUTO
// RUN: esact-opt %s -p calibrate --no-print-debuginfo 2>&1 | filecheck %s --check-prefix=RANGES
// RUN: not esact-opt %s -p 'calibrate,quantize{activation-scales=rows}' 2>&1 | filecheck %s --check-prefix=BAD
// RUN: esact-opt %s -p 'calibrate,quantize{probability-scales=row}' --no-print-debuginfo 2>&1 | filecheck %s --check-prefix=ROWP
// RUN: not esact-opt %s -p 'calibrate,quantize{probability-scales=token}' 2>&1 | filecheck %s --check-prefix=BADP
// quantize: transformer.linear/attention get INT8 weight handles and scales;
// FP32 ops (layer norm, GELU, add, softmax, host regions) are left alone.
// Without calibration data the ranges are synthetic (`synthetic` on each linear's range, so
// bias-correction=auto leaves the biases alone); activation-scales=token (the default) scales
// the linears' inputs per token (token_scales), activation-scales=tensor gives them calibrated
// input scales; probability-scales=row (the default) quantizes the attention's probabilities per
// query row (p_row_scales), probability-scales=tensor with the calibrated p_scale.

builtin.module attributes {esact.weight_store = "Inputs/tiny_layer.npz"} {
  func.func @main(%x: tensor<1x4x8xf32> {onnx.name = "x"}, %m: tensor<1x1x1x4xf32> {onnx.name = "mask"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
    %h = transformer.host(%x) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
    ^bb0(%a: tensor<1x4x8xf32>):
      %p = onnx.weight "pos" : tensor<1x4x8xf32>
      %s = onnx.Add %a, %p : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
      transformer.yield %s : tensor<1x4x8xf32>
    }
    %w = onnx.weight "w" : tensor<8x8xf32>
    %b = onnx.weight "b" : tensor<8xf32>
    %w2 = onnx.weight "w2" : tensor<8x16xf32>
    %b2 = onnx.weight "b2" : tensor<16xf32>
    %g = onnx.weight "gamma" : tensor<8xf32>
    %be = onnx.weight "beta" : tensor<8xf32>
    %q = transformer.linear %h, %w, %b : (tensor<1x4x8xf32>, tensor<8x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %att = transformer.attention %q, %q, %h mask %m heads(2) scale(0.5) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
    %r = transformer.add %att, %h : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %l = transformer.layer_norm %r, %g, %be eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    %f = transformer.linear %l, %w2, %b2 : (tensor<1x4x8xf32>, tensor<8x16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32>
    %e = transformer.gelu %f approximate("tanh") : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    %f2 = transformer.linear %l, %w2 : (tensor<1x4x8xf32>, tensor<8x16xf32>) -> tensor<1x4x16xf32>
    %s = transformer.softmax %f2 : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32>
    func.return %l : tensor<1x4x8xf32>
  }
}

// CHECK: warning: no --calibration-data given
// CHECK:      %h = transformer.host(%x)
// CHECK:      onnx.Add
// CHECK:      %b = onnx.weight "b" : tensor<8xf32>
// CHECK:      %g = onnx.weight "gamma" : tensor<8xf32>
// CHECK:      %[[WQ:.*]] = onnx.weight "w.int8" : tensor<8x8xi8>
// CHECK-NEXT: %[[WS:.*]] = onnx.weight "w.scale" : tensor<8xf32>
// CHECK-NEXT: %q = transformer.linear %h, %[[WQ]], %b weight_scale(%[[WS]]) input_scale({{.*}}) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %att = transformer.attention %q, %q, %h mask %m heads(2) scale(5.000000e-01) q_scale({{.*}}) k_scale({{.*}}) v_scale({{.*}}) p_scale({{.*}}) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT: %r = transformer.add %att, %h
// CHECK-NEXT: %l = transformer.layer_norm %r, %g, %be
// CHECK-NEXT: %[[W2Q:.*]] = onnx.weight "w2.int8" : tensor<8x16xi8>
// CHECK-NEXT: %[[W2S:.*]] = onnx.weight "w2.scale" : tensor<16xf32>
// CHECK-NEXT: %f = transformer.linear %l, %[[W2Q]], %b2 weight_scale(%[[W2S]]) input_scale({{.*}})
// CHECK-NEXT: %e = transformer.gelu %f approximate("tanh")
// The second use of w2 shares its INT8 copy.
// CHECK-NEXT: %[[W2Q2:.*]] = onnx.weight "w2.int8" : tensor<8x16xi8>
// CHECK-NEXT: %[[W2S2:.*]] = onnx.weight "w2.scale" : tensor<16xf32>
// CHECK-NEXT: %f2 = transformer.linear %l, %[[W2Q2]] weight_scale(%[[W2S2]]) input_scale({{.*}})
// CHECK-NEXT: %s = transformer.softmax %f2

// AUTO: %q = transformer.linear %h, %{{.*}}, %b weight_scale(%{{.*}}) token_scales : (tensor<1x4x8xf32>
// AUTO: %att = transformer.attention %q, %q, %h mask %m heads(2) scale(5.000000e-01) q_scale({{.*}}) k_scale({{.*}}) v_scale({{.*}}) p_row_scales :

// ROWP: %att = transformer.attention %q, %q, %h mask %m heads(2) scale(5.000000e-01) q_scale({{.*}}) k_scale({{.*}}) v_scale({{.*}}) p_row_scales :
// AUTO: %f = transformer.linear %l, %{{.*}}, %b2 weight_scale(%{{.*}}) token_scales :
// AUTO: %f2 = transformer.linear %l, %{{.*}} weight_scale(%{{.*}}) token_scales :

// RANGES: %q = transformer.linear %h, %w, %b {esact.calibration = {input_peak = {{.*}}, synthetic}}

// BAD: activation-scales must be one of tensor|token, got 'rows'

// BADP: probability-scales must be one of row|tensor, got 'token'
