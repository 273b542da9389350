// Legend for the kernels below: n sample, c input channel, k output channel (filter),
// xi = 4 i + j a position in a 4x4 tile (row i, column j), t a tile of a block (sample-major, then
// tile row ty, then tile column tx), T the tiles of a block.
//
// Tile planes and phases: a channel's padded input is laid out as rows of 2 * half floats, the
// row's even columns first, then its odd ones, and then cut into phase arrays, one for each
// (row parity, column 0-3 of a tile), holding one float per tile, tile after tile. Tile t's 16
// inputs are then at t or t + tileColumns of eight arrays, so every transform is one loop over
// all tiles of a plane, eight at a time, however narrow the plane (ResNet's 8x8 planes have four
// tiles a row), where the natural layout would read every other float, row by row.

/// Winograd minimal filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
/// Neural Networks", 2016) for 3x3, stride 1, dilation 1, ungrouped convolutions: forward and the
/// exact gradient of the same computation.
///
/// The output is cut into 2x2 tiles; each reads a 4x4 tile of the zero-padded input (tiles overlap
/// by two). With U = G g G^T per filter and channel and V = B^T d B per input tile, the 16
/// positions of a tile are independent: M[xi] = U[xi] x V[xi] is one GEMM [K, C] x [C, T] per
/// position, and the output tile is A^T M A. That is 16 multiplies per (filter, channel, tile)
/// where direct convolution needs 36: 2.25x less GEMM work, for the price of the transforms.
///
/// Backward is the adjoint of each step: dM = A dY A^T, dU[xi] = dM[xi] x V[xi]^T,
/// dW += G^T dU G, dV[xi] = U[xi]^T x dM[xi], and the input gradient is the overlap-add of
/// B dV B^T. V is recomputed in backward, block by block, rather than kept (it is four times the
/// input). U is kept from forward (each layer its own, or one for all the replicas of a model:
/// `SharedFilterTransforms`): computing it again in backward would save its memory but cost
/// about 2 ms per AlexNet layer, 2% of a training step, as it writes all of U again. dU, V, M
/// and the transforms' scratch live in the network's `LayerWorkspace` only during a call, so a
/// network holds one of each, as large as its largest layer needs, instead of a set per layer.
///
/// The batch is cut into blocks of samples whose V and M fit in the core's cache; sums across
/// blocks run in block order and everything else in an order fixed by the shapes, so results
/// depend on the micro-batch alone, never on threads.
///
/// Other tile sizes (`WinogradTile`, F(4x4, 3x3): 6x6 input tiles, 36 GEMMs) share the blocking,
/// the GEMMs and the bias; their transforms run from the matrices as data (section "Any tile
/// size" below), and F(2x2, 3x3) keeps the hand-written kernels above, which its small
/// transforms need to pay off at 16-32 channels.
final class WinogradConvolution {
    let channels: Int
    let filters: Int
    let height: Int
    let width: Int
    let padding: Int
    let outputHeight: Int
    let outputWidth: Int
    /// Tiles down and across one output plane: ceil(OH / m), ceil(OW / m).
    let tileRows: Int
    let tileColumns: Int
    /// F(2x2, 3x3) only: floats in each half (even columns, odd columns) of a tile-plane row: tileColumns + 1.
    let half: Int
    /// F(2x2, 3x3) only: rows of a tile plane: the padded input, plus a zero row when OH is odd.
    let planeRows: Int

    /// Where the scratch of one call lives: dU [(m + 2)^2, K, C] (or a range of its filters, see
    /// `weightGradientBytes`) in `weightGradientTotals`, one block's V [(m + 2)^2, C, T] (then
    /// dV) in `unfoldedInput`, its M [(m + 2)^2, K, T] (then dM) in `blockProducts`, and the
    /// general transforms' scratch in `gatheredTiles` and `partialTransforms`. Nothing in it
    /// outlives a call. The buffers below stay the layer's own: U lives from forward to
    /// backward, the others are small, and the planes count on borders that only they ever
    /// leave zero.
    var workspace: LayerWorkspace

    private let transformedWeights = FloatBuffer()         // U [(m + 2)^2, K, C] unless `sharedTransform` holds it
    /// Where the replicas of this layer's network keep its U once for all (see
    /// `SharedFilterTransforms`); nil when the layer computes its own in every forward pass.
    var sharedTransform: SharedFilterTransforms.Slot?
    /// The U of the last forward pass, which backward reuses.
    private var forwardTransform: UnsafePointer<Float>?
    private let plane = FloatBuffer()          // [planeRows, 2 * half]: one input channel as a tile plane
    private let phases = FloatBuffer()         // one channel or filter of one sample, by phase (see each transform)
    private let biasTotals = FloatBuffer()     // [K]

    /// Bytes of a block's V and M together: half of this machine's 2 MiB per-core cache (im2col
    /// blocks, `Conv2D.blockBytes`, measured best at a quarter).
    static let blockBytes = 1 << 20
    /// Least tiles per block for tiles larger than 2x2 (even past `blockBytes`): below that,
    /// 36 GEMMs with N of 16 tiles (one AlexNet sample) spend their time packing U; with one
    /// sample per block AlexNet's 13x13 layers (batch 8) took about twice im2col's time, with
    /// 64 tiles 0.64-0.69 of it.
    static let minimumBlockTiles = 64
    /// Most bytes of dU a backward call holds at once. A workspace keeps the room it has grown
    /// to for as long as its network (one per model replica), and the whole dU [(m + 2)^2, K, C]
    /// of AlexNet's 384 x 384 F(4x4, 3x3) layer is 20.25 MiB; a larger dU is computed for a range
    /// of filters at a time, each added into dW at once. 4 MiB is about one block's V or M in
    /// that layer (3.4 MiB), so dU no longer sets the workspace's size, and leaves AlexNet's
    /// chunks 64 to 96 filters: rows enough for the GEMMs to run as fast as one GEMM of all
    /// filters (measured: no difference beyond the noise).
    static let weightGradientBytes = 4 << 20

    /// Where input column w (padded column x = w + P) lies in a phase-ordered padded row:
    /// (x % m) (TC + 1) + x / m (see "Any tile size").
    let inputColumnTargets: [Int]
    /// The tile size and its transform matrices.
    let tile: WinogradTile
    /// Positions of an input tile, one GEMM each: (m + 2)^2.
    let positions: Int

    private let paddedPlane = FloatBuffer()    // [m TR + 2, m TC + 2]: one channel of one sample inside a zero border
    private let foldPlane = FloatBuffer()      // the same shape: one channel's input gradient, border included
    // The workspace's gatheredTiles, [(m + 2)^2, T + slack]: one channel's input tiles (or one
    // filter's output tiles) of a block; partialTransforms, the same shape: them after the first
    // of the two 1-D transforms.
    private var gathered: FloatBuffer { workspace.gatheredTiles }
    private var partial: FloatBuffer { workspace.partialTransforms }

    /// A layer's Winograd computation; `workspace` is where its calls keep their scratch (a new
    /// one of its own unless given).
    init(
        channels: Int, filters: Int, height: Int, width: Int, padding: Int, tile: WinogradTile = .f2x3,
        workspace: LayerWorkspace = LayerWorkspace()
    ) {
        self.workspace = workspace
        self.tile = tile
        positions = tile.inputSize * tile.inputSize
        self.channels = channels
        self.filters = filters
        self.height = height
        self.width = width
        self.padding = padding
        outputHeight = height + 2 * padding - 2
        outputWidth = width + 2 * padding - 2
        tileRows = (outputHeight + tile.outputSize - 1) / tile.outputSize
        tileColumns = (outputWidth + tile.outputSize - 1) / tile.outputSize
        half = tileColumns + 1
        planeRows = 2 * tileRows + 2
        let m = tile.outputSize, phase = tileColumns + 1
        inputColumnTargets = (0..<width).map { w in ((w + padding) % m) * phase + (w + padding) / m }
    }

    private var tilesPerSample: Int { tileRows * tileColumns }
    private var rowLength: Int { 2 * half }

    /// Samples per block: as many as fit `blockBytes`, at least one, and for large tiles at
    /// least enough for `minimumBlockTiles`.
    func samplesPerBlock(batch: Int) -> Int {
        let perSample = positions * (channels + filters) * tilesPerSample * MemoryLayout<Float>.stride
        let fitting = WinogradConvolution.blockBytes / max(perSample, 1)
        if tile.outputSize == 2 { return max(1, min(batch, fitting)) }
        let enough = (WinogradConvolution.minimumBlockTiles + tilesPerSample - 1) / max(tilesPerSample, 1)
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
        let block = samplesPerBlock(batch: batch), perSample = tilesPerSample, positions = positions
        // Slack after V and M for the eight-wide loads past a sample's last tile.
        let v = workspace.unfoldedInput.reserve(positions * channels * block * perSample + 8)
        let m = workspace.blockProducts.reserve(positions * filters * block * perSample + 8)
        let inputCount = channels * height * width, outputCount = filters * outputHeight * outputWidth
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), count = samples * perSample
            if tile.outputSize == 2 {
                for s in 0..<samples {
                    transformInput(input + (first + s) * inputCount, into: v + s * perSample, tileStride: count)
                }
            } else {
                transformInputBlock(input + first * inputCount, samples: samples, into: v)
            }
            for xi in 0..<positions {
                // M[xi] [K, T] = U[xi] [K, C] x V[xi] [C, T]
                BLAS.gemm(
                    transposeA: false, transposeB: false, m: filters, n: count, k: channels,
                    a: u + xi * filters * channels, lda: channels, b: v + xi * channels * count, ldb: count,
                    beta: 0, c: m + xi * filters * count, ldc: count)
            }
            if tile.outputSize == 2 {
                for s in 0..<samples {
                    transformOutput(m + s * perSample, tileStride: count, bias: bias, into: output + (first + s) * outputCount)
                }
            } else {
                transformOutputBlock(m, samples: samples, bias: bias, into: output + first * outputCount)
            }
            first += samples
        }
    }

    /// U [(m + 2)^2, K, C] for `weights` [K, C, 3, 3]: computed now into the layer's own buffer,
    /// or the shared one, computed by whichever replica needed it first since the weights changed.
    private func transformedFilters(_ weights: UnsafePointer<Float>) -> UnsafePointer<Float> {
        guard let sharedTransform else {
            transformWeights(weights, into: transformedWeights)
            return UnsafePointer(transformedWeights.pointer)
        }
        return sharedTransform.transformed(tileOutputSize: tile.outputSize) { transformWeights(weights, into: $0) }
    }

    private func transformWeights(_ weights: UnsafePointer<Float>, into target: FloatBuffer) {
        if tile.outputSize == 2 {
            transformWeightsSmall(weights, into: target)
        } else {
            transformWeightsGenerally(weights, into: target)
        }
    }

    /// U[xi][k][c] = (G g G^T) for every 3x3 filter g = W[k][c], with
    /// G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    private func transformWeightsSmall(_ weights: UnsafePointer<Float>, into target: FloatBuffer) {
        let u = target.reserve(16 * filters * channels)
        let step = filters * channels
        for k in 0..<filters {
            for c in 0..<channels {
                let g = weights + (k * channels + c) * 9
                // g G^T, row by row: [3, 4].
                var rows = (SIMD4<Float>(), SIMD4<Float>(), SIMD4<Float>())
                for r in 0..<3 {
                    let a = g[3 * r], b = g[3 * r + 1], e = g[3 * r + 2]
                    let row = SIMD4<Float>(a, (a + b + e) * 0.5, (a - b + e) * 0.5, e)
                    switch r {
                    case 0: rows.0 = row
                    case 1: rows.1 = row
                    default: rows.2 = row
                    }
                }
                // G (g G^T): [4, 4], row i giving positions 4 i ..< 4 i + 4.
                let target = u + k * channels + c
                for i in 0..<4 {
                    let row: SIMD4<Float>
                    switch i {
                    case 0: row = rows.0
                    case 1: row = (rows.0 + rows.1 + rows.2) * 0.5
                    case 2: row = (rows.0 - rows.1 + rows.2) * 0.5
                    default: row = rows.2
                    }
                    for j in 0..<4 { target[(4 * i + j) * step] = row[j] }
                }
            }
        }
    }

    /// Copies one channel [H, W] into the interior of a tile plane (rows and columns shifted by
    /// the padding); the rest of the plane is never written, so it stays as allocated: zero.
    private func spread(_ channel: UnsafePointer<Float>, into target: UnsafeMutablePointer<Float>) {
        let length = rowLength, p = padding
        // Input column w lands on padded column p + w: even ones in the first half, odd in the second.
        let evenStart = (p & 1) * half + (p >> 1)            // where w = 0 lands
        let oddStart = ((p + 1) & 1) * half + ((p + 1) >> 1) // where w = 1 lands
        for h in 0..<height {
            let source = channel + h * width, row = target + (h + p) * length
            let toEven = row + evenStart, toOdd = row + oddStart
            deinterleave(source, into: toEven, toOdd, pairs: width / 2, odd: width & 1 == 1)
        }
    }

    /// V[xi][c][t] = (B^T d B) for every 4x4 tile d of one sample [C, H, W], written at `base`
    /// (this sample's first tile) with rows of `tileStride` tiles, where
    /// B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
    ///
    /// Each channel goes through a tile plane into eight phase arrays: phase (rp, j) holds, for
    /// every tile, the value in column j of its rows with parity rp, tile after tile. Tile t's row
    /// i is then phase (i % 2) at t + (i / 2) tileColumns, so the transform is one loop over all
    /// tiles of the plane, eight at a time, whatever the plane's width.
    private func transformInput(_ image: UnsafePointer<Float>, into base: UnsafeMutablePointer<Float>, tileStride: Int) {
        let length = rowLength, columns = tileColumns, positionStep = channels * tileStride
        let count = tilesPerSample, stride = phaseStride
        let p = plane.reserve(planeRows * length)
        let q = phases.reserve(8 * stride)
        for c in 0..<channels {
            spread(image + c * height * width, into: p)
            for r in 0..<planeRows {
                let even = p + r * length, odd = even + half
                let target = q + 4 * (r & 1) * stride + (r >> 1) * columns
                VectorKernels.copy(even, to: target, count: columns)
                VectorKernels.copy(odd, to: target + stride, count: columns)
                VectorKernels.copy(even + 1, to: target + 2 * stride, count: columns)
                VectorKernels.copy(odd + 1, to: target + 3 * stride, count: columns)
            }
            let out = base + c * tileStride
            var t = 0
            while t < count {
                let n = min(8, count - t)
                // Rows 0 and 2 of the tiles come from the even-row phases, 1 and 3 from the odd.
                let top = q + t, bottom = top + columns
                let d00 = load(top), d01 = load(top + stride), d02 = load(top + 2 * stride), d03 = load(top + 3 * stride)
                let d10 = load(top + 4 * stride), d11 = load(top + 5 * stride)
                let d12 = load(top + 6 * stride), d13 = load(top + 7 * stride)
                let d20 = load(bottom), d21 = load(bottom + stride), d22 = load(bottom + 2 * stride), d23 = load(bottom + 3 * stride)
                let d30 = load(bottom + 4 * stride), d31 = load(bottom + 5 * stride)
                let d32 = load(bottom + 6 * stride), d33 = load(bottom + 7 * stride)
                // B^T d: rows r0 - r2, r1 + r2, r2 - r1, r1 - r3.
                let a0 = d00 - d20, a1 = d01 - d21, a2 = d02 - d22, a3 = d03 - d23
                let b0 = d10 + d20, b1 = d11 + d21, b2 = d12 + d22, b3 = d13 + d23
                let e0 = d20 - d10, e1 = d21 - d11, e2 = d22 - d12, e3 = d23 - d13
                let f0 = d10 - d30, f1 = d11 - d31, f2 = d12 - d32, f3 = d13 - d33
                // (B^T d) B: the same combination along each row.
                var o = out + t
                store(a0 - a2, o, n); o += positionStep
                store(a1 + a2, o, n); o += positionStep
                store(a2 - a1, o, n); o += positionStep
                store(a1 - a3, o, n); o += positionStep
                store(b0 - b2, o, n); o += positionStep
                store(b1 + b2, o, n); o += positionStep
                store(b2 - b1, o, n); o += positionStep
                store(b1 - b3, o, n); o += positionStep
                store(e0 - e2, o, n); o += positionStep
                store(e1 + e2, o, n); o += positionStep
                store(e2 - e1, o, n); o += positionStep
                store(e1 - e3, o, n); o += positionStep
                store(f0 - f2, o, n); o += positionStep
                store(f1 + f2, o, n); o += positionStep
                store(f2 - f1, o, n); o += positionStep
                store(f1 - f3, o, n)
                t += 8
            }
        }
    }

    /// Floats in each phase array: (tileRows + 1) rows of tileColumns, and slack for the last
    /// eight-wide load.
    private var phaseStride: Int { (tileRows + 1) * tileColumns + 8 }

    @inline(__always)
    private func load(_ pointer: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(pointer).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// Stores the first `count` lanes (all eight when `count` >= 8).
    @inline(__always)
    private func store(_ value: SIMD8<Float>, _ pointer: UnsafeMutablePointer<Float>, _ count: Int) {
        if count >= 8 {
            UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: SIMD8<Float>.self)
        } else {
            for lane in 0..<count { pointer[lane] = value[lane] }
        }
    }

    /// One sample's output [K, OH, OW] = A^T M A for every tile, plus bias, from its products at
    /// `base` (rows of `tileStride` tiles), where A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. Outputs of
    /// a partial last tile (odd OH or OW) are dropped. Reads up to seven floats past the last
    /// tile of a row (the product buffer has that slack).
    private func transformOutput(
        _ base: UnsafePointer<Float>, tileStride: Int, bias: UnsafePointer<Float>?, into output: UnsafeMutablePointer<Float>
    ) {
        let columns = tileColumns, positionStep = filters * tileStride, count = tilesPerSample
        let plane = outputHeight * outputWidth, fullPairs = outputWidth / 2, oddWidth = outputWidth & 1 == 1
        let stride = count + 8
        let y = phases.reserve(4 * stride)
        let y00 = y, y01 = y + stride, y10 = y + 2 * stride, y11 = y + 3 * stride
        for k in 0..<filters {
            let m = base + k * tileStride
            var t = 0
            while t < count {
                let n = min(8, count - t)
                var p = m + t
                let m00 = load(p); p += positionStep
                let m01 = load(p); p += positionStep
                let m02 = load(p); p += positionStep
                let m03 = load(p); p += positionStep
                let m10 = load(p); p += positionStep
                let m11 = load(p); p += positionStep
                let m12 = load(p); p += positionStep
                let m13 = load(p); p += positionStep
                let m20 = load(p); p += positionStep
                let m21 = load(p); p += positionStep
                let m22 = load(p); p += positionStep
                let m23 = load(p); p += positionStep
                let m30 = load(p); p += positionStep
                let m31 = load(p); p += positionStep
                let m32 = load(p); p += positionStep
                let m33 = load(p)
                // A^T M: rows m0 + m1 + m2 and m1 - m2 - m3; then the same along each row.
                let u0 = m00 + m10 + m20, u1 = m01 + m11 + m21, u2 = m02 + m12 + m22, u3 = m03 + m13 + m23
                let v0 = m10 - m20 - m30, v1 = m11 - m21 - m31, v2 = m12 - m22 - m32, v3 = m13 - m23 - m33
                store(u0 + u1 + u2, y00 + t, n)
                store(u1 - u2 - u3, y01 + t, n)
                store(v0 + v1 + v2, y10 + t, n)
                store(v1 - v2 - v3, y11 + t, n)
                t += 8
            }
            let addend = bias?[k] ?? 0
            for ty in 0..<tileRows {
                let top = output + k * plane + 2 * ty * outputWidth, tile = ty * columns
                interleave(y00 + tile, y01 + tile, into: top, pairs: fullPairs, odd: oddWidth, adding: addend)
                if 2 * ty + 1 < outputHeight {
                    interleave(y10 + tile, y11 + tile, into: top + outputWidth, pairs: fullPairs, odd: oddWidth, adding: addend)
                }
            }
        }
    }

    /// row[2 x] = left[x] + addend, row[2 x + 1] = right[x] + addend for x < pairs, then one more
    /// left value when the row is odd.
    @inline(__always)
    private func interleave(
        _ left: UnsafePointer<Float>, _ right: UnsafePointer<Float>, into row: UnsafeMutablePointer<Float>, pairs: Int,
        odd: Bool, adding addend: Float
    ) {
        let shift = SIMD8<Float>(repeating: addend)
        var x = 0
        while x + 8 <= pairs {
            let l = load(left + x) + shift, r = load(right + x) + shift
            let both = SIMD16<Float>(l[0], r[0], l[1], r[1], l[2], r[2], l[3], r[3], l[4], r[4], l[5], r[5], l[6], r[6], l[7], r[7])
            UnsafeMutableRawPointer(row + 2 * x).storeBytes(of: both, as: SIMD16<Float>.self)
            x += 8
        }
        while x < pairs {
            row[2 * x] = left[x] + addend
            row[2 * x + 1] = right[x] + addend
            x += 1
        }
        if odd { row[2 * pairs] = left[pairs] + addend }
    }

    /// even[x] = row[2 x] and odd[x] = row[2 x + 1] for x < pairs, then even[pairs] = row[2 pairs]
    /// when the row is odd.
    @inline(__always)
    private func deinterleave(
        _ row: UnsafePointer<Float>, into even: UnsafeMutablePointer<Float>, _ odd: UnsafeMutablePointer<Float>, pairs: Int,
        odd oddLength: Bool
    ) {
        var x = 0
        while x + 8 <= pairs {
            let both = UnsafeRawPointer(row + 2 * x).loadUnaligned(as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(even + x).storeBytes(of: both.evenHalf, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(odd + x).storeBytes(of: both.oddHalf, as: SIMD8<Float>.self)
            x += 8
        }
        while x < pairs {
            even[x] = row[2 * x]
            odd[x] = row[2 * x + 1]
            x += 1
        }
        if oddLength { even[pairs] = row[2 * pairs] }
    }

    // MARK: Backward

    /// Adds the weight gradient [K, C, 3, 3] and (when given) the bias gradient [K] of the last
    /// forward pass for the output gradient [N, K, OH, OW], and writes the input gradient
    /// [N, C, H, W] when `inputGradient` is given. `forward` must have run on the same input and
    /// weights (its U is reused).
    ///
    /// When the whole dU fits `weightGradientBytes`, dU is summed over the blocks and transformed
    /// into dW once. Otherwise each block computes dU for `weightGradientChunkFilters` filters
    /// at a time and adds that chunk's G^T dU G into dW before the next: with several blocks dW
    /// then sums transformed blocks rather than transforming the sum, which rounds differently
    /// but is just as fixed by the shapes and the micro-batch.
    func backward(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int,
        weightGradients: UnsafeMutablePointer<Float>, biasGradients: UnsafeMutablePointer<Float>?,
        inputGradient: UnsafeMutablePointer<Float>?
    ) {
        guard let u = forwardTransform else { preconditionFailure("Winograd backward called before forward") }
        let positions = positions
        let chunkFilters = weightGradientChunkFilters, chunked = chunkFilters < filters
        let du = workspace.weightGradientTotals.reserve(positions * chunkFilters * channels + 8)
        let block = samplesPerBlock(batch: batch), perSample = tilesPerSample
        // Slack after V and M for the eight-wide loads past a sample's last tile.
        let v = workspace.unfoldedInput.reserve(positions * channels * block * perSample + 8)
        let m = workspace.blockProducts.reserve(positions * filters * block * perSample + 8)
        let inputCount = channels * height * width, plane = outputHeight * outputWidth, outputCount = filters * plane
        let totals = biasGradients == nil ? nil : biasTotals.reserve(filters)
        totals?.update(repeating: 0, count: filters)
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), count = samples * perSample
            for s in 0..<samples {
                let gradient = outputGradient + (first + s) * outputCount
                if let totals {
                    for k in 0..<filters { totals[k] += VectorKernels.sum(gradient + k * plane, count: plane) }
                }
                if tile.outputSize == 2 {
                    transformOutputGradient(gradient, into: m + s * perSample, tileStride: count)
                    transformInput(input + (first + s) * inputCount, into: v + s * perSample, tileStride: count)
                }
            }
            if tile.outputSize != 2 {
                transformOutputGradientBlock(outputGradient + first * outputCount, samples: samples, into: m)
                transformInputBlock(input + first * inputCount, samples: samples, into: v)
            }
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
                if tile.outputSize == 2 {
                    for s in 0..<samples {
                        foldTiles(v + s * perSample, tileStride: count, into: inputGradient + (first + s) * inputCount)
                    }
                } else {
                    foldTilesBlock(v, samples: samples, into: inputGradient + first * inputCount)
                }
            }
            first += samples
        }
        // The first block wrote dU (beta 0); with no samples there is nothing to add. Chunks
        // were added as they came.
        if batch > 0 && !chunked {
            addWeightGradient(du, filters: filters, to: weightGradients)
        }
        if let biasGradients, let totals {
            for k in 0..<filters { biasGradients[k] += totals[k] }
        }
    }

    /// dM[xi][k][t] = (A dY A^T) for every 2x2 tile of one sample's output gradient [K, OH, OW],
    /// zero beyond the output (a partial tile's dropped outputs have no gradient).
    private func transformOutputGradient(
        _ gradient: UnsafePointer<Float>, into base: UnsafeMutablePointer<Float>, tileStride: Int
    ) {
        let columns = tileColumns, positionStep = filters * tileStride, plane = outputHeight * outputWidth
        let pairs = outputWidth / 2, oddWidth = outputWidth & 1 == 1, count = tilesPerSample
        // The gradient plane split by row and column parity, tile after tile: [4, T + 8].
        let stride = count + 8
        let g = phases.reserve(4 * stride)
        let topEven = g, topOdd = g + stride, bottomEven = g + 2 * stride, bottomOdd = g + 3 * stride
        for k in 0..<filters {
            for ty in 0..<tileRows {
                let top = gradient + k * plane + 2 * ty * outputWidth, tile = ty * columns
                split(top, into: topEven + tile, topOdd + tile, pairs: pairs, odd: oddWidth)
                if 2 * ty + 1 < outputHeight {
                    split(top + outputWidth, into: bottomEven + tile, bottomOdd + tile, pairs: pairs, odd: oddWidth)
                } else {
                    VectorKernels.zero(bottomEven + tile, count: columns)
                    VectorKernels.zero(bottomOdd + tile, count: columns)
                }
            }
            var o = base + k * tileStride
            var t = 0
            while t < count {
                let n = min(8, count - t)
                let a = load(topEven + t), b = load(topOdd + t), c = load(bottomEven + t), d = load(bottomOdd + t)
                // A dY: rows (a, b), (a + c, b + d), (a - c, b - d), (-c, -d); then each row (p, q)
                // times A^T gives (p, p + q, p - q, -q).
                let p1 = a + c, q1 = b + d, p2 = a - c, q2 = b - d
                var out = o
                store(a, out, n); out += positionStep
                store(a + b, out, n); out += positionStep
                store(a - b, out, n); out += positionStep
                store(-b, out, n); out += positionStep
                store(p1, out, n); out += positionStep
                store(p1 + q1, out, n); out += positionStep
                store(p1 - q1, out, n); out += positionStep
                store(-q1, out, n); out += positionStep
                store(p2, out, n); out += positionStep
                store(p2 + q2, out, n); out += positionStep
                store(p2 - q2, out, n); out += positionStep
                store(-q2, out, n); out += positionStep
                store(-c, out, n); out += positionStep
                store(-c - d, out, n); out += positionStep
                store(d - c, out, n); out += positionStep
                store(d, out, n)
                t += 8
                o += 8
            }
        }
    }

    /// even[x] = row[2 x], odd[x] = row[2 x + 1], with odd[pairs] = 0 when the row is odd.
    @inline(__always)
    private func split(
        _ row: UnsafePointer<Float>, into even: UnsafeMutablePointer<Float>, _ odd: UnsafeMutablePointer<Float>, pairs: Int,
        odd oddLength: Bool
    ) {
        deinterleave(row, into: even, odd, pairs: pairs, odd: oddLength)
        if oddLength { odd[pairs] = 0 }
    }

    /// One sample's input gradient [C, H, W]: the overlap-add of B dV B^T over its tiles (the
    /// adjoint of `transformInput`), read from `base` with rows of `tileStride` tiles (and up to
    /// seven floats of slack past a row's last tile).
    ///
    /// Each tile's 4x4 contribution is first stored by phase, as `transformInput` reads them: its
    /// rows 0 and 1 in `upper` phases, rows 2 and 3 in `lower` ones. A plane row then sums the
    /// upper phases of its own tile row and the lower ones of the tile row above, and a column
    /// the phases of its own tile column and the one to its left: every sum in a fixed order.
    private func foldTiles(_ base: UnsafePointer<Float>, tileStride: Int, into image: UnsafeMutablePointer<Float>) {
        let columns = tileColumns, positionStep = channels * tileStride, count = tilesPerSample
        let stride = count + 8
        let scratch = phases.reserve(16 * stride + 6 * (half + 8))
        let upper = scratch, lower = scratch + 8 * stride
        // Four phase rows with a zero before and after ([4, tileColumns + 2]), then a plane row
        // as even and odd halves.
        let extended = columns + 2
        let rowPhases = scratch + 16 * stride, even = rowPhases + 4 * extended, odd = even + half
        for j in 0..<4 {
            rowPhases[j * extended] = 0
            rowPhases[j * extended + columns + 1] = 0
        }
        let p = padding
        let evenStart = (p & 1) * half + (p >> 1), oddStart = ((p + 1) & 1) * half + ((p + 1) >> 1)
        for c in 0..<channels {
            let source = base + c * tileStride
            var t = 0
            while t < count {
                let n = min(8, count - t)
                var s = source + t
                let q00 = load(s); s += positionStep
                let q01 = load(s); s += positionStep
                let q02 = load(s); s += positionStep
                let q03 = load(s); s += positionStep
                let q10 = load(s); s += positionStep
                let q11 = load(s); s += positionStep
                let q12 = load(s); s += positionStep
                let q13 = load(s); s += positionStep
                let q20 = load(s); s += positionStep
                let q21 = load(s); s += positionStep
                let q22 = load(s); s += positionStep
                let q23 = load(s); s += positionStep
                let q30 = load(s); s += positionStep
                let q31 = load(s); s += positionStep
                let q32 = load(s); s += positionStep
                let q33 = load(s)
                // The adjoint of B^T d: rows T0, T1 - T2 + T3, T1 + T2 - T0, -T3 (per column j).
                let r00 = q00, r01 = q01, r02 = q02, r03 = q03
                let r10 = q10 - q20 + q30, r11 = q11 - q21 + q31, r12 = q12 - q22 + q32, r13 = q13 - q23 + q33
                let r20 = q10 + q20 - q00, r21 = q11 + q21 - q01, r22 = q12 + q22 - q02, r23 = q13 + q23 - q03
                let r30 = -q30, r31 = -q31, r32 = -q32, r33 = -q33
                // The adjoint of (.) B along each row: columns v0, v1 - v2 + v3, v1 + v2 - v0, -v3.
                var u = upper + t
                store(r00, u, n); u += stride
                store(r01 - r02 + r03, u, n); u += stride
                store(r01 + r02 - r00, u, n); u += stride
                store(-r03, u, n); u += stride
                store(r10, u, n); u += stride
                store(r11 - r12 + r13, u, n); u += stride
                store(r11 + r12 - r10, u, n); u += stride
                store(-r13, u, n)
                var l = lower + t
                store(r20, l, n); l += stride
                store(r21 - r22 + r23, l, n); l += stride
                store(r21 + r22 - r20, l, n); l += stride
                store(-r23, l, n); l += stride
                store(r30, l, n); l += stride
                store(r31 - r32 + r33, l, n); l += stride
                store(r31 + r32 - r30, l, n); l += stride
                store(-r33, l, n)
                t += 8
            }
            let channel = image + c * height * width
            for h in 0..<height {
                // Plane row r = h + P: parity rp, in tile rows r / 2 (upper) and r / 2 - 1 (lower).
                let r = h + p, rp = r & 1, y = r >> 1
                for j in 0..<4 {
                    let target = rowPhases + j * extended + 1
                    let fromUpper = upper + (4 * rp + j) * stride + y * columns
                    let fromLower = lower + (4 * rp + j) * stride + (y - 1) * columns
                    if y == 0 {
                        VectorKernels.copy(fromUpper, to: target, count: columns)
                    } else if y == tileRows {
                        VectorKernels.copy(fromLower, to: target, count: columns)
                    } else {
                        VectorKernels.sum(fromUpper, fromLower, into: target, count: columns, rectified: false)
                    }
                }
                // Column 2 x gets phase 0 of tile x and phase 2 of tile x - 1; 2 x + 1 phases 1 and 3.
                VectorKernels.sum(rowPhases + 1, rowPhases + 2 * extended, into: even, count: half, rectified: false)
                VectorKernels.sum(rowPhases + extended + 1, rowPhases + 3 * extended, into: odd, count: half, rectified: false)
                let target = channel + h * width, fromEven = even + evenStart, fromOdd = even + oddStart
                interleave(fromEven, fromOdd, into: target, pairs: width / 2, odd: width & 1 == 1, adding: 0)
            }
        }
    }

    /// Filters per dU chunk: all of them when the whole dU fits `weightGradientBytes`, else the
    /// fewest equal chunks (the last one smaller) that each fit, at least one filter.
    var weightGradientChunkFilters: Int {
        let perFilter = positions * channels * MemoryLayout<Float>.stride
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
        var first = 0
        while first < filters {
            let chunk = min(chunkFilters, filters - first)
            for xi in 0..<positions {
                // dU[xi] [Kc, C] = dM[xi] rows [Kc, T] x V[xi]^T [T, C]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: chunk, n: channels, k: count,
                    a: m + (xi * filters + first) * count, lda: count, b: v + xi * channels * count, ldb: count,
                    beta: 0, c: du + xi * chunk * channels, ldc: channels)
            }
            addWeightGradient(du, filters: chunk, to: weightGradients + first * channels * 9)
            first += chunk
        }
    }

    /// dW[k][c] += G^T dU[k][c] G for `count` filters of dU [(m + 2)^2, count, C] and of
    /// `weightGradients` [count, C, 3, 3], with whichever transform the tile has.
    private func addWeightGradient(_ du: UnsafePointer<Float>, filters count: Int, to weightGradients: UnsafeMutablePointer<Float>) {
        if tile.outputSize == 2 {
            addWeightGradientSmall(du, filters: count, to: weightGradients)
        } else {
            addWeightGradientGenerally(du, filters: count, to: weightGradients)
        }
    }

    /// dW[k][c] += G^T dU[k][c] G (3x3) for `count` filters, the adjoint of `transformWeights`.
    private func addWeightGradientSmall(_ du: UnsafePointer<Float>, filters count: Int, to weightGradients: UnsafeMutablePointer<Float>) {
        let step = count * channels
        for k in 0..<count {
            for c in 0..<channels {
                let source = du + k * channels + c
                // dU G, row by row: [4, 3]. G's columns give d0 + (d1 + d2)/2, (d1 - d2)/2, d3 + (d1 + d2)/2.
                var r = (SIMD3<Float>(), SIMD3<Float>(), SIMD3<Float>(), SIMD3<Float>())
                for i in 0..<4 {
                    let d0 = source[(4 * i) * step], d1 = source[(4 * i + 1) * step]
                    let d2 = source[(4 * i + 2) * step], d3 = source[(4 * i + 3) * step]
                    let middle = (d1 + d2) * 0.5
                    let row = SIMD3<Float>(d0 + middle, (d1 - d2) * 0.5, d3 + middle)
                    switch i {
                    case 0: r.0 = row
                    case 1: r.1 = row
                    case 2: r.2 = row
                    default: r.3 = row
                    }
                }
                // G^T (dU G): the same combination down the rows.
                let middle = (r.1 + r.2) * 0.5
                let result = (r.0 + middle, (r.1 - r.2) * 0.5, r.3 + middle)
                let target = weightGradients + (k * channels + c) * 9
                for j in 0..<3 {
                    target[j] += result.0[j]
                    target[3 + j] += result.1[j]
                    target[6 + j] += result.2[j]
                }
            }
        }
    }
}

/// One Winograd tile size F(m x m, 3x3) as data: B^T [(m + 2), (m + 2)], G [(m + 2), 3] and
/// A^T [m, (m + 2)], so that a tile's output is A^T ((G g G^T) * (B^T d B)) A.
struct WinogradTile: Sendable {
    /// m: outputs per tile side.
    let outputSize: Int
    /// m + 2: inputs per tile side.
    var inputSize: Int { outputSize + 2 }
    let inputTransform: LinearMap   // B^T
    let weightTransform: LinearMap  // G
    let outputTransform: LinearMap  // A^T
    // Their transposes, for the adjoint passes (kept, so that no pass builds them).
    let inputAdjoint: LinearMap     // B
    let weightAdjoint: LinearMap    // G^T
    let outputAdjoint: LinearMap    // A

    init(outputSize: Int, inputTransform: [[Float]], weightTransform: [[Float]], outputTransform: [[Float]]) {
        self.outputSize = outputSize
        self.inputTransform = LinearMap(inputTransform)
        self.weightTransform = LinearMap(weightTransform)
        self.outputTransform = LinearMap(outputTransform)
        inputAdjoint = self.inputTransform.transposed
        weightAdjoint = self.weightTransform.transposed
        outputAdjoint = self.outputTransform.transposed
    }

    /// F(2x2, 3x3) with interpolation points 0, 1, -1 (Lavin & Gray 2016).
    static let f2x3 = WinogradTile(
        outputSize: 2,
        inputTransform: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        weightTransform: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
        outputTransform: [[1, 1, 1, 0], [0, 1, -1, -1]])

    /// F(4x4, 3x3) with interpolation points 0, 1, -1, 2, -2 (Lavin & Gray 2016).
    static let f4x3 = WinogradTile(
        outputSize: 4,
        inputTransform: [
            [4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
            [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1],
        ],
        weightTransform: [
            [1.0 / 4, 0, 0], [-1.0 / 6, -1.0 / 6, -1.0 / 6], [-1.0 / 6, 1.0 / 6, -1.0 / 6],
            [1.0 / 24, 1.0 / 12, 1.0 / 6], [1.0 / 24, -1.0 / 12, 1.0 / 6], [0, 0, 1],
        ],
        outputTransform: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]])
}

/// A small matrix kept as the nonzero entries of each row, to apply to vectors of many tiles at
/// once: out[r] = sum over the row's entries of value * in[column].
struct LinearMap: Sendable {
    let rows: Int
    let columns: Int
    /// Row r's entries are rowStarts[r] ..< rowStarts[r + 1] of `entryColumns` and `entryValues`.
    let rowStarts: [Int]
    let entryColumns: [Int]
    let entryValues: [Float]

    init(_ dense: [[Float]]) {
        rows = dense.count
        columns = dense.first?.count ?? 0
        var starts = [0], entries: [Int] = [], values: [Float] = []
        for row in dense {
            for (column, value) in row.enumerated() where value != 0 {
                entries.append(column)
                values.append(value)
            }
            starts.append(entries.count)
        }
        rowStarts = starts
        entryColumns = entries
        entryValues = values
    }

    /// The transpose, for the adjoint passes.
    var transposed: LinearMap {
        var dense = [[Float]](repeating: [Float](repeating: 0, count: rows), count: columns)
        for r in 0..<rows {
            for e in rowStarts[r]..<rowStarts[r + 1] { dense[entryColumns[e]][r] = entryValues[e] }
        }
        return LinearMap(dense)
    }
}

// MARK: Any tile size, from the matrices

// Legend: a block's tiles are handled one channel (or filter) at a time, as vectors over all the
// block's tiles (samples one after another), so every transform is a few multiply-adds of long
// contiguous rows, whatever the plane's width. A tile's positions are xi = inputSize i + j (input
// side) or outputSize i + j (output side).
extension WinogradConvolution {
    /// Y = L X R^T, where X is a [L.columns, R.columns] grid of vectors of `count` tiles (grid
    /// position p = i R.columns + j at input + p inputStride) and Y a [L.rows, R.rows] one
    /// (position a R.rows + b at output + (a R.rows + b) outputStride), through `scratch`
    /// ([L.rows, R.columns] rows of `scratchStride`). Reads up to seven floats past the last
    /// tile of each row (the buffers have that slack).
    fileprivate func apply(
        _ left: LinearMap, _ right: LinearMap, _ input: UnsafePointer<Float>, inputStride: Int,
        into output: UnsafeMutablePointer<Float>, outputStride: Int, count: Int, scratch: UnsafeMutablePointer<Float>,
        scratchStride: Int
    ) {
        // Along the first axis: scratch[a, j] = sum_i L[a, i] X[i, j].
        for a in 0..<left.rows {
            for j in 0..<right.columns {
                combine(
                    left, row: a, input + j * inputStride, stride: right.columns * inputStride,
                    into: scratch + (a * right.columns + j) * scratchStride, count: count)
            }
        }
        // Along the second: out[a, b] = sum_j R[b, j] scratch[a, j].
        for a in 0..<left.rows {
            for b in 0..<right.rows {
                combine(
                    right, row: b, scratch + a * right.columns * scratchStride, stride: scratchStride,
                    into: output + (a * right.rows + b) * outputStride, count: count)
            }
        }
    }

    /// target[t] = sum over row `row` of `map` of value * (source + column stride)[t], t < count.
    @inline(__always)
    fileprivate func combine(
        _ map: LinearMap, row: Int, _ source: UnsafePointer<Float>, stride: Int, into target: UnsafeMutablePointer<Float>,
        count: Int
    ) {
        let start = map.rowStarts[row], end = map.rowStarts[row + 1]
        map.entryColumns.withUnsafeBufferPointer { columns in
            map.entryValues.withUnsafeBufferPointer { values in
                var t = 0
                while t < count {
                    var sum = SIMD8<Float>()
                    for e in start..<end {
                        sum += SIMD8<Float>(repeating: values[e]) * load(source + columns[e] * stride + t)
                    }
                    store(sum, target + t, count - t)
                    t += 8
                }
            }
        }
    }

    /// Floats between positions in the gathered and partial buffers for `count` tiles.
    fileprivate func scratchStride(_ count: Int) -> Int { (count + 7) / 8 * 8 + 8 }

    // Padded planes are m TR + 2 rows (H + 2P rows and more, as OH = H + 2P - 2) of m TC + 2
    // columns, each row stored by phase: padded column x at (x % m) phaseLength + x / m
    // (`inputColumnTargets`). Column j
    // of a tile row's tiles is then one contiguous run (phase j % m from j / m), so gathering
    // and scattering tiles are eight-wide copies, not strided loops.

    /// Floats per phase of a padded row: TC + 1 (a tile's last columns reach one past its phase).
    fileprivate var phaseLength: Int { tileColumns + 1 }
    fileprivate var paddedRowLength: Int { tile.outputSize * phaseLength }
    fileprivate var paddedHeight: Int { tile.outputSize * tileRows + 2 }


    /// V[xi][c][t] = B^T d B for every input tile d of `samples` samples from `images` [S, C, H, W],
    /// the block's tiles as rows of S * tiles-per-sample.
    func transformInputBlock(_ images: UnsafePointer<Float>, samples: Int, into v: UnsafeMutablePointer<Float>) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.inputSize, m = tile.outputSize, rowLength = paddedRowLength, phase = phaseLength
        let columns = tileColumns
        // Slack for the eight-wide reads past a phase's end.
        let plane = paddedPlane.reserve(paddedHeight * rowLength + 8)
        let d = gathered.reserve(positions * stride)
        let e = partial.reserve(positions * stride)
        let inputCount = channels * height * width
        for c in 0..<channels {
            for s in 0..<samples {
                // The border is never written, so it stays zero.
                let channel = images + s * inputCount + c * height * width
                inputColumnTargets.withUnsafeBufferPointer { targets in
                    for h in 0..<height {
                        let source = channel + h * width, row = plane + (h + padding) * rowLength
                        for w in 0..<width { row[targets[w]] = source[w] }
                    }
                }
                // Each run of a tile row is copied eight at a time; a copy's overshoot lands where
                // the next run (or the row's slack) is written afterwards.
                let base = d + s * perSample
                for i in 0..<size {
                    for j in 0..<size {
                        let target = base + (i * size + j) * stride
                        let from = plane + i * rowLength + (j % m) * phase + j / m
                        for ty in 0..<tileRows {
                            let source = from + m * ty * rowLength, row = target + ty * columns
                            var tx = 0
                            while tx < columns {
                                UnsafeMutableRawPointer(row + tx).storeBytes(of: load(source + tx), as: SIMD8<Float>.self)
                                tx += 8
                            }
                        }
                    }
                }
            }
            let b = tile.inputTransform
            apply(b, b, d, inputStride: stride, into: v + c * count, outputStride: channels * count, count: count, scratch: e, scratchStride: stride)
        }
    }

    /// Every sample's output [K, OH, OW] = A^T M A per tile, plus bias, for a block of `samples`
    /// samples from M [xi][k][t]; outputs of partial tiles past the plane are dropped.
    func transformOutputBlock(
        _ m: UnsafePointer<Float>, samples: Int, bias: UnsafePointer<Float>?, into output: UnsafeMutablePointer<Float>
    ) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.outputSize, plane = outputHeight * outputWidth, outputCount = filters * plane
        let y = gathered.reserve(positions * stride)
        let e = partial.reserve(positions * stride)
        let a = tile.outputTransform
        for k in 0..<filters {
            apply(a, a, m + k * count, inputStride: filters * count, into: y, outputStride: stride, count: count, scratch: e, scratchStride: stride)
            let addend = bias?[k] ?? 0
            for s in 0..<samples {
                let target = output + s * outputCount + k * plane, base = y + s * perSample
                for i in 0..<size {
                    for ty in 0..<tileRows where size * ty + i < outputHeight {
                        let row = target + (size * ty + i) * outputWidth
                        for j in 0..<size {
                            let source = base + (i * size + j) * stride + ty * tileColumns
                            var tx = 0, x = j
                            while x < outputWidth {
                                row[x] = source[tx] + addend
                                tx += 1
                                x += size
                            }
                        }
                    }
                }
            }
        }
    }

    /// dM[xi][k][t] = A dY A^T for every output tile of a block's output gradient [S, K, OH, OW],
    /// zero past the plane (a partial tile's dropped outputs have no gradient).
    func transformOutputGradientBlock(_ gradient: UnsafePointer<Float>, samples: Int, into m: UnsafeMutablePointer<Float>) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.outputSize, plane = outputHeight * outputWidth, outputCount = filters * plane
        let y = gathered.reserve(positions * stride)
        let e = partial.reserve(positions * stride)
        let a = tile.outputAdjoint
        for k in 0..<filters {
            for s in 0..<samples {
                let source = gradient + s * outputCount + k * plane, base = y + s * perSample
                for i in 0..<size {
                    for j in 0..<size {
                        let target = base + (i * size + j) * stride
                        for ty in 0..<tileRows {
                            let r = size * ty + i, row = target + ty * tileColumns
                            if r >= outputHeight {
                                for tx in 0..<tileColumns { row[tx] = 0 }
                                continue
                            }
                            let from = source + r * outputWidth
                            for tx in 0..<tileColumns {
                                let x = size * tx + j
                                row[tx] = x < outputWidth ? from[x] : 0
                            }
                        }
                    }
                }
            }
            apply(a, a, y, inputStride: stride, into: m + k * count, outputStride: filters * count, count: count, scratch: e, scratchStride: stride)
        }
    }

    /// A block's input gradient [S, C, H, W]: the overlap-add of B dV B^T over its tiles (the
    /// adjoint of `transformInputBlock`), tiles added in their order.
    func foldTilesBlock(_ v: UnsafePointer<Float>, samples: Int, into images: UnsafeMutablePointer<Float>) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.inputSize, m = tile.outputSize, rowLength = paddedRowLength, phase = phaseLength
        let columns = tileColumns, planeCount = paddedHeight * rowLength
        let plane = foldPlane.reserve(planeCount + 8)
        let d = gathered.reserve(positions * stride)
        let e = partial.reserve(positions * stride)
        let b = tile.inputAdjoint
        let inputCount = channels * height * width
        for c in 0..<channels {
            apply(b, b, v + c * count, inputStride: channels * count, into: d, outputStride: stride, count: count, scratch: e, scratchStride: stride)
            for s in 0..<samples {
                VectorKernels.zero(plane, count: planeCount)
                let base = d + s * perSample
                for i in 0..<size {
                    for j in 0..<size {
                        let source = base + (i * size + j) * stride
                        let into = plane + i * rowLength + (j % m) * phase + j / m
                        for ty in 0..<tileRows {
                            let target = into + m * ty * rowLength, row = source + ty * columns
                            var tx = 0
                            while tx < columns {
                                store(load(target + tx) + load(row + tx), target + tx, columns - tx)
                                tx += 8
                            }
                        }
                    }
                }
                let channel = images + s * inputCount + c * height * width
                inputColumnTargets.withUnsafeBufferPointer { targets in
                    for h in 0..<height {
                        let target = channel + h * width, row = plane + (h + padding) * rowLength
                        for w in 0..<width { target[w] = row[targets[w]] }
                    }
                }
            }
        }
    }

    /// (k, c) pairs per piece of the general weight transforms. Taken all at once, their taps and
    /// partial sums need scratch of 27 rows of K C floats, three quarters of U (16 MiB for one
    /// of AlexNet's layers); a piece at a time, 27 rows of this. Every pair is computed by the
    /// same operations in either case, so the bits do not change.
    static let weightPairsPerPiece = 4096

    /// U[xi][k][c] = G g G^T for every filter g = W[k][c], as vectors over (k, c) pairs, a piece
    /// at a time.
    func transformWeightsGenerally(_ weights: UnsafePointer<Float>, into target: FloatBuffer) {
        let pairs = filters * channels, piece = min(pairs, WinogradConvolution.weightPairsPerPiece)
        let stride = scratchStride(piece)
        let u = target.reserve(positions * pairs + 8)
        let taps = gathered.reserve(max(positions, 9) * stride)
        let e = partial.reserve(positions * stride)
        let g = tile.weightTransform
        var start = 0
        while start < pairs {
            let count = min(piece, pairs - start)
            // [K C, 9] -> [9, K C], this piece's pairs
            for pair in 0..<count {
                for tap in 0..<9 { taps[tap * stride + pair] = weights[(start + pair) * 9 + tap] }
            }
            apply(
                g, g, taps, inputStride: stride, into: u + start, outputStride: pairs, count: count, scratch: e,
                scratchStride: stride)
            start += count
        }
    }

    /// dW[k][c] += G^T dU[k][c] G for `count` filters of dU [(m + 2)^2, count, C] and of
    /// `weightGradients` [count, C, 3, 3], the adjoint of `transformWeightsGenerally`, a piece of
    /// pairs at a time. dU needs eight floats of slack past its end.
    func addWeightGradientGenerally(_ du: UnsafePointer<Float>, filters count: Int, to weightGradients: UnsafeMutablePointer<Float>) {
        let pairs = count * channels, piece = min(pairs, WinogradConvolution.weightPairsPerPiece)
        let stride = scratchStride(piece)
        let taps = gathered.reserve(max(positions, 9) * stride)
        let e = partial.reserve(positions * stride)
        let g = tile.weightAdjoint
        var start = 0
        while start < pairs {
            let count = min(piece, pairs - start)
            apply(
                g, g, du + start, inputStride: pairs, into: taps, outputStride: stride, count: count, scratch: e,
                scratchStride: stride)
            for pair in 0..<count {
                for tap in 0..<9 { weightGradients[(start + pair) * 9 + tap] += taps[tap * stride + pair] }
            }
            start += count
        }
    }
}
