/// How a convolution pads its input.
public enum Padding: Sendable, Equatable {
    /// The same number of zero rows and columns on every side.
    case explicit(Int)
    /// Padding (F_eff - 1) / 2 on every side, which keeps the size at stride 1 (TensorFlow's SAME);
    /// it needs an odd effective kernel, and at stride > 1 the input must suit the stride.
    case same
    /// No padding.
    case valid

    /// The padding in rows and columns for a square kernel of `kernel` taps spaced `dilation` apart.
    func resolved(kernelHeight: Int, kernelWidth: Int, dilation: Int, layer name: String) throws -> Int {
        switch self {
        case .explicit(let p): return p
        case .valid: return 0
        case .same:
            let effective = dilation * (kernelHeight - 1) + 1
            guard effective % 2 == 1, kernelHeight == kernelWidth else {
                throw ModelError(
                    layer: name,
                    message: "padding SAME needs an odd square kernel (effective size \(effective)); give an explicit padding instead")
            }
            return (effective - 1) / 2
        }
    }
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

/// The options of a 1-D or 3-D convolution (PyTorch's `nn.Conv1d` and `nn.Conv3d`, with their
/// defaults): the kernel is one size for every axis or one per axis; stride, padding and dilation
/// are the same on every axis.
public struct VolumeConvolutionSpec: Sendable, Equatable {
    /// 1 (inputs [C, L]) or 3 (inputs [C, D, H, W]).
    public var rank: Int
    public var filters: Int
    /// One size, or one per spatial axis.
    public var kernel: [Int]
    public var stride: Int = 1
    public var padding: Padding = .explicit(0)
    public var dilation: Int = 1
    public var groups: Int = 1
    public var bias: Bool = true

    public init(rank: Int, filters: Int, kernel: [Int], stride: Int = 1, padding: Padding = .explicit(0),
                dilation: Int = 1, groups: Int = 1, bias: Bool = true) {
        self.rank = rank
        self.filters = filters
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.bias = bias
    }
}

/// The options of a locally connected layer (`LocallyConnected`): a convolution's windows with
/// filters of their own at every output position. For inputs of any spatial rank.
public struct LocallyConnectedSpec: Sendable, Equatable {
    public var filters: Int
    /// One size, or one per spatial axis.
    public var kernel: [Int]
    public var stride: Int = 1
    public var padding: Padding = .explicit(0)
    public var dilation: Int = 1
    public var bias: Bool = true

    public init(filters: Int, kernel: [Int], stride: Int = 1, padding: Padding = .explicit(0), dilation: Int = 1, bias: Bool = true) {
        self.filters = filters
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.bias = bias
    }
}

extension Padding {
    /// The padding on each of `kernel.count` axes, for taps spaced `dilation` apart.
    func resolved(kernel: [Int], dilation: Int, layer name: String) throws -> [Int] {
        switch self {
        case .explicit(let p): return Array(repeating: p, count: kernel.count)
        case .valid: return Array(repeating: 0, count: kernel.count)
        case .same:
            return try kernel.map { size in
                let effective = dilation * (size - 1) + 1
                guard effective % 2 == 1 else {
                    throw ModelError(
                        layer: name,
                        message: "padding SAME needs an odd kernel on every axis (effective size \(effective)); give an explicit padding instead")
                }
                return (effective - 1) / 2
            }
        }
    }
}

/// The per-axis kernel sizes of a layer over `input`: one size repeated, or one per spatial axis.
func perAxisKernel(_ kernel: [Int], input: FeatureShape, layer name: String) throws -> [Int] {
    let rank = input.spatialRank
    if kernel.count == 1 { return Array(repeating: kernel[0], count: rank) }
    guard kernel.count == rank else {
        throw ModelError(layer: name, message: "kernel \(kernel) needs one size or \(rank) (one per spatial axis of the input \(input))")
    }
    return kernel
}

/// The options of a transposed convolution (PyTorch's `nn.ConvTranspose2d`, with its defaults).
public struct TransposedConvolutionSpec: Sendable, Equatable {
    public var filters: Int
    public var kernelHeight: Int
    public var kernelWidth: Int
    public var stride: Int = 1
    /// Rows and columns removed from each side of the full output.
    public var padding: Int = 0
    /// Rows and columns added at the bottom and right, to pick among the sizes that a strided
    /// convolution maps to the same input size; smaller than the stride or the dilation.
    public var outputPadding: Int = 0
    public var dilation: Int = 1
    public var groups: Int = 1
    public var bias: Bool = true

    public init(filters: Int, kernel: Int, stride: Int = 1, padding: Int = 0, outputPadding: Int = 0,
                dilation: Int = 1, groups: Int = 1, bias: Bool = true) {
        self.filters = filters
        self.kernelHeight = kernel
        self.kernelWidth = kernel
        self.stride = stride
        self.padding = padding
        self.outputPadding = outputPadding
        self.dilation = dilation
        self.groups = groups
        self.bias = bias
    }
}

/// A separable convolution: a depthwise convolution (`depthMultiplier` filters per input channel,
/// no bias) followed by a 1x1 pointwise convolution to `filters` channels, as Keras'
/// `SeparableConv2D` and MobileNet build it. Its tensors are `depthwise.weight`,
/// `pointwise.weight` and `pointwise.bias`.
public struct SeparableConvolutionSpec: Sendable, Equatable {
    public var filters: Int
    public var kernel: Int
    public var stride: Int = 1
    public var padding: Padding = .explicit(0)
    public var dilation: Int = 1
    public var depthMultiplier: Int = 1
    /// Whether the pointwise convolution has a bias.
    public var bias: Bool = true

    public init(filters: Int, kernel: Int, stride: Int = 1, padding: Padding = .explicit(0), dilation: Int = 1,
                depthMultiplier: Int = 1, bias: Bool = true) {
        self.filters = filters
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.depthMultiplier = depthMultiplier
        self.bias = bias
    }
}

/// Batch normalisation's options, with PyTorch's defaults.
public struct BatchNormSpec: Sendable, Equatable {
    public var epsilon: Double = 1e-5
    /// Weight of the newest batch in the running averages; nil averages all batches equally
    /// (PyTorch's `momentum=None`).
    public var momentum: Double? = 0.1
    /// Whether the layer learns a per-channel scale (`weight`) and shift (`bias`).
    public var affine: Bool = true

    public init(epsilon: Double = 1e-5, momentum: Double? = 0.1, affine: Bool = true) {
        self.epsilon = epsilon
        self.momentum = momentum
        self.affine = affine
    }
}

/// Local response normalisation across channels in PyTorch's convention:
/// b_c = a_c / (k + alpha / size * sum of a_j^2 over the `size` channels around c)^beta.
/// AlexNet's paper writes alpha without the division by size, so its alpha = 1e-4 with size 5
/// is this layer's alpha = 5e-4.
public struct LocalResponseNormSpec: Sendable, Equatable {
    public var size: Int
    public var alpha: Double = 1e-4
    public var beta: Double = 0.75
    public var k: Double = 1

    public init(size: Int, alpha: Double = 1e-4, beta: Double = 0.75, k: Double = 1) {
        self.size = size
        self.alpha = alpha
        self.beta = beta
        self.k = k
    }
}

/// When a residual block's shortcut is a projection (1x1 convolution with stride, then batch
/// normalisation) instead of the identity.
public enum Projection: String, Sendable, Equatable, CaseIterable {
    /// A projection exactly when the identity cannot be added: the shapes (for blocks: the
    /// channels or the stride) change.
    case auto
    /// Always a projection.
    case always
    /// Always the identity; a block that changes the shape is an error.
    case never
}

/// A residual block around any path: output = path(x) + shortcut(x), optionally followed by ReLU.
/// Path tensors are named `layers.<i>.<tensor>`, the projection's `downsample.0` (convolution)
/// and `downsample.1` (batch norm), as a PyTorch module holding `layers = nn.Sequential(...)` and
/// `downsample = nn.Sequential(conv1x1, bn)` would name them.
public struct ResidualSpec: Sendable, Equatable {
    public var layers: [LayerSpec]
    public var projection: Projection = .auto
    /// Whether a ReLU follows the sum (as in every ResNet block).
    public var reluAfterSum: Bool = false

    public init(layers: [LayerSpec], projection: Projection = .auto, reluAfterSum: Bool = false) {
        self.layers = layers
        self.projection = projection
        self.reluAfterSum = reluAfterSum
    }
}

/// One layer of a model as written in a config, before shapes are known.
public enum LayerSpec: Sendable, Equatable {
    case convolution(ConvolutionSpec)
    /// Upsampling convolution; weight [C_in, filters / groups, kh, kw] as in PyTorch.
    case transposedConvolution(TransposedConvolutionSpec)
    case separableConvolution(SeparableConvolutionSpec)
    case maxPool(size: Int, stride: Int?, padding: Int)
    /// Average pooling; padding counts as zeros in the average (PyTorch's `count_include_pad`).
    case averagePool(size: Int, stride: Int?, padding: Int)
    /// sqrt(sum of squares) over each window (PyTorch's `LPPool2d(2, ...)`).
    case l2Pool(size: Int, stride: Int?)
    /// The mean of each channel: C x H x W -> C x 1 x 1.
    case globalAveragePool
    case relu
    /// x for x > 0, slope * x otherwise.
    case leakyReLU(slope: Double)
    /// Leaky ReLU with a learned slope (`weight`), one for all channels or one per channel.
    case prelu(perChannel: Bool, initial: Double)
    /// x for x > 0, alpha * (exp(x) - 1) otherwise.
    case elu(alpha: Double)
    case sigmoid
    case tanh
    case flatten
    case dense(units: Int, bias: Bool)
    /// Batch normalisation over (N, H, W) per channel; over N per feature for C x 1 x 1 inputs.
    case batchNorm(BatchNormSpec)
    /// Zeroes each value with this probability in training and scales the rest by 1 / (1 - p).
    case dropout(probability: Double)
    /// Zeroes whole channels of a sample with this probability in training (PyTorch's `Dropout2d`).
    case spatialDropout(probability: Double)
    case localResponseNorm(LocalResponseNormSpec)
    case residual(ResidualSpec)
    /// torchvision's `BasicBlock`: conv3x3(stride) BN ReLU conv3x3 BN, plus shortcut, then ReLU.
    case basicBlock(filters: Int, stride: Int, projection: Projection)
    /// torchvision's `Bottleneck`: conv1x1 BN ReLU conv3x3(stride) BN ReLU conv1x1(filters * expansion)
    /// BN, plus shortcut, then ReLU.
    case bottleneck(filters: Int, stride: Int, expansion: Int, projection: Projection)
    /// 1-D or 3-D convolution.
    case volumeConvolution(VolumeConvolutionSpec)
    /// 1-D or 3-D max or average pooling (PyTorch's `MaxPool1d/3d`, `AvgPool1d/3d`).
    case volumePool(rank: Int, kind: PoolingND.Kind, size: Int, stride: Int?, padding: Int)
    /// Convolution's windows without parameter sharing.
    case locallyConnected(LocallyConnectedSpec)
    /// Parallel branches on the same input, their outputs concatenated along channels (inception).
    /// Branch b's tensors are named `branch<b+1>.<i>.<tensor>`.
    case concat(branches: [[LayerSpec]])

    /// Builds the layer for a given input shape. `name` is its path in the model ("model.layers[3]",
    /// "model.layers[3].residual.layers[0]", "model.layers[5].conv1"): errors cite it, and layers
    /// that draw random numbers (dropout) derive their key from it, so a layer's randomness
    /// depends only on where it sits in the model.
    public func makeLayer(input: FeatureShape, name: String) throws -> Layer {
        try checkSpatialRank(of: input, name: name)
        switch self {
        case .convolution(let spec):
            let padding = try spec.padding.resolved(
                kernelHeight: spec.kernelHeight, kernelWidth: spec.kernelWidth, dilation: spec.dilation, layer: name)
            return try Conv2D(
                input: input, filters: spec.filters, kernelHeight: spec.kernelHeight, kernelWidth: spec.kernelWidth,
                stride: spec.stride, padding: padding, dilation: spec.dilation, groups: spec.groups, bias: spec.bias,
                name: name)
        case .transposedConvolution(let spec):
            return try ConvTranspose2D(input: input, spec: spec, name: name)
        case .separableConvolution(let spec):
            return try makeSeparableConvolution(input: input, spec: spec, name: name)
        case .maxPool(let size, let stride, let padding):
            return try MaxPool2D(input: input, size: size, stride: stride, padding: padding, name: name)
        case .averagePool(let size, let stride, let padding):
            return try AvgPool2D(input: input, size: size, stride: stride, padding: padding, name: name)
        case .l2Pool(let size, let stride):
            return try L2Pool2D(input: input, size: size, stride: stride, name: name)
        case .globalAveragePool:
            return GlobalAvgPool2D(input: input)
        case .relu:
            return ReLU(input: input)
        case .leakyReLU(let slope):
            return LeakyReLU(input: input, slope: Float(slope))
        case .prelu(let perChannel, let initial):
            return PReLU(input: input, perChannel: perChannel, initial: Float(initial))
        case .elu(let alpha):
            return try ELU(input: input, alpha: Float(alpha), name: name)
        case .sigmoid:
            return Sigmoid(input: input)
        case .tanh:
            return Tanh(input: input)
        case .flatten:
            return Flatten(input: input)
        case .dense(let units, let bias):
            return try Dense(input: input, units: units, bias: bias, name: name)
        case .batchNorm(let spec):
            return try BatchNorm(input: input, spec: spec, name: name)
        case .dropout(let probability):
            return try Dropout(input: input, probability: probability, spatial: false, key: Dropout.key(for: name), name: name)
        case .spatialDropout(let probability):
            return try Dropout(input: input, probability: probability, spatial: true, key: Dropout.key(for: name), name: name)
        case .localResponseNorm(let spec):
            return try LocalResponseNorm(input: input, spec: spec, name: name)
        case .residual(let spec):
            return try Residual.make(input: input, spec: spec, name: name)
        case .basicBlock(let filters, let stride, let projection):
            return try Residual.basicBlock(input: input, filters: filters, stride: stride, projection: projection, name: name)
        case .bottleneck(let filters, let stride, let expansion, let projection):
            return try Residual.bottleneck(
                input: input, filters: filters, stride: stride, expansion: expansion, projection: projection, name: name)
        case .concat(let branches):
            return try Concatenation.make(input: input, branches: branches, name: name)
        case .volumeConvolution(let spec):
            let kernel = try perAxisKernel(spec.kernel, input: input, layer: name)
            let rank = kernel.count
            return try ConvolutionND(
                input: input, filters: spec.filters, kernel: kernel, stride: Array(repeating: spec.stride, count: rank),
                padding: try spec.padding.resolved(kernel: kernel, dilation: spec.dilation, layer: name),
                dilation: Array(repeating: spec.dilation, count: rank), groups: spec.groups, bias: spec.bias, name: name)
        case .volumePool(_, let kind, let size, let stride, let padding):
            return try PoolingND(input: input, kind: kind, size: size, stride: stride, padding: padding, name: name)
        case .locallyConnected(let spec):
            let kernel = try perAxisKernel(spec.kernel, input: input, layer: name)
            let rank = kernel.count
            return try LocallyConnected(
                input: input, filters: spec.filters, kernel: kernel, stride: Array(repeating: spec.stride, count: rank),
                padding: try spec.padding.resolved(kernel: kernel, dilation: spec.dilation, layer: name),
                dilation: Array(repeating: spec.dilation, count: rank), bias: spec.bias, name: name)
        }
    }

    /// The layer's kind as written in a config, and the spatial rank of the inputs it takes (nil
    /// for any rank).
    private var expectedSpatialRank: (kind: String, rank: Int)? {
        switch self {
        case .convolution: return ("conv", 2)
        case .transposedConvolution: return ("convtranspose", 2)
        case .separableConvolution: return ("separable", 2)
        case .maxPool: return ("maxpool", 2)
        case .averagePool: return ("avgpool", 2)
        case .l2Pool: return ("l2pool", 2)
        case .basicBlock: return ("basic_block", 2)
        case .bottleneck: return ("bottleneck", 2)
        case .volumeConvolution(let spec): return ("conv\(spec.rank)d", spec.rank)
        case .volumePool(let rank, let kind, _, _, _): return ((kind == .max ? "maxpool" : "avgpool") + "\(rank)d", rank)
        default: return nil
        }
    }

    /// A sequence given to an image layer (or the other way round) is an error naming both shapes
    /// and the layer that fits.
    private func checkSpatialRank(of input: FeatureShape, name: String) throws {
        guard let (kind, rank) = expectedSpatialRank, input.spatialRank != rank else { return }
        let forms = [1: "[C, L] (a sequence)", 2: "[C, H, W] (an image)", 3: "[C, D, H, W] (a volume)"]
        var message = "\(kind) takes inputs \(forms[rank]!), but its input is \(input), of the form \(forms[input.spatialRank]!)"
        let base = kind.hasSuffix("1d") || kind.hasSuffix("3d") ? String(kind.dropLast(2)) : kind
        if ["conv", "maxpool", "avgpool"].contains(base) {
            message += "; use \(base)\(input.spatialRank == 2 ? "" : "\(input.spatialRank)d")"
        }
        throw ModelError(layer: name, message: message)
    }

    private func makeSeparableConvolution(input: FeatureShape, spec: SeparableConvolutionSpec, name: String) throws -> Layer {
        guard spec.depthMultiplier >= 1 else {
            throw ModelError(layer: name, message: "depth_multiplier must be at least 1, found \(spec.depthMultiplier)")
        }
        let padding = try spec.padding.resolved(
            kernelHeight: spec.kernel, kernelWidth: spec.kernel, dilation: spec.dilation, layer: name)
        let depthwise = try Conv2D(
            input: input, filters: input.channels * spec.depthMultiplier, kernelHeight: spec.kernel, kernelWidth: spec.kernel,
            stride: spec.stride, padding: padding, dilation: spec.dilation, groups: input.channels, bias: false,
            name: name + ".depthwise")
        let pointwise = try Conv2D(
            input: depthwise.outputShape, filters: spec.filters, kernelHeight: 1, kernelWidth: 1, bias: spec.bias,
            name: name + ".pointwise")
        var summary = "SeparableConv2D(\(spec.filters), \(spec.kernel)x\(spec.kernel)"
        if spec.stride != 1 { summary += ", s\(spec.stride)" }
        if padding != 0 { summary += ", p\(padding)" }
        if spec.dilation != 1 { summary += ", d\(spec.dilation)" }
        if spec.depthMultiplier != 1 { summary += ", x\(spec.depthMultiplier)" }
        return try Sequential(
            input: input,
            children: [NamedLayer(name: "depthwise", layer: depthwise), NamedLayer(name: "pointwise", layer: pointwise)],
            summary: summary + ")", name: name)
    }
}

/// Builds `specs` one after another from `input`, naming child i `"\(prefix)\(i)"` for its
/// tensors and `"\(path)[\(i)]"` in errors and random keys.
func makeChain(_ specs: [LayerSpec], input: FeatureShape, tensorPrefix prefix: String, path: String) throws -> [NamedLayer] {
    var children: [NamedLayer] = []
    var shape = input
    for (index, spec) in specs.enumerated() {
        let layer = try spec.makeLayer(input: shape, name: "\(path)[\(index)]")
        children.append(NamedLayer(name: "\(prefix)\(index)", layer: layer))
        shape = layer.outputShape
    }
    return children
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
