import CNN
import Checkpoint
import Foundation
import Training
import XCTest

final class TransferLearningTests: XCTestCase {
    private var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("transfer-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A small CNN on synthetic 1x8x8 images with `classes` outputs; its layers are
    /// 0 conv, 1 BN, 2 ReLU, 3 pool, 4 flatten, 5 FC 16, 6 ReLU, 7 FC classes.
    private func config(classes: Int, steps: Int, freeze: [String] = []) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            model: "INPUT(1,8,8) => CONV(4,3,p=1) => BN => RELU => POOL(2) => FC(16) => RELU => FC(\(classes))"
            data: {dataset: synthetic, synthetic_train: 256, synthetic_test: 64}
            train:
              batch: 32
              micro_batch: 16
              steps: \(steps)
              optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.01}
              freeze: [\(freeze.map { "\"\($0)\"" }.joined(separator: ", "))]
            """, source: "transfer.yaml")
    }

    private func bits(_ state: ModelState, _ name: String) throws -> [UInt32] {
        try XCTUnwrap(state.modelTensors().first { $0.name == name }, "no tensor \(name)").values.map(\.bitPattern)
    }

    /// Trains the 10-class model a few steps and writes its weights; returns the file's path.
    private func writeSource() throws -> String {
        let config = try config(classes: 10, steps: 6)
        let trainer = try ReferenceTrainer(config: config, data: try DataSource.load(config))
        try trainer.train()
        let path = directory.appendingPathComponent("source.safetensors").path
        try SafeTensors.write(trainer.state.modelTensors(), metadata: [:], to: path)
        return path
    }

    func testFrozenLayersStayBitIdenticalWhileANewHeadLearns() throws {
        let path = try writeSource()
        let config = try config(classes: 3, steps: 12, freeze: ["0", "1", "5"])
        let trainer = try ReferenceTrainer(config: config, data: try DataSource.load(config))
        let report = try trainer.state.loadInitialWeights(from: path, skipMismatched: true)
        XCTAssertEqual(report.skipped.map(\.name), ["7.weight", "7.bias"])
        XCTAssertEqual(report.skipped[0].fileShape, [10, 16])
        XCTAssertEqual(report.skipped[0].modelShape, [3, 16])
        for name in ["0.weight", "1.running_mean", "5.weight", "5.bias"] {
            XCTAssertTrue(report.loaded.contains(name), "\(name) not loaded: \(report.loaded)")
        }
        XCTAssertTrue(report.lines[0].contains("2 kept fresh"), report.lines[0])
        let file = try SafeTensors.read(path: path)
        XCTAssertEqual(try bits(trainer.state, "5.weight"), try XCTUnwrap(file["5.weight"]).values.map(\.bitPattern))

        let frozen = ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
        let before = try frozen.map { try bits(trainer.state, $0) }
        let headBefore = try bits(trainer.state, "7.weight")
        let losses = try trainer.train()
        for (name, old) in zip(frozen, before) {
            XCTAssertEqual(try bits(trainer.state, name), old, "\(name) changed although frozen (weight decay and momentum apply to it)")
        }
        XCTAssertNotEqual(try bits(trainer.state, "7.weight"), headBefore, "the new head must learn")
        XCTAssertLessThan(losses.suffix(3).reduce(0, +) / 3, losses[0], "the loss must fall: \(losses)")
    }

    func testAMismatchedHeadIsAnErrorNamingTheTensorAndTheKeyUnlessSkipped() throws {
        let path = try writeSource()
        let state = try ModelState(config: try config(classes: 3, steps: 1))
        let untouched = try bits(state, "0.weight")
        XCTAssertThrowsError(try state.loadInitialWeights(from: path, skipMismatched: false)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("tensor '7.weight' has shape [10, 16], the model needs [3, 16]"), text)
            XCTAssertTrue(text.contains("train.init_skip_mismatched: true"), text)
        }
        XCTAssertEqual(try bits(state, "0.weight"), untouched, "a refused file leaves the model as it was")
    }

    func testAFileForAnotherModelIsRefusedEvenWhenSkipping() throws {
        let path = directory.appendingPathComponent("other.safetensors").path
        try SafeTensors.write([NamedTensor(name: "classifier.weight", shape: [2, 2], values: [1, 2, 3, 4])], metadata: [:], to: path)
        let state = try ModelState(config: try config(classes: 3, steps: 1))
        XCTAssertThrowsError(try state.loadInitialWeights(from: path, skipMismatched: true)) { error in
            XCTAssertTrue("\(error)".contains("has no tensor '0.weight'"), "\(error)")
        }
    }

    func testACheckpointDirectoryIsReadThroughItsModelFile() throws {
        let path = try writeSource()
        let checkpoint = directory.appendingPathComponent("step-00000006")
        try FileManager.default.createDirectory(at: checkpoint, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: path, toPath: checkpoint.appendingPathComponent("model.safetensors").path)
        let state = try ModelState(config: try config(classes: 10, steps: 1))
        let report = try state.loadInitialWeights(from: checkpoint.path, skipMismatched: false)
        XCTAssertTrue(report.skipped.isEmpty)
        XCTAssertTrue(report.unused.isEmpty)
        XCTAssertTrue(report.source.hasSuffix("step-00000006/model.safetensors"))
        XCTAssertThrowsError(try state.loadInitialWeights(from: directory.path, skipMismatched: false)) { error in
            XCTAssertTrue("\(error)".contains("a directory without model.safetensors"), "\(error)")
        }
    }
}
