// Legend: n sample, g group, K filters, C input channels, P output positions, J = C/groups * taps.

/// 1-D or 3-D convolution (PyTorch's `nn.Conv1d` on [C, L], `nn.Conv3d` on [C, D, H, W]): weights
/// [K, C/groups, k...] (OIL, OIDHW), bias [K]; stride, zero padding and dilation per axis, and
/// groups. (Images keep `Conv2D` and its faster algorithms.)
///
/// One computation for both ranks: each sample is unfolded by `VolumeGeometry.im2col`, which
/// treats a sequence as a volume of depth and height 1, and multiplied by each group's filters with
/// one GEMM. Backward unfolds the sample again rather than keeping the matrix. Samples are taken
/// one after another and every sum runs in an order fixed by the shapes, so the results depend on
/// the micro-batch only, never on threads.
public final class ConvolutionND: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let filters: Int
    /// Per spatial axis, outermost first.
    public let kernel: [Int]
    public let stride: [Int]
    public let padding: [Int]
    public let dilation: [Int]
    public let groups: Int
    public let hasBias: Bool

    private let geometry: VolumeGeometry
    private var weights: UnsafeMutablePointer<Float>!
    private var weightGradients: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var biasGradients: UnsafeMutablePointer<Float>?
    private var savedInput: UnsafePointer<Float>?
    private let output = FloatBuffer()          // [N, K, OD, OH, OW]
    private var inputGradient = FloatBuffer()   // [N, C, D, H, W]
    private let columns = FloatBuffer()         // [C*taps, P], one sample at a time

    /// - Parameters: per-axis lists have one entry per spatial axis of `input` (one for a
    ///   sequence, three for a volume).
    public init(
        input: FeatureShape, filters: Int, kernel: [Int], stride: [Int], padding: [Int], dilation: [Int],
        groups: Int = 1, bias: Bool = true, name: String = "ConvolutionND"
    ) throws {
        let rank = input.spatialRank
        guard rank == 1 || rank == 3 else {
            throw ModelError(layer: name, message: "conv1d and conv3d take inputs [C, L] or [C, D, H, W], found \(input); use conv for images")
        }
        guard groups >= 1 else { throw ModelError(layer: name, message: "groups must be at least 1, found \(groups)") }
        let window = try VolumeGeometry.window(
            input: input, filters: filters, kernel: kernel, stride: stride, padding: padding, dilation: dilation, layer: name)
        guard input.channels % groups == 0, filters % groups == 0 else {
            throw ModelError(
                layer: name,
                message: "groups = \(groups) must divide both the input channels (\(input.channels)) and the filters (\(filters))")
        }
        geometry = window.geometry
        self.inputShape = input
        self.outputShape = window.output
        self.filters = filters
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.hasBias = bias
    }

    public var summary: String {
        "Conv\(inputShape.spatialRank)d(\(filters), \(VolumeGeometry.text(kernel))"
            + VolumeGeometry.optionsText(stride: stride, padding: padding, dilation: dilation) + (groups != 1 ? ", g\(groups)" : "") + ")"
    }

    /// Inputs each filter sees: C/groups * taps.
    private var patchSize: Int { inputShape.channels / groups * geometry.taps }

    public var parameterSpecs: [ParameterSpec] {
        var specs = [ParameterSpec(
            name: "weight", shape: [filters, inputShape.channels / groups] + kernel, initialiser: .heNormal(fanIn: patchSize))]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [filters], initialiser: .zeros)) }
        return specs
    }

    public var forwardFLOPs: Int { 2 * filters * geometry.columns * patchSize }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
        if hasBias {
            bias = parameters + filters * patchSize
            biasGradients = gradients + filters * patchSize
        }
    }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let positions = geometry.columns, groupFilters = filters / groups, patch = patchSize
        let out = output.reserve(batch * outputShape.count)
        let cols = columns.reserve(geometry.rows * positions)
        for n in 0..<batch {
            geometry.im2col(input + n * inputShape.count, into: cols)
            let sampleOut = out + n * outputShape.count
            if let bias {
                for k in 0..<filters { (sampleOut + k * positions).update(repeating: bias[k], count: positions) }
            }
            for g in 0..<groups {
                // out_g [K/g, P] (+)= W_g [K/g, J] x cols_g [J, P]
                BLAS.gemm(
                    transposeA: false, transposeB: false, m: groupFilters, n: positions, k: patch,
                    a: weights + g * groupFilters * patch, lda: patch, b: cols + g * patch * positions, ldb: positions,
                    beta: hasBias ? 1 : 0, c: sampleOut + g * groupFilters * positions, ldc: positions)
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        guard let input = savedInput else { preconditionFailure("ConvolutionND.backward called before forward") }
        let positions = geometry.columns, groupFilters = filters / groups, patch = patchSize
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let cols = columns.reserve(geometry.rows * positions)
        for n in 0..<batch {
            let dOut = outputGradient + n * outputShape.count
            if let biasGradients {
                for k in 0..<filters {
                    let row = dOut + k * positions
                    var sum: Float = 0
                    for p in 0..<positions { sum += row[p] }
                    biasGradients[k] += sum
                }
            }
            geometry.im2col(input + n * inputShape.count, into: cols)
            for g in 0..<groups {
                // dW_g [K/g, J] += dOut_g [K/g, P] x cols_g^T [P, J]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: groupFilters, n: patch, k: positions,
                    a: dOut + g * groupFilters * positions, lda: positions, b: cols + g * patch * positions, ldb: positions,
                    beta: 1, c: weightGradients + g * groupFilters * patch, ldc: patch)
            }
            for g in 0..<groups {
                // dcols_g [J, P] = W_g^T [J, K/g] x dOut_g [K/g, P]; cols is free again, so it holds them
                BLAS.gemm(
                    transposeA: true, transposeB: false, m: patch, n: positions, k: groupFilters,
                    a: weights + g * groupFilters * patch, lda: patch, b: dOut + g * groupFilters * positions, ldb: positions,
                    beta: 0, c: cols + g * patch * positions, ldc: positions)
            }
            geometry.col2im(cols, into: dInput + n * inputShape.count)
        }
        return dInput
    }
}
