// RUN: esact-opt %s -p insert-sanger --no-print-debuginfo | filecheck %s
// RUN: esact-opt %s -p 'insert-sanger{bits=2 threshold=0.1 layers="1:threshold=0.002,bits=8"}' --no-print-debuginfo | filecheck %s --check-prefix=OPTS
// RUN: esact-opt %s -p insert-sanger,lower-to-esact --no-print-debuginfo | filecheck %s --check-prefix=ESACT
// RUN: not esact-opt %s -p 'insert-sanger{threshhold=0.1}' 2>&1 | filecheck %s --check-prefix=TYPO
// RUN: not esact-opt %s -p 'insert-sanger{threshold=1.5}' 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: not esact-opt %s -p 'insert-sanger{layers="2:bits=4"}' 2>&1 | filecheck %s --check-prefix=LAYER
// insert-sanger on two INT8 attentions (one plain, one causal with a padding mask): a
// sanger.predict_mask on each attention's own Q, K (and mask) before it, its result the
// attention's spa operand; lowered, one SANGER_PREDICT and one SANGER_PACK per head.

builtin.module {
  func.func @main(%q: tensor<1x4x8xf32> {onnx.name = "q"}, %k: tensor<1x4x8xf32> {onnx.name = "k"}, %v: tensor<1x4x8xf32> {onnx.name = "v"}, %m: tensor<1x1x1x4xf32> {onnx.name = "m"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}, tensor<1x4x8xf32> {onnx.name = "z"}) {
    %a = transformer.attention %q, %k, %v heads(2) scale(5.000000e-01) q_scale(0.03) k_scale(0.04) v_scale(0.02) p_scale(0.00787401572) {layer = 0 : i64, role = "attention"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %b = transformer.attention %q, %k, %v mask %m heads(2) scale(5.000000e-01) causal q_scale(0.03) k_scale(0.04) v_scale(0.02) p_scale(0.00787401572) {layer = 1 : i64, role = "attention"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
    func.return %a, %b : tensor<1x4x8xf32>, tensor<1x4x8xf32>
  }
}

// CHECK:      %spa = sanger.predict_mask %q, %k heads(2) bits(4) threshold(2.000000e-02) q_scale(3.000000e-02) k_scale(4.000000e-02) scale(5.000000e-01) {layer = 0 : i64, role = "predict"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x2x4x4xi1>
// CHECK-NEXT: %a = transformer.attention %q, %k, %v spa(%spa) heads(2)
// CHECK:      %spa_1 = sanger.predict_mask %q, %k mask %m heads(2) bits(4) threshold(2.000000e-02) {{.*}} causal {layer = 1 : i64, role = "predict"}
// CHECK-NEXT: %b = transformer.attention %q, %k, %v mask %m spa(%spa_1) heads(2) scale(5.000000e-01) {{.*}} causal

// OPTS:      sanger.predict_mask %q, %k heads(2) bits(2) threshold(1.000000e-01)
// OPTS:      sanger.predict_mask %q, %k mask %m heads(2) bits(8) threshold(2.000000e-03)

// The mask of head h is written at MBUF 16 h and read by that head's ATTN_QK and SOFTMAX.
// ESACT:      esact.sanger_predict {{.*}} mask_addr = 0, {{.*}} lq = 4, lk = 4, d = 4, q_stride = 8, k_stride = 8, bits = 4, {{.*}} has_add_mask = 0, {{.*}} causal = 0, {{.*}} {component = "predict", layer = 0 : i64}
// ESACT-NEXT: esact.sanger_pack {{.*}} mask_addr = 0, lq = 4, lk = 4, d = 4, dv = 4 {component = "qk", layer = 0 : i64}
// ESACT-NEXT: esact.sanger_predict {{.*}} mask_addr = 16,
// ESACT-NEXT: esact.sanger_pack {{.*}} mask_addr = 16,
// ESACT:      esact.attn_qk {{.*}} has_mask = 1, mask_addr = 0,
// ESACT:      esact.softmax {{.*}} has_elem_mask = 1, elem_mask_addr = 0, has_row_mask = 0, row_mask_addr = 0 {component = "sfu", layer = 0 : i64}
// ESACT:      esact.attn_qk {{.*}} has_mask = 1, mask_addr = 16,
// ESACT:      esact.sanger_predict {{.*}} has_add_mask = 1, add_mask_addr = [[ROW:[0-9]+]], add_mask_rows = 0, causal = 1, causal_offset = 0 {component = "predict", layer = 1 : i64}
// ESACT-NEXT: esact.sanger_pack
// ESACT-NEXT: esact.sanger_predict {{.*}} add_mask_addr = [[ROW]], add_mask_rows = 0, causal = 1,
// ESACT-NOT:  esact.sanger_predict
// ESACT:      esact.halt

// TYPO: insert-sanger: unknown option 'threshhold'{{.*}}threshold
// RANGE: threshold{{.*}}1.5
// LAYER: insert-sanger: per-layer options for layer(s) 2, but the model has 2 attention layer(s)
