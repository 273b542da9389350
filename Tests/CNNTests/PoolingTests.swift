import CNN
import TestSupport
import XCTest

final class PoolingTests: XCTestCase {
    // MARK: Average pooling

    func testAveragePoolOfArangeTwoByTwo() throws {
        let pool = try AvgPool2D(input: FeatureShape(channels: 1, height: 4, width: 4), size: 2)
        // Windows of 0..15 as a 4x4 grid: (0+1+4+5)/4 = 2.5, then 4.5, 10.5, 12.5.
        XCTAssertEqual(forwardValues(pool, input: TestArrays.arange(16), batch: 1), [2.5, 4.5, 10.5, 12.5])
    }

    func testOverlappingAveragePoolThreeByStrideTwoAsInAlexNet() throws {
        // AlexNet's 55 -> 27 with F = 3, S = 2: (55 - 3) / 2 + 1 = 27.
        let big = try AvgPool2D(input: FeatureShape(channels: 96, height: 55, width: 55), size: 3, stride: 2)
        XCTAssertEqual(big.outputShape, FeatureShape(channels: 96, height: 27, width: 27))
        let pool = try AvgPool2D(input: FeatureShape(channels: 1, height: 5, width: 5), size: 3, stride: 2)
        // Window centres (1,1), (1,3), (3,1), (3,3) of x = 5h + w: the mean is the centre value.
        XCTAssertEqual(forwardValues(pool, input: TestArrays.arange(25), batch: 1), [6, 8, 16, 18])
    }

    func testAveragePoolCountsPaddingInTheDivisorAsPyTorchDoes() throws {
        let pool = try AvgPool2D(input: FeatureShape(channels: 1, height: 2, width: 2), size: 3, stride: 1, padding: 1)
        // Every window holds all four ones and five padded zeros: 4 / 9.
        let out = forwardValues(pool, input: [1, 1, 1, 1], batch: 1)
        assertClose(out, [Double](repeating: 4.0 / 9, count: 4), tolerance: 1e-6, "count_include_pad")
    }

    func testAveragePoolMatchesDirectDefinitionAndNumericalGradientOnRandomisedShapes() throws {
        var checked = 0
        for seed in UInt64(200)..<UInt64(230) {
            let size = TestArrays.integer(in: 1...4, seed: seed, stream: 1)
            let stride = TestArrays.integer(in: 1...3, seed: seed, stream: 2)
            let padding = TestArrays.integer(in: 0...(size / 2), seed: seed, stream: 3)
            let shape = FeatureShape(
                channels: TestArrays.integer(in: 1...3, seed: seed, stream: 4),
                height: TestArrays.integer(in: 3...9, seed: seed, stream: 5), width: TestArrays.integer(in: 3...9, seed: seed, stream: 6))
            let batch = TestArrays.integer(in: 1...3, seed: seed, stream: 7)
            guard let pool = try? AvgPool2D(input: shape, size: size, stride: stride, padding: padding) else { continue }
            let input = TestArrays.normal(count: batch * shape.count, seed: seed)
            assertClose(forwardValues(pool, input: input, batch: batch), referenceAveragePool(pool, input: input, batch: batch),
                        tolerance: 1e-5, "\(pool.summary) on \(batch)x\(shape)")
            assertGradientsMatch(pool, batch: batch, input: input, seed: seed)
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 20)
    }

    func testAveragePoolRejectsPaddingOverHalfTheWindow() {
        XCTAssertThrowsError(try AvgPool2D(input: FeatureShape(channels: 1, height: 6, width: 6), size: 2, padding: 2, name: "model.layers[1]")) {
            XCTAssertTrue("\($0)".contains("model.layers[1]") && "\($0)".contains("padding"), "\($0)")
        }
    }

    // MARK: L2 pooling

    func testL2PoolIsTheNormOfEachWindow() throws {
        let pool = try L2Pool2D(input: FeatureShape(channels: 1, height: 2, width: 4), size: 2)
        // Windows (3, 4, 0, 0) -> 5 and (1, 2, 2, 4) -> 5.
        let out = forwardValues(pool, input: [3, 4, 1, 2, 0, 0, 2, 4], batch: 1)
        assertClose(out, [5, 5], tolerance: 1e-6, "L2 pool")
        let (_, dx) = forwardBackwardValues(pool, input: [3, 4, 1, 2, 0, 0, 2, 4], outputGradient: [10, 5], batch: 1)
        // d/dx = dy * x / norm.
        assertClose(dx, [6, 8, 1, 2, 0, 0, 2, 4], tolerance: 1e-6, "L2 pool gradient")
    }

    func testL2PoolOfAllZeroWindowPassesNoGradient() throws {
        let pool = try L2Pool2D(input: FeatureShape(channels: 1, height: 2, width: 2), size: 2)
        let (out, dx) = forwardBackwardValues(pool, input: [0, 0, 0, 0], outputGradient: [1], batch: 1)
        XCTAssertEqual(out, [0])
        XCTAssertEqual(dx, [0, 0, 0, 0], "the norm has no direction at zero; the gradient must stay finite")
    }

    func testL2PoolBackwardMatchesNumericalGradientWithOverlappingWindows() throws {
        for (shape, size, stride, batch) in [
            (FeatureShape(channels: 2, height: 7, width: 5), 3, 2, 2), (FeatureShape(channels: 1, height: 6, width: 6), 2, 2, 1),
            (FeatureShape(channels: 3, height: 5, width: 7), 2, 1, 3),
        ] {
            let pool = try L2Pool2D(input: shape, size: size, stride: stride)
            assertGradientsMatch(pool, batch: batch, seed: UInt64(size * 10 + stride))
        }
    }

    // MARK: Global average pooling

    func testGlobalAveragePoolAveragesEachChannelToOneValue() {
        let pool = GlobalAvgPool2D(input: FeatureShape(channels: 2, height: 2, width: 3))
        XCTAssertEqual(pool.outputShape, .vector(2))
        // Channel 0 holds 0..5 (mean 2.5), channel 1 holds 6..11 (mean 8.5); second sample +12.
        XCTAssertEqual(forwardValues(pool, input: TestArrays.arange(24), batch: 2), [2.5, 8.5, 14.5, 20.5])
        let (_, dx) = forwardBackwardValues(pool, input: TestArrays.arange(12), outputGradient: [6, 12], batch: 1)
        XCTAssertEqual(dx, [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2])
    }

    func testGlobalAveragePoolBackwardMatchesNumericalGradient() {
        assertGradientsMatch(GlobalAvgPool2D(input: FeatureShape(channels: 3, height: 5, width: 3)), batch: 2, seed: 7)
        assertGradientsMatch(GlobalAvgPool2D(input: FeatureShape(channels: 2, height: 1, width: 1)), batch: 1, seed: 8)
    }
}
