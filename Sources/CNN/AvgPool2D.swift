// Legend: n sample, c channel, (h, w) input position, (oh, ow) output position.

/// Average pooling over F x F windows with stride S and zero padding P, as PyTorch's `AvgPool2d`
/// with its defaults: the output size floors, and padded positions count in the divisor
/// (`count_include_pad`), so every full window divides by F * F. Overlapping windows (F = 3,
/// S = 2, as in AlexNet) are allowed.
public final class AvgPool2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let size: Int
    public let stride: Int
    public let padding: Int

    private let output = FloatBuffer()          // [N, C, OH, OW]
    private var inputGradient = FloatBuffer()   // [N, C, H, W]

    /// F x F windows (`size`) moved by `stride` (default: the size) over zero padding `padding`;
    /// throws a `ModelError` naming `name` when they do not fit the input.
    public init(input: FeatureShape, size: Int, stride: Int? = nil, padding: Int = 0, name: String = "AvgPool2D") throws {
        let stride = stride ?? size
        self.outputShape = try pooledShape(input: input, size: size, stride: stride, padding: padding, layer: name)
        self.inputShape = input
        self.size = size
        self.stride = stride
        self.padding = padding
    }

    public var summary: String {
        "AvgPool2D(\(size)" + (stride != size ? ", s\(stride)" : "") + (padding != 0 ? ", p\(padding)" : "") + ")"
    }

    public var forwardFLOPs: Int { outputShape.count * size * size }
    public var savedFloatsPerSample: Int { outputShape.count }

    /// The window of output (oh, ow) clipped to the input, and the divisor PyTorch uses for it:
    /// the window's size clipped to the padded input.
    @inline(__always)
    private func window(_ oh: Int, _ ow: Int) -> (hStart: Int, hEnd: Int, wStart: Int, wEnd: Int, divisor: Float) {
        let h0 = oh * stride - padding, w0 = ow * stride - padding
        let h1 = min(h0 + size, inputShape.height + padding), w1 = min(w0 + size, inputShape.width + padding)
        let divisor = Float((h1 - h0) * (w1 - w0))
        return (max(h0, 0), min(h1, inputShape.height), max(w0, 0), min(w1, inputShape.width), divisor)
    }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let out = output.reserve(batch * outputShape.count)
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        for plane in 0..<(batch * inputShape.channels) {
            let source = input + plane * height * width
            let destination = out + plane * outHeight * outWidth
            for oh in 0..<outHeight {
                for ow in 0..<outWidth {
                    let box = window(oh, ow)
                    var sum: Float = 0
                    for h in box.hStart..<box.hEnd {
                        for w in box.wStart..<box.wEnd { sum += source[h * width + w] }
                    }
                    destination[oh * outWidth + ow] = sum / box.divisor
                }
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let dInput = inputGradient.reserve(batch * inputShape.count)
        dInput.update(repeating: 0, count: batch * inputShape.count)
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        for plane in 0..<(batch * inputShape.channels) {
            let destination = dInput + plane * height * width
            let source = outputGradient + plane * outHeight * outWidth
            for oh in 0..<outHeight {
                for ow in 0..<outWidth {
                    let box = window(oh, ow)
                    let share = source[oh * outWidth + ow] / box.divisor
                    for h in box.hStart..<box.hEnd {
                        for w in box.wStart..<box.wEnd { destination[h * width + w] += share }
                    }
                }
            }
        }
        return dInput
    }
}

/// The mean of each channel: [N, C, H, W] -> [N, C, 1, 1] (PyTorch's `AdaptiveAvgPool2d(1)`).
public final class GlobalAvgPool2D: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { .vector(inputShape.channels) }

    private let output = FloatBuffer()          // [N, C]
    private var inputGradient = FloatBuffer()   // [N, C, H, W]

    /// Averages each channel of samples of shape `input`.
    public init(input: FeatureShape) {
        self.inputShape = input
    }

    public var summary: String { "GlobalAvgPool2D" }
    public var forwardFLOPs: Int { inputShape.count }
    public var savedFloatsPerSample: Int { 0 }

    private var plane: Int { inputShape.spatialCount }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let planes = batch * inputShape.channels
        let out = output.reserve(planes)
        let plane = self.plane
        for p in 0..<planes {
            out[p] = Float(Reduction.sum(input + p * plane, count: plane) / Double(plane))
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let planes = batch * inputShape.channels
        let plane = self.plane
        let dInput = inputGradient.reserve(planes * plane)
        let scale = 1 / Float(plane)
        for p in 0..<planes {
            (dInput + p * plane).update(repeating: outputGradient[p] * scale, count: plane)
        }
        return dInput
    }
}
