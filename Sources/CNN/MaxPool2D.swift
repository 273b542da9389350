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
        guard size > 0, stride > 0, padding >= 0 else {
            throw ModelError(layer: name, message: "pool size and stride must be positive and padding not negative")
        }
        guard padding * 2 <= size else {
            throw ModelError(layer: name, message: "padding \(padding) must be at most half the pool size \(size), as in PyTorch")
        }
        // Pooling floors like PyTorch: dropping a last odd row is the common, intended case.
        let height = try slidingOutputSize(
            input: input.height, kernel: size, stride: stride, padding: padding, axis: "height", layer: name, strict: false)
        let width = try slidingOutputSize(
            input: input.width, kernel: size, stride: stride, padding: padding, axis: "width", layer: name, strict: false)
        self.inputShape = input
        self.outputShape = FeatureShape(channels: input.channels, height: height, width: width)
        self.size = size
        self.stride = stride
        self.padding = padding
    }

    public var summary: String {
        "MaxPool2D(\(size)" + (stride != size ? ", s\(stride)" : "") + (padding != 0 ? ", p\(padding)" : "") + ")"
    }

    public var forwardFLOPs: Int { outputShape.count * size * size }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let out = output.reserve(batch * outputShape.count)
        let argmax = switches.reserve(batch * outputShape.count)
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        let planes = batch * inputShape.channels
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
                            let value = source[h * width + w]
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

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let dInput = inputGradient.reserve(batch * inputShape.count)
        dInput.update(repeating: 0, count: batch * inputShape.count)
        let inPlane = inputShape.height * inputShape.width
        let outPlane = outputShape.height * outputShape.width
        let argmax = switches.pointer
        for plane in 0..<(batch * inputShape.channels) {
            let destination = dInput + plane * inPlane
            let source = outputGradient + plane * outPlane
            let where_ = argmax + plane * outPlane
            for o in 0..<outPlane {
                destination[Int(where_[o])] += source[o]
            }
        }
        return dInput
    }
}
