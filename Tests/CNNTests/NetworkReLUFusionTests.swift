import CNN
import TestSupport
import XCTest

/// A network runs ReLU followed by max pooling as one pass, and a ReLU after a convolution or
/// dense layer in place; these tests hold both to the bits of the layers run one after the
/// other, as the layer list says, each with its own tensors.
final class NetworkReLUFusionTests: XCTestCase {
    private func convolution(_ filters: Int, padding: Int = 1) -> LayerSpec {
        .convolution(ConvolutionSpec(filters: filters, kernel: 3, padding: .explicit(padding)))
    }

    /// The network's logits and parameter gradients, and the same computed layer by layer.
    private func compare(_ spec: ModelSpec, batch: Int, input: [Float], file: StaticString = #filePath, line: UInt = #line) throws {
        let network = try Network(spec)
        network.initialise(seed: 3)
        let outputs = network.outputShape.count
        let outputGradient = TestArrays.normal(count: batch * outputs, seed: 9, stream: 2)

        let fused = input.withUnsafeBufferPointer { images in
            Array(UnsafeBufferPointer(start: network.forward(images.baseAddress!, batch: batch, context: PassContext(mode: .training)),
                                      count: batch * outputs))
        }
        network.zeroGradients()
        outputGradient.withUnsafeBufferPointer { network.backward($0.baseAddress!, batch: batch) }
        let fusedGradients = Array(UnsafeBufferPointer(start: network.boundGradients, count: network.parameterCount))

        let (activation, layeredGradients) = layerByLayer(
            network, input: input, outputGradient: outputGradient, batch: batch, context: PassContext(mode: .training))

        XCTAssertEqual(fused.map(\.bitPattern), activation.map(\.bitPattern), "logits", file: file, line: line)
        XCTAssertEqual(fusedGradients.map(\.bitPattern), layeredGradients.map(\.bitPattern), "parameter gradients", file: file, line: line)
        XCTAssertTrue(fusedGradients.contains { $0 != 0 }, "the check needs gradients that are not all zero", file: file, line: line)
    }

    func testReLUThenMaxPoolingGivesTheBitsOfTheTwoLayersInTurn() throws {
        // 2x2 pooling on odd and even widths (the vector paths of eight and four windows, the
        // scalar path), and overlapping 3x3 stride-2 pooling with padding (the general loop).
        let spec = ModelSpec(
            input: FeatureShape(channels: 2, height: 19, width: 18),
            layers: [
                convolution(4), .relu, .maxPool(size: 2, stride: nil, padding: 0),
                convolution(3), .relu, .maxPool(size: 3, stride: 2, padding: 1),
                convolution(3), .relu, .maxPool(size: 2, stride: nil, padding: 0),
                .flatten, .dense(units: 5, bias: true),
            ])
        let batch = 3
        try compare(spec, batch: batch, input: TestArrays.normal(count: batch * spec.input.count, seed: 4, stream: 1))
    }

    func testReLUInPlaceAfterConvolutionAndDenseLayersGivesTheBitsOfTheLayersInTurn() throws {
        // In place after the convolutions and the first dense layer; not after the residual block
        // or Flatten, whose outputs are not tensors of their own.
        let spec = ModelSpec(
            input: FeatureShape(channels: 3, height: 10, width: 9),
            layers: [
                convolution(24), .relu, .convolution(ConvolutionSpec(filters: 24, kernel: 3, padding: .explicit(1))), .relu,
                .basicBlock(filters: 8, stride: 2, projection: .auto), .relu,
                .flatten, .relu, .dense(units: 12, bias: true), .relu, .dense(units: 4, bias: true),
            ])
        let batch = 2
        try compare(spec, batch: batch, input: TestArrays.normal(count: batch * spec.input.count, seed: 6, stream: 1))
    }

    func testWindowsOfNoPositiveValueGiveTheBitsOfTheTwoLayersInTurn() throws {
        // Inputs that make many windows all-negative (ties of ReLU's zeros, whose gradient ReLU
        // stops); the 1x1 convolution's gradient sees what reaches the pool's input.
        let spec = ModelSpec(
            input: FeatureShape(channels: 1, height: 8, width: 8),
            layers: [convolution1x1, .relu, .maxPool(size: 2, stride: nil, padding: 0), .flatten, .dense(units: 3, bias: true)])
        let batch = 2
        let input = TestArrays.normal(count: batch * 64, seed: 5, stream: 1).map { $0 - 0.8 }
        try compare(spec, batch: batch, input: input)
    }

    func testANaNBecomesZeroBeforeThePoolSeesIt() throws {
        let spec = ModelSpec(
            input: FeatureShape(channels: 1, height: 4, width: 4),
            layers: [.relu, .maxPool(size: 2, stride: nil, padding: 0), .flatten])
        let network = try Network(spec)
        var input = [Float](repeating: -1, count: 16)
        input[0] = .nan
        input[1] = 0.5
        input[10] = .nan
        let output = input.withUnsafeBufferPointer {
            Array(UnsafeBufferPointer(start: network.forward($0.baseAddress!, batch: 1, context: PassContext(mode: .training)), count: 4))
        }
        // ReLU then pooling: the first window's NaN is 0, beaten by 0.5; the last window is all zeros.
        XCTAssertEqual(output, [0.5, 0, 0, 0])
    }

    private var convolution1x1: LayerSpec { .convolution(ConvolutionSpec(filters: 2, kernel: 1)) }
}
