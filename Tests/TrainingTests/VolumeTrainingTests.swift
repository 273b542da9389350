import CNN
import Checkpoint
import Data
import Foundation
import TestSupport
import Training
import XCTest

/// A model of sequences and a model of volumes, trained end to end with real coordinator and
/// worker processes on IDX data sets made here: 1 worker of 1 thread and 3 workers of 2 threads
/// give bit-identical weights.
final class VolumeTrainingTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    /// Writes train and test IDX files of `count` samples of `dimensions`: class c is `pattern(c)`
    /// plus noise, so a small model learns it in a few steps.
    private func makeDataSet(dimensions: [Int], classes: Int, label: String, pattern: (Int, Int) -> Float) throws -> String {
        let folder = try LocalCluster.temporaryDirectory(label)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        let size = dimensions.reduce(1, *)
        for (split, count, seed) in [("train", 192, UInt64(1)), ("test", 64, UInt64(2))] {
            let labels = (0..<count).map { UInt8($0 % classes) }
            let noise = TestArrays.normal(count: count * size, seed: seed, scale: 0.5)
            var values = [Float](repeating: 0, count: count * size)
            for n in 0..<count {
                for i in 0..<size { values[n * size + i] = pattern(Int(labels[n]), i) + noise[n * size + i] }
            }
            try Data(IDXSamples.float32File(dimensions: [count] + dimensions, values: values))
                .write(to: URL(fileURLWithPath: "\(folder)/\(split)-samples.idx"))
            try Data(IDXSamples.labelsFile(labels)).write(to: URL(fileURLWithPath: "\(folder)/\(split)-labels.idx"))
        }
        return folder
    }

    private func config(input: [Int], layers: [String], dataPath: String) -> String {
        """
        model:
          input: \(input)
          layers:
        \(layers.map { "    - \($0)" }.joined(separator: "\n"))
        data:
          dataset: idx
          path: \(dataPath)
          shuffle: true
        train:
          epochs: 1
          batch: 24
          micro_batch: 4
          seed: 11
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
          log_every: 4
        distributed:
          worker_timeout: 10
          heartbeat_interval: 0.5
          join_timeout: 30
        """
    }

    private func trainedModel(workers: Int, threads: Int, config: String, label: String) throws -> (bytes: [UInt8], run: String) {
        let folder = try LocalCluster.temporaryDirectory(label)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: folder) }
        let configPath = try LocalCluster.write(config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let outcome = try LocalCluster.run(
            "cnn-coord",
            ["--config", configPath, "--spawn-workers", "\(workers)", "--threads", "\(threads)", "--steps", "8",
             "--run-dir", run, "--quiet"],
            seconds: 180)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 3).list().last, "no checkpoint in \(run)")
        return (Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/model.safetensors"))), run)
    }

    private func assertBitIdentical(config: String, label: String, tensors: [String: [Int]]) throws {
        let one = try trainedModel(workers: 1, threads: 1, config: config, label: label + "-one")
        let three = try trainedModel(workers: 3, threads: 2, config: config, label: label + "-three")
        XCTAssertEqual(one.bytes, three.bytes, "\(label): weights differ between 1 worker of 1 thread and 3 workers of 2 threads")
        let checkpoint = try CheckpointStore.load(directory: CheckpointStore(runDirectory: one.run, keep: 3).list().last!)
        for (name, shape) in tensors { XCTAssertEqual(checkpoint.model[name]?.shape, shape, "\(label): \(name)") }
        // The weights moved, and the loss fell.
        let initial = try ModelState(config: TrainingConfig.parse(yaml: config, source: label)).modelTensors()
        XCTAssertNotEqual(initial.first { $0.name == "0.weight" }?.values, checkpoint.model["0.weight"]?.values)
        let lines = try String(contentsOfFile: one.run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let losses = try lines.compactMap { try (JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["loss"] as? Double }
        XCTAssertEqual(losses.count, 2, "\(label): \(lines)")
        if losses.count == 2 { XCTAssertLessThan(losses[1], losses[0], "\(label): the loss did not fall") }
    }

    func testSequenceModelTrainsBitIdenticallyOnOneAndThreeWorkers() throws {
        // [2, 24] sequences; class c is a sine of c + 1 periods, phase-shifted per channel.
        let data = try makeDataSet(dimensions: [2, 24], classes: 3, label: "sequences") { c, i in
            let (channel, t) = (i / 24, i % 24)
            return sin(2 * Float.pi * Float(c + 1) * Float(t) / 24 + Float(channel))
        }
        let layers = [
            "conv1d: {filters: 6, kernel: 5, padding: 2}", "relu", "maxpool1d: 2",
            "locally_connected: {filters: 4, kernel: 4, stride: 2, padding: 1}", "relu", "avgpool1d: 2",
            "flatten", "dense: 3",
        ]
        try assertBitIdentical(
            config: config(input: [2, 24], layers: layers, dataPath: data), label: "sequences",
            tensors: ["0.weight": [6, 2, 5], "3.weight": [6, 4, 24], "3.bias": [4, 6], "7.weight": [3, 12]])
    }

    func testVolumeModelTrainsBitIdenticallyOnOneAndThreeWorkers() throws {
        // [1, 6, 6, 6] volumes; class c is a bright 3x3x3 cube in corner c.
        let data = try makeDataSet(dimensions: [1, 6, 6, 6], classes: 3, label: "volumes") { c, i in
            let (d, h, w) = (i / 36, i / 6 % 6, i % 6)
            let corner = [(0, 0, 0), (3, 3, 3), (0, 3, 3)][c]
            let inside = (corner.0..<corner.0 + 3).contains(d) && (corner.1..<corner.1 + 3).contains(h) && (corner.2..<corner.2 + 3).contains(w)
            return inside ? 1.5 : 0
        }
        let layers = [
            "conv3d: {filters: 4, kernel: 3, padding: same}", "batchnorm", "relu", "maxpool3d: 2",
            "conv3d: {filters: 4, kernel: [1, 3, 3], stride: 1, groups: 2}", "relu", "flatten", "dense: 3",
        ]
        try assertBitIdentical(
            config: config(input: [1, 6, 6, 6], layers: layers, dataPath: data), label: "volumes",
            tensors: ["0.weight": [4, 1, 3, 3, 3], "1.running_mean": [4], "4.weight": [4, 2, 1, 3, 3], "7.weight": [3, 4 * 3 * 1 * 1]])
    }
}

/// The synthetic data set makes samples of any input shape, volumes included.
final class SyntheticVolumeTests: XCTestCase {
    func testSyntheticDataSetMakesVolumesAndSequencesOfTheModelsShape() throws {
        for (input, layers) in [("[2, 4, 6, 5]", "[conv3d: {filters: 2, kernel: 3, padding: 1}, flatten, dense: 3]"),
                                ("[3, 20]", "[conv1d: {filters: 2, kernel: 3}, flatten, dense: 4]")] {
            let config = try TrainingConfig.parse(yaml: """
                model: {input: \(input), layers: \(layers)}
                data: {dataset: synthetic, synthetic_train: 12, synthetic_test: 4}
                train: {batch: 4, micro_batch: 2}
                """, source: "synthetic.yaml")
            let data = try DataSource.load(config)
            let shape = config.model.input
            XCTAssertEqual([data.train.channels, data.train.depth, data.train.height, data.train.width],
                           [shape.channels, shape.depth, shape.height, shape.width], input)
            XCTAssertEqual(data.train.count, 12)
            XCTAssertEqual(data.test.count * data.test.sampleSize, 4 * shape.count)
        }
    }
}
