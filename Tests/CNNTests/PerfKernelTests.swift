import CNN
import TestSupport
import XCTest

/// The fast paths of the convolution, pooling and ReLU kernels: batched im2col over many samples,
/// planes wide enough for the vector loops and their tails, the skipped input gradient, and
/// bit-for-bit repeatability.
final class PerfKernelTests: XCTestCase {
    private func convolution(
        _ input: FeatureShape, filters: Int, kernel: Int, stride: Int = 1, padding: Int = 0, dilation: Int = 1, groups: Int = 1
    ) throws -> Conv2D {
        try Conv2D(input: input, filters: filters, kernelHeight: kernel, kernelWidth: kernel, stride: stride,
                   padding: padding, dilation: dilation, groups: groups)
    }

    func testBatchedConvolutionMatchesDirectConvolutionOnWidePlanes() throws {
        let layers = [
            try convolution(FeatureShape(channels: 3, height: 11, width: 37), filters: 5, kernel: 3, padding: 1),
            try convolution(FeatureShape(channels: 4, height: 9, width: 41), filters: 6, kernel: 3, stride: 2, padding: 2, dilation: 2, groups: 2),
            try convolution(FeatureShape(channels: 2, height: 12, width: 40), filters: 3, kernel: 5),
        ]
        for (index, layer) in layers.enumerated() {
            let batch = 4
            let bound = BoundLayer(layer, seed: UInt64(10 + index), fill: .normal(scale: 0.5))
            let input = TestArrays.normal(count: batch * layer.inputShape.count, seed: UInt64(index), stream: 1)
            let output = bound.forward(input, batch: batch)
            let expected = referenceConvolution(layer, input: input, batch: batch, weights: bound.values("weight"), bias: bound.values("bias"))
            XCTAssertEqual(output.count, expected.count)
            let worst = zip(output, expected).map { abs(Double($0) - $1) / max(1, abs($1)) }.max() ?? 0
            XCTAssertLessThan(worst, 1e-5, "case \(index) \(layer.summary) on \(layer.inputShape): largest relative error \(worst)")
        }
    }

    func testBatchedConvolutionGradientsMatchNumericalGradientsOnWidePlanes() throws {
        let layers = [
            try convolution(FeatureShape(channels: 2, height: 6, width: 21), filters: 3, kernel: 3, padding: 1),
            try convolution(FeatureShape(channels: 4, height: 7, width: 19), filters: 4, kernel: 3, stride: 2, padding: 1, groups: 2),
        ]
        for (index, layer) in layers.enumerated() {
            let bound = BoundLayer(layer, seed: UInt64(20 + index), fill: .normal(scale: 0.5))
            let input = TestArrays.normal(count: 3 * layer.inputShape.count, seed: UInt64(30 + index), stream: 1)
            let report = checkLayerGradients(bound, input: input, batch: 3, projectionSeed: UInt64(index))
            XCTAssertTrue(report.passed, "case \(index) \(layer.summary):\n\(report)")
        }
    }

    func testConvolutionOfABatchEqualsEachSampleComputedAlone() throws {
        let shape = FeatureShape(channels: 3, height: 8, width: 19)
        let batch = 5
        let whole = try convolution(shape, filters: 4, kernel: 3, padding: 1)
        let single = try convolution(shape, filters: 4, kernel: 3, padding: 1)
        let boundWhole = BoundLayer(whole, seed: 3, fill: .normal(scale: 0.5))
        let boundSingle = BoundLayer(single, seed: 3, fill: .normal(scale: 0.5))
        let input = TestArrays.normal(count: batch * shape.count, seed: 4)
        let outputGradient = TestArrays.normal(count: batch * whole.outputShape.count, seed: 5)

        let (output, inputGradient) = boundWhole.forwardBackward(input, outputGradient: outputGradient, batch: batch)
        var perSampleOutput: [Float] = []
        var perSampleInputGradient: [Float] = []
        for n in 0..<batch {
            let x = Array(input[(n * shape.count)..<((n + 1) * shape.count)])
            let size = whole.outputShape.count
            let dy = Array(outputGradient[(n * size)..<((n + 1) * size)])
            let (y, dx) = boundSingle.forwardBackward(x, outputGradient: dy, batch: 1)
            perSampleOutput += y
            perSampleInputGradient += dx
        }
        assertClose(output, perSampleOutput, "output")
        assertClose(inputGradient, perSampleInputGradient, "input gradient")
        // The per-sample runs added into the gradients five times: their sum is the batch's gradient.
        assertClose(boundWhole.gradientValues("weight"), boundSingle.gradientValues("weight"), "weight gradient")
        assertClose(boundWhole.gradientValues("bias"), boundSingle.gradientValues("bias"), "bias gradient")
    }

    func testSkippingTheInputGradientKeepsParameterGradientsAndReturnsZeros() throws {
        let shape = FeatureShape(channels: 2, height: 7, width: 18)
        let full = try convolution(shape, filters: 3, kernel: 3, padding: 1)
        let skipping = try convolution(shape, filters: 3, kernel: 3, padding: 1)
        skipping.computesInputGradient = false
        let boundFull = BoundLayer(full, seed: 6, fill: .normal(scale: 0.5))
        let boundSkipping = BoundLayer(skipping, seed: 6, fill: .normal(scale: 0.5))
        let input = TestArrays.normal(count: 2 * shape.count, seed: 7)
        let outputGradient = TestArrays.normal(count: 2 * full.outputShape.count, seed: 8)

        let (_, fullInputGradient) = boundFull.forwardBackward(input, outputGradient: outputGradient, batch: 2)
        let (_, skippedInputGradient) = boundSkipping.forwardBackward(input, outputGradient: outputGradient, batch: 2)
        XCTAssertTrue(fullInputGradient.contains { $0 != 0 }, "the full layer should compute an input gradient")
        XCTAssertEqual(skippedInputGradient, [Float](repeating: 0, count: input.count))
        XCTAssertEqual(boundSkipping.gradientValues("weight"), boundFull.gradientValues("weight"))
        XCTAssertEqual(boundSkipping.gradientValues("bias"), boundFull.gradientValues("bias"))

        // Turned on for one pass and off again, the buffer it hands back must be cleared again.
        skipping.computesInputGradient = true
        let (_, computed) = boundSkipping.forwardBackward(input, outputGradient: outputGradient, batch: 2)
        XCTAssertEqual(computed, fullInputGradient)
        skipping.computesInputGradient = false
        let (_, skippedAgain) = boundSkipping.forwardBackward(input, outputGradient: outputGradient, batch: 2)
        XCTAssertEqual(skippedAgain, [Float](repeating: 0, count: input.count))
    }

    func testConvolutionIsBitIdenticalAcrossRunsAndInstances() throws {
        let shape = FeatureShape(channels: 3, height: 10, width: 23)
        var results: [([Float], [Float], [Float])] = []
        for _ in 0..<2 {
            let layer = try convolution(shape, filters: 8, kernel: 3, stride: 1, padding: 1)
            let bound = BoundLayer(layer, seed: 9, fill: .normal(scale: 0.5))
            let input = TestArrays.normal(count: 6 * shape.count, seed: 10)
            let outputGradient = TestArrays.normal(count: 6 * layer.outputShape.count, seed: 11)
            for _ in 0..<2 {
                bound.zeroGradients()
                let (output, inputGradient) = bound.forwardBackward(input, outputGradient: outputGradient, batch: 6)
                results.append((output, inputGradient, bound.gradientValues("weight") + bound.gradientValues("bias")))
            }
        }
        for result in results.dropFirst() {
            XCTAssertEqual(result.0, results[0].0, "outputs differ between runs")
            XCTAssertEqual(result.1, results[0].1, "input gradients differ between runs")
            XCTAssertEqual(result.2, results[0].2, "parameter gradients differ between runs")
        }
    }

    func testTwoByTwoPoolPicksTheFirstMaximumAndPropagatesNaNAtEveryRowWidth() throws {
        // Widths 38, 14 and 6 give 19, 7 and 3 outputs per row: vector blocks of eight with an
        // overlapping last block, blocks of four, and the scalar loop. Height 9 floors to 4 rows,
        // leaving the last input row unseen.
        for width in [38, 14, 6] {
            let shape = FeatureShape(channels: 3, height: 9, width: width)
            let batch = 2
            let layer = try MaxPool2D(input: shape, size: 2)
            var input = TestArrays.normal(count: batch * shape.count, seed: UInt64(12 + width))
            func at(_ plane: Int, _ h: Int, _ w: Int) -> Int { (plane * shape.height + h) * width + w }
            // Ties: a whole window of equal values at each end of a row, and a tie between the
            // second and fourth taps.
            for (h, w) in [(0, 0), (0, 1), (1, 0), (1, 1), (2, width - 2), (2, width - 1), (3, width - 2), (3, width - 1)] {
                input[at(0, h, w)] = 2.5
            }
            input[at(1, 4, 1)] = 3
            input[at(1, 5, 1)] = 3
            // NaN: first tap of one window, last tap of another, one at the row's end, and a NaN
            // after a larger value.
            input[at(2, 0, 2)] = .nan
            input[at(2, 3, width - 3)] = .nan
            input[at(3, 6, width - 1)] = .nan
            input[at(4, 2, 4)] = 9
            input[at(4, 3, 5)] = .nan

            let outShape = layer.outputShape
            XCTAssertEqual(outShape, FeatureShape(channels: 3, height: 4, width: width / 2))
            var expected = [Float](repeating: 0, count: batch * outShape.count)
            var expectedGradient = [Float](repeating: 0, count: input.count)
            let outputGradient = (0..<expected.count).map { Float($0 % 97) + 1 }
            for plane in 0..<(batch * shape.channels) {
                for oh in 0..<outShape.height {
                    for ow in 0..<outShape.width {
                        var best = -Float.infinity
                        var bestIndex = at(plane, 2 * oh, 2 * ow)
                        for (dh, dw) in [(0, 0), (0, 1), (1, 0), (1, 1)] where !best.isNaN {
                            let index = at(plane, 2 * oh + dh, 2 * ow + dw)
                            if input[index] > best || input[index].isNaN {
                                best = input[index]
                                bestIndex = index
                            }
                        }
                        let o = (plane * outShape.height + oh) * outShape.width + ow
                        expected[o] = best
                        expectedGradient[bestIndex] += outputGradient[o]
                    }
                }
            }
            let (output, inputGradient) = forwardBackwardValues(layer, input: input, outputGradient: outputGradient, batch: batch)
            XCTAssertEqual(output.count, expected.count)
            for i in expected.indices where !(output[i] == expected[i] || (output[i].isNaN && expected[i].isNaN)) {
                XCTFail("width \(width): output[\(i)] = \(output[i]), expected \(expected[i])")
                break
            }
            XCTAssertEqual(output.filter(\.isNaN).count, 4, "width \(width)")
            XCTAssertEqual(inputGradient, expectedGradient, "width \(width)")
        }
    }

    func testReLUOnALengthThatIsNoMultipleOfTheVectorWidth() {
        let shape = FeatureShape(channels: 3, height: 1, width: 37)
        let layer = ReLU(input: shape)
        var input = TestArrays.normal(count: shape.count, seed: 13)
        let specials: [Float] = [0, -0.0, .nan, .infinity, -.infinity, .leastNonzeroMagnitude, -.leastNonzeroMagnitude]
        for (offset, value) in specials.enumerated() {
            input[3 + offset] = value        // inside the first vector block
            input[100 + offset % 11] = value  // in the tail after the last full block
        }
        let outputGradient = (0..<shape.count).map { Float($0) + 0.5 }
        let (output, inputGradient) = forwardBackwardValues(layer, input: input, outputGradient: outputGradient, batch: 1)
        for i in input.indices {
            let x = input[i]
            XCTAssertEqual(output[i].bitPattern, (x > 0 ? x : 0).bitPattern, "forward at \(i) of \(x)")
            XCTAssertEqual(inputGradient[i], x > 0 ? outputGradient[i] : 0, "backward at \(i) of \(x)")
        }
    }

    private func assertClose(_ actual: [Float], _ expected: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, what, file: file, line: line)
        for i in actual.indices where abs(actual[i] - expected[i]) > 1e-4 * max(1, abs(expected[i])) {
            XCTFail("\(what)[\(i)] = \(actual[i]), expected \(expected[i])", file: file, line: line)
            return
        }
    }
}
