// RUN: esact-opt %s -p 'lower-to-esact{keep-on-chip=false}' | filecheck %s
// RUN: esact-opt %s -p lower-to-esact | filecheck %s --check-prefix=KEEP
// lower-to-esact: every op of a quantized layer becomes declarations + instructions (no tokens
// yet). A GELU that is a linear's only user is fused into the linear's tiles. The first RUN
// sends every result through DRAM; the second (the default) keeps results in VBUF.

builtin.module attributes {esact.weight_store = "Inputs/tiny_layer.npz"} {
  func.func @main(%x: tensor<1x4x8xf32> {onnx.name = "x"}, %m: tensor<1x1x1x4xf32> {onnx.name = "mask"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}, tensor<1x4x16xf32> {onnx.name = "z"}) {
    %h = transformer.host(%x) : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
    ^bb0(%a: tensor<1x4x8xf32>):
      %p = onnx.weight "pos" : tensor<1x4x8xf32>
      %s = onnx.Add %a, %p : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
      transformer.yield %s : tensor<1x4x8xf32>
    } loc("/embeddings/Add")
    %w = onnx.weight "w8" : tensor<8x8xi8>
    %ws = onnx.weight "s8" : tensor<8xf32>
    %b = onnx.weight "b" : tensor<8xf32>
    %w2 = onnx.weight "w28" : tensor<8x16xi8>
    %w2s = onnx.weight "s28" : tensor<16xf32>
    %b2 = onnx.weight "b2" : tensor<16xf32>
    %g = onnx.weight "gamma" : tensor<8xf32>
    %be = onnx.weight "beta" : tensor<8xf32>
    %q = transformer.linear %h, %w, %b weight_scale(%ws) input_scale(0.03125) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32> loc("/layer.0/attention/self/query/MatMul")
    %att = transformer.attention %q, %q, %h mask %m heads(2) scale(0.5) q_scale(0.0625) k_scale(0.0625) v_scale(0.03125) p_scale(0.0078740157) : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x1x1x4xf32>) -> tensor<1x4x8xf32> loc("/layer.0/attention/self/Softmax")
    %r = transformer.add %att, %h : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc("/layer.0/attention/output/Add")
    %l = transformer.layer_norm %r, %g, %be eps(1.0e-05) : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32> loc("/layer.0/attention/output/LayerNorm")
    %f = transformer.linear %l, %w2, %b2 weight_scale(%w2s) input_scale(0.015625) : (tensor<1x4x8xf32>, tensor<8x16xi8>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x4x16xf32> loc("/layer.0/intermediate/dense/MatMul")
    %e = transformer.gelu %f approximate("tanh") : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32> loc("/layer.0/intermediate/Gelu")
    %sm = transformer.softmax %e : (tensor<1x4x16xf32>) -> tensor<1x4x16xf32> loc("/head/Softmax")
    %ge = transformer.gelu %l approximate("none") : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc("/head/Gelu")
    func.return %ge, %sm : tensor<1x4x8xf32>, tensor<1x4x16xf32>
  }
}

// CHECK: builtin.module attributes {esact.config_hash = "{{[0-9a-f]+}}"}
// CHECK-NEXT: esact.io "input" "x" at 0 : tensor<1x4x8xf32>
// CHECK-NEXT: esact.io "input" "mask" at 128 : tensor<1x1x1x4xf32>
// CHECK-NEXT: esact.host_segment 0 "esact.host0.onnx"
// CHECK-NEXT: esact.host_tensor 0 "input" "in0" at 0 : tensor<1x4x8xf32>
// CHECK-NEXT: esact.host_tensor 0 "output" "out0" at 192 : tensor<1x4x8xf32>
// CHECK-NEXT: esact.data "w8" at 320
// CHECK-NEXT: esact.data "esact./layer.0/attention/self/query/MatMul.dequant" at 384
// CHECK-NEXT: esact.data "esact.attention.score_scale" at 640
// CHECK-NEXT: esact.data "esact.attention.output_scale" at 704
// CHECK-NEXT: esact.data "esact./layer.0/attention/output/LayerNorm.gamma_beta" at 1024
// CHECK-NEXT: esact.data "w28" at 1280
// CHECK-NEXT: esact.data "esact./layer.0/intermediate/dense/MatMul.dequant" at 1408
// CHECK-NEXT: esact.io "output" "y" at 2048 : tensor<1x4x8xf32>
// CHECK-NEXT: esact.io "output" "z" at 1792 : tensor<1x4x16xf32>
// Host region, then the query linear (weights loaded before activations).
// CHECK-NEXT: esact.host pop [] push [] {{.*}}segment = 0{{.*}}component = "host"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = WBUF{{.*}}rows = 8{{.*}}cols = 8{{.*}}dram_stride = 8{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 2{{.*}}cols = 8{{.*}}dram_stride = 32{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 32{{.*}}component = "load"
// CHECK-NEXT: esact.quant pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}mult = 32.0{{.*}}component = "sfu"
// CHECK-NEXT: esact.gemm pop [] push [] {{.*}}m = 4{{.*}}k = 8{{.*}}n = 8{{.*}}component = "q"
// Q (also K) is read only by the attention: written as its INT8 codes (the attention's
// multiplier 16), LOADed into ABUF by the attention (passes/attention_inputs.py); V, which the
// residual add reads too, stays FP32 and is QUANTized there.
// CHECK-NEXT: esact.dequant pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}has_bias = 1{{.*}}component = "sfu"
// CHECK-NEXT: esact.quant pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}mult = 16.0{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = ABUF{{.*}}dram_addr = [[Q8:[0-9]+]], rows = 4{{.*}}cols = 8{{.*}}dram_stride = 8{{.*}}component = "store"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 1{{.*}}cols = 4{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 1{{.*}}cols = 4{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = ABUF{{.*}}dram_addr = [[Q8]], rows = 4{{.*}}cols = 8{{.*}}dram_stride = 8{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = ABUF{{.*}}dram_addr = [[Q8]], rows = 4{{.*}}cols = 8{{.*}}dram_stride = 8{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 32{{.*}}component = "load"
// CHECK-NEXT: esact.quant pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}mult = 32.0{{.*}}component = "sfu"
// CHECK-NEXT: esact.attn_qk pop [] push [] {{.*}}lq = 4{{.*}}lk = 4{{.*}}d = 4{{.*}}q_stride = 8{{.*}}k_stride = 8{{.*}}component = "qk"
// CHECK-NEXT: esact.dequant pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}has_bias = 0{{.*}}component = "sfu"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 1{{.*}}cols = 4{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.softmax pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}scale = 1.0{{.*}}has_add_mask = 1{{.*}}causal = 0{{.*}}component = "sfu"
// CHECK-NEXT: esact.quant pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}mult = 127.0{{.*}}component = "sfu"
// CHECK-NEXT: esact.attn_qk pop [] push [] {{.*}}lq = 4{{.*}}lk = 4{{.*}}d = 4{{.*}}q_stride = 8{{.*}}k_stride = 8{{.*}}component = "qk"
// CHECK-NEXT: esact.dequant pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}has_bias = 0{{.*}}component = "sfu"
// CHECK-NEXT: esact.softmax pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}scale = 1.0{{.*}}has_add_mask = 1{{.*}}causal = 0{{.*}}component = "sfu"
// CHECK-NEXT: esact.quant pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}mult = 127.0{{.*}}component = "sfu"
// CHECK-NEXT: esact.attn_pv pop [] push [] {{.*}}lq = 4{{.*}}lk = 4{{.*}}d = 4{{.*}}v_stride = 8{{.*}}component = "pv"
// CHECK-NEXT: esact.dequant pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}has_bias = 0{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 4{{.*}}dram_stride = 32{{.*}}component = "store"
// CHECK-NEXT: esact.attn_pv pop [] push [] {{.*}}lq = 4{{.*}}lk = 4{{.*}}d = 4{{.*}}v_stride = 8{{.*}}component = "pv"
// The FFN weight load is hoisted above the attention tail (it depends on nothing there).
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = WBUF{{.*}}rows = 8{{.*}}cols = 16{{.*}}dram_stride = 16{{.*}}component = "load"
// CHECK-NEXT: esact.dequant pop [] push [] {{.*}}rows = 4{{.*}}cols = 4{{.*}}has_bias = 0{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 4{{.*}}dram_stride = 32{{.*}}component = "store"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.add pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 32{{.*}}component = "store"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 2{{.*}}cols = 8{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 0{{.*}}component = "load"
// The layer norm output feeds a linear (INT8 copy, stored first) and a GELU (FP32 copy).
// CHECK-NEXT: esact.layernorm pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}component = "sfu"
// CHECK-NEXT: esact.quant pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}mult = 64.0{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = ABUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 8{{.*}}component = "store"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 32{{.*}}component = "store"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 2{{.*}}cols = 16{{.*}}dram_stride = 64{{.*}}component = "load"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = ABUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.gemm pop [] push [] {{.*}}m = 4{{.*}}k = 8{{.*}}n = 16{{.*}}component = "head"
// CHECK-NEXT: esact.dequant pop [] push [] {{.*}}rows = 4{{.*}}cols = 16{{.*}}has_bias = 1{{.*}}component = "sfu"
// Fused GELU epilogue of the FFN linear.
// CHECK-NEXT: esact.gelu pop [] push [] {{.*}}rows = 4{{.*}}cols = 16{{.*}}mode = TANH{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 16{{.*}}dram_stride = 64{{.*}}component = "store"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 16{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.softmax pop [] push [] {{.*}}rows = 4{{.*}}cols = 16{{.*}}scale = 1.0{{.*}}has_add_mask = 0{{.*}}causal = 0{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 16{{.*}}dram_stride = 64{{.*}}component = "store"
// CHECK-NEXT: esact.load pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 0{{.*}}component = "load"
// CHECK-NEXT: esact.gelu pop [] push [] {{.*}}rows = 4{{.*}}cols = 8{{.*}}mode = ERF{{.*}}component = "sfu"
// CHECK-NEXT: esact.store pop [] push [] {{.*}}buf = VBUF{{.*}}rows = 4{{.*}}cols = 8{{.*}}dram_stride = 32{{.*}}component = "store"
// CHECK-NEXT: esact.halt pop [] push []

// The query linear's result stays in VBUF: no STORE, the attention QUANTs Q and K from it
// (its per-head outputs go to their column blocks of one kept region too)
// (V, the host segment's output, is LOADed from DRAM).
// KEEP: builtin.module attributes {esact.config_hash = "{{[0-9a-f]+}}", esact.keep_on_chip = "keep-on-chip: 5 activation(s) kept in VBUF (0.8 KiB not stored and loaded back), 0 through DRAM"}
// KEEP: esact.dequant pop [] push [] dst_addr = [[Q:[0-9]+]], {{.*}}has_bias = 1
// KEEP-NOT: esact.store
// KEEP: esact.quant pop [] push [] dst_addr = {{[0-9]+}}, src_addr = [[Q]], rows = 4, cols = 8, {{.*}}mult = 16.0
// KEEP-NEXT: esact.quant pop [] push [] dst_addr = {{[0-9]+}}, src_addr = [[Q]], rows = 4, cols = 8, {{.*}}mult = 16.0
// KEEP-NEXT: esact.load pop [] push [] buf = VBUF, {{.*}}dram_addr = 192, rows = 4, cols = 8
// The residual ADD (both operands kept) writes its own tile; the layer norm reads it there and
// writes its own;
// that one feeds the FFN (its INT8 copy, stored) and the head's GELU, which reads it on chip.
// KEEP: esact.add pop [] push [] dst_addr = [[R:[0-9]+]], a_addr = {{[0-9]+}}, b_addr = {{[0-9]+}},
// KEEP-NOT: esact.store {{.*}}buf = VBUF
// KEEP: esact.layernorm pop [] push [] dst_addr = [[LN:[0-9]+]], src_addr = [[R]],
// KEEP: esact.store pop [] push [] buf = ABUF
// The FFN's output (GELU fused) is the head softmax's input, on chip too.
// KEEP: esact.gelu pop [] push [] dst_addr = [[F:[0-9]+]], src_addr = [[F]], rows = 4, cols = 16
// KEEP-NEXT: esact.softmax pop [] push [] dst_addr = {{[0-9]+}}, src_addr = [[F]], rows = 4, cols = 16
// KEEP-NEXT: esact.store pop [] push [] buf = VBUF, {{.*}}rows = 4, cols = 16
// KEEP-NEXT: esact.gelu pop [] push [] dst_addr = {{[0-9]+}}, src_addr = [[LN]], rows = 4, cols = 8
// KEEP-NEXT: esact.store pop [] push [] buf = VBUF, {{.*}}rows = 4, cols = 8
// KEEP-NEXT: esact.halt
