// Legend: n sample, c channel, (h, w) input position, (oh, ow) output position.

/// Max pooling over F x F windows with stride S and padding P (padding never wins: it is -inf).
/// Remembers each output's argmax ("switches") so backward routes the gradient to that input.
public final class MaxPool2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let size: Int
    public let stride: Int
    public let padding: Int

    private let output = FloatBuffer()          // [N, C, OH, OW]
    private let switches = IndexBuffer()        // [N, C, OH, OW]: index into the input plane
    private let inputGradient = FloatBuffer()   // [N, C, H, W]

    public init(input: FeatureShape, size: Int, stride: Int? = nil, padding: Int = 0, name: String = "MaxPool2D") throws {
        let stride = stride ?? size
        self.outputShape = try pooledShape(input: input, size: size, stride: stride, padding: padding, layer: name)
        self.inputShape = input
        self.size = size
        self.stride = stride
        self.padding = padding
    }

    public var summary: String {
        "MaxPool2D(\(size)" + (stride != size ? ", s\(stride)" : "") + (padding != 0 ? ", p\(padding)" : "") + ")"
    }

    public var forwardFLOPs: Int { outputShape.count * size * size }

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
        if size == 2 && stride == 2 && padding == 0 {
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
        if size == 2 && stride == 2 && padding == 0 && outputShape.width >= 8 {
            for plane in 0..<(batch * inputShape.channels) {
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
    /// gradient of -0 lands as +0), so both paths give the same bits.
    @inline(__always)
    private func writeTwoByTwo(_ plane: Int, outputGradient: UnsafePointer<Float>, into dInput: UnsafeMutablePointer<Float>, rectified: Bool) {
        typealias Values = SIMD8<Float>
        typealias Indices = SIMD8<Int32>
        let width = inputShape.width, height = inputShape.height
        let outHeight = outputShape.height, outWidth = outputShape.width
        let outPlane = outHeight * outWidth
        let source = outputGradient + plane * outPlane
        let where_ = switches.pointer + plane * outPlane
        let pooled = output.pointer + plane * outPlane
        let destination = dInput + plane * height * width
        let lanes = Indices(0, 2, 4, 6, 8, 10, 12, 14)
        let zero = Values()
        for oh in 0..<outHeight {
            let upper = destination + 2 * oh * width, lower = upper + width
            let corner = Int32(2 * oh * width)
            var ow = 0
            while ow < outWidth {
                let start = min(ow, outWidth - 8)
                var gradient = UnsafeRawPointer(source + oh * outWidth + start).loadUnaligned(as: Values.self)
                if rectified {
                    let values = UnsafeRawPointer(pooled + oh * outWidth + start).loadUnaligned(as: Values.self)
                    gradient = zero.replacing(with: gradient, where: values .> zero)
                }
                gradient = zero + gradient
                let offset = UnsafeRawPointer(where_ + oh * outWidth + start).loadUnaligned(as: Indices.self)
                    &- (Indices(repeating: corner &+ Int32(2 * start)) &+ lanes)
                let both = SIMD16<Float>(lowHalf: gradient, highHalf: gradient)
                let spread = SIMD16<Float>(
                    both[0], both[0], both[1], both[1], both[2], both[2], both[3], both[3],
                    both[4], both[4], both[5], both[5], both[6], both[6], both[7], both[7])
                let wide = SIMD16<Int32>(lowHalf: offset, highHalf: offset)
                let at = SIMD16<Int32>(
                    wide[0], wide[0], wide[1], wide[1], wide[2], wide[2], wide[3], wide[3],
                    wide[4], wide[4], wide[5], wide[5], wide[6], wide[6], wide[7], wide[7])
                let column = SIMD16<Int32>(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1)
                let top = SIMD16<Float>().replacing(with: spread, where: at .== column)
                let bottom = SIMD16<Float>().replacing(with: spread, where: at .== column &+ Int32(width))
                UnsafeMutableRawPointer(upper + 2 * start).storeBytes(of: top, as: SIMD16<Float>.self)
                UnsafeMutableRawPointer(lower + 2 * start).storeBytes(of: bottom, as: SIMD16<Float>.self)
                ow += 8
            }
            if width & 1 == 1 {
                upper[width - 1] = 0
                lower[width - 1] = 0
            }
        }
        if height & 1 == 1 {
            VectorKernels.zero(destination + (height - 1) * width, count: width)
        }
    }
}
