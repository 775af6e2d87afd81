// RUN: esact-opt %s -p esact-select-instructions | filecheck %s
// An attention with per-row probability scales (p_row_scales, quantize's default): after each
// head's SOFTMAX, QUANT_ROWS writes P and its rows' scales into VBUF, and the DEQUANT after
// ATTN_PV multiplies row r back by its scale after the column scale (v_scale alone).

builtin.module {
  func.func @main(%q: tensor<1x4x8xf32> {onnx.name = "q"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
    %att = transformer.attention %q, %q, %q heads(2) scale(0.5) q_scale(0.0625) k_scale(0.0625) v_scale(0.03125) p_row_scales : (tensor<1x4x8xf32>, tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc("/attention/Softmax")
    func.return %att : tensor<1x4x8xf32>
  }
}

// Head 0: P and its row scales; head 1's are made before head 0's P x V (two heads in flight).
// CHECK:      esact.softmax
// CHECK:      esact.quant_rows {{.*}} rows = 4, cols = 4, {{.*}}lowering.vbuf = {dst_addr = [[P0:[0-9]+]] : i64, src_addr = {{[0-9]+}} : i64, scale_addr = [[R0:[0-9]+]] : i64}
// CHECK:      esact.softmax
// CHECK:      esact.quant_rows {{.*}}lowering.vbuf = {dst_addr = [[P1:[0-9]+]] : i64, src_addr = {{[0-9]+}} : i64, scale_addr = [[R1:[0-9]+]] : i64}
// CHECK:      esact.attn_pv {{.*}}p_addr = [[P0]] :
// CHECK:      esact.dequant {{.*}}has_row_scale = 1, {{.*}}row_scale_addr = [[R0]] : i64}
// CHECK:      esact.attn_pv {{.*}}p_addr = [[P1]] :
// CHECK:      esact.dequant {{.*}}has_row_scale = 1, {{.*}}row_scale_addr = [[R1]] : i64}
