import CNN
import TestSupport
import XCTest

final class BlockTests: XCTestCase {
    private let stem: [LayerSpec] = [
        .convolution(ConvolutionSpec(filters: 4, kernel: 3, padding: .explicit(1), bias: false)), .batchNorm(BatchNormSpec()), .relu,
    ]

    // MARK: Naming

    func testBasicBlocksNameTensorsAsTorchvision() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 3, height: 8, width: 8),
            layers: stem + [.basicBlock(filters: 4, stride: 1, projection: .auto), .basicBlock(filters: 8, stride: 2, projection: .auto)]))
        let block = ["conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias"]
        XCTAssertEqual(
            network.parameterSlots.map(\.name),
            ["0.weight", "1.weight", "1.bias"] + block.map { "3." + $0 } + block.map { "4." + $0 }
                + ["4.downsample.0.weight", "4.downsample.1.weight", "4.downsample.1.bias"])
        let statistics = ["running_mean", "running_var", "num_batches_tracked"]
        XCTAssertEqual(
            network.stateSlots.map(\.name),
            ["1."] .flatMap { p in statistics.map { p + $0 } }
                + ["3.bn1.", "3.bn2.", "4.bn1.", "4.bn2.", "4.downsample.1."].flatMap { p in statistics.map { p + $0 } })
        let shapes = Dictionary(uniqueKeysWithValues: network.parameterSlots.map { ($0.name, $0.shape) })
        XCTAssertEqual(shapes["4.conv1.weight"], [8, 4, 3, 3])
        XCTAssertEqual(shapes["4.conv2.weight"], [8, 8, 3, 3])
        XCTAssertEqual(shapes["4.downsample.0.weight"], [8, 4, 1, 1])
        XCTAssertEqual(network.outputShape, FeatureShape(channels: 8, height: 4, width: 4))
        XCTAssertEqual(network.layers[3].summary, "BasicBlock(4)")
        XCTAssertEqual(network.layers[4].summary, "BasicBlock(8, s2, projection)")
    }

    func testBottleneckExpandsChannelsAndNamesTensorsAsTorchvision() throws {
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 8, height: 7, width: 7),
            layers: [.bottleneck(filters: 4, stride: 2, expansion: 4, projection: .auto)]))
        XCTAssertEqual(network.outputShape, FeatureShape(channels: 16, height: 4, width: 4))
        XCTAssertEqual(network.parameterSlots.map(\.name), [
            "0.conv1.weight", "0.bn1.weight", "0.bn1.bias", "0.conv2.weight", "0.bn2.weight", "0.bn2.bias",
            "0.conv3.weight", "0.bn3.weight", "0.bn3.bias", "0.downsample.0.weight", "0.downsample.1.weight", "0.downsample.1.bias",
        ])
        XCTAssertEqual(network.parameterSlots.map(\.shape), [
            [4, 8, 1, 1], [4], [4], [4, 4, 3, 3], [4], [4], [16, 4, 1, 1], [16], [16], [16, 8, 1, 1], [16], [16],
        ])
    }

    func testInceptionBranchesAreNamedBranchOneOnwards() throws {
        let network = try Network(ModelSpec(input: FeatureShape(channels: 3, height: 5, width: 5), layers: [inception]))
        XCTAssertEqual(network.parameterSlots.map(\.name), [
            "0.branch1.0.weight", "0.branch1.0.bias",
            "0.branch2.0.weight", "0.branch2.0.bias", "0.branch2.2.weight", "0.branch2.2.bias",
            "0.branch3.0.weight", "0.branch3.0.bias",
            "0.branch4.1.weight", "0.branch4.1.bias",
        ])
        XCTAssertEqual(network.outputShape, FeatureShape(channels: 2 + 3 + 2 + 1, height: 5, width: 5))
    }

    /// Parallel 1x1, 1x1 -> 3x3, 5x5 and pool -> 1x1 branches that keep 5x5.
    private let inception = LayerSpec.concat(branches: [
        [.convolution(ConvolutionSpec(filters: 2, kernel: 1))],
        [.convolution(ConvolutionSpec(filters: 2, kernel: 1)), .relu, .convolution(ConvolutionSpec(filters: 3, kernel: 3, padding: .same))],
        [.convolution(ConvolutionSpec(filters: 2, kernel: 5, padding: .explicit(2)))],
        [.averagePool(size: 3, stride: 1, padding: 1), .convolution(ConvolutionSpec(filters: 1, kernel: 1))],
    ])

    // MARK: Forward

    func testIdentityResidualAddsTheInputToThePath() throws {
        var conv = ConvolutionSpec(filters: 2, kernel: 1, bias: false)
        conv.padding = .valid
        let block = try LayerSpec.residual(ResidualSpec(layers: [.convolution(conv)])).makeLayer(
            input: FeatureShape(channels: 2, height: 1, width: 2), name: "model.layers[0]")
        XCTAssertEqual(block.parameterSpecs.map(\.name), ["layers.0.weight"])
        let bound = BoundLayer(block)
        bound.setValues("layers.0.weight", [2, 0, 0, -1])  // channel 0 doubled, channel 1 negated
        // x + path(x): channel 0 -> 3x, channel 1 -> 0.
        XCTAssertEqual(bound.forward([1, -2, 5, 7], batch: 1), [3, -6, 0, 0])
    }

    func testReLUAfterTheSumClampsTheSum() throws {
        let block = try LayerSpec.residual(ResidualSpec(layers: [.leakyReLU(slope: 2)], reluAfterSum: true)).makeLayer(
            input: .vector(3), name: "model.layers[0]")
        // x + leaky(x) = [-3 -> -9 -> 0, 1 -> 2, 4 -> 8].
        XCTAssertEqual(forwardValues(block, input: [-3, 1, 4], batch: 1), [0, 2, 8])
    }

    func testProjectionAppearsOnlyWhenTheShapeChangesUnlessForced() throws {
        let input = FeatureShape(channels: 2, height: 5, width: 5)
        let same = ResidualSpec(layers: [.convolution(ConvolutionSpec(filters: 2, kernel: 3, padding: .same))])
        XCTAssertFalse(try same.layer(input).parameterSpecs.contains { $0.name.hasPrefix("downsample") })
        var forced = same
        forced.projection = .always
        XCTAssertEqual(try forced.layer(input).parameterSpecs.map(\.name).filter { $0.hasPrefix("downsample") },
                       ["downsample.0.weight", "downsample.1.weight", "downsample.1.bias"])
        let strided = ResidualSpec(layers: [.convolution(ConvolutionSpec(filters: 3, kernel: 3, stride: 2, padding: .same))])
        let projected = try strided.layer(input)
        XCTAssertEqual(projected.outputShape, FeatureShape(channels: 3, height: 3, width: 3))
        XCTAssertEqual(projected.parameterSpecs.first { $0.name == "downsample.0.weight" }?.shape, [3, 2, 1, 1])
        var identity = strided
        identity.projection = .never
        XCTAssertThrowsError(try identity.layer(input)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix("model.layers[2]") && text.contains("2x5x5") && text.contains("3x3x3") && text.contains("projection"), text)
        }
        XCTAssertThrowsError(try LayerSpec.basicBlock(filters: 4, stride: 1, projection: .never).makeLayer(input: input, name: "model.layers[1]")) {
            XCTAssertTrue("\($0)".contains("projection"), "\($0)")
        }
    }

    func testConcatenationRejectsBranchesOfDifferentSizes() {
        let input = FeatureShape(channels: 2, height: 3, width: 3)
        XCTAssertThrowsError(try LayerSpec.concat(branches: [[], [.globalAveragePool]]).makeLayer(input: input, name: "model.layers[6]")) {
            let text = "\($0)"
            XCTAssertTrue(text.hasPrefix("model.layers[6]") && text.contains("3x3, 1x1"), text)
        }
    }

    func testConcatenationOfAnIdentityAndAPoolingBranch() throws {
        let input = FeatureShape(channels: 2, height: 3, width: 3)
        let block = try LayerSpec.concat(branches: [[], [.maxPool(size: 3, stride: 1, padding: 1)]])
            .makeLayer(input: input, name: "model.layers[0]")
        XCTAssertEqual(block.outputShape, FeatureShape(channels: 4, height: 3, width: 3))
        let x = TestArrays.arange(2 * input.count)
        let pool = try MaxPool2D(input: input, size: 3, stride: 1, padding: 1)
        let pooled = forwardValues(pool, input: x, batch: 2)
        let out = forwardValues(block, input: x, batch: 2)
        for n in 0..<2 {
            XCTAssertEqual(Array(out[(n * 36)..<(n * 36 + 18)]), Array(x[(n * 18)..<(n * 18 + 18)]), "sample \(n): identity channels first")
            XCTAssertEqual(Array(out[(n * 36 + 18)..<(n * 36 + 36)]), Array(pooled[(n * 18)..<(n * 18 + 18)]), "sample \(n): pooled channels next")
        }
    }

    // MARK: Gradients

    func testResidualBlocksBackwardMatchNumericalGradient() throws {
        let cases: [(String, FeatureShape, LayerSpec, Int)] = [
            ("basic identity", FeatureShape(channels: 3, height: 5, width: 5), .basicBlock(filters: 3, stride: 1, projection: .auto), 2),
            ("basic projection stride 2, odd size", FeatureShape(channels: 2, height: 5, width: 5), .basicBlock(filters: 4, stride: 2, projection: .auto), 2),
            ("bottleneck", FeatureShape(channels: 4, height: 4, width: 3), .bottleneck(filters: 2, stride: 1, expansion: 2, projection: .auto), 3),
            ("generic with tanh and forced projection", FeatureShape(channels: 2, height: 3, width: 4),
             .residual(ResidualSpec(layers: [.convolution(ConvolutionSpec(filters: 2, kernel: 3, padding: .same)), .tanh],
                                    projection: .always, reluAfterSum: false)), 1),
        ]
        for (label, input, spec, batch) in cases {
            let layer = try spec.makeLayer(input: input, name: "model.layers[0]")
            assertGradientsMatch(layer, batch: batch, seed: 20, options: GradientCheckOptions(step: 1e-3), label)
        }
    }

    func testResidualBlockBackwardInInferenceModeMatchesNumericalGradient() throws {
        let layer = try LayerSpec.basicBlock(filters: 4, stride: 2, projection: .auto)
            .makeLayer(input: FeatureShape(channels: 2, height: 5, width: 4), name: "model.layers[0]")
        assertGradientsMatch(layer, batch: 2, seed: 21, context: .inference, options: GradientCheckOptions(step: 1e-3), prepare: { bound in
            // Running statistics away from (0, 1), so inference differs from an identity normalisation.
            for tensor in bound.stateTensors where tensor.name.hasSuffix("running_mean") || tensor.name.hasSuffix("running_var") {
                let isVariance = tensor.name.hasSuffix("running_var")
                let values = TestArrays.uniform(count: tensor.count, seed: 22, stream: UInt64(tensor.offset),
                                                lower: isVariance ? 0.5 : -0.3, upper: isVariance ? 2 : 0.3)
                (bound.state.pointer + tensor.offset).update(from: values, count: tensor.count)
            }
        })
    }

    func testInceptionBackwardMatchesNumericalGradient() throws {
        let layer = try inception.makeLayer(input: FeatureShape(channels: 3, height: 5, width: 5), name: "model.layers[0]")
        for batch in [1, 2] {
            assertGradientsMatch(layer, batch: batch, seed: 23, options: GradientCheckOptions(step: 1e-3))
        }
    }

    func testProjectionConvolutionMatchesAOneByOneConv2DAndNumericalGradient() throws {
        // Odd sizes, where Conv2D accepts stride 2 too: the two must agree.
        let odd = FeatureShape(channels: 3, height: 5, width: 7)
        let projection = try PointwiseConv2D(input: odd, filters: 4, stride: 2)
        let reference = try Conv2D(input: odd, filters: 4, kernelHeight: 1, kernelWidth: 1, stride: 2, bias: false)
        XCTAssertEqual(projection.outputShape, reference.outputShape)
        XCTAssertEqual(projection.parameterSpecs.map(\.shape), reference.parameterSpecs.map(\.shape))
        let bound = BoundLayer(projection, seed: 40, fill: .normal(scale: 1))
        let boundReference = BoundLayer(reference)
        boundReference.setValues("weight", bound.values("weight"))
        let x = TestArrays.normal(count: 2 * odd.count, seed: 41)
        assertClose(bound.forward(x, batch: 2), boundReference.forward(x, batch: 2).map(Double.init), tolerance: 1e-5, "1x1 stride 2")
        // Even sizes (ResNet's case: the last row and column are skipped) and stride 1 and 3.
        for (shape, stride, batch) in [(FeatureShape(channels: 2, height: 6, width: 4), 2, 2), (odd, 1, 1), (odd, 3, 3)] {
            assertGradientsMatch(try PointwiseConv2D(input: shape, filters: 3, stride: stride), batch: batch, seed: 42)
        }
    }

    func testBatchedProjectionMatchesNumericalGradientOnEveryGatherPath() throws {
        // Stride 2 on an even width of at least 16 takes the vector gather and scatter; odd
        // widths, stride 3 and stride 1 the others; each with more than one sample, where the
        // batch shares one GEMM (but for planes large enough for one GEMM a sample).
        let cases: [(FeatureShape, Int, Int)] = [
            (FeatureShape(channels: 3, height: 5, width: 16), 2, 3),
            (FeatureShape(channels: 2, height: 4, width: 18), 2, 2),
            (FeatureShape(channels: 3, height: 5, width: 7), 2, 2),
            (FeatureShape(channels: 3, height: 7, width: 9), 3, 2),
            (FeatureShape(channels: 2, height: 3, width: 5), 1, 3),
            // 256 output positions a sample: with oneDNN each sample's own GEMM.
            (FeatureShape(channels: 2, height: 32, width: 32), 2, 2),
        ]
        for (shape, stride, batch) in cases {
            assertGradientsMatch(
                try PointwiseConv2D(input: shape, filters: 3, stride: stride), batch: batch, seed: 43,
                "\(shape) stride \(stride)")
        }
    }

    func testBatchedProjectionForwardEqualsOneSampleAtATime() throws {
        for (shape, stride) in [(FeatureShape(channels: 3, height: 6, width: 16), 2), (FeatureShape(channels: 2, height: 5, width: 7), 2)] {
            let batch = 3
            let bound = BoundLayer(try PointwiseConv2D(input: shape, filters: 4, stride: stride), seed: 44, fill: .normal(scale: 1))
            let x = TestArrays.normal(count: batch * shape.count, seed: 45)
            let together = bound.forward(x, batch: batch)
            var alone: [Float] = []
            for n in 0..<batch {
                alone += bound.forward(Array(x[(n * shape.count)..<((n + 1) * shape.count)]), batch: 1)
            }
            assertClose(together, alone.map(Double.init), tolerance: 1e-6, "\(shape) stride \(stride)")
            // The positions the stride skips get exactly zero gradient, call after call, as the
            // batch shrinks and grows again (rows the layer never writes must stay zero).
            for calls in [batch, 1, batch, 2 * batch] {
                let input = TestArrays.normal(count: calls * shape.count, seed: 50 + UInt64(calls))
                let ones = [Float](repeating: 1, count: calls * bound.layer.outputShape.count)
                let gradient = bound.forwardBackward(input, outputGradient: ones, batch: calls)
                var skipped = 0, nonZero = 0
                for n in 0..<calls {
                    for c in 0..<shape.channels {
                        for h in 0..<shape.height {
                            for w in 0..<shape.width where h % stride != 0 || w % stride != 0 {
                                skipped += 1
                                if gradient.inputGradient[((n * shape.channels + c) * shape.height + h) * shape.width + w] != 0 { nonZero += 1 }
                            }
                        }
                    }
                }
                XCTAssertGreaterThan(skipped, 0)
                XCTAssertEqual(nonZero, 0, "\(shape) stride \(stride), batch \(calls)")
            }
        }
    }

    func testProjectionSplitIntoSampleBlocksMatchesOneSampleAtATime() throws {
        // 64 + 64 channels on 15x15 output planes are 113 KiB a sample, so a batch of 10 runs
        // as several cache-sized blocks of samples; each sample alone takes the one-sample path.
        let shape = FeatureShape(channels: 64, height: 30, width: 30)
        let batch = 10
        let bound = BoundLayer(try PointwiseConv2D(input: shape, filters: 64, stride: 2), seed: 46, fill: .normal(scale: 0.2))
        let outputCount = bound.layer.outputShape.count
        let x = TestArrays.normal(count: batch * shape.count, seed: 47)
        let dy = TestArrays.normal(count: batch * outputCount, seed: 48)
        bound.zeroGradients()
        let together = bound.forwardBackward(x, outputGradient: dy, batch: batch)
        let weightGradient = bound.gradientValues("weight")
        bound.zeroGradients()
        var output: [Float] = [], inputGradient: [Float] = []
        for n in 0..<batch {
            let alone = bound.forwardBackward(
                Array(x[(n * shape.count)..<((n + 1) * shape.count)]),
                outputGradient: Array(dy[(n * outputCount)..<((n + 1) * outputCount)]), batch: 1)
            output += alone.output
            inputGradient += alone.inputGradient
        }
        assertClose(together.output, output.map(Double.init), tolerance: 1e-5, "output")
        assertClose(together.inputGradient, inputGradient.map(Double.init), tolerance: 1e-5, "input gradient")
        assertClose(weightGradient, bound.gradientValues("weight").map(Double.init), tolerance: 1e-4, "weight gradient")
    }

    func testProjectionStreamingItsInputGradientMatchesOneSampleAtATime() throws {
        // ResNet-20's first projection, with just enough samples for an input gradient written
        // with streaming stores; one sample at a time stays below that size.
        let shape = FeatureShape(channels: 16, height: 32, width: 32)
        let bytesPerSample = shape.count * MemoryLayout<Float>.stride
        let batch = PointwiseConv2D.streamingGradientBytes / bytesPerSample + 1
        XCTAssertLessThan(bytesPerSample, PointwiseConv2D.streamingGradientBytes)
        let bound = BoundLayer(try PointwiseConv2D(input: shape, filters: 8, stride: 2), seed: 60, fill: .normal(scale: 0.3))
        let outputCount = bound.layer.outputShape.count
        let x = TestArrays.normal(count: batch * shape.count, seed: 61)
        let dy = TestArrays.normal(count: batch * outputCount, seed: 62)
        // Below the size, then above it, then below again: the same buffer serves both stores.
        _ = bound.forwardBackward(Array(x[0..<(2 * shape.count)]), outputGradient: Array(dy[0..<(2 * outputCount)]), batch: 2)
        let together = bound.forwardBackward(x, outputGradient: dy, batch: batch)
        var alone: [Float] = []
        for n in 0..<batch {
            alone += bound.forwardBackward(
                Array(x[(n * shape.count)..<((n + 1) * shape.count)]),
                outputGradient: Array(dy[(n * outputCount)..<((n + 1) * outputCount)]), batch: 1
            ).inputGradient
        }
        assertClose(together.inputGradient, alone.map(Double.init), tolerance: 1e-5, "streamed input gradient")
        var written = 0
        for (index, value) in together.inputGradient.enumerated() {
            let h = index / shape.width % shape.height, w = index % shape.width
            if h % 2 == 0 && w % 2 == 0 {
                if value != 0 { written += 1 }
            } else if value != 0 {
                XCTFail("a position the stride skips has gradient \(value) at \(index)")
                break
            }
        }
        XCTAssertEqual(written, batch * shape.channels * 16 * 16)
    }

    // MARK: A small ResNet

    private var smallResNet: ModelSpec {
        ModelSpec(
            input: FeatureShape(channels: 2, height: 6, width: 6),
            layers: stem + [
                .basicBlock(filters: 4, stride: 1, projection: .auto),
                .basicBlock(filters: 6, stride: 2, projection: .auto),
                .globalAveragePool, .dense(units: 3, bias: true),
            ])
    }

    func testSmallResNetPassesTheWholeNetworkGradientCheck() throws {
        let network = try Network(smallResNet)
        network.initialise(seed: 30)
        XCTAssertTrue(network.parameterSlots.contains { $0.name == "4.downsample.0.weight" })
        let batch = 3
        let images = TestArrays.normal(count: batch * network.inputShape.count, seed: 31)
        let labels = TestArrays.labels(count: batch, classes: 3, seed: 31)
        let report = checkNetworkGradients(network, images: images, labels: labels, options: GradientCheckOptions(step: 1e-3))
        XCTAssertTrue(report.passed, report.description)
        XCTAssertEqual(report.comparisons.count, network.parameterSlots.count)
    }

    func testSmallResNetEvaluatesWithRunningStatisticsAfterTraining() throws {
        let network = try Network(smallResNet)
        network.initialise(seed: 32)
        let batch = 16
        let images = TestArrays.normal(count: batch * network.inputShape.count, seed: 33)
        let labels = TestArrays.labels(count: batch, classes: 3, seed: 33)
        func logits(_ context: PassContext) -> [Float] {
            images.withUnsafeBufferPointer { x in
                Array(UnsafeBufferPointer(start: network.forward(x.baseAddress!, batch: batch, context: context), count: batch * 3))
            }
        }
        let stateBefore = Array(UnsafeBufferPointer(start: network.state.pointer, count: network.stateCount))
        let training = logits(PassContext(mode: .training))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: network.state.pointer, count: network.stateCount)), stateBefore,
                       "a training forward pass must leave the running statistics alone")
        let untrained = logits(.inference)
        let gap = zip(training, untrained).map { abs($0 - $1) }.max()!
        XCTAssertGreaterThan(gap, 1e-2, "fresh running statistics (0, 1) must give different logits than batch statistics")

        // Every step sees the same batch; with momentum 0.1 the running statistics converge to it.
        for _ in 0..<200 {
            _ = gradients(of: network, images: images, labels: labels, context: PassContext(mode: .training))
            network.applyObservations(network.observations.pointer)
        }
        let tracked = try XCTUnwrap(network.stateSlots.first { $0.name == "4.downsample.1.num_batches_tracked" })
        XCTAssertEqual(network.state.pointer[tracked.offset], 200, "blocks pass observations to their children")
        let evaluated = logits(.inference)
        // Only the unbiased (running) versus biased (batch) variance still differs: m / (m - 1) is close to 1.
        for i in training.indices {
            XCTAssertEqual(evaluated[i], training[i], accuracy: 0.05 * max(1, abs(training[i])), "logit \(i)")
        }
    }

    func testSmallResNetWithDropoutLearnsAndEvaluatesWithRunningStatistics() throws {
        var spec = smallResNet
        spec.layers.insert(.dropout(probability: 0.2), at: spec.layers.count - 1)
        let network = try Network(spec)
        network.initialise(seed: 34)
        let optimizer = SGD(parameterCount: network.parameterCount, momentum: 0.9)
        let sample = network.inputShape.count
        /// Class k brightens channel 0 by 1.5 (k - 1) over noise: learnable from the channel means.
        func batch(_ count: Int, seed: UInt64) -> (images: [Float], labels: [Int32]) {
            let labels = TestArrays.labels(count: count, classes: 3, seed: seed)
            var images = TestArrays.normal(count: count * sample, seed: seed, stream: 9)
            for n in 0..<count {
                for i in 0..<(sample / 2) { images[n * sample + i] += 1.5 * Float(labels[n] - 1) }
            }
            return (images, labels)
        }
        var losses: [Double] = []
        for step in 0..<40 {
            let (images, labels) = batch(24, seed: UInt64(100 + step))
            let context = PassContext(mode: .training, seed: 7, step: step, sampleIndices: (0..<24).map { step * 24 + $0 })
            let score = images.withUnsafeBufferPointer { x in
                labels.withUnsafeBufferPointer { y in
                    network.computeGradients(images: x.baseAddress!, labels: y.baseAddress!, batch: 24, context: context)
                }
            }
            losses.append(score.meanLoss)
            network.applyObservations(network.observations.pointer)
            optimizer.step(parameters: network.parameters.pointer, gradients: network.gradients.pointer,
                           count: network.parameterCount, learningRate: 0.05)
        }
        let early = losses.prefix(5).reduce(0, +) / 5, late = losses.suffix(5).reduce(0, +) / 5
        XCTAssertLessThan(late, early * 0.6, "training loss should fall: \(losses)")
        let (images, labels) = batch(90, seed: 999)
        let score = images.withUnsafeBufferPointer { x in
            labels.withUnsafeBufferPointer { y in
                network.computeGradients(images: x.baseAddress!, labels: y.baseAddress!, batch: 90, context: .inference)
            }
        }
        XCTAssertGreaterThan(score.accuracy, 0.8, "held-out accuracy in inference mode (running statistics, no dropout)")
    }
}

extension ResidualSpec {
    /// This block built on `input`, named as the third layer of a model.
    fileprivate func layer(_ input: FeatureShape) throws -> Layer {
        try LayerSpec.residual(self).makeLayer(input: input, name: "model.layers[2]")
    }
}
