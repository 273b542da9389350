/// 2-D convolution: weights are [K, C/groups, kh, kw] (PyTorch's OIHW), bias [K]. Supports
/// stride, zero padding, dilation and groups (depthwise when groups == C).
///
/// The layer owns the parameters, the output and the input gradient; the arithmetic is one of
/// three computations, picked once when the layer is built (`Conv2DAlgorithm.swift`): im2col and
/// GEMM a block of samples at a time (`Im2colConvolution`), the same on wide rows for wide planes
/// (`WideRowConvolution`), or Winograd for 3x3 kernels (`WinogradConvolution`). Every sum runs in
/// an order fixed by the shapes and the batch alone, so results depend on the micro-batch, never
/// on threads.
public final class Conv2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let filters: Int
    public let kernelHeight: Int
    public let kernelWidth: Int
    public let stride: Int
    public let padding: Int
    public let dilation: Int
    public let groups: Int
    public let hasBias: Bool
    /// Whether `backward` computes the input gradient. A network's first layer can turn it off:
    /// nothing before it learns, and the skipped GEMM and col2im are a third of its backward pass.
    /// When off, `backward` returns a zero-filled buffer.
    public var computesInputGradient = true

    /// The algorithm this layer computes with. It starts as `defaultAlgorithm`'s choice; change it
    /// with `use(_:)`. Both give the same results up to Float rounding.
    public private(set) var algorithm: Algorithm

    /// Makes this layer compute with `algorithm` from its next forward pass on.
    /// - Throws: `ModelError` when the layer's configuration does not support the algorithm.
    public func use(_ algorithm: Algorithm) throws {
        if algorithm != .im2col && !supportsWinograd {
            throw ModelError(
                layer: summary,
                message: "the Winograd algorithm needs a 3x3 kernel, stride 1, dilation 1 and groups 1; "
                    + "use .im2col for this layer")
        }
        guard algorithm != self.algorithm else { return }
        self.algorithm = algorithm
        remakeComputation()
    }

    /// How this layer computes its passes: made for `algorithm` when the layer is built, and again
    /// only when something it was made with changes.
    private var computation: any ConvolutionComputation

    private func remakeComputation() {
        computation = Conv2D.makeComputation(
            algorithm, geometry: geometry, workspace: workspace, sharedTransform: sharedFilterTransform, precision: precision,
            bfloat16Kernel: bfloat16Kernel)
    }

    /// The arithmetic of this layer's products from its next forward pass on. In bf16 the
    /// layer computes with oneDNN's bf16 convolutions whatever its `algorithm` (Winograd's
    /// transforms would have to be rounded too, and its error budget is spent on them), or with
    /// im2col and bf16 GEMMs: `computedAlgorithm` and `kernelDescription` say which runs.
    public var precision: Precision = .fp32 {
        didSet { if precision != oldValue { remakeComputation() } }
    }

    /// How a convolution computes in bf16.
    public enum BFloat16Kernel: Sendable, Equatable {
        /// oneDNN's bf16 convolution primitives (`OneDNNConvolution`), where oneDNN has a compiled
        /// kernel for the layer's shapes and the layer has more than one input channel per group
        /// (`OneDNNConvolution.suits`); im2col and bf16 GEMMs elsewhere.
        case oneDNNConvolution
        /// im2col (on wide rows where those pay) and oneDNN's bf16 GEMM, always.
        case im2colGEMM
    }

    /// The bf16 kernel this layer prefers (`oneDNNConvolution` unless told otherwise; tests set
    /// `im2colGEMM` to check that path, which layers oneDNN cannot compute fall back to).
    public var bfloat16Kernel: BFloat16Kernel = .oneDNNConvolution {
        didSet { if bfloat16Kernel != oldValue && precision == .bf16 { remakeComputation() } }
    }

    /// The algorithm the layer computes with now: `algorithm` in fp32; in bf16 im2col (which
    /// stands for both bf16 kernels: `kernelDescription` tells them apart).
    public var computedAlgorithm: Algorithm { precision == .bf16 ? .im2col : algorithm }

    /// What computes this layer's passes now, for logs and tests: "oneDNN bf16 convolution
    /// (jit_bf16:avx512_core_bf16)", "im2col, bf16 GEMM", "im2col", "winograd", "winograd4x4".
    public var kernelDescription: String {
        switch computation {
        case let direct as OneDNNConvolution: "oneDNN bf16 convolution (\(direct.implementation))"
        default: precision == .bf16 ? "im2col, bf16 GEMM" : "\(algorithm)"
        }
    }

    /// The shape the computations read.
    private let geometry: ConvolutionGeometry

    /// Where Winograd keeps this layer's transformed filters when the replicas of its network
    /// share them (`Network.share(filterTransforms:)`); nil while the layer keeps its own.
    var sharedFilterTransform: SharedFilterTransforms.Slot? {
        didSet { remakeComputation() }
    }

    /// Where a call keeps its block matrices (and Winograd its transforms): the layer's own until
    /// a network binds it to the one all its layers share.
    private var workspace: LayerWorkspace

    public func bind(workspace: LayerWorkspace) {
        self.workspace = workspace
        computation.workspace = workspace
    }

    private var weights: UnsafeMutablePointer<Float>!
    private var weightGradients: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var biasGradients: UnsafeMutablePointer<Float>?
    private var savedInput: UnsafePointer<Float>?
    private let output = FloatBuffer()         // [N, K, OH, OW]
    private var inputGradient = FloatBuffer()  // [N, C, H, W]
    private var zeroedInputGradient = 0        // floats of `inputGradient` known to be zero (when not computed)

    public init(
        input: FeatureShape, filters: Int, kernelHeight: Int, kernelWidth: Int, stride: Int = 1,
        padding: Int = 0, dilation: Int = 1, groups: Int = 1, bias: Bool = true, name: String = "Conv2D"
    ) throws {
        for (value, what) in [(filters, "filters"), (kernelHeight, "kernel height"), (kernelWidth, "kernel width"),
                              (stride, "stride"), (dilation, "dilation"), (groups, "groups")] where value < 1 {
            throw ModelError(layer: name, message: "\(what) must be at least 1, found \(value)")
        }
        guard padding >= 0 else { throw ModelError(layer: name, message: "padding must not be negative, found \(padding)") }
        guard input.channels % groups == 0, filters % groups == 0 else {
            throw ModelError(
                layer: name,
                message: "groups = \(groups) must divide both the input channels (\(input.channels)) and the filters (\(filters))")
        }
        let height = try slidingOutputSize(
            input: input.height, kernel: kernelHeight, stride: stride, padding: padding, dilation: dilation,
            axis: "height", layer: name)
        let width = try slidingOutputSize(
            input: input.width, kernel: kernelWidth, stride: stride, padding: padding, dilation: dilation,
            axis: "width", layer: name)
        self.inputShape = input
        self.outputShape = FeatureShape(channels: filters, height: height, width: width)
        self.filters = filters
        self.kernelHeight = kernelHeight
        self.kernelWidth = kernelWidth
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.hasBias = bias
        let algorithm = Conv2D.defaultAlgorithm(
            inputChannels: input.channels, filters: filters, kernelHeight: kernelHeight, kernelWidth: kernelWidth, stride: stride,
            dilation: dilation, groups: groups, outputHeight: height, outputWidth: width)
        let geometry = ConvolutionGeometry(
            inputShape: input, outputShape: outputShape, kernelHeight: kernelHeight, kernelWidth: kernelWidth, stride: stride,
            padding: padding, dilation: dilation, groups: groups)
        let workspace = LayerWorkspace()
        self.algorithm = algorithm
        self.geometry = geometry
        self.workspace = workspace
        computation = Conv2D.makeComputation(
            algorithm, geometry: geometry, workspace: workspace, sharedTransform: nil, precision: .fp32, bfloat16Kernel: .oneDNNConvolution)
    }

    public var summary: String {
        var text = "Conv2D(\(filters), \(kernelHeight)x\(kernelWidth)"
        if stride != 1 { text += ", s\(stride)" }
        if padding != 0 { text += ", p\(padding)" }
        if dilation != 1 { text += ", d\(dilation)" }
        if groups != 1 { text += ", g\(groups)" }
        return text + ")"
    }

    public var parameterSpecs: [ParameterSpec] {
        let fanIn = geometry.patchSize
        var specs = [ParameterSpec(
            name: "weight", shape: [filters, inputShape.channels / groups, kernelHeight, kernelWidth],
            initialiser: .heNormal(fanIn: fanIn))]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [filters], initialiser: .zeros)) }
        return specs
    }

    public var forwardFLOPs: Int { 2 * filters * geometry.outputPlane * geometry.patchSize }
    /// The output, plus whatever the computation keeps from forward for backward (im2col's
    /// matrices, `Im2colConvolution.keepsColumns`); the input is the previous layer's output.
    public var savedFloatsPerSample: Int { outputShape.count + computation.keptFloatsPerSample }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
        let weightCount = filters * geometry.patchSize
        if hasBias {
            bias = parameters + weightCount
            biasGradients = gradients + weightCount
        }
    }

    public func bind(inputGradient buffer: FloatBuffer) {
        guard buffer !== inputGradient else { return }
        inputGradient = buffer
        zeroedInputGradient = 0
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let out = output.reserve(batch * outputShape.count)
        computation.forward(input, batch: batch, weights: weights, bias: bias, into: out)
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        guard let input = savedInput else { preconditionFailure("Conv2D.backward called before forward") }
        let dInput = inputGradient.reserve(batch * inputShape.count)
        prepareInputGradient(dInput, count: batch * inputShape.count)
        computation.backward(
            outputGradient, input: input, batch: batch, weights: weights, weightGradients: weightGradients,
            biasGradients: biasGradients, inputGradient: computesInputGradient ? dInput : nil)
        return dInput
    }

    /// Zero-fills the input gradient when it is not computed, once per size (nothing writes it
    /// then); when it is computed, forgets that it was zero.
    private func prepareInputGradient(_ dInput: UnsafeMutablePointer<Float>, count: Int) {
        if computesInputGradient {
            zeroedInputGradient = 0
        } else if zeroedInputGradient < count {
            dInput.update(repeating: 0, count: count)
            zeroedInputGradient = count
        }
    }

}
