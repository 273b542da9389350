// Legend: n sample, c input channel, k output channel, P = OH * OW output positions.

/// A 1x1 convolution with stride and no bias: the projection shortcut of residual blocks
/// (torchvision's `downsample.0`). Weight [K, C, 1, 1] as PyTorch's `Conv2d`.
///
/// With stride S it reads rows and columns 0, S, 2S, ...: on an even input at stride 2 the last
/// row and column are never read, which is what ResNet's projection does by design, so unlike a
/// configured convolution this layer does not reject that.
///
/// Forward gathers the strided positions of the whole batch into one [C, N*P] matrix and
/// multiplies it once: one GEMM per sample (a [K, C] x [C, P] product of a few hundred
/// thousand FLOPs) spent most of its time in the library's packing and call overhead. Backward
/// uses the same layout and scatters the gradient back to the positions read.
public final class PointwiseConv2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let stride: Int

    private var weights: UnsafeMutablePointer<Float>!          // [K, C]
    private var weightGradients: UnsafeMutablePointer<Float>!  // [K, C]
    private let gathered = FloatBuffer()                       // [C, N*P]: the strided input positions
    private let product = FloatBuffer()                        // [K, N*P]: the GEMM's result, then the output gradient
    private let output = FloatBuffer()                         // [N, K, OH, OW]
    private let gatheredGradient = FloatBuffer()               // [C, N*P]
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
        let wide = batch * positions
        let columns = gathered.reserve(channels * wide)
        let out = output.reserve(batch * outputShape.count)
        for n in 0..<batch {
            gather(input + n * inputShape.count, into: columns + n * positions, rowStride: wide)
        }
        // With one sample, [K, P] already is NCHW: the GEMM writes the output in place.
        let result = batch == 1 ? out : product.reserve(filters * wide)
        // result [K, N*P] = W [K, C] x gathered [C, N*P]
        BLAS.gemm(
            transposeA: false, transposeB: false, m: filters, n: wide, k: channels,
            a: weights, lda: channels, b: columns, ldb: wide,
            beta: 0, c: result, ldc: wide)
        if batch > 1 {
            // [K, N*P] -> [N, K, P]
            for n in 0..<batch {
                VectorKernels.copyRows(
                    result + n * positions, sourceStride: wide, to: out + n * outputShape.count, destinationStride: positions,
                    rows: filters, count: positions)
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let channels = inputShape.channels, filters = outputShape.channels, positions = self.positions
        let wide = batch * positions
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let dGathered = gatheredGradient.reserve(channels * wide)
        // The output gradient as [K, N*P], the layout of the forward GEMM's result.
        let dy: UnsafePointer<Float>
        if batch == 1 {
            dy = outputGradient
        } else {
            let destination = product.reserve(filters * wide)
            for n in 0..<batch {
                VectorKernels.copyRows(
                    outputGradient + n * outputShape.count, sourceStride: positions, to: destination + n * positions,
                    destinationStride: wide, rows: filters, count: positions)
            }
            dy = UnsafePointer(destination)
        }
        // dW [K, C] += dy [K, N*P] x gathered^T [N*P, C]
        BLAS.gemm(
            transposeA: false, transposeB: true, m: filters, n: channels, k: wide,
            a: dy, lda: wide, b: gathered.pointer, ldb: wide,
            beta: 1, c: weightGradients, ldc: channels)
        // dGathered [C, N*P] = W^T [C, K] x dy [K, N*P]
        BLAS.gemm(
            transposeA: true, transposeB: false, m: channels, n: wide, k: filters,
            a: weights, lda: channels, b: dy, ldb: wide,
            beta: 0, c: dGathered, ldc: wide)
        for n in 0..<batch {
            scatter(dGathered + n * positions, rowStride: wide, into: dInput + n * inputShape.count)
        }
        return dInput
    }

    /// Whether a strided row can be read and written eight floats at a time: stride 2 on an even
    /// width, where the vector reading a row's last kept value ends inside that row.
    private var pairsVectorise: Bool { stride == 2 && inputShape.width % 2 == 0 && outputShape.width >= 8 }

    /// One sample [C, H, W] -> its P columns of the [C, N*P] matrix (rows `rowStride` apart):
    /// the values at rows and columns 0, S, 2S, ...
    private func gather(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>, rowStride: Int) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        if stride == 1 {
            VectorKernels.copyRows(
                image, sourceStride: height * width, to: columns, destinationStride: rowStride, rows: inputShape.channels,
                count: height * width)
            return
        }
        let vectorised = pairsVectorise
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            let destination = columns + c * rowStride
            for oh in 0..<outHeight {
                let row = plane + oh * stride * width
                let to = destination + oh * outWidth
                if vectorised {
                    VectorKernels.copyEven(row, to: to, count: outWidth)
                } else {
                    for ow in 0..<outWidth { to[ow] = row[ow * stride] }
                }
            }
        }
    }

    /// The adjoint of `gather`: one sample's columns onto [C, H, W], zero at the positions never read.
    private func scatter(_ columns: UnsafePointer<Float>, rowStride: Int, into image: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        if stride == 1 {
            VectorKernels.copyRows(
                columns, sourceStride: rowStride, to: image, destinationStride: height * width, rows: inputShape.channels,
                count: height * width)
            return
        }
        VectorKernels.zero(image, count: inputShape.count)
        let vectorised = pairsVectorise
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            let source = columns + c * rowStride
            for oh in 0..<outHeight {
                let row = plane + oh * stride * width
                let from = source + oh * outWidth
                if vectorised {
                    // Onto zeros, adding is writing.
                    VectorKernels.addToEven(from, to: row, count: outWidth)
                } else {
                    for ow in 0..<outWidth { row[ow * stride] = from[ow] }
                }
            }
        }
    }
}
