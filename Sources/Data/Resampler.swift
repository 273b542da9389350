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
        let outputSize: Int
        let from: Double
        let to: Double
        private(set) var starts: [Int] = []
        private(set) var counts: [Int] = []
        private(set) var weights: [Int32] = []
        private(set) var stride = 0

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
    /// horizontal pass: at least (vertical.span rows) * horizontal.outputSize * channels bytes.
    static func resample(
        _ source: UnsafePointer<UInt8>, height: Int, channels: Int, sourceRowBytes: Int,
        horizontal: Axis, vertical: Axis, middle: UnsafeMutablePointer<UInt8>, into output: UnsafeMutablePointer<UInt8>
    ) {
        let (firstRow, endRow) = vertical.span
        let outWidth = horizontal.outputSize
        let rowBytes = outWidth * channels
        horizontal.weights.withUnsafeBufferPointer { weights in
            horizontal.starts.withUnsafeBufferPointer { starts in
                horizontal.counts.withUnsafeBufferPointer { counts in
                    for y in firstRow..<endRow {
                        let row = source + y * sourceRowBytes
                        let destination = middle + (y - firstRow) * rowBytes
                        // Reading four bytes for a three-byte pixel: the last row's last pixel
                        // would read past the buffer, so that row goes byte by byte.
                        if channels == 3 && y < height - 1 {
                            horizontalRGB(row, starts: starts, counts: counts, weights: weights, stride: horizontal.stride,
                                          outputs: outWidth, into: destination)
                        } else {
                            horizontalAny(row, channels: channels, starts: starts, counts: counts, weights: weights,
                                          stride: horizontal.stride, outputs: outWidth, into: destination)
                        }
                    }
                }
            }
        }
        vertical.weights.withUnsafeBufferPointer { weights in
            for y in 0..<vertical.outputSize {
                let start = vertical.starts[y] - firstRow, count = vertical.counts[y]
                verticalRow(middle + start * rowBytes, rowBytes: rowBytes, count: count,
                            weights: weights.baseAddress! + y * vertical.stride, into: output + y * rowBytes)
            }
        }
    }

    @inline(__always)
    private static func horizontalRGB(
        _ row: UnsafePointer<UInt8>, starts: UnsafeBufferPointer<Int>, counts: UnsafeBufferPointer<Int>,
        weights: UnsafeBufferPointer<Int32>, stride: Int, outputs: Int, into destination: UnsafeMutablePointer<UInt8>
    ) {
        let raw = UnsafeRawPointer(row)
        for x in 0..<outputs {
            var sum = SIMD4<Int32>(repeating: Axis.half)
            let first = starts[x] * 3
            let w = weights.baseAddress! + x * stride
            for k in 0..<counts[x] {
                let pixel = SIMD4<Int32>(truncatingIfNeeded: raw.loadUnaligned(fromByteOffset: first + k * 3, as: SIMD4<UInt8>.self))
                sum &+= pixel &* SIMD4(repeating: w[k])
            }
            let shifted = sum &>> Int32(Axis.precisionBits)
            let clipped = shifted.clamped(lowerBound: .zero, upperBound: SIMD4(repeating: 255))
            destination[x * 3] = UInt8(truncatingIfNeeded: clipped[0])
            destination[x * 3 + 1] = UInt8(truncatingIfNeeded: clipped[1])
            destination[x * 3 + 2] = UInt8(truncatingIfNeeded: clipped[2])
        }
    }

    @inline(__always)
    private static func horizontalAny(
        _ row: UnsafePointer<UInt8>, channels: Int, starts: UnsafeBufferPointer<Int>, counts: UnsafeBufferPointer<Int>,
        weights: UnsafeBufferPointer<Int32>, stride: Int, outputs: Int, into destination: UnsafeMutablePointer<UInt8>
    ) {
        for x in 0..<outputs {
            let w = weights.baseAddress! + x * stride
            let first = starts[x] * channels
            for c in 0..<channels {
                var sum = Axis.half
                for k in 0..<counts[x] { sum &+= Int32(row[first + k * channels + c]) &* w[k] }
                destination[x * channels + c] = clip(sum)
            }
        }
    }

    /// One output row of the vertical pass: rowBytes bytes, each the weighted sum of `count` rows.
    @inline(__always)
    private static func verticalRow(
        _ rows: UnsafePointer<UInt8>, rowBytes: Int, count: Int, weights: UnsafePointer<Int32>,
        into destination: UnsafeMutablePointer<UInt8>
    ) {
        let raw = UnsafeRawPointer(rows)
        var i = 0
        while i + 16 <= rowBytes {
            var sum = SIMD16<Int32>(repeating: Axis.half)
            for k in 0..<count {
                let bytes = raw.loadUnaligned(fromByteOffset: k * rowBytes + i, as: SIMD16<UInt8>.self)
                sum &+= SIMD16<Int32>(truncatingIfNeeded: bytes) &* SIMD16(repeating: weights[k])
            }
            let clipped = (sum &>> Int32(Axis.precisionBits)).clamped(lowerBound: .zero, upperBound: SIMD16(repeating: 255))
            UnsafeMutableRawPointer(destination).storeBytes(
                of: SIMD16<UInt8>(truncatingIfNeeded: clipped), toByteOffset: i, as: SIMD16<UInt8>.self)
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
