// RUN: esact-opt %s -p 'insert-spatten{token_keep=0.5 head_keep=0.5}' --no-print-debuginfo | filecheck %s
// RUN: esact-opt %s -p 'insert-spatten{layers="1:token_keep=0.25,requant_threshold=0.5"}' --no-print-debuginfo | filecheck %s --check-prefix=OPTS
// RUN: esact-opt %s -p 'insert-spatten{token_keep=0.5 head_keep=0.5},lower-to-esact' --no-print-debuginfo | filecheck %s --check-prefix=ESACT
// RUN: not esact-opt %s -p 'insert-spatten{token_kep=0.5}' 2>&1 | filecheck %s --check-prefix=TYPO
// RUN: not esact-opt %s -p 'insert-spatten{token_keep=0.0}' 2>&1 | filecheck %s --check-prefix=RANGE
// RUN: not esact-opt %s -p 'insert-spatten{layers="2:head_keep=0.5"}' 2>&1 | filecheck %s --check-prefix=LAYER
// insert-spatten on two INT8 self-attentions (the second causal, with a padding mask, on the
// first one's output): a spatten.select before each, the second reading the first's scores
// (the cascade), the attention masked with tokens(..) head_mask(..); lowered, one SPATTEN_TOPK
// per layer and batch element and one SPATTEN_SCORE per head (all 4 query rows: nothing to
// tile; its head_score_addr is that head's entry of the head scores), the attention reading
// the element mask SPATTEN_TOPK wrote as its SPA.

builtin.module {
  func.func @main(%q: tensor<1x4x8xf32> {onnx.name = "q"}, %k: tensor<1x4x8xf32> {onnx.name = "k"}, %v: tensor<1x4x8xf32> {onnx.name = "v"}, %m: tensor<1x1x1x4xf32> {onnx.name = "m"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}, tensor<1x4x8xf32> {onnx.name = "z"}) {
    %a = transformer.attention %q, %k, %v heads(2) scale(5.000000e-01) q_scale(0.03) k_scale(0.04) v_scale(0.02) p_scale(0.00787401572) {layer = 0 : i64, role = "attention"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
    %b = transformer.attention %a, %a, %a mask %m heads(2) scale(5.000000e-01) causal q_scale(0.03) k_scale(0.04) v_scale(0.02) p_scale(0.00787401572) {layer = 1 : i64, role = "attention"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32>
    func.return %a, %b : tensor<1x4x8xf32>, tensor<1x4x8xf32>
  }
}

// CHECK:      %keep, %heads, %scores, %head_scores = "spatten.select"(%q, %k, %v) <{num_heads = 2 : i64, token_keep = 5.000000e-01 : f32, head_keep = 5.000000e-01 : f32, protect = 1 : i64, requant_threshold = 1.000000e-01 : f32, {{.*}} operandSegmentSizes = array<i32: 1, 1, 1, 0, 0, 0>}> {layer = 0 : i64, role = "predict"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> (tensor<1x4xi8>, tensor<1x2xi8>, tensor<1x4xf32>, tensor<1x2xf32>)
// CHECK-NEXT: %a = transformer.attention %q, %k, %v tokens(%keep) head_mask(%heads) heads(2)
// CHECK-NEXT: "spatten.select"(%a, %a, %a, %m, %scores, %head_scores) {{.*}} causal, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 1>}> {layer = 1 : i64, role = "predict"}
// CHECK-NEXT: %b = transformer.attention %a, %a, %a mask %m tokens(%keep_1) head_mask(%heads_1) heads(2)

// OPTS:      "spatten.select"(%q, %k, %v) <{{{.*}} token_keep = 9.000000e-01 : f32, head_keep = 1.000000e+00 : f32, protect = 1 : i64, requant_threshold = 1.000000e-01 : f32
// OPTS:      "spatten.select"(%a, %a, %a, %m, %scores, %head_scores) <{{{.*}} token_keep = 2.500000e-01 : f32, head_keep = 1.000000e+00 : f32, protect = 1 : i64, requant_threshold = 5.000000e-01 : f32

// ESACT:      esact.spatten_topk {{.*}} has_prev = 0, {{.*}} out_head_scores_addr = [[HS0:[0-9]+]], {{.*}} mask_addr = [[MASK0:[0-9]+]], length = 4, heads = 2, token_keep = 0.5, head_keep = 0.5, protect = 1, no_mask = 0 {component = "predict", layer = 0 : i64}
// ESACT:      esact.spatten_score {{.*}} head_score_addr = [[HS0]], {{.*}} length = 4, first_row = 0, rows = 4, {{.*}} has_add_mask = 0, {{.*}} causal = 0 {component = "predict", layer = 0 : i64}
// ESACT:      esact.spatten_score {{.*}} first_row = 0, rows = 4,
// ESACT:      esact.attn_qk {{.*}} has_mask = 1, mask_addr = [[MASK0]],
// ESACT:      esact.spatten_topk {{.*}} has_prev = 1, {{.*}} layer = 1 : i64}
// ESACT:      esact.spatten_score {{.*}} first_row = 0, rows = 4, {{.*}} has_add_mask = 1, {{.*}} causal = 1 {component = "predict", layer = 1 : i64}
// ESACT:      esact.halt

// TYPO: insert-spatten: unknown option 'token_kep' (did you mean 'token_keep'?
// RANGE: insert-spatten: token-keep must be in (0, 1], got 0.0
// LAYER: insert-spatten: per-layer options for layer(s) 2, but the model has 2 attention layer(s) SpAtten prunes
