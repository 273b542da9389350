import CNN
import TestSupport
import XCTest

/// Finite-difference checks of the 1-D and 3-D layers and the locally connected layer, for every
/// tensor: odd sizes, strides, padding, dilation, groups, batches of one and more.
final class VolumeLayerTests: XCTestCase {
    private func check(_ layer: Layer, batch: Int, seed: UInt64, distinct: Bool = false,
                       file: StaticString = #filePath, line: UInt = #line) {
        let bound = BoundLayer(layer, seed: seed, fill: .normal(scale: 0.5))
        // Max pooling needs inputs far apart, so that no step of the check moves the argmax.
        let input = distinct
            ? TestArrays.distinct(count: batch * layer.inputShape.count, seed: seed, stream: 1)
            : TestArrays.normal(count: batch * layer.inputShape.count, seed: seed, stream: 1)
        let report = checkLayerGradients(bound, input: input, batch: batch, projectionSeed: seed)
        XCTAssertTrue(report.passed, "\(layer.summary) on \(batch)x\(layer.inputShape)\n\(report)", file: file, line: line)
        XCTAssertEqual(report.comparisons.count, 1 + layer.parameterSpecs.count, file: file, line: line)
    }

    private func conv(_ input: FeatureShape, _ filters: Int, kernel: [Int], stride: Int = 1, padding: Int = 0,
                      dilation: Int = 1, groups: Int = 1, bias: Bool = true) throws -> ConvolutionND {
        let rank = kernel.count
        return try ConvolutionND(
            input: input, filters: filters, kernel: kernel, stride: Array(repeating: stride, count: rank),
            padding: Array(repeating: padding, count: rank), dilation: Array(repeating: dilation, count: rank),
            groups: groups, bias: bias)
    }

    private func local(_ input: FeatureShape, _ filters: Int, kernel: [Int], stride: Int = 1, padding: Int = 0,
                       dilation: Int = 1, bias: Bool = true) throws -> LocallyConnected {
        let rank = kernel.count
        return try LocallyConnected(
            input: input, filters: filters, kernel: kernel, stride: Array(repeating: stride, count: rank),
            padding: Array(repeating: padding, count: rank), dilation: Array(repeating: dilation, count: rank), bias: bias)
    }

    func testConv1DBackwardMatchesNumericalGradient() throws {
        let sequence = FeatureShape(channels: 3, length: 11)
        check(try conv(sequence, 4, kernel: [3]), batch: 3, seed: 1)
        check(try conv(sequence, 2, kernel: [5], stride: 2, padding: 2), batch: 1, seed: 2)
        check(try conv(FeatureShape(channels: 2, length: 13), 3, kernel: [3], stride: 3, padding: 1, dilation: 2), batch: 2, seed: 3)
        check(try conv(FeatureShape(channels: 4, length: 9), 6, kernel: [3], padding: 1, groups: 2, bias: false), batch: 2, seed: 4)
        check(try conv(FeatureShape(channels: 3, length: 7), 3, kernel: [3], padding: 1, groups: 3), batch: 1, seed: 5)
    }

    func testConv3DBackwardMatchesNumericalGradient() throws {
        let volume = FeatureShape(channels: 2, depth: 5, height: 4, width: 3)
        check(try conv(volume, 3, kernel: [3, 3, 3], padding: 1), batch: 2, seed: 6)
        check(try conv(volume, 2, kernel: [3, 2, 1]), batch: 1, seed: 7)
        check(try conv(FeatureShape(channels: 1, depth: 7, height: 5, width: 5), 2, kernel: [3, 3, 3], stride: 2, padding: 1, dilation: 2), batch: 2, seed: 8)
        check(try conv(FeatureShape(channels: 4, depth: 3, height: 3, width: 5), 2, kernel: [1, 3, 3], padding: 1, groups: 2, bias: false), batch: 3, seed: 9)
    }

    func testPools1DAnd3DBackwardMatchNumericalGradient() throws {
        for kind in [PoolingND.Kind.max, .average] {
            let isMax = kind == .max
            check(try PoolingND(input: FeatureShape(channels: 2, length: 9), kind: kind, size: 3, stride: 2), batch: 3, seed: 10, distinct: isMax)
            check(try PoolingND(input: FeatureShape(channels: 3, length: 8), kind: kind, size: 2), batch: 1, seed: 11, distinct: isMax)
            check(try PoolingND(input: FeatureShape(channels: 1, length: 7), kind: kind, size: 3, stride: 1, padding: 1), batch: 2, seed: 12, distinct: isMax)
            check(try PoolingND(input: FeatureShape(channels: 2, depth: 5, height: 4, width: 5), kind: kind, size: 2), batch: 2, seed: 13, distinct: isMax)
            check(try PoolingND(input: FeatureShape(channels: 1, depth: 5, height: 5, width: 3), kind: kind, size: 3, stride: 2, padding: 1), batch: 1, seed: 14, distinct: isMax)
        }
    }

    func testLocallyConnectedBackwardMatchesNumericalGradient() throws {
        check(try local(FeatureShape(channels: 2, length: 9), 3, kernel: [3]), batch: 3, seed: 15)
        check(try local(FeatureShape(channels: 2, length: 10), 2, kernel: [4], stride: 2, padding: 1, dilation: 2), batch: 1, seed: 16)
        check(try local(FeatureShape(channels: 2, height: 5, width: 4), 3, kernel: [3, 2], padding: 1), batch: 2, seed: 17)
        check(try local(FeatureShape(channels: 3, height: 7, width: 5), 2, kernel: [3, 3], stride: 2, bias: false), batch: 1, seed: 18)
        check(try local(FeatureShape(channels: 1, depth: 4, height: 3, width: 5), 2, kernel: [2, 2, 3], stride: 1, padding: 1), batch: 2, seed: 19)
    }

    /// The locally connected layer's output from its definition, computed in Double here:
    /// y[n, k, p] = sum_j weight[p, k, j] * cols[n, j, p] + bias[k, p].
    func testLocallyConnectedForwardMatchesItsDefinitionOnAnImage() throws {
        let shape = FeatureShape(channels: 2, height: 4, width: 5)
        let layer = try local(shape, 3, kernel: [2, 3], stride: 1, padding: 1)
        let bound = BoundLayer(layer, seed: 3, fill: .normal(scale: 1))
        let batch = 2
        let input = TestArrays.normal(count: batch * shape.count, seed: 4)
        let output = bound.forward(input, batch: batch)
        let (weights, bias) = (bound.values("weight"), bound.values("bias"))
        let (oh, ow) = (layer.outputShape.height, layer.outputShape.width)
        XCTAssertEqual([oh, ow], [5, 5])
        for n in 0..<batch {
            for k in 0..<3 {
                for y in 0..<oh {
                    for x in 0..<ow {
                        let p = y * ow + x
                        var sum = Double(bias[k * oh * ow + p])
                        var j = 0
                        for c in 0..<2 {
                            for i in 0..<2 {
                                for t in 0..<3 {
                                    let (h, w) = (y + i - 1, x + t - 1)
                                    if h >= 0 && h < 4 && w >= 0 && w < 5 {
                                        sum += Double(weights[(p * 3 + k) * 12 + j]) * Double(input[n * 40 + c * 20 + h * 5 + w])
                                    }
                                    j += 1
                                }
                            }
                        }
                        XCTAssertEqual(Double(output[((n * 3 + k) * oh + y) * ow + x]), sum, accuracy: 1e-5)
                    }
                }
            }
        }
        XCTAssertEqual(layer.parameterSpecs.map(\.shape), [[25, 3, 12], [3, 5, 5]])
    }

    func testConv1DIsTheImageConvolutionOfOneRow() throws {
        // A sequence is an image of one row: conv1d with kernel 3 equals Conv2D with a 1x3 kernel.
        let sequence = FeatureShape(channels: 3, length: 12)
        let oneDimensional = try conv(sequence, 4, kernel: [3], stride: 1, padding: 0)
        let image = try Conv2D(input: FeatureShape(channels: 3, height: 1, width: 12), filters: 4, kernelHeight: 1, kernelWidth: 3)
        let a = BoundLayer(oneDimensional, seed: 5, fill: .normal(scale: 1))
        let b = BoundLayer(image, seed: 5, fill: .normal(scale: 1))
        let input = TestArrays.normal(count: 2 * sequence.count, seed: 6)
        let (x, y) = (a.forward(input, batch: 2), b.forward(input, batch: 2))
        XCTAssertEqual(x.count, y.count)
        for i in x.indices { XCTAssertEqual(x[i], y[i], accuracy: 1e-5 * max(1, abs(y[i]))) }
        XCTAssertEqual(oneDimensional.outputShape, FeatureShape(channels: 4, length: 10))
    }

    func testShapeErrorsCiteTheFormulaOfTheAxisAtFault() {
        XCTAssertThrowsError(try conv(FeatureShape(channels: 1, depth: 4, height: 9, width: 9), 2, kernel: [5, 3, 3])) { error in
            XCTAssertTrue("\(error)".contains("depth of 4"), "\(error)")
        }
        XCTAssertThrowsError(try conv(FeatureShape(channels: 1, length: 10), 2, kernel: [3], stride: 2)) { error in
            XCTAssertTrue("\(error)".contains("output length (10 - 3 + 2*0) / 2 + 1 = 4.5"), "\(error)")
        }
        XCTAssertThrowsError(try conv(FeatureShape(channels: 3, length: 10), 2, kernel: [3], groups: 2)) { error in
            XCTAssertTrue("\(error)".contains("groups = 2 must divide"), "\(error)")
        }
        XCTAssertThrowsError(try LayerSpec.convolution(ConvolutionSpec(filters: 2, kernel: 3))
            .makeLayer(input: FeatureShape(channels: 4, length: 20), name: "model.layers[0]")) { error in
            XCTAssertEqual("\(error)", "model.layers[0]: conv takes inputs [C, H, W] (an image), but its input is 4x20, "
                + "of the form [C, L] (a sequence); use conv1d")
        }
        XCTAssertThrowsError(try LayerSpec.volumePool(rank: 3, kind: .max, size: 2, stride: nil, padding: 0)
            .makeLayer(input: FeatureShape(channels: 4, height: 8, width: 8), name: "model.layers[1]")) { error in
            XCTAssertTrue("\(error)".contains("maxpool3d takes inputs [C, D, H, W] (a volume), but its input is 4x8x8"), "\(error)")
            XCTAssertTrue("\(error)".hasSuffix("use maxpool"), "\(error)")
        }
    }
}
