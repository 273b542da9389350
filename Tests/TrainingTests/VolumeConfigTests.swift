import CNN
import Foundation
import ModelDescription
import TestSupport
import Training
import XCTest

/// The 1-D, 3-D and locally connected layers as configs and arrow notation write them, and as
/// `cnn summary` shows them, with the parameter counts of the texts' examples.
final class VolumeConfigTests: XCTestCase {
    func testSequenceAndVolumeLayersSurviveRenderingAndParsing() throws {
        let sequence = ModelSpec(input: FeatureShape(channels: 4, length: 30), layers: [
            .volumeConvolution(VolumeConvolutionSpec(rank: 1, filters: 6, kernel: [5], padding: .same, dilation: 2, groups: 2, bias: false)),
            .volumePool(rank: 1, kind: .max, size: 3, stride: 2, padding: 1),
            .locallyConnected(LocallyConnectedSpec(filters: 3, kernel: [3], stride: 2, padding: .explicit(1))),
            .volumePool(rank: 1, kind: .average, size: 2, stride: nil, padding: 0),
            .batchNorm(BatchNormSpec()),
            .flatten, .dense(units: 2, bias: true),
        ])
        let volume = ModelSpec(input: FeatureShape(channels: 2, depth: 8, height: 8, width: 8), layers: [
            .volumeConvolution(VolumeConvolutionSpec(rank: 3, filters: 4, kernel: [1, 3, 3], stride: 1, padding: .valid)),
            .volumeConvolution(VolumeConvolutionSpec(rank: 3, filters: 4, kernel: [3], stride: 2, padding: .explicit(1))),
            .volumePool(rank: 3, kind: .average, size: 2, stride: 1, padding: 1),
            .locallyConnected(LocallyConnectedSpec(filters: 2, kernel: [2, 2, 3], dilation: 1, bias: true)),
            .globalAveragePool, .dense(units: 3, bias: true),
        ])
        for spec in [sequence, volume] {
            let network = try Network(spec)
            XCTAssertEqual(network.outputShape.count, spec.layers.last.map { if case .dense(let units, _) = $0 { return units } else { return 0 } })
            let yaml = TrainingConfig(model: spec).yaml
            XCTAssertEqual(try TrainingConfig.parse(yaml: yaml, source: "resolved.yaml").model, spec, yaml)
        }
        XCTAssertTrue(TrainingConfig(model: volume).yaml.contains("input: [2, 8, 8, 8]"))
        XCTAssertTrue(TrainingConfig(model: volume).yaml.contains("conv3d: {filters: 4, kernel: [1, 3, 3], stride: 1, padding: valid"))
    }

    func testConfigErrorsNameTheEntryAndTheFix() {
        func parse(_ layers: String, input: String) -> String {
            do {
                _ = try TrainingConfig.parse(yaml: "model:\n  input: \(input)\n  layers:\n\(layers)", source: "test.yaml")
                return "no error"
            } catch { return "\(error)" }
        }
        XCTAssertTrue(parse("    - conv1d: {filters: 4, kernel: [3, 3]}", input: "[2, 10]").contains("kernel must be one size or a list of 1 sizes (one per spatial axis)"))
        XCTAssertTrue(parse("    - maxpool: 2", input: "[2, 10]").contains("maxpool takes inputs [C, H, W] (an image), but its input is 2x10"))
        XCTAssertTrue(parse("    - conv3d: {filters: 4, kernel: 3}", input: "[1, 2, 9, 9]").contains("depth of 2"))
        XCTAssertTrue(parse("    - relu", input: "[1, 2, 3, 4, 5]").contains("[channels, length] for sequences"))
        XCTAssertTrue(parse("    - locally_connected: {filters: 4}", input: "[2, 10]").contains("needs 'kernel'"))
    }

    func testArrowNotationWritesSequenceAndVolumeModels() throws {
        let sentence = try TrainingConfig.parse(
            yaml: "model: \"INPUT(300,50) => CONV1D(100,3) => RELU => POOL1D(48) => FC(2)\"", source: "kim.yaml").model
        XCTAssertEqual(sentence.input, FeatureShape(channels: 300, length: 50))
        XCTAssertEqual(sentence.layers[0], .volumeConvolution(VolumeConvolutionSpec(rank: 1, filters: 100, kernel: [3])))
        XCTAssertEqual(sentence.layers[2], .volumePool(rank: 1, kind: .max, size: 48, stride: nil, padding: 0))
        let scan = try TrainingConfig.parse(
            yaml: "model: \"INPUT(1,16,16,16) => CONV3D(8,3,p=same) => AVGPOOL3D(2) => LC(4,3,s=2,p=1) => FC(2)\"", source: "pet.yaml").model
        XCTAssertEqual(scan.layers.count, 5, "a FLATTEN is inserted before FC")
        XCTAssertEqual(scan.layers[2], .locallyConnected(LocallyConnectedSpec(filters: 4, kernel: [3], stride: 2, padding: .explicit(1))))
    }

    func testSummaryShowsTheTextsExamplesParametersShapesAndFLOPs() throws {
        // A sentence of 50 words as 300-d vectors, 100 filters over 3 words (Kim 2014): 300*3*100 + 100.
        let sentence = try ModelSummary(config: TrainingConfig.parse(
            yaml: "model: \"INPUT(300,50) => CONV1D(100,3) => RELU => POOL1D(48) => FC(2)\"\ntrain: {batch: 8, micro_batch: 8}", source: "kim.yaml"))
        XCTAssertEqual(sentence.layers[0].parameters, 90_100)
        XCTAssertEqual(sentence.layers[0].outputShape, FeatureShape(channels: 100, length: 48))
        XCTAssertEqual(sentence.layers[0].forwardFLOPs, 2 * 100 * 48 * 900)
        XCTAssertEqual(sentence.parameters, 90_100 + 202)
        XCTAssertTrue(sentence.table.contains("100x48"), sentence.table)
        XCTAssertTrue(sentence.json.contains("\"output\" : [\n        100,\n        48\n      ]"), sentence.json)

        // A 64^3 PET volume: 16 filters of 3x3x3 (16 * 27 + 16), then DeepFace's L4: 16 locally
        // connected 9x9 filters on 16 x 63 x 63, one set per output position (55 x 55 x 16 x 9*9*16 + biases).
        let volume = try ModelSummary(config: TrainingConfig.parse(yaml: """
            model:
              input: [1, 64, 64, 64]
              layers: [conv3d: {filters: 16, kernel: 3, padding: same}, relu, maxpool3d: 2, globalavgpool, dense: 2]
            train: {batch: 4, micro_batch: 4}
            """, source: "pet.yaml"))
        XCTAssertEqual(volume.layers[0].parameters, 448)
        XCTAssertEqual(volume.layers[0].outputShape, FeatureShape(channels: 16, depth: 64, height: 64, width: 64))
        XCTAssertEqual(volume.layers[2].outputShape, FeatureShape(channels: 16, depth: 32, height: 32, width: 32))
        XCTAssertEqual(volume.layers[0].forwardFLOPs, 2 * 16 * 64 * 64 * 64 * 27)
        XCTAssertTrue(volume.table.contains("16x32x32x32"), volume.table)
        let face = try ModelSummary(config: TrainingConfig.parse(
            yaml: "model: \"INPUT(16,63,63) => LC(16,9) => RELU => FC(2)\"\ntrain: {batch: 2, micro_batch: 2}", source: "deepface.yaml"))
        XCTAssertEqual(face.layers[0].parameters, 55 * 55 * 16 * 9 * 9 * 16 + 16 * 55 * 55)
        XCTAssertEqual(face.layers[0].parameters, 62_774_800)
        XCTAssertTrue(face.table.contains("62,774,800"), face.table)
    }

    func testSummaryCommandShowsVGGFullyConvolutionalAt384() throws {
        let folder = try LocalCluster.temporaryDirectory("vgg-fc")
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        let config = try LocalCluster.write("model: vgg16\ntrain: {batch: 8, micro_batch: 2}\n", to: "vgg.yaml", in: folder)
        let outcome = try LocalCluster.run("cnn", ["summary", "--fully-convolutional", "--input-size", "384", "384", config], seconds: 60)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.output.contains("1000x6x6"), outcome.output)
        XCTAssertTrue(outcome.output.contains("Conv2D(4096, 7x7)"), outcome.output)
        XCTAssertTrue(outcome.output.contains("102,764,544"), outcome.output)
        XCTAssertTrue(outcome.output.contains("total parameters: 138,357,544"), outcome.output)
    }
}
