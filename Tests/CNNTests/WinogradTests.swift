import CNN
import TestSupport
import XCTest

/// One 3x3 stride-1 convolution computed with Winograd F(2x2, 3x3), printed in failure messages.
private struct WinogradCase: CustomStringConvertible {
    var channels: Int
    var filters: Int
    var height: Int
    var width: Int
    var padding: Int
    var batch: Int
    var bias = true

    var description: String {
        "input \(batch)x\(channels)x\(height)x\(width), \(filters) filters 3x3, padding \(padding), bias \(bias)"
    }

    func make(_ algorithm: Conv2D.Algorithm) throws -> Conv2D {
        let convolution = try Conv2D(
            input: FeatureShape(channels: channels, height: height, width: width), filters: filters, kernelHeight: 3,
            kernelWidth: 3, padding: padding, bias: bias)
        try convolution.use(algorithm)
        return convolution
    }
}

/// Everything one forward and backward pass produces.
private struct PassResult {
    var output: [Float]
    var inputGradient: [Float]
    var weightGradient: [Float]
    var biasGradient: [Float]
}

final class WinogradTests: XCTestCase {
    /// Forward against the direct definition, backward against central differences, on the
    /// Winograd path.
    private func verify(
        _ testCase: WinogradCase, seed: UInt64, algorithm: Conv2D.Algorithm = .winograd, file: StaticString = #filePath,
        line: UInt = #line
    ) throws {
        let convolution = try testCase.make(algorithm)
        XCTAssertEqual(convolution.algorithm, algorithm, "\(testCase)", file: file, line: line)
        let bound = BoundLayer(convolution, seed: seed, fill: .normal(scale: 0.5))
        let input = TestArrays.normal(count: testCase.batch * convolution.inputShape.count, seed: seed, stream: 1)

        let output = bound.forward(input, batch: testCase.batch)
        let expected = referenceConvolution(
            convolution, input: input, batch: testCase.batch, weights: bound.values("weight"),
            bias: testCase.bias ? bound.values("bias") : nil)
        XCTAssertEqual(output.count, expected.count, "\(testCase)", file: file, line: line)
        for i in expected.indices where !(abs(Double(output[i]) - expected[i]) <= 1e-4 * max(1, abs(expected[i]))) {
            XCTFail("\(testCase): output[\(i)] = \(output[i]), direct convolution gives \(expected[i])", file: file, line: line)
            break
        }

        let report = checkLayerGradients(bound, input: input, batch: testCase.batch, projectionSeed: seed)
        XCTAssertTrue(report.passed, "\(testCase)\n\(report)", file: file, line: line)
        XCTAssertEqual(report.comparison("bias") != nil, testCase.bias, "\(testCase): bias gradient presence", file: file, line: line)
    }

    func testWinogradBackwardMatchesNumericalGradientOnOddSizesWithPaddingOneAndBatchOfThree() throws {
        // 7x5 with padding 1 gives a 7x5 output: a partial last tile both ways.
        try verify(WinogradCase(channels: 3, filters: 5, height: 7, width: 5, padding: 1, batch: 3), seed: 1)
    }

    func testWinogradBackwardMatchesNumericalGradientOnEvenSizesWithoutPaddingAndBatchOfOne() throws {
        // 6x8 VALID: a 4x6 output of whole tiles.
        try verify(WinogradCase(channels: 2, filters: 3, height: 6, width: 8, padding: 0, batch: 1), seed: 2)
    }

    func testWinogradBackwardMatchesNumericalGradientOnMixedSizesWithoutPadding() throws {
        // 7x6 VALID: a 5x4 output, partial tiles along the rows only; and the transpose of that.
        try verify(WinogradCase(channels: 5, filters: 2, height: 7, width: 6, padding: 0, batch: 2), seed: 3)
        try verify(WinogradCase(channels: 1, filters: 3, height: 4, width: 5, padding: 0, batch: 2), seed: 4)
    }

    func testWinogradBackwardMatchesNumericalGradientWithPaddingTwoAndWithoutBias() throws {
        try verify(WinogradCase(channels: 3, filters: 2, height: 5, width: 4, padding: 2, batch: 2, bias: false), seed: 5)
    }

    func testWinogradBackwardMatchesNumericalGradientOnEighteenChannelsAndFilters() throws {
        // Wide enough for every channel loop's vector path; at OpenBLAS's balance of 9, the
        // default choice there (with oneDNN's GEMM the layer takes Winograd from 40 and 40).
        let testCase = WinogradCase(channels: 18, filters: 18, height: 6, width: 5, padding: 1, batch: 2)
        XCTAssertEqual(try testCase.make(.im2col).supportsWinograd, true)
        let balanced = Conv2D.AlgorithmThresholds.measured(for: BLAS.library).winograd * 2
        let byDefault = try Conv2D(
            input: FeatureShape(channels: balanced, height: 6, width: 5), filters: balanced, kernelHeight: 3, kernelWidth: 3,
            padding: 1)
        XCTAssertEqual(byDefault.algorithm, .winograd, "\(balanced) x \(balanced) / (\(balanced) + \(balanced)) reaches the Winograd balance")
        try verify(testCase, seed: 6)
    }

    func testWinogradBackwardMatchesNumericalGradientOnTinyPlanes() throws {
        // A 1x1 output (one partial tile) and a 2x2 output (exactly one tile).
        try verify(WinogradCase(channels: 2, filters: 2, height: 3, width: 3, padding: 0, batch: 2), seed: 7)
        try verify(WinogradCase(channels: 2, filters: 3, height: 2, width: 2, padding: 1, batch: 1), seed: 8)
    }

    // MARK: F(4x4, 3x3)

    func testWinograd4x4BackwardMatchesNumericalGradientOnOddSizesWithPaddingOneAndBatchOfThree() throws {
        // 7x5 with padding 1: a 7x5 output, partial last tiles both ways (3 and 1 of 4).
        try verify(WinogradCase(channels: 3, filters: 5, height: 7, width: 5, padding: 1, batch: 3), seed: 41, algorithm: .winograd4x4)
    }

    func testWinograd4x4BackwardMatchesNumericalGradientOnWholeTilesWithoutPaddingAndBatchOfOne() throws {
        // 6x10 VALID: a 4x8 output of whole tiles.
        try verify(WinogradCase(channels: 2, filters: 3, height: 6, width: 10, padding: 0, batch: 1), seed: 42, algorithm: .winograd4x4)
    }

    func testWinograd4x4BackwardMatchesNumericalGradientOnMixedSizesWithoutPadding() throws {
        // 11x8 VALID: a 9x6 output, two kinds of partial tile; and 8x11 with padding 1.
        try verify(WinogradCase(channels: 5, filters: 2, height: 11, width: 8, padding: 0, batch: 2), seed: 43, algorithm: .winograd4x4)
        try verify(WinogradCase(channels: 1, filters: 3, height: 8, width: 11, padding: 1, batch: 2), seed: 44, algorithm: .winograd4x4)
    }

    func testWinograd4x4BackwardMatchesNumericalGradientWithPaddingTwoAndWithoutBias() throws {
        try verify(
            WinogradCase(channels: 3, filters: 2, height: 5, width: 6, padding: 2, batch: 2, bias: false), seed: 45,
            algorithm: .winograd4x4)
    }

    func testWinograd4x4BackwardMatchesNumericalGradientOnTinyPlanes() throws {
        // A 1x1 output (one mostly empty tile), a 2x2 one and a 4x4 one (exactly one tile).
        try verify(WinogradCase(channels: 2, filters: 2, height: 3, width: 3, padding: 0, batch: 2), seed: 46, algorithm: .winograd4x4)
        try verify(WinogradCase(channels: 3, filters: 2, height: 2, width: 2, padding: 1, batch: 1), seed: 47, algorithm: .winograd4x4)
        try verify(WinogradCase(channels: 2, filters: 3, height: 6, width: 6, padding: 0, batch: 3), seed: 48, algorithm: .winograd4x4)
    }

    // MARK: Against im2col

    /// Runs forward and backward with an output gradient drawn from `seed`; gradients start at zero.
    private func pass(_ bound: BoundLayer, input: [Float], seed: UInt64, batch: Int) -> PassResult {
        let outputGradient = TestArrays.normal(count: batch * bound.layer.outputShape.count, seed: seed, stream: 2)
        bound.zeroGradients()
        let (output, inputGradient) = bound.forwardBackward(input, outputGradient: outputGradient, batch: batch)
        let biasGradient = bound.tensors.contains { $0.name == "bias" } ? bound.gradientValues("bias") : []
        return PassResult(
            output: output, inputGradient: inputGradient, weightGradient: bound.gradientValues("weight"), biasGradient: biasGradient)
    }

    /// Fails unless every element of `actual` is within `tolerance` of `expected`, relative to
    /// the largest magnitude in `expected`.
    private func assertNear(
        _ actual: [Float], _ expected: [Float], tolerance: Double = 1e-4, _ what: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        let scale = Double(expected.map { abs($0) }.max() ?? 0)
        XCTAssertGreaterThan(scale, 0, "\(what): all zero, so the comparison proves nothing", file: file, line: line)
        for i in expected.indices where !(abs(Double(actual[i]) - Double(expected[i])) <= tolerance * scale) {
            XCTFail("\(what): element \(i) is \(actual[i]), im2col gives \(expected[i]) (largest \(scale))", file: file, line: line)
            return
        }
    }

    func testWinogradEqualsIm2colOnRandomDataForSeveralShapes() throws {
        let cases = [
            // ResNet-20's 16-channel stage at a batch of five: several cache blocks.
            WinogradCase(channels: 16, filters: 16, height: 32, width: 32, padding: 1, batch: 5),
            // The Fashion-MNIST model's second convolution.
            WinogradCase(channels: 32, filters: 64, height: 14, width: 14, padding: 1, batch: 3),
            // Channels that are not multiples of 8, odd planes, VALID.
            WinogradCase(channels: 12, filters: 20, height: 9, width: 11, padding: 1, batch: 4),
            WinogradCase(channels: 10, filters: 7, height: 9, width: 8, padding: 0, batch: 2, bias: false),
            WinogradCase(channels: 64, filters: 64, height: 8, width: 8, padding: 1, batch: 9),
            // Odd rows wide enough for the sixteen-wide (de)interleaving, both paddings.
            WinogradCase(channels: 8, filters: 8, height: 7, width: 35, padding: 1, batch: 2),
            WinogradCase(channels: 9, filters: 10, height: 6, width: 37, padding: 0, batch: 2),
        ]
        for (index, testCase) in cases.enumerated() {
            let seed = UInt64(20 + index)
            let input = TestArrays.normal(count: testCase.batch * testCase.channels * testCase.height * testCase.width, seed: seed)
            var results: [PassResult] = []
            let algorithms = [Conv2D.Algorithm.im2col, .winograd, .winograd4x4]
            for algorithm in algorithms {
                let bound = BoundLayer(try testCase.make(algorithm), seed: seed, fill: .initialisers)
                if testCase.bias { bound.setValues("bias", TestArrays.normal(count: testCase.filters, seed: seed, stream: 3)) }
                results.append(pass(bound, input: input, seed: seed, batch: testCase.batch))
            }
            let im2col = results[0]
            for (algorithm, winograd) in zip(algorithms.dropFirst(), results.dropFirst()) {
                let what = "\(testCase), \(algorithm)"
                assertNear(winograd.output, im2col.output, "\(what): output")
                assertNear(winograd.inputGradient, im2col.inputGradient, "\(what): input gradient")
                assertNear(winograd.weightGradient, im2col.weightGradient, "\(what): weight gradient")
                if testCase.bias {
                    assertNear(winograd.biasGradient, im2col.biasGradient, "\(what): bias gradient")
                }
            }
        }
    }

    func testWinogradWithoutInputGradientReturnsZerosAndTheSameParameterGradients() throws {
        for algorithm in [Conv2D.Algorithm.winograd, .winograd4x4] {
            try checkWithoutInputGradient(algorithm)
        }
    }

    private func checkWithoutInputGradient(_ algorithm: Conv2D.Algorithm) throws {
        let testCase = WinogradCase(channels: 8, filters: 6, height: 9, width: 7, padding: 1, batch: 3)
        let input = TestArrays.normal(count: testCase.batch * testCase.channels * testCase.height * testCase.width, seed: 30)
        let full = BoundLayer(try testCase.make(algorithm), seed: 30, fill: .normal(scale: 0.5))
        let expected = pass(full, input: input, seed: 30, batch: testCase.batch)
        let convolution = try testCase.make(algorithm)
        convolution.computesInputGradient = false
        let partial = BoundLayer(convolution, seed: 30, fill: .normal(scale: 0.5))
        // Twice: the second pass must not see what the first left in the returned buffer.
        for round in 0..<2 {
            let result = pass(partial, input: input, seed: 30, batch: testCase.batch)
            XCTAssertEqual(result.inputGradient, [Float](repeating: 0, count: input.count), "\(algorithm), round \(round)")
            XCTAssertEqual(result.output, expected.output, "\(algorithm), round \(round)")
            XCTAssertEqual(result.weightGradient, expected.weightGradient, "\(algorithm), round \(round)")
            XCTAssertEqual(result.biasGradient, expected.biasGradient, "\(algorithm), round \(round)")
        }
    }

    func testWinogradResultsDoNotDependOnWhatTheLayerComputedBefore() throws {
        for algorithm in [Conv2D.Algorithm.winograd, .winograd4x4] {
            try checkIndependenceFromEarlierPasses(algorithm)
        }
    }

    private func checkIndependenceFromEarlierPasses(_ algorithm: Conv2D.Algorithm) throws {
        // A layer that first ran a larger batch of other data must give, bit for bit, what a
        // fresh layer gives: no scratch (padded borders, partial tiles, block sums) carries over.
        let testCase = WinogradCase(channels: 16, filters: 16, height: 15, width: 15, padding: 1, batch: 3)
        let sample = testCase.channels * testCase.height * testCase.width
        let input = TestArrays.normal(count: testCase.batch * sample, seed: 31)
        let fresh = pass(BoundLayer(try testCase.make(algorithm), seed: 31, fill: .initialisers), input: input, seed: 31, batch: 3)
        let used = BoundLayer(try testCase.make(algorithm), seed: 31, fill: .initialisers)
        _ = pass(used, input: TestArrays.normal(count: 7 * sample, seed: 32, scale: 3), seed: 32, batch: 7)
        let again = pass(used, input: input, seed: 31, batch: 3)
        XCTAssertEqual(again.output, fresh.output, "\(algorithm)")
        XCTAssertEqual(again.inputGradient, fresh.inputGradient, "\(algorithm)")
        XCTAssertEqual(again.weightGradient, fresh.weightGradient, "\(algorithm)")
        XCTAssertEqual(again.biasGradient, fresh.biasGradient, "\(algorithm)")
    }

    // MARK: Choosing the algorithm

    func testEveryAlgorithmCanBeForcedAndSwitchedWithNearlyTheSameResults() throws {
        let testCase = WinogradCase(channels: 6, filters: 5, height: 10, width: 9, padding: 1, batch: 2)
        let convolution = try testCase.make(.im2col)
        let bound = BoundLayer(convolution, seed: 33, fill: .normal(scale: 0.5))
        let input = TestArrays.normal(count: testCase.batch * convolution.inputShape.count, seed: 33)
        var results: [PassResult] = []
        // Back and forth, on one layer: each switch must take effect at the next pass.
        for algorithm in [Conv2D.Algorithm.im2col, .winograd4x4, .winograd, .winograd4x4, .im2col] {
            try convolution.use(algorithm)
            XCTAssertEqual(convolution.algorithm, algorithm)
            results.append(pass(bound, input: input, seed: 33, batch: testCase.batch))
        }
        XCTAssertEqual(results[4].output, results[0].output, "im2col again gives the same bits")
        XCTAssertEqual(results[3].output, results[1].output, "F(4x4, 3x3) again gives the same bits")
        XCTAssertEqual(results[3].weightGradient, results[1].weightGradient, "F(4x4, 3x3) again gives the same bits")
        XCTAssertNotEqual(results[1].output, results[0].output, "F(4x4, 3x3) rounds differently, so it did run")
        XCTAssertNotEqual(results[2].output, results[1].output, "F(2x2, 3x3) rounds differently from F(4x4, 3x3)")
        for index in 1...3 {
            assertNear(results[index].output, results[0].output, "pass \(index): output")
            assertNear(results[index].inputGradient, results[0].inputGradient, "pass \(index): input gradient")
            assertNear(results[index].weightGradient, results[0].weightGradient, "pass \(index): weight gradient")
        }
    }

    /// `defaultAlgorithm` with OpenBLAS's thresholds for a 3x3 layer on `size` x `size` (same padding).
    private func algorithm(
        channels: Int, filters: Int = 32, kernel: Int = 3, stride: Int = 1, dilation: Int = 1, groups: Int = 1, size: Int = 16,
        thresholds: Conv2D.AlgorithmThresholds = .openBLAS
    ) -> Conv2D.Algorithm {
        Conv2D.defaultAlgorithm(
            inputChannels: channels, filters: filters, kernelHeight: kernel, kernelWidth: kernel, stride: stride,
            dilation: dilation, groups: groups, outputHeight: (size - 1) / stride + 1, outputWidth: (size - 1) / stride + 1,
            thresholds: thresholds)
    }

    func testDefaultAlgorithmWithOpenBLASIsWinogradOnlyForPlainThreeByThreeLayersWithEnoughChannelsAndFilters() throws {
        // C K / (C + K) against the balance of 9.
        XCTAssertEqual(Conv2D.AlgorithmThresholds.openBLAS.winograd, 9)
        XCTAssertEqual(algorithm(channels: 32), .winograd)
        XCTAssertEqual(algorithm(channels: 16, filters: 32), .winograd)
        XCTAssertEqual(algorithm(channels: 32, filters: 16), .winograd)
        XCTAssertEqual(algorithm(channels: 12, filters: 48), .winograd)
        XCTAssertEqual(algorithm(channels: 16, filters: 16), .im2col)
        XCTAssertEqual(algorithm(channels: 8, filters: 128), .im2col)
        XCTAssertEqual(algorithm(channels: 3, filters: 16), .im2col)
        XCTAssertEqual(algorithm(channels: 1, filters: 32), .im2col)
        // Winograd covers only 3x3 kernels at stride 1, dilation 1, without groups.
        XCTAssertEqual(algorithm(channels: 64, stride: 2), .im2col)
        XCTAssertEqual(algorithm(channels: 64, dilation: 2), .im2col)
        XCTAssertEqual(algorithm(channels: 64, groups: 2), .im2col)
        XCTAssertEqual(algorithm(channels: 64, kernel: 5), .im2col)
        // F(4x4, 3x3) from a balance of 40 with whole 4x4 tiles (16x16 outputs here), 96 with partial ones.
        XCTAssertEqual(algorithm(channels: 64, filters: 64), .winograd)
        XCTAssertEqual(algorithm(channels: 64, filters: 128), .winograd4x4)
        XCTAssertEqual(algorithm(channels: 80, filters: 80), .winograd4x4)
        XCTAssertEqual(algorithm(channels: 128, filters: 128, stride: 2), .im2col)
        // AlexNet's 13x13 layers: partial tiles, quotients 64 and 128.
        XCTAssertEqual(algorithm(channels: 128, filters: 128, size: 13), .winograd)
        XCTAssertEqual(algorithm(channels: 192, filters: 384, size: 13), .winograd4x4)
        XCTAssertEqual(algorithm(channels: 256, filters: 256, size: 13), .winograd4x4)
        // Without the output size the rule assumes partial tiles.
        XCTAssertEqual(
            Conv2D.defaultAlgorithm(
                inputChannels: 64, filters: 128, kernelHeight: 3, kernelWidth: 3, stride: 1, dilation: 1, groups: 1,
                thresholds: .openBLAS),
            .winograd)
        XCTAssertEqual(
            Conv2D.defaultAlgorithm(
                inputChannels: 64, filters: 128, kernelHeight: 3, kernelWidth: 3, stride: 1, dilation: 1, groups: 1,
                outputHeight: 8, outputWidth: 12, thresholds: .openBLAS),
            .winograd4x4)
    }

    func testDefaultAlgorithmWithOneDNNNeedsMoreChannelsForWinograd() {
        let oneDNN = Conv2D.AlgorithmThresholds.oneDNN
        // Its GEMM is about twice as fast, so the transforms weigh more: Winograd from 20, not 9.
        XCTAssertEqual(algorithm(channels: 32, filters: 32, thresholds: oneDNN), .im2col)
        XCTAssertEqual(algorithm(channels: 16, filters: 64, thresholds: oneDNN), .im2col)
        XCTAssertEqual(algorithm(channels: 32, filters: 64, size: 14, thresholds: oneDNN), .winograd)
        XCTAssertEqual(algorithm(channels: 64, filters: 64, size: 8, thresholds: oneDNN), .winograd)
        XCTAssertEqual(algorithm(channels: 64, filters: 128, thresholds: oneDNN), .winograd4x4)
        // Partial tiles need 128: AlexNet's 13x13 layers, but not 192 and 192 (96).
        XCTAssertEqual(algorithm(channels: 192, filters: 192, size: 13, thresholds: oneDNN), .winograd)
        XCTAssertEqual(algorithm(channels: 256, filters: 384, size: 13, thresholds: oneDNN), .winograd4x4)
        XCTAssertEqual(algorithm(channels: 64, filters: 128, stride: 2, thresholds: oneDNN), .im2col)
    }

    func testNewLayersChooseWithTheThresholdsOfTheLibraryInUse() throws {
        let thresholds = Conv2D.AlgorithmThresholds.measured(for: BLAS.library)
        XCTAssertEqual(Conv2D.AlgorithmThresholds.measured(for: .oneDNN), .oneDNN)
        XCTAssertEqual(Conv2D.AlgorithmThresholds.measured(for: .openBLAS), .openBLAS)
        for (channels, filters) in [(16, 16), (32, 32), (32, 64), (64, 64), (64, 128)] {
            let layer = try Conv2D(
                input: FeatureShape(channels: channels, height: 16, width: 16), filters: filters, kernelHeight: 3,
                kernelWidth: 3, padding: 1)
            XCTAssertEqual(layer.algorithm, algorithm(channels: channels, filters: filters, thresholds: thresholds), "\(channels)->\(filters)")
        }
        // The summary names the layer, not the algorithm.
        XCTAssertEqual(
            try Conv2D(input: FeatureShape(channels: 32, height: 16, width: 16), filters: 32, kernelHeight: 3, kernelWidth: 3, padding: 1)
                .summary,
            "Conv2D(32, 3x3, p1)")
    }

    func testWinogradIsRefusedWithTheReasonForAStrideTwoLayer() throws {
        let convolution = try Conv2D(
            input: FeatureShape(channels: 16, height: 8, width: 8), filters: 16, kernelHeight: 3, kernelWidth: 3, stride: 2,
            padding: 1)
        XCTAssertFalse(convolution.supportsWinograd)
        XCTAssertThrowsError(try convolution.use(.winograd)) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("stride 1") && text.contains(".im2col"), text)
        }
        XCTAssertThrowsError(try convolution.use(.winograd4x4)) { error in
            XCTAssertTrue(String(describing: error).contains(".im2col"), String(describing: error))
        }
        XCTAssertEqual(convolution.algorithm, .im2col)
        let plain = try Conv2D(input: FeatureShape(channels: 16, height: 8, width: 8), filters: 16, kernelHeight: 3, kernelWidth: 3)
        try plain.use(.im2col)
        XCTAssertEqual(plain.algorithm, .im2col)
    }

    // MARK: Large layers: dU a range of filters at a time

    /// Layers whose whole dU [(m + 2)^2, K, C] is past Winograd's 4 MiB budget, so backward
    /// computes it a range of filters at a time, each added into dW at once, in every block; with
    /// the filters a chunk that budget gives.
    /// F(4x4, 3x3): 36 x 700 x 128 floats of dU (12.3 MiB), at most 227 filters a chunk, so four
    /// chunks of 175; 16 tiles a sample, so blocks of four samples and a second block of one.
    /// F(2x2, 3x3): 16 x 700 x 256 floats (10.9 MiB), at most 256 filters a chunk, so chunks of
    /// 234, 234 and 232; one sample a block, so three blocks.
    private let largeCases: [(WinogradCase, Conv2D.Algorithm, chunk: Int)] = [
        (WinogradCase(channels: 128, filters: 700, height: 15, width: 14, padding: 1, batch: 5), .winograd4x4, 175),
        (WinogradCase(channels: 256, filters: 700, height: 6, width: 7, padding: 1, batch: 3, bias: false), .winograd, 234),
    ]

    /// Floats of the whole dU of a large case.
    private func wholeWeightGradientTransform(_ testCase: WinogradCase, _ algorithm: Conv2D.Algorithm) -> Int {
        let side = algorithm == .winograd4x4 ? 6 : 4
        return side * side * testCase.filters * testCase.channels
    }

    func testLargeLayersComputingDUAFilterRangeAtATimeEqualIm2colOverSeveralBlocks() throws {
        for (index, (testCase, algorithm, _)) in largeCases.enumerated() {
            let seed = UInt64(60 + index)
            let input = TestArrays.normal(count: testCase.batch * testCase.channels * testCase.height * testCase.width, seed: seed)
            let reference = BoundLayer(try testCase.make(.im2col), seed: seed, fill: .initialisers)
            let convolution = try testCase.make(algorithm)
            let workspace = LayerWorkspace()
            convolution.bind(workspace: workspace)
            let winograd = BoundLayer(convolution, seed: seed, fill: .initialisers)
            if testCase.bias {
                let bias = TestArrays.normal(count: testCase.filters, seed: seed, stream: 3)
                reference.setValues("bias", bias)
                winograd.setValues("bias", bias)
            }
            let expected = pass(reference, input: input, seed: seed, batch: testCase.batch)
            _ = winograd.forward(input, batch: testCase.batch)
            let afterForward = workspace.capacity
            let actual = pass(winograd, input: input, seed: seed, batch: testCase.batch)
            let what = "\(testCase), \(algorithm)"
            assertNear(actual.output, expected.output, "\(what): output")
            assertNear(actual.inputGradient, expected.inputGradient, "\(what): input gradient")
            assertNear(actual.weightGradient, expected.weightGradient, "\(what): weight gradient")
            if testCase.bias { assertNear(actual.biasGradient, expected.biasGradient, "\(what): bias gradient") }
            // Forward has grown V, M and the transforms' scratch to their size; what backward adds
            // is dU, which must be a chunk of it (about a quarter or a third), not all of it.
            let whole = wholeWeightGradientTransform(testCase, algorithm)
            XCTAssertLessThan(workspace.capacity - afterForward, whole / 2, "\(what): backward held most of dU at once")
        }
    }

    func testLargeLayersComputingDUAFilterRangeAtATimeMatchCentralDifferencesInEveryChunk() throws {
        for (index, (testCase, algorithm, chunk)) in largeCases.enumerated() {
            let seed = UInt64(70 + index)
            let bound = BoundLayer(try testCase.make(algorithm), seed: seed, fill: .initialisers)
            let input = TestArrays.normal(count: testCase.batch * testCase.channels * testCase.height * testCase.width, seed: seed)
            let outputCount = testCase.batch * bound.layer.outputShape.count
            let projection = TestArrays.normal(count: outputCount, seed: seed, stream: 2)
            let analytic = pass(bound, input: input, seed: seed, batch: testCase.batch).weightGradient

            // The loss sum(r * y) is linear in the weights, so central differences are exact but
            // for rounding. The first and last filters and those on both sides of every chunk
            // boundary, at varied channels and taps.
            let filters = testCase.filters, channels = testCase.channels
            let boundaries = stride(from: chunk, to: filters, by: chunk).flatMap { [$0 - 1, $0] }
            let picked = [0, 1] + boundaries + [filters - 2, filters - 1]
            let weights = bound.tensor("weight")
            var analyticPicked: [Double] = [], numerical: [Double] = []
            input.withUnsafeBufferPointer { x in
                func loss() -> Double {
                    let y = bound.layer.forward(x.baseAddress!, batch: testCase.batch, context: PassContext(mode: .training))
                    var sum = 0.0
                    for i in 0..<outputCount { sum += Double(projection[i]) * Double(y[i]) }
                    return sum
                }
                for filter in picked {
                    let element = (filter * channels + (filter * 37) % channels) * 9 + filter % 9
                    let pointer = bound.parameters.pointer + weights.offset + element
                    let original = pointer.pointee
                    let step = 1e-2 * max(1, abs(Double(original)))
                    let plus = Float(Double(original) + step), minus = Float(Double(original) - step)
                    pointer.pointee = plus
                    let above = loss()
                    pointer.pointee = minus
                    let below = loss()
                    pointer.pointee = original
                    numerical.append((above - below) / (Double(plus) - Double(minus)))
                    analyticPicked.append(Double(analytic[element]))
                }
            }
            let comparison = GradientComparison(
                tensor: "weight (filters \(picked))", shape: [picked.count], analytic: analyticPicked, numerical: numerical,
                options: GradientCheckOptions(relativeTolerance: 1e-3, elementTolerance: 1e-2))
            XCTAssertTrue(comparison.passed, "\(testCase), \(algorithm): \(comparison)")
        }
    }

    func testOneMicroBatchThroughALargeLayerGivesTheSameBitsTwiceAndOnAFreshLayer() throws {
        for (index, (testCase, algorithm, _)) in largeCases.enumerated() {
            let seed = UInt64(80 + index)
            let input = TestArrays.normal(count: testCase.batch * testCase.channels * testCase.height * testCase.width, seed: seed)
            let bound = BoundLayer(try testCase.make(algorithm), seed: seed, fill: .initialisers)
            let fresh = BoundLayer(try testCase.make(algorithm), seed: seed, fill: .initialisers)
            let results = [bound, bound, fresh].map { pass($0, input: input, seed: seed, batch: testCase.batch) }
            for (round, result) in results.enumerated().dropFirst() {
                let what = "\(testCase), \(algorithm), pass \(round)"
                XCTAssertEqual(result.output.map(\.bitPattern), results[0].output.map(\.bitPattern), what)
                XCTAssertEqual(result.inputGradient.map(\.bitPattern), results[0].inputGradient.map(\.bitPattern), what)
                XCTAssertEqual(result.weightGradient.map(\.bitPattern), results[0].weightGradient.map(\.bitPattern), what)
                XCTAssertEqual(result.biasGradient.map(\.bitPattern), results[0].biasGradient.map(\.bitPattern), what)
            }
        }
    }
}
