// RUN: esact-opt %s -p schedule --no-print-debuginfo | filecheck %s
// schedule: a token pair for every cross-queue conflict on a buffer region or DRAM bytes,
// none where queues may run ahead (loads of independent tiles), halt waits for every queue.

builtin.module {
  esact.load pop [] push [] buf = WBUF, sram_addr = 0, dram_addr = 0, rows = 8, cols = 8
  esact.load pop [] push [] buf = ABUF, sram_addr = 0, dram_addr = 64, rows = 4, cols = 8
  esact.gemm pop [] push [] acc_addr = 0, a_addr = 0, w_addr = 0, m = 4, k = 8, n = 8
  esact.load pop [] push [] buf = WBUF, sram_addr = 64, dram_addr = 128, rows = 8, cols = 8
  esact.gemm pop [] push [] acc_addr = 32, a_addr = 0, w_addr = 64, m = 4, k = 8, n = 8
  esact.load pop [] push [] buf = WBUF, sram_addr = 0, dram_addr = 192, rows = 8, cols = 8
  esact.load pop [] push [] buf = VBUF, sram_addr = 0, dram_addr = 256, rows = 1, cols = 8
  esact.dequant pop [] push [] dst_addr = 8, src_addr = 0, rows = 4, cols = 8, scale_addr = 0
  esact.store pop [] push [] buf = VBUF, sram_addr = 8, dram_addr = 1024, rows = 4, cols = 8
  esact.load pop [] push [] buf = VBUF, sram_addr = 100, dram_addr = 1024, rows = 4, cols = 8
  esact.halt pop [] push []
}

// The weight tile and activation loads feed the first GEMM: one load->compute token (the
// latest of the two loads covers both).
// CHECK:      esact.load pop [] push [] buf = WBUF, sram_addr = 0,
// CHECK-NEXT: esact.load pop [] push [compute] buf = ABUF,
// CHECK-NEXT: esact.gemm pop [load] push [load, sfu] acc_addr = 0,
// The second weight tile goes to another region: it needs nothing.
// CHECK-NEXT: esact.load pop [] push [compute] buf = WBUF, sram_addr = 64,
// CHECK-NEXT: esact.gemm pop [load] push [] acc_addr = 32,
// Reusing the first tile's region waits until the first GEMM has read it.
// CHECK-NEXT: esact.load pop [compute] push [] buf = WBUF, sram_addr = 0,
// CHECK-NEXT: esact.load pop [] push [sfu] buf = VBUF, sram_addr = 0,
// CHECK-NEXT: esact.dequant pop [load, compute] push [compute, store] dst_addr = 8,
// CHECK-NEXT: esact.store pop [sfu] push [load, compute] buf = VBUF, sram_addr = 8, dram_addr = 1024,
// Reading DRAM bytes the store wrote waits for the store.
// CHECK-NEXT: esact.load pop [store] push [compute] buf = VBUF, sram_addr = 100, dram_addr = 1024,
// halt (compute queue) waits for the last instruction of every other queue.
// CHECK-NEXT: esact.halt pop [load, sfu, store] push []
