/// A residual block: output = path(x) + shortcut(x), then ReLU if asked, where the shortcut is
/// the identity or a projection (1x1 convolution with stride, then batch norm) when the path
/// changes the shape (He et al. 2016, "option B").
///
/// Tensors are the path's followed by the projection's, named as the path and projection children
/// are ("conv1.weight", "downsample.1.running_mean"). Backward adds the input gradients of the two
/// routes.
public final class Residual: Layer {
    /// The main path; its children's names are the tensor prefixes ("conv1", "layers.0").
    public let path: Sequential
    /// The projection ("downsample.0", "downsample.1"), or nil for the identity.
    public let projection: Sequential?
    public let reluAfterSum: Bool
    public let summary: String

    private let output = FloatBuffer()          // [N, C, H, W]
    private let sumGradient = FloatBuffer()     // [N, C, H, W]: d(loss)/d(path + shortcut)
    private var inputGradient = FloatBuffer()   // [N, C_in, H_in, W_in]

    public var inputShape: FeatureShape { path.inputShape }
    public var outputShape: FeatureShape { path.outputShape }

    /// Joins a path and a shortcut that must both map the same input to the same output shape.
    public init(path: Sequential, projection: Sequential?, reluAfterSum: Bool, summary: String, name: String) throws {
        let shortcutShape = projection?.outputShape ?? path.inputShape
        guard shortcutShape == path.outputShape else {
            let fix = projection == nil
                ? "use a projection shortcut (projection: auto or true), or make the path keep the shape"
                : "the projection must produce the path's output shape"
            throw ModelError(
                layer: name,
                message: "the residual path maps \(path.inputShape) to \(path.outputShape) but the shortcut gives \(shortcutShape); \(fix)")
        }
        if let projection, projection.inputShape != path.inputShape {
            throw ModelError(layer: name, message: "the projection expects \(projection.inputShape), the path \(path.inputShape)")
        }
        self.path = path
        self.projection = projection
        self.reluAfterSum = reluAfterSum
        self.summary = summary
    }

    public var sublayers: [Layer] { [path] + (projection.map { [$0] } ?? []) }

    public var parameterSpecs: [ParameterSpec] { path.parameterSpecs + (projection?.parameterSpecs ?? []) }
    public var stateSpecs: [ParameterSpec] { path.stateSpecs + (projection?.stateSpecs ?? []) }
    public var forwardFLOPs: Int { path.forwardFLOPs + (projection?.forwardFLOPs ?? 0) + outputShape.count }
    public var savedFloatsPerSample: Int {
        path.savedFloatsPerSample + (projection?.savedFloatsPerSample ?? 0) + outputShape.count
    }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let count = batch * outputShape.count
        let main = path.forward(input, batch: batch, context: context)                                 // [N, C, H, W]
        let shortcut = projection.map { UnsafePointer($0.forward(input, batch: batch, context: context)) } ?? input  // [N, C, H, W]
        let out = output.reserve(count)
        VectorKernels.sum(main, shortcut, into: out, count: count, rectified: reluAfterSum)
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * outputShape.count
        var gradient = outputGradient                       // [N, C, H, W]
        if reluAfterSum {
            let dSum = sumGradient.reserve(count)
            VectorKernels.mask(outputGradient, where: output.pointer, into: dSum, count: count)
            gradient = UnsafePointer(dSum)
        }
        let inputCount = batch * inputShape.count
        let dInput = inputGradient.reserve(inputCount)      // [N, C_in, H_in, W_in]
        let dMain = path.backward(gradient, batch: batch)
        let dShortcut = projection.map { UnsafePointer($0.backward(gradient, batch: batch)) } ?? gradient
        VectorKernels.sum(dMain, dShortcut, into: dInput, count: inputCount, rectified: false)
        return dInput
    }
}

extension Residual {
    /// A residual block around a path built from `spec.layers` (tensors `layers.<i>.*`).
    static func make(input: FeatureShape, spec: ResidualSpec, name: String) throws -> Residual {
        guard !spec.layers.isEmpty else {
            throw ModelError(layer: name, message: "a residual block needs at least one layer in 'layers'")
        }
        let chain = try makeChain(spec.layers, input: input, tensorPrefix: "layers.", path: name + ".residual.layers")
        let path = try Sequential(input: input, children: chain, summary: "path", name: name)
        let output = path.outputShape
        let needsProjection = output != input
        let projects: Bool
        switch spec.projection {
        case .auto: projects = needsProjection
        case .always: projects = true
        case .never:
            guard !needsProjection else {
                throw ModelError(
                    layer: name,
                    message: "the residual path maps \(input) to \(output), so the identity shortcut cannot be added; "
                        + "use projection: auto (or true), or make the path keep the shape")
            }
            projects = false
        }
        var shortcut: Sequential?
        if projects {
            let stride = try projectionStride(from: input, to: output, name: name)
            shortcut = try makeProjection(input: input, channels: output.channels, stride: stride, name: name)
        }
        let summary = "Residual(\(spec.layers.count) layers" + (projects ? ", projection" : "") + (spec.reluAfterSum ? ", relu" : "") + ")"
        return try Residual(path: path, projection: shortcut, reluAfterSum: spec.reluAfterSum, summary: summary, name: name)
    }

    /// torchvision's BasicBlock (expansion 1): conv1 bn1 relu conv2 bn2, shortcut, ReLU.
    static func basicBlock(input: FeatureShape, filters: Int, stride: Int, projection: Projection, name: String) throws -> Residual {
        let conv1 = try Conv2D(
            input: input, filters: filters, kernelHeight: 3, kernelWidth: 3, stride: stride, padding: 1, bias: false,
            name: name + ".conv1")
        let bn1 = try BatchNorm(input: conv1.outputShape, spec: BatchNormSpec(), name: name + ".bn1")
        let relu = ReLU(input: bn1.outputShape)
        let conv2 = try Conv2D(
            input: relu.outputShape, filters: filters, kernelHeight: 3, kernelWidth: 3, padding: 1, bias: false,
            name: name + ".conv2")
        let bn2 = try BatchNorm(input: conv2.outputShape, spec: BatchNormSpec(), name: name + ".bn2")
        let path = try Sequential(
            input: input,
            children: [NamedLayer(name: "conv1", layer: conv1), NamedLayer(name: "bn1", layer: bn1), NamedLayer(name: "relu", layer: relu),
                       NamedLayer(name: "conv2", layer: conv2), NamedLayer(name: "bn2", layer: bn2)],
            summary: "path", name: name)
        let shortcut = try blockShortcut(
            input: input, channels: filters, stride: stride, projection: projection, name: name)
        let summary = "BasicBlock(\(filters)" + (stride != 1 ? ", s\(stride)" : "") + (shortcut != nil ? ", projection" : "") + ")"
        return try Residual(path: path, projection: shortcut, reluAfterSum: true, summary: summary, name: name)
    }

    /// torchvision's Bottleneck (ResNet v1.5, stride on the 3x3): conv1 bn1 relu conv2 bn2 relu
    /// conv3 bn3, shortcut, ReLU; the output has filters * expansion channels.
    static func bottleneck(
        input: FeatureShape, filters: Int, stride: Int, expansion: Int, projection: Projection, name: String
    ) throws -> Residual {
        guard expansion >= 1 else { throw ModelError(layer: name, message: "expansion must be at least 1, found \(expansion)") }
        let conv1 = try Conv2D(input: input, filters: filters, kernelHeight: 1, kernelWidth: 1, bias: false, name: name + ".conv1")
        let bn1 = try BatchNorm(input: conv1.outputShape, spec: BatchNormSpec(), name: name + ".bn1")
        let relu1 = ReLU(input: bn1.outputShape)
        let conv2 = try Conv2D(
            input: relu1.outputShape, filters: filters, kernelHeight: 3, kernelWidth: 3, stride: stride, padding: 1, bias: false,
            name: name + ".conv2")
        let bn2 = try BatchNorm(input: conv2.outputShape, spec: BatchNormSpec(), name: name + ".bn2")
        let relu2 = ReLU(input: bn2.outputShape)
        let conv3 = try Conv2D(
            input: relu2.outputShape, filters: filters * expansion, kernelHeight: 1, kernelWidth: 1, bias: false,
            name: name + ".conv3")
        let bn3 = try BatchNorm(input: conv3.outputShape, spec: BatchNormSpec(), name: name + ".bn3")
        let path = try Sequential(
            input: input,
            children: [NamedLayer(name: "conv1", layer: conv1), NamedLayer(name: "bn1", layer: bn1), NamedLayer(name: "relu", layer: relu1),
                       NamedLayer(name: "conv2", layer: conv2), NamedLayer(name: "bn2", layer: bn2), NamedLayer(name: "relu", layer: relu2),
                       NamedLayer(name: "conv3", layer: conv3), NamedLayer(name: "bn3", layer: bn3)],
            summary: "path", name: name)
        let shortcut = try blockShortcut(
            input: input, channels: filters * expansion, stride: stride, projection: projection, name: name)
        let summary = "Bottleneck(\(filters)x\(expansion)" + (stride != 1 ? ", s\(stride)" : "") + (shortcut != nil ? ", projection" : "") + ")"
        return try Residual(path: path, projection: shortcut, reluAfterSum: true, summary: summary, name: name)
    }

    /// torchvision's rule: project when the stride is not 1 or the channels change.
    private static func blockShortcut(
        input: FeatureShape, channels: Int, stride: Int, projection: Projection, name: String
    ) throws -> Sequential? {
        let needsProjection = stride != 1 || input.channels != channels
        switch projection {
        case .never:
            guard !needsProjection else {
                throw ModelError(
                    layer: name,
                    message: "the block changes \(input.channels) channels to \(channels) with stride \(stride), so the identity "
                        + "shortcut cannot be added; use projection: auto (or true)")
            }
            return nil
        case .auto where !needsProjection:
            return nil
        default:
            return try makeProjection(input: input, channels: channels, stride: stride, name: name)
        }
    }

    /// downsample = [1x1 convolution with stride, no bias; batch norm], as torchvision builds it.
    private static func makeProjection(input: FeatureShape, channels: Int, stride: Int, name: String) throws -> Sequential {
        let convolution = try PointwiseConv2D(input: input, filters: channels, stride: stride, name: name + ".downsample.0")
        let norm = try BatchNorm(input: convolution.outputShape, spec: BatchNormSpec(), name: name + ".downsample.1")
        return try Sequential(
            input: input,
            children: [NamedLayer(name: "downsample.0", layer: convolution), NamedLayer(name: "downsample.1", layer: norm)],
            summary: "projection", name: name)
    }

    /// The stride s of a 1x1 convolution taking `input`'s height and width to `output`'s:
    /// (H - 1) / s + 1 = OH on both axes.
    private static func projectionStride(from input: FeatureShape, to output: FeatureShape, name: String) throws -> Int {
        for stride in 1...max(input.height, input.width, 1)
        where (input.height - 1) / stride + 1 == output.height && (input.width - 1) / stride + 1 == output.width {
            return stride
        }
        throw ModelError(
            layer: name,
            message: "no 1x1 projection with a whole stride maps the input \(input.height)x\(input.width) to the path's "
                + "output \(output.height)x\(output.width); make the path's output size (H - 1) / s + 1 for one stride s")
    }
}
