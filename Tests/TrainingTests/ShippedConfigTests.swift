import Foundation
import TestSupport
import Training
import XCTest

/// Every config in `configs/` trains one step with two real workers, as a new user would start it:
/// the shipped configs are documentation, and a documented command that fails at start is a bug.
///
/// To stay fast the step is shrunk, and nothing else: the model, the data set, the augmentation and
/// the optimiser are the config's own; the global batch becomes 4 samples in two micro-batches of 2
/// (one per worker, and BatchNorm still sees two samples), evaluation batches 2, and a synthetic set
/// 4 + 2 images. A config whose data files are not on this machine (CIFAR-10 must be downloaded) is
/// reported and left out.
final class ShippedConfigTests: XCTestCase {
    private static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testEveryShippedConfigTrainsOneStepWithTwoWorkers() throws {
        let folder = Self.repositoryRoot.appendingPathComponent("configs")
        let names = try FileManager.default.contentsOfDirectory(atPath: folder.path)
            .filter { $0.hasSuffix(".yaml") }.sorted()
        XCTAssertGreaterThanOrEqual(names.count, 11, "configs/ lost its configs")
        let scratch = try LocalCluster.temporaryDirectory("shipped-configs")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        var skipped: [String] = []
        for name in names {
            let path = folder.appendingPathComponent(name).path
            var config = try TrainingConfig.parse(yaml: String(contentsOfFile: path, encoding: .utf8), source: path)
            if config.data.dataset != "synthetic" {
                if !config.data.path.hasPrefix("/") {
                    config.data.path = Self.repositoryRoot.appendingPathComponent(config.data.path).path
                }
                guard FileManager.default.fileExists(atPath: config.data.path) else {
                    skipped.append("\(name): its \(config.data.dataset) files are not at \(config.data.path)")
                    continue
                }
            }
            config.train.batch = 4
            config.train.microBatch = 2
            config.train.evalBatch = 2
            config.data.syntheticTrain = 4
            config.data.syntheticTest = 2
            let shrunk = try LocalCluster.write(config.yaml, to: name, in: scratch)
            let started = Date()
            let outcome = try LocalCluster.run(
                "cnn-coord",
                ["--config", shrunk, "--spawn-workers", "2", "--steps", "1", "--quiet",
                 "--run-dir", "\(scratch)/run-\(name)"],
                seconds: 240)
            XCTAssertEqual(outcome.status, 0, "\(name) did not train one step with two workers:\n\(outcome.combined)")
            let metrics = (try? String(contentsOfFile: "\(scratch)/run-\(name)/metrics.jsonl", encoding: .utf8)) ?? ""
            XCTAssertTrue(metrics.contains("\"step\": 1,"), "\(name) logged no step 1:\n\(metrics)")
            print("ShippedConfigTests: \(name) trained one step in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        }
        for reason in skipped { print("ShippedConfigTests: skipped \(reason)") }
        XCTAssertLessThan(skipped.count, names.count, "every config was skipped")
    }
}
