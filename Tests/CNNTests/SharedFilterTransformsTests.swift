import CNN
import Foundation
import TestSupport
import XCTest

/// Replicas that share Winograd's transformed filters (`SharedFilterTransforms`) must compute the
/// bits of networks that transform their own, alone or at once on two threads, and must really
/// share them: one U per convolution, computed once until the holder invalidates it.
final class SharedFilterTransformsTests: XCTestCase {
    private let batch = 3
    private let labels: [Int32] = [2, 0, 1]

    /// Winograd convolutions of both tile sizes, one inside a residual block and one in a branch
    /// of a concatenation (their slots are found by walking the blocks), beside an im2col one.
    private let spec = ModelSpec(
        input: FeatureShape(channels: 3, height: 10, width: 10),
        layers: [
            .convolution(ConvolutionSpec(filters: 12, kernel: 3, padding: .explicit(1))),
            .relu,
            .convolution(ConvolutionSpec(filters: 16, kernel: 3, padding: .explicit(1))),
            .relu,
            .residual(ResidualSpec(layers: [.convolution(ConvolutionSpec(filters: 16, kernel: 3, padding: .explicit(1))), .relu])),
            .concat(branches: [
                [.convolution(ConvolutionSpec(filters: 8, kernel: 3, padding: .explicit(1)))],
                [.convolution(ConvolutionSpec(filters: 4, kernel: 1))],
            ]),
            .globalAveragePool, .flatten, .dense(units: 3, bias: true),
        ])

    /// The algorithm of each 3x3 convolution of `spec`, in model order.
    private let algorithms: [Conv2D.Algorithm] = [.im2col, .winograd4x4, .winograd, .winograd4x4]

    private func makeNetwork(seed: UInt64) throws -> Network {
        try network(spec, seed: seed, threeByThreeAlgorithms: algorithms)
    }

    /// Floats of U the Winograd layers of `spec` hold: (m + 2)^2 positions per (filter, channel) pair.
    private var transformFloats: Int { 36 * 16 * 12 + 16 * 16 * 16 + 36 * 8 * 16 }

    private func images(seed: UInt64) -> [Float] {
        TestArrays.normal(count: batch * spec.input.count, seed: seed)
    }

    private let context = PassContext(mode: .training, seed: 3, sampleIndices: [0, 1, 2])

    /// `count` networks as a training engine makes replicas: the first one's weights read by all,
    /// each its own gradients, all bound to one `SharedFilterTransforms`.
    private func replicas(_ count: Int, seed: UInt64) throws -> (networks: [Network], transforms: SharedFilterTransforms) {
        let transforms = SharedFilterTransforms()
        let networks = try (0..<count).map { _ in try makeNetwork(seed: seed) }
        for network in networks {
            network.bind(parameters: networks[0].parameters.pointer, gradients: network.gradients.pointer)
            network.share(filterTransforms: transforms)
        }
        return (networks, transforms)
    }

    func testReplicasSharingTransformsGiveTheBitsOfNetworksTransformingTheirOwn() throws {
        let (networks, transforms) = try replicas(2, seed: 5)
        let alone = try makeNetwork(seed: 5)
        XCTAssertLessThan(transforms.capacity, 100, "nothing is transformed before a pass")
        for index in 0..<2 {
            let x = images(seed: 30 + UInt64(index))
            let expected = gradients(of: alone, images: x, labels: labels, context: context).map(\.bitPattern)
            let actual = gradients(of: networks[index], images: x, labels: labels, context: context).map(\.bitPattern)
            XCTAssertEqual(actual, expected, "replica \(index)")
        }
        // One U per Winograd layer for both replicas (plus the empty slot of every other convolution).
        XCTAssertGreaterThanOrEqual(transforms.capacity, transformFloats)
        XCTAssertLessThan(transforms.capacity, transformFloats + 6 * 64)
    }

    func testATransformIsComputedOnceUntilInvalidatedAndThenFollowsTheWeights() throws {
        let (networks, transforms) = try replicas(1, seed: 6)
        let replica = networks[0]
        let x = images(seed: 41)
        let before = gradients(of: replica, images: x, labels: labels, context: context).map(\.bitPattern)

        // New weights, but the holder has not invalidated: the replica must still use the U it
        // computed (that is what sharing means), so its gradients are not those of the new weights.
        let moved = try makeNetwork(seed: 7)
        replica.parameters.pointer.update(from: moved.parameters.pointer, count: replica.parameterCount)
        let expected = gradients(of: moved, images: x, labels: labels, context: context).map(\.bitPattern)
        let stale = gradients(of: replica, images: x, labels: labels, context: context).map(\.bitPattern)
        XCTAssertNotEqual(stale, expected)
        XCTAssertNotEqual(stale, before)

        transforms.invalidate()
        XCTAssertEqual(gradients(of: replica, images: x, labels: labels, context: context).map(\.bitPattern), expected)
    }

    func testTwoReplicasReachingTheSameTransformAtOnceGiveTheBitsOfNetworksAlone() throws {
        let alone = try makeNetwork(seed: 8)
        let inputs = [images(seed: 51), images(seed: 52)]
        let expected = inputs.map { gradients(of: alone, images: $0, labels: labels, context: context).map(\.bitPattern) }
        XCTAssertNotEqual(expected[0], expected[1], "the replicas must see different data")

        let (networks, transforms) = try replicas(2, seed: 8)
        let concurrent = ConcurrentReplicas(networks: networks, inputs: inputs, labels: labels, context: context)
        for round in 0..<6 {
            // Each round starts from no transform, so both threads race to compute every one.
            transforms.invalidate()
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                concurrent.set(index, concurrent.compute(index))
            }
            for index in 0..<2 {
                let result = concurrent.result(index) ?? []
                XCTAssertTrue(
                    result == expected[index],
                    "round \(round), replica \(index): \(zip(result, expected[index]).filter { $0 != $1 }.count) gradients differ")
            }
        }
    }
}
