// Legend: c channel, (h, w) image position, (oh, ow) window position, (i, j) kernel tap.

/// The windows a convolution slides over one image [C, H, W], and the two data movements built on
/// them: `im2col` unfolds the image into a matrix [C*kh*kw, OH*OW] whose column p holds the values
/// window p sees (zero in padding); `col2im` is its adjoint and adds such a matrix back onto an
/// image. A transposed convolution runs them the other way round from a convolution.
struct PatchGeometry {
    let channels: Int
    let height: Int
    let width: Int
    let kernelHeight: Int
    let kernelWidth: Int
    let stride: Int
    let padding: Int
    let dilation: Int
    let outputHeight: Int
    let outputWidth: Int

    /// Rows of the unfolded matrix.
    var rows: Int { channels * kernelHeight * kernelWidth }
    /// Columns of the unfolded matrix: one per window position.
    var columns: Int { outputHeight * outputWidth }

    /// The window positions first..<last whose tap at `columnOffset` (tap position minus padding)
    /// lands inside the image's width.
    @inline(__always)
    private func insideRange(columnOffset: Int) -> (Int, Int) {
        let first = min(outputWidth, max(0, (-columnOffset + stride - 1) / stride))
        let span = width - 1 - columnOffset
        let last = span < 0 ? first : max(first, min(outputWidth, span / stride + 1))
        return (first, last)
    }

    /// image [C, H, W] -> columns [C*kh*kw, OH*OW].
    func im2col(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) {
        var row = columns
        for c in 0..<channels {
            let plane = image + c * height * width
            for i in 0..<kernelHeight {
                let rowOffset = i * dilation - padding
                for j in 0..<kernelWidth {
                    let columnOffset = j * dilation - padding
                    // Window positions whose tap column falls inside the image: first..<last.
                    let (first, last) = insideRange(columnOffset: columnOffset)
                    for oh in 0..<outputHeight {
                        let destination = row + oh * outputWidth
                        let h = oh * stride + rowOffset
                        guard h >= 0 && h < height else {
                            destination.update(repeating: 0, count: outputWidth)
                            continue
                        }
                        let source = plane + h * width + columnOffset
                        if first > 0 { destination.update(repeating: 0, count: first) }
                        if stride == 1 {
                            (destination + first).update(from: source + first, count: last - first)
                        } else {
                            for ow in first..<last { destination[ow] = source[ow * stride] }
                        }
                        if last < outputWidth { (destination + last).update(repeating: 0, count: outputWidth - last) }
                    }
                    row += outputHeight * outputWidth
                }
            }
        }
    }

    /// columns [C*kh*kw, OH*OW] -> image [C, H, W]: overwrites the image with the sum of every
    /// column entry at the position it was read from. Taps are visited in one fixed order, so
    /// overlapping windows add up identically every time.
    func col2im(_ columns: UnsafePointer<Float>, into image: UnsafeMutablePointer<Float>) {
        image.update(repeating: 0, count: channels * height * width)
        var row = columns
        for c in 0..<channels {
            let plane = image + c * height * width
            for i in 0..<kernelHeight {
                let rowOffset = i * dilation - padding
                for j in 0..<kernelWidth {
                    let columnOffset = j * dilation - padding
                    let (first, last) = insideRange(columnOffset: columnOffset)
                    for oh in 0..<outputHeight {
                        let h = oh * stride + rowOffset
                        guard h >= 0 && h < height else { continue }
                        let source = row + oh * outputWidth
                        let destination = plane + h * width + columnOffset
                        if stride == 1 {
                            for ow in first..<last { destination[ow] += source[ow] }
                        } else {
                            for ow in first..<last { destination[ow * stride] += source[ow] }
                        }
                    }
                    row += outputHeight * outputWidth
                }
            }
        }
    }
}
