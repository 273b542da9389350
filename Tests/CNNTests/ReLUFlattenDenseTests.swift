import CNN
import TestSupport
import XCTest

final class ReLUTests: XCTestCase {
    func testReLUForwardClampsNegativesToZero() {
        let layer = ReLU(input: .vector(6))
        XCTAssertEqual(forwardValues(layer, input: [-2, -0.5, 0, 0.5, 3, -0], batch: 1), [0, 0, 0, 0.5, 3, 0])
    }

    func testReLUBackwardPassesGradientOnlyWherePositiveAndNotAtZero() {
        let layer = ReLU(input: .vector(5))
        let (_, inputGradient) = forwardBackwardValues(layer, input: [-2, -0.5, 0, 0.5, 3], outputGradient: [1, 2, 3, 4, 5], batch: 1)
        XCTAssertEqual(inputGradient, [0, 0, 0, 4, 5])
    }

    func testReLUBackwardMatchesNumericalGradient() {
        let shape = FeatureShape(channels: 3, height: 4, width: 5)
        let layer = ReLU(input: shape)
        // Distinct values, none within 0.05 of the kink at zero; the step stays below that.
        let input = TestArrays.distinct(count: 2 * shape.count, seed: 21)
        let report = checkLayerGradients(BoundLayer(layer), input: input, batch: 2, options: GradientCheckOptions(step: 1e-3))
        XCTAssertTrue(report.passed, report.description)
    }
}

final class FlattenTests: XCTestCase {
    func testFlattenMovesNoDataAndReportsAVectorShape() {
        let shape = FeatureShape(channels: 2, height: 3, width: 4)
        let layer = Flatten(input: shape)
        XCTAssertEqual(layer.outputShape, FeatureShape(channels: 24, height: 1, width: 1))
        let input = TestArrays.arange(48)
        input.withUnsafeBufferPointer { x in
            let output = layer.forward(x.baseAddress!, batch: 2, context: .inference)
            XCTAssertEqual(UnsafePointer(output), x.baseAddress!, "forward should hand back the input itself")
            let gradient = layer.backward(x.baseAddress!, batch: 2)
            XCTAssertEqual(UnsafePointer(gradient), x.baseAddress!, "backward should hand back the output gradient itself")
        }
    }

    func testFlattenOrderIsChannelMajorLikePyTorch() throws {
        // Conv 1x1 with weights [1, -1] gives channel 0 = x, channel 1 = -x on a 1x2x3 image. The
        // dense layer reads flat index 1*6 + 0*3 + 2 = 8, which in PyTorch's order is channel 1,
        // row 0, column 2: -x[0][2] = -2. (Channel-last order would read channel 0 at row 1, col 1.)
        let network = try Network(ModelSpec(
            input: FeatureShape(channels: 1, height: 2, width: 3),
            layers: [.convolution(ConvolutionSpec(filters: 2, kernel: 1, bias: false)), .flatten, .dense(units: 1, bias: false)]))
        XCTAssertEqual(network.parameterSlots.map(\.name), ["0.weight", "2.weight"])
        let dense = network.parameterSlots[1]
        XCTAssertEqual(dense.shape, [1, 12])
        var values = [Float](repeating: 0, count: network.parameterCount)
        values[0] = 1
        values[1] = -1
        values[dense.offset + 8] = 1
        network.loadParameters(from: values)
        let image = TestArrays.arange(6)
        let output = image.withUnsafeBufferPointer { network.forward($0.baseAddress!, batch: 1, context: .inference)[0] }
        XCTAssertEqual(output, -2)
    }

    func testFlattenBackwardMatchesNumericalGradient() {
        let shape = FeatureShape(channels: 2, height: 3, width: 2)
        let report = checkLayerGradients(BoundLayer(Flatten(input: shape)), input: TestArrays.normal(count: 3 * shape.count, seed: 22), batch: 3)
        XCTAssertTrue(report.passed, report.description)
    }
}

final class DenseTests: XCTestCase {
    func testDenseForwardComputesXWTransposePlusBias() throws {
        let layer = try Dense(input: .vector(3), units: 2)
        XCTAssertEqual(layer.parameterSpecs.map(\.shape), [[2, 3], [2]])
        let bound = BoundLayer(layer)
        bound.setValues("weight", [1, 2, 3, 4, 5, 6])  // rows are output units: [out, in]
        bound.setValues("bias", [0.5, -1])
        let output = bound.forward([1, 0, -1, 2, 1, 0], batch: 2)
        XCTAssertEqual(output, [-1.5, -3, 4.5, 12])
    }

    func testDenseWithoutBiasHasOnlyAWeight() throws {
        let layer = try Dense(input: FeatureShape(channels: 1, height: 2, width: 1), units: 2, bias: false)
        XCTAssertEqual(layer.parameterSpecs.map(\.name), ["weight"])
        let bound = BoundLayer(layer)
        bound.setValues("weight", [1, 1, 2, -1])
        XCTAssertEqual(bound.forward([3, 4], batch: 1), [7, 2])
    }

    func testDenseBackwardMatchesNumericalGradient() throws {
        let shape = FeatureShape(channels: 2, height: 3, width: 2)
        let layer = try Dense(input: shape, units: 5)
        let report = checkLayerGradients(
            BoundLayer(layer, seed: 23, fill: .normal(scale: 0.5)), input: TestArrays.normal(count: 3 * shape.count, seed: 23), batch: 3)
        XCTAssertTrue(report.passed, report.description)
        XCTAssertEqual(report.comparisons.map(\.tensor), ["input", "weight", "bias"])
    }

    func testDenseWithoutBiasBackwardMatchesNumericalGradient() throws {
        let layer = try Dense(input: .vector(7), units: 4, bias: false)
        let report = checkLayerGradients(
            BoundLayer(layer, seed: 24, fill: .normal(scale: 0.5)), input: TestArrays.normal(count: 7, seed: 24), batch: 1)
        XCTAssertTrue(report.passed, report.description)
    }

    func testDenseRejectsZeroUnits() {
        XCTAssertThrowsError(try Dense(input: .vector(3), units: 0, name: "model.layers[2]")) { error in
            XCTAssertTrue(String(describing: error).contains("model.layers[2]"), String(describing: error))
        }
    }
}
