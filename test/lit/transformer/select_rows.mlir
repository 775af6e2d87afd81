// RUN: esact-opt %s --no-print-debuginfo | esact-opt --no-print-debuginfo | filecheck %s
// transformer.select_rows prints and parses back to itself (its verifier:
// select_rows_invalid.mlir).

func.func @f(%x: tensor<2x17x64xf32>) -> tensor<2x2x64xf32> {
  %y = transformer.select_rows %x rows [0, 16] {layer = 3 : i64, role = "select_rows"} : (tensor<2x17x64xf32>) -> tensor<2x2x64xf32>
  func.return %y : tensor<2x2x64xf32>
}

// CHECK: %y = transformer.select_rows %x rows [0, 16] {layer = 3 : i64, role = "select_rows"} : (tensor<2x17x64xf32>) -> tensor<2x2x64xf32>

