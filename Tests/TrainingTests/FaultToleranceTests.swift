import CNN
import Checkpoint
import Foundation
import Hashing
import TestSupport
import Training
import XCTest

/// Issue "never lose a step": workers die, join, straggle; the coordinator dies and resumes.
/// Every scenario must end with the bits of an undisturbed run, and every run has a deadline.
final class FaultToleranceTests: XCTestCase {
    private static let steps = 16

    private static let config = Fixtures.fashionConfig(
        batch: 64, microBatch: 8, checkpoint: "checkpoint:\n  every: 4\n  keep: 10\n")

    /// The final weights of an undisturbed run, computed once.
    private static let undisturbed: String = {
        let folder = try! LocalCluster.temporaryDirectory("undisturbed")
        let path = try! LocalCluster.write(config, to: "config.yaml", in: folder)
        let outcome = try! LocalCluster.run(
            "cnn-coord", ["--config", path, "--spawn-workers", "2", "--steps", "\(steps)", "--run-dir", folder + "/run", "--quiet"],
            seconds: 120)
        precondition(outcome.status == 0, outcome.combined)
        return try! finalModel(folder + "/run")
    }()

    /// The xxh64 of the newest checkpoint's model file (equal hashes: equal bits, for all a test cares).
    private static func finalModel(_ run: String) throws -> String {
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 10).list().last)
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/model.safetensors")))
        XCTAssertGreaterThan(bytes.count, 10_000)
        return newest.split(separator: "/").last! + " " + String(XXHash64.hash(array: bytes), radix: 16)
    }

    private struct Run {
        let folder: String
        let configPath: String
        var run: String { folder + "/run" }
    }

    private func prepare(_ label: String, config: String = FaultToleranceTests.config) throws -> Run {
        let folder = try LocalCluster.temporaryDirectory(label)
        return Run(folder: folder, configPath: try LocalCluster.write(config, to: "config.yaml", in: folder))
    }

    /// Waits until metrics.jsonl has a training line at or past `step`.
    private func waitForStep(_ step: Int, in run: String, seconds: Double = 60) {
        if !LocalCluster.waitForTrainingStep(step, in: run, seconds: seconds) { XCTFail("step \(step) not reached in \(seconds) s") }
    }

    private func endpoint(of run: String) throws -> String {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: run + "/worker-command.txt", encoding: .utf8),
               let address = text.split(separator: " ").last {
                return address.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            usleep(20_000)
        }
        throw XCTSkip("the coordinator never wrote worker-command.txt")
    }

    private func children(of pid: Int32) -> [Int32] {
        LocalCluster.childProcesses(of: pid)
    }

    func testKillingAWorkerMidRunChangesNoBits() throws {
        let run = try prepare("killworker")
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "3", "--steps", "\(Self.steps)", "--run-dir", run.run])
        waitForStep(3, in: run.run)
        let workers = children(of: coordinator.process.processIdentifier)
        XCTAssertEqual(workers.count, 3)
        kill(try XCTUnwrap(workers.last), SIGKILL)
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("is gone"), outcome.error)
        XCTAssertEqual(try Self.finalModel(run.run), Self.undisturbed)
    }

    func testAKilledWorkerOnItsOwnIsGivenUpLongBeforeTheTimeout() throws {
        // Not spawned by the coordinator (whose children are watched as processes): what tells is
        // that its connection is gone (a send to it fails at once, heartbeats included). With a
        // 30 s timeout, waiting for silence would miss the deadline.
        let config = Self.config.replacingOccurrences(of: "worker_timeout: 5", with: "worker_timeout: 30")
        let run = try prepare("killexternal", config: config)
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", run.configPath, "--bind", "tcp://127.0.0.1:0", "--workers", "2", "--steps", "\(Self.steps)",
                          "--run-dir", run.run])
        let address = try endpoint(of: run.run)
        let workers = try (0..<2).map { _ in try LocalCluster.Child("cnn-worker", ["--connect", address, "--quiet"]) }
        defer { workers.forEach { $0.signal(SIGKILL) } }
        waitForStep(3, in: run.run)
        workers[1].signal(SIGKILL)
        let outcome = coordinator.wait(seconds: 25)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("is gone (its connection is gone)"), outcome.error)
        XCTAssertEqual(try Self.finalModel(run.run), Self.undisturbed)
    }

    func testAWorkerJoiningMidRunChangesNoBits() throws {
        let run = try prepare("join")
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "1", "--steps", "\(Self.steps)", "--run-dir", run.run])
        let address = try endpoint(of: run.run)
        waitForStep(4, in: run.run)
        let late = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "late"])
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("(late) joined"), outcome.error)
        let lateOutcome = late.wait(seconds: 30)
        XCTAssertEqual(lateOutcome.status, 0, lateOutcome.combined)
        XCTAssertEqual(try Self.finalModel(run.run), Self.undisturbed)
    }

    func testAWorkerMultiplyingWithAnotherLibraryIsNamedWithTheFix() throws {
        let run = try prepare("library")
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", run.configPath, "--workers", "1", "--steps", "2", "--run-dir", run.run])
        let address = try endpoint(of: run.run)
        var environment = LocalCluster.environment
        environment[BLAS.libraryVariable] = BLAS.library == .oneDNN ? "openblas" : "onednn"
        let other = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "other"], environment: environment)
        let outcome = coordinator.wait(seconds: 60)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("(other) multiplies with \(BLAS.library == .oneDNN ? "OpenBLAS" : "oneDNN")"), outcome.error)
        XCTAssertTrue(outcome.error.contains("same CNN_GEMM"), outcome.error)
        XCTAssertEqual(other.wait(seconds: 30).status, 0)
    }

    private static let resnet20Config = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("configs/resnet20.yaml")

    func testAWorkerStoppedInTheMiddleOfAComputationFinishesItAndExitsCleanly() throws {
        // ResNet-20's micro-batches keep the worker computing most of the time, so SIGTERM lands
        // in a computation: the worker used to exit under its computing thread and die of SIGSEGV.
        let folder = try LocalCluster.temporaryDirectory("stopmid")
        let run = folder + "/run"
        let configPath = try LocalCluster.write(
            try String(contentsOf: Self.resnet20Config, encoding: .utf8), to: "config.yaml",
            in: folder)
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", configPath, "--workers", "1", "--steps", "400", "--run-dir", run, "--quiet"])
        defer { coordinator.signal(SIGKILL); _ = coordinator.wait(seconds: 10) }
        let address = try endpoint(of: run)
        let worker = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "stopped"])
        waitForStep(4, in: run)
        // A tenth of a second into the next step: well inside its quarter second of computing.
        usleep(100_000)
        worker.signal(SIGTERM)
        let outcome = worker.wait(seconds: 30)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, "the worker must finish its micro-batch and exit 0:\n\(outcome.combined)")
    }

    func testASlowWorkerIsNamedAndBackupCopiesFinishItsStepsWithTheSameBits() throws {
        let run = try prepare("slow")
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "1", "--workers", "2", "--steps", "\(Self.steps)",
                          "--run-dir", run.run])
        let address = try endpoint(of: run.run)
        let delay = 3.0
        let slow = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "sluggish", "--compute-delay", "\(delay)"])
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("(sluggish) is slow"), outcome.error)
        XCTAssertNotNil(outcome.error.range(of: #"backup copies go to w\d+ \(local-0\)"#, options: .regularExpression), outcome.error)
        // Every step gives the slow worker part of its micro-batches: without the copies each
        // step would wait out its delay. With them the steps end long before.
        let done = try XCTUnwrap(outcome.output.range(of: #"done: \d+ steps in [0-9.]+ s"#, options: .regularExpression),
                                 "no final line:\n\(outcome.output)")
        let seconds = try XCTUnwrap(Double(outcome.output[done].split(separator: " ")[4]))
        XCTAssertLessThan(seconds, Double(Self.steps) * delay / 2, "the steps waited for the slow worker:\n\(outcome.combined)")
        _ = slow.wait(seconds: 30)
        XCTAssertEqual(try Self.finalModel(run.run), Self.undisturbed)
    }

    func testResumeAfterTheCoordinatorIsKilledContinuesBitIdenticallyWithOtherWorkerCounts() throws {
        let run = try prepare("resume")
        let first = try LocalCluster.Child(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "2", "--steps", "\(Self.steps)", "--run-dir", run.run])
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !CheckpointStore(runDirectory: run.run, keep: 10).list().contains(where: { $0.hasSuffix("step-00000008") }) {
            usleep(10_000)
        }
        first.signal(SIGKILL)
        _ = first.wait(seconds: 10)
        let resumed = try LocalCluster.run(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "3", "--steps", "\(Self.steps)", "--run-dir", run.run, "--resume"],
            seconds: 120)
        XCTAssertEqual(resumed.status, 0, resumed.combined)
        XCTAssertTrue(resumed.error.contains("resumed from"), resumed.error)
        XCTAssertEqual(try Self.finalModel(run.run), Self.undisturbed)
        // The metrics read as one run: each logged step once.
        let lines = try String(contentsOfFile: run.run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").filter { $0.contains("\"loss\"") }
        let steps = lines.compactMap { line -> Int? in
            guard let range = line.range(of: "\"step\": ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        XCTAssertEqual(steps, Array(Set(steps)).sorted())
    }

    func testResumeSkipsACorruptNewestCheckpointWithAWarningAndStillMatches() throws {
        let run = try prepare("corrupt")
        let partial = try LocalCluster.run(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "2", "--steps", "12", "--run-dir", run.run, "--quiet"], seconds: 120)
        XCTAssertEqual(partial.status, 0, partial.combined)
        let store = CheckpointStore(runDirectory: run.run, keep: 10)
        let newest = try XCTUnwrap(store.list().last)
        XCTAssertTrue(newest.hasSuffix("step-00000012"))
        // Flip one byte in the newest model file.
        let modelPath = newest + "/model.safetensors"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: modelPath))
        bytes[bytes.count - 5] ^= 0x40
        try bytes.write(to: URL(fileURLWithPath: modelPath))
        let resumed = try LocalCluster.run(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "1", "--steps", "\(Self.steps)", "--run-dir", run.run, "--resume"],
            seconds: 120)
        XCTAssertEqual(resumed.status, 0, resumed.combined)
        XCTAssertTrue(resumed.error.contains("step-00000012"), resumed.error)
        XCTAssertTrue(resumed.error.contains("resumed from") && resumed.error.contains("step-00000008"), resumed.error)
        XCTAssertEqual(try Self.finalModel(run.run), Self.undisturbed)
    }

    func testResumeWithADifferentConfigIsRefusedWithExitCodeTwo() throws {
        let run = try prepare("otherconfig")
        let partial = try LocalCluster.run(
            "cnn-coord", ["--config", run.configPath, "--spawn-workers", "1", "--steps", "4", "--run-dir", run.run, "--quiet"], seconds: 60)
        XCTAssertEqual(partial.status, 0, partial.combined)
        let other = try LocalCluster.write(Self.config.replacingOccurrences(of: "seed: 7", with: "seed: 8"), to: "other.yaml", in: run.folder)
        let resumed = try LocalCluster.run(
            "cnn-coord", ["--config", other, "--spawn-workers", "1", "--run-dir", run.run, "--resume"], seconds: 60)
        XCTAssertEqual(resumed.status, 2, resumed.combined)
        XCTAssertTrue(resumed.error.contains("another config"), resumed.error)
    }

}

extension FaultToleranceTests {
    func testAWorkerRejoinsARestartedCoordinatorAndTheRunMatches() throws {
        let run = try prepare("rejoin")
        let port = Int.random(in: 20_000..<60_000)
        let address = "tcp://127.0.0.1:\(port)"
        let first = try LocalCluster.Child(
            "cnn-coord", ["--config", run.configPath, "--bind", address, "--workers", "1", "--steps", "\(Self.steps)", "--run-dir", run.run])
        let worker = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "survivor", "--join-timeout", "60"])
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline, !CheckpointStore(runDirectory: run.run, keep: 10).list().contains(where: { $0.hasSuffix("step-00000008") }) {
            usleep(10_000)
        }
        first.signal(SIGKILL)
        _ = first.wait(seconds: 10)
        let second = try LocalCluster.run(
            "cnn-coord", ["--config", run.configPath, "--bind", address, "--workers", "1", "--steps", "\(Self.steps)",
                          "--run-dir", run.run, "--resume"],
            seconds: 120)
        XCTAssertEqual(second.status, 0, second.combined)
        XCTAssertTrue(second.error.contains("(survivor) joined"), second.error)
        let workerOutcome = worker.wait(seconds: 30)
        XCTAssertEqual(workerOutcome.status, 0, workerOutcome.combined)
        XCTAssertEqual(try Self.finalModel(run.run), Self.undisturbed)
    }
}
