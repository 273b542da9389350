// Legend for the kernels below: n sample, c input channel, k output channel (filter), g group,
// (h, w) input position, (oh, ow) output position, (i, j) kernel tap, p = oh * OW + ow,
// P = OH * OW positions per plane, wide = N * P columns of the batched im2col matrix.

/// 2-D convolution through im2col and GEMM, a block of samples at a time.
///
/// Weights are [K, C/groups, kh, kw] (PyTorch's OIHW), bias [K]. Supports stride, zero padding,
/// dilation and groups (depthwise when groups == C).
///
/// Why blocks: the im2col matrix of a small layer is many times its input (9x for a 3x3 kernel),
/// and writing all of it to memory, reading it back for the GEMM and again for backward cost as
/// much as the arithmetic. So the batch is cut into blocks of samples whose im2col matrix fits in
/// the core's cache (`blockBytes`); each block is unfolded and multiplied while it is still there,
/// and backward unfolds it again instead of keeping it. One GEMM per block, whose N dimension is
/// samples x OH x OW, keeps small layers (6 or 16 filters on 10x10 planes) in the efficient range
/// of the GEMM kernel, where one call per sample spent most of its time packing and calling. The
/// price is a reordering between the GEMM's [K, samples*P] layout and NCHW, which also adds the
/// bias.
///
/// Every sum runs in an order fixed by the shapes and the batch alone, so results depend on the
/// micro-batch, never on threads.
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

    /// How a convolution computes its three passes.
    public enum Algorithm: Sendable, Equatable {
        /// im2col and GEMM: every configuration.
        case im2col
        /// Winograd F(2x2, 3x3): 3x3 kernels at stride 1, dilation 1, without groups only.
        case winograd
        /// Winograd F(4x4, 3x3): the same configurations as `winograd`; 36 GEMMs on 6x6 input
        /// tiles, 4x fewer multiplications than direct convolution (F(2x2, 3x3): 2.25x), for
        /// larger transforms and somewhat larger rounding error.
        case winograd4x4

        /// The Winograd tile for this algorithm, nil for im2col.
        var winogradTile: WinogradTile? {
            switch self {
            case .im2col: nil
            case .winograd: .f2x3
            case .winograd4x4: .f4x3
            }
        }
    }

    /// The algorithm this layer computes with. It starts as `defaultAlgorithm`'s choice; change it
    /// with `use(_:)`. Both give the same results up to Float rounding.
    public private(set) var algorithm: Algorithm

    /// Whether `use(.winograd)` and `use(.winograd4x4)` are allowed: a 3x3 kernel at stride 1, dilation 1, with one group.
    public var supportsWinograd: Bool {
        kernelHeight == 3 && kernelWidth == 3 && stride == 1 && dilation == 1 && groups == 1
    }

    /// Makes this layer compute with `algorithm` from its next forward pass on.
    /// - Throws: `ModelError` when the layer's configuration does not support the algorithm.
    public func use(_ algorithm: Algorithm) throws {
        if algorithm != .im2col && !supportsWinograd {
            throw ModelError(
                layer: summary,
                message: "the Winograd algorithm needs a 3x3 kernel, stride 1, dilation 1 and groups 1; "
                    + "use .im2col for this layer")
        }
        self.algorithm = algorithm
        if let tile = algorithm.winogradTile, winograd?.tile.outputSize != tile.outputSize { winograd = makeWinograd() }
    }

    /// The algorithm a layer of this configuration computes with unless told otherwise. With
    /// C input channels, K filters and the balance C K / (C + K): im2col below
    /// `thresholds.winograd`, or where Winograd is not supported; Winograd F(4x4, 3x3) from
    /// `thresholds.largeTiles` when 4 divides both output sides (no partial tiles), and from
    /// `thresholds.largeTilesWithPartialTiles` otherwise (or when the output size is not given);
    /// Winograd F(2x2, 3x3) in between. The thresholds are those measured for the GEMM library
    /// in use (`AlgorithmThresholds`).
    ///
    /// Why that quotient: per tile, Winograd saves multiplications in proportion to C K (its 16
    /// or 36 GEMMs against im2col's 36 or 144 taps) but spends its transforms in proportion to
    /// C + K (one input transform per channel, one output transform per filter, and their
    /// adjoints backward). F(4x4, 3x3) halves F(2x2, 3x3)'s GEMM work (36 / 16 against 16 / 4
    /// products per output and channel pair) but its transforms cost more per output, so it needs
    /// a larger quotient; partial tiles (13x13 outputs computed as 16x16) cost it half as much
    /// again, against 14x14 for F(2x2, 3x3). The faster the GEMM, the more the transforms
    /// weigh, and the larger the quotient Winograd needs.
    public static func defaultAlgorithm(
        inputChannels: Int, filters: Int, kernelHeight: Int, kernelWidth: Int, stride: Int, dilation: Int, groups: Int,
        outputHeight: Int? = nil, outputWidth: Int? = nil, thresholds: AlgorithmThresholds = .measured(for: BLAS.library)
    ) -> Algorithm {
        let supported = kernelHeight == 3 && kernelWidth == 3 && stride == 1 && dilation == 1 && groups == 1
        let product = inputChannels * filters, sum = inputChannels + filters
        guard supported && product >= thresholds.winograd * sum else { return .im2col }
        let wholeTiles = outputHeight.map { $0 % 4 == 0 } == true && outputWidth.map { $0 % 4 == 0 } == true
        let largeTiles = wholeTiles ? thresholds.largeTiles : thresholds.largeTilesWithPartialTiles
        return product >= largeTiles * sum ? .winograd4x4 : .winograd
    }

    /// Where `defaultAlgorithm` switches algorithm: least values of C K / (C + K).
    public struct AlgorithmThresholds: Sendable, Equatable {
        /// From here Winograd F(2x2, 3x3) instead of im2col.
        public var winograd: Int
        /// From here F(4x4, 3x3) instead of F(2x2, 3x3) when 4 divides both output sides.
        public var largeTiles: Int
        /// From here F(4x4, 3x3) instead of F(2x2, 3x3) when the output has partial 4x4 tiles.
        public var largeTilesWithPartialTiles: Int

        public init(winograd: Int, largeTiles: Int, largeTilesWithPartialTiles: Int) {
            self.winograd = winograd
            self.largeTiles = largeTiles
            self.largeTilesWithPartialTiles = largeTilesWithPartialTiles
        }

        /// The thresholds measured with a GEMM library.
        public static func measured(for library: BLAS.Library) -> AlgorithmThresholds {
            switch library {
            case .oneDNN: oneDNN
            case .openBLAS: openBLAS
            }
        }

        /// With oneDNN's AVX-512 GEMM. Measured on one core, forward and backward (time of
        /// im2col / time of the algorithm; above 1 is faster), batch 64 unless said:
        /// F(2x2, 3x3) 0.65 at C = K = 16 on 32x32 (quotient 8), 0.86-0.89 at 32 and 32 on 16x16
        /// and 32x32 and at 24 and 48 (16), 1.03 at 16 and 64 (12.8), 1.06-1.11 at 32 and 64 on
        /// 14x14 and 16x16 and at 48 and 48 (21-24), 1.06-1.15 at 64 and 64 (32), 1.34-1.54 from
        /// 43 up. F(4x4, 3x3) against F(2x2, 3x3), whole tiles, batch 32: 0.97 at 64 and 64, 1.02-1.06
        /// at 64 and 128, 96 and 96, 128 and 128 on 16x16, 256 and 256 on 8x8 (43-128), but 0.89
        /// at 128 and 128 on 8x8; partial tiles (13x13, batch 8 or 4): 0.90-0.92 at 64-96,
        /// 1.04-1.16 at AlexNet's 154-192.
        public static let oneDNN = AlgorithmThresholds(winograd: 20, largeTiles: 40, largeTilesWithPartialTiles: 128)

        /// With OpenBLAS's Haswell kernel. F(2x2, 3x3) against im2col, measured on one core
        /// (forward and backward, batch 128, time Winograd / im2col): 0.70 at C = K = 64
        /// (quotient 32), 0.83 at 32 and 32 (16), 0.92 at 12 and 48 (9.6), 0.93 at 16 and 32
        /// (10.7), but 1.0-1.15 at 16 and 16 (8), 0.97-1.06 at 8 and 32, 64 or 128 (6.4-7.5), 1.14
        /// at 8 and 16 and 1.6 at 3 and 16. F(4x4, 3x3) against F(2x2, 3x3), same measure (median
        /// of 15 interleaved rounds): slower at every quotient up to 32 (1.11 at 16 and 16 on
        /// 32x32, 1.07 at 32 and 32 on 16x16, 1.06-1.11 at 64 and 64 on 8x8, batch 128 and 64;
        /// 1.28-1.31 at 32 and 64 on 14x14, whose 4x4 tiles overhang); faster from about 40 with
        /// whole tiles (0.91 at 64 and 128, 0.94 at 96 and 96, 0.93 at 128 and 128 on 16x16, batch
        /// 32; 0.98 at 128 and 128 on 8x8, batch 64); with partial tiles slower at 64 (1.11 at 128
        /// and 128 on 13x13, batch 8) but faster at AlexNet's 13x13 layers, quotients 128-154
        /// (0.89-0.95 at batch 8, 0.90-0.92 at batch 4).
        public static let openBLAS = AlgorithmThresholds(winograd: 9, largeTiles: 40, largeTilesWithPartialTiles: 96)
    }

    private var winograd: WinogradConvolution?

    private func makeWinograd() -> WinogradConvolution? {
        guard let tile = algorithm.winogradTile else { return nil }
        let winograd = WinogradConvolution(
            channels: inputShape.channels, filters: filters, height: inputShape.height, width: inputShape.width,
            padding: padding, tile: tile, workspace: workspace)
        winograd.sharedTransform = sharedFilterTransform
        return winograd
    }

    /// Where Winograd keeps this layer's transformed filters when the replicas of its network
    /// share them (`Network.share(filterTransforms:)`); nil while the layer keeps its own.
    var sharedFilterTransform: SharedFilterTransforms.Slot? {
        didSet { winograd?.sharedTransform = sharedFilterTransform }
    }

    /// Where a call keeps its block matrices (and Winograd its transforms): the layer's own until
    /// a network binds it to the one all its layers share.
    private var workspace = LayerWorkspace()

    public func bind(workspace: LayerWorkspace) {
        self.workspace = workspace
        winograd?.workspace = workspace
    }

    private var weights: UnsafeMutablePointer<Float>!
    private var weightGradients: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var biasGradients: UnsafeMutablePointer<Float>?

    // Every block's im2col matrix when `keepsColumns`: it lives from forward to backward, so it
    // cannot be in the workspace.
    private let keptColumns = FloatBuffer()
    /// [G * patch, S * P]: one block's im2col matrix, then its column gradient (all blocks' when
    /// `keepsColumns`).
    private var columns: FloatBuffer { keepsColumns ? keptColumns : workspace.unfoldedInput }
    /// [K, S * P]: one block's GEMM result, then its output gradient.
    private var product: FloatBuffer { workspace.blockProducts }
    private var savedInput: UnsafePointer<Float>?
    private let biasScratch = FloatBuffer()    // [K]: the bias gradient of one backward pass
    /// [G, patch, K/G]: the weight gradient of one backward pass, transposed.
    private var weightGradientScratch: FloatBuffer { workspace.weightGradientTotals }
    private let paddedInput = FloatBuffer()    // [H + 2P, W + 2P]: one input channel inside a zero border
    private let paddedGradient = FloatBuffer() // [H + 2P, W + 2P]: one channel's input gradient, border included
    private let output = FloatBuffer()         // [N, K, OH, OW]
    private var inputGradient = FloatBuffer()  // [N, C, H, W]
    private var zeroedInputGradient = 0        // floats of `inputGradient` known to be zero (when not computed)

    /// Rows of the im2col matrix per group: (C / groups) * kh * kw.
    private var patchSize: Int { inputShape.channels / groups * kernelHeight * kernelWidth }
    private var outputPlane: Int { outputShape.height * outputShape.width }

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
        self.algorithm = Conv2D.defaultAlgorithm(
            inputChannels: input.channels, filters: filters, kernelHeight: kernelHeight, kernelWidth: kernelWidth, stride: stride,
            dilation: dilation, groups: groups, outputHeight: height, outputWidth: width)
        winograd = makeWinograd()
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
        let fanIn = patchSize
        var specs = [ParameterSpec(
            name: "weight", shape: [filters, inputShape.channels / groups, kernelHeight, kernelWidth],
            initialiser: .heNormal(fanIn: fanIn))]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [filters], initialiser: .zeros)) }
        return specs
    }

    public var forwardFLOPs: Int { 2 * filters * outputPlane * patchSize }
    /// The output, plus the im2col matrix where it is kept (`keepsColumns`); the input is the
    /// previous layer's output.
    public var savedFloatsPerSample: Int {
        outputShape.count + (algorithm == .im2col && keepsColumns ? groups * patchSize * outputPlane : 0)
    }

    /// Whether forward keeps every block's im2col matrix for backward instead of unfolding the
    /// input again: for small matrices (the first layers of small CNNs), where memory is cheap and
    /// the unfolding is a large part of the work.
    private var keepsColumns: Bool {
        !usesWideRows && groups * patchSize * outputPlane * MemoryLayout<Float>.stride <= Conv2D.keptColumnBytesPerSample
    }

    /// Largest im2col matrix per sample that `keepsColumns` keeps.
    static let keptColumnBytesPerSample = 128 << 10

    /// Bytes of a block's im2col matrix and GEMM result together: a quarter of this machine's
    /// 2 MiB per-core cache, leaving room for the GEMM's packed panels and for the kept matrices
    /// streaming past. Measured with oneDNN, the conv-vs-sgemm ratio in one run: LeNet-5's first
    /// layer (micro-batch 32) 74-75% against 67-72% with 1 MiB and 71-73% with 256 KiB, Fashion-
    /// MNIST's 107-113% against 89-106%; the other layers of the four models within noise.
    static let blockBytes = 1 << 19

    /// Samples per block: as many as fit `blockBytes`, at least one.
    private func samplesPerBlock(batch: Int) -> Int {
        let perSample = (groups * patchSize + filters) * outputPlane * MemoryLayout<Float>.stride
        return max(1, min(batch, Conv2D.blockBytes / max(perSample, 1)))
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
        let weightCount = filters * patchSize
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
        if algorithm != .im2col, let winograd {
            let out = output.reserve(batch * outputShape.count)
            winograd.forward(input, batch: batch, weights: weights, bias: bias, into: out)
            return out
        }
        if usesWideRows { return forwardOnWideRows(input, batch: batch) }
        let plane = outputPlane, patch = patchSize, filtersPerGroup = filters / groups
        let inputCount = inputShape.count, outputCount = outputShape.count
        let out = output.reserve(batch * outputCount)
        let block = samplesPerBlock(batch: batch)
        // Kept matrices lie block after block: block b starts at its first sample's offset.
        let keep = keepsColumns
        let allColumns = columns.reserve(groups * patch * (keep ? batch : block) * plane)
        let result = block > 1 ? product.reserve(filters * block * plane) : out
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), wide = samples * plane
            let cols = keep ? allColumns + groups * patch * first * plane : allColumns
            for n in 0..<samples {
                im2col(input + (first + n) * inputCount, into: cols + n * plane, rowStride: wide)
            }
            // With one sample, [K, P] already is NCHW: the GEMM writes the output in place.
            let target = samples == 1 ? out + first * outputCount : result
            for g in 0..<groups {
                // target[g] [K/g, S*P] = W[g] [K/g, patch] x cols[g] [patch, S*P]
                BLAS.gemm(
                    transposeA: false, transposeB: false, m: filtersPerGroup, n: wide, k: patch,
                    a: weights + g * filtersPerGroup * patch, lda: patch,
                    b: cols + g * patch * wide, ldb: wide,
                    beta: 0, c: target + g * filtersPerGroup * wide, ldc: wide)
            }
            if samples == 1 {
                if let bias {
                    for k in 0..<filters { VectorKernels.add(bias[k], to: target + k * plane, count: plane) }
                }
            } else {
                // [K, S*P] -> [S, K, P], adding the bias on the way.
                for n in 0..<samples {
                    let sample = out + (first + n) * outputCount
                    for k in 0..<filters {
                        VectorKernels.copy(result + k * wide + n * plane, to: sample + k * plane, count: plane, adding: bias?[k] ?? 0)
                    }
                }
            }
            first += samples
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        guard let input = savedInput else { preconditionFailure("Conv2D.backward called before forward") }
        if algorithm != .im2col, let winograd {
            let dInput = inputGradient.reserve(batch * inputShape.count)
            prepareInputGradient(dInput, count: batch * inputShape.count)
            winograd.backward(
                outputGradient, input: input, batch: batch, weightGradients: weightGradients, biasGradients: biasGradients,
                inputGradient: computesInputGradient ? dInput : nil)
            return dInput
        }
        if usesWideRows { return backwardOnWideRows(outputGradient, input: input, batch: batch) }
        let plane = outputPlane, patch = patchSize, filtersPerGroup = filters / groups
        let inputCount = inputShape.count, outputCount = outputShape.count
        // Bias gradient: per filter, the plane sums of samples 0, 1, ... added in that order.
        let biasTotals = hasBias ? biasScratch.reserve(filters) : nil
        biasTotals?.update(repeating: 0, count: filters)
        let dInput = inputGradient.reserve(batch * inputCount)
        if computesInputGradient {
            zeroedInputGradient = 0
        } else if zeroedInputGradient < batch * inputCount {
            dInput.update(repeating: 0, count: batch * inputCount)
            zeroedInputGradient = batch * inputCount
        }
        // dW may be computed transposed (whichever orientation the GEMM library runs faster),
        // and the sum is then added into dW once, after the last block.
        let weightTotals = Conv2D.transposesWeightGradient(patch: patch, filters: filtersPerGroup)
            ? weightGradientScratch.reserve(filters * patch) : nil
        let block = samplesPerBlock(batch: batch)
        let keep = keepsColumns
        let allColumns = columns.reserve(groups * patch * (keep ? batch : block) * plane)
        let gathered = block > 1 ? product.reserve(filters * block * plane) : nil
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), wide = samples * plane
            let cols = keep ? allColumns + groups * patch * first * plane : allColumns
            // The block's output gradient as [K, S*P], the layout of the forward GEMM's result.
            let gradient: UnsafePointer<Float>
            if samples == 1 {
                gradient = outputGradient + first * outputCount
                if let biasTotals {
                    for k in 0..<filters { biasTotals[k] += VectorKernels.sum(gradient + k * plane, count: plane) }
                }
            } else {
                let destination = gathered!
                for n in 0..<samples {
                    let sample = outputGradient + (first + n) * outputCount
                    for k in 0..<filters {
                        let total = VectorKernels.copySum(sample + k * plane, to: destination + k * wide + n * plane, count: plane)
                        biasTotals?[k] += total
                    }
                }
                gradient = UnsafePointer(destination)
            }
            if !keep {
                for n in 0..<samples {
                    im2col(input + (first + n) * inputCount, into: cols + n * plane, rowStride: wide)
                }
            }
            for g in 0..<groups {
                if let weightTotals {
                    // dW[g]^T [patch, K/g] (+)= cols[g] [patch, S*P] x dOut[g]^T [S*P, K/g]
                    BLAS.gemm(
                        transposeA: false, transposeB: true, m: patch, n: filtersPerGroup, k: wide,
                        a: cols + g * patch * wide, lda: wide,
                        b: gradient + g * filtersPerGroup * wide, ldb: wide,
                        beta: first == 0 ? 0 : 1, c: weightTotals + g * patch * filtersPerGroup, ldc: filtersPerGroup)
                } else {
                    // dW[g] [K/g, patch] += dOut[g] [K/g, S*P] x cols[g]^T [S*P, patch]
                    BLAS.gemm(
                        transposeA: false, transposeB: true, m: filtersPerGroup, n: patch, k: wide,
                        a: gradient + g * filtersPerGroup * wide, lda: wide,
                        b: cols + g * patch * wide, ldb: wide,
                        beta: 1, c: weightGradients + g * filtersPerGroup * patch, ldc: patch)
                }
            }
            if computesInputGradient {
                // The block's im2col matrix has served: it becomes the column gradient.
                for g in 0..<groups {
                    // dCols[g] [patch, S*P] = W[g]^T [patch, K/g] x dOut[g] [K/g, S*P]
                    BLAS.gemm(
                        transposeA: true, transposeB: false, m: patch, n: wide, k: filtersPerGroup,
                        a: weights + g * filtersPerGroup * patch, lda: patch,
                        b: gradient + g * filtersPerGroup * wide, ldb: wide,
                        beta: 0, c: cols + g * patch * wide, ldc: wide)
                }
                for n in 0..<samples {
                    col2im(cols + n * plane, rowStride: wide, into: dInput + (first + n) * inputCount)
                }
            }
            first += samples
        }
        // The first block wrote the totals (beta 0); with no samples there are none to add.
        if let weightTotals, batch > 0 {
            for g in 0..<groups {
                let totals = weightTotals + g * patch * filtersPerGroup
                for k in 0..<filtersPerGroup {
                    let row = weightGradients + (g * filtersPerGroup + k) * patch
                    for r in 0..<patch { row[r] += totals[r * filtersPerGroup + k] }
                }
            }
        }
        if let biasGradients, let biasTotals {
            for k in 0..<filters { biasGradients[k] += biasTotals[k] }
        }
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

    /// Unfolds one sample [C, H, W] into its P columns of the block's matrix: row (c, i, j) of
    /// `columns` (rows `rowStride` apart) gets, at position p, the input value output position p
    /// sees through tap (i, j) of channel c, zero where it falls in padding.
    ///
    /// Each channel is first copied into a zero-bordered plane, so every tap row is a plain
    /// (strided) copy with no bounds to check: at stride 1 a row of OW floats is a vector copy.
    /// Only that plane's interior is ever written, so its border stays as allocated: zero.
    private func im2col(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>, rowStride: Int) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        let paddedWidth = width + 2 * padding
        // Sixteen floats of slack after the plane for the vector gather at stride 2.
        let padded = paddedInput.reserve((height + 2 * padding) * paddedWidth + 16)
        var row = columns
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            let source: UnsafePointer<Float>
            if padding == 0 {
                source = plane
            } else {
                VectorKernels.copyRows(
                    plane, sourceStride: width, to: padded + padding * paddedWidth + padding, destinationStride: paddedWidth,
                    rows: height, count: width)
                source = UnsafePointer(padded)
            }
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    let tap = source + i * dilation * paddedWidth + j * dilation
                    if stride == 1 {
                        VectorKernels.copyRows(
                            tap, sourceStride: paddedWidth, to: row, destinationStride: outWidth, rows: outHeight, count: outWidth)
                    } else if stride == 2 && padding > 0 && outWidth >= 8 {
                        // Reads up to one float past a row's last tap: inside the padded plane's slack.
                        for oh in 0..<outHeight {
                            VectorKernels.copyEven(tap + oh * 2 * paddedWidth, to: row + oh * outWidth, count: outWidth)
                        }
                    } else {
                        for oh in 0..<outHeight {
                            let from = tap + oh * stride * paddedWidth
                            let to = row + oh * outWidth
                            for ow in 0..<outWidth { to[ow] = from[ow * stride] }
                        }
                    }
                    row += rowStride
                }
            }
        }
    }

    /// The adjoint of `im2col`: adds one sample's columns back onto [C, H, W], summing where
    /// windows overlap (in a zero-bordered plane whose border is then dropped). Visits taps in a
    /// fixed order, so sums are reproducible.
    private func col2im(_ columns: UnsafePointer<Float>, rowStride: Int, into image: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        let paddedWidth = width + 2 * padding
        let paddedCount = (height + 2 * padding) * paddedWidth
        let padded = paddedGradient.reserve(paddedCount + 16)
        var row = columns
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            // Without padding the plane itself collects the sums.
            let target = padding == 0 ? plane : padded
            VectorKernels.zero(target, count: padding == 0 ? height * width : paddedCount)
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    let tap = target + i * dilation * paddedWidth + j * dilation
                    if stride == 1 {
                        VectorKernels.addRows(
                            row, sourceStride: outWidth, to: tap, destinationStride: paddedWidth, rows: outHeight, count: outWidth)
                    } else if stride == 2 && padding > 0 {
                        for oh in 0..<outHeight {
                            VectorKernels.addToEven(row + oh * outWidth, to: tap + oh * 2 * paddedWidth, count: outWidth)
                        }
                    } else {
                        for oh in 0..<outHeight {
                            let to = tap + oh * stride * paddedWidth
                            let from = row + oh * outWidth
                            for ow in 0..<outWidth { to[ow * stride] += from[ow] }
                        }
                    }
                    row += rowStride
                }
            }
            if padding != 0 {
                VectorKernels.copyRows(
                    padded + padding * paddedWidth + padding, sourceStride: paddedWidth, to: plane, destinationStride: width,
                    rows: height, count: width)
            }
        }
    }

    // MARK: Wide rows

    /// Whether this layer computes on wide rows: output rows as wide as the padded input, so
    /// that every tap's row of the unfolded matrix is one contiguous run of the padded plane.
    ///
    /// At stride 1, output position (oh, ow) sees padded input (oh + i d, ow + j d) through tap
    /// (i, j). Computing OH rows of Wp = W + 2P columns instead of OW makes tap (i, j)'s row
    /// of the matrix the run of OH * Wp floats starting at (i d, j d): im2col becomes one block
    /// copy per tap, and col2im one long vector add per tap, instead of OH short row copies each.
    /// The (kw - 1) d extra columns per row cost as many extra GEMM columns and are dropped from
    /// the output; their gradient is set to zero, so they add exactly nothing backward. Worth it
    /// for wide planes (ResNet's 32x32 layers: 6% more arithmetic for a third less unfolding),
    /// and used only where one sample fills a cache block, so the GEMM runs per sample.
    private var usesWideRows: Bool {
        let paddedWidth = inputShape.width + 2 * padding
        let perSample = (patchSize + filters) * outputPlane * MemoryLayout<Float>.stride
        return stride == 1 && groups == 1 && Conv2D.blockBytes / perSample < 2
            && outputShape.width >= 16 && paddedWidth * 8 <= outputShape.width * 9
    }

    /// Wide rows of one sample: OH * Wp.
    private var widePlane: Int { outputShape.height * (inputShape.width + 2 * padding) }

    private func forwardOnWideRows(_ input: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let patch = patchSize, wide = widePlane
        let outWidth = outputShape.width, outHeight = outputShape.height, plane = outputPlane
        let paddedWidth = inputShape.width + 2 * padding
        let out = output.reserve(batch * outputShape.count)
        let cols = columns.reserve(patch * wide)
        let result = product.reserve(filters * wide)
        for n in 0..<batch {
            unfoldWide(input + n * inputShape.count, into: cols)
            // result [K, OH * Wp] = W [K, patch] x cols [patch, OH * Wp]
            BLAS.gemm(
                transposeA: false, transposeB: false, m: filters, n: wide, k: patch,
                a: weights, lda: patch, b: cols, ldb: wide, beta: 0, c: result, ldc: wide)
            // Drop the extra columns of each row, adding the bias on the way.
            let sample = out + n * outputShape.count
            for k in 0..<filters {
                let addend = bias?[k] ?? 0
                for oh in 0..<outHeight {
                    VectorKernels.copy(
                        result + k * wide + oh * paddedWidth, to: sample + k * plane + oh * outWidth, count: outWidth, adding: addend)
                }
            }
        }
        return out
    }

    private func backwardOnWideRows(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int
    ) -> UnsafeMutablePointer<Float> {
        let patch = patchSize, wide = widePlane, inputCount = inputShape.count
        let outWidth = outputShape.width, outHeight = outputShape.height, plane = outputPlane
        let paddedWidth = inputShape.width + 2 * padding
        let dInput = inputGradient.reserve(batch * inputCount)
        if computesInputGradient {
            zeroedInputGradient = 0
        } else if zeroedInputGradient < batch * inputCount {
            dInput.update(repeating: 0, count: batch * inputCount)
            zeroedInputGradient = batch * inputCount
        }
        let cols = columns.reserve(patch * wide)
        let gradient = product.reserve(filters * wide)   // [K, OH * Wp]
        let weightTotals = Conv2D.transposesWeightGradient(patch: patch, filters: filters)
            ? weightGradientScratch.reserve(filters * patch) : nil
        let biasTotals = hasBias ? biasScratch.reserve(filters) : nil
        biasTotals?.update(repeating: 0, count: filters)
        for n in 0..<batch {
            let dy = outputGradient + n * outputShape.count
            // The gradient on wide rows: zero in the extra columns, which then contribute nothing.
            for k in 0..<filters {
                if let biasTotals { biasTotals[k] += VectorKernels.sum(dy + k * plane, count: plane) }
                for oh in 0..<outHeight {
                    let row = gradient + k * wide + oh * paddedWidth
                    VectorKernels.copy(dy + k * plane + oh * outWidth, to: row, count: outWidth)
                    for extra in outWidth..<paddedWidth { row[extra] = 0 }
                }
            }
            unfoldWide(input + n * inputCount, into: cols)
            if let weightTotals {
                // dW^T [patch, K] (+)= cols [patch, OH * Wp] x dOut^T [OH * Wp, K]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: patch, n: filters, k: wide,
                    a: cols, lda: wide, b: gradient, ldb: wide, beta: n == 0 ? 0 : 1, c: weightTotals, ldc: filters)
            } else {
                // dW [K, patch] += dOut [K, OH * Wp] x cols^T [OH * Wp, patch]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: filters, n: patch, k: wide,
                    a: gradient, lda: wide, b: cols, ldb: wide, beta: 1, c: weightGradients, ldc: patch)
            }
            if computesInputGradient {
                // dCols [patch, OH * Wp] = W^T [patch, K] x dOut [K, OH * Wp]
                BLAS.gemm(
                    transposeA: true, transposeB: false, m: patch, n: wide, k: filters,
                    a: weights, lda: patch, b: gradient, ldb: wide, beta: 0, c: cols, ldc: wide)
                foldWide(cols, into: dInput + n * inputCount)
            }
        }
        if let weightTotals, batch > 0 {
            for k in 0..<filters {
                let row = weightGradients + k * patch
                for r in 0..<patch { row[r] += weightTotals[r * filters + k] }
            }
        }
        if let biasGradients, let biasTotals {
            for k in 0..<filters { biasGradients[k] += biasTotals[k] }
        }
        return dInput
    }

    /// Floats read past the padded plane by the last tap's run: (kw - 1) d, plus slack.
    private var wideSlack: Int { (kernelWidth - 1) * dilation + 16 }

    /// One sample [C, H, W] -> [patch, OH * Wp]: row (c, i, j) is the padded plane of channel c
    /// from (i d, j d) on. The run of the last taps reaches past the plane into its slack, which
    /// only the dropped extra columns see.
    private func unfoldWide(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let paddedWidth = width + 2 * padding, wide = widePlane
        let padded = paddedInput.reserve((height + 2 * padding) * paddedWidth + wideSlack)
        var row = columns
        for c in 0..<inputShape.channels {
            // Only the interior is ever written, so the border and slack stay as allocated: zero.
            VectorKernels.copyRows(
                image + c * height * width, sourceStride: width, to: padded + padding * paddedWidth + padding,
                destinationStride: paddedWidth, rows: height, count: width)
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    row.update(from: padded + (i * paddedWidth + j) * dilation, count: wide)
                    row += wide
                }
            }
        }
    }

    /// The adjoint of `unfoldWide`: adds each tap's run onto a zeroed padded plane, in tap order,
    /// and keeps the interior.
    private func foldWide(_ columns: UnsafePointer<Float>, into image: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let paddedWidth = width + 2 * padding, wide = widePlane
        let paddedCount = (height + 2 * padding) * paddedWidth + wideSlack
        let padded = paddedGradient.reserve(paddedCount)
        var row = columns
        for c in 0..<inputShape.channels {
            VectorKernels.zero(padded, count: paddedCount)
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    BLAS.axpy(count: wide, x: row, y: padded + (i * paddedWidth + j) * dilation)
                    row += wide
                }
            }
            VectorKernels.copyRows(
                padded + padding * paddedWidth + padding, sourceStride: paddedWidth, to: image + c * height * width,
                destinationStride: width, rows: height, count: width)
        }
    }
}
