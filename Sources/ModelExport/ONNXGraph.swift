import Foundation
import ONNXSchema

/// The nodes and initialisers of an ONNX graph as they are written, with fresh value names.
/// Knows ONNX's messages, nothing of layers.
struct ONNXGraph {
    private(set) var nodes: [Onnx_NodeProto] = []
    private(set) var initializers: [Onnx_TensorProto] = []
    private var used: Set<String> = []

    /// A value name not used before, from a readable stem ("layer1.0.conv1" -> "layer1.0.conv1",
    /// then "layer1.0.conv1_1").
    mutating func freshName(_ stem: String) -> String {
        var name = stem
        var suffix = 1
        while used.contains(name) {
            name = "\(stem)_\(suffix)"
            suffix += 1
        }
        used.insert(name)
        return name
    }

    /// Adds a node of `operator` and returns the name of its one output.
    mutating func add(_ operator: String, inputs: [String], attributes: [Onnx_AttributeProto] = [], output stem: String) -> String {
        let output = freshName(stem)
        var node = Onnx_NodeProto()
        node.opType = `operator`
        node.name = freshName("\(stem)/\(`operator`)")
        node.input = inputs
        node.output = [output]
        node.attribute = attributes
        nodes.append(node)
        return output
    }

    /// Adds a Float32 constant tensor and returns its name (the given one, kept as written so that
    /// the file's weights carry the checkpoint's tensor names).
    mutating func addInitializer(name: String, dims: [Int], values: UnsafeBufferPointer<Float>) -> String {
        let unique = freshName(name)
        var tensor = Onnx_TensorProto()
        tensor.name = unique
        tensor.dims = dims.map(Int64.init)
        tensor.dataType = Int32(Onnx_TensorProto.DataType.float.rawValue)
        // raw_data is little-endian, as Float is in memory on every platform this builds for.
        tensor.rawData = Data(buffer: values)
        initializers.append(tensor)
        return unique
    }

    /// Adds an Int64 constant tensor (a Reshape's target shape) and returns its name.
    mutating func addInitializer(name: String, int64 values: [Int64]) -> String {
        let unique = freshName(name)
        var tensor = Onnx_TensorProto()
        tensor.name = unique
        tensor.dims = [Int64(values.count)]
        tensor.dataType = Int32(Onnx_TensorProto.DataType.int64.rawValue)
        tensor.rawData = values.withUnsafeBufferPointer { Data(buffer: $0) }
        initializers.append(tensor)
        return unique
    }
}

/// Attribute constructors.
enum ONNXAttribute {
    static func int(_ name: String, _ value: Int) -> Onnx_AttributeProto {
        var attribute = Onnx_AttributeProto()
        attribute.name = name
        attribute.type = .int
        attribute.i = Int64(value)
        return attribute
    }

    static func ints(_ name: String, _ values: [Int]) -> Onnx_AttributeProto {
        var attribute = Onnx_AttributeProto()
        attribute.name = name
        attribute.type = .ints
        attribute.ints = values.map(Int64.init)
        return attribute
    }

    static func float(_ name: String, _ value: Float) -> Onnx_AttributeProto {
        var attribute = Onnx_AttributeProto()
        attribute.name = name
        attribute.type = .float
        attribute.f = value
        return attribute
    }
}

/// A graph input or output: a Float32 tensor whose first dimension is the batch ("N").
func batchedValueInfo(name: String, dimensions: [Int]) -> Onnx_ValueInfoProto {
    var shape = Onnx_TensorShapeProto()
    var batch = Onnx_TensorShapeProto.Dimension()
    batch.dimParam = "N"
    shape.dim = [batch] + dimensions.map { size in
        var dimension = Onnx_TensorShapeProto.Dimension()
        dimension.dimValue = Int64(size)
        return dimension
    }
    var tensorType = Onnx_TypeProto.Tensor()
    tensorType.elemType = Int32(Onnx_TensorProto.DataType.float.rawValue)
    tensorType.shape = shape
    var type = Onnx_TypeProto()
    type.tensorType = tensorType
    var info = Onnx_ValueInfoProto()
    info.name = name
    info.type = type
    return info
}
