// RUN: esact-opt %s -p 'lift-transformer{debug=true}' --no-print-debuginfo 2>&1 | filecheck %s
// A content-dependent term on the scores that is not a disentangled position term (here its
// gather index is an input, not constant relative-position buckets) keeps the attention on the
// host with one near-miss line naming the node that differs.

builtin.module {
  func.func @main(%q: tensor<2x4x4xf32>, %k: tensor<2x4x4xf32>, %v: tensor<2x4x4xf32>, %t: tensor<2x4x6xf32>, %idx: tensor<2x4x4xi64>) -> tensor<2x4x4xf32> {
    %kt = onnx.Transpose %k {perm = array<i64: 0, 2, 1>} : (tensor<2x4x4xf32>) -> tensor<2x4x4xf32> loc("/attn/Transpose")
    %s = onnx.MatMul %q, %kt : (tensor<2x4x4xf32>, tensor<2x4x4xf32>) -> tensor<2x4x4xf32> loc("/attn/MatMul")
    %c = onnx.MatMul %q, %t : (tensor<2x4x4xf32>, tensor<2x4x6xf32>) -> tensor<2x4x6xf32> loc("/attn/MatMul_c2p")
    %g = onnx.GatherElements %c, %idx {axis = -1 : i64} : (tensor<2x4x6xf32>, tensor<2x4x4xi64>) -> tensor<2x4x4xf32> loc("/attn/GatherElements")
    %sum = onnx.Add %s, %g : (tensor<2x4x4xf32>, tensor<2x4x4xf32>) -> tensor<2x4x4xf32> loc("/attn/Add")
    %shape4 = onnx.Constant {value = dense<[1, 2, 4, 4]> : tensor<4xi64>} : () -> tensor<4xi64> loc("/attn/Constant")
    %s4 = onnx.Reshape %sum, %shape4 : (tensor<2x4x4xf32>, tensor<4xi64>) -> tensor<1x2x4x4xf32> loc("/attn/Reshape")
    %p = onnx.Softmax %s4 {axis = -1 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("/attn/Softmax")
    %shape3 = onnx.Constant {value = dense<[2, 4, 4]> : tensor<3xi64>} : () -> tensor<3xi64> loc("/attn/Constant_1")
    %p3 = onnx.Reshape %p, %shape3 : (tensor<1x2x4x4xf32>, tensor<3xi64>) -> tensor<2x4x4xf32> loc("/attn/Reshape_1")
    %o = onnx.MatMul %p3, %v : (tensor<2x4x4xf32>, tensor<2x4x4xf32>) -> tensor<2x4x4xf32> loc("/attn/MatMul_1")
    func.return %o : tensor<2x4x4xf32>
  }
}

// CHECK: lift-transformer: near miss: attention at '/attn/Softmax': the scores add a term computed from activations by /attn/MatMul_c2p that is not a disentangled position term (a GatherElements of a MatMul by a constant position table): /attn/GatherElements's index is not a constant
// CHECK-NOT: transformer.attention
// CHECK: onnx.GatherElements
