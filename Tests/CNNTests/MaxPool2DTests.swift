import CNN
import TestSupport
import XCTest

final class MaxPool2DTests: XCTestCase {
    private func pool(_ input: [Float], shape: FeatureShape, size: Int, stride: Int? = nil, padding: Int = 0) throws -> (MaxPool2D, [Float]) {
        let layer = try MaxPool2D(input: shape, size: size, stride: stride, padding: padding)
        return (layer, forwardValues(layer, input: input, batch: input.count / shape.count))
    }

    func testTwoByTwoPoolOfFourByFourRangeGivesBottomRightOfEachWindow() throws {
        let (layer, output) = try pool(TestArrays.arange(16), shape: FeatureShape(channels: 1, height: 4, width: 4), size: 2)
        XCTAssertEqual(layer.outputShape, FeatureShape(channels: 1, height: 2, width: 2))
        XCTAssertEqual(output, [5, 7, 13, 15])
    }

    func testOverlappingAlexNetPoolOnFiveByFive() throws {
        // 3x3 windows at stride 2 start at rows/columns 0 and 2 and share row/column 2.
        let (layer, output) = try pool(TestArrays.arange(25), shape: FeatureShape(channels: 1, height: 5, width: 5), size: 3, stride: 2)
        XCTAssertEqual(layer.outputShape, FeatureShape(channels: 1, height: 2, width: 2))
        XCTAssertEqual(output, [12, 14, 22, 24])
    }

    func testPaddedPoolNeverPicksThePadding() throws {
        // With padding 1 the windows cover rows {0,1}, {1,2,3}, {3,4} (same for columns). On an
        // all-negative input a zero-valued padding would win every border window; -inf never does.
        let negative = (0..<25).map { -Float($0) - 1 }
        let (layer, output) = try pool(negative, shape: FeatureShape(channels: 1, height: 5, width: 5), size: 3, stride: 2, padding: 1)
        XCTAssertEqual(layer.outputShape, FeatureShape(channels: 1, height: 3, width: 3))
        XCTAssertEqual(output, [-1, -2, -4, -6, -7, -9, -16, -17, -19])
        let (_, rising) = try pool(TestArrays.arange(25), shape: FeatureShape(channels: 1, height: 5, width: 5), size: 3, stride: 2, padding: 1)
        XCTAssertEqual(rising, [6, 8, 9, 16, 18, 19, 21, 23, 24])
    }

    func testPoolingFloorsAnOddLastRowLikePyTorch() throws {
        let layer = try MaxPool2D(input: FeatureShape(channels: 3, height: 7, width: 5), size: 2)
        XCTAssertEqual(layer.outputShape, FeatureShape(channels: 3, height: 3, width: 2))
    }

    func testPoolForwardMatchesDirectPoolingOnSeveralShapes() throws {
        let cases: [(FeatureShape, Int, Int?, Int)] = [
            (FeatureShape(channels: 2, height: 7, width: 6), 2, nil, 0),
            (FeatureShape(channels: 3, height: 9, width: 9), 3, 2, 1),
            (FeatureShape(channels: 1, height: 8, width: 5), 3, 1, 1),
            (FeatureShape(channels: 2, height: 6, width: 7), 4, 3, 2),
        ]
        for (index, (shape, size, stride, padding)) in cases.enumerated() {
            let input = TestArrays.normal(count: 2 * shape.count, seed: UInt64(index))
            let (layer, output) = try pool(input, shape: shape, size: size, stride: stride, padding: padding)
            XCTAssertEqual(output, referenceMaxPool(layer, input: input, batch: 2), "case \(index): \(layer.summary) on \(shape)")
        }
    }

    func testBackwardRoutesGradientToTheArgmax() throws {
        let layer = try MaxPool2D(input: FeatureShape(channels: 1, height: 4, width: 4), size: 2)
        let (_, inputGradient) = forwardBackwardValues(layer, input: TestArrays.arange(16), outputGradient: [1, 2, 3, 4], batch: 1)
        var expected = [Float](repeating: 0, count: 16)
        expected[5] = 1
        expected[7] = 2
        expected[13] = 3
        expected[15] = 4
        XCTAssertEqual(inputGradient, expected)
    }

    func testBackwardAccumulatesWhereOverlappingWindowsShareTheArgmax() throws {
        // The centre of a 5x5 is in all four 3x3/2 windows; make it the maximum of the image.
        var image = TestArrays.arange(25)
        image[12] = 100
        let layer = try MaxPool2D(input: FeatureShape(channels: 1, height: 5, width: 5), size: 3, stride: 2)
        let (output, inputGradient) = forwardBackwardValues(layer, input: image, outputGradient: [1, 10, 100, 1000], batch: 1)
        XCTAssertEqual(output, [100, 100, 100, 100])
        var expected = [Float](repeating: 0, count: 25)
        expected[12] = 1111
        XCTAssertEqual(inputGradient, expected)
    }

    func testTiesRouteTheGradientToTheFirstMaximumLikePyTorch() throws {
        // PyTorch keeps the first maximum in row-major window order; so must the switches.
        let layer = try MaxPool2D(input: FeatureShape(channels: 1, height: 2, width: 4), size: 2)
        let (output, inputGradient) = forwardBackwardValues(layer, input: [3, 3, 1, 5, 3, 3, 5, 5], outputGradient: [1, 2], batch: 1)
        XCTAssertEqual(output, [3, 5])
        XCTAssertEqual(inputGradient, [1, 0, 0, 2, 0, 0, 0, 0])
    }

    func testBackwardClearsTheGradientOfThePreviousCall() throws {
        let layer = try MaxPool2D(input: FeatureShape(channels: 1, height: 4, width: 4), size: 2)
        _ = forwardBackwardValues(layer, input: TestArrays.arange(16), outputGradient: [1, 1, 1, 1], batch: 1)
        let (_, second) = forwardBackwardValues(layer, input: Array(TestArrays.arange(16).reversed()), outputGradient: [1, 1, 1, 1], batch: 1)
        var expected = [Float](repeating: 0, count: 16)
        for index in [0, 2, 8, 10] { expected[index] = 1 }
        XCTAssertEqual(second, expected)
    }

    func testTwoByTwoBackwardOnRowsOfFourOrMoreWritesEveryInputWithTheBitsOfTheScatter() throws {
        // Rows of four outputs and more take a path that writes each input once (eight or four
        // windows at a time); odd sizes leave a last row or column in no window. Ties, a -0
        // gradient and a NaN gradient included.
        for (index, shape) in [
            FeatureShape(channels: 2, height: 6, width: 16), FeatureShape(channels: 1, height: 7, width: 17),
            FeatureShape(channels: 3, height: 5, width: 23), FeatureShape(channels: 2, height: 4, width: 9),
            FeatureShape(channels: 1, height: 9, width: 14),
        ].enumerated() {
            let layer = try MaxPool2D(input: shape, size: 2)
            let batch = 2
            var input = TestArrays.normal(count: batch * shape.count, seed: UInt64(index), stream: 3)
            input[1] = input[0]
            var gradient = TestArrays.normal(count: batch * layer.outputShape.count, seed: UInt64(index), stream: 4)
            gradient[0] = -0.0
            gradient[3] = .nan
            // Filled with garbage first: the path must write, not add.
            _ = forwardBackwardValues(layer, input: input.map { -$0 }, outputGradient: gradient.map { $0 * 7 }, batch: batch)
            let (_, inputGradient) = forwardBackwardValues(layer, input: input, outputGradient: gradient, batch: batch)

            var expected = [Float](repeating: 0, count: input.count)
            let (height, width) = (shape.height, shape.width)
            let (outHeight, outWidth) = (layer.outputShape.height, layer.outputShape.width)
            for plane in 0..<(batch * shape.channels) {
                for oh in 0..<outHeight {
                    for ow in 0..<outWidth {
                        var best = -Float.infinity, at = 0
                        for tap in 0..<4 {
                            let position = plane * height * width + (2 * oh + tap / 2) * width + 2 * ow + tap % 2
                            if input[position] > best { best = input[position]; at = position }
                        }
                        expected[at] += gradient[(plane * outHeight + oh) * outWidth + ow]
                    }
                }
            }
            XCTAssertEqual(inputGradient.map(\.bitPattern), expected.map(\.bitPattern), "\(shape)")
        }
    }

    func testMaxPoolBackwardMatchesNumericalGradient() throws {
        let shapes: [(FeatureShape, Int, Int?, Int)] = [
            (FeatureShape(channels: 2, height: 4, width: 6), 2, nil, 0),
            (FeatureShape(channels: 2, height: 5, width: 5), 3, 2, 0),
            (FeatureShape(channels: 3, height: 5, width: 7), 3, 2, 1),
        ]
        for (index, (shape, size, stride, padding)) in shapes.enumerated() {
            let layer = try MaxPool2D(input: shape, size: size, stride: stride, padding: padding)
            // Distinct values 0.1 apart: no ties, and the step stays below half the gap.
            let input = TestArrays.distinct(count: 2 * shape.count, seed: UInt64(index))
            let report = checkLayerGradients(
                BoundLayer(layer), input: input, batch: 2, options: GradientCheckOptions(step: 1e-3))
            XCTAssertTrue(report.passed, "\(layer.summary) on \(shape)\n\(report)")
        }
    }

    func testCeilModeKeepsAPartialLastWindowAndItsGradientMatchesNumericalGradient() throws {
        // 2x2 stride 2 on 5x5 (the fast kernels' case but for the extra window) and 3x3 stride 2 on 6x7.
        let cases: [(FeatureShape, Int, Int, FeatureShape)] = [
            (FeatureShape(channels: 2, height: 5, width: 5), 2, 2, FeatureShape(channels: 2, height: 3, width: 3)),
            (FeatureShape(channels: 1, height: 6, width: 7), 3, 2, FeatureShape(channels: 1, height: 3, width: 3)),
        ]
        for (index, (shape, size, stride, expected)) in cases.enumerated() {
            let layer = try MaxPool2D(input: shape, size: size, stride: stride, ceilMode: true)
            XCTAssertEqual(layer.outputShape, expected, layer.summary)
            let input = TestArrays.distinct(count: 2 * shape.count, seed: UInt64(index))
            let report = checkLayerGradients(BoundLayer(layer), input: input, batch: 2, options: GradientCheckOptions(step: 1e-3))
            XCTAssertTrue(report.passed, "\(layer.summary) on \(shape)\n\(report)")
        }
        // A window that would start in the right padding is not added (PyTorch's rule): 3x3
        // stride 3 padding 1 on 5 is (5 - 3 + 2) / 3 + 1 = 2.33, and a third window would start at 6 - 1 = 5.
        XCTAssertEqual(try MaxPool2D(input: FeatureShape(channels: 1, height: 5, width: 5), size: 3, stride: 3, padding: 1, ceilMode: true)
            .outputShape.height, 2)
    }

    func testPaddingLargerThanHalfThePoolIsRejected() {
        XCTAssertThrowsError(try MaxPool2D(input: FeatureShape(channels: 1, height: 8, width: 8), size: 2, padding: 2)) { error in
            XCTAssertTrue(String(describing: error).contains("at most half"), String(describing: error))
        }
    }
}
