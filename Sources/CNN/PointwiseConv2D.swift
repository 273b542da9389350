// Legend: n sample, c input channel, k output channel, P = OH * OW output positions.

/// A 1x1 convolution with stride and no bias: the projection shortcut of residual blocks
/// (torchvision's `downsample.0`). Weight [K, C, 1, 1] as PyTorch's `Conv2d`.
///
/// With stride S it reads rows and columns 0, S, 2S, ...: on an even input at stride 2 the last
/// row and column are never read, which is what ResNet's projection does by design, so unlike a
/// configured convolution this layer does not reject that. Forward gathers the strided positions
/// [C, P] and multiplies once per sample; backward scatters the gradient back to them.
public final class PointwiseConv2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let stride: Int

    private var weights: UnsafeMutablePointer<Float>!          // [K, C]
    private var weightGradients: UnsafeMutablePointer<Float>!  // [K, C]
    private let gathered = FloatBuffer()                       // [N, C, P]: the strided input positions
    private let output = FloatBuffer()                         // [N, K, OH, OW]
    private let gatheredGradient = FloatBuffer()               // [C, P], one sample at a time
    private let inputGradient = FloatBuffer()                  // [N, C, H, W]

    /// `filters` 1x1 filters over samples of shape `input`, reading every `stride`-th row and column.
    public init(input: FeatureShape, filters: Int, stride: Int, name: String = "PointwiseConv2D") throws {
        guard filters >= 1, stride >= 1 else {
            throw ModelError(layer: name, message: "filters and stride must be at least 1, found \(filters) and \(stride)")
        }
        self.inputShape = input
        self.outputShape = FeatureShape(
            channels: filters, height: (input.height - 1) / stride + 1, width: (input.width - 1) / stride + 1)
        self.stride = stride
    }

    public var summary: String { "Conv2D(\(outputShape.channels), 1x1" + (stride != 1 ? ", s\(stride)" : "") + ")" }

    private var positions: Int { outputShape.height * outputShape.width }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec(
            name: "weight", shape: [outputShape.channels, inputShape.channels, 1, 1], initialiser: .heNormal(fanIn: inputShape.channels))]
    }

    public var forwardFLOPs: Int { 2 * outputShape.channels * inputShape.channels * positions }
    public var savedFloatsPerSample: Int { inputShape.channels * positions + outputShape.count }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let channels = inputShape.channels, filters = outputShape.channels, positions = self.positions
        let columns = gathered.reserve(batch * channels * positions)
        let out = output.reserve(batch * outputShape.count)
        for n in 0..<batch {
            let x = input + n * inputShape.count
            let gatheredSample = columns + n * channels * positions
            gather(x, into: gatheredSample)
            // out [K, P] = W [K, C] x gathered [C, P]
            BLAS.gemm(
                transposeA: false, transposeB: false, m: filters, n: positions, k: channels,
                a: weights, lda: channels, b: gatheredSample, ldb: positions,
                beta: 0, c: out + n * outputShape.count, ldc: positions)
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let channels = inputShape.channels, filters = outputShape.channels, positions = self.positions
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let dGathered = gatheredGradient.reserve(channels * positions)
        for n in 0..<batch {
            let dy = outputGradient + n * outputShape.count
            // dW [K, C] += dy [K, P] x gathered^T [P, C]
            BLAS.gemm(
                transposeA: false, transposeB: true, m: filters, n: channels, k: positions,
                a: dy, lda: positions, b: gathered.pointer + n * channels * positions, ldb: positions,
                beta: 1, c: weightGradients, ldc: channels)
            // dGathered [C, P] = W^T [C, K] x dy [K, P]
            BLAS.gemm(
                transposeA: true, transposeB: false, m: channels, n: positions, k: filters,
                a: weights, lda: channels, b: dy, ldb: positions,
                beta: 0, c: dGathered, ldc: positions)
            scatter(dGathered, into: dInput + n * inputShape.count)
        }
        return dInput
    }

    /// [C, H, W] -> [C, P]: the values at rows and columns 0, S, 2S, ...
    private func gather(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) {
        if stride == 1 {
            columns.update(from: image, count: inputShape.count)
            return
        }
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            let destination = columns + c * outHeight * outWidth
            for oh in 0..<outHeight {
                let row = plane + oh * stride * width
                for ow in 0..<outWidth { destination[oh * outWidth + ow] = row[ow * stride] }
            }
        }
    }

    /// The adjoint of `gather`: [C, P] onto [C, H, W], zero at the positions never read.
    private func scatter(_ columns: UnsafePointer<Float>, into image: UnsafeMutablePointer<Float>) {
        if stride == 1 {
            image.update(from: columns, count: inputShape.count)
            return
        }
        image.update(repeating: 0, count: inputShape.count)
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            let source = columns + c * outHeight * outWidth
            for oh in 0..<outHeight {
                let row = plane + oh * stride * width
                for ow in 0..<outWidth { row[ow * stride] = source[oh * outWidth + ow] }
            }
        }
    }
}
