/// max(0, x). Backward passes the gradient where the output is positive (zero at exactly 0,
/// as PyTorch does).
public final class ReLU: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }

    private let output = FloatBuffer()
    private var inputGradient = FloatBuffer()
    /// Where the last forward left its output: `output`, or the values `forwardInPlace` rectified.
    private var lastOutput: UnsafePointer<Float>?

    public init(input: FeatureShape) {
        self.inputShape = input
    }

    public var summary: String { "ReLU" }
    public var forwardFLOPs: Int { inputShape.count }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        rectify(input, into: output.reserve(batch * inputShape.count), batch: batch)
    }

    /// `forward` written over its input, for a caller that owns those values and needs them no
    /// more (a network, over a convolution's or dense layer's output): the same bits, without a
    /// tensor of its own. The values must stay untouched until `backward` or `backwardInPlace`.
    public func forwardInPlace(_ values: UnsafeMutablePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        rectify(values, into: values, batch: batch)
    }

    private func rectify(_ input: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        lastOutput = UnsafePointer(out)
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
        mask(outputGradient, into: inputGradient.reserve(batch * inputShape.count), batch: batch)
    }

    /// `backward` written over the output gradient, for a caller that owns it and needs it no
    /// more: the same bits, without a tensor of its own.
    public func backwardInPlace(_ outputGradient: UnsafeMutablePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        mask(outputGradient, into: outputGradient, batch: batch)
    }

    private func mask(_ outputGradient: UnsafePointer<Float>, into dInput: UnsafeMutablePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let out = lastOutput ?? UnsafePointer(output.pointer)
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
