// RUN: esact-opt %s -p 'lift-transformer{debug=true}' --no-print-debuginfo 2>&1 | filecheck %s
// With debug=true (esact-cc --debug-lift) every near miss is reported with the check that
// failed, and the candidate stays unlifted.

builtin.module {
  func.func @main(%q: tensor<1x2x4x4xf32>, %k: tensor<1x2x4x4xf32>, %v: tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> {
    %s = onnx.MatMul %q, %k : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("/attn/MatMul")
    %p = onnx.Softmax %s {axis = 2 : i64} : (tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("/attn/Softmax")
    %o = onnx.MatMul %p, %v : (tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32>) -> tensor<1x2x4x4xf32> loc("/attn/MatMul_1")
    func.return %o : tensor<1x2x4x4xf32>
  }
}

// CHECK-DAG: lift-transformer: near miss: attention at '/attn/Softmax': Softmax axis 2 is not the last axis
// CHECK-DAG: lift-transformer: near miss: softmax at '/attn/Softmax': Softmax axis 2 is not the last axis
// CHECK-DAG: lift-transformer: lifted nothing
// CHECK:     transformer.host(%q, %k, %v)
// CHECK:       onnx.Softmax %{{.*}} {axis = 2 : i64}
