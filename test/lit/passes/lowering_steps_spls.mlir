// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{hlog-bits=4 window=4 threshold=0.9},esact-select-instructions' --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=SELECT
// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{hlog-bits=4 window=4 threshold=0.9},esact-select-instructions,esact-allocate-buffers,esact-order' --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=ORDER
// The SPLS prediction's overlap placement as directives of the selection stream, applied by
// esact-order: the K / V linears (dense, of the prediction's input) are selected as a group held
// aside, spread over the projection's BPU (an anchor with its estimated cycles) and the pieces
// expected after it sunk behind the chain; the masked Q linear is held aside and placed after
// the chain with its input preparation in front of it.

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

// Selection order: K and V before the projection, each directive where selection asked for it.
// SELECT: esact.gemm {{.*}}component = "k"
// SELECT: esact.gemm {{.*}}component = "v"
// SELECT: lowering.place "aside" [[KV:[0-9]+]]
// SELECT-NEXT: lowering.label [[PROJECTION:[0-9]+]]
// SELECT: esact.bpu {{.*}}lowering.cycles = {{[0-9]+}} : i64
// SELECT: lowering.place "interleave" [[KV]] at [[PROJECTION]]
// SELECT: lowering.label [[CHAIN:[0-9]+]]
// SELECT: esact.similarity
// SELECT-NEXT: lowering.place "sink" [[KV]]
// SELECT: esact.gemm {{.*}}has_row_mask = 1{{.*}}component = "q"
// SELECT: lowering.place "aside" [[Q:[0-9]+]]
// SELECT-NEXT: lowering.place "prepare" [[Q]] at [[CHAIN]]

// Program order: the K GEMM among the prediction (before its BPU), V sunk behind the
// SIMILARITY, then the Q GEMM; no directive left.
// ORDER-NOT: lowering.
// ORDER: esact.hlog
// ORDER: esact.gemm {{.*}}component = "k"
// ORDER-NEXT: esact.bpu
// ORDER: esact.similarity
// ORDER: esact.gemm {{.*}}component = "v"
// ORDER: esact.gemm {{.*}}has_row_mask = 1{{.*}}component = "q"
// ORDER-NOT: lowering.
