import Checkpoint
import Foundation
import Hashing
import TestSupport
import XCTest

/// `distributed.wire_precision: bf16` with real processes on loopback: the rounding is defined on
/// the fixed tree, so every worker count and both strategies end with the same bits, and the
/// gradients really cross the sockets in half the bytes.
final class WireBFloat16ClusterTests: XCTestCase {
    private static let steps = 8

    /// 176,190 parameters in three norm blocks (three parameter slices) and batch norm's state slice.
    private static let config = """
        model:
          input: [1, 12, 12]
          layers:
            - conv: {filters: 4, kernel: 3, padding: 1}
            - batchnorm
            - relu
            - flatten
            - dense: 300
            - relu
            - dense: 10
        data:
          dataset: synthetic
          synthetic_train: 2400
          synthetic_test: 64
        train:
          epochs: 1
          batch: 24
          micro_batch: 4
          seed: 11
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0005}
          eval_batch: 64
          log_every: 1
        distributed:
          worker_timeout: 5
          heartbeat_interval: 0.2
          join_timeout: 30
        """

    private struct RunFailed: Error, CustomStringConvertible {
        var output: String
        var description: String { "the run failed:\n\(output)" }
    }

    /// Trains `steps` steps with `workers` spawned workers; returns the run directory and the trace's path.
    private func train(_ label: String, reduction: String, wire: String, workers: Int, threads: Int = 1) throws -> (run: String, trace: String) {
        let folder = try LocalCluster.temporaryDirectory(label)
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let run = folder + "/run", trace = folder + "/trace.json"
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", path, "--spawn-workers", "\(workers)", "--threads", "\(threads)", "--steps", "\(Self.steps)",
                          "--reduction", reduction, "--wire-precision", wire, "--run-dir", run, "--trace", trace, "--quiet"], seconds: 120)
        guard outcome.status == 0, !outcome.timedOut else { throw RunFailed(output: outcome.combined) }
        return (run, trace)
    }

    /// The final checkpoint's name and the xxh64 of its model and optimiser files.
    private func finalFiles(_ run: String) throws -> String {
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 10).list().last)
        let hashes = try ["model.safetensors", "optimizer.safetensors"].map { name in
            String(XXHash64.hash(array: Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/" + name)))), radix: 16)
        }
        return newest.split(separator: "/").last! + " " + hashes.joined(separator: " ")
    }

    /// The coordinator's socket byte counts over all steps of a trace: (sent, received).
    private func stepBytes(_ trace: String) throws -> (sent: Int, received: Int) {
        let text = try String(contentsOfFile: trace, encoding: .utf8)
        func total(_ key: String) throws -> Int {
            let pattern = try NSRegularExpression(pattern: "\"\(key)\": ?([0-9]+)")
            let matches = pattern.matches(in: text, range: NSRange(text.startIndex..., in: text))
            XCTAssertEqual(matches.count, Self.steps, "one \(key) per step span")
            return matches.reduce(0) { $0 + Int(text[Range($1.range(at: 1), in: text)!])! }
        }
        return (try total("bytes_sent"), try total("bytes_received"))
    }

    func testBFloat16OnTheWireGivesTheSameBitsForOneTwoAndThreeWorkersUnderBothStrategies() throws {
        let reference = try train("bf16-central2", reduction: "central", wire: "bf16", workers: 2)
        let expected = try finalFiles(reference.run)
        for (reduction, workers, threads) in [("central", 1, 1), ("central", 3, 1), ("sharded", 2, 1), ("sharded", 3, 2)] {
            let run = try train("bf16-\(reduction)\(workers)", reduction: reduction, wire: "bf16", workers: workers, threads: threads)
            XCTAssertEqual(try finalFiles(run.run), expected, "\(reduction), \(workers) workers of \(threads) thread(s)")
        }
        // The same run with Float32 on the wire: other bits (the rounding is real), and the
        // coordinator's sockets received twice the gradient bytes, while the weights it sent
        // (always Float32) are the same size.
        let fp32 = try train("fp32-central2", reduction: "central", wire: "fp32", workers: 2)
        XCTAssertNotEqual(try finalFiles(fp32.run), expected)
        let halved = try stepBytes(reference.trace), full = try stepBytes(fp32.trace)
        let ratio = Double(halved.received) / Double(full.received)
        XCTAssertTrue((0.49...0.52).contains(ratio), "bf16 / fp32 bytes received by the coordinator: \(halved.received) / \(full.received) = \(ratio)")
        XCTAssertEqual(Double(halved.sent), Double(full.sent), accuracy: 0.01 * Double(full.sent), "the weights go in Float32 either way")
    }
}
