import CNN
import Foundation
import XCTest

/// Every Conv2D in `layer` and the blocks inside it, in model order.
func convolutions(in layer: Layer) -> [Conv2D] {
    [layer as? Conv2D].compactMap { $0 } + layer.sublayers.flatMap(convolutions(in:))
}

/// A network of `spec` with its parameters drawn from `seed` and its 3x3 convolutions, in model
/// order, on `algorithms` (one each; other convolutions keep theirs).
func network(_ spec: ModelSpec, seed: UInt64, threeByThreeAlgorithms algorithms: [Conv2D.Algorithm]) throws -> Network {
    let network = try Network(spec)
    network.initialise(seed: seed)
    let threeByThree = network.layers.flatMap { convolutions(in: $0) }.filter { $0.kernelHeight == 3 }
    XCTAssertEqual(threeByThree.count, algorithms.count, "3x3 convolutions in the spec")
    for (convolution, algorithm) in zip(threeByThree, algorithms) { try convolution.use(algorithm) }
    return network
}

/// `network`'s layers run one after another, as its layer list says, outside `Network.forward`
/// and `Network.backward` (so without their fusions and shared buffers): the logits, and the
/// parameter gradients for `outputGradient` (zeroed first). Each activation is copied into a
/// buffer that lives until backward is done, as layers keep a pointer to their input.
func layerByLayer(
    _ network: Network, input: [Float], outputGradient: [Float], batch: Int, context: PassContext
) -> (logits: [Float], gradients: [Float]) {
    func copy(_ values: UnsafePointer<Float>, count: Int) -> FloatBuffer {
        let buffer = FloatBuffer(count: count)
        buffer.pointer.update(from: values, count: count)
        return buffer
    }
    var activations = [input.withUnsafeBufferPointer { copy($0.baseAddress!, count: $0.count) }]
    for layer in network.layers {
        let output = layer.forward(activations.last!.pointer, batch: batch, context: context)
        activations.append(copy(output, count: batch * layer.outputShape.count))
    }
    let logits = Array(UnsafeBufferPointer(start: activations.last!.pointer, count: batch * network.outputShape.count))
    network.zeroGradients()
    var gradient = outputGradient.withUnsafeBufferPointer { copy($0.baseAddress!, count: $0.count) }
    for layer in network.layers.reversed() {
        let inputGradient = layer.backward(gradient.pointer, batch: batch)
        gradient = copy(inputGradient, count: batch * layer.inputShape.count)
    }
    return withExtendedLifetime(activations) {
        (logits, Array(UnsafeBufferPointer(start: network.boundGradients, count: network.parameterCount)))
    }
}

/// Model replicas and what each computed, for the threads of a concurrent test.
final class ConcurrentReplicas: @unchecked Sendable {
    // Unchecked: each thread computes only with its own network; results go through the lock.
    let networks: [Network]
    let inputs: [[Float]]
    let labels: [Int32]
    let context: PassContext
    private let lock = NSLock()
    private var results: [Int: [UInt32]] = [:]

    init(networks: [Network], inputs: [[Float]], labels: [Int32], context: PassContext) {
        self.networks = networks
        self.inputs = inputs
        self.labels = labels
        self.context = context
    }

    func set(_ index: Int, _ value: [UInt32]) { lock.withLock { results[index] = value } }
    func result(_ index: Int) -> [UInt32]? { lock.withLock { results[index] } }

    /// The parameter gradients replica `index` computes for its input, as bit patterns.
    func compute(_ index: Int) -> [UInt32] {
        gradients(of: networks[index], images: inputs[index], labels: labels, context: context).map(\.bitPattern)
    }
}
