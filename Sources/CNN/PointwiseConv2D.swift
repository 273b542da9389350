import CNonTemporal

// Legend: n sample, c input channel, k output channel, P = OH * OW output positions.

/// A 1x1 convolution with stride and no bias: the projection shortcut of residual blocks
/// (torchvision's `downsample.0`). Weight [K, C, 1, 1] as PyTorch's `Conv2d`.
///
/// With stride S it reads rows and columns 0, S, 2S, ...: on an even input at stride 2 the last
/// row and column are never read, which is what ResNet's projection does by design, so unlike a
/// configured convolution this layer does not reject that.
///
/// Forward gathers the strided positions of a block of S samples into one [C, S*P] matrix and
/// multiplies it once: with OpenBLAS, one GEMM per sample (a [K, C] x [C, P] product of a few
/// hundred thousand FLOPs) spent most of its time in the library's packing and call overhead.
/// Blocks are sized as Conv2D's are, so the reordering between [K, S*P] and NCHW stays in cache.
/// Backward uses the same layout and scatters the gradient back to the positions read. Where
/// blocks share a GEMM it reads the gathered matrices forward kept, as gathering small planes
/// again costs more than keeping them; where each sample has its own, it gathers each sample
/// again from the input (which the network keeps, as for every layer), as kept matrices would
/// be more for the two passes to carry through a cache they already overflow
/// (`cnn bench --model resnet20 --threads 1` shows the layer rates).
public final class PointwiseConv2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let stride: Int

    private var weights: UnsafeMutablePointer<Float>!          // [K, C]
    private var weightGradients: UnsafeMutablePointer<Float>!  // [K, C]
    private var savedInput: UnsafePointer<Float>?              // [N, C, H, W]
    private let gathered = FloatBuffer()                       // blocks of [C, S*P] (or one): the strided input positions
    private let product = FloatBuffer()                        // [K, S*P]: one block's GEMM result, then its output gradient
    private let output = FloatBuffer()                         // [N, K, OH, OW]
    private let gatheredGradient = FloatBuffer()               // [C, S*P]: one block's gathered gradient
    private let inputGradient = FloatBuffer()                  // [N, C, H, W]
    /// Where bf16 products keep their rounded operands: the network's workspace once bound.
    private var workspace = LayerWorkspace()

    /// The arithmetic of this layer's three products (`BLAS.gemm(precision:)`).
    public var precision: Precision = .fp32

    public func bind(workspace: LayerWorkspace) { self.workspace = workspace }

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

    /// Output positions per sample from which, with oneDNN, each sample gets its own GEMM.
    static let oneDNNSampleGEMMPositions = 256

    /// Input gradients from this size on are written with streaming stores, past the cache: their
    /// rows then need not be read before being written, while smaller ones stay in the cache for
    /// the residual block's sum (`cnn bench --model resnet20 --threads 1` shows the layer rates).
    public static let streamingGradientBytes = 6 << 20

    public var forwardFLOPs: Int { 2 * outputShape.channels * inputShape.channels * positions }
    public var savedFloatsPerSample: Int { (keepsGatheredInput ? inputShape.channels * positions : 0) + outputShape.count }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
    }

    /// Samples per block: as many as let the block's gathered matrix and product fit
    /// `Im2colConvolution.blockBytes`, so the reorderings around each GEMM stay in cache; but one
    /// with oneDNN from `oneDNNSampleGEMMPositions` output positions on, where a sample's own GEMM
    /// (written straight into the NCHW output) runs at full rate and the reorderings would only
    /// cost (`cnn bench --model resnet20 --threads 1` shows the layer rates).
    private func samplesPerBlock(batch: Int) -> Int {
        if BLAS.library == .oneDNN && positions >= PointwiseConv2D.oneDNNSampleGEMMPositions { return 1 }
        let perSample = (inputShape.channels + outputShape.channels) * positions * MemoryLayout<Float>.stride
        return max(1, min(batch, Im2colConvolution.blockBytes / max(perSample, 1)))
    }

    /// Whether forward keeps every block's gathered matrix for backward: where samples share
    /// GEMMs (see the type's comment).
    private var keepsGatheredInput: Bool { samplesPerBlock(batch: .max) > 1 }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let channels = inputShape.channels, filters = outputShape.channels, positions = self.positions
        let inputCount = inputShape.count, outputCount = outputShape.count
        savedInput = input
        let out = output.reserve(batch * outputCount)
        let block = samplesPerBlock(batch: batch), keeps = keepsGatheredInput
        // Kept, block after block, each block's [C, S*P] matrix at its first sample's offset.
        let allColumns = gathered.reserve(channels * (keeps ? batch : block) * positions)
        let result = block > 1 ? product.reserve(filters * block * positions) : nil
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), wide = samples * positions
            let columns = keeps ? allColumns + channels * first * positions : allColumns
            for n in 0..<samples {
                gather(input + (first + n) * inputCount, into: columns + n * positions, rowStride: wide)
            }
            // With one sample, [K, P] already is NCHW: the GEMM writes the output in place.
            let target = samples == 1 ? out + first * outputCount : result!
            // target [K, S*P] = W [K, C] x gathered [C, S*P]
            BLAS.gemm(
                precision: precision, operands: workspace.bfloat16Operands,
                transposeA: false, transposeB: false, m: filters, n: wide, k: channels,
                a: weights, lda: channels, b: columns, ldb: wide,
                beta: 0, c: target, ldc: wide)
            if samples > 1 {
                // [K, S*P] -> [S, K, P]
                for n in 0..<samples {
                    VectorKernels.copyRows(
                        target + n * positions, sourceStride: wide, to: out + (first + n) * outputCount,
                        destinationStride: positions, rows: filters, count: positions)
                }
            }
            first += samples
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let channels = inputShape.channels, filters = outputShape.channels, positions = self.positions
        let inputCount = inputShape.count, outputCount = outputShape.count
        let dInput = inputGradient.reserve(batch * inputCount)
        guard let input = savedInput else { preconditionFailure("PointwiseConv2D.backward called before forward") }
        let block = samplesPerBlock(batch: batch), keeps = keepsGatheredInput
        let allColumns = keeps ? gathered.pointer : gathered.reserve(channels * block * positions)
        let dGathered = gatheredGradient.reserve(channels * block * positions)
        let streaming = streams(batch: batch)
        let reordered = block > 1 ? product.reserve(filters * block * positions) : nil
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), wide = samples * positions
            let columns = keeps ? allColumns + channels * first * positions : allColumns
            if !keeps {
                for n in 0..<samples {
                    gather(input + (first + n) * inputCount, into: columns + n * positions, rowStride: wide)
                }
            }
            // The block's output gradient as [K, S*P], the layout of the forward GEMM's result.
            let dy: UnsafePointer<Float>
            if samples == 1 {
                dy = outputGradient + first * outputCount
            } else {
                for n in 0..<samples {
                    VectorKernels.copyRows(
                        outputGradient + (first + n) * outputCount, sourceStride: positions, to: reordered! + n * positions,
                        destinationStride: wide, rows: filters, count: positions)
                }
                dy = UnsafePointer(reordered!)
            }
            // dW [K, C] += dy [K, S*P] x gathered^T [S*P, C]
            BLAS.gemm(
                precision: precision, operands: workspace.bfloat16Operands,
                transposeA: false, transposeB: true, m: filters, n: channels, k: wide,
                a: dy, lda: wide, b: columns, ldb: wide,
                beta: 1, c: weightGradients, ldc: channels)
            // dGathered [C, S*P] = W^T [C, K] x dy [K, S*P]
            BLAS.gemm(
                precision: precision, operands: workspace.bfloat16Operands,
                transposeA: true, transposeB: false, m: channels, n: wide, k: filters,
                a: weights, lda: channels, b: dy, ldb: wide,
                beta: 0, c: dGathered, ldc: wide)
            for n in 0..<samples {
                scatter(dGathered + n * positions, rowStride: wide, into: dInput + (first + n) * inputCount, streaming: streaming)
            }
            first += samples
        }
        if streaming { cnn_stream_fence() }
        return dInput
    }

    /// Whether the input gradient of `batch` samples is written with streaming stores: from
    /// `streamingGradientBytes` on, where rows are vectorised and each kept row starts 16-byte
    /// aligned (the buffer is 64-byte aligned and a width of 8k floats keeps every row so) and
    /// spreads 4k values.
    private func streams(batch: Int) -> Bool {
        pairsVectorise && inputShape.width % 8 == 0
            && batch * inputShape.count * MemoryLayout<Float>.stride >= PointwiseConv2D.streamingGradientBytes
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
    /// With `streaming` (see `streams(batch:)`) the kept rows are written past the cache.
    private func scatter(
        _ columns: UnsafePointer<Float>, rowStride: Int, into image: UnsafeMutablePointer<Float>, streaming: Bool
    ) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        if stride == 1 {
            VectorKernels.copyRows(
                columns, sourceStride: rowStride, to: image, destinationStride: height * width, rows: inputShape.channels,
                count: height * width)
            return
        }
        if pairsVectorise {
            // Kept rows interleave the values with zeros. Skipped rows are never written: they are
            // zero since the buffer was made or last grown (it then reads zero), and nothing else
            // writes into it (a projection's gradient is only read, by its residual block). Half
            // the writes of a memory-bound layer (`cnn bench --model resnet20 --threads 1`).
            for c in 0..<inputShape.channels {
                let plane = image + c * height * width
                let source = columns + c * rowStride
                for h in Swift.stride(from: 0, to: height, by: 2) {
                    if streaming {
                        cnn_stream_spread_to_even(source + h / 2 * outWidth, plane + h * width, outWidth)
                    } else {
                        VectorKernels.spreadToEven(source + h / 2 * outWidth, to: plane + h * width, count: outWidth)
                    }
                }
            }
            return
        }
        VectorKernels.zero(image, count: inputShape.count)
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            let source = columns + c * rowStride
            for oh in 0..<outHeight {
                let row = plane + oh * stride * width
                let from = source + oh * outWidth
                for ow in 0..<outWidth { row[ow * stride] = from[ow] }
            }
        }
    }
}
