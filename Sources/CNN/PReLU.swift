// Legend: n sample, c channel, HW the plane of one channel.

/// Leaky ReLU with a learned slope (He et al. 2015): x for x > 0, a_c * x otherwise. The
/// parameter `weight` has shape [1] (one slope shared by all channels) or [C], as PyTorch's
/// `nn.PReLU(num_parameters)`; it starts at `initial` (PyTorch: 0.25).
public final class PReLU: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }
    public let perChannel: Bool
    public let initial: Float

    private var weight: UnsafeMutablePointer<Float>!            // [1] or [C]
    private var weightGradient: UnsafeMutablePointer<Float>!    // [1] or [C]
    private var savedInput: UnsafePointer<Float>!               // [N, C, H, W]
    private let output = FloatBuffer()                          // [N, C, H, W]
    private let inputGradient = FloatBuffer()                   // [N, C, H, W]

    /// One learned slope for all channels of samples of shape `input`, or one per channel,
    /// starting at `initial`.
    public init(input: FeatureShape, perChannel: Bool = false, initial: Float = 0.25) {
        self.inputShape = input
        self.perChannel = perChannel
        self.initial = initial
    }

    public var summary: String { perChannel ? "PReLU(\(inputShape.channels))" : "PReLU" }
    public var forwardFLOPs: Int { inputShape.count }

    public var parameterSpecs: [ParameterSpec] {
        [ParameterSpec(name: "weight", shape: [perChannel ? inputShape.channels : 1], initialiser: .constant(initial))]
    }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weight = parameters
        weightGradient = gradients
    }

    private var plane: Int { inputShape.spatialCount }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let out = output.reserve(batch * inputShape.count)
        let channels = inputShape.channels, plane = self.plane
        for n in 0..<batch {
            for c in 0..<channels {
                let slope = weight[perChannel ? c : 0]
                let x = input + (n * channels + c) * plane, y = out + (n * channels + c) * plane
                for i in 0..<plane { y[i] = x[i] > 0 ? x[i] : slope * x[i] }
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let channels = inputShape.channels, plane = self.plane
        for n in 0..<batch {
            for c in 0..<channels {
                let index = perChannel ? c : 0
                let slope = weight[index]
                let offset = (n * channels + c) * plane
                let x = savedInput + offset, dy = outputGradient + offset, dx = dInput + offset
                // d(loss)/d(slope) gathers dy * x over the values on the negative side.
                var slopeGradient: Float = 0
                for i in 0..<plane {
                    let value = x[i], gradient = dy[i]
                    let negative = value > 0 ? Float(0) : value
                    slopeGradient += gradient * negative
                    dx[i] = value > 0 ? gradient : slope * gradient
                }
                weightGradient[index] += slopeGradient
            }
        }
        return dInput
    }
}
