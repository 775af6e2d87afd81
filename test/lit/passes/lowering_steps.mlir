// RUN: esact-opt %s -p esact-select-instructions | filecheck %s --check-prefix=SELECT
// RUN: esact-opt %s -p esact-select-instructions,esact-allocate-buffers | filecheck %s --check-prefix=ALLOC
// RUN: esact-opt %s -p esact-select-instructions,esact-allocate-buffers,esact-order | filecheck %s --check-prefix=ORDER
// RUN: esact-opt %s -p esact-select-instructions,esact-allocate-buffers,esact-order,schedule | filecheck %s --check-prefix=TOKENS
// The lowering's steps, each printed: selection on virtual buffers (a grouped-query attention,
// two query heads reading one K / V head, then a linear whose weight load is marked to be
// hoisted), allocation (addresses), ordering (the weight load moved back past the attention's
// SFU / store tail), token assignment last.

builtin.module attributes {esact.weight_store = "Inputs/tiny_layer.npz"} {
  func.func @main(%q: tensor<1x4x8xf32> {onnx.name = "q"}, %kv: tensor<1x4x4xf32> {onnx.name = "kv"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
    %a = transformer.attention %q, %kv, %kv heads(2) kv_heads(1) scale(0.5) q_scale(0.0625) k_scale(0.0625) v_scale(0.0625) p_scale(0.0078740157) : (tensor<1x4x8xf32>, tensor<1x4x4xf32>, tensor<1x4x4xf32>) -> tensor<1x4x8xf32> loc("/layer.0/attention/self/Softmax")
    %w = onnx.weight "w8" : tensor<8x8xi8>
    %ws = onnx.weight "s8" : tensor<8xf32>
    %b = onnx.weight "b" : tensor<8xf32>
    %y = transformer.linear %a, %w, %b weight_scale(%ws) input_scale(0.03125) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32> loc("/layer.0/attention/output/dense/MatMul")
    func.return %y : tensor<1x4x8xf32>
  }
}

// Selection: instructions in selection order, address fields as offsets into virtual buffers.
// SELECT: builtin.module attributes {esact.config_hash = "{{[0-9a-f]+}}", esact.keep_on_chip = "keep-on-chip: 1 activation(s) kept in VBUF (0.1 KiB not stored and loaded back), 0 through DRAM"}
// SELECT: lowering.reserve [[K:[0-9]+]] "ABUF" 16
// SELECT: esact.attn_qk pop [] push [] scores_addr = 0, q_addr = 0, k_addr = 0, {{.*}}lowering.vbuf = {scores_addr = {{[0-9]+}} : i64, q_addr = [[Q:[0-9]+]] : i64, k_addr = [[K]] : i64}
// SELECT: esact.attn_qk pop [] push [] scores_addr = 0, q_addr = 4, k_addr = 0, {{.*}}lowering.vbuf = {scores_addr = {{[0-9]+}} : i64, q_addr = [[Q]] : i64, k_addr = [[K]] : i64}
// SELECT: esact.attn_pv
// SELECT: esact.attn_pv
// SELECT: esact.store
// SELECT: lowering.release [[K]]
// SELECT: lowering.reserve [[W:[0-9]+]] "WBUF" 64
// SELECT-NEXT: esact.load pop [] push [] buf = WBUF, sram_addr = 0, dram_addr = {{[0-9]+}}, rows = 8, cols = 8, {{.*}}lowering.vbuf = {sram_addr = [[W]] : i64}, lowering.hoist}
// SELECT: esact.gemm
// SELECT: esact.halt

// Allocation: addresses, no buffer events; still in selection order, the hoist mark kept.
// ALLOC-NOT: lowering.reserve
// ALLOC: esact.attn_qk pop [] push [] scores_addr = 0, q_addr = 0, k_addr = [[KA:[0-9]+]], {{.*}}k_stride = 4,
// ALLOC: esact.attn_qk pop [] push [] scores_addr = 65536, q_addr = 4, k_addr = [[KA]],
// ALLOC: esact.attn_pv
// ALLOC: esact.attn_pv
// ALLOC: esact.store
// ALLOC-NEXT: esact.load pop [] push [] buf = WBUF, sram_addr = 0, {{.*}}{component = "load", layer = 0 : i64, lowering.hoist}
// ALLOC-NOT: lowering.vbuf

// Ordering: the weight load right after the last MAC-array instruction, the marks gone.
// ORDER-NOT: lowering.
// ORDER: esact.attn_pv
// ORDER: esact.attn_pv
// ORDER-NEXT: esact.load pop [] push [] buf = WBUF, sram_addr = 0, {{.*}}{component = "load", layer = 0 : i64}
// ORDER-NEXT: esact.dequant
// ORDER-NOT: lowering.
// ORDER: esact.halt

// Tokens: the GEMM waits for its loads and the quantized input, halt for every queue.
// TOKENS: esact.gemm pop [load, sfu] push [sfu]
// TOKENS: esact.halt pop [sfu, store] push []
