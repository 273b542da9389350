// Legend: n sample, c channel, (h, w) input position, (oh, ow) output position.

/// L2-norm pooling: sqrt(sum of x^2) over each F x F window with stride S, no padding, the output
/// size floored, as PyTorch's `LPPool2d(2, F, S)` computes it.
public final class L2Pool2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let size: Int
    public let stride: Int

    private var savedInput: UnsafePointer<Float>!  // [N, C, H, W]
    private let output = FloatBuffer()             // [N, C, OH, OW]
    private let inputGradient = FloatBuffer()      // [N, C, H, W]

    /// F x F windows (`size`) moved by `stride` (default: the size); throws a `ModelError` naming
    /// `name` when they do not fit the input.
    public init(input: FeatureShape, size: Int, stride: Int? = nil, name: String = "L2Pool2D") throws {
        let stride = stride ?? size
        self.outputShape = try pooledShape(input: input, size: size, stride: stride, padding: 0, layer: name)
        self.inputShape = input
        self.size = size
        self.stride = stride
    }

    public var summary: String { "L2Pool2D(\(size)" + (stride != size ? ", s\(stride)" : "") + ")" }
    public var forwardFLOPs: Int { 2 * outputShape.count * size * size }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let out = output.reserve(batch * outputShape.count)
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        for plane in 0..<(batch * inputShape.channels) {
            let source = input + plane * height * width
            let destination = out + plane * outHeight * outWidth
            for oh in 0..<outHeight {
                for ow in 0..<outWidth {
                    var squares: Float = 0
                    for h in (oh * stride)..<(oh * stride + size) {
                        let row = source + h * width + ow * stride
                        for j in 0..<size { squares += row[j] * row[j] }
                    }
                    destination[oh * outWidth + ow] = squares.squareRoot()
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
        let out = output.pointer
        for plane in 0..<(batch * inputShape.channels) {
            let x = savedInput + plane * height * width
            let dx = dInput + plane * height * width
            let y = out + plane * outHeight * outWidth
            let dy = outputGradient + plane * outHeight * outWidth
            for o in 0..<(outHeight * outWidth) {
                // d sqrt(S) / dx = x / sqrt(S); an all-zero window has no direction and passes nothing.
                guard y[o] > 0 else { continue }
                let factor = dy[o] / y[o]
                let oh = o / outWidth, ow = o % outWidth
                for h in (oh * stride)..<(oh * stride + size) {
                    let offset = h * width + ow * stride
                    for j in 0..<size { dx[offset + j] += factor * x[offset + j] }
                }
            }
        }
        return dInput
    }
}
