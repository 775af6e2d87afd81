// RUN: esact-opt %s -p lower-to-esact --no-print-debuginfo | filecheck %s
// A linear with input-channel groups (outlier channels): each group is quantized with its own
// multiplier, multiplied on the MAC array on its own (k = group size), dequantized with its own
// scale row, and the FP32 partials are added in group order.

builtin.module attributes {esact.weight_store = "Inputs/tiny_layer.npz"} {
  func.func @main(%x: tensor<1x4x8xf32> {onnx.name = "x"}) -> (tensor<1x4x8xf32> {onnx.name = "y"}) {
    %w = onnx.weight "w8" : tensor<8x8xi8>
    %ws = onnx.weight "s8" : tensor<8xf32>
    %b = onnx.weight "b" : tensor<8xf32>
    %y = transformer.linear %x, %w, %b weight_scale(%ws) input_scale(0.25) group_scales("gs8") group_size(4) : (tensor<1x4x8xf32>, tensor<8x8xi8>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
    func.return %y : tensor<1x4x8xf32>
  }
}

// CHECK:      esact.load pop [] push [] buf = WBUF, {{.*}} rows = 8, cols = 8,
// Three rows per output column: scale of group 0, scale of group 1, bias.
// CHECK-NEXT: esact.load pop [] push [] buf = VBUF, {{.*}} rows = 3, cols = 8,
// CHECK-NEXT: esact.load pop [] push [] buf = VBUF, {{.*}} rows = 4, cols = 8,
// CHECK-NEXT: esact.quant pop [] push [] dst_addr = 0, src_addr = [[V:[0-9]+]], rows = 4, cols = 4, src_stride = 8, dst_stride = 8, mult = 64.0
// CHECK-NEXT: esact.quant pop [] push [] dst_addr = 4, src_addr = {{[0-9]+}}, rows = 4, cols = 4, src_stride = 8, dst_stride = 8, mult = 4.0
// CHECK-NEXT: esact.gemm pop [] push [] acc_addr = [[A0:[0-9]+]], a_addr = 0, w_addr = 0, m = 4, k = 4, n = 8, a_stride = 8,
// CHECK-NEXT: esact.dequant pop [] push [] dst_addr = [[O:[0-9]+]], src_addr = [[A0]], rows = 4, cols = 8, {{.*}} has_bias = 1,
// CHECK-NEXT: esact.gemm pop [] push [] acc_addr = [[A1:[0-9]+]], a_addr = 4, w_addr = 32, m = 4, k = 4, n = 8, a_stride = 8,
// CHECK-NEXT: esact.dequant pop [] push [] dst_addr = [[T:[0-9]+]], src_addr = [[A1]], rows = 4, cols = 8, {{.*}} has_bias = 0,
// CHECK-NEXT: esact.add pop [] push [] dst_addr = [[O]], a_addr = [[O]], b_addr = [[T]], rows = 4, cols = 8,
// CHECK-NEXT: esact.store pop [] push [] buf = VBUF, sram_addr = [[O]],
// CHECK-NEXT: esact.halt
