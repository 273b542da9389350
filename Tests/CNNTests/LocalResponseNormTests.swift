import CNN
import TestSupport
import XCTest

final class LocalResponseNormTests: XCTestCase {
    func testAlexNetParametersMatchPyTorchsFormula() throws {
        let shape = FeatureShape(channels: 7, height: 3, width: 4)
        let spec = LocalResponseNormSpec(size: 5, alpha: 1e-4, beta: 0.75, k: 2)
        let layer = try LocalResponseNorm(input: shape, spec: spec)
        // Large activations, as after AlexNet's first convolution, so the normalisation matters.
        let input = TestArrays.normal(count: 2 * shape.count, seed: 1, scale: 40)
        let expected = referenceLocalResponseNorm(input: input, batch: 2, shape: shape, size: 5, alpha: 1e-4, beta: 0.75, k: 2)
        assertClose(forwardValues(layer, input: input, batch: 2), expected, tolerance: 1e-5, "AlexNet LRN")
        let plainScale = input.indices.map { Double(input[$0]) / pow(2, 0.75) }
        XCTAssertTrue(zip(plainScale, expected).contains { abs($0 - $1) > 1e-3 * max(1, abs($1)) }, "the neighbours must matter in this test")
    }

    func testSingleChannelWindowByHand() throws {
        // One channel, size 1: y = x / (k + alpha x^2)^beta = 2 / (1 + 1 * 4)^0.5.
        let layer = try LocalResponseNorm(input: .vector(1), spec: LocalResponseNormSpec(size: 1, alpha: 1, beta: 0.5, k: 1))
        assertClose(forwardValues(layer, input: [2], batch: 1), [2 / 5.0.squareRoot()], tolerance: 1e-6, "by hand")
    }

    func testEvenSizesAndFewerChannelsThanTheWindowMatchTheFormula() throws {
        for (channels, size) in [(3, 4), (2, 5), (6, 2)] {
            let shape = FeatureShape(channels: channels, height: 2, width: 3)
            let layer = try LocalResponseNorm(input: shape, spec: LocalResponseNormSpec(size: size, alpha: 0.5, beta: 0.75, k: 1))
            let input = TestArrays.normal(count: shape.count, seed: UInt64(channels))
            let expected = referenceLocalResponseNorm(input: input, batch: 1, shape: shape, size: size, alpha: 0.5, beta: 0.75, k: 1)
            assertClose(forwardValues(layer, input: input, batch: 1), expected, tolerance: 1e-5, "C \(channels), size \(size)")
        }
    }

    func testBackwardMatchesNumericalGradient() throws {
        // A strong alpha so the cross-channel term is a large part of the gradient.
        for (channels, size, batch) in [(5, 3, 2), (4, 4, 1), (7, 5, 3)] {
            let shape = FeatureShape(channels: channels, height: 3, width: 1 + channels % 3)
            let layer = try LocalResponseNorm(input: shape, spec: LocalResponseNormSpec(size: size, alpha: 1, beta: 0.75, k: 1))
            assertGradientsMatch(layer, batch: batch, seed: UInt64(10 + size))
        }
    }

    func testPlanesWiderThanOneVectorMatchTheFormulaAndNumericalGradient() throws {
        // 5 x 7 = 35 values a plane: two sixteen-wide blocks and a tail of three; beta 0.75 takes
        // the square-root path, 0.6 the powf one.
        let shape = FeatureShape(channels: 6, height: 5, width: 7)
        for beta in [0.75, 0.6] {
            let spec = LocalResponseNormSpec(size: 3, alpha: 0.5, beta: beta, k: 1)
            let layer = try LocalResponseNorm(input: shape, spec: spec)
            let input = TestArrays.normal(count: 2 * shape.count, seed: 31)
            let expected = referenceLocalResponseNorm(input: input, batch: 2, shape: shape, size: 3, alpha: 0.5, beta: beta, k: 1)
            assertClose(forwardValues(layer, input: input, batch: 2), expected, tolerance: 1e-5, "beta \(beta)")
            assertGradientsMatch(try LocalResponseNorm(input: shape, spec: spec), batch: 2, seed: 32, "beta \(beta)")
        }
    }

    /// Forward through `layers` in order, then backward in reverse, as a network runs them, twice;
    /// the outputs and input gradients of every call as bits.
    private func run(_ layers: [LocalResponseNorm], batch: Int) -> [[UInt32]] {
        var results: [[UInt32]] = []
        for round in 0..<2 {
            let inputs = layers.indices.map { TestArrays.normal(count: batch * layers[$0].inputShape.count, seed: UInt64(40 + 2 * $0 + round), scale: 3) }
            let gradients = layers.indices.map { TestArrays.normal(count: batch * layers[$0].inputShape.count, seed: UInt64(50 + 2 * $0 + round)) }
            // The layers keep a pointer to their input from forward to backward.
            let pointers = inputs.map { values -> UnsafeMutablePointer<Float> in
                let pointer = UnsafeMutablePointer<Float>.allocate(capacity: values.count)
                pointer.initialize(from: values, count: values.count)
                return pointer
            }
            defer { for pointer in pointers { pointer.deallocate() } }
            for (layer, x) in zip(layers, pointers) {
                let y = layer.forward(x, batch: batch, context: PassContext(mode: .training))
                results.append(UnsafeBufferPointer(start: y, count: batch * layer.outputShape.count).map(\.bitPattern))
            }
            for index in layers.indices.reversed() {
                let dx = gradients[index].withUnsafeBufferPointer { layers[index].backward($0.baseAddress!, batch: batch) }
                results.append(UnsafeBufferPointer(start: dx, count: batch * layers[index].inputShape.count).map(\.bitPattern))
            }
        }
        return results
    }

    func testTwoLayersSharingOneWorkspaceGiveTheBitsOfLayersWithScratchOfTheirOwn() throws {
        // The second layer's sample is the larger, so the shared scratch grows between the first
        // layer's forward and its backward; a strong alpha so the window sums matter.
        let shapes = [FeatureShape(channels: 8, height: 9, width: 9), FeatureShape(channels: 16, height: 7, width: 7)]
        let spec = LocalResponseNormSpec(size: 5, alpha: 0.5, beta: 0.75, k: 2)
        let alone = try shapes.map { try LocalResponseNorm(input: $0, spec: spec) }
        let shared = try shapes.map { try LocalResponseNorm(input: $0, spec: spec) }
        let workspace = LayerWorkspace()
        for layer in shared { layer.bind(workspace: workspace) }
        let expected = run(alone, batch: 3), actual = run(shared, batch: 3)
        XCTAssertEqual(actual.count, expected.count)
        for (index, (a, e)) in zip(actual, expected).enumerated() {
            XCTAssertEqual(a, e, "call \(index) (forward 0, forward 1, backward 1, backward 0, then again)")
        }
        XCTAssertGreaterThanOrEqual(workspace.capacity, shapes.map(\.count).max()!, "the layers worked in the shared workspace")
    }

    func testRejectsANonPositiveK() {
        XCTAssertThrowsError(try LocalResponseNorm(input: .vector(3), spec: LocalResponseNormSpec(size: 3, k: 0), name: "model.layers[2]")) {
            XCTAssertTrue("\($0)".hasPrefix("model.layers[2]"), "\($0)")
        }
    }
}
