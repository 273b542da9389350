import CNN
import TestSupport
import XCTest

final class BatchNormTests: XCTestCase {
    private let convShape = FeatureShape(channels: 3, height: 5, width: 7)

    /// Samples whose channel c is N(0, 1) * (c + 1) * 3 + 5c - 2: every channel off-centre and scaled differently.
    private func skewedInput(_ shape: FeatureShape, batch: Int, seed: UInt64) -> [Float] {
        let base = TestArrays.normal(count: batch * shape.count, seed: seed)
        let plane = shape.height * shape.width
        return base.indices.map { i in
            let c = (i / plane) % shape.channels
            return base[i] * Float(c + 1) * 3 + Float(5 * c - 2)
        }
    }

    /// Per-channel mean and biased variance over (N, H, W), in Double.
    private func channelStatistics(_ values: [Float], shape: FeatureShape, batch: Int) -> (mean: [Double], variance: [Double]) {
        let plane = shape.height * shape.width
        var mean = [Double](repeating: 0, count: shape.channels), variance = mean
        for c in 0..<shape.channels {
            var items: [Double] = []
            for n in 0..<batch {
                for i in 0..<plane { items.append(Double(values[(n * shape.channels + c) * plane + i])) }
            }
            mean[c] = items.reduce(0, +) / Double(items.count)
            variance[c] = items.reduce(0) { $0 + ($1 - mean[c]) * ($1 - mean[c]) } / Double(items.count)
        }
        return (mean, variance)
    }

    // MARK: Training

    func testTrainingOutputHasZeroMeanAndUnitVariancePerChannel() throws {
        for (shape, batch) in [(convShape, 4), (FeatureShape.vector(6), 16), (FeatureShape(channels: 2, height: 3, width: 3), 1)] {
            let bound = BoundLayer(try BatchNorm(input: shape))
            let out = bound.forward(skewedInput(shape, batch: batch, seed: 1), batch: batch)
            let stats = channelStatistics(out, shape: shape, batch: batch)
            for c in 0..<shape.channels {
                XCTAssertEqual(stats.mean[c], 0, accuracy: 1e-5, "\(shape) channel \(c) mean")
                // Normalised by sqrt(var + eps): the variance falls short of 1 by about eps / var.
                XCTAssertEqual(stats.variance[c], 1, accuracy: 1e-3, "\(shape) channel \(c) variance")
            }
        }
    }

    func testAffineParametersScaleAndShiftTheNormalisedOutput() throws {
        let bound = BoundLayer(try BatchNorm(input: convShape))
        XCTAssertEqual(bound.values("weight"), [1, 1, 1], "BatchNorm weight starts at one")
        XCTAssertEqual(bound.values("bias"), [0, 0, 0], "BatchNorm bias starts at zero")
        bound.setValues("weight", [2, 0.5, -1])
        bound.setValues("bias", [1, -3, 10])
        let out = bound.forward(skewedInput(convShape, batch: 3, seed: 2), batch: 3)
        let stats = channelStatistics(out, shape: convShape, batch: 3)
        for (c, (scale, shift)) in [(2.0, 1.0), (0.5, -3.0), (-1.0, 10.0)].enumerated() {
            XCTAssertEqual(stats.mean[c], shift, accuracy: 1e-4)
            XCTAssertEqual(stats.variance[c].squareRoot(), abs(scale), accuracy: 1e-3)
        }
    }

    func testTrainingRecordsBatchMeanAndUnbiasedVarianceWithoutTouchingTheState() throws {
        let layer = try BatchNorm(input: convShape)
        let bound = BoundLayer(layer)
        let batch = 3
        let input = skewedInput(convShape, batch: batch, seed: 3)
        let stateBefore = Array(UnsafeBufferPointer(start: bound.state.pointer, count: layer.stateCount))
        _ = bound.forward(input, batch: batch)
        let stats = channelStatistics(input, shape: convShape, batch: batch)
        let m = Double(batch * convShape.height * convShape.width)
        let observed = Array(UnsafeBufferPointer(start: bound.observations.pointer, count: layer.stateCount))
        assertClose(Array(observed[0..<3]), stats.mean, tolerance: 1e-5, "observed mean")
        assertClose(Array(observed[3..<6]), stats.variance.map { $0 * m / (m - 1) }, tolerance: 1e-5, "observed unbiased variance")
        XCTAssertEqual(observed[6], 1, "one batch observed")
        let stateAfter = Array(UnsafeBufferPointer(start: bound.state.pointer, count: layer.stateCount))
        XCTAssertEqual(stateAfter, stateBefore, "a forward pass must never change the running statistics")
        XCTAssertEqual(stateBefore, [0, 0, 0, 1, 1, 1, 0], "running_mean zeros, running_var ones, no batches tracked")
    }

    func testApplyObservationsMovesRunningStatisticsByMomentum() throws {
        let layer = try BatchNorm(input: FeatureShape(channels: 2, height: 4, width: 4))
        var state: [Float] = [1, 2, 3, 4, 5]          // running_mean, running_var, num_batches_tracked
        let observed: [Float] = [11, 12, 13, 14, 1]
        layer.applyObservations(observed, to: &state)
        // 0.9 * running + 0.1 * observed.
        assertClose(state, [2, 3, 4, 5, 6], tolerance: 1e-6, "momentum 0.1")

        let slow = try BatchNorm(input: .vector(1), spec: BatchNormSpec(momentum: 0.5))
        var slowState: [Float] = [0, 1, 0]
        slow.applyObservations([4, 9, 1], to: &slowState)
        slow.applyObservations([8, 1, 1], to: &slowState)
        // mean 0 -> 2 -> 5, variance 1 -> 5 -> 3, two batches.
        assertClose(slowState, [5, 3, 2], tolerance: 1e-6, "momentum 0.5 over two steps")
    }

    func testCumulativeAverageWithoutMomentumWeighsEveryBatchEqually() throws {
        let layer = try BatchNorm(input: .vector(1), spec: BatchNormSpec(momentum: nil))
        var state: [Float] = [0, 1, 0]
        for observedMean: Float in [3, 6, 9] { layer.applyObservations([observedMean, 2, 1], to: &state) }
        // PyTorch's momentum=None: the running mean is the plain average of the batch means.
        assertClose(state, [6, 2, 3], tolerance: 1e-6, "cumulative average")
    }

    func testObservationsFromNoTrainingPassLeaveTheStateAlone() throws {
        let layer = try BatchNorm(input: .vector(2))
        var state: [Float] = [1, 2, 3, 4, 7]
        layer.applyObservations([0, 0, 0, 0, 0], to: &state)
        XCTAssertEqual(state, [1, 2, 3, 4, 7])
    }

    // MARK: Inference

    func testInferenceNormalisesWithTheRunningStatistics() throws {
        let shape = FeatureShape(channels: 2, height: 1, width: 3)
        let layer = try BatchNorm(input: shape, spec: BatchNormSpec(epsilon: 1e-3))
        let bound = BoundLayer(layer)
        bound.setValues("weight", [2, -1])
        bound.setValues("bias", [0.5, 1])
        bound.state.pointer.update(from: [1, -2, 4, 0.25, 10], count: 5)
        let input: [Float] = [1, 3, 5, -2, 0, 2]
        let out = bound.forward(input, batch: 1, context: .inference)
        var expected: [Double] = []
        for i in 0..<6 {
            let (mean, variance, weight, bias) = i < 3 ? (1.0, 4.0, 2.0, 0.5) : (-2.0, 0.25, -1.0, 1.0)
            expected.append((Double(input[i]) - mean) / (variance + 1e-3).squareRoot() * weight + bias)
        }
        assertClose(out, expected, tolerance: 1e-5, "inference output")
        XCTAssertEqual(Array(UnsafeBufferPointer(start: bound.observations.pointer, count: 5)), [0, 0, 0, 0, 0],
                       "inference must observe nothing")
    }

    func testTrainingDependsOnTheBatchButInferenceDoesNot() throws {
        let shape = FeatureShape.vector(4)
        let bound = BoundLayer(try BatchNorm(input: shape))
        bound.state.pointer.update(from: [0.5, -0.5, 1, 2, 1, 2, 0.5, 3, 4], count: 9)
        let first = TestArrays.normal(count: 4, seed: 4), others = TestArrays.normal(count: 12, seed: 5)
        let alone = bound.forward(first + others, batch: 4, context: .inference)
        let mixed = bound.forward(first + others.map { $0 * 3 + 1 }, batch: 4, context: .inference)
        XCTAssertEqual(Array(alone[0..<4]), Array(mixed[0..<4]), "inference must not depend on the other samples")
        let trainedAlone = bound.forward(first + others, batch: 4)
        let trainedMixed = bound.forward(first + others.map { $0 * 3 + 1 }, batch: 4)
        XCTAssertNotEqual(Array(trainedAlone[0..<4]), Array(trainedMixed[0..<4]), "training uses the batch statistics")
    }

    // MARK: Gradients

    func testTrainingBackwardMatchesNumericalGradientForConvolutionAndDenseShapes() throws {
        for (shape, batch) in [(convShape, 2), (FeatureShape(channels: 2, height: 3, width: 3), 1), (FeatureShape.vector(5), 6)] {
            let layer = try BatchNorm(input: shape)
            assertGradientsMatch(layer, batch: batch, input: skewedInput(shape, batch: batch, seed: 6), seed: 6)
        }
    }

    func testInferenceBackwardMatchesNumericalGradient() throws {
        let layer = try BatchNorm(input: convShape)
        assertGradientsMatch(layer, batch: 2, seed: 7, context: .inference, prepare: { bound in
            bound.state.pointer.update(from: [0.1, -0.2, 0.3, 0.5, 2, 1.5, 3], count: 7)
        })
    }

    func testWithoutAffineThereAreNoParametersAndTheGradientStillMatches() throws {
        let layer = try BatchNorm(input: convShape, spec: BatchNormSpec(affine: false))
        XCTAssertTrue(layer.parameterSpecs.isEmpty)
        XCTAssertEqual(layer.stateSpecs.map(\.name), ["running_mean", "running_var", "num_batches_tracked"])
        assertGradientsMatch(layer, batch: 2, input: skewedInput(convShape, batch: 2, seed: 8), seed: 8)
    }

    func testInvalidMomentumOrEpsilonIsRejectedNamingTheLayer() {
        for spec in [BatchNormSpec(momentum: 1.5), BatchNormSpec(epsilon: 0)] {
            XCTAssertThrowsError(try BatchNorm(input: convShape, spec: spec, name: "model.layers[4]")) {
                XCTAssertTrue("\($0)".hasPrefix("model.layers[4]"), "\($0)")
            }
        }
    }

    // MARK: In a network

    func testNetworkNamesBatchNormTensorsAsPyTorch() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 2, height: 4, width: 4),
            layers: [.convolution(ConvolutionSpec(filters: 3, kernel: 3, padding: .same, bias: false)), .batchNorm(BatchNormSpec()), .relu,
                     .flatten, .dense(units: 5, bias: true), .batchNorm(BatchNormSpec())]))
        XCTAssertEqual(network.parameterSlots.map(\.name), ["0.weight", "1.weight", "1.bias", "4.weight", "4.bias", "5.weight", "5.bias"])
        XCTAssertEqual(network.stateSlots.map(\.name),
                       ["1.running_mean", "1.running_var", "1.num_batches_tracked", "5.running_mean", "5.running_var", "5.num_batches_tracked"])
        XCTAssertEqual(network.stateSlots.map(\.shape), [[3], [3], [], [5], [5], []])
        XCTAssertEqual(network.layers[1].summary, "BatchNorm2d(3)")
        XCTAssertEqual(network.layers[5].summary, "BatchNorm1d(5)")
        network.initialise(seed: 1)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: network.state.pointer, count: network.stateCount)),
                       [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0])
    }

    func testOneMicroBatchPerStepUpdatesRunningStatisticsExactlyAsPyTorch() throws {
        let shape = FeatureShape(channels: 2, height: 3, width: 3)
        let network = try Network(ModelSpec(input: shape, layers: [.batchNorm(BatchNormSpec()), .flatten, .dense(units: 3, bias: true)]))
        network.initialise(seed: 2)
        var runningMean = [0.0, 0.0], runningVariance = [1.0, 1.0]
        let batch = 4
        let m = Double(batch * 9)
        for step in 0..<3 {
            let images = skewedInput(shape, batch: batch, seed: UInt64(10 + step))
            let labels = TestArrays.labels(count: batch, classes: 3, seed: UInt64(step))
            _ = gradients(of: network, images: images, labels: labels, context: PassContext(mode: .training, step: step))
            network.applyObservations(network.observations.pointer)
            let stats = channelStatistics(images, shape: shape, batch: batch)
            for c in 0..<2 {
                runningMean[c] = 0.9 * runningMean[c] + 0.1 * stats.mean[c]
                runningVariance[c] = 0.9 * runningVariance[c] + 0.1 * stats.variance[c] * m / (m - 1)
            }
        }
        let state = Array(UnsafeBufferPointer(start: network.state.pointer, count: network.stateCount))
        assertClose(state, runningMean + runningVariance + [3], tolerance: 1e-5, "running statistics after three steps")
    }

    func testBiasRightBeforeBatchNormGetsNoGradient() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 2, height: 4, width: 4),
            layers: [.convolution(ConvolutionSpec(filters: 3, kernel: 3, padding: .same)), .batchNorm(BatchNormSpec()), .relu,
                     .flatten, .dense(units: 3, bias: true)]))
        network.initialise(seed: 5)
        let grads = gradients(
            of: network, images: TestArrays.normal(count: 3 * 32, seed: 6), labels: TestArrays.labels(count: 3, classes: 3, seed: 6),
            context: PassContext(mode: .training))
        let bias = try XCTUnwrap(network.parameterSlots.first { $0.name == "0.bias" })
        let weight = try XCTUnwrap(network.parameterSlots.first { $0.name == "0.weight" })
        let biasNorm = grads[bias.offset..<(bias.offset + bias.count)].reduce(0) { $0 + abs($1) }
        let weightNorm = grads[weight.offset..<(weight.offset + weight.count)].reduce(0) { $0 + abs($1) }
        XCTAssertGreaterThan(weightNorm, 1e-3)
        XCTAssertLessThan(biasNorm, 1e-5 * weightNorm, "BN subtracts the batch mean, so a constant shift before it cannot change the loss")
    }

    func testBothPlacementsAroundReLUPassTheWholeNetworkGradientCheck() throws {
        let input = FeatureShape(channels: 2, height: 5, width: 5)
        // A bias right before batch norm is cancelled by the mean subtraction (its gradient is zero),
        // so that placement uses a convolution without bias, as ResNets do.
        let withoutBias = LayerSpec.convolution(ConvolutionSpec(filters: 3, kernel: 3, padding: .explicit(1), bias: false))
        let withBias = LayerSpec.convolution(ConvolutionSpec(filters: 3, kernel: 3, padding: .explicit(1)))
        let placements: [(String, [LayerSpec])] = [
            ("CONV => BN => RELU", [withoutBias, .batchNorm(BatchNormSpec()), .relu]),
            ("CONV => RELU => BN", [withBias, .relu, .batchNorm(BatchNormSpec())]),
        ]
        for (label, body) in placements {
            let network = try Network(ModelSpec(input: input, layers: body + [.flatten, .dense(units: 3, bias: true)]))
            network.initialise(seed: 3)
            let batch = 3
            let images = TestArrays.normal(count: batch * input.count, seed: 4)
            let labels = TestArrays.labels(count: batch, classes: 3, seed: 4)
            let report = checkNetworkGradients(network, images: images, labels: labels, options: GradientCheckOptions(step: 1e-3))
            XCTAssertTrue(report.passed, "\(label)\n\(report)")
            XCTAssertNotNil(report.comparison(label.hasSuffix("RELU") ? "1.weight" : "2.weight"), "\(label): BN weight checked")
        }
    }
}

extension BatchNorm {
    /// Applies observations to a state held in an array (for hand-computed checks).
    func applyObservations(_ observed: [Float], to state: inout [Float]) {
        observed.withUnsafeBufferPointer { o in
            state.withUnsafeMutableBufferPointer { s in applyObservations(o.baseAddress!, to: s.baseAddress!) }
        }
    }
}
