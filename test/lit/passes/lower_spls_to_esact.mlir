// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{hlog-bits=4 window=4 threshold=0.9},lower-to-esact' --no-print-debuginfo 2>/dev/null | filecheck %s
// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{attention=topk similarity=overlap},lower-to-esact' --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=TOPK
// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{hlog-bits=4 window=4 threshold=0.9},lower-to-esact,schedule' --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=TOKENS
// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{hlog-bits=4 window=4 threshold=0.9},lower-to-esact{hw="%S/Inputs/esact_mac2rows.toml"},schedule' --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=CHUNKS
// RUN: not esact-opt %s -p 'calibrate,quantize,insert-spls{hlog-bits=8},lower-to-esact' 2>&1 | filecheck %s --check-prefix=BITS
// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{hlog-bits=4 window=4 threshold=0.9},lower-to-esact{spls-chunk-rows=1}' --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=ROWCHUNK
// RUN: not esact-opt %s -p 'calibrate,quantize,insert-spls,lower-to-esact{spls-chunk-rows=-1}' 2>&1 | filecheck %s --check-prefix=BADCHUNK
// RUN: esact-opt %s -p 'calibrate,quantize,insert-spls{attention=topk threshold=0.9},lower-to-esact{hw="%S/Inputs/esact_mbuf48.toml"}' --no-print-debuginfo 2>/dev/null | filecheck %s --check-prefix=RING
// The sparse lowering (passes/lower_spls_to_esact.py) of one pre-LN encoder layer after
// quantize + insert-spls (weights in Inputs/insert_spls_layer.npz; L = 4, 2 heads, width 8):
// the prediction chain on the predict queue (HLOG of X, one BPU for Q^|K^, DEQUANT with the
// dynamic X scale, HLOG of Q^ and K^, then per row chunk (default: the MAC array's 32 rows,
// here all 4 rows): per head BPU Q^K^T -> PAM_SCORES (cosprob: scale, rank and softmax in
// one pass of the score path; overlap without a mask: TOPK of the integer PAM), SIMILARITY
// writing the chunk's reuse map, key mask and computed-row mask in MBUF). K and V do not
// depend on the prediction: they are lowered beside it and spread over the Q^|K^ BPU tiles
// by estimated time (here one short tile: K's GEMM before it; V's, expected after the
// projection, follows the chain), so the compute queue runs them while the BPU works. Then Q (one GEMM per chunk), the
// attention, O, FFN1 and FFN2 with the computed-row mask as GEMM/ATTN row mask; O and FFN2
// SCATTER_ROWS reused rows their representative's rows before the fused residual add (the
// outputs of Q, the attention and FFN1 feed only ops skipping those rows: no scatter).

// CHECK:      esact.hlog {{.*}}dst_buf = ABUF, dst_addr = [[XC:[0-9]+]], src_addr = {{[0-9]+}}, rows = 4, cols = 8, {{.*}}bits = 4, {{.*}}dynamic = 1, scale_out_addr = [[SX:[0-9]+]], scale_count = 0, scale_in_addr = 0 {component = "predict", layer = 0 : i64}
// CHECK:      esact.gemm {{.*}} has_row_mask = 0{{.*}}component = "k"
// CHECK-NEXT: esact.bpu {{.*}}a_buf = ABUF, a_addr = [[XC]], b_buf = ABUF, {{.*}}m = 4, k = 8, n = 16, {{.*}}transpose_b = 0 {component = "predict", layer = 0 : i64}
// CHECK-NEXT: esact.dequant {{.*}}rows = 4, cols = 16, {{.*}}dst_stride = 16, {{.*}}has_bias = 1, {{.*}}scalar_count = 1, scalar_addr = [[SX]], has_row_scale = 0, row_scale_addr = 0, has_row_mask = 0, row_mask_addr = 0 {component = "predict", layer = 0 : i64}
// CHECK-NEXT: esact.hlog {{.*}}dst_addr = [[QC:[0-9]+]], {{.*}}rows = 4, cols = 8, src_stride = 16, {{.*}}scale_out_addr = [[SQ:[0-9]+]], scale_count = 0, scale_in_addr = 0 {component = "predict", layer = 0 : i64}
// CHECK-NEXT: esact.hlog {{.*}}dst_addr = [[KC:[0-9]+]], {{.*}}rows = 4, cols = 8, src_stride = 16, {{.*}}dynamic = 1
// CHECK:      esact.bpu_scores {{.*}}spa_addr = [[SPA:[0-9]+]], a_addr = [[QC]], b_addr = [[KC]], rows = 4, cols = 4, depth = 4, a_stride = 8, b_stride = 8, integer_rank = 0, {{.*}}scalar_count = 2, scalar_addr = [[SQ]], has_add_mask = 0, {{.*}}causal = 0, causal_offset = 0, k = 1, has_prob = 1, prob_addr = [[PROB:[0-9]+]] {component = "predict", layer = 0 : i64}
// CHECK:      esact.bpu_scores {{.*}}rows = 4, cols = 4, {{.*}}has_prob = 1
// CHECK-NEXT: esact.similarity {{.*}}map_addr = [[MAP:[0-9]+]], key_mask_addr = {{[0-9]+}}, spa_addr = [[SPA]], has_prob = 1, prob_addr = [[PROB]], {{.*}}heads = 2, length = 4, keys = 4, window = 4, k = 1, threshold = 0.8999{{[0-9]*}}, mode = COSPROB, has_row_mask = 1, row_mask_addr = [[ROWS:[0-9]+]], first_reference = 0, first_row = 0, row_count = 4, has_ring = 0, ring_addr = 0 {component = "predict", layer = 0 : i64}
// CHECK:      esact.gemm {{.*}} has_row_mask = 0{{.*}}component = "v"
// CHECK:      esact.gemm {{.*}}m = 4, k = 8, n = 8, {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]], {{.*}}component = "q"
// CHECK-NOT:  esact.scatter_rows
// CHECK:      esact.attn_qk {{.*}}has_mask = 0, mask_addr = 0, has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "qk", layer = 0 : i64}
// CHECK-NEXT: esact.dequant {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "sfu"
// CHECK:      esact.softmax {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "sfu"
// CHECK-NEXT: esact.quant_rows {{.*}}scale_addr = {{[0-9]+}}, has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "sfu"
// CHECK:      esact.attn_pv {{.*}}has_mask = 0, mask_addr = 0, has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "pv", layer = 0 : i64}
// CHECK-NOT:  esact.scatter_rows
// CHECK:      esact.gemm {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]], {{.*}}component = "o"
// CHECK:      esact.dequant {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "sfu"
// CHECK:      esact.scatter_rows {{.*}}buf = VBUF, {{.*}}rows = 4, cols = 8, {{.*}}map_addr = [[MAP]], compact = 0
// CHECK-NEXT: esact.load {{.*}}buf = VBUF
// CHECK-NEXT: esact.add
// CHECK:      esact.gemm {{.*}}n = 16, {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]], {{.*}}component = "ffn1"
// CHECK:      esact.dequant {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "sfu"
// CHECK-NOT:  esact.scatter_rows
// CHECK:      esact.gelu {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]] {component = "sfu"
// CHECK:      esact.gemm {{.*}}k = 16, n = 8, {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]], {{.*}}component = "ffn2"
// CHECK:      esact.scatter_rows {{.*}}map_addr = [[MAP]]
// CHECK:      esact.add
// CHECK:      esact.halt

// attention=topk + overlap: no softmax of PAM, K and V one GEMM per head with that head's key
// mask as row mask, the attention masked by SPA in QK, SOFTMAX and PV.
// TOPK:      esact.bpu_scores {{.*}}spa_addr = [[SPA0:[0-9]+]], {{.*}}integer_rank = 1,
// TOPK-NOT:  esact.softmax
// TOPK:      esact.similarity {{.*}}key_mask_addr = [[KEYS:[0-9]+]], spa_addr = [[SPA0]], has_prob = 0, {{.*}}mode = OVERLAP, has_row_mask = 1, row_mask_addr = [[ROWS:[0-9]+]]
// TOPK:      esact.gemm {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]], {{.*}}component = "q"
// TOPK:      esact.gemm {{.*}}n = 4, {{.*}}has_row_mask = 1, row_mask_addr = [[KEYS]], {{.*}}component = "k"
// TOPK:      esact.gemm {{.*}}n = 4, {{.*}}has_row_mask = 1, row_mask_addr = {{[0-9]+}}, {{.*}}component = "k"
// TOPK:      esact.gemm {{.*}}n = 4, {{.*}}has_row_mask = 1, row_mask_addr = [[KEYS]], {{.*}}component = "v"
// TOPK:      esact.attn_qk {{.*}}has_mask = 1, mask_addr = [[SPA0]], has_row_mask = 1, row_mask_addr = [[ROWS]]
// TOPK:      esact.softmax {{.*}}has_elem_mask = 1, elem_mask_addr = [[SPA0]]
// TOPK:      esact.attn_pv {{.*}}has_mask = 1, mask_addr = [[SPA0]], has_row_mask = 1, row_mask_addr = [[ROWS]]

// Tokens: the prediction does not wait for the compute queue; the masked Q GEMM waits for it.
// X's HLOG reads the layer norm's output in VBUF (keep-on-chip): it waits for the SFU, no LOAD.
// TOKENS:      esact.hlog pop [sfu] push []
// TOKENS:      esact.similarity pop [{{[a-z, ]*}}] push [compute{{.*}}]
// TOKENS:      esact.gemm pop [{{.*}}predict{{.*}}] {{.*}}component = "q"

// Progressive prediction with 2-row chunks (a 2-row MAC array): K^ and Q^ of all 4 rows
// first (their HLog scales span all rows), then rows 0-1 (per head BPU of the chunk's Q^ rows
// against all of K^, PAM_SCORES of the head's chunk rows with the chunk's causal offset;
// SIMILARITY first_row 0) and rows 2-3 (SIMILARITY first_row 2, resumed from rows
// 0-1's reuse map); the Q linear has one GEMM per chunk, each waiting for its own chunk's
// SIMILARITY only (the token of chunk 0's SIMILARITY is popped before chunk 1 is predicted).
// CHUNKS:      esact.hlog {{.*}}dst_addr = [[QC:[0-9]+]], {{.*}}rows = 4, cols = 8, src_stride = 16
// CHUNKS-NEXT: esact.hlog {{.*}}dst_addr = [[KC:[0-9]+]], {{.*}}rows = 4, cols = 8, src_stride = 16
// CHUNKS:      esact.bpu_scores {{.*}}spa_addr = [[SPA0:[0-9]+]], a_addr = [[QC]], b_addr = [[KC]], rows = 2, cols = 4, depth = 4, a_stride = 8, b_stride = 8, {{.*}}causal_offset = 0, {{.*}}has_prob = 1, prob_addr = [[PAM0:[0-9]+]]
// CHUNKS-NEXT: esact.bpu_scores {{.*}}rows = 2, cols = 4, depth = 4,
// CHUNKS-NEXT: esact.similarity pop [] push [compute] map_addr = [[MAP:[0-9]+]], {{.*}}spa_addr = [[SPA0]], {{.*}}row_mask_addr = [[ROWS:[0-9]+]], first_reference = 0, first_row = 0, row_count = 2
// CHUNKS-NEXT: esact.bpu_scores {{.*}}a_addr = {{[0-9]+}}, b_addr = [[KC]], rows = 2, cols = 4,
// CHUNKS-NEXT: esact.bpu_scores
// CHUNKS-NEXT: esact.similarity pop [] push [compute, sfu] map_addr = [[MAP]], {{.*}}row_mask_addr = [[ROWS]], first_reference = 0, first_row = 2, row_count = 2
// CHUNKS:      esact.gemm pop [{{.*}}predict{{.*}}] push {{.*}}a_addr = [[A:[0-9]+]], {{.*}}m = 2, k = 8, n = 8, {{.*}}has_row_mask = 1, row_mask_addr = [[ROWS]], {{.*}}component = "q"
// CHUNKS-NEXT: esact.gemm pop [predict] push {{.*}}m = 2, k = 8, n = 8, {{.*}}has_row_mask = 1, {{.*}}component = "q"
// CHUNKS-NEXT: esact.dequant {{.*}}dst_addr = [[QOUT:[0-9]+]], {{.*}}rows = 4, cols = 8,
// Q's result stays in VBUF (keep-on-chip): the attention QUANTs it there.
// CHUNKS-NOT:  esact.store {{.*}}buf = VBUF
// CHUNKS:      esact.quant {{.*}}src_addr = [[QOUT]], rows = 4, cols = 8,

// BITS: error: lower-to-esact: spls.hlog_quantize: hlog-bits > 7 is not supported (int8 code buffers)

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

// lower-to-esact{spls-chunk-rows=1}: one SIMILARITY per row, each resuming after the last.
// ROWCHUNK:     esact.similarity {{.*}}first_row = 0, row_count = 1
// ROWCHUNK:     esact.similarity {{.*}}first_row = 1, row_count = 1
// ROWCHUNK:     esact.similarity {{.*}}first_row = 2, row_count = 1
// ROWCHUNK:     esact.similarity {{.*}}first_row = 3, row_count = 1
// ROWCHUNK-NOT:     esact.similarity
// BADCHUNK: lower-to-esact: spls-chunk-rows must be >= 0, got -1
// BADCHUNK-NOT: Traceback

// The ring form (SPA of all rows over MBUF, Inputs/esact_mbuf48.toml): chunks of 3 + 1 rows,
// each chunk's SPA rows [heads, n, keys] in one MBUF region, SIMILARITY with has_ring reading
// the earlier chunks' references (cosprob: prob rows) from the ring; attention=topk reads SPA
// later, so each chunk's rows are STOREd to DRAM per head, and the attention runs in query
// tiles of 2 rows that LOAD their SPA rows back (head 0 rows 0-1, head 1 rows 0-1, ...).
// RING:      esact.bpu_scores {{.*}}spa_addr = [[CH:[0-9]+]], {{.*}}rows = 3, cols = 4,
// RING:      esact.bpu_scores {{.*}}rows = 3, cols = 4,
// RING:      esact.similarity {{.*}}spa_addr = [[CH]], has_prob = 1, {{.*}}first_row = 0, row_count = 3, has_ring = 1, ring_addr = [[RINGAT:[0-9]+]]
// RING-NEXT: esact.store {{.*}}buf = MBUF, sram_addr = [[CH]], dram_addr = [[SPA0:[0-9]+]], rows = 3, cols = 4,
// RING-NEXT: esact.store {{.*}}buf = MBUF, {{.*}}rows = 3, cols = 4,
// RING:      esact.bpu_scores {{.*}}spa_addr = [[CH]], {{.*}}rows = 1, cols = 4,
// RING:      esact.similarity {{.*}}spa_addr = [[CH]], {{.*}}first_row = 3, row_count = 1, has_ring = 1, ring_addr = [[RINGAT]]
// RING-NEXT: esact.store {{.*}}buf = MBUF, sram_addr = [[CH]], {{.*}}rows = 1, cols = 4,
// RING:      esact.load {{.*}}buf = MBUF, sram_addr = [[T0:[0-9]+]], dram_addr = [[SPA0]], rows = 2, cols = 4,
// RING-NEXT: esact.attn_qk {{.*}}lq = 2, lk = 4, {{.*}}has_mask = 1, mask_addr = [[T0]], has_row_mask = 1
// RING-NOT:  esact.similarity
// RING:      esact.attn_qk {{.*}}lq = 2, lk = 4, {{.*}}has_mask = 1
// RING:      esact.halt
