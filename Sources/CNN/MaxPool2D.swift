// Legend: n sample, c channel, (h, w) input position, (oh, ow) output position.

/// Max pooling over F x F windows with stride S and padding P (padding never wins: it is -inf).
/// Remembers each output's argmax ("switches") so backward routes the gradient to that input.
/// In ceil mode (PyTorch's `ceil_mode=True`, as torchvision's GoogLeNet pools) a last window may run
/// past the input; it takes the maximum of what it covers.
public final class MaxPool2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let size: Int
    public let stride: Int
    public let padding: Int
    public let ceilMode: Bool
    /// Whether ceil mode added a window past the input, which the 2x2 kernels do not handle.
    private let hasPartialWindows: Bool

    private let output = FloatBuffer()          // [N, C, OH, OW]
    private let switches = IndexBuffer()        // [N, C, OH, OW]: index into the input plane
    private var inputGradient = FloatBuffer()   // [N, C, H, W]

    public init(input: FeatureShape, size: Int, stride: Int? = nil, padding: Int = 0, ceilMode: Bool = false,
                name: String = "MaxPool2D") throws {
        let stride = stride ?? size
        self.outputShape = try pooledShape(input: input, size: size, stride: stride, padding: padding, ceilMode: ceilMode, layer: name)
        self.inputShape = input
        self.size = size
        self.stride = stride
        self.padding = padding
        self.ceilMode = ceilMode
        hasPartialWindows = try outputShape != pooledShape(input: input, size: size, stride: stride, padding: padding, layer: name)
    }

    public var summary: String {
        "MaxPool2D(\(size)" + (stride != size ? ", s\(stride)" : "") + (padding != 0 ? ", p\(padding)" : "") + (ceilMode ? ", ceil" : "") + ")"
    }

    public var forwardFLOPs: Int { outputShape.count * size * size }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        pool(input, batch: batch, rectified: false)
    }

    /// ReLU and then this pool, in one pass that never writes the rectified tensor: each value is
    /// rectified as it is read. The outputs and switches are exactly those of `ReLU.forward`
    /// followed by `forward` (the same values compared in the same order), NaN included.
    public func forwardAfterReLU(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        pool(input, batch: batch, rectified: true)
    }

    private func pool(_ input: UnsafePointer<Float>, batch: Int, rectified: Bool) -> UnsafeMutablePointer<Float> {
        let out = output.reserve(batch * outputShape.count)
        let argmax = switches.reserve(batch * outputShape.count)
        let planes = batch * inputShape.channels
        if size == 2 && stride == 2 && padding == 0 && !hasPartialWindows {
            // Each loop passes the flag as a constant, so the inlined kernels are compiled without it.
            if rectified {
                for plane in 0..<planes { forwardTwoByTwo(plane, input: input, output: out, switches: argmax, rectified: true) }
            } else {
                for plane in 0..<planes { forwardTwoByTwo(plane, input: input, output: out, switches: argmax, rectified: false) }
            }
            return out
        }
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        for plane in 0..<planes {
            let source = input + plane * height * width
            let destination = out + plane * outHeight * outWidth
            let where_ = argmax + plane * outHeight * outWidth
            for oh in 0..<outHeight {
                let h0 = oh * stride - padding
                let hStart = max(h0, 0), hEnd = min(h0 + size, height)
                for ow in 0..<outWidth {
                    let w0 = ow * stride - padding
                    let wStart = max(w0, 0), wEnd = min(w0 + size, width)
                    var best = -Float.infinity
                    var bestIndex = hStart * width + wStart
                    for h in hStart..<hEnd {
                        for w in wStart..<wEnd {
                            let read = source[h * width + w]
                            let value = rectified ? (read > 0 ? read : 0) : read
                            // `>` keeps the first maximum, as PyTorch does; NaN propagates.
                            if value > best || value.isNaN {
                                best = value
                                bestIndex = h * width + w
                                if value.isNaN { break }
                            }
                        }
                    }
                    destination[oh * outWidth + ow] = best
                    where_[oh * outWidth + ow] = Int32(bestIndex)
                }
            }
        }
        return out
    }

    /// The common 2x2 pool with stride 2, eight (or four) outputs at a time. Same choice as the
    /// general loop: the window is read in the order (0,0), (0,1), (1,0), (1,1); a value replaces
    /// the best so far when it is larger or NaN, and nothing replaces a NaN. A row whose width is
    /// not a multiple of the vector ends with a block that overlaps the previous one: outputs are
    /// pure functions of the input, so computing some twice is harmless.
    @inline(__always)
    private func forwardTwoByTwo(
        _ plane: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>, switches: UnsafeMutablePointer<Int32>,
        rectified: Bool
    ) {
        let width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        let source = input + plane * inputShape.height * width
        let destination = output + plane * outHeight * outWidth
        let where_ = switches + plane * outHeight * outWidth
        for oh in 0..<outHeight {
            let top = source + 2 * oh * width
            let corner = 2 * oh * width
            let values = destination + oh * outWidth, indices = where_ + oh * outWidth
            if outWidth >= 8 {
                var ow = 0
                while ow < outWidth {
                    let start = min(ow, outWidth - 8)
                    poolEight(
                        top + 2 * start, width: width, corner: corner + 2 * start, into: values + start, indices + start,
                        rectified: rectified)
                    ow += 8
                }
            } else if outWidth >= 4 {
                poolFour(top, width: width, corner: corner, into: values, indices, rectified: rectified)
                poolFour(top + 2 * (outWidth - 4), width: width, corner: corner + 2 * (outWidth - 4),
                         into: values + outWidth - 4, indices + outWidth - 4, rectified: rectified)
            } else {
                @inline(__always) func read(_ value: Float) -> Float { rectified ? (value > 0 ? value : 0) : value }
                for ow in 0..<outWidth {
                    var best = read(top[2 * ow])
                    var bestIndex = corner + 2 * ow
                    for tap in 1...3 where !best.isNaN {
                        let offset = (tap >> 1) * width + (tap & 1)
                        let value = read(top[2 * ow + offset])
                        if value > best || value.isNaN {
                            best = value
                            bestIndex = corner + 2 * ow + offset
                        }
                    }
                    values[ow] = best
                    indices[ow] = Int32(bestIndex)
                }
            }
        }
    }

    /// Eight 2x2 windows whose top-left corners are `top`[0, 2, ..., 14] (index `corner` + 2l in the plane).
    @inline(__always)
    private func poolEight(
        _ top: UnsafePointer<Float>, width: Int, corner: Int, into values: UnsafeMutablePointer<Float>, _ indices: UnsafeMutablePointer<Int32>,
        rectified: Bool
    ) {
        typealias Values = SIMD8<Float>
        typealias Indices = SIMD8<Int32>
        var upper = UnsafeRawPointer(top).loadUnaligned(as: SIMD16<Float>.self)
        var lower = UnsafeRawPointer(top + width).loadUnaligned(as: SIMD16<Float>.self)
        if rectified {
            // max(0, x), with NaN to 0 as ReLU does.
            upper = SIMD16<Float>().replacing(with: upper, where: upper .> 0)
            lower = SIMD16<Float>().replacing(with: lower, where: lower .> 0)
        }
        var best: Values = upper.evenHalf
        var tap = Indices()
        @inline(__always) func consider(_ candidate: Values, _ number: Int32) {
            let take = (best .== best) .& ((candidate .> best) .| (candidate .!= candidate))
            best.replace(with: candidate, where: take)
            tap.replace(with: Indices(repeating: number), where: take)
        }
        consider(upper.oddHalf, 1)
        consider(lower.evenHalf, 2)
        consider(lower.oddHalf, 3)
        // Tap t sits t / 2 rows and t % 2 columns from the window's corner.
        let corners = Indices(repeating: Int32(corner)) &+ Indices(0, 2, 4, 6, 8, 10, 12, 14)
        let index = corners &+ (tap &>> 1) &* Int32(width) &+ (tap & 1)
        UnsafeMutableRawPointer(values).storeBytes(of: best, as: Values.self)
        UnsafeMutableRawPointer(indices).storeBytes(of: index, as: Indices.self)
    }

    /// Four windows, as `poolEight`, for rows of four to seven outputs.
    @inline(__always)
    private func poolFour(
        _ top: UnsafePointer<Float>, width: Int, corner: Int, into values: UnsafeMutablePointer<Float>, _ indices: UnsafeMutablePointer<Int32>,
        rectified: Bool
    ) {
        typealias Values = SIMD4<Float>
        typealias Indices = SIMD4<Int32>
        var upper = UnsafeRawPointer(top).loadUnaligned(as: SIMD8<Float>.self)
        var lower = UnsafeRawPointer(top + width).loadUnaligned(as: SIMD8<Float>.self)
        if rectified {
            // max(0, x), with NaN to 0 as ReLU does.
            upper = SIMD8<Float>().replacing(with: upper, where: upper .> 0)
            lower = SIMD8<Float>().replacing(with: lower, where: lower .> 0)
        }
        var best: Values = upper.evenHalf
        var tap = Indices()
        @inline(__always) func consider(_ candidate: Values, _ number: Int32) {
            let take = (best .== best) .& ((candidate .> best) .| (candidate .!= candidate))
            best.replace(with: candidate, where: take)
            tap.replace(with: Indices(repeating: number), where: take)
        }
        consider(upper.oddHalf, 1)
        consider(lower.evenHalf, 2)
        consider(lower.oddHalf, 3)
        let corners = Indices(repeating: Int32(corner)) &+ Indices(0, 2, 4, 6)
        let index = corners &+ (tap &>> 1) &* Int32(width) &+ (tap & 1)
        UnsafeMutableRawPointer(values).storeBytes(of: best, as: Values.self)
        UnsafeMutableRawPointer(indices).storeBytes(of: index, as: Indices.self)
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        scatter(outputGradient, batch: batch, rectified: false)
    }

    /// The backward pass of `forwardAfterReLU`: what `backward` and then `ReLU.backward` give.
    /// A window passes its gradient only when its output is positive: then its argmax is an
    /// input above zero, which ReLU passes; otherwise that input is at most zero, and ReLU would
    /// have zeroed whatever reached it. Each input's sum adds the same terms in the same order.
    public func backwardThroughReLU(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        scatter(outputGradient, batch: batch, rectified: true)
    }

    private func scatter(_ outputGradient: UnsafePointer<Float>, batch: Int, rectified: Bool) -> UnsafeMutablePointer<Float> {
        let dInput = inputGradient.reserve(batch * inputShape.count)
        if size == 2 && stride == 2 && padding == 0 && !hasPartialWindows && outputShape.width >= 4 {
            for plane in 0..<(batch * inputShape.channels) {
                // The flag as a constant in each branch, as in `pool`.
                if rectified {
                    writeTwoByTwo(plane, outputGradient: outputGradient, into: dInput, rectified: true)
                } else {
                    writeTwoByTwo(plane, outputGradient: outputGradient, into: dInput, rectified: false)
                }
            }
            return dInput
        }
        dInput.update(repeating: 0, count: batch * inputShape.count)
        let inPlane = inputShape.height * inputShape.width
        let outPlane = outputShape.height * outputShape.width
        let argmax = switches.pointer, pooled = output.pointer
        for plane in 0..<(batch * inputShape.channels) {
            let destination = dInput + plane * inPlane
            let source = outputGradient + plane * outPlane
            let where_ = argmax + plane * outPlane
            if rectified {
                let values = pooled + plane * outPlane
                for o in 0..<outPlane {
                    destination[Int(where_[o])] += values[o] > 0 ? source[o] : 0
                }
            } else {
                for o in 0..<outPlane {
                    destination[Int(where_[o])] += source[o]
                }
            }
        }
        return dInput
    }

    /// Backward of the 2x2 stride-2 pool for one plane, each input written once instead of
    /// zeroed and then added to: the windows tile the plane, so a window's four inputs get its
    /// gradient at the argmax and zero elsewhere, and a last odd row or column, in no window,
    /// gets zero. The argmax value is written as 0 + gradient, the sum the scatter makes (a
    /// gradient of -0 lands as +0), so both paths give the same bits. Rows of eight windows or
    /// more go eight at a time, rows of four to seven four at a time (a last block may overlap
    /// the one before: it writes the same values again).
    @inline(__always)
    private func writeTwoByTwo(_ plane: Int, outputGradient: UnsafePointer<Float>, into dInput: UnsafeMutablePointer<Float>, rectified: Bool) {
        let width = inputShape.width, height = inputShape.height
        let outHeight = outputShape.height, outWidth = outputShape.width
        let outPlane = outHeight * outWidth
        let source = outputGradient + plane * outPlane
        let where_ = switches.pointer + plane * outPlane
        let pooled = output.pointer + plane * outPlane
        let destination = dInput + plane * height * width
        for oh in 0..<outHeight {
            let row = Row(
                gradient: source + oh * outWidth, switches: where_ + oh * outWidth, pooled: pooled + oh * outWidth,
                upper: destination + 2 * oh * width, width: width, corner: Int32(2 * oh * width), rectified: rectified)
            if outWidth >= 8 {
                var ow = 0
                while ow < outWidth {
                    row.writeEight(start: min(ow, outWidth - 8))
                    ow += 8
                }
            } else {
                row.writeFour(start: 0)
                row.writeFour(start: outWidth - 4)
            }
            if width & 1 == 1 {
                row.upper[width - 1] = 0
                row.upper[2 * width - 1] = 0
            }
        }
        if height & 1 == 1 {
            VectorKernels.zero(destination + (height - 1) * width, count: width)
        }
    }

    /// One row of 2x2 windows for `writeTwoByTwo`: its gradients, switches and pooled values,
    /// and the two input rows it covers (`upper` and the row below).
    private struct Row {
        let gradient: UnsafePointer<Float>
        let switches: UnsafePointer<Int32>
        let pooled: UnsafePointer<Float>
        let upper: UnsafeMutablePointer<Float>
        let width: Int
        let corner: Int32
        let rectified: Bool

        /// Writes the inputs of windows `start` ..< `start` + 8.
        @inline(__always)
        func writeEight(start: Int) {
            let values = gradients(SIMD8<Float>.self, start: start)
            let offsets = UnsafeRawPointer(switches + start).loadUnaligned(as: SIMD8<Int32>.self)
                &- (SIMD8<Int32>(repeating: corner &+ Int32(2 * start)) &+ SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14))
            let spread = SIMD16<Float>(
                values[0], values[0], values[1], values[1], values[2], values[2], values[3], values[3],
                values[4], values[4], values[5], values[5], values[6], values[6], values[7], values[7])
            let at = SIMD16<Int32>(
                offsets[0], offsets[0], offsets[1], offsets[1], offsets[2], offsets[2], offsets[3], offsets[3],
                offsets[4], offsets[4], offsets[5], offsets[5], offsets[6], offsets[6], offsets[7], offsets[7])
            let column = SIMD16<Int32>(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1)
            store(SIMD16<Float>().replacing(with: spread, where: at .== column),
                  SIMD16<Float>().replacing(with: spread, where: at .== column &+ Int32(width)), start: start)
        }

        /// Writes the inputs of windows `start` ..< `start` + 4.
        @inline(__always)
        func writeFour(start: Int) {
            let values = gradients(SIMD4<Float>.self, start: start)
            let offsets = UnsafeRawPointer(switches + start).loadUnaligned(as: SIMD4<Int32>.self)
                &- (SIMD4<Int32>(repeating: corner &+ Int32(2 * start)) &+ SIMD4<Int32>(0, 2, 4, 6))
            let spread = SIMD8<Float>(values[0], values[0], values[1], values[1], values[2], values[2], values[3], values[3])
            let at = SIMD8<Int32>(offsets[0], offsets[0], offsets[1], offsets[1], offsets[2], offsets[2], offsets[3], offsets[3])
            let column = SIMD8<Int32>(0, 1, 0, 1, 0, 1, 0, 1)
            store(SIMD8<Float>().replacing(with: spread, where: at .== column),
                  SIMD8<Float>().replacing(with: spread, where: at .== column &+ Int32(width)), start: start)
        }

        /// The windows' gradients from `start`, zero where ReLU stops them, as 0 + gradient.
        @inline(__always)
        private func gradients(_: SIMD8<Float>.Type, start: Int) -> SIMD8<Float> {
            var values = UnsafeRawPointer(gradient + start).loadUnaligned(as: SIMD8<Float>.self)
            if rectified {
                let outputs = UnsafeRawPointer(pooled + start).loadUnaligned(as: SIMD8<Float>.self)
                values = SIMD8<Float>().replacing(with: values, where: outputs .> SIMD8<Float>())
            }
            return SIMD8<Float>() + values
        }

        @inline(__always)
        private func gradients(_: SIMD4<Float>.Type, start: Int) -> SIMD4<Float> {
            var values = UnsafeRawPointer(gradient + start).loadUnaligned(as: SIMD4<Float>.self)
            if rectified {
                let outputs = UnsafeRawPointer(pooled + start).loadUnaligned(as: SIMD4<Float>.self)
                values = SIMD4<Float>().replacing(with: values, where: outputs .> SIMD4<Float>())
            }
            return SIMD4<Float>() + values
        }

        @inline(__always)
        private func store(_ top: SIMD16<Float>, _ bottom: SIMD16<Float>, start: Int) {
            UnsafeMutableRawPointer(upper + 2 * start).storeBytes(of: top, as: SIMD16<Float>.self)
            UnsafeMutableRawPointer(upper + width + 2 * start).storeBytes(of: bottom, as: SIMD16<Float>.self)
        }

        @inline(__always)
        private func store(_ top: SIMD8<Float>, _ bottom: SIMD8<Float>, start: Int) {
            UnsafeMutableRawPointer(upper + 2 * start).storeBytes(of: top, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(upper + width + 2 * start).storeBytes(of: bottom, as: SIMD8<Float>.self)
        }
    }
}
