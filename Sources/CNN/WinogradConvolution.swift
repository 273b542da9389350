// Legend: n sample, c input channel, k output channel (filter), xi a position of an input tile,
// t a tile of a block (sample-major, then tile row ty, then tile column tx), T the tiles of a block.

/// Winograd minimal filtering F(m x m, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
/// Neural Networks", 2016) for 3x3, stride 1, dilation 1, ungrouped convolutions: forward and the
/// exact gradient of the same computation. The tile size is the type of its `Kernels`:
/// `WinogradF2x2` or `WinogradF4x4`.
///
/// The output is cut into m x m tiles; each reads an (m + 2) x (m + 2) tile of the zero-padded
/// input (tiles overlap by two). With U = G g G^T per filter and channel and V = B^T d B per input
/// tile, the (m + 2)^2 positions of a tile are independent: M[xi] = U[xi] x V[xi] is one GEMM
/// [K, C] x [C, T] per position, and the output tile is A^T M A. F(2x2, 3x3) makes 16 multiplies
/// per (filter, channel, tile) where direct convolution needs 36 (2.25x less GEMM work),
/// F(4x4, 3x3) 36 where it needs 144 (4x), for the price of the transforms.
///
/// Backward is the adjoint of each step: dM = A dY A^T, dU[xi] = dM[xi] x V[xi]^T,
/// dW += G^T dU G, dV[xi] = U[xi]^T x dM[xi], and the input gradient is the overlap-add of
/// B dV B^T. V is recomputed in backward, block by block, rather than kept (it is four times the
/// input or more). U is kept from forward (each layer its own, or one for all the replicas of a
/// model: `SharedFilterTransforms`): computing it again in backward would save its memory but
/// write all of U again every step (`cnn bench --model alexnet --threads 1` shows the layer
/// rates). dU, V, M and the transforms' scratch live in the network's `LayerWorkspace` only
/// during a call, so a network holds one of each, as large as its largest layer needs, instead
/// of a set per layer.
///
/// The batch is cut into blocks of samples whose V and M fit in the core's cache; sums across
/// blocks run in block order and everything else in an order fixed by the shapes, so results
/// depend on the micro-batch alone, never on threads.
final class WinogradConvolution<Kernels: WinogradKernels>: ConvolutionComputation {
    let geometry: WinogradGeometry
    /// The transforms of this tile size, with the buffers only they write (tile planes whose
    /// borders they count on staying zero).
    private let kernels: Kernels

    /// Where the scratch of one call lives: dU [(m + 2)^2, K, C] (or a range of its filters, see
    /// `weightGradientBytes`) in `weightGradientTotals`, one block's V [(m + 2)^2, C, T] (then dV)
    /// in `unfoldedInput`, its M [(m + 2)^2, K, T] (then dM) in `blockProducts`, and the kernels'
    /// scratch. Nothing in it outlives a call; U lives from forward to backward, so it stays the
    /// layer's own.
    var workspace: LayerWorkspace

    private let transformedWeights = FloatBuffer()  // U [(m + 2)^2, K, C] unless `sharedTransform` holds it
    /// Where the replicas of this layer's network keep its U once for all (see
    /// `SharedFilterTransforms`); nil when the layer computes its own in every forward pass.
    private let sharedTransform: SharedFilterTransforms.Slot?
    /// The U of the last forward pass, which backward reuses.
    private var forwardTransform: UnsafePointer<Float>?
    private let biasTotals = FloatBuffer()          // [K]

    /// Bytes of a block's V and M together: half of this machine's 2 MiB per-core cache (im2col
    /// blocks, `Im2colConvolution.blockBytes`, run best at a quarter).
    static var blockBytes: Int { 1 << 20 }
    /// Most bytes of dU a backward call holds at once. A workspace keeps the room it has grown
    /// to for as long as its network (one per model replica), and the whole dU [(m + 2)^2, K, C]
    /// of AlexNet's 384 x 384 F(4x4, 3x3) layer is 20.25 MiB; a larger dU is computed for a range
    /// of filters at a time, each added into dW at once. 4 MiB is about one block's V or M in
    /// that layer (3.4 MiB), so dU no longer sets the workspace's size, and leaves AlexNet's
    /// chunks 64 to 96 filters: rows enough for the GEMMs to run as fast as one GEMM of all
    /// filters (`cnn bench --model alexnet --threads 1` shows the layer rates).
    static var weightGradientBytes: Int { 4 << 20 }

    /// A layer's Winograd computation; `workspace` is where its calls keep their scratch.
    init(geometry: WinogradGeometry, workspace: LayerWorkspace, sharedTransform: SharedFilterTransforms.Slot?) {
        precondition(geometry.outputSize == Kernels.outputSize, "a geometry of \(geometry.outputSize)x\(geometry.outputSize) tiles")
        self.geometry = geometry
        kernels = Kernels(geometry: geometry)
        self.workspace = workspace
        self.sharedTransform = sharedTransform
    }

    /// Nothing beyond the layer's input and output: V is computed again in backward.
    var keptFloatsPerSample: Int { 0 }

    /// Samples per block: as many as fit `blockBytes`, at least one, and at least enough for
    /// the kernels' `minimumBlockTiles`.
    func samplesPerBlock(batch: Int) -> Int {
        let perSample = geometry.positions * (geometry.channels + geometry.filters) * geometry.tilesPerSample
            * MemoryLayout<Float>.stride
        let fitting = WinogradConvolution.blockBytes / max(perSample, 1)
        let tiles = geometry.tilesPerSample
        let enough = (Kernels.minimumBlockTiles + tiles - 1) / max(tiles, 1)
        return max(1, min(batch, max(fitting, enough)))
    }

    // MARK: Forward

    /// output [N, K, OH, OW] = input [N, C, H, W] convolved with weights [K, C, 3, 3], plus bias [K].
    func forward(
        _ input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        into output: UnsafeMutablePointer<Float>
    ) {
        let u = transformedFilters(weights)
        forwardTransform = u
        let channels = geometry.channels, filters = geometry.filters, positions = geometry.positions
        let block = samplesPerBlock(batch: batch), perSample = geometry.tilesPerSample
        // Slack after V and M for the eight-wide loads past a sample's last tile.
        let v = workspace.unfoldedInput.reserve(positions * channels * block * perSample + 8)
        let m = workspace.blockProducts.reserve(positions * filters * block * perSample + 8)
        let inputCount = channels * geometry.height * geometry.width
        let outputCount = filters * geometry.outputHeight * geometry.outputWidth
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), count = samples * perSample
            kernels.transformInput(input + first * inputCount, samples: samples, into: v, scratch: workspace)
            for xi in 0..<positions {
                // M[xi] [K, T] = U[xi] [K, C] x V[xi] [C, T]
                BLAS.gemm(
                    transposeA: false, transposeB: false, m: filters, n: count, k: channels,
                    a: u + xi * filters * channels, lda: channels, b: v + xi * channels * count, ldb: count,
                    beta: 0, c: m + xi * filters * count, ldc: count)
            }
            kernels.transformOutput(m, samples: samples, bias: bias, into: output + first * outputCount, scratch: workspace)
            first += samples
        }
    }

    /// U [(m + 2)^2, K, C] for `weights` [K, C, 3, 3]: computed now into the layer's own buffer,
    /// or the shared one, computed by whichever replica needed it first since the weights changed.
    private func transformedFilters(_ weights: UnsafePointer<Float>) -> UnsafePointer<Float> {
        guard let sharedTransform else {
            kernels.transformWeights(weights, into: transformedWeights, scratch: workspace)
            return UnsafePointer(transformedWeights.pointer)
        }
        return sharedTransform.transformed(tileOutputSize: Kernels.outputSize) {
            kernels.transformWeights(weights, into: $0, scratch: workspace)
        }
    }

    // MARK: Backward

    /// Adds the weight gradient [K, C, 3, 3] and (when given) the bias gradient [K] of the last
    /// forward pass for the output gradient [N, K, OH, OW], and writes the input gradient
    /// [N, C, H, W] when `inputGradient` is given. `forward` must have run on the same input and
    /// weights (its U is reused; `weights` is not read).
    ///
    /// When the whole dU fits `weightGradientBytes`, dU is summed over the blocks and transformed
    /// into dW once. Otherwise each block computes dU for `weightGradientChunkFilters` filters
    /// at a time and adds that chunk's G^T dU G into dW before the next: with several blocks dW
    /// then sums transformed blocks rather than transforming the sum, which rounds differently
    /// but is just as fixed by the shapes and the micro-batch.
    func backward(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>,
        weightGradients: UnsafeMutablePointer<Float>, biasGradients: UnsafeMutablePointer<Float>?,
        inputGradient: UnsafeMutablePointer<Float>?
    ) {
        guard let u = forwardTransform else { preconditionFailure("Winograd backward called before forward") }
        let channels = geometry.channels, filters = geometry.filters, positions = geometry.positions
        let chunkFilters = weightGradientChunkFilters, chunked = chunkFilters < filters
        let du = workspace.weightGradientTotals.reserve(positions * chunkFilters * channels + 8)
        let block = samplesPerBlock(batch: batch), perSample = geometry.tilesPerSample
        // Slack after V and M for the eight-wide loads past a sample's last tile.
        let v = workspace.unfoldedInput.reserve(positions * channels * block * perSample + 8)
        let m = workspace.blockProducts.reserve(positions * filters * block * perSample + 8)
        let inputCount = channels * geometry.height * geometry.width
        let plane = geometry.outputHeight * geometry.outputWidth, outputCount = filters * plane
        let totals = biasGradients == nil ? nil : biasTotals.reserve(filters)
        totals?.update(repeating: 0, count: filters)
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), count = samples * perSample
            if let totals {
                for s in 0..<samples {
                    let gradient = outputGradient + (first + s) * outputCount
                    for k in 0..<filters { totals[k] += VectorKernels.sum(gradient + k * plane, count: plane) }
                }
            }
            kernels.transformOutputGradient(outputGradient + first * outputCount, samples: samples, into: m, scratch: workspace)
            kernels.transformInput(input + first * inputCount, samples: samples, into: v, scratch: workspace)
            if chunked {
                addBlockWeightGradient(m, v, count: count, chunkFilters: chunkFilters, into: du, weightGradients: weightGradients)
            } else {
                for xi in 0..<positions {
                    // dU[xi] [K, C] (+)= dM[xi] [K, T] x V[xi]^T [T, C]
                    BLAS.gemm(
                        transposeA: false, transposeB: true, m: filters, n: channels, k: count,
                        a: m + xi * filters * count, lda: count, b: v + xi * channels * count, ldb: count,
                        beta: first == 0 ? 0 : 1, c: du + xi * filters * channels, ldc: channels)
                }
            }
            if let inputGradient {
                // V has served: it becomes dV.
                for xi in 0..<positions {
                    // dV[xi] [C, T] = U[xi]^T [C, K] x dM[xi] [K, T]
                    BLAS.gemm(
                        transposeA: true, transposeB: false, m: channels, n: count, k: filters,
                        a: u + xi * filters * channels, lda: channels, b: m + xi * filters * count, ldb: count,
                        beta: 0, c: v + xi * channels * count, ldc: count)
                }
                kernels.foldTiles(v, samples: samples, into: inputGradient + first * inputCount, scratch: workspace)
            }
            first += samples
        }
        // The first block wrote dU (beta 0); with no samples there is nothing to add. Chunks
        // were added as they came.
        if batch > 0 && !chunked {
            kernels.addWeightGradient(du, filters: filters, to: weightGradients, scratch: workspace)
        }
        if let biasGradients, let totals {
            for k in 0..<filters { biasGradients[k] += totals[k] }
        }
    }

    /// Filters per dU chunk: all of them when the whole dU fits `weightGradientBytes`, else the
    /// fewest equal chunks (the last one smaller) that each fit, at least one filter.
    var weightGradientChunkFilters: Int {
        let filters = geometry.filters
        let perFilter = geometry.positions * geometry.channels * MemoryLayout<Float>.stride
        let fitting = max(1, WinogradConvolution.weightGradientBytes / max(perFilter, 1))
        guard fitting < filters else { return filters }
        let chunks = (filters + fitting - 1) / fitting
        return (filters + chunks - 1) / chunks
    }

    /// One block's weight gradient added into dW a chunk of `chunkFilters` filters at a time:
    /// dU [(m + 2)^2, Kc, C] for filters k0 ..< k0 + Kc (rows k0 ..< k0 + Kc of each dM[xi], one
    /// contiguous run) into `du`, then G^T dU G into those filters' slab of dW [K, C, 3, 3].
    private func addBlockWeightGradient(
        _ m: UnsafePointer<Float>, _ v: UnsafePointer<Float>, count: Int, chunkFilters: Int,
        into du: UnsafeMutablePointer<Float>, weightGradients: UnsafeMutablePointer<Float>
    ) {
        let channels = geometry.channels, filters = geometry.filters
        var first = 0
        while first < filters {
            let chunk = min(chunkFilters, filters - first)
            for xi in 0..<geometry.positions {
                // dU[xi] [Kc, C] = dM[xi] rows [Kc, T] x V[xi]^T [T, C]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: chunk, n: channels, k: count,
                    a: m + (xi * filters + first) * count, lda: count, b: v + xi * channels * count, ldb: count,
                    beta: 0, c: du + xi * chunk * channels, ldc: channels)
            }
            kernels.addWeightGradient(du, filters: chunk, to: weightGradients + first * channels * 9, scratch: workspace)
            first += chunk
        }
    }
}
