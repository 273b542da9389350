/// Pillow's bilinear `resize` (Resample.c: `ImagingResampleHorizontal_8bpc` then
/// `ImagingResampleVertical_8bpc`, 22-bit fixed-point weights, each pass rounding to 8 bits), bit
/// for bit, on raw 8-bit buffers: flat weight tables, 32-bit sums as Pillow's, three colour
/// channels summed in one vector in the horizontal pass, 16 bytes of a row at a time in the
/// vertical one. `ImageTransforms.resize` is this on `DecodedImage`s.
enum Resampler {
    /// Pillow's weights for one axis (precompute_coeffs and normalize_coeffs_8bpc with the
    /// bilinear filter): output i reads inputs starts[i] ..< starts[i] + counts[i] with
    /// weights[i * stride ..< i * stride + counts[i]].
    struct Axis: Equatable {
        static let precisionBits = 32 - 8 - 2
        static let half = Int32(1 << (precisionBits - 1))
        let inputSize: Int
        private(set) var outputSize: Int
        let from: Double
        let to: Double
        private(set) var starts: [Int] = []
        private(set) var counts: [Int] = []
        private(set) var weights: [Int32] = []
        /// Each weight as high * 2^11 + low, both below 2^15: products of a byte with either fit
        /// the 16-bit multiply-add SSE2 has (pmaddwd), where a 32-bit product needs four
        /// instructions. The sums come out the same.
        private(set) var weightsHigh: [Int16] = []
        private(set) var weightsLow: [Int16] = []
        private(set) var stride = 0
        /// Whether an output can exceed 255 (Pillow clips it). A sum of non-negative weights
        /// that round to at most 2^22 + count / 2 times 255, plus the half for rounding, stays
        /// below 256 << 22 while count < 16,448; beyond that the clipping paths run.
        private(set) var mayExceed255 = false

        init(inputSize: Int, from in0: Double, to in1: Double, outputSize: Int) {
            self.inputSize = inputSize
            self.outputSize = outputSize
            self.from = in0
            self.to = in1
            let scale = (in1 - in0) / Double(outputSize)
            let filterScale = max(scale, 1)
            let support = 1.0 * filterScale
            let inverse = 1 / filterScale
            // Pillow's ksize: the most taps any output can have.
            stride = Int(support.rounded(.up)) * 2 + 1
            starts.reserveCapacity(outputSize)
            counts.reserveCapacity(outputSize)
            weights = [Int32](repeating: 0, count: outputSize * stride)
            var raw = [Double](repeating: 0, count: stride)
            for xx in 0..<outputSize {
                let center = in0 + (Double(xx) + 0.5) * scale
                // C's (int) cast truncates toward zero.
                let xmin = max(Int((center - support + 0.5).rounded(.towardZero)), 0)
                let count = max(min(Int((center + support + 0.5).rounded(.towardZero)), inputSize) - xmin, 0)
                var total = 0.0
                for x in 0..<count {
                    let t = abs((Double(x + xmin) - center + 0.5) * inverse)
                    raw[x] = t < 1 ? 1 - t : 0
                    total += raw[x]
                }
                for x in 0..<count {
                    let w = total != 0 ? raw[x] / total : raw[x]
                    weights[xx * stride + x] = Int32((w * Double(1 << Self.precisionBits) + (w < 0 ? -0.5 : 0.5)).rounded(.towardZero))
                }
                starts.append(xmin)
                counts.append(count)
                if count >= 16_000 { mayExceed255 = true }
            }
            weightsHigh = weights.map { Int16(truncatingIfNeeded: $0 >> 11) }
            weightsLow = weights.map { Int16(truncatingIfNeeded: $0 & 0x7FF) }
        }

        /// The inputs outputs `outputs` read (they only move right as outputs do).
        func inputs(of outputs: Range<Int>) -> Range<Int> {
            starts[outputs.lowerBound]..<(starts[outputs.upperBound - 1] + counts[outputs.upperBound - 1])
        }

        /// The axis of outputs `outputs` alone, reading an input that starts at `inputOffset`:
        /// each of those outputs computed as before, from the same inputs and weights.
        func window(_ outputs: Range<Int>, inputOffset: Int) -> Axis {
            var window = self
            window.outputSize = outputs.count
            window.starts = outputs.map { starts[$0] - inputOffset }
            window.counts = Array(counts[outputs])
            let taps = outputs.lowerBound * stride..<outputs.upperBound * stride
            window.weights = Array(weights[taps])
            window.weightsHigh = Array(weightsHigh[taps])
            window.weightsLow = Array(weightsLow[taps])
            return window
        }

        /// Runs `body` with the tables as pointers.
        func withTables<T>(_ body: (Tables) -> T) -> T {
            starts.withUnsafeBufferPointer { starts in
                counts.withUnsafeBufferPointer { counts in
                    weights.withUnsafeBufferPointer { weights in
                        weightsHigh.withUnsafeBufferPointer { high in
                            weightsLow.withUnsafeBufferPointer { low in
                                body(Tables(
                                    starts: starts.baseAddress!, counts: counts.baseAddress!, weights: weights.baseAddress!,
                                    high: high.baseAddress!, low: low.baseAddress!, stride: stride, outputs: outputSize))
                            }
                        }
                    }
                }
            }
        }

        /// The inputs any output reads: first ..< end.
        var span: (first: Int, end: Int) {
            guard outputSize > 0 else { return (0, 0) }
            return (starts[0], starts[outputSize - 1] + counts[outputSize - 1])
        }
    }

    @inline(__always)
    private static func clip(_ sum: Int32) -> UInt8 {
        UInt8(truncatingIfNeeded: min(max(sum >> Int32(Axis.precisionBits), 0), 255))
    }

    /// Resamples the width x height x channels image at `source` (rows `sourceRowBytes` apart) to
    /// horizontal.outputSize x vertical.outputSize into `output` (packed rows). `middle` holds the
    /// horizontal pass: at least (vertical.span rows) * horizontal.outputSize * channels + 1 bytes.
    static func resample(
        _ source: UnsafePointer<UInt8>, height: Int, channels: Int, sourceRowBytes: Int,
        horizontal: Axis, vertical: Axis, middle: UnsafeMutablePointer<UInt8>, into output: UnsafeMutablePointer<UInt8>
    ) {
        let (firstRow, endRow) = vertical.span
        let rowBytes = horizontal.outputSize * channels
        horizontal.withTables { h in
            // Reading four bytes for a three-byte pixel reads one past the pixel: never past the
            // last source row, which goes byte by byte.
            let vectors = channels == 3 && !horizontal.mayExceed255
            for y in firstRow..<endRow {
                let row = source + y * sourceRowBytes, destination = middle + (y - firstRow) * rowBytes
                if vectors && y < height - 1 {
                    horizontalRGB(row, h, into: destination)
                } else {
                    horizontalAny(row, channels: channels, h, into: destination)
                }
            }
        }
        vertical.withTables { v in
            for y in 0..<vertical.outputSize {
                let at = y * v.stride
                verticalRow(middle + (v.starts[y] - firstRow) * rowBytes, rowBytes: rowBytes, count: v.counts[y],
                            weights: v.weights + at, high: v.high + at, low: v.low + at,
                            vectors: !vertical.mayExceed255, into: output + y * rowBytes)
            }
        }
    }

    /// An axis's tables as pointers, for the loops.
    struct Tables {
        let starts: UnsafePointer<Int>, counts: UnsafePointer<Int>, weights: UnsafePointer<Int32>
        let high: UnsafePointer<Int16>, low: UnsafePointer<Int16>, stride: Int, outputs: Int
    }

    /// The horizontal pass over one RGB row.
    @inline(__always)
    private static func horizontalRGB(_ row: UnsafePointer<UInt8>, _ h: Tables, into destination: UnsafeMutablePointer<UInt8>) {
        let raw = UnsafeRawPointer(row)
        for x in 0..<h.outputs {
            var sumHigh = SIMD4<Int32>.zero, sumLow = SIMD4<Int32>(repeating: Axis.half)
            let first = h.starts[x] * 3, at = x * h.stride
            for k in 0..<h.counts[x] {
                let pixel = SIMD4<Int32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: first + k * 3, as: SIMD4<UInt8>.self))
                sumHigh &+= pixel &* SIMD4(repeating: Int32(h.high[at + k]))
                sumLow &+= pixel &* SIMD4(repeating: Int32(h.low[at + k]))
            }
            // In 0...255 without clipping (`mayExceed255`). Four bytes stored: the fourth is the
            // next pixel's first, written over next (`middle` has room after the last).
            let bytes = SIMD4<UInt8>(truncatingIfNeeded: (sumHigh &<< 11 &+ sumLow) &>> Int32(Axis.precisionBits))
            UnsafeMutableRawPointer(destination).storeBytes(of: bytes, toByteOffset: x * 3, as: SIMD4<UInt8>.self)
        }
    }

    /// The horizontal pass over one row of any number of channels, clipping as Pillow does.
    @inline(__always)
    private static func horizontalAny(
        _ row: UnsafePointer<UInt8>, channels: Int, _ h: Tables, into destination: UnsafeMutablePointer<UInt8>
    ) {
        for x in 0..<h.outputs {
            let w = h.weights + x * h.stride
            let first = h.starts[x] * channels
            for c in 0..<channels {
                var sum = Axis.half
                for k in 0..<h.counts[x] { sum &+= Int32(row[first + k * channels + c]) &* w[k] }
                destination[x * channels + c] = clip(sum)
            }
        }
    }

    /// One output row of the vertical pass: rowBytes bytes, each the weighted sum of `count` rows.
    @inline(__always)
    private static func verticalRow(
        _ rows: UnsafePointer<UInt8>, rowBytes: Int, count: Int, weights: UnsafePointer<Int32>,
        high: UnsafePointer<Int16>, low: UnsafePointer<Int16>, vectors: Bool, into destination: UnsafeMutablePointer<UInt8>
    ) {
        let raw = UnsafeRawPointer(rows)
        var i = 0
        while vectors && i + 16 <= rowBytes {
            var sumHigh = SIMD16<Int32>.zero, sumLow = SIMD16<Int32>(repeating: Axis.half)
            for k in 0..<count {
                let bytes = SIMD16<Int32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: k * rowBytes + i, as: SIMD16<UInt8>.self))
                sumHigh &+= bytes &* SIMD16(repeating: Int32(high[k]))
                sumLow &+= bytes &* SIMD16(repeating: Int32(low[k]))
            }
            let sum = sumHigh &<< 11 &+ sumLow
            // In 0...255 without clipping (`mayExceed255`).
            UnsafeMutableRawPointer(destination).storeBytes(
                of: SIMD16<UInt8>(truncatingIfNeeded: sum &>> Int32(Axis.precisionBits)), toByteOffset: i, as: SIMD16<UInt8>.self)
            i += 16
        }
        while i < rowBytes {
            var sum = Axis.half
            for k in 0..<count { sum &+= Int32(rows[k * rowBytes + i]) &* weights[k] }
            destination[i] = clip(sum)
            i += 1
        }
    }
}
