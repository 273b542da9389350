import CNN

/// A model whose dense layers are rewritten as the convolutions they equal, so that it slides over
/// images larger than it was trained on in one pass (CS231n's "converting FC layers to CONV
/// layers"): a dense layer on a C x H x W volume becomes an H x W convolution with as many filters
/// as it had units, and dense layers on vectors become 1 x 1 convolutions. The flatten before the
/// first one goes. The weights need no change but their shape: a dense weight [units, C*H*W] in
/// PyTorch's channel-major flatten order is, value for value, the convolution weight
/// [units, C, H, W].
///
/// At the training size the converted model computes the same function (up to Float rounding: the
/// sums run in another order). On an image larger by k strides of the network along each side it
/// gives a (k + 1) x (k + 1) grid of class scores, cell (i, j) being the original model's scores on
/// the crop at (i, j) times the stride, exactly so when no convolution pads (with padding, a crop's
/// border sees zeros where the larger image has pixels).
public struct FullyConvolutionalModel: Sendable, Equatable {
    /// The converted model, at the original input size.
    public let model: ModelSpec
    /// For each top-level layer of the converted model, the index of the layer of the original
    /// model it came from (tensor names start with that index).
    public let originalIndex: [Int]

    /// Converts `original`'s dense layers, or says why it cannot.
    public init(converting original: ModelSpec) throws {
        var layers: [LayerSpec] = []
        var origins: [Int] = []
        var shape = original.input
        /// Whether a flatten was dropped and its dense layer not yet met.
        var flattened = false
        var converted = 0
        for (index, layer) in original.layers.enumerated() {
            let name = "model.layers[\(index)]"
            var replacement = layer
            switch layer {
            case .flatten:
                guard shape.spatialRank == 2 else {
                    throw ModelError(layer: name, message: "only image models ([C, H, W] inputs) can be made fully convolutional; this flatten sees \(shape)")
                }
                flattened = true
                continue
            case .dense(let units, let bias):
                // A dense layer on C x H x W (after a flatten, or flattening itself) is an H x W convolution.
                var spec = ConvolutionSpec(filters: units, kernel: shape.height, bias: bias)
                spec.kernelWidth = shape.width
                replacement = .convolution(spec)
                flattened = false
                converted += 1
            case .relu, .leakyReLU, .elu, .sigmoid, .tanh, .dropout:
                break
            default:
                if flattened && shape.spatialCount > 1 {
                    throw ModelError(
                        layer: name,
                        message: "a flatten of \(shape) is followed by \(ModelConfig.render(layer)) before a dense layer; "
                            + "only element-wise layers (relu, dropout, ...) may stand between them for the dense layer to become a convolution")
                }
                if case .prelu(true, _) = layer, flattened {
                    throw ModelError(layer: name, message: "a per-channel PReLU on flattened features cannot follow the dense layers into convolutions")
                }
            }
            let built = try replacement.makeLayer(input: shape, name: name)
            shape = built.outputShape
            layers.append(replacement)
            origins.append(index)
        }
        guard converted > 0 else {
            throw ModelError(layer: "model", message: "the model has no dense layer; it is already fully convolutional")
        }
        model = ModelSpec(input: original.input, layers: layers)
        originalIndex = origins
    }

    /// The original model's name of a tensor of the converted model: "5.weight" -> "6.weight"
    /// when the flatten at 5 was dropped.
    public func originalName(of name: String) -> String {
        guard let dot = name.firstIndex(of: "."), let index = Int(name[..<dot]), index < originalIndex.count else { return name }
        return "\(originalIndex[index])" + name[dot...]
    }

    /// The converted model taking `height` x `width` images.
    public func model(height: Int, width: Int) -> ModelSpec {
        var resized = model
        resized.input.height = height
        resized.input.width = width
        return resized
    }
}
