import CNN
import Checkpoint
import Foundation
import TestSupport
import Training
import XCTest

/// End-to-end runs with real processes on loopback: the step contract of DESIGN.md.
final class DistributedTrainingTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    private func train(workers: Int, threads: Int = 1, steps: Int, config: String, label: String,
                       file: StaticString = #filePath, line: UInt = #line) throws -> (run: String, outcome: LocalCluster.Outcome) {
        let folder = try LocalCluster.temporaryDirectory(label)
        let configPath = try LocalCluster.write(config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let outcome = try LocalCluster.run(
            "cnn-coord",
            ["--config", configPath, "--spawn-workers", "\(workers)", "--threads", "\(threads)", "--steps", "\(steps)",
             "--run-dir", run, "--quiet"],
            seconds: 180)
        XCTAssertFalse(outcome.timedOut, "the run did not finish in time:\n\(outcome.combined)", file: file, line: line)
        XCTAssertEqual(outcome.status, 0, outcome.combined, file: file, line: line)
        return (run, outcome)
    }

    private func finalModel(_ run: String) throws -> [UInt8] {
        let store = CheckpointStore(runDirectory: run, keep: 3)
        let newest = try XCTUnwrap(store.list().last, "no checkpoint in \(run)")
        return Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/model.safetensors")))
    }

    func testOneWorkerOfOneThreadAndThreeWorkersOfTwoThreadsGiveBitIdenticalWeights() throws {
        let config = Fixtures.fashionConfig()
        let one = try train(workers: 1, steps: 20, config: config, label: "one")
        let three = try train(workers: 3, threads: 2, steps: 20, config: config, label: "three")
        let a = try finalModel(one.run), b = try finalModel(three.run)
        XCTAssertGreaterThan(a.count, 10_000)
        XCTAssertEqual(a, b, "weights after 20 steps differ between 1 worker of 1 thread and 3 workers of 2 threads")
        // Training actually moved the weights away from their initial values.
        let state = try ModelState(config: TrainingConfig.parse(yaml: config, source: "fixture"))
        let initial = try SafeTensors.decode(SafeTensors.encode(state.modelTensors(), metadata: [:]).withUnsafeBytes { $0 }, source: "initial")
        let trained = try CheckpointStore.load(directory: CheckpointStore(runDirectory: one.run, keep: 3).list().last!).model
        XCTAssertNotEqual(initial["0.weight"]?.values, trained["0.weight"]?.values)
    }

    func testDistributedRunMatchesSingleProcessReference() throws {
        let text = Fixtures.fashionConfig()
        let distributed = try train(workers: 2, steps: 12, config: text, label: "reference")
        var config = try TrainingConfig.parse(yaml: text, source: "fixture")
        config.train.maxSteps = 12
        let reference = try ReferenceTrainer(config: config, data: DataSource.load(config))
        let losses = try reference.train()
        XCTAssertEqual(losses.count, 12)
        XCTAssertLessThan(losses.suffix(3).reduce(0, +) / 3, losses.prefix(3).reduce(0, +) / 3, "loss did not fall")
        let checkpoint = try CheckpointStore.load(directory: CheckpointStore(runDirectory: distributed.run, keep: 3).list().last!)
        XCTAssertEqual(checkpoint.state.step, 12)
        for tensor in reference.state.modelTensors() {
            let saved = try XCTUnwrap(checkpoint.model[tensor.name], "checkpoint lacks \(tensor.name)")
            XCTAssertEqual(saved.shape, tensor.shape)
            XCTAssertEqual(saved.values.map(\.bitPattern), tensor.values.map(\.bitPattern), "\(tensor.name) differs from the reference")
        }
    }

    func testRunDirectoryHoldsConfigMetricsAndFinalCheckpoint() throws {
        let started = Date().timeIntervalSince1970
        let result = try train(workers: 2, steps: 10, config: Fixtures.fashionConfig(), label: "rundir")
        let ended = Date().timeIntervalSince1970
        let config = try String(contentsOfFile: result.run + "/config.yaml", encoding: .utf8)
        XCTAssertNoThrow(try TrainingConfig.parse(yaml: config, source: "config.yaml"))
        let lines = try String(contentsOfFile: result.run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let objects = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let steps = objects.filter { $0["loss"] != nil }
        XCTAssertEqual(steps.map { $0["step"] as? Int }, [5, 10])
        for key in ["step", "epoch", "loss", "accuracy", "images_per_second", "workers", "time"] {
            XCTAssertNotNil(steps.last?[key], "metrics line lacks \(key)")
        }
        // Wall time to the millisecond, within the run and in order.
        let times = try objects.map { try XCTUnwrap($0["time"] as? Double, "a line without time") }
        XCTAssertEqual(times, times.sorted())
        XCTAssertGreaterThanOrEqual(times.first!, (started * 1000).rounded(.down) / 1000)
        XCTAssertLessThanOrEqual(times.last!, ended)
        XCTAssertTrue(lines.allSatisfy { $0.range(of: #""time": \d{10}\.\d{3}\}"#, options: .regularExpression) != nil }, "\(lines)")
        let evaluation = try XCTUnwrap(objects.last { $0["test_accuracy"] != nil })
        let accuracy = try XCTUnwrap(evaluation["test_accuracy"] as? Double)
        XCTAssertGreaterThan(accuracy, 0.3, "10 steps should beat chance on Fashion-MNIST")
        let checkpoint = try CheckpointStore.load(directory: CheckpointStore(runDirectory: result.run, keep: 3).list().last!)
        XCTAssertEqual(checkpoint.model.tensors.map(\.name), ["0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias", "9.weight", "9.bias"])
        XCTAssertEqual(checkpoint.model["0.weight"]?.shape, [8, 1, 3, 3])
        XCTAssertEqual(checkpoint.model["7.weight"]?.shape, [32, 16 * 7 * 7])
    }

    func testSIGTERMStopsAfterAWholeStepWritesACheckpointAndExitsZero() throws {
        let folder = try LocalCluster.temporaryDirectory("sigterm")
        let configPath = try LocalCluster.write(Fixtures.fashionConfig(), to: "config.yaml", in: folder)
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", configPath, "--spawn-workers", "2", "--epochs", "50", "--run-dir", run])
        // Wait for training to be under way.
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !((try? String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)) ?? "").contains("\"loss\"") {
            usleep(50_000)
        }
        coordinator.signal(SIGTERM)
        let outcome = coordinator.wait(seconds: 60)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("SIGTERM"), outcome.error)
        let checkpoint = try CheckpointStore.load(directory: CheckpointStore(runDirectory: run, keep: 3).list().last!)
        XCTAssertGreaterThan(checkpoint.state.step, 0)
        XCTAssertEqual(checkpoint.model.tensors.count, 8)
    }

    func testMissingDataSetExitsWithCodeTwoNamingPathAndFix() throws {
        let folder = try LocalCluster.temporaryDirectory("nodata")
        let configPath = try LocalCluster.write(Fixtures.fashionConfig(dataPath: folder + "/nowhere"), to: "config.yaml", in: folder)
        let outcome = try LocalCluster.run("cnn-coord", ["--config", configPath, "--spawn-workers", "1", "--run-dir", folder + "/run"], seconds: 30)
        XCTAssertEqual(outcome.status, 2, outcome.combined)
        XCTAssertTrue(outcome.error.contains(folder + "/nowhere"), outcome.error)
        XCTAssertTrue(outcome.error.contains("apt-get install dataset-fashion-mnist"), outcome.error)
        XCTAssertFalse(outcome.error.contains("Fatal error"), outcome.error)
    }
}
