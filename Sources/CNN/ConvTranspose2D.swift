// Legend: n sample, g group, C_in input channels, K output channels (filters), (H, W) input size,
// (OH, OW) output size, patch = (K / groups) * kh * kw.

/// Transposed convolution (PyTorch's `nn.ConvTranspose2d`): the adjoint of a convolution, used to
/// upsample. Input value (h, w) of channel c adds x * weight[c, k, i, j] to output
/// (h * S - P + i * D, w * S - P + j * D) of channel k, for the K / groups output channels of c's
/// group. Output size (H - 1) * S - 2P + D * (kh - 1) + output_padding + 1.
///
/// Weight [C_in, K / groups, kh, kw] (PyTorch's layout), bias [K]. Forward is one GEMM per sample
/// and group into an im2col-shaped matrix and a col2im; backward unfolds the output gradient with
/// im2col, which the same GEMMs then turn into the input and weight gradients.
public final class ConvTranspose2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let filters: Int
    public let kernelHeight: Int
    public let kernelWidth: Int
    public let stride: Int
    public let padding: Int
    public let outputPadding: Int
    public let dilation: Int
    public let groups: Int
    public let hasBias: Bool

    private var weights: UnsafeMutablePointer<Float>!          // [C_in, K/g, kh, kw]
    private var weightGradients: UnsafeMutablePointer<Float>!  // [C_in, K/g, kh, kw]
    private var bias: UnsafeMutablePointer<Float>?             // [K]
    private var biasGradients: UnsafeMutablePointer<Float>?    // [K]
    private var savedInput: UnsafePointer<Float>!              // [N, C_in, H, W]

    private let columns = FloatBuffer()        // [K*kh*kw, H*W], one sample at a time
    private let output = FloatBuffer()         // [N, K, OH, OW]
    private let inputGradient = FloatBuffer()  // [N, C_in, H, W]
    /// The output plane as the image and the input positions as the windows of a convolution.
    private let geometry: PatchGeometry

    /// Upsamples samples of shape `input` as `spec` says; throws a `ModelError` naming `name` for
    /// options PyTorch would refuse or an output smaller than one pixel.
    public init(input: FeatureShape, spec: TransposedConvolutionSpec, name: String = "ConvTranspose2D") throws {
        for (value, what) in [(spec.filters, "filters"), (spec.kernelHeight, "kernel height"), (spec.kernelWidth, "kernel width"),
                              (spec.stride, "stride"), (spec.dilation, "dilation"), (spec.groups, "groups")] where value < 1 {
            throw ModelError(layer: name, message: "\(what) must be at least 1, found \(value)")
        }
        guard spec.padding >= 0, spec.outputPadding >= 0 else {
            throw ModelError(layer: name, message: "padding and output_padding must not be negative, found \(spec.padding) and \(spec.outputPadding)")
        }
        guard spec.outputPadding < max(spec.stride, spec.dilation) else {
            throw ModelError(
                layer: name,
                message: "output_padding \(spec.outputPadding) must be smaller than the stride (\(spec.stride)) or the dilation (\(spec.dilation))")
        }
        guard input.channels % spec.groups == 0, spec.filters % spec.groups == 0 else {
            throw ModelError(
                layer: name,
                message: "groups = \(spec.groups) must divide both the input channels (\(input.channels)) and the filters (\(spec.filters))")
        }
        func size(_ length: Int, _ kernel: Int, _ axis: String) throws -> Int {
            let size = (length - 1) * spec.stride - 2 * spec.padding + spec.dilation * (kernel - 1) + spec.outputPadding + 1
            guard size >= 1 else {
                throw ModelError(
                    layer: name,
                    message: "output \(axis) (\(length) - 1) * \(spec.stride) - 2*\(spec.padding) + \(spec.dilation)*(\(kernel) - 1) "
                        + "+ \(spec.outputPadding) + 1 = \(size) is below 1; use less padding")
            }
            return size
        }
        let height = try size(input.height, spec.kernelHeight, "height")
        let width = try size(input.width, spec.kernelWidth, "width")
        self.inputShape = input
        self.outputShape = FeatureShape(channels: spec.filters, height: height, width: width)
        self.filters = spec.filters
        self.kernelHeight = spec.kernelHeight
        self.kernelWidth = spec.kernelWidth
        self.stride = spec.stride
        self.padding = spec.padding
        self.outputPadding = spec.outputPadding
        self.dilation = spec.dilation
        self.groups = spec.groups
        self.hasBias = spec.bias
        geometry = PatchGeometry(
            channels: spec.filters, height: height, width: width, kernelHeight: spec.kernelHeight,
            kernelWidth: spec.kernelWidth, stride: spec.stride, padding: spec.padding, dilation: spec.dilation,
            outputHeight: input.height, outputWidth: input.width)
    }

    public var summary: String {
        var text = "ConvTranspose2D(\(filters), \(kernelHeight)x\(kernelWidth)"
        if stride != 1 { text += ", s\(stride)" }
        if padding != 0 { text += ", p\(padding)" }
        if outputPadding != 0 { text += ", op\(outputPadding)" }
        if dilation != 1 { text += ", d\(dilation)" }
        if groups != 1 { text += ", g\(groups)" }
        return text + ")"
    }

    private var patch: Int { filters / groups * kernelHeight * kernelWidth }
    private var inputPlane: Int { inputShape.height * inputShape.width }
    private var channelsPerGroup: Int { inputShape.channels / groups }

    public var parameterSpecs: [ParameterSpec] {
        // Each output sums about (C_in / groups) * kh * kw / S^2 products: He's fan-in for this layer.
        let fanIn = max(1, channelsPerGroup * kernelHeight * kernelWidth / (stride * stride))
        var specs = [ParameterSpec(
            name: "weight", shape: [inputShape.channels, filters / groups, kernelHeight, kernelWidth],
            initialiser: .heNormal(fanIn: fanIn))]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [filters], initialiser: .zeros)) }
        return specs
    }

    public var forwardFLOPs: Int { 2 * inputShape.channels * patch * inputPlane }
    public var savedFloatsPerSample: Int { outputShape.count }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
        let weightCount = inputShape.channels * patch
        if hasBias {
            bias = parameters + weightCount
            biasGradients = gradients + weightCount
        }
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let out = output.reserve(batch * outputShape.count)
        let cols = columns.reserve(geometry.rows * inputPlane)
        let outputPlane = outputShape.height * outputShape.width
        for n in 0..<batch {
            let x = input + n * inputShape.count
            for g in 0..<groups {
                // cols[g] [patch, HW] = W[g]^T [patch, C_in/g] x x[g] [C_in/g, HW]
                BLAS.gemm(
                    transposeA: true, transposeB: false, m: patch, n: inputPlane, k: channelsPerGroup,
                    a: weights + g * channelsPerGroup * patch, lda: patch,
                    b: x + g * channelsPerGroup * inputPlane, ldb: inputPlane,
                    beta: 0, c: cols + g * patch * inputPlane, ldc: inputPlane)
            }
            let y = out + n * outputShape.count
            geometry.col2im(cols, into: y)
            if let bias {
                for k in 0..<filters {
                    let plane = y + k * outputPlane
                    let b = bias[k]
                    for p in 0..<outputPlane { plane[p] += b }
                }
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let dCols = columns.reserve(geometry.rows * inputPlane)
        let outputPlane = outputShape.height * outputShape.width
        for n in 0..<batch {
            let dy = outputGradient + n * outputShape.count
            geometry.im2col(dy, into: dCols)  // [K*kh*kw, HW]
            let x = savedInput + n * inputShape.count
            let dx = dInput + n * inputShape.count
            for g in 0..<groups {
                // dx[g] [C_in/g, HW] = W[g] [C_in/g, patch] x dCols[g] [patch, HW]
                BLAS.gemm(
                    transposeA: false, transposeB: false, m: channelsPerGroup, n: inputPlane, k: patch,
                    a: weights + g * channelsPerGroup * patch, lda: patch,
                    b: dCols + g * patch * inputPlane, ldb: inputPlane,
                    beta: 0, c: dx + g * channelsPerGroup * inputPlane, ldc: inputPlane)
                // dW[g] [C_in/g, patch] += x[g] [C_in/g, HW] x dCols[g]^T [HW, patch]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: channelsPerGroup, n: patch, k: inputPlane,
                    a: x + g * channelsPerGroup * inputPlane, lda: inputPlane,
                    b: dCols + g * patch * inputPlane, ldb: inputPlane,
                    beta: 1, c: weightGradients + g * channelsPerGroup * patch, ldc: patch)
            }
            if let biasGradients {
                for k in 0..<filters {
                    biasGradients[k] += Float(Reduction.sum(dy + k * outputPlane, count: outputPlane))
                }
            }
        }
        return dInput
    }
}
