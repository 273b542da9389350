import CNN
import Foundation
import TestSupport
import XCTest

/// The scratch a network's layers share (`LayerWorkspace`): no layer may find another's data
/// clobbered in it, and replicas computing at once on two threads must not share one.
final class LayerWorkspaceTests: XCTestCase {
    private let batch = 4
    private let labels: [Int32] = [1, 0, 3, 2]

    /// Convolutions of every kind between calls that share scratch: an im2col layer that keeps
    /// its columns (the first), one whose block matrices are scratch, Winograd F(4x4, 3x3) and
    /// F(2x2, 3x3) layers of different shapes, one inside a residual block and one in a branch of
    /// a concatenation, so that every layer's backward runs after others have used the workspace.
    private let spec = ModelSpec(
        input: FeatureShape(channels: 4, height: 16, width: 16),
        layers: [
            .convolution(ConvolutionSpec(filters: 16, kernel: 3, padding: .explicit(1))),
            .relu,
            .convolution(ConvolutionSpec(filters: 16, kernel: 3, padding: .explicit(1))),
            .relu,
            .convolution(ConvolutionSpec(filters: 24, kernel: 3, padding: .explicit(1))),
            .maxPool(size: 2, stride: nil, padding: 0),
            .residual(ResidualSpec(layers: [.convolution(ConvolutionSpec(filters: 24, kernel: 3, padding: .explicit(1))), .relu])),
            .concat(branches: [
                [.convolution(ConvolutionSpec(filters: 10, kernel: 3, padding: .explicit(1)))],
                [.convolution(ConvolutionSpec(filters: 6, kernel: 1))],
            ]),
            .convolution(ConvolutionSpec(filters: 12, kernel: 3)),
            .globalAveragePool, .flatten, .dense(units: 4, bias: true),
        ])

    /// The algorithm each 3x3 convolution of `spec` is made to use, in model order (1x1 ones keep
    /// theirs).
    private let algorithms: [Conv2D.Algorithm] = [.im2col, .im2col, .winograd4x4, .winograd, .winograd4x4, .winograd4x4]

    /// A network of `spec` with its parameters drawn from `seed` and each 3x3 convolution on its
    /// algorithm of `algorithms`.
    private func makeNetwork(seed: UInt64) throws -> Network {
        try network(spec, seed: seed, threeByThreeAlgorithms: algorithms)
    }

    private func images(for network: Network, seed: UInt64) -> [Float] {
        TestArrays.normal(count: batch * network.inputShape.count, seed: seed)
    }

    private func logits(of network: Network, images: [Float]) -> [UInt32] {
        images.withUnsafeBufferPointer { x in
            let output = network.forward(x.baseAddress!, batch: batch, context: PassContext(mode: .inference))
            return Array(UnsafeBufferPointer(start: output, count: batch * network.outputShape.count)).map(\.bitPattern)
        }
    }

    func testLayersSharingTheNetworksWorkspaceGiveTheBitsOfLayersWithScratchOfTheirOwn() throws {
        let shared = try makeNetwork(seed: 5)
        let alone = try makeNetwork(seed: 5)
        let layers = alone.layers.flatMap { convolutions(in: $0) }
        let ownWorkspaces = layers.map { _ in LayerWorkspace() }
        for (convolution, workspace) in zip(layers, ownWorkspaces) { convolution.bind(workspace: workspace) }

        let context = PassContext(mode: .training, seed: 2, sampleIndices: Array(0..<batch))
        for round in 0..<2 {
            let x = images(for: shared, seed: 40 + UInt64(round))
            let expected = gradients(of: alone, images: x, labels: labels, context: context).map(\.bitPattern)
            let actual = gradients(of: shared, images: x, labels: labels, context: context).map(\.bitPattern)
            XCTAssertEqual(actual.count, expected.count)
            let first = actual.indices.first { actual[$0] != expected[$0] }
            let slot = first.flatMap { index in shared.parameterSlots.first { $0.offset + $0.count > index } }
            XCTAssertNil(first, "round \(round): gradients differ first in \(slot?.name ?? "?")")
            XCTAssertEqual(logits(of: shared, images: x), logits(of: alone, images: x), "round \(round)")
        }

        // One set of buffers as large as the largest layer needs, instead of one per layer.
        let separate = ownWorkspaces.reduce(0) { $0 + $1.capacity }
        XCTAssertLessThan(shared.workspace.capacity, separate)
        for workspace in ownWorkspaces { XCTAssertGreaterThanOrEqual(shared.workspace.capacity, workspace.capacity) }
    }

    func testLayersInsideBlocksComputeInTheNetworksWorkspace() throws {
        // Every convolution sits inside a residual block or a concatenation's branch, and no
        // layer at the top needs scratch: the workspace grows only if the blocks pass it on.
        let convolution = { (filters: Int, kernel: Int) in
            LayerSpec.convolution(ConvolutionSpec(filters: filters, kernel: kernel, padding: .explicit(kernel / 2)))
        }
        let nested = ModelSpec(
            input: FeatureShape(channels: 4, height: 12, width: 12),
            layers: [
                .residual(ResidualSpec(layers: [convolution(16, 3), .relu, convolution(4, 3)])),
                .concat(branches: [[convolution(8, 3)], [convolution(4, 1)]]),
                .globalAveragePool, .flatten, .dense(units: 4, bias: true),
            ])
        let network = try Network(nested)
        network.initialise(seed: 8)
        let before = network.workspace.capacity
        let x = TestArrays.normal(count: batch * nested.input.count, seed: 9)
        _ = gradients(of: network, images: x, labels: labels, context: PassContext(mode: .training, sampleIndices: Array(0..<batch)))
        // At least one block's im2col matrix of the 16-filter layer: 36 rows of 144 positions a sample.
        XCTAssertGreaterThanOrEqual(network.workspace.capacity - before, 36 * 144)
    }

    func testAConvolutionSwitchedToWinogradAfterBindingComputesInTheBoundWorkspace() throws {
        // `use(_:)` makes a new Winograd computation after a network bound the layer: it must
        // keep its scratch in the bound workspace, not in one of its own.
        let input = FeatureShape(channels: 6, height: 9, width: 9)
        let workspace = LayerWorkspace()
        let bound = try Conv2D(input: input, filters: 8, kernelHeight: 3, kernelWidth: 3, padding: 1)
        bound.bind(workspace: workspace)
        try bound.use(.winograd4x4)
        let alone = try Conv2D(input: input, filters: 8, kernelHeight: 3, kernelWidth: 3, padding: 1)
        try alone.use(.winograd4x4)

        let x = TestArrays.normal(count: 3 * input.count, seed: 9)
        let outputGradient = TestArrays.normal(count: 3 * bound.outputShape.count, seed: 10)
        let boundLayer = BoundLayer(bound, seed: 7, fill: .normal(scale: 0.5))
        let aloneLayer = BoundLayer(alone, seed: 7, fill: .normal(scale: 0.5))
        let before = workspace.capacity
        let result = boundLayer.forwardBackward(x, outputGradient: outputGradient, batch: 3)
        let expected = aloneLayer.forwardBackward(x, outputGradient: outputGradient, batch: 3)
        // dU alone is 36 floats per (filter, channel) pair, and V and M come on top.
        XCTAssertGreaterThanOrEqual(workspace.capacity - before, 36 * 8 * 6)
        XCTAssertEqual(result.output.map(\.bitPattern), expected.output.map(\.bitPattern))
        XCTAssertEqual(result.inputGradient.map(\.bitPattern), expected.inputGradient.map(\.bitPattern))
        XCTAssertEqual(
            boundLayer.gradientValues("weight").map(\.bitPattern), aloneLayer.gradientValues("weight").map(\.bitPattern))
    }

    func testTwoReplicasComputingAtOnceOnTwoThreadsGiveTheBitsOfOneAfterTheOther() throws {
        let owner = try makeNetwork(seed: 11)
        let borrower = try makeNetwork(seed: 0)
        // Replicas as the training engine makes them: the weights shared read-only, the
        // gradients each replica's own.
        borrower.bind(parameters: owner.parameters.pointer, gradients: borrower.gradients.pointer)
        let context = PassContext(mode: .training, seed: 4, sampleIndices: Array(0..<batch))
        let replicas = ConcurrentReplicas(
            networks: [owner, borrower], inputs: [images(for: owner, seed: 21), images(for: owner, seed: 22)], labels: labels,
            context: context)
        let oneAfterTheOther = [replicas.compute(0), replicas.compute(1)]
        XCTAssertNotEqual(oneAfterTheOther[0], oneAfterTheOther[1], "the replicas must see different data")

        for round in 0..<4 {
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                replicas.set(index, replicas.compute(index))
            }
            for index in 0..<2 {
                let result = replicas.result(index) ?? []
                let differing = zip(result, oneAfterTheOther[index]).filter { $0 != $1 }.count
                XCTAssertTrue(
                    result == oneAfterTheOther[index],
                    "round \(round), replica \(index): \(differing) of \(result.count) gradients differ from computing alone")
            }
        }
        XCTAssertFalse(owner.workspace === borrower.workspace)
    }
}
