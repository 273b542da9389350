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
        typealias Lanes = VectorKernels.Lanes
        let zero = Lanes()
        var i = 0
        while i + VectorKernels.width <= count {
            let x = VectorKernels.load(input + i)
            VectorKernels.store(zero.replacing(with: x, where: x .> zero), out + i)
            i += VectorKernels.width
        }
        while i < count {
            let x = input[i]
            out[i] = x > 0 ? x : 0
            i += 1
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        let out = UnsafePointer(output.pointer)
        typealias Lanes = VectorKernels.Lanes
        let zero = Lanes()
        var i = 0
        while i + VectorKernels.width <= count {
            let y = VectorKernels.load(out + i)
            VectorKernels.store(zero.replacing(with: VectorKernels.load(outputGradient + i), where: y .> zero), dInput + i)
            i += VectorKernels.width
        }
        while i < count {
            dInput[i] = out[i] > 0 ? outputGradient[i] : 0
            i += 1
        }
        return dInput
    }
}
