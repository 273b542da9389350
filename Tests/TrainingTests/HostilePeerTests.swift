import CNN
import Checkpoint
import Foundation
import Logging
import Training
import Wire
import XCTest

/// Log lines, kept for the test to read.
private final class LogLines: @unchecked Sendable {
    // Sendable: `lines` is only touched under `lock`.
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) {
        lock.lock()
        lines.append(line)
        lock.unlock()
    }

    var all: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }
}

private struct CapturingLogHandler: LogHandler {
    let lines: LogLines
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        lines.append("\(event.level): \(event.message)")
    }
}

/// A peer that sends what no honest worker sends (thread counts past any machine, steps past any
/// run, names with newlines, terminal escape codes and a megabyte of text): the coordinator keeps
/// one log line per event and the bits of an undisturbed run.
final class HostilePeerTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    private let config = """
        model:
          input: [1, 12, 12]
          layers:
            - conv: {filters: 4, kernel: 3, padding: 1}
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
          seed: 3
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
          eval_batch: 64
          log_every: 4
        distributed:
          worker_timeout: 1
          heartbeat_interval: 0.2
          join_timeout: 30
        """

    private final class Trigger: RunObserver {
        var started: () -> Void = {}
        func runStarted(_ start: RunStart) { started() }
    }

    func testHugeThreadCountsHugeStepsAndHostileTextChangeNoBitsAndKeepTheLogOneLinePerEvent() throws {
        var parsed = try TrainingConfig.parse(yaml: config, source: "hostile test")
        parsed.train.maxSteps = 6
        let run = NSTemporaryDirectory() + "hostile-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: run) }
        let network = InMemoryNetwork()
        let coordinatorID = PeerID(bytes: Array("coordinator".utf8))
        let lines = LogLines()
        let trigger = Trigger()
        var options = CoordinatorOptions()
        options.runDirectory = run
        options.progress = .none
        options.observers = [trigger]
        let coordinator = try Coordinator(
            config: parsed, options: options, logger: Logger(label: "coord") { _ in CapturingLogHandler(lines: lines) },
            transport: network.endpoint(coordinatorID), endpoint: "memory://coordinator")

        let forged = "w9\n[coord] warning: forged line\u{1b}[2J\u{1b}]0;owned\u{07}"
        let megabyte = String(repeating: "m", count: 1 << 20)
        let hostiles = [("greedy", Int.max), ("escapes", 1), ("huge", 2)]
        // Once the run has started (so the honest worker is the one the first step waits for),
        // each hostile peer joins and then misbehaves with the run's own id.
        trigger.started = {
            Thread {
                for (name, threads) in hostiles {
                    let endpoint = network.endpoint(PeerID(bytes: Array(name.utf8)), connectedTo: coordinatorID)
                    let hello = Hello(name: name == "escapes" ? forged : (name == "huge" ? megabyte : name), threads: threads,
                                      processID: 1, hostName: name == "escapes" ? forged : megabyte, coreType: forged)
                    try? endpoint.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
                    var runID: UInt64?
                    let deadline = Date().addingTimeInterval(5)
                    while runID == nil, Date() < deadline, let incoming = try? endpoint.receive(timeoutMilliseconds: 100) {
                        if case .success(let envelope) = incoming.result, case .welcome = envelope.message { runID = envelope.runID }
                    }
                    guard let runID else { continue }
                    // "greedy" claims Int.max threads and then falls silent holding its share.
                    guard name != "greedy" else { continue }
                    for step in [UInt64.max, UInt64(Int.max) + 1] {
                        try? endpoint.send(Envelope(runID: runID, step: step, message: .heartbeat(Heartbeat(sentAtMilliseconds: .max, busy: true))), to: nil)
                    }
                    let parting: Message = name == "escapes" ? .error(WireFailure(code: 500, text: forged)) : .bye(Bye(reason: forged + megabyte.prefix(1 << 19)))
                    try? endpoint.send(Envelope(runID: runID, step: .max, message: parting), to: nil)
                }
            }.start()
        }
        Thread {
            let worker = Worker(
                options: WorkerOptions(connect: "memory://coordinator", name: "honest"), logger: Logger(label: "honest") { _ in SwiftLogNoOpLogHandler() },
                transport: network.endpoint(PeerID(bytes: Array("honest".utf8)), connectedTo: coordinatorID))
            try? worker.run()
        }.start()
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 6)

        let reference = try ReferenceTrainer(config: parsed, data: DataSource.load(parsed))
        try reference.train()
        let saved = try CheckpointStore.load(directory: summary.finalCheckpoint)
        for tensor in reference.state.modelTensors() {
            XCTAssertEqual(saved.model[tensor.name]?.values.map(\.bitPattern), tensor.values.map(\.bitPattern), tensor.name)
        }
        let log = lines.all
        for expected in ["joined from", "reported error 500", "left: w9", "(greedy)"] {
            XCTAssertTrue(log.contains { $0.contains(expected) }, "no line with '\(expected)':\n" + log.map { String($0.prefix(300)) }.joined(separator: "\n"))
        }
        for line in log {
            XCTAssertFalse(line.unicodeScalars.contains { $0.properties.generalCategory == .control }, "a control character reached the log: \(line.prefix(300))")
            XCTAssertLessThan(line.utf8.count, 2000, "a log line carries a peer's megabyte: \(line.prefix(300))")
        }
    }

    /// A worker whose losses are finite but whose gradient holds a NaN: refused, its micro-batches
    /// recomputed by the honest worker, the bits those of the reference.
    func testANaNInsideAGradientWithFiniteLossesIsRefusedAndRecomputedElsewhere() throws {
        var parsed = try TrainingConfig.parse(yaml: config, source: "hostile test")
        parsed.train.maxSteps = 4
        let run = NSTemporaryDirectory() + "hostile-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: run) }
        let network = InMemoryNetwork()
        let coordinatorID = PeerID(bytes: Array("coordinator".utf8))
        let lines = LogLines()
        let trigger = Trigger()
        var options = CoordinatorOptions()
        options.runDirectory = run
        options.progress = .none
        options.observers = [trigger]
        let coordinator = try Coordinator(
            config: parsed, options: options, logger: Logger(label: "coord") { _ in CapturingLogHandler(lines: lines) },
            transport: network.endpoint(coordinatorID), endpoint: "memory://coordinator")
        let answered = LogLines()
        trigger.started = {
            Thread {
                let endpoint = network.endpoint(PeerID(bytes: Array("poisoner".utf8)), connectedTo: coordinatorID)
                let hello = Hello(name: "poisoner", threads: 1, processID: 1, hostName: "h", coreType: BLAS.kernelName)
                try? endpoint.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
                var parameters = 0
                let deadline = Date().addingTimeInterval(10)
                while Date() < deadline, let incoming = try? endpoint.receive(timeoutMilliseconds: 200) {
                    guard case .success(let envelope) = incoming.result else { continue }
                    switch envelope.message {
                    case .welcome(let welcome):
                        parameters = welcome.parameterCount
                    case .assign(let assignment) where assignment.kind == .train:
                        let results = assignment.microBatches.map {
                            MicroBatchResult(index: UInt32($0.index), lossSum: 1, correct: 0, samples: UInt32($0.samples.count))
                        }
                        let nodes = assignment.microBatches.map { TreeNode(level: 0, index: $0.index) }
                        let tensors = nodes.map { _ in
                            FloatPayload(count: parameters) { values in
                                for i in values.indices { values[i] = 0 }
                                values[values.count / 2] = .nan
                            }
                        }
                        let gradients = Gradients(epoch: assignment.epoch, results: results, nodes: nodes, tensors: tensors)
                        try? endpoint.send(Envelope(runID: envelope.runID, step: envelope.step, message: .gradients(gradients)), to: nil)
                        answered.append("\(envelope.step)")
                    default:
                        break
                    }
                }
            }.start()
        }
        Thread {
            let worker = Worker(
                options: WorkerOptions(connect: "memory://coordinator", name: "honest"), logger: Logger(label: "honest") { _ in SwiftLogNoOpLogHandler() },
                transport: network.endpoint(PeerID(bytes: Array("honest".utf8)), connectedTo: coordinatorID))
            try? worker.run()
        }.start()
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 4)
        XCTAssertFalse(answered.all.isEmpty, "the poisoner was never given work")
        let refusals = lines.all.filter { $0.contains("NaN or infinity") && $0.contains("recomputing them on another worker") }
        XCTAssertFalse(refusals.isEmpty, lines.all.joined(separator: "\n"))
        XCTAssertTrue(refusals.allSatisfy { $0.contains("poisoner") && $0.contains("NaN at ") }, refusals.joined(separator: "\n"))
        let reference = try ReferenceTrainer(config: parsed, data: DataSource.load(parsed))
        try reference.train()
        let saved = try CheckpointStore.load(directory: summary.finalCheckpoint)
        for tensor in reference.state.modelTensors() {
            XCTAssertEqual(saved.model[tensor.name]?.values.map(\.bitPattern), tensor.values.map(\.bitPattern), tensor.name)
        }
    }
}
