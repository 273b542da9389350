import CNN
import TestSupport
import XCTest

/// A network passes its layers' input gradients through two shared buffers in turn
/// (`Network.backward`); that must give the bits of the layers back-propagated one by one, each
/// into a buffer of its own, whatever the buffers held before.
final class NetworkGradientRelayTests: XCTestCase {
    private let batch = 3

    /// Every kind of layer that writes into the relays, beside ones that pass a gradient through
    /// (Flatten, a ReLU in place, the fused ReLU and max pooling), so that consecutive layers
    /// read and write either buffer.
    private let spec = ModelSpec(
        input: FeatureShape(channels: 3, height: 18, width: 18),
        layers: [
            .convolution(ConvolutionSpec(filters: 8, kernel: 3, padding: .explicit(1))), .relu,
            .localResponseNorm(LocalResponseNormSpec(size: 3, alpha: 1e-3, beta: 0.75, k: 2)),
            .maxPool(size: 3, stride: 2, padding: 1),
            .convolution(ConvolutionSpec(filters: 24, kernel: 3, padding: .explicit(1))),
            .batchNorm(BatchNormSpec()), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .basicBlock(filters: 12, stride: 2, projection: .auto),
            .averagePool(size: 2, stride: nil, padding: 0),
            .leakyReLU(slope: 0.1), .convolution(ConvolutionSpec(filters: 10, kernel: 1)), .sigmoid, .tanh,
            .elu(alpha: 1), .dropout(probability: 0.3), .globalAveragePool, .flatten,
            .dense(units: 16, bias: true), .relu, .dropout(probability: 0.2), .dense(units: 4, bias: true),
        ])

    private func makeNetwork() throws -> Network {
        let network = try Network(spec)
        network.initialise(seed: 12)
        return network
    }

    private func context(_ round: Int) -> PassContext {
        PassContext(mode: .training, seed: 5, epoch: 0, step: round, sampleIndices: [7, 1, 4])
    }

    /// Parameter gradients of `network` for one forward and backward pass of the network.
    private func networkGradients(_ network: Network, input: [Float], outputGradient: [Float], round: Int) -> [UInt32] {
        _ = input.withUnsafeBufferPointer { network.forward($0.baseAddress!, batch: batch, context: context(round)) }
        network.zeroGradients()
        outputGradient.withUnsafeBufferPointer { network.backward($0.baseAddress!, batch: batch) }
        return UnsafeBufferPointer(start: network.boundGradients, count: network.parameterCount).map(\.bitPattern)
    }

    func testRelayedInputGradientsGiveTheBitsOfLayersWithBuffersOfTheirOwnPassAfterPass() throws {
        let relayed = try makeNetwork()
        let alone = try makeNetwork()
        for round in 0..<3 {
            // Later rounds find the relays full of earlier gradients.
            let input = TestArrays.normal(count: batch * spec.input.count, seed: 20 + UInt64(round))
            let outputGradient = TestArrays.normal(count: batch * relayed.outputShape.count, seed: 30 + UInt64(round))
            // `alone`'s own `backward` never runs, so its layers keep buffers of their own.
            let expected = layerByLayer(alone, input: input, outputGradient: outputGradient, batch: batch, context: context(round))
                .gradients.map(\.bitPattern)
            let actual = networkGradients(relayed, input: input, outputGradient: outputGradient, round: round)
            XCTAssertTrue(expected.contains { $0 != 0 }, "the check needs gradients that are not all zero")
            let differing = zip(actual, expected).filter { $0 != $1 }.count
            XCTAssertTrue(actual == expected, "round \(round): \(differing) of \(actual.count) parameter gradients differ")
        }
    }

    func testTheRelaysGrowToTheLargestInputGradientOfTheLayersAfterTheFirst() throws {
        let network = try makeNetwork()
        let input = TestArrays.normal(count: batch * spec.input.count, seed: 40)
        let outputGradient = TestArrays.normal(count: batch * network.outputShape.count, seed: 41)
        _ = networkGradients(network, input: input, outputGradient: outputGradient, round: 0)
        // The LRN's, on the first convolution's 8 x 18 x 18 output; the first layer's input
        // gradient stays its own.
        let largest = network.layers.dropFirst().map { batch * $0.inputShape.count }.max() ?? 0
        XCTAssertEqual(largest, batch * 8 * 18 * 18)
        XCTAssertGreaterThanOrEqual(network.gradientRelayCapacity, largest)
        XCTAssertLessThanOrEqual(network.gradientRelayCapacity, 2 * largest)
        _ = networkGradients(network, input: input, outputGradient: outputGradient, round: 1)
        XCTAssertLessThanOrEqual(network.gradientRelayCapacity, 2 * largest, "a second pass must not grow the relays")
    }
}
