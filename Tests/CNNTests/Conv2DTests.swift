import CNN
import TestSupport
import XCTest

/// One convolution configuration under test, printed in every failure message.
private struct ConvolutionCase: CustomStringConvertible {
    var input: FeatureShape
    var filters: Int
    var kernelHeight: Int
    var kernelWidth: Int
    var stride = 1
    var padding = 0
    var dilation = 1
    var groups = 1
    var bias = true
    var batch = 2

    var description: String {
        "input \(batch)x\(input), \(filters) filters \(kernelHeight)x\(kernelWidth), stride \(stride), "
            + "padding \(padding), dilation \(dilation), groups \(groups), bias \(bias)"
    }

    func make() throws -> Conv2D {
        try Conv2D(
            input: input, filters: filters, kernelHeight: kernelHeight, kernelWidth: kernelWidth, stride: stride,
            padding: padding, dilation: dilation, groups: groups, bias: bias)
    }
}

final class Conv2DTests: XCTestCase {
    /// Checks forward against the direct definition and backward against finite differences.
    private func verify(_ testCase: ConvolutionCase, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        let convolution = try testCase.make()
        let bound = BoundLayer(convolution, seed: seed, fill: .normal(scale: 0.5))
        let input = TestArrays.normal(count: testCase.batch * testCase.input.count, seed: seed, stream: 1)

        let output = bound.forward(input, batch: testCase.batch)
        let expected = referenceConvolution(
            convolution, input: input, batch: testCase.batch, weights: bound.values("weight"),
            bias: testCase.bias ? bound.values("bias") : nil)
        XCTAssertEqual(output.count, expected.count, "\(testCase)", file: file, line: line)
        for i in expected.indices where abs(Double(output[i]) - expected[i]) > 1e-4 * max(1, abs(expected[i])) {
            XCTFail("\(testCase): output[\(i)] = \(output[i]), direct convolution gives \(expected[i])", file: file, line: line)
            break
        }

        let report = checkLayerGradients(bound, input: input, batch: testCase.batch, projectionSeed: seed)
        XCTAssertTrue(report.passed, "\(testCase)\n\(report)", file: file, line: line)
        XCTAssertEqual(report.comparison("bias") != nil, testCase.bias, "\(testCase): bias gradient presence", file: file, line: line)
    }

    func testConv2DBackwardMatchesNumericalGradientOnOddSizesAndBatchOfThree() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 2, height: 7, width: 5), filters: 3, kernelHeight: 3, kernelWidth: 3, batch: 3), seed: 1)
    }

    func testConv2DBackwardMatchesNumericalGradientWithBatchOfOne() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 3, height: 5, width: 6), filters: 2, kernelHeight: 3, kernelWidth: 3, padding: 1, batch: 1), seed: 2)
    }

    func testConv2DBackwardMatchesNumericalGradientWithStrideTwoAndPaddingOne() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 2, height: 7, width: 5), filters: 3, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1), seed: 3)
    }

    func testConv2DBackwardMatchesNumericalGradientWithStrideThreeAndPaddingTwo() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 2, height: 7, width: 5), filters: 2, kernelHeight: 3, kernelWidth: 3, stride: 3, padding: 2), seed: 4)
    }

    func testConv2DBackwardMatchesNumericalGradientWithDilationTwo() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 2, height: 7, width: 5), filters: 3, kernelHeight: 3, kernelWidth: 3, padding: 2, dilation: 2), seed: 5)
        try verify(ConvolutionCase(input: FeatureShape(channels: 1, height: 7, width: 7), filters: 2, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1, dilation: 2), seed: 6)
    }

    func testConv2DBackwardMatchesNumericalGradientWithTwoGroups() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 4, height: 5, width: 6), filters: 6, kernelHeight: 3, kernelWidth: 3, padding: 1, groups: 2), seed: 7)
    }

    func testConv2DBackwardMatchesNumericalGradientDepthwise() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 3, height: 5, width: 5), filters: 3, kernelHeight: 3, kernelWidth: 3, padding: 1, groups: 3), seed: 8)
        // Depth multiplier 2: two filters per input channel.
        try verify(ConvolutionCase(input: FeatureShape(channels: 3, height: 6, width: 5), filters: 6, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1, groups: 3, batch: 3), seed: 9)
    }

    func testConv2DBackwardMatchesNumericalGradientWithNonSquareKernels() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 2, height: 7, width: 5), filters: 3, kernelHeight: 3, kernelWidth: 1), seed: 10)
        try verify(ConvolutionCase(input: FeatureShape(channels: 2, height: 5, width: 7), filters: 2, kernelHeight: 1, kernelWidth: 3, padding: 1), seed: 11)
        try verify(ConvolutionCase(input: FeatureShape(channels: 1, height: 6, width: 8), filters: 2, kernelHeight: 2, kernelWidth: 4, stride: 2), seed: 12)
    }

    func testConv2DBackwardMatchesNumericalGradientWithoutBias() throws {
        try verify(ConvolutionCase(input: FeatureShape(channels: 2, height: 5, width: 5), filters: 3, kernelHeight: 3, kernelWidth: 3, padding: 1, bias: false), seed: 13)
    }

    func testConv2DWeightGradientMatchesNumericalGradientInBothGEMMOrientations() throws {
        // dW computed as [K, patch] and transposed as [patch, K]: which one a shape gets depends
        // on the library, so these cases cover both with either library.
        let cases = [
            ConvolutionCase(input: FeatureShape(channels: 1, height: 6, width: 5), filters: 4, kernelHeight: 1, kernelWidth: 2, batch: 3),
            ConvolutionCase(input: FeatureShape(channels: 3, height: 5, width: 6), filters: 2, kernelHeight: 3, kernelWidth: 3, padding: 1, batch: 3),
            ConvolutionCase(input: FeatureShape(channels: 1, height: 5, width: 4), filters: 16, kernelHeight: 3, kernelWidth: 3, padding: 1, batch: 2),
        ]
        var orientations: Set<Bool> = []
        for (index, testCase) in cases.enumerated() {
            let patch = testCase.input.channels * testCase.kernelHeight * testCase.kernelWidth
            orientations.insert(Conv2D.transposesWeightGradient(patch: patch, filters: testCase.filters))
            try verify(testCase, seed: 12 + UInt64(index))
        }
        XCTAssertEqual(orientations, [false, true], "with \(BLAS.library)")
    }

    func testWeightGradientOrientationFollowsWhatEachLibraryRunsFaster() {
        // OpenBLAS: transposed whenever the patch is longer than the filters.
        XCTAssertTrue(Conv2D.transposesWeightGradient(patch: 27, filters: 2, library: .openBLAS))
        XCTAssertFalse(Conv2D.transposesWeightGradient(patch: 9, filters: 32, library: .openBLAS))
        // oneDNN: never a result narrower than 16 columns when the other orientation avoids it.
        XCTAssertTrue(Conv2D.transposesWeightGradient(patch: 9, filters: 32, library: .oneDNN))
        XCTAssertFalse(Conv2D.transposesWeightGradient(patch: 25, filters: 6, library: .oneDNN))
        XCTAssertFalse(Conv2D.transposesWeightGradient(patch: 16, filters: 32, library: .oneDNN))
        XCTAssertTrue(Conv2D.transposesWeightGradient(patch: 144, filters: 16, library: .oneDNN))
        XCTAssertTrue(Conv2D.transposesWeightGradient(patch: 5, filters: 3, library: .oneDNN))
    }

    func testConv2DOnWidePlanesMatchesDirectConvolutionAndNumericalGradient() throws {
        // Planes this wide with this many filters fill a cache block per sample, where stride-1
        // layers compute on rows as wide as the padded input (extra columns dropped): odd width,
        // a batch of two, a non-square dilated kernel with bias.
        try verify(ConvolutionCase(
            input: FeatureShape(channels: 1, height: 32, width: 33), filters: 120, kernelHeight: 3, kernelWidth: 3, padding: 1,
            batch: 2), seed: 17)
        try verify(ConvolutionCase(
            input: FeatureShape(channels: 1, height: 32, width: 32), filters: 116, kernelHeight: 3, kernelWidth: 2, padding: 2,
            dilation: 2, batch: 1), seed: 18)
    }

    func testConv2DGradientsOfABatchInSeveralBlocksEqualTheSumOverItsSamples() throws {
        // 16 channels of 32x32 through 3x3 filters unfold to a large matrix per sample: at stride
        // 2 a batch of 7 runs as several cache-sized blocks whose weight gradients are summed
        // across blocks (8 filters: dW transposed; 160: not); at stride 1 on wide rows, one sample
        // at a time.
        let shape = FeatureShape(channels: 16, height: 32, width: 32)
        for (stride, filters) in [(2, 8), (2, 160), (1, 8)] {
            let bound = BoundLayer(
                try Conv2D(input: shape, filters: filters, kernelHeight: 3, kernelWidth: 3, stride: stride, padding: 1),
                seed: 14, fill: .normal(scale: 0.1))
            let outputCount = bound.layer.outputShape.count
            let batch = 7
            let x = TestArrays.normal(count: batch * shape.count, seed: 15)
            let dy = TestArrays.normal(count: batch * outputCount, seed: 16)
            bound.zeroGradients()
            let together = bound.forwardBackward(x, outputGradient: dy, batch: batch)
            let weightGradient = bound.gradientValues("weight"), biasGradient = bound.gradientValues("bias")
            bound.zeroGradients()
            var inputGradient: [Float] = []
            for n in 0..<batch {
                inputGradient += bound.forwardBackward(
                    Array(x[(n * shape.count)..<((n + 1) * shape.count)]),
                    outputGradient: Array(dy[(n * outputCount)..<((n + 1) * outputCount)]), batch: 1).inputGradient
            }
            assertClose(together.inputGradient, inputGradient.map(Double.init), tolerance: 1e-4, "stride \(stride), \(filters) filters: input gradient")
            assertClose(weightGradient, bound.gradientValues("weight").map(Double.init), tolerance: 1e-3, "stride \(stride), \(filters) filters: weight gradient")
            assertClose(biasGradient, bound.gradientValues("bias").map(Double.init), tolerance: 1e-3, "stride \(stride), \(filters) filters: bias gradient")
        }
    }

    func testConv2DMatchesDirectConvolutionAndNumericalGradientOnRandomisedConfigurations() throws {
        var checked = 0
        for seed in UInt64(100)..<UInt64(140) {
            let draw = { (stream: UInt64, range: ClosedRange<Int>) -> Int in
                let u = TestArrays.uniform(count: 1, seed: seed, stream: stream, lower: 0, upper: 1)[0]
                return range.lowerBound + min(Int(u * Float(range.count)), range.count - 1)
            }
            let groups = draw(1, 1...3)
            let testCase = ConvolutionCase(
                input: FeatureShape(channels: groups * draw(2, 1...2), height: draw(3, 3...9), width: draw(4, 3...9)),
                filters: groups * draw(5, 1...2), kernelHeight: draw(6, 1...4), kernelWidth: draw(7, 1...4),
                stride: draw(8, 1...3), padding: draw(9, 0...2), dilation: draw(10, 1...2), groups: groups,
                bias: draw(11, 0...1) == 1, batch: draw(12, 1...3))
            // Configurations the engine rightly refuses (windows that skip input) are not this test's subject.
            guard (try? testCase.make()) != nil else { continue }
            try verify(testCase, seed: seed)
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 15, "too few random configurations were valid to mean anything")
    }

    // MARK: Golden values

    /// Runs a single-channel 5x5 image through one 3x3 kernel, no padding, no bias (stride 1 or 2).
    private func convolve(_ image: [Float], kernel: [Float], stride: Int) throws -> [Float] {
        let convolution = try Conv2D(
            input: FeatureShape(channels: 1, height: 5, width: 5), filters: 1, kernelHeight: 3, kernelWidth: 3,
            stride: stride, bias: false)
        // (5 - 3) / 1 + 1 = 3 and (5 - 3) / 2 + 1 = 2.
        let side = stride == 1 ? 3 : 2
        XCTAssertEqual(convolution.outputShape, FeatureShape(channels: 1, height: side, width: side), "stride \(stride)")
        let bound = BoundLayer(convolution)
        bound.setValues("weight", kernel)
        return bound.forward(image, batch: 1)
    }

    /// A 5x5 image whose pixel (h, w) is `value(h, w)`, row-major.
    private func imageOfFiveByFive(_ value: (Int, Int) -> Int) -> [Float] {
        var image: [Float] = []
        for h in 0..<5 {
            for w in 0..<5 { image.append(Float(value(h, w))) }
        }
        return image
    }

    private let laplacian: [Float] = [0, 1, 0, 1, -4, 1, 0, 1, 0]

    func testLaplacianOfLinearRampIsZeroAtStrideOneAndTwo() throws {
        let ramp = TestArrays.arange(25)  // x[h][w] = 5h + w
        XCTAssertEqual(try convolve(ramp, kernel: laplacian, stride: 1), [Float](repeating: 0, count: 9))
        XCTAssertEqual(try convolve(ramp, kernel: laplacian, stride: 2), [Float](repeating: 0, count: 4))
    }

    func testLaplacianOfSquaresIsConstantFour() throws {
        // x[h][w] = h^2 + w^2: each axis's second difference is 2, so the Laplacian is 4 everywhere.
        let squares = imageOfFiveByFive { h, w in h * h + w * w }
        XCTAssertEqual(try convolve(squares, kernel: laplacian, stride: 1), [Float](repeating: 4, count: 9))
        XCTAssertEqual(try convolve(squares, kernel: laplacian, stride: 2), [Float](repeating: 4, count: 4))
    }

    func testLaplacianOfRowTimesColumnSquaredVariesDownTheRows() throws {
        // x[h][w] = h * w^2: the second difference along w is 2h, along h it is 0, so the output at
        // centre (h, w) is 2h: rows 2, 4, 6 at stride 1; centres (1,1), (1,3), (3,1), (3,3) at stride 2.
        let image = imageOfFiveByFive { h, w in h * w * w }
        XCTAssertEqual(try convolve(image, kernel: laplacian, stride: 1), [2, 2, 2, 4, 4, 4, 6, 6, 6])
        XCTAssertEqual(try convolve(image, kernel: laplacian, stride: 2), [2, 2, 6, 6])
    }

    func testConvolutionIsCrossCorrelationLikePyTorch() throws {
        // A single 1 at the kernel's top-right tap reads x[oh][ow + 2]; a flipped (true) convolution
        // would read x[oh + 2][ow] instead.
        let topRight: [Float] = [0, 0, 1, 0, 0, 0, 0, 0, 0]
        XCTAssertEqual(try convolve(TestArrays.arange(25), kernel: topRight, stride: 1), [2, 3, 4, 7, 8, 9, 12, 13, 14])
    }

    func testBiasIsAddedToEveryOutputOfItsFilter() throws {
        let convolution = try Conv2D(input: FeatureShape(channels: 1, height: 3, width: 3), filters: 2, kernelHeight: 1, kernelWidth: 1)
        let bound = BoundLayer(convolution)
        bound.setValues("weight", [1, -1])
        bound.setValues("bias", [10, 100])
        let output = bound.forward(TestArrays.arange(9), batch: 1)
        XCTAssertEqual(output, (0..<9).map { Float($0) + 10 } + (0..<9).map { 100 - Float($0) })
    }

    func testPaddingPositionsReadAsZero() throws {
        // A 3x3 all-ones kernel with padding 1 on a 3x3 of ones counts each window's real pixels.
        let convolution = try Conv2D(input: FeatureShape(channels: 1, height: 3, width: 3), filters: 1, kernelHeight: 3, kernelWidth: 3, padding: 1, bias: false)
        let bound = BoundLayer(convolution)
        bound.setValues("weight", [Float](repeating: 1, count: 9))
        let output = bound.forward([Float](repeating: 1, count: 9), batch: 1)
        XCTAssertEqual(output, [4, 6, 4, 6, 9, 6, 4, 6, 4])
    }

    func testForwardGivesTheSameSampleOutputsWhenTheBatchShrinksAndGrows() throws {
        let convolution = try Conv2D(input: FeatureShape(channels: 2, height: 6, width: 5), filters: 3, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1)
        let bound = BoundLayer(convolution, seed: 14, fill: .normal(scale: 0.5))
        let sampleSize = convolution.inputShape.count, outputSize = convolution.outputShape.count
        let images = TestArrays.normal(count: 3 * sampleSize, seed: 14)
        let single = bound.forward(Array(images[sampleSize..<(2 * sampleSize)]), batch: 1)
        let three = bound.forward(images, batch: 3)
        let singleAgain = bound.forward(Array(images[sampleSize..<(2 * sampleSize)]), batch: 1)
        XCTAssertEqual(Array(three[outputSize..<(2 * outputSize)]), single)
        XCTAssertEqual(singleAgain, single)
    }

    // MARK: Shapes and errors

    func testForwardFLOPsCountTwoPerMultiplyAddOverEachGroupsChannels() throws {
        // LeNet's first convolution: 6 filters x 28 x 28 outputs x 25 taps x 2.
        let leNet = try Conv2D(input: FeatureShape(channels: 1, height: 32, width: 32), filters: 6, kernelHeight: 5, kernelWidth: 5)
        XCTAssertEqual(leNet.forwardFLOPs, 235_200)
        // Two groups of 4 channels: each of 8 filters sees 4 x 3 x 3 inputs at 8 x 8 positions.
        let grouped = try Conv2D(input: FeatureShape(channels: 8, height: 8, width: 8), filters: 8, kernelHeight: 3, kernelWidth: 3, padding: 1, groups: 2)
        XCTAssertEqual(grouped.forwardFLOPs, 2 * 8 * 64 * 36)
        XCTAssertEqual(try Dense(input: .vector(400), units: 120).forwardFLOPs, 96_000)
    }

    func testWeightShapeIsOIHWWithChannelsPerGroup() throws {
        let convolution = try Conv2D(input: FeatureShape(channels: 4, height: 8, width: 8), filters: 6, kernelHeight: 3, kernelWidth: 1, groups: 2)
        XCTAssertEqual(convolution.parameterSpecs.map(\.name), ["weight", "bias"])
        XCTAssertEqual(convolution.parameterSpecs.map(\.shape), [[6, 2, 3, 1], [6]])
        XCTAssertEqual(convolution.outputShape, FeatureShape(channels: 6, height: 6, width: 8))
    }

    func testGroupsThatDoNotDivideChannelsAreRejectedWithTheNumbers() {
        XCTAssertThrowsError(try Conv2D(input: FeatureShape(channels: 3, height: 5, width: 5), filters: 4, kernelHeight: 3, kernelWidth: 3, groups: 2, name: "model.layers[4]")) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("model.layers[4]") && text.contains("groups = 2") && text.contains("(3)"), text)
        }
    }

    func testKernelLargerThanPaddedInputIsRejected() {
        XCTAssertThrowsError(try Conv2D(input: FeatureShape(channels: 1, height: 4, width: 4), filters: 1, kernelHeight: 7, kernelWidth: 7, padding: 1)) { error in
            let text = String(describing: error)
            XCTAssertTrue(text.contains("does not fit") && text.contains("padding"), text)
        }
    }
}
