// Legend: n sample, c input channel, k output channel (filter), m = 4 outputs per tile side.
// A block's tiles are handled one channel (or filter) at a time, as vectors over all the block's
// tiles (samples one after another), so every transform is a few multiply-adds of long
// contiguous rows, whatever the plane's width. A tile's positions are xi = inputSize i + j (input
// side) or outputSize i + j (output side).

/// The kernels of Winograd F(4x4, 3x3): 6x6 input tiles, 36 GEMMs. The transforms run from the
/// matrices as data (`WinogradTile`), applied to whole blocks of tiles at once; nothing in them
/// is particular to 4x4 tiles but the matrices.
final class WinogradF4x4: WinogradKernels {
    static var outputSize: Int { 4 }
    /// Least tiles per block, even past `WinogradConvolution.blockBytes`: below that, 36 GEMMs
    /// with N of 16 tiles (one AlexNet sample) spend their time packing U
    /// (`cnn bench --model alexnet --threads 1` shows the layer rates).
    static var minimumBlockTiles: Int { 64 }

    let geometry: WinogradGeometry
    /// The tile's transform matrices.
    private let tile = WinogradTile.f4x3
    /// Where input column w (padded column x = w + P) lies in a phase-ordered padded row:
    /// (x % m) (TC + 1) + x / m (see `phaseLength`).
    private let inputColumnTargets: [Int]
    private let paddedPlane = FloatBuffer()  // [m TR + 2, m TC + 2]: one channel of one sample inside a zero border
    private let foldPlane = FloatBuffer()    // the same shape: one channel's input gradient, border included
    // The workspace's gatheredTiles, [(m + 2)^2, T + slack], hold one channel's input tiles (or one
    // filter's output tiles) of a block; its partialTransforms, the same shape, them after the first
    // of the two 1-D transforms.

    init(geometry: WinogradGeometry) {
        self.geometry = geometry
        let m = geometry.outputSize, phase = geometry.tileColumns + 1, padding = geometry.padding
        inputColumnTargets = (0..<geometry.width).map { w in ((w + padding) % m) * phase + (w + padding) / m }
    }

    /// Y = L X R^T, where X is a [L.columns, R.columns] grid of vectors of `count` tiles (grid
    /// position p = i R.columns + j at input + p inputStride) and Y a [L.rows, R.rows] one
    /// (position a R.rows + b at output + (a R.rows + b) outputStride), through `scratch`
    /// ([L.rows, R.columns] rows of `scratchStride`). Reads up to seven floats past the last
    /// tile of each row (the buffers have that slack).
    private func apply(
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
    private func combine(
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
    private func scratchStride(_ count: Int) -> Int { (count + 7) / 8 * 8 + 8 }

    // Padded planes are m TR + 2 rows (H + 2P rows and more, as OH = H + 2P - 2) of m TC + 2
    // columns, each row stored by phase: padded column x at (x % m) phaseLength + x / m
    // (`inputColumnTargets`). Column j of a tile row's tiles is then one contiguous run (phase
    // j % m from j / m), so gathering and scattering tiles are eight-wide copies, not strided loops.

    /// Floats per phase of a padded row: TC + 1 (a tile's last columns reach one past its phase).
    private var phaseLength: Int { tileColumns + 1 }
    private var paddedRowLength: Int { tile.outputSize * phaseLength }
    private var paddedHeight: Int { tile.outputSize * tileRows + 2 }

    /// V[xi][c][t] = B^T d B for every input tile d of `samples` samples from `images` [S, C, H, W],
    /// the block's tiles as rows of S * tiles-per-sample.
    func transformInput(_ images: UnsafePointer<Float>, samples: Int, into v: UnsafeMutablePointer<Float>, scratch: LayerWorkspace) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.inputSize, m = tile.outputSize, rowLength = paddedRowLength, phase = phaseLength
        let columns = tileColumns
        // Slack for the eight-wide reads past a phase's end.
        let plane = paddedPlane.reserve(paddedHeight * rowLength + 8)
        let d = scratch.gatheredTiles.reserve(positions * stride)
        let e = scratch.partialTransforms.reserve(positions * stride)
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
    func transformOutput(
        _ m: UnsafePointer<Float>, samples: Int, bias: UnsafePointer<Float>?, into output: UnsafeMutablePointer<Float>,
        scratch: LayerWorkspace
    ) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.outputSize, plane = outputHeight * outputWidth, outputCount = filters * plane
        let y = scratch.gatheredTiles.reserve(positions * stride)
        let e = scratch.partialTransforms.reserve(positions * stride)
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
    func transformOutputGradient(
        _ gradient: UnsafePointer<Float>, samples: Int, into m: UnsafeMutablePointer<Float>, scratch: LayerWorkspace
    ) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.outputSize, plane = outputHeight * outputWidth, outputCount = filters * plane
        let y = scratch.gatheredTiles.reserve(positions * stride)
        let e = scratch.partialTransforms.reserve(positions * stride)
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
    /// adjoint of `transformInput`), tiles added in their order.
    func foldTiles(_ v: UnsafePointer<Float>, samples: Int, into images: UnsafeMutablePointer<Float>, scratch: LayerWorkspace) {
        let perSample = tilesPerSample, count = samples * perSample, stride = scratchStride(count)
        let size = tile.inputSize, m = tile.outputSize, rowLength = paddedRowLength, phase = phaseLength
        let columns = tileColumns, planeCount = paddedHeight * rowLength
        let plane = foldPlane.reserve(planeCount + 8)
        let d = scratch.gatheredTiles.reserve(positions * stride)
        let e = scratch.partialTransforms.reserve(positions * stride)
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
    func transformWeights(_ weights: UnsafePointer<Float>, into target: FloatBuffer, scratch: LayerWorkspace) {
        let pairs = filters * channels, piece = min(pairs, WinogradF4x4.weightPairsPerPiece)
        let stride = scratchStride(piece)
        let u = target.reserve(positions * pairs + 8)
        let taps = scratch.gatheredTiles.reserve(max(positions, 9) * stride)
        let e = scratch.partialTransforms.reserve(positions * stride)
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
    /// `weightGradients` [count, C, 3, 3], the adjoint of `transformWeights`, a piece of
    /// pairs at a time. dU needs eight floats of slack past its end.
    func addWeightGradient(
        _ du: UnsafePointer<Float>, filters count: Int, to weightGradients: UnsafeMutablePointer<Float>, scratch: LayerWorkspace
    ) {
        let pairs = count * channels, piece = min(pairs, WinogradF4x4.weightPairsPerPiece)
        let stride = scratchStride(piece)
        let taps = scratch.gatheredTiles.reserve(max(positions, 9) * stride)
        let e = scratch.partialTransforms.reserve(positions * stride)
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
