/// How a convolution pads its input.
public enum Padding: Sendable, Equatable {
    /// The same number of zero rows and columns on every side.
    case explicit(Int)
    /// Padding (F_eff - 1) / 2 on every side, which keeps the size at stride 1 (TensorFlow's SAME);
    /// it needs an odd effective kernel, and at stride > 1 the input must suit the stride.
    case same
    /// No padding.
    case valid
}

/// The options of a convolution layer, with PyTorch's defaults.
public struct ConvolutionSpec: Sendable, Equatable {
    public var filters: Int
    public var kernelHeight: Int
    public var kernelWidth: Int
    public var stride: Int = 1
    public var padding: Padding = .explicit(0)
    public var dilation: Int = 1
    public var groups: Int = 1
    public var bias: Bool = true

    public init(filters: Int, kernel: Int, stride: Int = 1, padding: Padding = .explicit(0),
                dilation: Int = 1, groups: Int = 1, bias: Bool = true) {
        self.filters = filters
        self.kernelHeight = kernel
        self.kernelWidth = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.bias = bias
    }
}

/// One layer of a model as written in a config, before shapes are known.
public enum LayerSpec: Sendable, Equatable {
    case convolution(ConvolutionSpec)
    case maxPool(size: Int, stride: Int?, padding: Int)
    case relu
    case flatten
    case dense(units: Int, bias: Bool)

    /// Builds the layer for a given input shape; `name` is used in errors ("model.layers[3]").
    public func makeLayer(input: FeatureShape, name: String) throws -> Layer {
        switch self {
        case .convolution(let spec):
            let padding: Int
            switch spec.padding {
            case .explicit(let p): padding = p
            case .valid: padding = 0
            case .same:
                let effective = spec.dilation * (spec.kernelHeight - 1) + 1
                guard effective % 2 == 1, spec.kernelHeight == spec.kernelWidth else {
                    throw ModelError(
                        layer: name,
                        message: "padding SAME needs an odd square kernel (effective size \(effective)); give an explicit padding instead")
                }
                padding = (effective - 1) / 2
            }
            return try Conv2D(
                input: input, filters: spec.filters, kernelHeight: spec.kernelHeight, kernelWidth: spec.kernelWidth,
                stride: spec.stride, padding: padding, dilation: spec.dilation, groups: spec.groups, bias: spec.bias,
                name: name)
        case .maxPool(let size, let stride, let padding):
            return try MaxPool2D(input: input, size: size, stride: stride, padding: padding, name: name)
        case .relu:
            return ReLU(input: input)
        case .flatten:
            return Flatten(input: input)
        case .dense(let units, let bias):
            return try Dense(input: input, units: units, bias: bias, name: name)
        }
    }
}

/// A whole model: the shape of one input sample and the layers in order. The last layer's
/// output are the logits fed to softmax cross-entropy.
public struct ModelSpec: Sendable, Equatable {
    public var input: FeatureShape
    public var layers: [LayerSpec]

    public init(input: FeatureShape, layers: [LayerSpec]) {
        self.input = input
        self.layers = layers
    }
}
