import CNN
import TestSupport
import XCTest

final class ActivationTests: XCTestCase {
    private let four = FeatureShape(channels: 1, height: 1, width: 4)

    // MARK: Golden values

    func testLeakyReLUScalesOnlyNegativeValues() {
        let layer = LeakyReLU(input: four, slope: 0.1)
        XCTAssertEqual(forwardValues(layer, input: [-2, -0.5, 0.5, 3], batch: 1), [-0.2, -0.05, 0.5, 3])
        let (_, dx) = forwardBackwardValues(layer, input: [-2, -0.5, 0.5, 3], outputGradient: [1, 2, 3, 4], batch: 1)
        XCTAssertEqual(dx, [0.1, 0.2, 3, 4])
    }

    func testELUGivesAlphaTimesExpMinusOneBelowZero() {
        let layer = try! ELU(input: four, alpha: 2)
        let out = forwardValues(layer, input: [-1, -20, 0.5, 2], batch: 1)
        assertClose(out, [2 * (exp(-1.0) - 1), 2 * (exp(-20.0) - 1), 0.5, 2], tolerance: 1e-6, "ELU(2)")
        let (_, dx) = forwardBackwardValues(layer, input: [-1, -20, 0.5, 2], outputGradient: [1, 1, 1, 1], batch: 1)
        assertClose(dx, [2 * exp(-1.0), 2 * exp(-20.0), 1, 1], tolerance: 1e-6, "ELU(2) derivative")
    }

    func testSigmoidGoldenValuesStayFiniteAtExtremes() {
        let layer = Sigmoid(input: four)
        let out = forwardValues(layer, input: [0, Float(log(3.0)), -100, 100], batch: 1)
        assertClose(out, [0.5, 0.75, 0, 1], tolerance: 1e-6, "sigmoid")
        let (_, dx) = forwardBackwardValues(layer, input: [0, Float(log(3.0)), -100, 100], outputGradient: [1, 1, 1, 1], batch: 1)
        assertClose(dx, [0.25, 0.1875, 0, 0], tolerance: 1e-6, "sigmoid derivative y(1 - y)")
    }

    func testTanhGoldenValues() {
        let layer = Tanh(input: four)
        let out = forwardValues(layer, input: [0, Float(atanh(0.5)), -30, 30], batch: 1)
        assertClose(out, [0, 0.5, -1, 1], tolerance: 1e-6, "tanh")
        let (_, dx) = forwardBackwardValues(layer, input: [0, Float(atanh(0.5)), -30, 30], outputGradient: [1, 1, 1, 1], batch: 1)
        assertClose(dx, [1, 0.75, 0, 0], tolerance: 1e-6, "tanh derivative 1 - y^2")
    }

    func testPReLUSharedSlopeIsOneParameterStartingAtAQuarter() {
        let layer = PReLU(input: FeatureShape(channels: 3, height: 2, width: 2))
        XCTAssertEqual(layer.parameterSpecs, [ParameterSpec(name: "weight", shape: [1], initialiser: .constant(0.25))])
        let bound = BoundLayer(layer)
        XCTAssertEqual(bound.values("weight"), [0.25])
        let out = bound.forward([-4, 4, -8, 0] + [Float](repeating: -1, count: 8), batch: 1)
        XCTAssertEqual(out, [-1, 4, -2, 0] + [Float](repeating: -0.25, count: 8))
    }

    func testPReLUPerChannelSlopesApplyToTheirChannels() {
        let layer = PReLU(input: FeatureShape(channels: 2, height: 1, width: 2), perChannel: true, initial: 0.5)
        XCTAssertEqual(layer.parameterSpecs.map(\.shape), [[2]])
        let bound = BoundLayer(layer)
        bound.setValues("weight", [0.1, 0.3])
        // Two samples of [channel 0: (-10, 5), channel 1: (-10, 5)].
        let input: [Float] = [-10, 5, -10, 5, -20, 1, -20, 1]
        let (out, dx) = bound.forwardBackward(input, outputGradient: [1, 1, 1, 1, 2, 2, 2, 2], batch: 2)
        assertClose(out, [-1, 5, -3, 5, -2, 1, -6, 1], tolerance: 1e-6, "per-channel PReLU")
        assertClose(dx, [0.1, 1, 0.3, 1, 0.2, 2, 0.6, 2], tolerance: 1e-6, "per-channel PReLU input gradient")
        // d/d(slope_c) = sum of dy * x over negative x: channel 0: 1*-10 + 2*-20 = -50, channel 1 the same.
        assertClose(bound.gradientValues("weight"), [-50, -50], tolerance: 1e-6, "slope gradients")
    }

    // MARK: Gradients

    /// Inputs well away from the kink at zero, so central differences never cross it.
    private func kinkFree(_ shape: FeatureShape, batch: Int, seed: UInt64) -> [Float] {
        TestArrays.distinct(count: batch * shape.count, seed: seed, spacing: 0.11)
    }

    func testLeakyReLUBackwardMatchesNumericalGradient() {
        for (shape, batch) in [(FeatureShape(channels: 3, height: 5, width: 3), 1), (FeatureShape(channels: 2, height: 3, width: 7), 3)] {
            let layer = LeakyReLU(input: shape, slope: 0.2)
            assertGradientsMatch(layer, batch: batch, input: kinkFree(shape, batch: batch, seed: 1), seed: 1)
        }
    }

    func testPReLUBackwardMatchesNumericalGradientForSharedAndPerChannelSlopes() {
        for perChannel in [false, true] {
            for (shape, batch) in [(FeatureShape(channels: 3, height: 3, width: 5), 2), (FeatureShape.vector(7), 1)] {
                let layer = PReLU(input: shape, perChannel: perChannel)
                let report = assertGradientsMatch(
                    layer, batch: batch, input: kinkFree(shape, batch: batch, seed: 2), seed: 2, "per channel \(perChannel)")
                XCTAssertEqual(report.comparison("weight")?.shape, [perChannel ? shape.channels : 1])
            }
        }
    }

    func testELUBackwardMatchesNumericalGradient() {
        for alpha: Float in [1, 0.5] {
            let shape = FeatureShape(channels: 2, height: 5, width: 3)
            let layer = try! ELU(input: shape, alpha: alpha)
            assertGradientsMatch(layer, batch: 3, input: kinkFree(shape, batch: 3, seed: 3), seed: 3, "alpha \(alpha)")
        }
    }

    func testSigmoidAndTanhBackwardMatchNumericalGradient() {
        let shape = FeatureShape(channels: 3, height: 3, width: 5)
        for batch in [1, 2] {
            assertGradientsMatch(Sigmoid(input: shape), batch: batch, seed: 4)
            assertGradientsMatch(Tanh(input: shape), batch: batch, seed: 5)
        }
    }

    func testActivationsActTheSameInTrainingAndInference() throws {
        let shape = FeatureShape(channels: 2, height: 3, width: 3)
        let input = TestArrays.normal(count: 2 * shape.count, seed: 6)
        let layers: [Layer] = [
            LeakyReLU(input: shape), try ELU(input: shape), Sigmoid(input: shape), Tanh(input: shape),
        ]
        for layer in layers {
            let training = forwardValues(layer, input: input, batch: 2, context: PassContext(mode: .training))
            let inference = forwardValues(layer, input: input, batch: 2, context: .inference)
            XCTAssertEqual(training, inference, layer.summary)
        }
    }

    func testELURejectsANegativeAlpha() {
        XCTAssertThrowsError(try ELU(input: four, alpha: -1, name: "model.layers[2]")) { error in
            XCTAssertTrue("\(error)".contains("model.layers[2]") && "\(error)".contains("alpha"), "\(error)")
        }
    }
}
