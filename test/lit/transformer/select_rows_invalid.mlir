// RUN: esact-opt %s --split-input-file --verify-diagnostics --no-print-debuginfo | filecheck %s
// One chunk per error the transformer.select_rows verifier reports.

func.func @f(%x: tensor<1x4x8xf32>) {
  %y = transformer.select_rows %x rows [2, 1] : (tensor<1x4x8xf32>) -> tensor<1x2x8xf32>
  func.return
}

// CHECK: transformer.select_rows: rows must be strictly increasing and non-negative, got [2, 1]

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %y = transformer.select_rows %x rows [4] : (tensor<1x4x8xf32>) -> tensor<1x1x8xf32>
  func.return
}

// CHECK: transformer.select_rows: row 4 is out of range for 4 rows (x 1x4x8)

// -----
func.func @f(%x: tensor<1x4x8xf32>) {
  %y = transformer.select_rows %x rows [0] : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  func.return
}

// CHECK: transformer.select_rows: result must be 1x1x8, got 1x4x8

// -----
func.func @f(%x: tensor<4x8xf32>) {
  %y = transformer.select_rows %x rows [0] : (tensor<4x8xf32>) -> tensor<1x8xf32>
  func.return
}

// CHECK: transformer.select_rows: x must have rank 3, got 4x8
