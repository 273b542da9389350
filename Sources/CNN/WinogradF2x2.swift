// Legend: n sample, c input channel, k output channel (filter), xi = 4 i + j a position in a 4x4
// tile (row i, column j), t a tile of a sample (tile row ty, then tile column tx).
//
// Tile planes and phases: a channel's padded input is laid out as rows of 2 * half floats, the
// row's even columns first, then its odd ones, and then cut into phase arrays, one for each
// (row parity, column 0-3 of a tile), holding one float per tile, tile after tile. Tile t's 16
// inputs are then at t or t + tileColumns of eight arrays, so every transform is one loop over
// all tiles of a plane, eight at a time, however narrow the plane (ResNet's 8x8 planes have four
// tiles a row), where the natural layout would read every other float, row by row.

/// The kernels of Winograd F(2x2, 3x3): 4x4 input tiles, 16 GEMMs. The transforms are written
/// out by hand, a sample at a time, as their few additions must run at memory speed to pay off
/// at 16-32 channels; F(4x4, 3x3)'s run from the matrices as data (`WinogradF4x4`).
final class WinogradF2x2: WinogradKernels {
    static var outputSize: Int { 2 }
    /// Blocks are as large as fit the cache, however few tiles that makes.
    static var minimumBlockTiles: Int { 1 }

    let geometry: WinogradGeometry
    /// Floats in each half (even columns, odd columns) of a tile-plane row: tileColumns + 1.
    private let half: Int
    /// Rows of a tile plane: the padded input, plus a zero row when OH is odd.
    private let planeRows: Int
    private let plane = FloatBuffer()   // [planeRows, 2 * half]: one input channel as a tile plane
    private let phases = FloatBuffer()  // one channel or filter of one sample, by phase (see each transform)

    init(geometry: WinogradGeometry) {
        self.geometry = geometry
        half = geometry.tileColumns + 1
        planeRows = 2 * geometry.tileRows + 2
    }

    private var rowLength: Int { 2 * half }

    // MARK: Forward

    func transformInput(_ images: UnsafePointer<Float>, samples: Int, into v: UnsafeMutablePointer<Float>, scratch: LayerWorkspace) {
        let perSample = tilesPerSample, inputCount = channels * height * width
        for s in 0..<samples {
            transformInput(images + s * inputCount, into: v + s * perSample, tileStride: samples * perSample)
        }
    }

    func transformOutput(
        _ m: UnsafePointer<Float>, samples: Int, bias: UnsafePointer<Float>?, into output: UnsafeMutablePointer<Float>,
        scratch: LayerWorkspace
    ) {
        let perSample = tilesPerSample, outputCount = filters * outputHeight * outputWidth
        for s in 0..<samples {
            transformOutput(m + s * perSample, tileStride: samples * perSample, bias: bias, into: output + s * outputCount)
        }
    }

    /// U[xi][k][c] = (G g G^T) for every 3x3 filter g = W[k][c], with
    /// G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]].
    func transformWeights(_ weights: UnsafePointer<Float>, into target: FloatBuffer, scratch: LayerWorkspace) {
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

    func transformOutputGradient(
        _ gradient: UnsafePointer<Float>, samples: Int, into m: UnsafeMutablePointer<Float>, scratch: LayerWorkspace
    ) {
        let perSample = tilesPerSample, outputCount = filters * outputHeight * outputWidth
        for s in 0..<samples {
            transformOutputGradient(gradient + s * outputCount, into: m + s * perSample, tileStride: samples * perSample)
        }
    }

    func foldTiles(_ v: UnsafePointer<Float>, samples: Int, into images: UnsafeMutablePointer<Float>, scratch: LayerWorkspace) {
        let perSample = tilesPerSample, inputCount = channels * height * width
        for s in 0..<samples {
            foldTiles(v + s * perSample, tileStride: samples * perSample, into: images + s * inputCount)
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

    /// dW[k][c] += G^T dU[k][c] G (3x3) for `count` filters, the adjoint of `transformWeights`.
    func addWeightGradient(
        _ du: UnsafePointer<Float>, filters count: Int, to weightGradients: UnsafeMutablePointer<Float>, scratch: LayerWorkspace
    ) {
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
