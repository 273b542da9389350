/// The shape of a convolution, as its compute paths read it.
struct ConvolutionGeometry {
    let inputShape: FeatureShape
    let outputShape: FeatureShape
    let kernelHeight: Int
    let kernelWidth: Int
    let stride: Int
    let padding: Int
    let dilation: Int
    let groups: Int

    var filters: Int { outputShape.channels }
    /// Rows of the im2col matrix per group: (C / groups) * kh * kw.
    var patchSize: Int { inputShape.channels / groups * kernelHeight * kernelWidth }
    var outputPlane: Int { outputShape.height * outputShape.width }
}

/// One way of computing a convolution's passes. A `Conv2D` makes one when it is built
/// (`Conv2D.makeComputation`), and again only when told to `use` another algorithm or to share
/// its filter transforms, never per call.
protocol ConvolutionComputation: AnyObject {
    /// Where the calls keep their scratch: the layer's until a network binds the one its layers share.
    var workspace: LayerWorkspace { get set }
    /// Floats per sample that forward keeps for backward, besides the layer's input and output.
    var keptFloatsPerSample: Int { get }
    /// output [N, K, OH, OW] = input [N, C, H, W] convolved with weights, plus bias [K] when given.
    func forward(
        _ input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        into output: UnsafeMutablePointer<Float>)
    /// Adds the weight gradient and (when given) the bias gradient of the last forward pass, whose
    /// input and weights were `input` and `weights`, and writes the input gradient [N, C, H, W] when `inputGradient` is given.
    func backward(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>,
        weightGradients: UnsafeMutablePointer<Float>, biasGradients: UnsafeMutablePointer<Float>?,
        inputGradient: UnsafeMutablePointer<Float>?)
}

/// The two im2col computations, `Im2colConvolution` and `WideRowConvolution`, with the shape
/// they read by name.
protocol UnfoldingConvolution: ConvolutionComputation {
    var geometry: ConvolutionGeometry { get }
}

extension UnfoldingConvolution {
    var inputShape: FeatureShape { geometry.inputShape }
    var outputShape: FeatureShape { geometry.outputShape }
    var filters: Int { geometry.filters }
    var kernelHeight: Int { geometry.kernelHeight }
    var kernelWidth: Int { geometry.kernelWidth }
    var stride: Int { geometry.stride }
    var padding: Int { geometry.padding }
    var dilation: Int { geometry.dilation }
    var groups: Int { geometry.groups }
    var patchSize: Int { geometry.patchSize }
    var outputPlane: Int { geometry.outputPlane }
}

extension Conv2D {
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
    }

    /// Whether `use(.winograd)` and `use(.winograd4x4)` are allowed: a 3x3 kernel at stride 1, dilation 1, with one group.
    public var supportsWinograd: Bool {
        kernelHeight == 3 && kernelWidth == 3 && stride == 1 && dilation == 1 && groups == 1
    }

    /// The computation for `algorithm`: Winograd of its tile size, or im2col, on wide rows where
    /// those pay (`usesWideRows`); in bf16 oneDNN's bf16 convolution primitives
    /// (`OneDNNConvolution`), or im2col with bf16 GEMMs where those suit the layer better
    /// (`OneDNNConvolution.suits`), oneDNN has only reference code for its shapes, or
    /// `bfloat16Kernel` asks for them. Called when a layer is built and when its
    /// algorithm, precision or bf16 kernel changes.
    static func makeComputation(
        _ algorithm: Algorithm, geometry: ConvolutionGeometry, workspace: LayerWorkspace,
        sharedTransform: SharedFilterTransforms.Slot?, precision: Precision, bfloat16Kernel: Conv2D.BFloat16Kernel
    ) -> any ConvolutionComputation {
        if precision == .bf16 {
            if bfloat16Kernel == .oneDNNConvolution, OneDNNConvolution.suits(geometry),
               let direct = OneDNNConvolution(geometry: geometry, workspace: workspace) {
                return direct
            }
            return usesWideRows(geometry)
                ? WideRowConvolution(geometry: geometry, workspace: workspace, precision: precision)
                : Im2colConvolution(geometry: geometry, workspace: workspace, precision: precision)
        }
        func winograd<Kernels: WinogradKernels>(_: Kernels.Type) -> any ConvolutionComputation {
            let input = geometry.inputShape
            return WinogradConvolution<Kernels>(
                geometry: WinogradGeometry(
                    channels: input.channels, filters: geometry.filters, height: input.height, width: input.width,
                    padding: geometry.padding, outputSize: Kernels.outputSize),
                workspace: workspace, sharedTransform: sharedTransform)
        }
        switch algorithm {
        case .winograd: return winograd(WinogradF2x2.self)
        case .winograd4x4: return winograd(WinogradF4x4.self)
        case .im2col where usesWideRows(geometry): return WideRowConvolution(geometry: geometry, workspace: workspace)
        case .im2col: return Im2colConvolution(geometry: geometry, workspace: workspace)
        }
    }

    /// Whether an im2col convolution computes on wide rows (`WideRowConvolution`): at stride 1
    /// without groups, where one sample fills a cache block (so the GEMM runs per sample anyway),
    /// on planes at least 16 wide whose padding adds at most an eighth to each row.
    static func usesWideRows(_ geometry: ConvolutionGeometry) -> Bool {
        let output = geometry.outputShape
        let paddedWidth = geometry.inputShape.width + 2 * geometry.padding
        let perSample = (geometry.patchSize + geometry.filters) * geometry.outputPlane * MemoryLayout<Float>.stride
        return geometry.stride == 1 && geometry.groups == 1 && Im2colConvolution.blockBytes / perSample < 2
            && output.width >= 16 && paddedWidth * 8 <= output.width * 9
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

        /// With oneDNN's AVX-512 GEMM, whose speed leaves the transforms more weight than
        /// OpenBLAS's does (`cnn bench --model resnet20 --model alexnet --threads 1` shows the layer rates).
        public static let oneDNN = AlgorithmThresholds(winograd: 20, largeTiles: 40, largeTilesWithPartialTiles: 128)

        /// With OpenBLAS's Haswell kernel, slower than oneDNN's, so Winograd pays from smaller layers
        /// (`CNN_GEMM=openblas cnn bench --model resnet20 --model alexnet --threads 1` shows the layer rates).
        public static let openBLAS = AlgorithmThresholds(winograd: 9, largeTiles: 40, largeTilesWithPartialTiles: 96)
    }
}
