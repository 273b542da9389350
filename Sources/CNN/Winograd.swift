// Legend for the kernels below: n sample, c input channel, k output channel (filter),
// xi = 4 i + j a position in a 4x4 tile (row i, column j), t a tile of a block (sample-major, then
// tile row ty, then tile column tx), T the tiles of a block.
//
// Tile planes: one channel's padded input (or input gradient) as rows of 2 * half floats, the
// plane's even columns first, then its odd columns. A tile starts at an even column 2 tx, so its
// four columns are even[tx], odd[tx], even[tx + 1], odd[tx + 1]: every step of the transforms
// reads and writes contiguous runs over tx, which vectorise, where the natural layout would read
// every other float.

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
/// input).
///
/// The batch is cut into blocks of samples whose V and M fit in the core's cache; sums across
/// blocks run in block order and everything else in an order fixed by the shapes, so results
/// depend on the micro-batch alone, never on threads.
final class WinogradConvolution {
    let channels: Int
    let filters: Int
    let height: Int
    let width: Int
    let padding: Int
    let outputHeight: Int
    let outputWidth: Int
    /// Tiles down and across one output plane: ceil(OH / 2), ceil(OW / 2).
    let tileRows: Int
    let tileColumns: Int
    /// Floats in each half (even columns, odd columns) of a tile-plane row: tileColumns + 1.
    let half: Int
    /// Rows of a tile plane: the padded input, plus a zero row when OH is odd.
    let planeRows: Int

    private let transformedWeights = FloatBuffer()         // U [16, K, C]
    private let transformedWeightGradient = FloatBuffer()  // dU [16, K, C]
    private let tiles = FloatBuffer()          // V [16, C, T]: one block's input tiles, then dV
    private let products = FloatBuffer()       // M [16, K, T]: one block's products, then dM
    private let plane = FloatBuffer()          // [planeRows, 2 * half]: one input channel as a tile plane
    private let gradientPlane = FloatBuffer()  // [planeRows, 2 * half]: one channel's input gradient as a tile plane
    private let stage = FloatBuffer()          // [4, 2 * half] or [4, tileColumns]: one tile row between two steps
    private let biasTotals = FloatBuffer()     // [K]

    /// Bytes of a block's V and M together: half of this machine's 2 MiB per-core cache, as
    /// for im2col blocks (Conv2D.blockBytes).
    static let blockBytes = 1 << 20

    init(channels: Int, filters: Int, height: Int, width: Int, padding: Int) {
        self.channels = channels
        self.filters = filters
        self.height = height
        self.width = width
        self.padding = padding
        outputHeight = height + 2 * padding - 2
        outputWidth = width + 2 * padding - 2
        tileRows = (outputHeight + 1) / 2
        tileColumns = (outputWidth + 1) / 2
        half = tileColumns + 1
        planeRows = 2 * tileRows + 2
    }

    private var tilesPerSample: Int { tileRows * tileColumns }
    private var rowLength: Int { 2 * half }

    /// Samples per block: as many as fit `blockBytes`, at least one.
    func samplesPerBlock(batch: Int) -> Int {
        let perSample = 16 * (channels + filters) * tilesPerSample * MemoryLayout<Float>.stride
        return max(1, min(batch, WinogradConvolution.blockBytes / max(perSample, 1)))
    }

    // MARK: Forward

    /// output [N, K, OH, OW] = input [N, C, H, W] convolved with weights [K, C, 3, 3], plus bias [K].
    func forward(
        _ input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        into output: UnsafeMutablePointer<Float>
    ) {
        transformWeights(weights)
        let u = transformedWeights.pointer
        let block = samplesPerBlock(batch: batch), perSample = tilesPerSample
        let v = tiles.reserve(16 * channels * block * perSample)
        let m = products.reserve(16 * filters * block * perSample)
        let inputCount = channels * height * width, outputCount = filters * outputHeight * outputWidth
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), count = samples * perSample
            for s in 0..<samples {
                transformInput(input + (first + s) * inputCount, into: v + s * perSample, tileStride: count)
            }
            for xi in 0..<16 {
                // M[xi] [K, T] = U[xi] [K, C] x V[xi] [C, T]
                BLAS.gemm(
                    transposeA: false, transposeB: false, m: filters, n: count, k: channels,
                    a: u + xi * filters * channels, lda: channels, b: v + xi * channels * count, ldb: count,
                    beta: 0, c: m + xi * filters * count, ldc: count)
            }
            for s in 0..<samples {
                transformOutput(m + s * perSample, tileStride: count, bias: bias, into: output + (first + s) * outputCount)
            }
            first += samples
        }
    }

    /// U[xi][k][c] = (G g G^T) for every 3x3 filter g = W[k][c], with
    /// G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    private func transformWeights(_ weights: UnsafePointer<Float>) {
        let u = transformedWeights.reserve(16 * filters * channels)
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
        let evens = (width + 1) / 2, odds = width / 2
        for h in 0..<height {
            let source = channel + h * width, row = target + (h + p) * length
            let toEven = row + evenStart, toOdd = row + oddStart
            for x in 0..<evens { toEven[x] = source[2 * x] }
            for x in 0..<odds { toOdd[x] = source[2 * x + 1] }
        }
    }

    /// V[xi][c][t] = (B^T d B) for every 4x4 tile d of one sample [C, H, W], written at `base`
    /// (this sample's first tile) with rows of `tileStride` tiles, where
    /// B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]].
    private func transformInput(_ image: UnsafePointer<Float>, into base: UnsafeMutablePointer<Float>, tileStride: Int) {
        let length = rowLength, columns = tileColumns, positionStep = channels * tileStride
        let p = plane.reserve(planeRows * length)
        let t = stage.reserve(4 * length)
        let t0 = t, t1 = t + length, t2 = t + 2 * length, t3 = t + 3 * length
        for c in 0..<channels {
            spread(image + c * height * width, into: p)
            for ty in 0..<tileRows {
                // B^T d for the whole tile row at once: four plane rows combined.
                let r0 = p + 2 * ty * length, r1 = r0 + length, r2 = r1 + length, r3 = r2 + length
                for x in 0..<length {
                    let a = r0[x], b = r1[x], e = r2[x], d = r3[x]
                    t0[x] = a - e
                    t1[x] = b + e
                    t2[x] = e - b
                    t3[x] = b - d
                }
                // (B^T d) B, each row i giving positions 4 i ..< 4 i + 4.
                for i in 0..<4 {
                    let even = t + i * length, odd = even + half
                    let out0 = base + (4 * i * channels + c) * tileStride + ty * columns
                    let out1 = out0 + positionStep, out2 = out1 + positionStep, out3 = out2 + positionStep
                    for x in 0..<columns {
                        let e0 = even[x], e1 = even[x + 1], o0 = odd[x], o1 = odd[x + 1]
                        out0[x] = e0 - e1
                        out1[x] = o0 + e1
                        out2[x] = e1 - o0
                        out3[x] = o0 - o1
                    }
                }
            }
        }
    }

    /// One sample's output [K, OH, OW] = A^T M A for every tile, plus bias, from its products at
    /// `base` (rows of `tileStride` tiles), where A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]. Outputs of
    /// a partial last tile (odd OH or OW) are dropped.
    private func transformOutput(
        _ base: UnsafePointer<Float>, tileStride: Int, bias: UnsafePointer<Float>?, into output: UnsafeMutablePointer<Float>
    ) {
        let columns = tileColumns, positionStep = filters * tileStride
        let plane = outputHeight * outputWidth, fullPairs = outputWidth / 2, oddWidth = outputWidth & 1 == 1
        let y = stage.reserve(4 * columns)
        let y00 = y, y01 = y + columns, y10 = y + 2 * columns, y11 = y + 3 * columns
        for k in 0..<filters {
            let addend = bias?[k] ?? 0
            for ty in 0..<tileRows {
                let m = base + k * tileStride + ty * columns
                for x in 0..<columns {
                    var s0 = SIMD4<Float>(), s1 = SIMD4<Float>()
                    for j in 0..<4 {
                        let m0 = m[j * positionStep + x], m1 = m[(4 + j) * positionStep + x]
                        let m2 = m[(8 + j) * positionStep + x], m3 = m[(12 + j) * positionStep + x]
                        s0[j] = m0 + m1 + m2
                        s1[j] = m1 - m2 - m3
                    }
                    y00[x] = s0[0] + s0[1] + s0[2]
                    y01[x] = s0[1] - s0[2] - s0[3]
                    y10[x] = s1[0] + s1[1] + s1[2]
                    y11[x] = s1[1] - s1[2] - s1[3]
                }
                let top = output + k * plane + 2 * ty * outputWidth
                interleave(y00, y01, into: top, pairs: fullPairs, odd: oddWidth, adding: addend)
                if 2 * ty + 1 < outputHeight {
                    interleave(y10, y11, into: top + outputWidth, pairs: fullPairs, odd: oddWidth, adding: addend)
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
        for x in 0..<pairs {
            row[2 * x] = left[x] + addend
            row[2 * x + 1] = right[x] + addend
        }
        if odd { row[2 * pairs] = left[pairs] + addend }
    }

    // MARK: Backward

    /// Adds the weight gradient [K, C, 3, 3] and (when given) the bias gradient [K] of the last
    /// forward pass for the output gradient [N, K, OH, OW], and writes the input gradient
    /// [N, C, H, W] when `inputGradient` is given. `forward` must have run on the same input and
    /// weights (its U is reused).
    func backward(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int,
        weightGradients: UnsafeMutablePointer<Float>, biasGradients: UnsafeMutablePointer<Float>?,
        inputGradient: UnsafeMutablePointer<Float>?
    ) {
        let u = transformedWeights.pointer
        let du = transformedWeightGradient.reserve(16 * filters * channels)
        let block = samplesPerBlock(batch: batch), perSample = tilesPerSample
        let v = tiles.reserve(16 * channels * block * perSample)
        let m = products.reserve(16 * filters * block * perSample)
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
                transformOutputGradient(gradient, into: m + s * perSample, tileStride: count)
                transformInput(input + (first + s) * inputCount, into: v + s * perSample, tileStride: count)
            }
            for xi in 0..<16 {
                // dU[xi] [K, C] (+)= dM[xi] [K, T] x V[xi]^T [T, C]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: filters, n: channels, k: count,
                    a: m + xi * filters * count, lda: count, b: v + xi * channels * count, ldb: count,
                    beta: first == 0 ? 0 : 1, c: du + xi * filters * channels, ldc: channels)
            }
            if let inputGradient {
                // V has served: it becomes dV.
                for xi in 0..<16 {
                    // dV[xi] [C, T] = U[xi]^T [C, K] x dM[xi] [K, T]
                    BLAS.gemm(
                        transposeA: true, transposeB: false, m: channels, n: count, k: filters,
                        a: u + xi * filters * channels, lda: channels, b: m + xi * filters * count, ldb: count,
                        beta: 0, c: v + xi * channels * count, ldc: count)
                }
                for s in 0..<samples {
                    foldTiles(v + s * perSample, tileStride: count, into: inputGradient + (first + s) * inputCount)
                }
            }
            first += samples
        }
        // The first block wrote dU (beta 0); with no samples there is nothing to add.
        if batch > 0 { addWeightGradient(du, to: weightGradients) }
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
        let pairs = outputWidth / 2, oddWidth = outputWidth & 1 == 1
        // The tile row's two gradient rows split into even and odd columns: [4, tileColumns].
        let g = stage.reserve(4 * columns)
        let topEven = g, topOdd = g + columns, bottomEven = g + 2 * columns, bottomOdd = g + 3 * columns
        for k in 0..<filters {
            for ty in 0..<tileRows {
                let top = gradient + k * plane + 2 * ty * outputWidth
                split(top, into: topEven, topOdd, pairs: pairs, odd: oddWidth)
                if 2 * ty + 1 < outputHeight {
                    split(top + outputWidth, into: bottomEven, bottomOdd, pairs: pairs, odd: oddWidth)
                } else {
                    VectorKernels.zero(bottomEven, count: 2 * columns)
                }
                let out = base + k * tileStride + ty * columns
                for x in 0..<columns {
                    let a = topEven[x], b = topOdd[x], c = bottomEven[x], d = bottomOdd[x]
                    // A dY: rows (a, b), (a + c, b + d), (a - c, b - d), (-c, -d); then each row (p, q)
                    // times A^T gives (p, p + q, p - q, -q).
                    let p = SIMD4<Float>(a, a + c, a - c, -c), q = SIMD4<Float>(b, b + d, b - d, -d)
                    for i in 0..<4 {
                        out[(4 * i) * positionStep + x] = p[i]
                        out[(4 * i + 1) * positionStep + x] = p[i] + q[i]
                        out[(4 * i + 2) * positionStep + x] = p[i] - q[i]
                        out[(4 * i + 3) * positionStep + x] = -q[i]
                    }
                }
            }
        }
    }

    /// even[x] = row[2 x], odd[x] = row[2 x + 1], with odd[pairs] = 0 when the row is odd.
    @inline(__always)
    private func split(
        _ row: UnsafePointer<Float>, into even: UnsafeMutablePointer<Float>, _ odd: UnsafeMutablePointer<Float>, pairs: Int,
        odd oddLength: Bool
    ) {
        for x in 0..<pairs {
            even[x] = row[2 * x]
            odd[x] = row[2 * x + 1]
        }
        if oddLength {
            even[pairs] = row[2 * pairs]
            odd[pairs] = 0
        }
    }

    /// One sample's input gradient [C, H, W]: the overlap-add of B dV B^T over its tiles (the
    /// adjoint of `transformInput`), read from `base` with rows of `tileStride` tiles. Tiles are
    /// added in a fixed order (tile row by tile row), so sums are reproducible.
    private func foldTiles(_ base: UnsafePointer<Float>, tileStride: Int, into image: UnsafeMutablePointer<Float>) {
        let length = rowLength, columns = tileColumns, positionStep = channels * tileStride
        let planeCount = planeRows * length
        let gp = gradientPlane.reserve(planeCount)
        let t = stage.reserve(4 * length)
        let t0 = t, t1 = t + length, t2 = t + 2 * length, t3 = t + 3 * length
        let last = columns - 1
        for c in 0..<channels {
            VectorKernels.zero(gp, count: planeCount)
            for ty in 0..<tileRows {
                // The adjoint of (B^T d) B for each row i: from dV's four positions of that row to
                // a tile-plane row. Tile x took even[x], odd[x], even[x + 1], odd[x + 1], so
                // even[x] gets q0[x] + (q1 + q2 - q0)[x - 1] and odd[x] gets (q1 - q2 + q3)[x] - q3[x - 1].
                for i in 0..<4 {
                    let q0 = base + (4 * i * channels + c) * tileStride + ty * columns
                    let q1 = q0 + positionStep, q2 = q1 + positionStep, q3 = q2 + positionStep
                    let even = t + i * length, odd = even + half
                    even[0] = q0[0]
                    odd[0] = q1[0] - q2[0] + q3[0]
                    var x = 1
                    while x < columns {
                        even[x] = q0[x] + (q1[x - 1] + q2[x - 1] - q0[x - 1])
                        odd[x] = (q1[x] - q2[x] + q3[x]) - q3[x - 1]
                        x += 1
                    }
                    even[columns] = q1[last] + q2[last] - q0[last]
                    odd[columns] = -q3[last]
                }
                // The adjoint of B^T d: rows 2 ty ..< 2 ty + 4 of the plane.
                let r0 = gp + 2 * ty * length, r1 = r0 + length, r2 = r1 + length, r3 = r2 + length
                for x in 0..<length {
                    let a = t0[x], b = t1[x], e = t2[x], d = t3[x]
                    r0[x] += a
                    r1[x] += b - e + d
                    r2[x] += b + e - a
                    r3[x] -= d
                }
            }
            gather(gp, into: image + c * height * width)
        }
    }

    /// The adjoint of `spread`: the interior of a tile plane back into one channel [H, W].
    private func gather(_ source: UnsafePointer<Float>, into channel: UnsafeMutablePointer<Float>) {
        let length = rowLength, p = padding
        let evenStart = (p & 1) * half + (p >> 1)
        let oddStart = ((p + 1) & 1) * half + ((p + 1) >> 1)
        let evens = (width + 1) / 2, odds = width / 2
        for h in 0..<height {
            let target = channel + h * width, row = source + (h + p) * length
            let fromEven = row + evenStart, fromOdd = row + oddStart
            for x in 0..<evens { target[2 * x] = fromEven[x] }
            for x in 0..<odds { target[2 * x + 1] = fromOdd[x] }
        }
    }

    /// dW[k][c] += G^T dU[k][c] G (3x3), the adjoint of `transformWeights`.
    private func addWeightGradient(_ du: UnsafePointer<Float>, to weightGradients: UnsafeMutablePointer<Float>) {
        let step = filters * channels
        for k in 0..<filters {
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
