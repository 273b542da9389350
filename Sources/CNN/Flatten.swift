/// [N, C, H, W] -> [N, C*H*W] in PyTorch's (channel-major) order. NCHW is already laid out that
/// way, so this moves no data: it only changes the shape the next layer sees.
public final class Flatten: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape

    public init(input: FeatureShape) {
        self.inputShape = input
        self.outputShape = .vector(input.count)
    }

    public var summary: String { "Flatten" }
    public var savedFloatsPerSample: Int { 0 }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        UnsafeMutablePointer(mutating: input)
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutablePointer(mutating: outputGradient)
    }
}
