import CNN
import Checkpoint
import Foundation
import Training
import Wire
import XCTest

/// The sharded reduction with the real coordinator and workers in one process (in-memory
/// transports for the coordinator and between workers), held to the single-process reference:
/// owners among the workers must compute exactly the central strategy's bits.
final class ShardedTrainingTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    /// 176,190 parameters: three norm blocks, so three parameter slices, and batch norm's state slice.
    static func yaml(optimizer: String = "{name: sgd, lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 0.0005}",
                     clip: Double? = nil) -> String {
        """
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
          synthetic_train: 256
          synthetic_test: 64
        train:
          epochs: 1
          batch: 24
          micro_batch: 4
          seed: 11
          optimizer: \(optimizer)
          eval_batch: 64
          log_every: 2
        \(clip.map { "  clip_grad_norm: \($0)" } ?? "")
        distributed:
          worker_timeout: 5
          heartbeat_interval: 0.2
          join_timeout: 30
          reduction: sharded
        """
    }

    private func runSharded(_ yaml: String, steps: Int, workers threads: [Int]) throws -> (InMemoryRun, RunSummary) {
        let run = try InMemoryRun(yaml: yaml, steps: steps)
        let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .debug), expectedWorkers: threads.count)
        for (index, count) in threads.enumerated() { run.startWorker(name: "s\(index)", threads: count) }
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, steps)
        return (run, summary)
    }

    func testThreeWorkersOwningSlicesMatchTheReferenceBitForBit() throws {
        let (run, summary) = try runSharded(Self.yaml(), steps: 5, workers: [1, 2, 1])
        try run.assertMatchesReference(summary)
        try assertOptimizerMatchesReference(run, summary)
    }

    func testOneWorkerOwningEverySliceMatchesTheReference() throws {
        let (run, summary) = try runSharded(Self.yaml(), steps: 3, workers: [2])
        try run.assertMatchesReference(summary)
    }

    func testClippedAdamWWithOwnersMatchesTheReference() throws {
        let (run, summary) = try runSharded(Self.yaml(optimizer: "{name: adamw, lr: 0.001, weight_decay: 0.01}", clip: 0.5), steps: 4,
                                            workers: [1, 1])
        try run.assertMatchesReference(summary)
        try assertOptimizerMatchesReference(run, summary)
    }

    /// A worker that says where it listens and then falls silent never adopts the plan it is
    /// put in: it must be given up after the worker timeout, not waited for for ever.
    func testAWorkerSilentBeforeItsFirstPlanIsGivenUpAndTheRunGoesOn() throws {
        let run = try InMemoryRun(yaml: Self.yaml().replacingOccurrences(of: "worker_timeout: 5", with: "worker_timeout: 1"), steps: 3)
        let lines = LogLines()
        let coordinator = try run.coordinator(logger: lines.logger(label: "coord"), expectedWorkers: 2)
        Thread {
            let silent = run.endpoint("silent")
            let hello = Hello(name: "silent", threads: 1, processID: 7, hostName: "h", coreType: BLAS.kernelName)
            try? silent.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
            let deadline = Date().addingTimeInterval(10)
            while Date() < deadline, let incoming = try? silent.receive(timeoutMilliseconds: 100) {
                guard case .success(let envelope) = incoming.result, case .welcome = envelope.message else { continue }
                try? silent.send(Envelope(runID: envelope.runID, step: 0, message: .listening(Listening(endpoint: "inmemory://silent", publicKey: ""))), to: nil)
                return
            }
        }.start()
        run.startWorker(name: "real")
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 3)
        XCTAssertTrue(lines.all.contains { $0.contains("(silent) is gone") && $0.contains("before it had work") }, lines.all.joined(separator: "\n"))
        try run.assertMatchesReference(summary)
    }

    /// A member that is alive (it heartbeats) but never adopts its plan held up every other
    /// member for ever: nothing moves between workers before all follow the plan. It must be
    /// given up a worker timeout after the plan's issue, and the run go on without it.
    func testAMemberThatNeverAdoptsItsPlanIsGivenUpAndTheRunGoesOn() throws {
        let run = try InMemoryRun(yaml: Self.yaml().replacingOccurrences(of: "worker_timeout: 5", with: "worker_timeout: 1"), steps: 3)
        let lines = LogLines()
        let coordinator = try run.coordinator(logger: lines.logger(label: "coord"), expectedWorkers: 2)
        let stop = HoldBackDeadline(seconds: 45)
        Thread {
            let deaf = run.endpoint("deaf")
            let hello = Hello(name: "deaf", threads: 1, processID: 8, hostName: "h", coreType: BLAS.kernelName)
            try? deaf.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
            var runID: UInt64?
            // It says where it listens, then only heartbeats: plans, weights and work go unheeded.
            while stop.isHolding {
                if let incoming = try? deaf.receive(timeoutMilliseconds: 200), case .success(let envelope) = incoming.result,
                   runID == nil, case .welcome = envelope.message {
                    runID = envelope.runID
                    try? deaf.send(Envelope(runID: envelope.runID, step: 0, message: .listening(Listening(endpoint: "inmemory://deaf", publicKey: ""))), to: nil)
                }
                if let runID {
                    try? deaf.send(Envelope(runID: runID, step: 0, message: .heartbeat(Heartbeat(sentAtMilliseconds: 0, busy: false))), to: nil)
                }
            }
        }.start()
        run.startWorker(name: "real")
        let summary = try coordinator.run()
        stop.release()
        XCTAssertEqual(summary.steps, 3)
        XCTAssertTrue(lines.all.contains { $0.contains("(deaf)") && $0.contains("did not adopt sharded plan") }, lines.all.joined(separator: "\n"))
        try run.assertMatchesReference(summary)
    }

    /// A peer that does not take a message at first (not listening yet, or paused by SIGSTOP
    /// before its connection was made) must get it on a later try: the first send of every kind
    /// of message to every peer fails here, and the run must still finish with the reference's bits.
    func testMessagesAPeerDidNotTakeAtFirstAreSentAgain() throws {
        let run = try InMemoryRun(yaml: Self.yaml(), steps: 4)
        let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .info), expectedWorkers: 3)
        let refusals = RefusalCount()
        for index in 0..<3 {
            run.startWorker(name: "r\(index)") { RefusingPeerTransport.firstOfEachKind(wrapping: $0, count: refusals) }
        }
        let finished = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var outcome: Result<RunSummary, Error>?
        nonisolated(unsafe) let running = coordinator
        Thread {
            outcome = Result { try running.run() }
            finished.signal()
        }.start()
        guard finished.wait(timeout: .now() + 60) == .success, let outcome else {
            return XCTFail("the run did not finish in 60 s: a message a peer did not take at first was never sent again")
        }
        let summary = try outcome.get()
        XCTAssertEqual(summary.steps, 4)
        XCTAssertGreaterThan(refusals.value, 6, "the test refused too few sends to mean anything")
        try run.assertMatchesReference(summary)
    }

    /// Workers announce their local listener and host in `listening`; the coordinator's plan
    /// carries them to every member, which hands them to its transport (a `PeerMesh` connects
    /// there when the host is its own).
    func testEveryMemberLearnsTheOthersLocalListeners() throws {
        let run = try InMemoryRun(yaml: Self.yaml(), steps: 2)
        let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .info), expectedWorkers: 2)
        let transports = TransportList()
        for index in 0..<2 {
            run.startWorker(name: "l\(index)") { inner in
                transports.add(RefusingPeerTransport(wrapping: inner, localEndpoint: "ipc://@test-\(inner.workerID)", host: "test-host") { _, _ in false })
            }
        }
        XCTAssertEqual(try coordinator.run().steps, 2)
        let all = transports.all
        XCTAssertEqual(all.count, 2)
        for transport in all {
            let peers = transport.inner.peers
            XCTAssertEqual(peers.count, 1, "\(peers)")
            for peer in peers {
                XCTAssertEqual(peer.localEndpoint, "ipc://@test-\(peer.workerID)")
                XCTAssertEqual(peer.host, "test-host")
            }
        }
    }

    /// A step that goes on for seconds with every member busy left no line at all: the
    /// straggler rule speaks only when some worker is idle. The coordinator now says once what
    /// the step waits for, and a worker what it lacks. Here one worker's updates are held back for 6 s, so the others
    /// cannot finish the step, and the run must still end with the reference's bits.
    func testAStepThatMakesNoProgressForSecondsSaysWhatItWaitsFor() throws {
        let run = try InMemoryRun(yaml: Self.yaml(), steps: 3)
        let lines = LogLines()
        let coordinator = try run.coordinator(logger: lines.logger(label: "coord"), expectedWorkers: 2)
        let heldUntil = HoldBackDeadline(seconds: 6)
        run.startWorker(name: "held") { RefusingPeerTransport.updates(wrapping: $0, until: heldUntil) }
        let free = LogLines()
        run.startWorker(name: "free", logger: free.logger(label: "free"))
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 3)
        let report = lines.all.first { $0.contains("no progress for 5 s") }
        XCTAssertNotNil(report, "no stall report in:\n" + lines.all.joined(separator: "\n"))
        XCTAssertTrue(report?.contains("is in force") == true && report?.contains("step not done by") == true, report ?? "")
        // The worker that waits says what it lacks: the held worker's slices of the next weights.
        let lacks = free.all.first { $0.contains("not finished here 2 s after the cover") }
        XCTAssertNotNil(lacks, "no worker-side report in:\n" + free.all.joined(separator: "\n"))
        XCTAssertTrue(lacks?.contains("next step's weights of slices") == true, lacks ?? "")
        try run.assertMatchesReference(summary)
    }

    private func assertOptimizerMatchesReference(_ run: InMemoryRun, _ summary: RunSummary, file: StaticString = #filePath, line: UInt = #line) throws {
        let reference = try ReferenceTrainer(config: run.config, data: DataSource.load(run.config))
        try reference.train()
        let saved = try CheckpointStore.load(directory: summary.finalCheckpoint)
        for tensor in reference.state.optimizerTensors() {
            let values = try XCTUnwrap(saved.optimizer[tensor.name], "the checkpoint lacks \(tensor.name)", file: file, line: line).values
            XCTAssertEqual(values.map(\.bitPattern), tensor.values.map(\.bitPattern), "\(tensor.name) differs", file: file, line: line)
        }
    }
}

/// Sends refused, counted across the workers of a test.
final class RefusalCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func add() { lock.withLock { count += 1 } }
}

/// The peer transports the workers of a test made, from their threads.
final class TransportList: @unchecked Sendable {
    private let lock = NSLock()
    private var transports: [RefusingPeerTransport] = []
    var all: [RefusingPeerTransport] { lock.withLock { transports } }
    func add(_ transport: RefusingPeerTransport) -> RefusingPeerTransport {
        lock.withLock { transports.append(transport) }
        return transport
    }
}

/// When a test's hold on messages ends: `seconds` after the first message it held.
final class HoldBackDeadline: @unchecked Sendable {
    private let lock = NSLock()
    private let seconds: Double
    private var end: Double?

    init(seconds: Double) { self.seconds = seconds }

    /// Ends the hold now.
    func release() { lock.withLock { end = 0 } }

    var isHolding: Bool {
        lock.withLock {
            let now = ProcessInfo.processInfo.systemUptime
            if end == nil { end = now + seconds }
            return now < end!
        }
    }
}

/// A peer transport that fails the sends `refuses` picks, as a send to a peer that is not ready
/// does (EAGAIN); every other one goes through. It announces the local listener it is given, as
/// a `PeerMesh` on Linux does (nothing listens there: in-memory peers need no address).
final class RefusingPeerTransport: PeerTransport {
    let inner: InMemoryPeerTransport
    private let refuses: (Envelope, UInt32) -> Bool
    let localEndpoint: String?
    let host: String?

    init(wrapping inner: InMemoryPeerTransport, localEndpoint: String? = nil, host: String? = nil,
         refusing refuses: @escaping (Envelope, UInt32) -> Bool) {
        self.inner = inner
        self.refuses = refuses
        self.localEndpoint = localEndpoint
        self.host = host
    }

    /// Refuses the first send of each kind of message to each peer.
    static func firstOfEachKind(wrapping inner: InMemoryPeerTransport, count: RefusalCount) -> RefusingPeerTransport {
        var tried: Set<String> = []
        return RefusingPeerTransport(wrapping: inner) { envelope, worker in
            guard tried.insert("\(envelope.message.typeName) to \(worker)").inserted else { return false }
            count.add()
            return true
        }
    }

    /// Refuses weight slices until `deadline`.
    /// Holds back what a slice's owner sends after its update: the new weights, and to the
    /// replica the gradient it took. Either way the others lack the slice's next weights (which
    /// of the two they are sent depends on who joined first).
    static func updates(wrapping inner: InMemoryPeerTransport, until deadline: HoldBackDeadline) -> RefusingPeerTransport {
        RefusingPeerTransport(wrapping: inner) { envelope, _ in
            switch envelope.message {
            case .weightSlice, .sliceGradient: return deadline.isHolding
            default: return false
            }
        }
    }

    var endpoint: String { inner.endpoint }
    var bytesSent: Int { inner.bytesSent }
    var bytesReceived: Int { inner.bytesReceived }
    func setPeers(_ peers: [PeerAddress]) throws { try inner.setPeers(peers) }
    func receive(timeoutMilliseconds: Int) throws -> PeerIncoming? { try inner.receive(timeoutMilliseconds: timeoutMilliseconds) }
    func close() { inner.close() }

    func send(_ envelope: Envelope, to worker: UInt32) throws {
        guard refuses(envelope, worker) else { return try inner.send(envelope, to: worker) }
        throw ZMQError(operation: "send \(envelope.message.typeName) to worker \(worker)", code: EAGAIN,
                       message: "no connection to it was ready to take the message (refused by the test)")
    }
}
