import CNN
import Randomness

/// Where one of a layer's parameter (or state) tensors sits in the buffers a `BoundLayer` owns.
public struct BoundTensor: Sendable, Equatable {
    /// The layer's own name for it: "weight", "bias".
    public var name: String
    public var shape: [Int]
    /// First element in the flat buffer.
    public var offset: Int
    public var count: Int
}

/// How `BoundLayer` fills a layer's parameters.
public enum ParameterFill: Sendable {
    /// As each `ParameterSpec`'s initialiser says (He normal weights, zero biases, ...).
    case initialisers
    /// Every element N(0, scale^2), biases included: what a gradient check wants, since a zero
    /// bias would hide a forward pass that forgets to add it.
    case normal(scale: Float)
}

/// A layer bound to parameter and gradient buffers of its own, laid out contiguously in
/// `parameterSpecs` order exactly as `Network` lays them out, so one layer can be tested alone.
///
/// The layer holds raw pointers into these buffers and does not retain them: keep the binding
/// alive while the layer runs (its `forward` and `forwardBackward` methods do).
public final class BoundLayer {
    /// The layer under test, bound to this object's buffers.
    public let layer: Layer
    /// The flat parameter vector, in `tensors` order.
    public let parameters: FloatBuffer
    /// The flat gradient vector, same layout; the layer's backward adds into it.
    public let gradients: FloatBuffer
    /// The parameter tensors in `parameterSpecs` order.
    public let tensors: [BoundTensor]
    public let parameterCount: Int
    /// Non-trainable state (BatchNorm running statistics), in `stateTensors` order.
    public let state: FloatBuffer
    /// Where a training forward pass records its observations (BatchNorm batch statistics).
    public let observations: FloatBuffer
    /// The state tensors in `stateSpecs` order.
    public let stateTensors: [BoundTensor]

    /// Binds `layer` to fresh, zeroed gradient buffers and parameters filled by `fill`, keyed by
    /// `seed`; state tensors, if the layer has any, always start as their initialisers say.
    public init(_ layer: Layer, seed: UInt64 = 1, fill: ParameterFill = .initialisers) {
        self.layer = layer
        tensors = BoundLayer.layOut(layer.parameterSpecs)
        parameterCount = layer.parameterCount
        parameters = FloatBuffer(count: parameterCount)
        gradients = FloatBuffer(count: parameterCount)
        for (t, spec) in layer.parameterSpecs.enumerated() {
            let values = BoundLayer.initialValues(spec, fill: fill, seed: seed, tensor: t)
            (parameters.pointer + tensors[t].offset).update(from: values, count: values.count)
        }
        stateTensors = BoundLayer.layOut(layer.stateSpecs)
        state = FloatBuffer(count: layer.stateCount)
        for (t, spec) in layer.stateSpecs.enumerated() {
            let values = BoundLayer.initialValues(spec, fill: .initialisers, seed: seed, tensor: 500 + t)
            (state.pointer + stateTensors[t].offset).update(from: values, count: values.count)
        }
        layer.bind(parameters: parameters.pointer, gradients: gradients.pointer)
        observations = FloatBuffer(count: layer.stateCount)
        layer.bind(state: state.pointer, observations: observations.pointer)
    }

    private static func layOut(_ specs: [ParameterSpec]) -> [BoundTensor] {
        var tensors: [BoundTensor] = []
        var offset = 0
        for spec in specs {
            tensors.append(BoundTensor(name: spec.name, shape: spec.shape, offset: offset, count: spec.count))
            offset += spec.count
        }
        return tensors
    }

    /// The tensor called `name` ("weight", "bias"); traps with the names that exist if there is none,
    /// because asking for a tensor a layer does not have is a mistake in the test itself.
    public func tensor(_ name: String) -> BoundTensor {
        guard let found = tensors.first(where: { $0.name == name }) else {
            preconditionFailure("\(layer.summary) has no parameter '\(name)'; it has \(tensors.map(\.name))")
        }
        return found
    }

    /// A copy of the parameter tensor `name`.
    public func values(_ name: String) -> [Float] {
        let t = tensor(name)
        return Array(UnsafeBufferPointer(start: parameters.pointer + t.offset, count: t.count))
    }

    /// Overwrites the parameter tensor `name` (for hand-chosen weights in golden-value tests).
    public func setValues(_ name: String, _ values: [Float]) {
        let t = tensor(name)
        precondition(values.count == t.count, "'\(name)' holds \(t.count) values, given \(values.count)")
        (parameters.pointer + t.offset).update(from: values, count: t.count)
    }

    /// A copy of the gradient accumulated for the parameter tensor `name`.
    public func gradientValues(_ name: String) -> [Float] {
        let t = tensor(name)
        return Array(UnsafeBufferPointer(start: gradients.pointer + t.offset, count: t.count))
    }

    /// A copy of the state tensor `name`.
    public func stateValues(_ name: String) -> [Float] {
        guard let t = stateTensors.first(where: { $0.name == name }) else {
            preconditionFailure("\(layer.summary) has no state '\(name)'; it has \(stateTensors.map(\.name))")
        }
        return Array(UnsafeBufferPointer(start: state.pointer + t.offset, count: t.count))
    }

    /// Clears the gradient buffer, as a network does before each micro-batch.
    public func zeroGradients() {
        gradients.zero(parameterCount)
    }

    /// Runs the layer forward on `input` and returns a copy of its output ([batch, outputShape]).
    ///
    /// Call through the binding rather than `forwardValues(layer, ...)`: the layer does not retain
    /// the buffers it is bound to, and Swift may release a `BoundLayer` right after its last use.
    public func forward(_ input: [Float], batch: Int, context: PassContext = PassContext(mode: .training)) -> [Float] {
        withExtendedLifetime(self) { forwardValues(layer, input: input, batch: batch, context: context) }
    }

    /// Forward then backward through the layer (see `forwardBackwardValues`), with the buffers kept alive.
    public func forwardBackward(
        _ input: [Float], outputGradient: [Float], batch: Int, context: PassContext = PassContext(mode: .training)
    ) -> (output: [Float], inputGradient: [Float]) {
        withExtendedLifetime(self) {
            forwardBackwardValues(layer, input: input, outputGradient: outputGradient, batch: batch, context: context)
        }
    }

    /// Values for one tensor, following the meaning of `Initialiser` (see Layer.swift).
    static func initialValues(_ spec: ParameterSpec, fill: ParameterFill, seed: UInt64, tensor: Int) -> [Float] {
        let stream = UInt64(tensor) &+ 1000
        switch fill {
        case .normal(let scale):
            return TestArrays.normal(count: spec.count, seed: seed, stream: stream, scale: scale)
        case .initialisers:
            switch spec.initialiser {
            case .zeros:
                return [Float](repeating: 0, count: spec.count)
            case .ones:
                return [Float](repeating: 1, count: spec.count)
            case .constant(let value):
                return [Float](repeating: value, count: spec.count)
            case .heNormal(let fanIn):
                return TestArrays.normal(count: spec.count, seed: seed, stream: stream, scale: Float((2 / Double(fanIn)).squareRoot()))
            case .heUniform(let fanIn):
                let bound = Float((6 / Double(fanIn)).squareRoot())
                return TestArrays.uniform(count: spec.count, seed: seed, stream: stream, lower: -bound, upper: bound)
            case .xavierUniform(let fanIn, let fanOut):
                let bound = Float((6 / Double(fanIn + fanOut)).squareRoot())
                return TestArrays.uniform(count: spec.count, seed: seed, stream: stream, lower: -bound, upper: bound)
            case .xavierNormal(let fanIn, let fanOut):
                return TestArrays.normal(count: spec.count, seed: seed, stream: stream, scale: Float((2 / Double(fanIn + fanOut)).squareRoot()))
            }
        }
    }
}

/// Runs `layer` forward on `input` and returns a copy of its output ([batch, outputShape]).
/// For a layer with parameters use `BoundLayer.forward`, which keeps the bound buffers alive.
public func forwardValues(_ layer: Layer, input: [Float], batch: Int, context: PassContext = PassContext(mode: .training)) -> [Float] {
    precondition(input.count == batch * layer.inputShape.count, "input has \(input.count) values, \(layer.summary) wants \(batch) x \(layer.inputShape)")
    return input.withUnsafeBufferPointer { x in
        let out = layer.forward(x.baseAddress!, batch: batch, context: context)
        return Array(UnsafeBufferPointer(start: out, count: batch * layer.outputShape.count))
    }
}

/// Runs `layer` forward then backward, keeping the input alive for both as the `Layer` contract
/// requires; returns copies of the output and of the input gradient. For a layer with parameters
/// use `BoundLayer.forwardBackward`, which keeps the bound buffers alive.
public func forwardBackwardValues(
    _ layer: Layer, input: [Float], outputGradient: [Float], batch: Int,
    context: PassContext = PassContext(mode: .training)
) -> (output: [Float], inputGradient: [Float]) {
    precondition(input.count == batch * layer.inputShape.count, "input has \(input.count) values, \(layer.summary) wants \(batch) x \(layer.inputShape)")
    precondition(outputGradient.count == batch * layer.outputShape.count, "output gradient has \(outputGradient.count) values, \(layer.summary) gives \(batch) x \(layer.outputShape)")
    return input.withUnsafeBufferPointer { x in
        let out = layer.forward(x.baseAddress!, batch: batch, context: context)
        let output = Array(UnsafeBufferPointer(start: out, count: batch * layer.outputShape.count))
        let inputGradient = outputGradient.withUnsafeBufferPointer { dy in
            let dx = layer.backward(dy.baseAddress!, batch: batch)
            return Array(UnsafeBufferPointer(start: dx, count: batch * layer.inputShape.count))
        }
        return (output, inputGradient)
    }
}
