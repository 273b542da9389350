import Checkpoint
import Foundation
import TestSupport
import XCTest

/// Gradients holding NaN or infinity never reach the weights; the policy decides what follows.
final class NonFiniteGradientTests: XCTestCase {
    /// A learning rate that makes the loss blow up within a few steps.
    private func divergingConfig(policy: String) -> String {
        Fixtures.fashionConfig(batch: 32, microBatch: 8)
            .replacingOccurrences(of: "lr: 0.05", with: "lr: 1.0e+12")
            .replacingOccurrences(of: "join_timeout: 30", with: "join_timeout: 30\n  nonfinite_gradients: \(policy)")
    }

    private func run(policy: String) throws -> (outcome: LocalCluster.Outcome, run: String) {
        let folder = try LocalCluster.temporaryDirectory("nan-\(policy)")
        let path = try LocalCluster.write(divergingConfig(policy: policy), to: "config.yaml", in: folder)
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", path, "--spawn-workers", "2", "--steps", "40", "--run-dir", folder + "/run"], seconds: 120)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        return (outcome, folder + "/run")
    }

    private func assertStoppedWithAReport(_ result: (outcome: LocalCluster.Outcome, run: String), file: StaticString = #filePath, line: UInt = #line) throws {
        let error = result.outcome.error
        XCTAssertEqual(result.outcome.status, 1, error, file: file, line: line)
        XCTAssertTrue(error.contains("NaN or infinity"), error, file: file, line: line)
        XCTAssertTrue(error.contains("worker w"), error, file: file, line: line)
        XCTAssertTrue(error.contains("step "), error, file: file, line: line)
        XCTAssertTrue(error.contains(".weight") || error.contains(".bias") || error.contains("the loss"), error, file: file, line: line)
        XCTAssertTrue(error.contains("last good weights"), error, file: file, line: line)
        // The checkpoint left behind holds only finite weights.
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: result.run, keep: 3).list().last, file: file, line: line)
        let model = try CheckpointStore.load(directory: newest).model
        for tensor in model.tensors {
            XCTAssertTrue(tensor.values.allSatisfy(\.isFinite), "\(tensor.name) is not finite", file: file, line: line)
        }
    }

    func testStopPolicyStopsAtTheFirstNonFiniteGradientNamingWorkerStepAndLayer() throws {
        let result = try run(policy: "stop")
        try assertStoppedWithAReport(result)
        XCTAssertTrue(result.outcome.error.contains("nonfinite_gradients: stop"), result.outcome.error)
    }

    func testRecomputePolicyRetriesElsewhereThenStopsWhenTheCopyDivergesToo() throws {
        let result = try run(policy: "recompute")
        XCTAssertTrue(result.outcome.error.contains("recomputing them on another worker"), result.outcome.error)
        try assertStoppedWithAReport(result)
        XCTAssertTrue(result.outcome.error.contains("training diverged"), result.outcome.error)
    }
}
