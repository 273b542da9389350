import CNN
import Checkpoint
import Data
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

    /// A small CNN on synthetic 1x8x8 images with `classes` outputs.
    private func config(classes: Int, steps: Int) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            model: "INPUT(1,8,8) => CONV(4,3,p=1) => BN => RELU => POOL(2) => FC(16) => RELU => FC(\(classes))"
            data: {dataset: synthetic, synthetic_train: 256, synthetic_test: 64}
            train: {batch: 32, micro_batch: 32, steps: \(steps), optimizer: {name: sgd, lr: 0.1, momentum: 0.9, weight_decay: 0.01}}
            """, source: "transfer.yaml")
    }

    private func values(_ state: ModelState, _ name: String) throws -> [Float] {
        try XCTUnwrap(state.modelTensors().first { $0.name == name }, "no tensor \(name)").values
    }

    /// Trains `state` for its configured steps with `frozen` held fixed; returns each step's loss.
    private func train(_ state: ModelState, frozen: FrozenParameters) throws -> [Double] {
        let data = try DataSource.load(state.config)
        let engine = try MicroBatchEngine(config: state.config, data: data, threads: 1)
        let stepsPerEpoch = EpochPlan(config: state.config, trainCount: data.train.count, epoch: 0).steps
        let weights = [Float](repeating: 0, count: state.weightsCount)
        var losses: [Double] = []
        try weights.withUnsafeBufferPointer { buffer in
            let pointer = UnsafeMutablePointer(mutating: buffer.baseAddress!)
            while !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
                let work = EpochPlan(config: state.config, trainCount: data.train.count, epoch: state.epoch).work(step: state.stepInEpoch)
                XCTAssertEqual(work.count, 1, "one micro-batch per step: its gradient is the step's")
                state.copyWeights(into: pointer)
                engine.load(weights: pointer)
                let output = engine.compute(work, training: true, epoch: state.epoch, step: state.step)
                let leaf = try XCTUnwrap(output.leafGradients[0])
                leaf.withUnsafeBufferPointer { gradient in
                    frozen.preserving(state.network.parameters.pointer) {
                        state.apply(meanGradient: gradient.baseAddress!, stepsPerEpoch: stepsPerEpoch)
                    }
                }
                losses.append(try XCTUnwrap(output.scores[0]).meanLoss)
            }
        }
        return losses
    }

    private func writeSource() throws -> String {
        let source = try ModelState(config: try config(classes: 10, steps: 6))
        _ = try train(source, frozen: try FrozenParameters(network: source.network, names: []))
        let path = directory.appendingPathComponent("source.safetensors").path
        try SafeTensors.write(source.modelTensors(), metadata: [:], to: path)
        return path
    }

    func testFrozenLayersStayBitIdenticalWhileANewHeadLearns() throws {
        let path = try writeSource()
        let state = try ModelState(config: try config(classes: 3, steps: 12))
        let transfer = TransferConfig(freeze: ["0", "1", "5"], initSkipMismatched: true)
        let report = try state.loadInitialWeights(from: path, transfer: transfer)
        XCTAssertEqual(report.skipped.map(\.name), ["7.weight", "7.bias"])
        XCTAssertEqual(report.skipped[0].fileShape, [10, 16])
        XCTAssertEqual(report.skipped[0].modelShape, [3, 16])
        XCTAssertTrue(report.loaded.contains("0.weight") && report.loaded.contains("5.weight") && report.loaded.contains("1.running_mean"))
        XCTAssertEqual(try values(state, "0.weight"), try XCTUnwrap(try SafeTensors.read(path: path)["0.weight"]).values)

        let frozenNames = ["0.weight", "0.bias", "1.weight", "1.bias", "5.weight", "5.bias"]
        let before = try frozenNames.map { try values(state, $0) }
        let headBefore = try values(state, "7.weight")
        let frozen = try FrozenParameters(network: state.network, names: transfer.freeze)
        XCTAssertEqual(frozen.count, (4 * 9 + 4) + (4 + 4) + (16 * 64 + 16))

        let losses = try train(state, frozen: frozen)
        for (name, old) in zip(frozenNames, before) {
            XCTAssertEqual(try values(state, name), old, "\(name) changed although frozen (weight decay and momentum apply to it)")
        }
        XCTAssertNotEqual(try values(state, "7.weight"), headBefore, "the new head must learn")
        XCTAssertLessThan(losses.suffix(3).reduce(0, +) / 3, losses[0], "the loss must fall: \(losses)")
    }

    func testAMismatchedHeadIsAnErrorNamingTheTensorAndTheKeyUnlessSkipped() throws {
        let path = try writeSource()
        let state = try ModelState(config: try config(classes: 3, steps: 1))
        let untouched = try values(state, "0.weight")
        XCTAssertThrowsError(try state.loadInitialWeights(from: path, transfer: TransferConfig())) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("tensor '7.weight' has shape [10, 16], the model needs [3, 16]"), text)
            XCTAssertTrue(text.contains("train.init_skip_mismatched: true"), text)
        }
        XCTAssertEqual(try values(state, "0.weight"), untouched, "a refused file leaves the model as it was")
    }

    func testACheckpointDirectoryIsReadThroughItsModelFile() throws {
        let path = try writeSource()
        let checkpoint = directory.appendingPathComponent("step-00000006")
        try FileManager.default.createDirectory(at: checkpoint, withIntermediateDirectories: true)
        try FileManager.default.moveItem(atPath: path, toPath: checkpoint.appendingPathComponent("model.safetensors").path)
        let state = try ModelState(config: try config(classes: 10, steps: 1))
        let report = try state.loadInitialWeights(from: checkpoint.path, transfer: TransferConfig())
        XCTAssertTrue(report.skipped.isEmpty)
        XCTAssertTrue(report.source.hasSuffix("step-00000006/model.safetensors"))
        XCTAssertThrowsError(try state.loadInitialWeights(from: directory.path, transfer: TransferConfig())) { error in
            XCTAssertTrue("\(error)".contains("a directory without model.safetensors"), "\(error)")
        }
    }

    func testFreezingAnUnknownLayerListsTheNamesThatCanBeFrozen() throws {
        let state = try ModelState(config: try config(classes: 3, steps: 1))
        XCTAssertThrowsError(try FrozenParameters(network: state.network, names: ["2"])) { error in
            XCTAssertTrue("\(error)".contains("0, 1, 5, 7"), "\(error)")
        }
        XCTAssertEqual(TransferConfig(freeze: ["0", "5"], initSkipMismatched: true).yamlLines,
                       ["  freeze: [\"0\", \"5\"]", "  init_skip_mismatched: true"])
        XCTAssertEqual(TransferConfig().yamlLines, [])
    }
}
