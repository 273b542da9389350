import CNN
import Checkpoint
import Foundation
import ModelDescription
import TestSupport
import Training
import XCTest

/// Dense layers run as convolutions: the converted model equals the original at the training size,
/// and on a larger image each cell of its grid equals the original on the corresponding crop.
final class FullyConvolutionalTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    /// 1 x 18 x 18 images; no convolution pads, so crops are exact. Total stride 4: an image 20
    /// pixels larger gives a 6 x 6 grid.
    private let yaml = """
        model:
          input: [1, 18, 18]
          layers:
            - conv: {filters: 4, kernel: 3}
            - relu
            - maxpool: 2
            - conv: {filters: 6, kernel: 3}
            - relu
            - maxpool: 2
            - flatten
            - dense: 16
            - batchnorm
            - relu
            - dropout: 0.5
            - dense: 5
        data:
          dataset: synthetic
        train:
          batch: 8
          micro_batch: 8
          seed: 5
        """

    /// The original model with random weights and non-trivial running statistics, and its tensors.
    private func original() throws -> (TrainingConfig, ModelState, SafeTensorsFile) {
        let config = try TrainingConfig.parse(yaml: yaml, source: "fixture")
        let state = try ModelState(config: config)
        let network = state.network
        for (index, slot) in network.stateSlots.enumerated() where !slot.name.hasSuffix("num_batches_tracked") {
            let values = TestArrays.uniform(count: slot.count, seed: 9, stream: UInt64(index), lower: 0.5, upper: 1.5)
            (network.state.pointer + slot.offset).update(from: values, count: slot.count)
        }
        let bytes = try SafeTensors.encode(state.modelTensors(), metadata: [:])
        let file = try bytes.withUnsafeBytes { try SafeTensors.decode($0, source: "original") }
        return (config, state, file)
    }

    /// The 36 crops of 18 x 18 at multiples of 4 of a 38 x 38 image, row by row.
    private static func crops(of image: [Float]) -> [Float] {
        var crops: [Float] = []
        for i in 0..<6 {
            for j in 0..<6 {
                for y in 0..<18 {
                    let start: Int = (4 * i + y) * 38 + 4 * j
                    crops.append(contentsOf: image[start..<(start + 18)])
                }
            }
        }
        return crops
    }

    private func forward(_ network: Network, _ input: [Float], batch: Int) -> [Float] {
        input.withUnsafeBufferPointer { x in
            Array(UnsafeBufferPointer(start: network.forward(x.baseAddress!, batch: batch, context: .inference), count: batch * network.outputShape.count))
        }
    }

    private func assertClose(_ ours: [Float], _ reference: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(ours.count, reference.count, what, file: file, line: line)
        let largest = reference.map { abs($0) }.max() ?? 0
        let worst = zip(ours, reference).map { abs($0 - $1) }.max() ?? 0
        XCTAssertGreaterThan(largest, 0, what, file: file, line: line)
        XCTAssertLessThanOrEqual(worst, 1e-5 * largest, "\(what): differs by \(worst) (largest \(largest))", file: file, line: line)
    }

    func testConvertedModelEqualsTheOriginalAtTheTrainingSize() throws {
        let (config, state, weights) = try original()
        let (converted, convertedState) = try FullyConvolutionalExport.convert(config: config, weights: weights, source: "original")
        XCTAssertEqual(ModelConfig.render(converted.model.layers[6]), "conv: {filters: 16, kernel: 3, stride: 1, padding: 0, dilation: 1, groups: 1, bias: true}")
        XCTAssertEqual(ModelConfig.render(converted.model.layers[10]), "conv: {filters: 5, kernel: 1, stride: 1, padding: 0, dilation: 1, groups: 1, bias: true}")
        XCTAssertFalse(converted.model.layers.contains(.flatten))
        // The same tensors, renamed past the dropped flatten and reshaped.
        let names = convertedState.network.parameterSlots.map(\.name)
        XCTAssertEqual(names, ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias", "7.weight", "7.bias", "10.weight", "10.bias"])
        XCTAssertEqual(convertedState.network.parameterSlots[4].shape, [16, 6, 3, 3])
        XCTAssertEqual(convertedState.network.parameterCount, state.network.parameterCount)
        XCTAssertEqual(convertedState.network.outputShape, FeatureShape(channels: 5, height: 1, width: 1))

        let input = TestArrays.normal(count: 3 * 18 * 18, seed: 4)
        assertClose(forward(convertedState.network, input, batch: 3), forward(state.network, input, batch: 3), "converted vs original")
        // The resolved config reads back to the same model.
        XCTAssertEqual(try TrainingConfig.parse(yaml: converted.yaml, source: "converted").model, converted.model)
    }

    func testOnAnImageTwentyPixelsLargerEachGridCellEqualsTheOriginalOnItsCrop() throws {
        let (config, state, weights) = try original()
        let conversion = try FullyConvolutionalModel(converting: config.model)
        var large = config
        large.model = conversion.model(height: 38, width: 38)
        let largeState = try ModelState(config: large)
        try FullyConvolutionalExport.copy(weights, into: largeState, conversion: conversion, source: "original")
        let output = largeState.network.outputShape
        XCTAssertEqual(output, FeatureShape(channels: 5, height: 6, width: 6))

        let image = TestArrays.normal(count: 38 * 38, seed: 6)
        let grid = forward(largeState.network, image, batch: 1)
        let crops = Self.crops(of: image)
        let scores = forward(state.network, crops, batch: 36)   // [36, 5]
        var cells: [Float] = []   // the grid [5, 6, 6] read cell by cell
        for p in 0..<36 {
            for k in 0..<5 { cells.append(grid[k * 36 + p]) }
        }
        assertClose(cells, scores, "grid cells vs the original on crops")
    }

    func testTheTextsVGGExampleAt384GivesASixBySixGridWithTheSameParameters() throws {
        let vgg = try ModelZoo.model("vgg16")
        let conversion = try FullyConvolutionalModel(converting: vgg)
        func walk(_ spec: ModelSpec) throws -> (parameters: Int, shapes: [FeatureShape], counts: [Int]) {
            var shape = spec.input, total = 0, shapes: [FeatureShape] = [], counts: [Int] = []
            for (index, layer) in spec.layers.enumerated() {
                let built = try layer.makeLayer(input: shape, name: "model.layers[\(index)]")
                shape = built.outputShape
                total += built.parameterCount
                shapes.append(shape)
                counts.append(built.parameterCount)
            }
            return (total, shapes, counts)
        }
        let original = try walk(vgg), at224 = try walk(conversion.model), at384 = try walk(conversion.model(height: 384, width: 384))
        XCTAssertEqual(original.parameters, 138_357_544)
        XCTAssertEqual(at224.parameters, 138_357_544)
        XCTAssertEqual(at384.parameters, 138_357_544)
        XCTAssertEqual(at224.shapes.last, FeatureShape(channels: 1000, height: 1, width: 1))
        XCTAssertEqual(at384.shapes.last, FeatureShape(channels: 1000, height: 6, width: 6))
        // The dense layer over 7x7x512 becomes a 7x7 convolution with 4096 filters: 7*7*512*4096 + 4096.
        XCTAssertTrue(at384.counts.contains(102_764_544))
        XCTAssertTrue(at384.shapes.contains(FeatureShape(channels: 4096, height: 6, width: 6)))
    }

    func testAModelWithoutDenseLayersOrWithLayersBetweenFlattenAndDenseIsRefused() throws {
        let convolutional = ModelSpec(input: FeatureShape(channels: 1, height: 8, width: 8), layers: [.convolution(ConvolutionSpec(filters: 2, kernel: 3))])
        XCTAssertThrowsError(try FullyConvolutionalModel(converting: convolutional)) { error in
            XCTAssertTrue("\(error)".contains("already fully convolutional"), "\(error)")
        }
        let mixed = ModelSpec(input: FeatureShape(channels: 1, height: 8, width: 8), layers: [
            .convolution(ConvolutionSpec(filters: 2, kernel: 3)), .flatten, .batchNorm(BatchNormSpec()), .dense(units: 3, bias: true),
        ])
        XCTAssertThrowsError(try FullyConvolutionalModel(converting: mixed)) { error in
            XCTAssertTrue("\(error)".contains("only element-wise layers"), "\(error)")
        }
    }

    /// `cnn convert --fully-convolutional` and `cnn predict --input-size` as a user runs them.
    func testConvertAndPredictCommandsPrintTheGridOfTheOriginalOnCrops() throws {
        let (config, state, _) = try original()
        let folder = try LocalCluster.temporaryDirectory("fully-convolutional")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        try config.yaml.write(toFile: folder + "/run/config.yaml", atomically: true, encoding: .utf8, creatingFolder: true)
        let checkpoint = try CheckpointStore(runDirectory: folder + "/run", keep: 1).save(
            step: 3, model: state.modelTensors(), optimizer: [],
            state: CheckpointState(step: 3, epoch: 0, positionInEpoch: 24, configHash: config.hash, createdBy: "test"))

        let refused = try LocalCluster.run("cnn", ["predict", "--checkpoint", checkpoint, "--input-size", "38", "38", "x.pgm"], seconds: 60)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.error.contains("cnn convert --fully-convolutional"), refused.combined)

        let converted = try LocalCluster.run("cnn", ["convert", "--fully-convolutional", checkpoint, "--out", folder + "/fc"], seconds: 60)
        XCTAssertEqual(converted.status, 0, converted.combined)
        let written = try XCTUnwrap(CheckpointStore(runDirectory: folder + "/fc", keep: 1).list().last)
        XCTAssertTrue(converted.output.contains(written), converted.output)

        // A 38 x 38 greyscale image; the synthetic data set's normalisation maps byte b to (b / 255 - 0.5) / 0.25.
        let pixels: [UInt8] = (0..<(38 * 38)).map { (i: Int) -> UInt8 in UInt8((i * 37 + i / 38 * 11) % 256) }
        try Data(Array("P5\n38 38\n255\n".utf8) + pixels).write(to: URL(fileURLWithPath: folder + "/large.pgm"))
        let predicted = try LocalCluster.run(
            "cnn", ["predict", "--checkpoint", written, "--top", "2", "--input-size", "38", "38", folder + "/large.pgm"], seconds: 60)
        XCTAssertEqual(predicted.status, 0, predicted.combined)
        let lines = predicted.output.split(separator: "\n").map(String.init)
        XCTAssertTrue(lines.first?.contains("6x6 grid") == true, predicted.output)
        XCTAssertTrue(predicted.output.contains("averaged over the 36 positions:"), predicted.output)
        let printed = lines.dropFirst().prefix(6).flatMap { $0.split(separator: " ").compactMap { Int($0) } }

        let image: [Float] = pixels.map { (b: UInt8) -> Float in (Float(b) / 255 - 0.5) / 0.25 }
        let crops = Self.crops(of: image)
        let scores = forward(state.network, crops, batch: 36)
        var expected: [Int] = []
        for p in 0..<36 {
            let row = Array(scores[(p * 5)..<(p * 5 + 5)])
            expected.append(row.firstIndex(of: row.max()!)!)
        }
        XCTAssertEqual(printed, expected, predicted.output)
    }
}

private extension String {
    func write(toFile path: String, atomically: Bool, encoding: String.Encoding, creatingFolder: Bool) throws {
        try FileManager.default.createDirectory(
            atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path, withIntermediateDirectories: true)
        try write(toFile: path, atomically: atomically, encoding: encoding)
    }
}
