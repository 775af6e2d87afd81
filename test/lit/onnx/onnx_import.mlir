// RUN: python %S/Inputs/make_matmul_softmax.py %t.onnx
// RUN: esact-opt %t.onnx --input-shape x=1x3x4 | filecheck %s
// RUN: not esact-opt %t.onnx 2>&1 | filecheck %s --check-prefix=DYNAMIC
// `.onnx` input: one op per node with node-name locations, weights as handles, Shape folded.

// CHECK:      builtin.module attributes {onnx.opset = 17 : i64} {
// CHECK-NEXT:   func.func @main(%x: tensor<1x3x4xf32> {onnx.name = "x"} loc("x")) -> (tensor<1x3x4xf32> {onnx.name = "y"}) {
// CHECK-NEXT:     %0 = onnx.weight "proj.weight" : tensor<4x4xf32> loc("proj.weight")
// CHECK-NEXT:     %1 = onnx.MatMul %x, %0 : (tensor<1x3x4xf32>, tensor<4x4xf32>) -> tensor<1x3x4xf32> loc("/proj/MatMul")
// CHECK-NEXT:     %2 = onnx.Constant {value = dense<[1, 3, 4]> : tensor<3xi64>} : () -> tensor<3xi64> loc("/Shape")
// CHECK-NEXT:     %3 = onnx.Reshape %1, %2 : (tensor<1x3x4xf32>, tensor<3xi64>) -> tensor<1x3x4xf32> loc("/Reshape")
// CHECK-NEXT:     %4 = onnx.Softmax %3 {axis = -1 : i64} : (tensor<1x3x4xf32>) -> tensor<1x3x4xf32> loc("/Softmax")
// CHECK-NEXT:     func.return %4 : tensor<1x3x4xf32>

// DYNAMIC: error: input 'x' dim 1 ('seq') is dynamic: give its size with --input-shape x=1xNx4
