import CNN
import ConfigReading
import Training
import XCTest

final class ConfigTests: XCTestCase {
    private func parseError(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) -> ConfigError? {
        do {
            _ = try TrainingConfig.parse(yaml: yaml, source: "test.yaml")
            XCTFail("expected a config error", file: file, line: line)
            return nil
        } catch let error as ConfigError {
            return error
        } catch {
            XCTFail("expected a ConfigError, got \(error)", file: file, line: line)
            return nil
        }
    }

    private let model = """
        model:
          input: [1, 28, 28]
          layers:
            - conv: {filters: 4, kernel: 3}
            - relu
            - flatten
            - dense: 10
        """

    func testTheShippedConfigParsesAndRoundTripsThroughItsRendering() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("configs/fashion-mnist.yaml").path
        let config = try TrainingConfig.load(path: path)
        XCTAssertEqual(config.train.batch, 128)
        XCTAssertEqual(config.model.layers.count, 14)
        // The rendering is canonical: what workers parse renders back to the same text and hash.
        let reparsed = try TrainingConfig.parse(yaml: config.yaml, source: "rendered")
        XCTAssertEqual(reparsed.yaml, config.yaml)
        XCTAssertEqual(reparsed.hash, config.hash)
        XCTAssertEqual(reparsed.model.input, config.model.input)
        XCTAssertEqual(reparsed.train, config.train)
    }

    func testUnknownKeyNamesLineAndSuggestsTheKnownKey() throws {
        let error = try XCTUnwrap(parseError("""
            model:
              input: [1, 28, 28]
              layers:
                - conv: {filters: 4, kernel: 3}
                - conv: {filter: 4, kernel: 3}
                - flatten
                - dense: 10
            """))
        XCTAssertEqual(error.line, 5)
        XCTAssertTrue(error.description.contains("test.yaml:5: unknown key 'filter' in model.layers[1].conv (did you mean 'filters'?)"), error.description)
    }

    func testUnknownSectionAndLayerAreNamed() throws {
        XCTAssertTrue(try XCTUnwrap(parseError(model + "\ntrian:\n  epochs: 2\n")).description.contains("unknown key 'trian' in the top level (did you mean 'train'?)"))
        let layer = try XCTUnwrap(parseError(model.replacingOccurrences(of: "- relu", with: "- rellu")))
        XCTAssertTrue(layer.description.contains("unknown layer 'rellu'"), layer.description)
        XCTAssertTrue(layer.description.contains("did you mean 'relu'"), layer.description)
    }

    func testWrongTypesAndImpossibleValuesNameTheKey() throws {
        let negative = try XCTUnwrap(parseError(model + "\ntrain:\n  batch: -4\n"))
        XCTAssertTrue(negative.description.contains("train.batch must be at least 1, found -4"), negative.description)
        XCTAssertEqual(negative.line, 9)
        let text = try XCTUnwrap(parseError(model + "\ntrain:\n  epochs: many\n"))
        XCTAssertTrue(text.description.contains("train.epochs must be a whole number, found 'many'"), text.description)
        let optimizer = try XCTUnwrap(parseError(model + "\ntrain:\n  optimizer: {name: sgdd}\n"))
        XCTAssertTrue(optimizer.description.contains("did you mean 'sgd'"), optimizer.description)
    }

    func testBatchMustBeAMultipleOfTheMicroBatch() throws {
        let error = try XCTUnwrap(parseError(model + "\ntrain:\n  batch: 100\n  micro_batch: 32\n"))
        XCTAssertTrue(error.description.contains("train.batch (100) must be a multiple of train.micro_batch (32)"), error.description)
        XCTAssertTrue(error.description.contains("micro_batch: 25"), error.description)
    }

    func testImpossibleShapeCitesTheFormulaAndAFix() throws {
        let error = try XCTUnwrap(parseError("""
            model:
              input: [3, 224, 224]
              layers:
                - conv: {filters: 96, kernel: 11, stride: 4}
                - relu
                - flatten
                - dense: 10
            """))
        XCTAssertTrue(error.description.contains("model.layers[0]"), error.description)
        XCTAssertTrue(error.description.contains("(224 - 11 + 2*0) / 4 + 1 = 54.25"), error.description)
        XCTAssertTrue(error.description.contains("227"), error.description)
    }

    func testYAMLSyntaxErrorsGiveTheLine() throws {
        let error = try XCTUnwrap(parseError("model:\n  input: [1, 28, 28\n  layers: []\n"))
        XCTAssertTrue(error.description.hasPrefix("test.yaml:"), error.description)
        XCTAssertTrue(error.description.contains("not valid YAML"), error.description)
        XCTAssertNotNil(error.line)
    }

    func testMissingModelSectionSaysWhatToAdd() throws {
        let error = try XCTUnwrap(parseError("train:\n  epochs: 1\n"))
        XCTAssertTrue(error.description.contains("no 'model' section"), error.description)
    }

    func testSchedulesFollowTheirFormulas() {
        XCTAssertEqual(Schedule.constant.learningRate(base: 0.1, step: 50, epoch: 3, totalSteps: 100), 0.1)
        XCTAssertEqual(Schedule.step(everyEpochs: 2, gamma: 0.5).learningRate(base: 0.1, step: 0, epoch: 5, totalSteps: 100), 0.1 * 0.25, accuracy: 1e-12)
        XCTAssertEqual(Schedule.multiStep(milestones: [1, 3], gamma: 0.1).learningRate(base: 1, step: 0, epoch: 2, totalSteps: 10), 0.1, accuracy: 1e-12)
        let cosine = Schedule.cosine(minimum: 0)
        XCTAssertEqual(cosine.learningRate(base: 1, step: 0, epoch: 0, totalSteps: 101), 1, accuracy: 1e-12)
        XCTAssertEqual(cosine.learningRate(base: 1, step: 50, epoch: 0, totalSteps: 101), 0.5, accuracy: 1e-12)
        XCTAssertEqual(cosine.learningRate(base: 1, step: 100, epoch: 0, totalSteps: 101), 0, accuracy: 1e-12)
        let warm = Schedule.warmup(steps: 4, after: .constant)
        XCTAssertEqual(warm.learningRate(base: 1, step: 0, epoch: 0, totalSteps: 10), 0.25, accuracy: 1e-12)
        XCTAssertEqual(warm.learningRate(base: 1, step: 4, epoch: 0, totalSteps: 10), 1, accuracy: 1e-12)
    }
}
