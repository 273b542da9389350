/// max(0, x). Backward passes the gradient where the output is positive (zero at exactly 0,
/// as PyTorch does).
public final class ReLU: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }

    private let output = FloatBuffer()
    private let inputGradient = FloatBuffer()

    public init(input: FeatureShape) {
        self.inputShape = input
    }

    public var summary: String { "ReLU" }
    public var forwardFLOPs: Int { inputShape.count }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let out = output.reserve(count)
        for i in 0..<count {
            let x = input[i]
            out[i] = x > 0 ? x : 0
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        let out = output.pointer
        for i in 0..<count {
            dInput[i] = out[i] > 0 ? outputGradient[i] : 0
        }
        return dInput
    }
}
