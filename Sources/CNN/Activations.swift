// Element-wise activations without parameters. Each keeps what its derivative needs: the input
// (valid until backward by the `Layer` contract) or its own output.

/// x for x > 0, slope * x otherwise (PyTorch's `LeakyReLU`, default slope 0.01).
public final class LeakyReLU: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }
    public let slope: Float

    private var savedInput: UnsafePointer<Float>!   // [N, C, H, W]
    private let output = FloatBuffer()              // [N, C, H, W]
    private var inputGradient = FloatBuffer()       // [N, C, H, W]

    /// A leaky ReLU on samples of shape `input` with the given negative-side slope.
    public init(input: FeatureShape, slope: Float = 0.01) {
        self.inputShape = input
        self.slope = slope
    }

    public var summary: String { "LeakyReLU(\(slope))" }
    public var forwardFLOPs: Int { inputShape.count }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let count = batch * inputShape.count
        let out = output.reserve(count)
        let slope = self.slope
        for i in 0..<count {
            let x = input[i]
            out[i] = x > 0 ? x : slope * x
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        let x = savedInput!, slope = self.slope
        for i in 0..<count {
            let dy = outputGradient[i]
            dInput[i] = x[i] > 0 ? dy : slope * dy
        }
        return dInput
    }
}

/// x for x > 0, alpha * (exp(x) - 1) otherwise (Clevert et al. 2016; PyTorch's `ELU`).
public final class ELU: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }
    public let alpha: Float

    private var savedInput: UnsafePointer<Float>!   // [N, C, H, W]
    private let output = FloatBuffer()              // [N, C, H, W]
    private var inputGradient = FloatBuffer()       // [N, C, H, W]

    /// An ELU on samples of shape `input`; throws a `ModelError` naming `name` for a negative alpha.
    public init(input: FeatureShape, alpha: Float = 1, name: String = "ELU") throws {
        guard alpha >= 0, alpha.isFinite else {
            throw ModelError(layer: name, message: "ELU alpha must be a finite number of at least 0, found \(alpha)")
        }
        self.inputShape = input
        self.alpha = alpha
    }

    public var summary: String { "ELU(\(alpha))" }
    public var forwardFLOPs: Int { inputShape.count }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let count = batch * inputShape.count
        let out = output.reserve(count)
        let alpha = self.alpha
        for i in 0..<count {
            let x = input[i]
            // Both sides computed, so the choice is a select rather than an unpredictable branch.
            let negative = alpha * expm1f(min(x, 0))
            out[i] = x > 0 ? x : negative
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        let x = savedInput!, y = output.pointer, alpha = self.alpha
        // For x <= 0, d/dx alpha (e^x - 1) = alpha e^x = y + alpha.
        for i in 0..<count {
            let dy = outputGradient[i], value = x[i], slope = y[i] + alpha
            dInput[i] = value > 0 ? dy : dy * slope
        }
        return dInput
    }
}

/// 1 / (1 + e^-x).
public final class Sigmoid: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }

    private let output = FloatBuffer()          // [N, C, H, W]
    private var inputGradient = FloatBuffer()   // [N, C, H, W]

    /// A sigmoid on samples of shape `input`.
    public init(input: FeatureShape) {
        self.inputShape = input
    }

    public var summary: String { "Sigmoid" }
    public var forwardFLOPs: Int { 4 * inputShape.count }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let out = output.reserve(count)
        for i in 0..<count {
            // e^-x overflows to +inf for x < -88, giving exactly 0, which is the right limit.
            out[i] = 1 / (1 + expf(-input[i]))
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        let y = output.pointer
        for i in 0..<count { dInput[i] = outputGradient[i] * y[i] * (1 - y[i]) }
        return dInput
    }
}

/// The hyperbolic tangent.
public final class Tanh: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }

    private let output = FloatBuffer()          // [N, C, H, W]
    private var inputGradient = FloatBuffer()   // [N, C, H, W]

    /// A tanh on samples of shape `input`.
    public init(input: FeatureShape) {
        self.inputShape = input
    }

    public var summary: String { "Tanh" }
    public var forwardFLOPs: Int { 4 * inputShape.count }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let out = output.reserve(count)
        for i in 0..<count { out[i] = tanhf(input[i]) }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        let y = output.pointer
        for i in 0..<count { dInput[i] = outputGradient[i] * (1 - y[i] * y[i]) }
        return dInput
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
