import CNN
import Checkpoint
import Foundation
import Hashing
import TestSupport
import Training
import XCTest

/// The sharded reduction with real processes on loopback: workers send each other slices over
/// their own sockets (`PeerMesh`), and every run must end with the bits of the central strategy,
/// whatever the worker count, a dead slice owner, a join, or a resume that switches strategy.
final class ShardedClusterTests: XCTestCase {
    private static let steps = 12

    /// 176,190 parameters (three norm blocks, so three parameter slices) and batch norm's state
    /// slice; momentum with Nesterov and decay; a checkpoint every 4 steps (each a gather).
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
        checkpoint:
          every: 4
          keep: 10
        """

    /// Model and optimiser files of the central strategy's run with two workers, computed once.
    private static let central: String = {
        let run = try! train(label: "central", reduction: "central", workers: 2)
        return try! finalFiles(run)
    }()

    private static func train(label: String, reduction: String, workers: Int, threads: Int = 1, steps: Int = steps,
                              extra: [String] = [], run existing: String? = nil) throws -> String {
        let folder = try LocalCluster.temporaryDirectory(label)
        let path = try LocalCluster.write(config, to: "config.yaml", in: folder)
        let run = existing ?? folder + "/run"
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", path, "--spawn-workers", "\(workers)", "--threads", "\(threads)", "--steps", "\(steps)",
                          "--reduction", reduction, "--run-dir", run, "--quiet"] + extra, seconds: 120)
        guard outcome.status == 0, !outcome.timedOut else { throw RunFailed(output: outcome.combined) }
        return run
    }

    private struct RunFailed: Error, CustomStringConvertible {
        var output: String
        var description: String { "the run failed:\n\(output)" }
    }

    /// The newest checkpoint's name and the xxh64 of its model and optimiser files.
    private static func finalFiles(_ run: String) throws -> String {
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 10).list().last)
        let hashes = try ["model.safetensors", "optimizer.safetensors"].map { name in
            String(XXHash64.hash(array: Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/" + name)))), radix: 16)
        }
        return newest.split(separator: "/").last! + " " + hashes.joined(separator: " ")
    }

    func testOneToEightWorkersOwningSlicesEqualTheCentralRunBitForBit() throws {
        for (workers, threads) in [(1, 1), (2, 1), (3, 2), (4, 1), (8, 1)] {
            let run = try Self.train(label: "sharded\(workers)", reduction: "sharded", workers: workers, threads: threads)
            XCTAssertEqual(try Self.finalFiles(run), Self.central, "\(workers) workers of \(threads) thread(s)")
            let metrics = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)
            XCTAssertTrue(metrics.contains("\"workers\": \(workers)"), metrics)
        }
    }

    func testTheCentralStrategyGivesTheSameBitsForOneThreeAndEightWorkers() throws {
        for workers in [1, 3, 8] {
            let run = try Self.train(label: "central\(workers)", reduction: "central", workers: workers)
            XCTAssertEqual(try Self.finalFiles(run), Self.central, "\(workers) workers")
        }
    }

    func testAStragglersSlicesAndMicroBatchesDoNotHoldTheRunOrChangeItsBits() throws {
        // One of three workers takes 0.4 s more for each assignment: its micro-batches get backup
        // copies elsewhere, while it still owns slices and must reduce them.
        let folder = try LocalCluster.temporaryDirectory("straggler")
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", path, "--bind", "tcp://127.0.0.1:0", "--workers", "3", "--steps", "6", "--reduction", "sharded",
                          "--run-dir", run])
        let address = try endpoint(of: run)
        let workers = try (0..<3).map { index in
            try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "w\(index)"] + (index == 0 ? ["--compute-delay", "0.4"] : []))
        }
        defer { workers.forEach { $0.signal(SIGKILL) } }
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("is slow"), "backup copies for the straggler:\n\(outcome.error)")
        let straight = try Self.train(label: "straggler-ref", reduction: "central", workers: 2, steps: 6)
        XCTAssertEqual(try Self.finalFiles(run), try Self.finalFiles(straight))
    }

    private func endpoint(of run: String) throws -> String {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: run + "/worker-command.txt", encoding: .utf8), let address = text.split(separator: " ").last {
                return address.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            usleep(20_000)
        }
        throw XCTSkip("the coordinator never wrote worker-command.txt")
    }

    func testResumingWithTheOtherStrategyContinuesBitExactly() throws {
        let folder = try LocalCluster.temporaryDirectory("switch")
        let run = folder + "/run"
        _ = try Self.train(label: "switch-a", reduction: "central", workers: 2, steps: 6, run: run)
        _ = try Self.train(label: "switch-b", reduction: "sharded", workers: 3, steps: 9, extra: ["--resume"], run: run)
        _ = try Self.train(label: "switch-c", reduction: "central", workers: 1, extra: ["--resume"], run: run)
        XCTAssertEqual(try Self.finalFiles(run), Self.central)
    }

    func testKillingASliceOwnerMidRunChangesNoBits() throws {
        let folder = try LocalCluster.temporaryDirectory("killowner")
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", path, "--spawn-workers", "3", "--steps", "\(Self.steps)", "--reduction", "sharded", "--run-dir", run])
        waitForStep(5, in: run)
        let workers = children(of: coordinator.process.processIdentifier)
        XCTAssertEqual(workers.count, 3)
        kill(try XCTUnwrap(workers.first), SIGKILL)
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("survivor"), "a new plan over the survivors:\n\(outcome.error)")
        XCTAssertEqual(try Self.finalFiles(run), Self.central)
    }

    func testKillingTwoOfThreeWorkersAtOnceRewindsToTheLastCheckpointAndChangesNoBits() throws {
        // With three workers every pair holds some slice as owner and replica: killed together,
        // that slice's state is gone, and the run goes back to its last checkpoint.
        let folder = try LocalCluster.temporaryDirectory("killpair")
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", path, "--spawn-workers", "3", "--steps", "\(Self.steps)", "--reduction", "sharded", "--run-dir", run])
        // The workers are found before the kill is due: listing processes takes long enough for
        // a fast run to pass the checkpoint of step 8, whose gather leaves the coordinator
        // holding every slice (then nothing is lost, and there is no rewind to see).
        waitForStep(1, in: run)
        let workers = children(of: coordinator.process.processIdentifier)
        XCTAssertEqual(workers.count, 3)
        waitForStep(5, in: run)
        for pid in workers.prefix(2) { kill(pid, SIGKILL) }
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("going back to"), "a rewind to the checkpoint:\n\(outcome.error)")
        XCTAssertEqual(try Self.finalFiles(run), Self.central)
        // Every step's line once, as in an undisturbed run.
        let steps = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .filter { $0.contains("\"loss\"") }.compactMap { line -> Int? in
                guard let range = line.range(of: "\"step\": ") else { return nil }
                return Int(line[range.upperBound...].prefix { $0.isNumber })
            }
        XCTAssertEqual(steps, Array(1...Self.steps))
    }

    /// The survivor of a rewind still has work of the step the run left queued (the dead
    /// workers' micro-batches, handed to it while its own computation ran): the first assignment
    /// after the rewind, of an earlier step, must replace that work, not wait behind it for ever.
    func testARewindDropsWorkQueuedForTheStepTheRunLeft() throws {
        let folder = try LocalCluster.temporaryDirectory("rewindqueue")
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", path, "--bind", "tcp://127.0.0.1:0", "--workers", "3", "--steps", "\(Self.steps)",
                          "--reduction", "sharded", "--run-dir", run])
        let address = try endpoint(of: run)
        // The survivor is slow, so the dead workers' micro-batches queue up behind its computation.
        let survivor = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "survivor", "--compute-delay", "0.3"])
        let doomed = try (0..<2).map { try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "doomed\($0)"]) }
        defer { survivor.signal(SIGKILL) }
        waitForStep(6, in: run)
        doomed.forEach { $0.signal(SIGKILL) }
        let outcome = coordinator.wait(seconds: 60)
        XCTAssertFalse(outcome.timedOut, "the run hung after the rewind:\n\(outcome.combined)")
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("going back to"), "a rewind to the checkpoint:\n\(outcome.error)")
        XCTAssertEqual(try Self.finalFiles(run), Self.central)
    }

    func testWhenEveryWorkerIsGoneANewOneCarriesOnFromTheCheckpointWithTheSameBits() throws {
        let folder = try LocalCluster.temporaryDirectory("allgone")
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", path, "--bind", "tcp://127.0.0.1:0", "--workers", "1", "--steps", "\(Self.steps)",
                          "--reduction", "sharded", "--run-dir", run])
        let address = try endpoint(of: run)
        let first = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "first"])
        waitForStep(6, in: run)
        first.signal(SIGKILL)
        let second = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "second"])
        defer { second.signal(SIGKILL) }
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("(second) joined"), outcome.error)
        XCTAssertEqual(try Self.finalFiles(run), Self.central)
    }

    func testAWorkerJoiningMidRunGetsItsWeightsFromTheOwnersAndChangesNoBits() throws {
        let folder = try LocalCluster.temporaryDirectory("joinsharded")
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", path, "--bind", "tcp://127.0.0.1:0", "--workers", "2", "--steps", "\(Self.steps)",
                          "--reduction", "sharded", "--run-dir", run])
        let address = try endpoint(of: run)
        // Steps of at least 0.2 s, so that the run is still going when the late worker has
        // started and joined (undelayed, all twelve steps can be over in a quarter of a second).
        let first = try (0..<2).map { try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "w\($0)", "--compute-delay", "0.2"]) }
        defer { first.forEach { $0.signal(SIGKILL) } }
        waitForStep(3, in: run)
        let late = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "late"])
        defer { late.signal(SIGKILL) }
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("(late) joined"), outcome.error)
        XCTAssertTrue(outcome.error.contains("sharded plan 2: 3 member(s)"), "the late worker became a member:\n\(outcome.error)")
        XCTAssertEqual(try Self.finalFiles(run), Self.central)
    }

    /// A worker started before its coordinator has several hellos queued; each is welcomed with
    /// a new id. It must take the last one, or it would not recognise itself in the plan.
    func testAWorkerStartedBeforeItsCoordinatorKnowsItselfInThePlan() throws {
        let folder = try LocalCluster.temporaryDirectory("early")
        let path = try LocalCluster.write(Self.config, to: "config.yaml", in: folder)
        let port = try Self.freePort()
        let worker = try LocalCluster.Child("cnn-worker", ["--connect", "tcp://127.0.0.1:\(port)", "--name", "early"])
        defer { worker.signal(SIGKILL) }
        usleep(1_500_000)
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", path, "--bind", "tcp://127.0.0.1:\(port)", "--workers", "1", "--steps", "4",
                          "--reduction", "sharded", "--run-dir", folder + "/run"], seconds: 60)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
    }

    /// A TCP port nothing listens on now.
    private static func freePort() throws -> Int {
        let socket = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socket) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socket, $0, length) == 0 && getsockname(socket, $0, &length) == 0 }
        }
        guard bound else { throw XCTSkip("cannot find a free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Waits until metrics.jsonl has a training line at or past `step`.
    private func waitForStep(_ step: Int, in run: String, seconds: Double = 60) {
        if !LocalCluster.waitForTrainingStep(step, in: run, seconds: seconds) { XCTFail("step \(step) not reached in \(seconds) s") }
    }

    private func children(of pid: Int32) -> [Int32] {
        LocalCluster.childProcesses(of: pid)
    }
}
