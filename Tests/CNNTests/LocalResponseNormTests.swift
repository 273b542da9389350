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

    func testRejectsANonPositiveK() {
        XCTAssertThrowsError(try LocalResponseNorm(input: .vector(3), spec: LocalResponseNormSpec(size: 3, k: 0), name: "model.layers[2]")) {
            XCTAssertTrue("\($0)".hasPrefix("model.layers[2]"), "\($0)")
        }
    }
}
