// RUN: esact-opt %s --no-print-debuginfo | esact-opt --no-print-debuginfo | filecheck %s
// Every esact op (one per ISA instruction, plus the program declarations) prints and parses
// back to itself: fields in ISA-table order, enums by name, token masks as queue lists.

builtin.module attributes {esact.config_hash = "00"} {
  esact.data "w" at 64
  esact.io "input" "x" at 0 : tensor<1x4xf32>
  esact.io "output" "y" at 128 : tensor<1x4xf32>
  esact.host_segment 0 "host0"
  esact.host_tensor 0 "input" "in0" at 0 : tensor<1x4xf32>
  esact.host_tensor 0 "output" "out0" at 192 : tensor<1x4xi64>
  esact.load pop [] push [sfu] buf = MBUF, sram_addr = 2, dram_addr = 3, rows = 4, cols = 2, sram_stride = 0, dram_stride = 0
  esact.store pop [load] push [sfu] buf = MBUF, sram_addr = 2, dram_addr = 3, rows = 4, cols = 2, sram_stride = 0, dram_stride = 0
  esact.gemm pop [load] push [sfu] acc_addr = 4, a_addr = 2, w_addr = 3, m = 4, k = 2, n = 3, a_stride = 0, w_stride = 0, acc_stride = 0, accumulate = 0, has_bias = 0, bias_addr = 3, has_row_mask = 0, row_mask_addr = 2, has_col_mask = 0, col_mask_addr = 4
  esact.attn_qk pop [load] push [sfu] scores_addr = 4, q_addr = 2, k_addr = 3, lq = 4, lk = 2, d = 3, q_stride = 0, k_stride = 0, scores_stride = 0, has_mask = 0, mask_addr = 2
  esact.attn_pv pop [load] push [sfu] out_addr = 4, p_addr = 2, v_addr = 3, lq = 4, lk = 2, d = 3, p_stride = 0, v_stride = 0, out_stride = 0, accumulate = 0, has_mask = 0, mask_addr = 3, has_row_mask = 0, row_mask_addr = 2
  esact.dequant pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, scale_addr = 4, has_bias = 0, bias_addr = 3, scalar_count = 3, scalar_addr = 2
  esact.requant pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, mult_addr = 4
  esact.quant pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, mult = 0.5
  esact.softmax pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, scale = 0.5, has_add_mask = 0, add_mask_addr = 3, causal = 0, causal_offset = 2, has_elem_mask = 0, elem_mask_addr = 4
  esact.layernorm pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, gamma_addr = 4, beta_addr = 2, eps = 0.5
  esact.gelu pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, mode = TANH
  esact.add pop [load] push [sfu] dst_addr = 4, a_addr = 2, b_addr = 3, rows = 4, cols = 2, dst_stride = 0, a_stride = 0, b_stride = 0
  esact.gather_rows pop [load] push [sfu] buf = VBUF, dst_addr = 2, src_addr = 3, rows = 4, cols = 2, src_stride = 0, dst_stride = 0, map_addr = 2
  esact.scatter_rows pop [load] push [sfu] buf = VBUF, dst_addr = 2, src_addr = 3, rows = 4, cols = 2, src_stride = 0, dst_stride = 0, map_addr = 2, compact = 0
  esact.hlog pop [load] push [sfu] dst_buf = ABUF, dst_addr = 2, src_addr = 3, rows = 4, cols = 2, src_stride = 0, dst_stride = 0, bits = 4, scale = 0.5, dynamic = 0, scale_out_addr = 2
  esact.bpu pop [load] push [sfu] dst_addr = 4, a_buf = ABUF, a_addr = 3, b_buf = ABUF, b_addr = 2, m = 3, k = 4, n = 2, a_stride = 0, b_stride = 0, dst_stride = 0, transpose_b = 0
  esact.topk pop [load] push [sfu] dst_addr = 4, src_buf = ACC, src_addr = 3, rows = 4, cols = 2, src_stride = 0, k = 1, has_key_mask = 0, key_mask_addr = 3, causal = 0, causal_offset = 2
  esact.similarity pop [load] push [sfu] map_addr = 4, key_mask_addr = 2, spa_addr = 3, has_prob = 0, prob_addr = 2, heads = 3, length = 4, keys = 2, window = 3, k = 4, threshold = 0.5, mode = OVERLAP
  esact.host pop [load] push [sfu] segment = 4
  esact.load pop [compute, store] push [] buf = WBUF, sram_addr = 0, dram_addr = 64, rows = 1, cols = 8, sram_stride = 0, dram_stride = 0 {component = "q", layer = 3 : i64}
  esact.halt pop [load] push [sfu]
}

// CHECK:      builtin.module attributes {esact.config_hash = "00"} {
// CHECK-NEXT:   esact.data "w" at 64
// CHECK-NEXT:   esact.io "input" "x" at 0 : tensor<1x4xf32>
// CHECK-NEXT:   esact.io "output" "y" at 128 : tensor<1x4xf32>
// CHECK-NEXT:   esact.host_segment 0 "host0"
// CHECK-NEXT:   esact.host_tensor 0 "input" "in0" at 0 : tensor<1x4xf32>
// CHECK-NEXT:   esact.host_tensor 0 "output" "out0" at 192 : tensor<1x4xi64>
// CHECK-NEXT:   esact.load pop [] push [sfu] buf = MBUF, sram_addr = 2, dram_addr = 3, rows = 4, cols = 2, sram_stride = 0, dram_stride = 0
// CHECK-NEXT:   esact.store pop [load] push [sfu] buf = MBUF, sram_addr = 2, dram_addr = 3, rows = 4, cols = 2, sram_stride = 0, dram_stride = 0
// CHECK-NEXT:   esact.gemm pop [load] push [sfu] acc_addr = 4, a_addr = 2, w_addr = 3, m = 4, k = 2, n = 3, a_stride = 0, w_stride = 0, acc_stride = 0, accumulate = 0, has_bias = 0, bias_addr = 3, has_row_mask = 0, row_mask_addr = 2, has_col_mask = 0, col_mask_addr = 4
// CHECK-NEXT:   esact.attn_qk pop [load] push [sfu] scores_addr = 4, q_addr = 2, k_addr = 3, lq = 4, lk = 2, d = 3, q_stride = 0, k_stride = 0, scores_stride = 0, has_mask = 0, mask_addr = 2
// CHECK-NEXT:   esact.attn_pv pop [load] push [sfu] out_addr = 4, p_addr = 2, v_addr = 3, lq = 4, lk = 2, d = 3, p_stride = 0, v_stride = 0, out_stride = 0, accumulate = 0, has_mask = 0, mask_addr = 3, has_row_mask = 0, row_mask_addr = 2
// CHECK-NEXT:   esact.dequant pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, scale_addr = 4, has_bias = 0, bias_addr = 3, scalar_count = 3, scalar_addr = 2
// CHECK-NEXT:   esact.requant pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, mult_addr = 4
// CHECK-NEXT:   esact.quant pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, mult = 0.5
// CHECK-NEXT:   esact.softmax pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, scale = 0.5, has_add_mask = 0, add_mask_addr = 3, causal = 0, causal_offset = 2, has_elem_mask = 0, elem_mask_addr = 4
// CHECK-NEXT:   esact.layernorm pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, gamma_addr = 4, beta_addr = 2, eps = 0.5
// CHECK-NEXT:   esact.gelu pop [load] push [sfu] dst_addr = 4, src_addr = 2, rows = 3, cols = 4, src_stride = 0, dst_stride = 0, mode = TANH
// CHECK-NEXT:   esact.add pop [load] push [sfu] dst_addr = 4, a_addr = 2, b_addr = 3, rows = 4, cols = 2, dst_stride = 0, a_stride = 0, b_stride = 0
// CHECK-NEXT:   esact.gather_rows pop [load] push [sfu] buf = VBUF, dst_addr = 2, src_addr = 3, rows = 4, cols = 2, src_stride = 0, dst_stride = 0, map_addr = 2
// CHECK-NEXT:   esact.scatter_rows pop [load] push [sfu] buf = VBUF, dst_addr = 2, src_addr = 3, rows = 4, cols = 2, src_stride = 0, dst_stride = 0, map_addr = 2, compact = 0
// CHECK-NEXT:   esact.hlog pop [load] push [sfu] dst_buf = ABUF, dst_addr = 2, src_addr = 3, rows = 4, cols = 2, src_stride = 0, dst_stride = 0, bits = 4, scale = 0.5, dynamic = 0, scale_out_addr = 2
// CHECK-NEXT:   esact.bpu pop [load] push [sfu] dst_addr = 4, a_buf = ABUF, a_addr = 3, b_buf = ABUF, b_addr = 2, m = 3, k = 4, n = 2, a_stride = 0, b_stride = 0, dst_stride = 0, transpose_b = 0
// CHECK-NEXT:   esact.topk pop [load] push [sfu] dst_addr = 4, src_buf = ACC, src_addr = 3, rows = 4, cols = 2, src_stride = 0, k = 1, has_key_mask = 0, key_mask_addr = 3, causal = 0, causal_offset = 2
// CHECK-NEXT:   esact.similarity pop [load] push [sfu] map_addr = 4, key_mask_addr = 2, spa_addr = 3, has_prob = 0, prob_addr = 2, heads = 3, length = 4, keys = 2, window = 3, k = 4, threshold = 0.5, mode = OVERLAP
// CHECK-NEXT:   esact.host pop [load] push [sfu] segment = 4
// CHECK-NEXT:   esact.load pop [compute, store] push [] buf = WBUF, sram_addr = 0, dram_addr = 64, rows = 1, cols = 8, sram_stride = 0, dram_stride = 0 {component = "q", layer = 3 : i64}
// CHECK-NEXT:   esact.halt pop [load] push [sfu]
// CHECK-NEXT: }
