import CNN
import ConfigReading
import Foundation
import ModelDescription
import Training
import XCTest

final class ZooModelTests: XCTestCase {
    private func parameterCount(_ name: String, _ options: ZooOptions = ZooOptions()) throws -> Int {
        try Network(try ModelZoo.model(name, options: options)).parameterCount
    }

    private func configError(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) -> ConfigError? {
        do {
            _ = try TrainingConfig.parse(yaml: yaml, source: "zoo.yaml")
            XCTFail("expected a config error", file: file, line: line)
        } catch let error as ConfigError {
            return error
        } catch {
            XCTFail("expected a ConfigError, got \(error)", file: file, line: line)
        }
        return nil
    }

    static let configsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("configs")

    func testLeNet5Has61706Parameters() throws {
        XCTAssertEqual(try parameterCount("lenet5"), 61_706)
    }

    func testAlexNetInItsSingleTower227FormHas62378344Parameters() throws {
        XCTAssertEqual(try parameterCount("alexnet2012"), 62_378_344)
    }

    func testTorchvisionsAlexNetHas61100840Parameters() throws {
        XCTAssertEqual(try parameterCount("alexnet"), 61_100_840)
    }

    func testVGG16Has138357544Parameters() throws {
        XCTAssertEqual(try parameterCount("vgg16"), 138_357_544)
    }

    func testResNet18And34HaveTorchvisionsCounts() throws {
        XCTAssertEqual(try parameterCount("resnet18"), 11_689_512)
        XCTAssertEqual(try parameterCount("resnet34"), 21_797_672)
    }

    func testResNet50HasTorchvisionsCount() throws {
        XCTAssertEqual(try parameterCount("resnet50"), 25_557_032)
    }

    func testResNet20WithProjectionShortcutsHas272474Parameters() throws {
        XCTAssertEqual(try parameterCount("resnet20"), 272_474)
        // Option A (zero-padded identity) would have 269,722: the two projections add
        // 16*32 + 2*32 and 32*64 + 2*64 parameters.
        XCTAssertEqual(272_474 - (16 * 32 + 2 * 32) - (32 * 64 + 2 * 64), 269_722)
        // ResNet-56: six more blocks (twelve 3x3 convolutions with batch norm) per stage; with
        // option A it would have the 853,018 of the literature.
        var options = ZooOptions()
        options.depth = 56
        XCTAssertEqual(try parameterCount("resnet20", options), 272_474 + 12 * (9 * 16 * 16 + 32) + 12 * (9 * 32 * 32 + 64) + 12 * (9 * 64 * 64 + 128))
        XCTAssertEqual(try parameterCount("resnet20", options), 853_018 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64))
    }

    func testGoogLeNetHasTorchvisionsCount() throws {
        XCTAssertEqual(try parameterCount("googlenet"), 6_624_904)
    }

    func testEveryEntryBuildsWithItsPublishedCount() throws {
        // The cheap ones are built here; the large ones have their own tests above.
        for entry in ModelZoo.entries where entry.parameters < 30_000_000 {
            XCTAssertEqual(try parameterCount(entry.name), entry.parameters, entry.name)
        }
    }

    func testLeNet5On28x28PadsItsFirstConvolutionAndKeepsItsShapes() throws {
        let spec = try ModelZoo.model("lenet5", options: ZooOptions(classes: 10, input: FeatureShape(channels: 1, height: 28, width: 28)))
        guard case .convolution(let first) = spec.layers[0] else { return XCTFail("LeNet-5 starts with a convolution") }
        XCTAssertEqual(first.padding, .explicit(2))
        let network = try Network(spec)
        XCTAssertEqual(network.parameterCount, 61_706)
        XCTAssertEqual(network.layers[0].outputShape, FeatureShape(channels: 6, height: 28, width: 28))
        XCTAssertEqual(network.layers[5].outputShape, FeatureShape(channels: 16, height: 5, width: 5))
    }

    func testResNetBlocksUseTorchvisionsTensorNames() throws {
        let network = try Network(try ModelZoo.model("resnet18", options: ZooOptions(classes: 10, input: FeatureShape(channels: 3, height: 64, width: 64))))
        let names = Set(network.parameterSlots.map(\.name) + network.stateSlots.map(\.name))
        for name in ["conv1.weight", "bn1.weight", "bn1.running_mean", "bn1.num_batches_tracked", "layer1.0.conv1.weight",
                     "layer1.0.bn1.weight", "layer1.1.conv2.weight", "layer1.0.bn2.bias", "layer2.0.downsample.0.weight",
                     "layer2.0.downsample.1.weight", "layer4.0.downsample.1.running_var", "fc.weight", "fc.bias"] {
            XCTAssertTrue(names.contains(name), "missing \(name)")
        }
        XCTAssertFalse(names.contains("layer1.0.downsample.0.weight"), "the first stage keeps the identity shortcut")
        XCTAssertEqual(network.outputShape, .vector(10))
        XCTAssertEqual(network.freezableNames.prefix(6), ["conv1", "bn1", "layer1", "layer1.0", "layer1.0.conv1", "layer1.0.bn1"])
    }

    func testSequentialModulesNumberEveryChildAndBasicConvUnitsNameConvAndBN() throws {
        let alexnet = try Network(try ModelZoo.model("alexnet")).parameterSlots.map(\.name)
        XCTAssertEqual(alexnet, ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias", "features.6.weight",
                                 "features.6.bias", "features.8.weight", "features.8.bias", "features.10.weight", "features.10.bias",
                                 "classifier.1.weight", "classifier.1.bias", "classifier.4.weight", "classifier.4.bias",
                                 "classifier.6.weight", "classifier.6.bias"])
        let googlenet = try Network(try ModelZoo.model("googlenet", options: ZooOptions(classes: 10)))
        let names = Set(googlenet.parameterSlots.map(\.name) + googlenet.stateSlots.map(\.name))
        for name in ["conv1.conv.weight", "conv1.bn.running_var", "conv3.bn.bias", "inception3a.branch1.conv.weight",
                     "inception3a.branch2.1.conv.weight", "inception4e.branch3.0.bn.weight", "inception5b.branch4.1.conv.weight",
                     "fc.weight"] {
            XCTAssertTrue(names.contains(name), "missing \(name)")
        }
        // Names only: the layers, their order and their input shapes are those of an unnamed list.
        let spec = try ModelZoo.model("vgg16")
        XCTAssertEqual(spec.layers.count, 31 + 1 + 7)
        XCTAssertEqual(spec.layers.map(\.tensorName).compactMap { $0 }.count, 31 + 7)
        XCTAssertEqual(spec.layers[31], .flatten)
    }

    func testLayerListsNameTensorsWithNameAndRefuseMalformedNames() throws {
        let config = try TrainingConfig.parse(yaml: """
            model:
              input: [1, 8, 8]
              layers: [{name: features.0, conv: {filters: 2, kernel: 3}}, {name: features.1, batchnorm}, relu, flatten, {name: fc, dense: 3}]
            """, source: "named.yaml")
        let network = try Network(config.model)
        XCTAssertEqual(network.parameterSlots.map(\.name), ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
                                                           "fc.weight", "fc.bias"])
        XCTAssertEqual(network.layerNames, ["features.0", "features.1", "2", "3", "fc"])
        XCTAssertEqual(try TrainingConfig.parse(yaml: config.yaml, source: "rendered.yaml").model, config.model)
        let error = try XCTUnwrap(configError("model: {input: [1, 8, 8], layers: [flatten, {name: \"fc..x\", dense: 3}]}\n"))
        XCTAssertTrue(error.description.contains("must be a tensor name prefix such as 'fc' or 'features.0'"), error.description)
    }

    func testANamedHeadStillGivesSyntheticDataItsClassesAndConvertsKeepingItsName() throws {
        let config = try TrainingConfig.parse(
            yaml: "model: {zoo: resnet18, classes: 7, input: [3, 32, 32]}\ndata: {dataset: synthetic, synthetic_train: 8, synthetic_test: 8}\ntrain: {batch: 8, micro_batch: 8}\n",
            source: "named-head.yaml")
        XCTAssertEqual(try DataSource.load(config).train.classes, 7)
        let named = try TrainingConfig.parse(yaml: """
            model:
              input: [1, 8, 8]
              layers: [{name: features.0, conv: {filters: 2, kernel: 3}}, relu, flatten, {name: fc, dense: 3}]
            """, source: "named.yaml").model
        let converted = try FullyConvolutionalModel(converting: named)
        let slots = try Network(converted.model).parameterSlots
        XCTAssertEqual(slots.map(\.name), ["features.0.weight", "features.0.bias", "fc.weight", "fc.bias"])
        XCTAssertEqual(slots[2].shape, [3, 2, 6, 6])
        XCTAssertEqual(converted.originalName(of: "fc.weight"), "fc.weight")
    }

    func testCeilModePoolsSizeLikeTorchvisionsGoogLeNet() throws {
        let network = try Network(try ModelZoo.model("googlenet"))
        // 224 -> conv 112 -> pool 56 -> pool 28 -> pool 14 -> pool 7, as torchvision's.
        let sizes = network.layers.filter { $0 is MaxPool2D }.map(\.outputShape.height)
        XCTAssertEqual(sizes, [56, 28, 14, 7])
        let pool = try MaxPool2D(input: FeatureShape(channels: 1, height: 4, width: 4), size: 3, stride: 2, ceilMode: true)
        XCTAssertEqual(pool.outputShape, FeatureShape(channels: 1, height: 2, width: 2))
        // A 4x4 arange: windows start at 0 and 2; the second covers rows/columns 2...3 only.
        let input: [Float] = (0..<16).map(Float.init)
        let output = input.withUnsafeBufferPointer { Array(UnsafeBufferPointer(start: pool.forward($0.baseAddress!, batch: 1, context: .inference), count: 4)) }
        XCTAssertEqual(output, [10, 11, 14, 15])
    }

    func testClassesAndInputOptionsChangeTheHead() throws {
        let spec = try ModelZoo.model("resnet20", options: ZooOptions(classes: 100))
        XCTAssertEqual(spec.layers.last, .dense(units: 100, bias: true))
        XCTAssertEqual(try Network(spec).parameterCount, 272_474 - 650 + 64 * 100 + 100)
    }

    func testAlexNetOn224InputCitesTheFormulaAndSuggests227() throws {
        let error = try XCTUnwrap(configError("model: {zoo: alexnet2012, input: [3, 224, 224]}\n"))
        XCTAssertEqual(error.line, 1)
        XCTAssertTrue(error.description.contains("model.layers[0]"), error.description)
        XCTAssertTrue(error.description.contains("(224 - 11 + 2*0) / 4 + 1 = 54.25"), error.description)
        XCTAssertTrue(error.description.contains("227"), error.description)
    }

    func testZooModelsReadFromConfigsInBothForms() throws {
        let short = try TrainingConfig.parse(yaml: "model: lenet5\n", source: "zoo.yaml")
        XCTAssertEqual(short.model, try ModelZoo.model("lenet5"))
        let long = try TrainingConfig.parse(
            yaml: "model: {zoo: resnet20, classes: 10, input: [3, 32, 32]}\ndata: {dataset: synthetic}\n", source: "zoo.yaml")
        XCTAssertEqual(long.model, try ModelZoo.model("resnet20"))
        let tanh = try TrainingConfig.parse(
            yaml: "model:\n  zoo: lenet5\n  activation: tanh\n  pooling: average\n  batch_norm: true\n", source: "zoo.yaml")
        XCTAssertTrue(tanh.model.layers.contains(.tanh))
        XCTAssertTrue(tanh.model.layers.contains(.averagePool(size: 2, stride: nil, padding: 0)))
        XCTAssertEqual(tanh.model.layers.filter { if case .batchNorm = $0 { return true } else { return false } }.count, 4)
    }

    func testUnknownZooNamesAndOptionsAreNamedWithTheLine() throws {
        let name = try XCTUnwrap(configError("train: {epochs: 1}\nmodel: {zoo: resnet81}\n"))
        XCTAssertEqual(name.line, 2)
        XCTAssertTrue(name.description.contains("'resnet81' is not a model of the zoo (did you mean 'resnet18'?)"), name.description)
        let scalar = try XCTUnwrap(configError("model: lenet\n"))
        XCTAssertTrue(scalar.description.contains("did you mean 'lenet5'"), scalar.description)
        let option = try XCTUnwrap(configError("model:\n  zoo: lenet5\n  depht: 20\n"))
        XCTAssertEqual(option.line, 3)
        XCTAssertTrue(option.description.contains("unknown key 'depht' in model"), option.description)
        let depth = try XCTUnwrap(configError("model:\n  zoo: resnet20\n  depth: 21\n"))
        XCTAssertEqual(depth.line, 3)
        XCTAssertTrue(depth.description.contains("model.depth must be 6n + 2"), depth.description)
        let forms = try XCTUnwrap(configError("model:\n  zoo: resnet20\n  layers: [relu]\n"))
        XCTAssertTrue(forms.description.contains("model takes one of 'zoo', 'arrow' or 'layers'"), forms.description)
    }

    func testEveryShippedConfigSummarisesAndRoundTripsThroughItsRendering() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: Self.configsDirectory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        for name in ModelZoo.names {
            XCTAssertTrue(files.contains("\(name).yaml"), "configs/\(name).yaml is missing")
        }
        XCTAssertTrue(files.contains("fashion-mnist.yaml") && files.contains("cifar10.yaml"))
        for file in files {
            let config = try TrainingConfig.load(path: Self.configsDirectory.appendingPathComponent(file).path)
            let summary = try ModelSummary(config: config)
            XCTAssertTrue(summary.table.contains("total parameters: \(grouped(summary.parameters))"), file)
            let stem = String(file.dropLast(".yaml".count))
            if let entry = ModelZoo.entry(named: stem) {
                XCTAssertEqual(summary.parameters, entry.parameters, "configs/\(file) shows the zoo count")
            }
            // Workers receive the resolved layer list: it must read back to the same model.
            let reparsed = try TrainingConfig.parse(yaml: config.yaml, source: "rendered \(file)")
            XCTAssertEqual(reparsed.model, config.model, file)
            XCTAssertEqual(reparsed.yaml, config.yaml, file)
        }
    }
}
