// RUN: esact-opt %s | esact-opt | filecheck %s
// Every kind of onnx op round-trips with its attributes, weight handles and locations.

builtin.module attributes {onnx.opset = 17 : i64} {
  func.func @main(%x: tensor<1x4x8xf32> {onnx.name = "x"} loc("x")) -> (tensor<1x4x8xf32> {onnx.name = "y"}, tensor<1x4x4xf32> {onnx.name = "z"}) {
    %w = onnx.weight "encoder.layer.0.weight" : tensor<8x8xf32> loc("encoder.layer.0.weight")
    %b = onnx.weight "encoder.layer.0.bias" : tensor<8xf32> loc("encoder.layer.0.bias")
    %mm = onnx.MatMul %x, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32> loc("/encoder/layer.0/MatMul")
    %add = onnx.Add %mm, %b : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32> loc("/encoder/layer.0/Add")
    %shape = onnx.Constant {value = dense<[1, 4, 2, 4]> : tensor<4xi64>} : () -> tensor<4xi64> loc("/Constant")
    %r = onnx.Reshape %add, %shape : (tensor<1x4x8xf32>, tensor<4xi64>) -> tensor<1x4x2x4xf32> loc("/Reshape")
    %t = onnx.Transpose %r {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x4x2x4xf32>) -> tensor<1x2x4x4xf32> loc("/Transpose")
    %sm = onnx.Softmax %t {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("/Softmax")
    %ln = onnx.LayerNormalization %add, %b, %b {axis = -1 : i64, epsilon = 9.999999960e-13 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32> loc("/LayerNorm")
    %g = onnx.Gelu %ln {approximate = "tanh"} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc("/Gelu")
    %s0, %s1 = onnx.Split %g {axis = 2 : i64, num_outputs = 2 : i64} : (tensor<1x4x8xf32>) -> (tensor<1x4x4xf32>, tensor<1x4x4xf32>) loc("/Split")
    %starts = onnx.Constant {value = dense<0> : tensor<1xi64>} : () -> tensor<1xi64> loc("/starts")
    %sl = onnx.Slice %s0, %starts, %starts, %starts {onnx_input_positions = array<i64: 0, 1, 2, 4>} : (tensor<1x4x4xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x4xf32> loc("/Slice")
    %c = onnx.Cast %sl {to = 1 : i64} : (tensor<1x4x4xf32>) -> tensor<1x4x4xf32> loc("/Cast")
    func.return %g, %c : tensor<1x4x8xf32>, tensor<1x4x4xf32>
  }
}

// CHECK:      builtin.module attributes {onnx.opset = 17 : i64} {
// CHECK-NEXT:   func.func @main(%x: tensor<1x4x8xf32> {onnx.name = "x"} loc("x")) -> (tensor<1x4x8xf32> {onnx.name = "y"}, tensor<1x4x4xf32> {onnx.name = "z"}) {
// CHECK-NEXT:     %w = onnx.weight "encoder.layer.0.weight" : tensor<8x8xf32> loc("encoder.layer.0.weight")
// CHECK-NEXT:     %b = onnx.weight "encoder.layer.0.bias" : tensor<8xf32> loc("encoder.layer.0.bias")
// CHECK-NEXT:     %mm = onnx.MatMul %x, %w : (tensor<1x4x8xf32>, tensor<8x8xf32>) -> tensor<1x4x8xf32> loc("/encoder/layer.0/MatMul")
// CHECK-NEXT:     %add = onnx.Add %mm, %b : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32> loc("/encoder/layer.0/Add")
// CHECK-NEXT:     %shape = onnx.Constant {value = dense<[1, 4, 2, 4]> : tensor<4xi64>} : () -> tensor<4xi64> loc("/Constant")
// CHECK-NEXT:     %r = onnx.Reshape %add, %shape : (tensor<1x4x8xf32>, tensor<4xi64>) -> tensor<1x4x2x4xf32> loc("/Reshape")
// CHECK-NEXT:     %t = onnx.Transpose %r {perm = array<i64: 0, 2, 1, 3>} : (tensor<1x4x2x4xf32>) -> tensor<1x2x4x4xf32> loc("/Transpose")
// CHECK-NEXT:     %sm = onnx.Softmax %t {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("/Softmax")
// CHECK-NEXT:     %ln = onnx.LayerNormalization %add, %b, %b {axis = -1 : i64, epsilon = 1.000000e-12 : f32} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32> loc("/LayerNorm")
// CHECK-NEXT:     %g = onnx.Gelu %ln {approximate = "tanh"} : (tensor<1x4x8xf32>) -> tensor<1x4x8xf32> loc("/Gelu")
// CHECK-NEXT:     %s0, %s1 = onnx.Split %g {axis = 2 : i64, num_outputs = 2 : i64} : (tensor<1x4x8xf32>) -> (tensor<1x4x4xf32>, tensor<1x4x4xf32>) loc("/Split")
// CHECK-NEXT:     %starts = onnx.Constant {value = dense<0> : tensor<1xi64>} : () -> tensor<1xi64> loc("/starts")
// CHECK-NEXT:     %sl = onnx.Slice %s0, %starts, %starts, %starts {onnx_input_positions = array<i64: 0, 1, 2, 4>} : (tensor<1x4x4xf32>, tensor<1xi64>, tensor<1xi64>, tensor<1xi64>) -> tensor<1x4x4xf32> loc("/Slice")
// CHECK-NEXT:     %c = onnx.Cast %sl {to = 1 : i64} : (tensor<1x4x4xf32>) -> tensor<1x4x4xf32> loc("/Cast")
// CHECK-NEXT:     func.return %g, %c : tensor<1x4x8xf32>, tensor<1x4x4xf32>
