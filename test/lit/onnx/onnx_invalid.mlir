// RUN: esact-opt %s --split-input-file --verify-diagnostics | filecheck %s
// One chunk per error the onnx dialect verifier reports.

builtin.module {
  %0 = onnx.Constant {value = dense<[1, 2]> : tensor<2xi64>} : () -> tensor<3xi64>
}

// CHECK: Operation does not verify: onnx.Constant value has type tensor<2xi64>, result must have the same type

// -----
builtin.module {
  %0 = onnx.Constant : () -> tensor<3xi64>
}

// CHECK: Operation does not verify: onnx.Constant needs a dense `value` attribute

// -----
builtin.module {
  %c = onnx.Constant {value = dense<0> : tensor<1xi64>} : () -> tensor<1xi64>
  %0 = onnx.Slice %c, %c {onnx_input_positions = array<i64: 0, 2, 3>} : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64>
}

// CHECK: Operation does not verify: onnx_input_positions has 3 entries for 2 values

// -----
builtin.module {
  %c = onnx.Constant {value = dense<0> : tensor<1xi64>} : () -> tensor<1xi64>
  %0 = onnx.Slice %c, %c {onnx_input_positions = array<i64: 2, 1>} : (tensor<1xi64>, tensor<1xi64>) -> tensor<1xi64>
}

// CHECK: Operation does not verify: onnx_input_positions must be strictly increasing and non-negative

// -----
builtin.module {
  %0 = onnx.weight "w" : i32
}

// CHECK: i32 should be of base attribute tensor
