import CNN
import Checkpoint
import Foundation
import PeerSecurity
import Training
import Wire
import XCTest

/// The real coordinator and workers in one process, talking through the in-memory transport:
/// the whole protocol without sockets or processes, held to the single-process reference.
final class InMemoryClusterTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    private let config = """
        model:
          input: [1, 12, 12]
          layers:
            - conv: {filters: 4, kernel: 3, padding: 1}
            - batchnorm
            - relu
            - maxpool: 2
            - flatten
            - dense: 10
        data:
          dataset: synthetic
          synthetic_train: 256
          synthetic_test: 64
        train:
          epochs: 1
          batch: 32
          micro_batch: 4
          seed: 5
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
          eval_batch: 64
          log_every: 4
        distributed:
          worker_timeout: 5
          heartbeat_interval: 0.2
          join_timeout: 30
        """

    func testACoordinatorAndThreeWorkersInMemoryMatchTheReferenceBitForBit() throws {
        var parsed = try TrainingConfig.parse(yaml: config, source: "in-memory test")
        parsed.train.maxSteps = 6
        let run = NSTemporaryDirectory() + "in-memory-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: run) }

        let network = InMemoryNetwork()
        let coordinatorID = PeerID(bytes: Array("coordinator".utf8))
        var options = CoordinatorOptions()
        options.expectedWorkers = 3
        options.runDirectory = run
        options.progress = .none
        let coordinator = try Coordinator(
            config: parsed, options: options, logger: makeLogger(label: "coord", level: .warning),
            transport: network.endpoint(coordinatorID), endpoint: "memory://coordinator")
        let workers = (0..<3).map { index in
            Thread {
                let worker = Worker(
                    options: WorkerOptions(connect: "memory://coordinator", threads: index == 1 ? 2 : 1, name: "m\(index)"),
                    logger: makeLogger(label: "m\(index)", level: .warning),
                    transport: network.endpoint(PeerID(bytes: Array("m\(index)".utf8)), connectedTo: coordinatorID))
                try? worker.run()
            }
        }
        workers.forEach { $0.start() }
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 6)

        let reference = try ReferenceTrainer(config: parsed, data: DataSource.load(parsed))
        try reference.train()
        let saved = try CheckpointStore.load(directory: summary.finalCheckpoint)
        for tensor in reference.state.modelTensors() {
            let values = try XCTUnwrap(saved.model[tensor.name], "the checkpoint lacks \(tensor.name)").values
            XCTAssertEqual(values.map(\.bitPattern), tensor.values.map(\.bitPattern), "\(tensor.name) differs from the reference")
        }
        let metrics = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(metrics.filter { $0.contains("\"loss\"") }.count, 2, "a line at steps 4 and 6:\n\(metrics.joined(separator: "\n"))")
        XCTAssertEqual(metrics.filter { $0.contains("\"test_accuracy\"") }.count, 1)
        XCTAssertTrue(metrics.first?.contains("\"workers\": 3") ?? false, metrics.first.map(String.init) ?? "")
    }

    /// Counts the workers that join, by name.
    private final class JoinCounter: RunObserver {
        var joins: [String: Int] = [:]
        var departures: [String: [String]] = [:]
        var started: () -> Void = {}
        func runStarted(_ start: RunStart) { started() }
        func workerJoined(_ worker: WorkerStatus) { joins[worker.name, default: 0] += 1 }
        func workerLeft(_ worker: WorkerStatus, reason: String) { departures[worker.name, default: []].append(reason) }
    }

    /// A peer saying hello again and again would have the coordinator send it the weights each
    /// time for a few bytes of its own: after `max_strikes` repeats it is evicted and ignored.
    func testAPeerThatKeepsSayingHelloIsEvictedAndTheRunMatchesTheReference() throws {
        var parsed = try TrainingConfig.parse(yaml: config, source: "in-memory test")
        parsed.train.maxSteps = 4
        let run = NSTemporaryDirectory() + "in-memory-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: run) }
        let network = InMemoryNetwork()
        let coordinatorID = PeerID(bytes: Array("coordinator".utf8))
        let counter = JoinCounter()
        var options = CoordinatorOptions()
        options.runDirectory = run
        options.progress = .none
        options.observers = [counter]
        let coordinator = try Coordinator(
            config: parsed, options: options, logger: makeLogger(label: "coord", level: .error),
            transport: network.endpoint(coordinatorID), endpoint: "memory://coordinator")
        let rogue = network.endpoint(PeerID(bytes: Array("rogue".utf8)), connectedTo: coordinatorID)
        counter.started = {
            let hello = Envelope(runID: 0, step: 0, message: .hello(Hello(name: "rogue", threads: 1, processID: 1, hostName: "h", coreType: BLAS.kernelName)))
            for _ in 0..<60 { try? rogue.send(hello, to: nil) }
        }
        Thread {
            let worker = Worker(
                options: WorkerOptions(connect: "memory://coordinator", name: "honest"), logger: makeLogger(label: "honest", level: .error),
                transport: network.endpoint(PeerID(bytes: Array("honest".utf8)), connectedTo: coordinatorID))
            try? worker.run()
        }.start()
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 4)
        XCTAssertEqual(counter.joins["honest"], 1)
        XCTAssertLessThanOrEqual(counter.joins["rogue", default: 0], PeerLimits().maxStrikes, "\(counter.joins)")
        XCTAssertTrue(counter.departures["rogue", default: []].contains { $0.contains("evicted") && $0.contains("hello again") },
                      "\(counter.departures)")
        let reference = try ReferenceTrainer(config: parsed, data: DataSource.load(parsed))
        try reference.train()
        let saved = try CheckpointStore.load(directory: summary.finalCheckpoint)
        for tensor in reference.state.modelTensors() {
            XCTAssertEqual(saved.model[tensor.name]?.values.map(\.bitPattern), tensor.values.map(\.bitPattern), tensor.name)
        }
    }

    func testARepeatedWarningIsSaidOncePerIntervalWithTheCountHeldBack() {
        var warning = RepeatedWarning(interval: 10)
        XCTAssertEqual(warning.shouldSay(now: 0), 0)
        XCTAssertNil(warning.shouldSay(now: 1))
        XCTAssertNil(warning.shouldSay(now: 9.9))
        XCTAssertEqual(warning.shouldSay(now: 10), 2)
        XCTAssertNil(warning.shouldSay(now: 11))
        XCTAssertEqual(warning.shouldSay(now: 30), 1)
    }
}
