/// A child of a composite layer and the name its tensors are prefixed with, as PyTorch names a
/// submodule's tensors: a child "conv1" owning "weight" gives "conv1.weight"; "downsample.0" gives
/// "downsample.0.weight".
public struct NamedLayer {
    public var name: String
    public var layer: Layer

    /// `layer`, whose tensors will be named "\(name).<tensor>".
    public init(name: String, layer: Layer) {
        self.name = name
        self.layer = layer
    }
}

/// Layers applied one after another as one layer (PyTorch's `nn.Sequential`): the paths inside
/// residual blocks, inception branches, and the depthwise + pointwise pair of a separable
/// convolution. Its tensors are its children's, renamed "child.tensor", laid out in child order.
public final class Sequential: Layer {
    public let children: [NamedLayer]
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let summary: String

    /// Chains `children`; throws a `ModelError` naming `name` if one child's output shape is not
    /// the next one's input shape.
    public init(input: FeatureShape, children: [NamedLayer], summary: String, name: String) throws {
        var shape = input
        for child in children {
            guard child.layer.inputShape == shape else {
                throw ModelError(
                    layer: name,
                    message: "child '\(child.name)' (\(child.layer.summary)) expects input \(child.layer.inputShape) but receives \(shape)")
            }
            shape = child.layer.outputShape
        }
        self.children = children
        self.inputShape = input
        self.outputShape = shape
        self.summary = summary
    }

    public var parameterSpecs: [ParameterSpec] { prefixed(children) { $0.parameterSpecs } }
    public var stateSpecs: [ParameterSpec] { prefixed(children) { $0.stateSpecs } }
    public var forwardFLOPs: Int { children.reduce(0) { $0 + $1.layer.forwardFLOPs } }
    public var savedFloatsPerSample: Int { children.reduce(0) { $0 + $1.layer.savedFloatsPerSample } }

    public var sublayers: [Layer] { children.map(\.layer) }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        var activation = UnsafeMutablePointer(mutating: input)
        for child in children {
            activation = child.layer.forward(activation, batch: batch, context: context)
        }
        return activation
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        var gradient = UnsafeMutablePointer(mutating: outputGradient)
        for child in children.reversed() {
            gradient = child.layer.backward(gradient, batch: batch)
        }
        return gradient
    }
}

/// The tensors of `children`, each renamed "child.tensor".
func prefixed(_ children: [NamedLayer], _ specs: (Layer) -> [ParameterSpec]) -> [ParameterSpec] {
    children.flatMap { child in
        specs(child.layer).map { spec in
            ParameterSpec(name: "\(child.name).\(spec.name)", shape: spec.shape, initialiser: spec.initialiser)
        }
    }
}
