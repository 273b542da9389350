import CNN
import Checkpoint
import Foundation
import Logging
import Training
import Wire
import XCTest

/// One run of the real coordinator and workers in this process, over the in-memory transport:
/// a small synthetic model, a scratch run directory, and the single-process reference to hold
/// the result to.
final class InMemoryRun: Sendable {
    static let coordinatorAddress = "memory://coordinator"
    static let coordinatorID = PeerID(bytes: Array("coordinator".utf8))

    let network = InMemoryNetwork()
    /// Where workers of a sharded run reach each other.
    let peers = InMemoryPeerHub()
    let config: TrainingConfig
    let directory = NSTemporaryDirectory() + "in-memory-\(UUID().uuidString)"

    /// The model of the tests: a convolution (with batch norm when asked), pooling, a classifier;
    /// the reduction is the default one unless `reduction` names one.
    init(steps: Int, seed: Int = 5, batchNorm: Bool = false, workerTimeout: Double = 5, schedule: String = "constant",
         reduction: ReductionKind? = nil) throws {
        var config = try TrainingConfig.parse(yaml: """
            model:
              input: [1, 12, 12]
              layers:
                - conv: {filters: 4, kernel: 3, padding: 1}
                \(batchNorm ? "- batchnorm" : "")
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
              seed: \(seed)
              schedule: \(schedule)
              optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
              eval_batch: 64
              log_every: 4
            distributed:
              worker_timeout: \(workerTimeout)
              heartbeat_interval: 0.2
              join_timeout: 30
            """ + (reduction.map { "\n  reduction: \($0.rawValue)\n" } ?? ""), source: "in-memory test")
        config.train.maxSteps = steps
        self.config = config
    }

    /// A run of `yaml` (a whole config) for `steps` steps.
    init(yaml: String, steps: Int) throws {
        var config = try TrainingConfig.parse(yaml: yaml, source: "in-memory test")
        config.train.maxSteps = steps
        self.config = config
    }

    deinit {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// A coordinator of this run reached through the network.
    func coordinator(logger: Logger, observers: [RunObserver] = [], expectedWorkers: Int? = nil) throws -> Coordinator {
        var options = CoordinatorOptions()
        options.runDirectory = directory
        options.progress = .none
        options.observers = observers
        options.expectedWorkers = expectedWorkers
        return try Coordinator(config: config, options: options, logger: logger, transport: network.endpoint(Self.coordinatorID),
                               endpoint: Self.coordinatorAddress)
    }

    /// An endpoint named `name` connected to the coordinator, as a worker's would be.
    func endpoint(_ name: String) -> InMemoryTransport {
        network.endpoint(PeerID(bytes: Array(name.utf8)), connectedTo: Self.coordinatorID)
    }

    /// Starts a real worker on a thread of its own; it serves until the coordinator says goodbye.
    /// `wrapPeers` may put the worker's peer transport behind a fault-injecting one; `logger`
    /// keeps its lines (they are dropped otherwise).
    func startWorker(name: String, threads: Int = 1, logger: Logger? = nil,
                     wrapPeers: @escaping @Sendable (InMemoryPeerTransport) -> PeerTransport = { $0 }) {
        let network = network
        let peers = peers
        Thread {
            var options = WorkerOptions(connect: InMemoryRun.coordinatorAddress, threads: threads, name: name)
            options.peerTransport = { id in wrapPeers(try peers.transport(workerID: id)) }
            let worker = Worker(
                options: options,
                logger: logger ?? Logger(label: name) { _ in SwiftLogNoOpLogHandler() },
                transport: network.endpoint(PeerID(bytes: Array(name.utf8)), connectedTo: InMemoryRun.coordinatorID))
            try? worker.run()
        }.start()
    }

    /// Fails unless the checkpoint `summary` names holds, bit for bit, what the single-process
    /// reference computes for this run's config.
    func assertMatchesReference(_ summary: RunSummary, file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = try ReferenceTrainer(config: config, data: DataSource.load(config))
        try reference.train()
        let saved = try CheckpointStore.load(directory: summary.finalCheckpoint)
        for tensor in reference.state.modelTensors() {
            let values = try XCTUnwrap(saved.model[tensor.name], "the checkpoint lacks \(tensor.name)", file: file, line: line).values
            XCTAssertEqual(values.map(\.bitPattern), tensor.values.map(\.bitPattern), "\(tensor.name) differs from the reference",
                           file: file, line: line)
        }
    }
}

/// Log lines, kept for a test to read.
final class LogLines: @unchecked Sendable {
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

    /// A logger whose lines (`level: message`) go here.
    func logger(label: String) -> Logger {
        Logger(label: label) { _ in CapturingLogHandler(lines: self) }
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

/// Calls `started` when the run starts (on the coordinator's thread), and counts joins and
/// departures by worker name.
final class RunEvents: RunObserver {
    var started: () -> Void = {}
    private(set) var joins: [String: Int] = [:]
    private(set) var departures: [String: [String]] = [:]

    func runStarted(_ start: RunStart) { started() }
    func workerJoined(_ worker: WorkerStatus) { joins[worker.name, default: 0] += 1 }
    func workerLeft(_ worker: WorkerStatus, reason: String) { departures[worker.name, default: []].append(reason) }
}
