import CNN
import TestSupport
import XCTest

final class DropoutTests: XCTestCase {
    private func training(step: Int = 0, epoch: Int = 0, seed: UInt64 = 1, samples: [Int]) -> PassContext {
        PassContext(mode: .training, seed: seed, epoch: epoch, step: step, sampleIndices: samples)
    }

    func testInferenceIsTheIdentityForwardAndBackward() throws {
        for spatial in [false, true] {
            let layer = try Dropout(input: FeatureShape(channels: 3, height: 2, width: 2), probability: 0.5, spatial: spatial, key: 1)
            let input = TestArrays.normal(count: 24, seed: 1)
            let gradient = TestArrays.normal(count: 24, seed: 2)
            let (out, dx) = forwardBackwardValues(layer, input: input, outputGradient: gradient, batch: 2, context: .inference)
            XCTAssertEqual(out, input, "spatial \(spatial)")
            XCTAssertEqual(dx, gradient, "spatial \(spatial)")
        }
    }

    func testTrainingPreservesTheExpectationAndDropsTheRightFraction() throws {
        let shape = FeatureShape(channels: 4, height: 50, width: 50)
        let batch = 10
        let p = 0.3
        let layer = try Dropout(input: shape, probability: p, key: 7)
        let input = [Float](repeating: 2, count: batch * shape.count)
        let out = forwardValues(layer, input: input, batch: batch, context: training(samples: Array(0..<batch)))
        let count = Double(out.count)
        let dropped = Double(out.filter { $0 == 0 }.count) / count
        let mean = out.reduce(0.0) { $0 + Double($1) } / count
        // 100,000 Bernoulli draws: the standard error of the dropped fraction is sqrt(0.21 / 1e5) ~ 0.0015.
        XCTAssertEqual(dropped, p, accuracy: 0.006)
        XCTAssertEqual(mean, 2, accuracy: 0.02, "inverted scaling keeps E[output] = input")
        let kept = Set(out.filter { $0 != 0 })
        XCTAssertEqual(kept.count, 1)
        XCTAssertEqual(Double(try XCTUnwrap(kept.first)), 2 / (1 - p), accuracy: 1e-6, "survivors are scaled by 1 / (1 - p)")
    }

    func testSpatialDropoutDropsWholeChannelsAndPreservesTheExpectation() throws {
        let shape = FeatureShape(channels: 200, height: 3, width: 3)
        let batch = 20
        let layer = try Dropout(input: shape, probability: 0.25, spatial: true, key: 8)
        let input = TestArrays.uniform(count: batch * shape.count, seed: 3, lower: 1, upper: 2)
        let out = forwardValues(layer, input: input, batch: batch, context: training(samples: Array(100..<(100 + batch))))
        var droppedChannels = 0
        for plane in 0..<(batch * shape.channels) {
            let values = (0..<9).map { out[plane * 9 + $0] }
            let sources = (0..<9).map { input[plane * 9 + $0] }
            if values.allSatisfy({ $0 == 0 }) {
                droppedChannels += 1
            } else {
                assertClose(values, sources.map { Double($0) / 0.75 }, tolerance: 1e-6, "kept channel \(plane) is scaled as a whole")
            }
        }
        // 4,000 channels: standard error of the fraction sqrt(0.1875 / 4000) ~ 0.007.
        XCTAssertEqual(Double(droppedChannels) / Double(batch * shape.channels), 0.25, accuracy: 0.03)
    }

    func testMaskFollowsTheSampleIndexNotItsPositionInTheBatch() throws {
        let shape = FeatureShape(channels: 2, height: 4, width: 4)
        let layer = try Dropout(input: shape, probability: 0.5, key: 9)
        let a = TestArrays.normal(count: shape.count, seed: 4), b = TestArrays.normal(count: shape.count, seed: 5)
        let c = TestArrays.normal(count: shape.count, seed: 6)
        let first = forwardValues(layer, input: a + b, batch: 2, context: training(samples: [7, 3]))
        let swapped = forwardValues(layer, input: b + a, batch: 2, context: training(samples: [3, 7]))
        XCTAssertEqual(Array(first[0..<32]), Array(swapped[32..<64]), "sample 7's mask moved with it")
        XCTAssertEqual(Array(first[32..<64]), Array(swapped[0..<32]), "sample 3's mask moved with it")
        // Sample 7 alone in another micro-batch, next to a different sample.
        let elsewhere = forwardValues(layer, input: c + a, batch: 2, context: training(samples: [12, 7]))
        XCTAssertEqual(Array(first[0..<32]), Array(elsewhere[32..<64]), "the mask does not depend on the micro-batch")
    }

    func testMaskChangesWithSeedEpochStepAndLayerKey() throws {
        let shape = FeatureShape.vector(256)
        let input = [Float](repeating: 1, count: 256)
        func mask(key: UInt64 = 1, context: PassContext) throws -> [Float] {
            forwardValues(try Dropout(input: shape, probability: 0.5, key: key), input: input, batch: 1, context: context)
        }
        let reference = try mask(context: training(samples: [5]))
        XCTAssertEqual(try mask(context: training(samples: [5])), reference, "the same key must give the same mask")
        let variants: [(String, [Float])] = [
            ("seed", try mask(context: training(seed: 2, samples: [5]))),
            ("epoch", try mask(context: training(epoch: 1, samples: [5]))),
            ("step", try mask(context: training(step: 1, samples: [5]))),
            ("sample", try mask(context: training(samples: [6]))),
            ("layer", try mask(key: 2, context: training(samples: [5]))),
        ]
        for (what, other) in variants {
            let differing = zip(reference, other).filter { $0 != $1 }.count
            // Independent masks at p = 0.5 differ in about half the units.
            XCTAssertGreaterThan(differing, 80, "changing the \(what) should change the mask")
        }
    }

    func testNetworkGivesEachDropoutLayerItsOwnStableKey() throws {
        let spec = ModelSpec(input: .vector(8), layers: [.dropout(probability: 0.5), .dense(units: 8, bias: true), .dropout(probability: 0.5)])
        let first = try Network(spec), second = try Network(spec)
        let keys = [first.layers[0], first.layers[2]].map { ($0 as! Dropout).key }
        XCTAssertNotEqual(keys[0], keys[1], "two dropout layers must draw different masks")
        XCTAssertEqual(keys, [second.layers[0], second.layers[2]].map { ($0 as! Dropout).key }, "keys must not change between builds")
        XCTAssertEqual(keys[0], Dropout.key(for: "model.layers[0]"))
    }

    func testBackwardMatchesNumericalGradientWithTheSameMask() throws {
        for spatial in [false, true] {
            let layer = try Dropout(input: FeatureShape(channels: 3, height: 3, width: 5), probability: 0.4, spatial: spatial, key: 3)
            let report = assertGradientsMatch(
                layer, batch: 3, seed: 9, context: training(step: 4, samples: [10, 11, 12]), "spatial \(spatial)")
            let zeroed = report.comparison("input")!.analytic.filter { $0 == 0 }.count
            XCTAssertGreaterThan(zeroed, 0, "some inputs must be dropped for the check to mean anything")
        }
    }

    func testZeroProbabilityIsTheIdentityAndOneIsRejected() throws {
        let layer = try Dropout(input: .vector(4), probability: 0, key: 1)
        XCTAssertEqual(forwardValues(layer, input: [1, 2, 3, 4], batch: 1, context: training(samples: [0])), [1, 2, 3, 4])
        for p in [1.0, -0.1] {
            XCTAssertThrowsError(try Dropout(input: .vector(4), probability: p, key: 1, name: "model.layers[2]")) {
                XCTAssertTrue("\($0)".hasPrefix("model.layers[2]") && "\($0)".contains("probability"), "\($0)")
            }
        }
    }
}
