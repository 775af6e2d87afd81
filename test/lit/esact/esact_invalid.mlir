// RUN: esact-opt %s --split-input-file --verify-diagnostics --no-print-debuginfo | filecheck %s
// One chunk per error the esact ops report (checks come from the ISA table's validation).

esact.gemm pop [] push [] m = 0, k = 8, n = 8

// CHECK: esact.gemm: field 'm' = 0 outside [1, 65535]

// -----
esact.load pop [] push [] buf = ACC, sram_addr = 0, dram_addr = 0, rows = 2, cols = 8, sram_stride = 4

// CHECK: esact.load: field 'sram_stride' = 4 < row length 8

// -----
esact.hlog pop [] push [] dst_buf = ABUF, rows = 1, cols = 1, bits = 8, scale = 1.0

// CHECK: esact.hlog: field 'bits' = 8 needs dst_buf ACC

// -----
esact.quant pop [] push [] rows = 1, cols = 1, mult = 1.0 {component = "attention"}

// CHECK: esact.quant: component 'attention' is not one of

// -----
esact.io "inout" "x" at 0 : tensor<4xf32>

// CHECK: esact.io: kind must be input or output, got 'inout'

// -----
// A property of the wrong type, and a missing one: IRDL's own messages (the instruction ops'
// quick check falls back to IRDL's verifier).
"esact.halt"() <{pop = 0 : i32, push = 0 : i64}> : () -> ()

// CHECK: Expected attribute i64 but got i32

// -----
"esact.halt"() <{pop = 0 : i64}> : () -> ()

// CHECK: property 'push' expected in operation 'esact.halt'

// -----
"esact.halt"() <{pop = 0 : i64, push = 0 : i64}> {layer = "x"} : () -> ()

// CHECK: "x" should be of base attribute integer
