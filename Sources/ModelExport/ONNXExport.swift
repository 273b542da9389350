import CNN
import Foundation
import ONNXSchema
import SwiftProtobuf
import UsageErrors

/// A layer that has no ONNX form here: which one, what it is, and why.
public struct ExportError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The layer's path in the model ("model.layers[3]", "model.layers[5].conv1").
    public var layer: String
    /// Its summary ("LocalResponseNorm(4)").
    public var summary: String
    public var reason: String

    public var description: String {
        "\(layer) (\(summary)) cannot be exported to ONNX: \(reason)"
    }
}

/// Asking to export a model with such a layer is bad usage (exit code 2).
extension ExportError: UsageFailure {}

/// `cnn export --onnx`: a network as an ONNX inference graph (opset 13): batch normalisation with
/// its running statistics, no dropout, weights as initialisers named as in the checkpoint
/// (`features.0.weight`). Input "input" [N, C, H, W] (or the model's own input dimensions),
/// output "logits" [N, classes].
///
/// Each layer kind the engine has is written as the ONNX operator that computes the same function
/// (convolutions, pools, activations, Gemm, BatchNormalization, LRN, residual Add, Concat); the
/// 1-D and 3-D convolutions and pools as their N-D forms; a locally connected layer from a one-hot
/// unfolding convolution and a batched MatMul. A kind this file does not know, or an option ONNX
/// cannot say, is an `ExportError` naming the layer.
public enum ONNXExport {
    /// The operator set the graph is written for.
    public static let opset = 13
    /// ONNX IR version 7 is the one that goes with opset 13.
    public static let irVersion = 7

    /// The model of `network` with the weights and running statistics it is bound to.
    public static func model(of network: Network, producerVersion: String) throws -> Onnx_ModelProto {
        var writer = LayerWriter(
            parameters: UnsafePointer(network.boundParameters), state: UnsafePointer(network.boundState))
        let input = network.inputShape
        var value = Value(name: "input", flat: false)
        for (index, layer) in network.layers.enumerated() {
            value = try writer.write(layer, input: value, path: "model.layers[\(index)]", prefix: network.layerNames[index])
        }
        // The logits are [N, classes] whatever the last layer's rank.
        value = writer.flattened(value, stem: "logits")
        var graph = writer.graph
        let output = graph.add("Identity", inputs: [value.name], output: "logits")

        var onnxGraph = Onnx_GraphProto()
        onnxGraph.name = "cnn"
        onnxGraph.node = graph.nodes
        onnxGraph.initializer = graph.initializers
        onnxGraph.input = [batchedValueInfo(name: "input", dimensions: input.dimensions)]
        onnxGraph.output = [batchedValueInfo(name: output, dimensions: [network.outputShape.count])]
        var opset = Onnx_OperatorSetIdProto()
        opset.domain = ""
        opset.version = Int64(Self.opset)
        var model = Onnx_ModelProto()
        model.irVersion = Int64(Self.irVersion)
        model.opsetImport = [opset]
        model.producerName = "cnn"
        model.producerVersion = producerVersion
        model.graph = onnxGraph
        return model
    }

    /// The serialised model, ready to be written to a `.onnx` file.
    public static func data(of network: Network, producerVersion: String) throws -> Foundation.Data {
        try model(of: network, producerVersion: producerVersion).serializedData()
    }
}

/// A value in the graph, and whether it is [N, features] (after Flatten or Gemm) or [N, C, H, W].
struct Value {
    var name: String
    var flat: Bool
}

/// Writes layers into an `ONNXGraph`, taking each layer's tensors from the flat buffers in the
/// order the network lays them out (a block's children in turn, a residual's path before its
/// projection, a concatenation's branches in order).
struct LayerWriter {
    var graph = ONNXGraph()
    private let parameters: UnsafePointer<Float>
    private let state: UnsafePointer<Float>
    private var parameterCursor = 0
    private var stateCursor = 0

    init(parameters: UnsafePointer<Float>, state: UnsafePointer<Float>) {
        self.parameters = parameters
        self.state = state
    }

    /// Writes `layer`, whose tensors are named "\(prefix).<tensor>", reading `input`.
    mutating func write(_ layer: Layer, input: Value, path: String, prefix: String) throws -> Value {
        switch layer {
        case let block as Sequential:
            var value = input
            for child in block.children {
                value = try write(child.layer, input: value, path: "\(path).\(child.name)", prefix: "\(prefix).\(child.name)")
            }
            return value
        case let residual as Residual:
            let main = try write(residual.path, input: input, path: path, prefix: prefix)
            let shortcut = try residual.projection.map { try write($0, input: input, path: path, prefix: prefix) } ?? input
            let sum = graph.add("Add", inputs: [spatial(main, layer: residual.path).name, spatial(shortcut, layer: residual.path).name],
                                output: prefix + ".add")
            let output = residual.reluAfterSum ? graph.add("Relu", inputs: [sum], output: prefix + ".relu") : sum
            return Value(name: output, flat: false)
        case let concatenation as Concatenation:
            let spatialInput = spatial(input, layer: concatenation)
            var outputs: [String] = []
            for branch in concatenation.branches {
                outputs.append(spatial(try write(branch, input: spatialInput, path: path, prefix: prefix), layer: branch).name)
            }
            return Value(name: graph.add("Concat", inputs: outputs, attributes: [ONNXAttribute.int("axis", 1)], output: prefix + ".concat"),
                         flat: false)
        default:
            let tensors = take(layer, prefix: prefix)
            return try writeLeaf(layer, input: input, tensors: tensors, path: path, prefix: prefix)
        }
    }

    /// The layer's own parameters then state, named and shaped as in the checkpoint, and moves
    /// the cursors past them.
    private mutating func take(_ layer: Layer, prefix: String) -> [String: (dims: [Int], values: UnsafeBufferPointer<Float>)] {
        var tensors: [String: (dims: [Int], values: UnsafeBufferPointer<Float>)] = [:]
        for spec in layer.parameterSpecs {
            tensors[spec.name] = (spec.shape, UnsafeBufferPointer(start: parameters + parameterCursor, count: spec.count))
            parameterCursor += spec.count
        }
        for spec in layer.stateSpecs {
            tensors[spec.name] = (spec.shape, UnsafeBufferPointer(start: state + stateCursor, count: spec.count))
            stateCursor += spec.count
        }
        return tensors
    }

    private mutating func writeLeaf(
        _ layer: Layer, input: Value, tensors: [String: (dims: [Int], values: UnsafeBufferPointer<Float>)], path: String, prefix: String
    ) throws -> Value {
        func initializer(_ tensor: String, dims: [Int]? = nil) -> String {
            let found = tensors[tensor]!
            return graph.addInitializer(name: "\(prefix).\(tensor)", dims: dims ?? found.dims, values: found.values)
        }
        func spatialNode(_ op: String, _ inputs: [String] = [], _ attributes: [Onnx_AttributeProto] = []) -> Value {
            let x = spatial(input, layer: layer).name
            return Value(name: graph.add(op, inputs: [x] + inputs, attributes: attributes, output: prefix), flat: false)
        }
        func elementwise(_ op: String, _ attributes: [Onnx_AttributeProto] = [], _ inputs: [String] = []) -> Value {
            Value(name: graph.add(op, inputs: [input.name] + inputs, attributes: attributes, output: prefix), flat: input.flat)
        }
        func windows(kernel: [Int], stride: Int, padding: Int) -> [Onnx_AttributeProto] {
            [ONNXAttribute.ints("kernel_shape", kernel), ONNXAttribute.ints("strides", [stride, stride]),
             ONNXAttribute.ints("pads", [padding, padding, padding, padding])]
        }

        switch layer {
        case let conv as Conv2D:
            return spatialNode("Conv", [initializer("weight")] + (conv.hasBias ? [initializer("bias")] : []),
                               windows(kernel: [conv.kernelHeight, conv.kernelWidth], stride: conv.stride, padding: conv.padding)
                                   + [ONNXAttribute.ints("dilations", [conv.dilation, conv.dilation]), ONNXAttribute.int("group", conv.groups)])
        case let conv as PointwiseConv2D:
            return spatialNode("Conv", [initializer("weight")], windows(kernel: [1, 1], stride: conv.stride, padding: 0))
        case let conv as ConvTranspose2D:
            return spatialNode("ConvTranspose", [initializer("weight")] + (conv.hasBias ? [initializer("bias")] : []),
                               windows(kernel: [conv.kernelHeight, conv.kernelWidth], stride: conv.stride, padding: conv.padding)
                                   + [ONNXAttribute.ints("dilations", [conv.dilation, conv.dilation]), ONNXAttribute.int("group", conv.groups),
                                      ONNXAttribute.ints("output_padding", [conv.outputPadding, conv.outputPadding])])
        case let pool as MaxPool2D:
            return spatialNode("MaxPool", [], windows(kernel: [pool.size, pool.size], stride: pool.stride, padding: pool.padding)
                                   + [ONNXAttribute.int("ceil_mode", pool.ceilMode ? 1 : 0)])
        case let pool as AvgPool2D:
            // Padding counts in the divisor, as PyTorch's default.
            return spatialNode("AveragePool", [], windows(kernel: [pool.size, pool.size], stride: pool.stride, padding: pool.padding)
                                   + [ONNXAttribute.int("count_include_pad", 1)])
        case let pool as L2Pool2D:
            return spatialNode("LpPool", [], windows(kernel: [pool.size, pool.size], stride: pool.stride, padding: 0) + [ONNXAttribute.int("p", 2)])
        case is GlobalAvgPool2D:
            return spatialNode("GlobalAveragePool")
        case let norm as LocalResponseNorm:
            // Both sum over [c - size/2, c + (size-1)/2] for an odd size; for an even one ONNX
            // centres the window one channel later than PyTorch (and this engine) do.
            guard norm.size % 2 == 1 else {
                throw ExportError(layer: path, summary: layer.summary,
                                  reason: "ONNX's LRN sums an even-sized window of channels [c - \(norm.size / 2 - 1), c + \(norm.size / 2)], "
                                      + "this layer [c - \(norm.size / 2), c + \(norm.size / 2 - 1)]; use an odd size")
            }
            return spatialNode("LRN", [], [ONNXAttribute.int("size", norm.size), ONNXAttribute.float("alpha", norm.alpha),
                                           ONNXAttribute.float("beta", norm.beta), ONNXAttribute.float("bias", norm.k)])
        case is ReLU:
            return elementwise("Relu")
        case let relu as LeakyReLU:
            return elementwise("LeakyRelu", [ONNXAttribute.float("alpha", relu.slope)])
        case let elu as ELU:
            return elementwise("Elu", [ONNXAttribute.float("alpha", elu.alpha)])
        case is Sigmoid:
            return elementwise("Sigmoid")
        case is Tanh:
            return elementwise("Tanh")
        case let prelu as PReLU:
            // The slope broadcasts over [N, C, H, W] as [C, 1, 1] (or [1]), over [N, C] as [C].
            let channels = tensors["weight"]!.dims[0]
            let dims = prelu.perChannel && !input.flat ? [channels, 1, 1] : [channels]
            return elementwise("PRelu", [], [initializer("weight", dims: dims)])
        case let norm as BatchNorm:
            // Inference: normalised with the running statistics (training_mode 0, the default).
            let channels = tensors["running_mean"]!.dims[0]
            let scale = norm.affine ? initializer("weight") : constant(1, name: "\(prefix).weight", count: channels)
            let shift = norm.affine ? initializer("bias") : constant(0, name: "\(prefix).bias", count: channels)
            return elementwise("BatchNormalization", [ONNXAttribute.float("epsilon", norm.epsilon)],
                               [scale, shift, initializer("running_mean"), initializer("running_var")])
        case let dense as Dense:
            let x = flattened(input, stem: prefix + ".flatten")
            return Value(name: graph.add("Gemm", inputs: [x.name, initializer("weight")] + (dense.hasBias ? [initializer("bias")] : []),
                                         attributes: [ONNXAttribute.int("transB", 1)], output: prefix), flat: true)
        case is Flatten:
            return flattened(input, stem: prefix)
        case let conv as ConvolutionND:
            return spatialNode("Conv", [initializer("weight")] + (conv.hasBias ? [initializer("bias")] : []),
                               [ONNXAttribute.ints("kernel_shape", conv.kernel), ONNXAttribute.ints("strides", conv.stride),
                                ONNXAttribute.ints("pads", conv.padding + conv.padding), ONNXAttribute.ints("dilations", conv.dilation),
                                ONNXAttribute.int("group", conv.groups)])
        case let pool as PoolingND:
            let rank = pool.inputShape.spatialRank
            let attributes = [ONNXAttribute.ints("kernel_shape", Array(repeating: pool.size, count: rank)),
                              ONNXAttribute.ints("strides", Array(repeating: pool.stride, count: rank)),
                              ONNXAttribute.ints("pads", Array(repeating: pool.padding, count: 2 * rank))]
            return pool.kind == .max ? spatialNode("MaxPool", [], attributes)
                : spatialNode("AveragePool", [], attributes + [ONNXAttribute.int("count_include_pad", 1)])
        case let local as LocallyConnected:
            return try writeLocallyConnected(local, input: spatial(input, layer: layer), tensors: tensors, prefix: prefix)
        case is Dropout:
            // An inference graph: dropout is the identity.
            return input
        default:
            throw ExportError(layer: path, summary: layer.summary,
                              reason: "the exporter does not know layer kind \(type(of: layer)); add it to ModelExport/ONNXExport.swift")
        }
    }

    /// A locally connected layer, which ONNX has no operator for, from operators it has: the
    /// patches unfolded by a convolution with one-hot filters (filter j copies input channel
    /// j / taps at tap j % taps, so patch entry j is channel-major then taps, as `F.unfold`), then
    /// each position's patch times its own filters as one batched MatMul over positions, plus the
    /// per-output bias. The weight keeps its checkpoint layout [P, K, J] and is transposed in the graph.
    private mutating func writeLocallyConnected(
        _ layer: LocallyConnected, input: Value, tensors: [String: (dims: [Int], values: UnsafeBufferPointer<Float>)], prefix: String
    ) throws -> Value {
        let channels = layer.inputShape.channels
        let taps = layer.kernel.reduce(1, *)
        let patch = channels * taps                                   // J
        let positions = layer.outputShape.spatialCount                // P
        var oneHot = [Float](repeating: 0, count: patch * patch)      // [J, C, k...]
        for j in 0..<patch { oneHot[j * patch + j] = 1 }
        let unfoldWeight = oneHot.withUnsafeBufferPointer {
            graph.addInitializer(name: "\(prefix).unfold", dims: [patch, channels] + layer.kernel, values: $0)
        }
        let patches = graph.add(
            "Conv", inputs: [input.name, unfoldWeight],
            attributes: [ONNXAttribute.ints("kernel_shape", layer.kernel), ONNXAttribute.ints("strides", layer.stride),
                         ONNXAttribute.ints("pads", layer.padding + layer.padding), ONNXAttribute.ints("dilations", layer.dilation)],
            output: prefix + ".patches")                               // [N, J, out spatial...]
        let flatShape = graph.addInitializer(name: prefix + ".patches.shape", int64: [0, Int64(patch), Int64(positions)])
        let columns = graph.add("Reshape", inputs: [patches, flatShape], output: prefix + ".columns")    // [N, J, P]
        let byPosition = graph.add("Transpose", inputs: [columns], attributes: [ONNXAttribute.ints("perm", [2, 0, 1])],
                                   output: prefix + ".by_position")                                       // [P, N, J]
        let weight = tensors["weight"]!
        let weightName = graph.addInitializer(name: "\(prefix).weight", dims: weight.dims, values: weight.values)    // [P, K, J]
        let filters = graph.add("Transpose", inputs: [weightName], attributes: [ONNXAttribute.ints("perm", [0, 2, 1])],
                                output: prefix + ".filters")                                               // [P, J, K]
        let products = graph.add("MatMul", inputs: [byPosition, filters], output: prefix + ".products")   // [P, N, K]
        let channelMajor = graph.add("Transpose", inputs: [products], attributes: [ONNXAttribute.ints("perm", [1, 2, 0])],
                                     output: prefix + ".channel_major")                                   // [N, K, P]
        let outputShape = graph.addInitializer(name: prefix + ".shape", int64: [-1] + layer.outputShape.dimensions.map(Int64.init))
        var output = graph.add("Reshape", inputs: [channelMajor, outputShape], output: prefix + ".unbiased")  // [N, K, out spatial...]
        if let bias = tensors["bias"] {
            let biasName = graph.addInitializer(name: "\(prefix).bias", dims: bias.dims, values: bias.values)  // [K, out spatial...]
            output = graph.add("Add", inputs: [output, biasName], output: prefix)
        }
        return Value(name: output, flat: false)
    }

    /// `value` as [N, features].
    mutating func flattened(_ value: Value, stem: String) -> Value {
        guard !value.flat else { return value }
        return Value(name: graph.add("Flatten", inputs: [value.name], attributes: [ONNXAttribute.int("axis", 1)], output: stem), flat: true)
    }

    /// `value` as [N, C, ...] for `layer`'s input shape (a [N, features] value is reshaped).
    private mutating func spatial(_ value: Value, layer: Layer) -> Value {
        guard value.flat else { return value }
        let target = graph.addInitializer(name: value.name + ".shape", int64: [-1] + layer.inputShape.dimensions.map(Int64.init))
        return Value(name: graph.add("Reshape", inputs: [value.name, target], output: value.name + ".reshaped"), flat: false)
    }

    /// A constant vector initialiser (a batch norm without learned scale and shift).
    private mutating func constant(_ value: Float, name: String, count: Int) -> String {
        [Float](repeating: value, count: count).withUnsafeBufferPointer { graph.addInitializer(name: name, dims: [count], values: $0) }
    }
}
