import CNN
import TestSupport
import XCTest

final class ConvTranspose2DTests: XCTestCase {
    private func verify(_ layer: ConvTranspose2D, batch: Int, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) {
        let bound = BoundLayer(layer, seed: seed, fill: .normal(scale: 0.5))
        let input = TestArrays.normal(count: batch * layer.inputShape.count, seed: seed, stream: 1)
        let output = bound.forward(input, batch: batch)
        let expected = referenceTransposedConvolution(
            layer, input: input, batch: batch, weights: bound.values("weight"), bias: layer.hasBias ? bound.values("bias") : nil)
        assertClose(output, expected, tolerance: 1e-4, "\(layer.summary) on \(batch)x\(layer.inputShape)", file: file, line: line)
        let report = checkLayerGradients(bound, input: input, batch: batch, projectionSeed: seed)
        XCTAssertTrue(report.passed, "\(layer.summary) on \(batch)x\(layer.inputShape)\n\(report)", file: file, line: line)
    }

    func testStrideTwoKernelFourPaddingOneDoublesTheSize() throws {
        // The usual 2x upsampling: (4 - 1) * 2 - 2 + 4 = 8.
        let layer = try ConvTranspose2D(
            input: FeatureShape(channels: 3, height: 4, width: 5), spec: TransposedConvolutionSpec(filters: 2, kernel: 4, stride: 2, padding: 1))
        XCTAssertEqual(layer.outputShape, FeatureShape(channels: 2, height: 8, width: 10))
        XCTAssertEqual(layer.parameterSpecs.map(\.name), ["weight", "bias"])
        XCTAssertEqual(layer.parameterSpecs[0].shape, [3, 2, 4, 4], "PyTorch's [C_in, C_out / groups, kh, kw]")
        verify(layer, batch: 2, seed: 1)
    }

    func testSingleInputSpreadsTheKernelOverTheOutput() throws {
        // One input value of 2 through a 2x2 kernel at stride 1: the output is 2 * kernel.
        let layer = try ConvTranspose2D(
            input: FeatureShape(channels: 1, height: 1, width: 1), spec: TransposedConvolutionSpec(filters: 1, kernel: 2, bias: false))
        let bound = BoundLayer(layer)
        bound.setValues("weight", [1, 2, 3, 4])
        XCTAssertEqual(bound.forward([2], batch: 1), [2, 4, 6, 8])
    }

    func testOverlappingWindowsAdd() throws {
        // Inputs [1, 10] through kernel [1, 1, 1] at stride 2 along a row: positions 0..4 get 1, 1, 11, 10, 10.
        var spec = TransposedConvolutionSpec(filters: 1, kernel: 3, stride: 2, bias: false)
        spec.kernelHeight = 1
        let layer = try ConvTranspose2D(input: FeatureShape(channels: 1, height: 1, width: 2), spec: spec)
        XCTAssertEqual(layer.outputShape, FeatureShape(channels: 1, height: 1, width: 5))
        let bound = BoundLayer(layer)
        bound.setValues("weight", [1, 1, 1])
        XCTAssertEqual(bound.forward([1, 10], batch: 1), [1, 1, 11, 10, 10])
    }

    func testMatchesDirectDefinitionAndNumericalGradientOnRandomisedConfigurations() throws {
        var checked = 0
        for seed in UInt64(300)..<UInt64(330) {
            let draw = { (stream: UInt64, range: ClosedRange<Int>) in TestArrays.integer(in: range, seed: seed, stream: stream) }
            let groups = draw(1, 1...2)
            var spec = TransposedConvolutionSpec(
                filters: groups * draw(2, 1...2), kernel: draw(3, 1...4), stride: draw(4, 1...3), padding: draw(5, 0...2),
                dilation: draw(6, 1...2), groups: groups, bias: draw(7, 0...1) == 1)
            spec.kernelWidth = draw(8, 1...4)
            spec.outputPadding = draw(9, 0...(max(spec.stride, spec.dilation) - 1))
            let input = FeatureShape(channels: groups * draw(10, 1...2), height: draw(11, 1...5), width: draw(12, 1...5))
            guard let layer = try? ConvTranspose2D(input: input, spec: spec) else { continue }
            verify(layer, batch: draw(13, 1...3), seed: seed)
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 20)
    }

    /// A transposed convolution is the adjoint of the convolution with the same weights:
    /// <conv(x), y> = <x, convT(y)> for every x and y.
    func testIsTheAdjointOfTheConvolutionWithTheSameWeights() throws {
        let image = FeatureShape(channels: 4, height: 8, width: 6)
        let convolution = try Conv2D(
            input: image, filters: 6, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1, dilation: 1, groups: 2, bias: false)
        XCTAssertEqual(convolution.outputShape, FeatureShape(channels: 6, height: 4, width: 3))
        // (4 - 1) * 2 - 2 + 3 + 1 = 8 and (3 - 1) * 2 - 2 + 3 + 1 = 6: output_padding 1 restores the image size.
        let spec = TransposedConvolutionSpec(filters: 4, kernel: 3, stride: 2, padding: 1, outputPadding: 1, groups: 2, bias: false)
        let upsample = try ConvTranspose2D(input: convolution.outputShape, spec: spec)
        XCTAssertEqual(upsample.outputShape, image)
        let forward = BoundLayer(convolution, seed: 9, fill: .normal(scale: 1))
        let transposed = BoundLayer(upsample)
        XCTAssertEqual(convolution.parameterSpecs[0].shape, upsample.parameterSpecs[0].shape)
        transposed.setValues("weight", forward.values("weight"))
        let x = TestArrays.normal(count: image.count, seed: 10)
        let y = TestArrays.normal(count: convolution.outputShape.count, seed: 11)
        let convX = forward.forward(x, batch: 1)
        let transposedY = transposed.forward(y, batch: 1)
        let left = zip(convX, y).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let right = zip(x, transposedY).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertEqual(left, right, accuracy: 1e-4 * max(1, abs(left)))
    }

    func testRejectsOutputPaddingNotBelowStrideOrDilation() {
        XCTAssertThrowsError(try ConvTranspose2D(
            input: FeatureShape(channels: 1, height: 4, width: 4),
            spec: TransposedConvolutionSpec(filters: 1, kernel: 3, stride: 2, outputPadding: 2), name: "model.layers[5]")) {
            XCTAssertTrue("\($0)".contains("model.layers[5]") && "\($0)".contains("output_padding"), "\($0)")
        }
    }

    // MARK: Separable convolution

    func testSeparableConvolutionIsDepthwiseThenPointwise() throws {
        let input = FeatureShape(channels: 3, height: 7, width: 6)
        let spec = SeparableConvolutionSpec(filters: 5, kernel: 3, stride: 2, padding: .same, depthMultiplier: 2)
        let separable = try LayerSpec.separableConvolution(spec).makeLayer(input: input, name: "model.layers[0]")
        XCTAssertEqual(separable.outputShape, FeatureShape(channels: 5, height: 4, width: 3))
        XCTAssertEqual(separable.parameterSpecs.map(\.name), ["depthwise.weight", "pointwise.weight", "pointwise.bias"])
        XCTAssertEqual(separable.parameterSpecs.map(\.shape), [[6, 1, 3, 3], [5, 6, 1, 1], [5]])

        let bound = BoundLayer(separable, seed: 12, fill: .normal(scale: 0.5))
        let depthwise = BoundLayer(try Conv2D(
            input: input, filters: 6, kernelHeight: 3, kernelWidth: 3, stride: 2, padding: 1, groups: 3, bias: false))
        let pointwise = BoundLayer(try Conv2D(input: depthwise.layer.outputShape, filters: 5, kernelHeight: 1, kernelWidth: 1))
        depthwise.setValues("weight", bound.values("depthwise.weight"))
        pointwise.setValues("weight", bound.values("pointwise.weight"))
        pointwise.setValues("bias", bound.values("pointwise.bias"))
        let x = TestArrays.normal(count: 2 * input.count, seed: 13)
        let expected = pointwise.forward(depthwise.forward(x, batch: 2), batch: 2)
        assertClose(bound.forward(x, batch: 2), expected.map(Double.init), tolerance: 1e-5, "separable")
        assertGradientsMatch(separable, batch: 2, seed: 14)
    }
}
