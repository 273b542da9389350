import CNN
import TestSupport
import XCTest

/// Models shared by the network and determinism tests.
enum TestModels {
    /// LeNet-5 as in most textbooks' PyTorch version, on 1x32x32.
    static let leNet5 = ModelSpec(
        input: FeatureShape(channels: 1, height: 32, width: 32),
        layers: [
            .convolution(ConvolutionSpec(filters: 6, kernel: 5)), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .convolution(ConvolutionSpec(filters: 16, kernel: 5)), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .flatten,
            .dense(units: 120, bias: true), .relu,
            .dense(units: 84, bias: true), .relu,
            .dense(units: 10, bias: true),
        ])

    /// Conv -> ReLU -> pool -> flatten -> dense, small enough for a full finite-difference check.
    static let smallCNN = ModelSpec(
        input: FeatureShape(channels: 2, height: 6, width: 6),
        layers: [
            .convolution(ConvolutionSpec(filters: 3, kernel: 3, padding: .explicit(1))), .relu,
            .maxPool(size: 2, stride: nil, padding: 0), .flatten, .dense(units: 4, bias: true),
        ])

    /// Two conv blocks and a classifier: enough work per micro-batch for threads to overlap.
    static let twoBlockCNN = ModelSpec(
        input: FeatureShape(channels: 3, height: 16, width: 16),
        layers: [
            .convolution(ConvolutionSpec(filters: 8, kernel: 3, padding: .same)), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .convolution(ConvolutionSpec(filters: 16, kernel: 3, padding: .explicit(1))), .relu, .maxPool(size: 2, stride: nil, padding: 0),
            .flatten, .dense(units: 32, bias: true), .relu, .dense(units: 10, bias: true),
        ])
}

final class NetworkTests: XCTestCase {
    func testParameterSlotsAreNamedLikePyTorchSequential() throws {
        let network = try Network(TestModels.leNet5)
        XCTAssertEqual(
            network.parameterSlots.map(\.name),
            ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias", "11.weight", "11.bias"])
        XCTAssertEqual(
            network.parameterSlots.map(\.shape),
            [[6, 1, 5, 5], [6], [16, 6, 5, 5], [16], [120, 400], [120], [84, 120], [84], [10, 84], [10]])
        // Slots tile the flat buffer in order with no gaps.
        var offset = 0
        for slot in network.parameterSlots {
            XCTAssertEqual(slot.offset, offset, slot.name)
            XCTAssertEqual(slot.count, slot.shape.reduce(1, *), slot.name)
            offset += slot.count
        }
        XCTAssertEqual(offset, network.parameterCount)
        XCTAssertTrue(network.stateSlots.isEmpty)
    }

    func testLeNet5HasExactly61706Parameters() throws {
        let network = try Network(TestModels.leNet5)
        XCTAssertEqual(network.parameterCount, 61_706)
        XCTAssertEqual(network.outputShape, .vector(10))
        XCTAssertEqual(network.layers[6].outputShape, .vector(400))
    }

    func testWholeNetworkGradientMatchesNumericalGradient() throws {
        let network = try Network(TestModels.smallCNN)
        network.initialise(seed: 41)
        // Non-zero biases, so a forgotten bias in forward or backward would show.
        let biases = network.parameterSlots.filter { $0.name.hasSuffix("bias") }
        for slot in biases {
            let values = TestArrays.normal(count: slot.count, seed: 41, stream: UInt64(slot.offset), scale: 0.1)
            (network.parameters.pointer + slot.offset).update(from: values, count: slot.count)
        }
        let batch = 3
        let images = TestArrays.normal(count: batch * network.inputShape.count, seed: 42)
        let labels = TestArrays.labels(count: batch, classes: 4, seed: 42)
        let report = checkNetworkGradients(network, images: images, labels: labels, options: GradientCheckOptions(step: 1e-3))
        XCTAssertTrue(report.passed, report.description)
        XCTAssertEqual(report.comparisons.map(\.tensor), ["0.weight", "0.bias", "4.weight", "4.bias"])
    }

    func testWholeNetworkGradientWithLabelSmoothingMatchesNumericalGradient() throws {
        let network = try Network(TestModels.smallCNN)
        network.initialise(seed: 43)
        let images = TestArrays.normal(count: 2 * network.inputShape.count, seed: 44)
        let labels = TestArrays.labels(count: 2, classes: 4, seed: 44)
        let report = checkNetworkGradients(
            network, images: images, labels: labels, loss: SoftmaxCrossEntropy(labelSmoothing: 0.1),
            options: GradientCheckOptions(step: 1e-3))
        XCTAssertTrue(report.passed, report.description)
    }

    func testBatchGradientIsTheMeanOfPerSampleGradients() throws {
        let network = try Network(TestModels.smallCNN)
        network.initialise(seed: 45)
        let batch = 4
        let sampleSize = network.inputShape.count
        let images = TestArrays.normal(count: batch * sampleSize, seed: 46)
        let labels = TestArrays.labels(count: batch, classes: 4, seed: 46)
        let context = PassContext(mode: .training)
        let whole = gradients(of: network, images: images, labels: labels, context: context)
        var mean = [Double](repeating: 0, count: network.parameterCount)
        for n in 0..<batch {
            let single = gradients(
                of: network, images: Array(images[(n * sampleSize)..<((n + 1) * sampleSize)]), labels: [labels[n]], context: context)
            for i in mean.indices { mean[i] += Double(single[i]) / Double(batch) }
        }
        let comparison = GradientComparison(
            tensor: "parameters", shape: [network.parameterCount], analytic: whole.map(Double.init), numerical: mean,
            options: GradientCheckOptions(relativeTolerance: 1e-5, elementTolerance: 1e-3))
        XCTAssertTrue(comparison.passed, comparison.description)
    }

    func testComputeGradientsZeroesGradientsFirst() throws {
        let network = try Network(TestModels.smallCNN)
        network.initialise(seed: 47)
        let images = TestArrays.normal(count: 2 * network.inputShape.count, seed: 48)
        let labels = TestArrays.labels(count: 2, classes: 4, seed: 48)
        let first = gradients(of: network, images: images, labels: labels, context: PassContext(mode: .training))
        network.gradients.pointer.update(repeating: 1000, count: network.parameterCount)
        let second = gradients(of: network, images: images, labels: labels, context: PassContext(mode: .training))
        XCTAssertEqual(first, second)
    }

    func testInferenceScoresWithoutTouchingGradients() throws {
        let network = try Network(TestModels.smallCNN)
        network.initialise(seed: 49)
        network.gradients.pointer.update(repeating: 7, count: network.parameterCount)
        let images = TestArrays.normal(count: 2 * network.inputShape.count, seed: 50)
        let labels = TestArrays.labels(count: 2, classes: 4, seed: 50)
        let score = images.withUnsafeBufferPointer { x in
            labels.withUnsafeBufferPointer { y in
                network.computeGradients(images: x.baseAddress!, labels: y.baseAddress!, batch: 2, context: .inference)
            }
        }
        XCTAssertEqual(score.samples, 2)
        XCTAssertTrue(score.lossSum.isFinite && score.lossSum > 0)
        let untouched = (0..<network.parameterCount).allSatisfy { network.gradients.pointer[$0] == 7 }
        XCTAssertTrue(untouched, "inference must leave the gradient buffer alone")
    }

    // MARK: Initialisation

    private func parameterValues(_ network: Network) -> [Float] {
        Array(UnsafeBufferPointer(start: network.parameters.pointer, count: network.parameterCount))
    }

    func testInitialiseIsDeterministicForASeedAndDiffersAcrossSeeds() throws {
        let first = try Network(TestModels.leNet5)
        let second = try Network(TestModels.leNet5)
        first.initialise(seed: 1)
        second.initialise(seed: 1)
        let a = parameterValues(first), b = parameterValues(second)
        XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "same seed, different instances")
        first.initialise(seed: 1)
        XCTAssertEqual(parameterValues(first).map(\.bitPattern), a.map(\.bitPattern), "initialising again")
        second.initialise(seed: 2)
        let c = parameterValues(second)
        let weightSlot = try XCTUnwrap(second.parameterSlots.first { $0.name == "7.weight" })
        let range = weightSlot.offset..<(weightSlot.offset + weightSlot.count)
        let differing = range.filter { a[$0] != c[$0] }.count
        XCTAssertGreaterThan(differing, weightSlot.count * 99 / 100, "seed 2 should give different weights")
    }

    func testHeNormalWeightsHaveStandardDeviationSqrtTwoOverFanInAndZeroBiases() throws {
        let network = try Network(TestModels.leNet5)
        network.initialise(seed: 3)
        let values = parameterValues(network)
        // (slot, fan-in, tolerance on the standard deviation's ratio to the target: ~4 standard errors)
        let checks: [(String, Int, Double)] = [("7.weight", 400, 0.02), ("3.weight", 150, 0.06), ("9.weight", 120, 0.03)]
        for (name, fanIn, tolerance) in checks {
            let slot = try XCTUnwrap(network.parameterSlots.first { $0.name == name }, "no slot \(name)")
            let sample = values[slot.offset..<(slot.offset + slot.count)].map(Double.init)
            let mean = sample.reduce(0, +) / Double(sample.count)
            let deviation = (sample.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(sample.count)).squareRoot()
            let target = (2 / Double(fanIn)).squareRoot()
            XCTAssertEqual(deviation / target, 1, accuracy: tolerance, "\(name): std \(deviation), He normal wants \(target)")
            XCTAssertEqual(mean, 0, accuracy: 4 * target / Double(sample.count).squareRoot(), "\(name) mean")
        }
        for slot in network.parameterSlots where slot.name.hasSuffix("bias") {
            XCTAssertTrue(values[slot.offset..<(slot.offset + slot.count)].allSatisfy { $0 == 0 }, "\(slot.name) should start at zero")
        }
    }

    // MARK: Model errors

    func testAlexNetFirstConvolutionOn224IsRejectedCitingTheFractionAndAFix() {
        let spec = ModelSpec(
            input: FeatureShape(channels: 3, height: 224, width: 224),
            layers: [.convolution(ConvolutionSpec(filters: 96, kernel: 11, stride: 4))])
        XCTAssertThrowsError(try Network(spec)) { error in
            let text = String(describing: error)
            XCTAssertTrue(error is ModelError, "\(type(of: error))")
            for needle in ["model.layers[0]", "54.25", "227", "padding"] {
                XCTAssertTrue(text.contains(needle), "error should mention \(needle): \(text)")
            }
        }
    }

    func testAlexNetFirstConvolutionOn227IsAccepted() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 3, height: 227, width: 227),
            layers: [.convolution(ConvolutionSpec(filters: 96, kernel: 11, stride: 4))]))
        XCTAssertEqual(network.outputShape, FeatureShape(channels: 96, height: 55, width: 55))
    }

    func testResNetStemSevenByStrideTwoPaddingThreeOn224GivesOneHundredTwelve() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 3, height: 224, width: 224),
            layers: [.convolution(ConvolutionSpec(filters: 64, kernel: 7, stride: 2, padding: .explicit(3), bias: false))]))
        XCTAssertEqual(network.outputShape, FeatureShape(channels: 64, height: 112, width: 112))
        XCTAssertEqual(network.parameterSlots.map(\.name), ["0.weight"])
    }

    func testSamePaddingKeepsTheSizeAndRejectsEvenKernels() throws {
        let same = try Network(ModelSpec(
            input: FeatureShape(channels: 1, height: 9, width: 7),
            layers: [.convolution(ConvolutionSpec(filters: 2, kernel: 5, padding: .same))]))
        XCTAssertEqual(same.outputShape, FeatureShape(channels: 2, height: 9, width: 7))
        XCTAssertThrowsError(try Network(ModelSpec(
            input: FeatureShape(channels: 1, height: 8, width: 8),
            layers: [.relu, .convolution(ConvolutionSpec(filters: 2, kernel: 4, padding: .same))]))) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("model.layers[1]") && text.contains("SAME"), text)
        }
    }

    func testNonSquareKernelFromSpec() throws {
        var convolution = ConvolutionSpec(filters: 4, kernel: 3)
        convolution.kernelWidth = 1
        let network = try Network(ModelSpec(input: FeatureShape(channels: 2, height: 7, width: 5), layers: [.convolution(convolution)]))
        XCTAssertEqual(network.outputShape, FeatureShape(channels: 4, height: 5, width: 5))
        XCTAssertEqual(network.parameterSlots[0].shape, [4, 2, 3, 1])
    }
}

/// Runs `computeGradients` and returns a copy of the gradient buffer.
func gradients(of network: Network, images: [Float], labels: [Int32], context: PassContext) -> [Float] {
    images.withUnsafeBufferPointer { x in
        labels.withUnsafeBufferPointer { y in
            _ = network.computeGradients(images: x.baseAddress!, labels: y.baseAddress!, batch: labels.count, context: context)
        }
    }
    return Array(UnsafeBufferPointer(start: network.gradients.pointer, count: network.parameterCount))
}
