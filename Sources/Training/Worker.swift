import AllReduce
import CNN
import Foundation
import Logging
import PeerSecurity
import UsageErrors
import Wire

/// How a worker runs.
public struct WorkerOptions: Sendable {
    public var connect: String
    public var threads: Int = 1
    public var name: String
    /// How long to keep trying to (re)join a coordinator before giving up, in seconds.
    public var joinTimeout: Double = 300
    /// Exit when this process (the coordinator that spawned us) is gone.
    public var parentProcess: Int32?
    /// Extra seconds spent on every assignment: a deliberately slow worker for fault drills and tests.
    public var computeDelay: Double = 0
    /// CURVE keys (`--curve-key`, `--server-public-key`); nil for a plain connection.
    public var security: WorkerSecurity?
    /// Opens this worker's connections to its peers for the sharded reduction, given its id.
    public var peerTransport: (@Sendable (UInt32) throws -> PeerTransport)?

    public init(connect: String, threads: Int = 1, name: String? = nil) {
        self.connect = connect
        self.threads = threads
        self.name = name ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
    }
}

public struct WorkerError: Error, CustomStringConvertible {
    public var description: String
}

/// A sample the worker could not make (a file that stopped decoding): the run must stop, since
/// leaving a sample out would change it. Said to the coordinator with its own error code.
struct SampleFailure: Error, CustomStringConvertible {
    static let code: UInt16 = 460
    var description: String
}

/// A worker: stateless compute. It connects, says hello, receives the config and weights, and
/// computes the micro-batches it is given on a background thread while its main thread keeps
/// the connection alive with heartbeats.
public final class Worker {
    private let options: WorkerOptions
    private let logger: Logger
    private let transport: MessageTransport
    /// Closes what the transport was opened with (the ZeroMQ socket and context).
    private let closeTransport: () -> Void

    private var runID: UInt64 = 0
    /// The id the coordinator gave this worker in its welcome.
    private var workerID: UInt32?
    private var engine: MicroBatchEngine?
    private var weightsVersion: Int?
    private var heartbeatInterval = 1.0
    private var coordinatorTimeout = 10.0
    private var lastHeard = monotonicSeconds()
    private var lastSent = 0.0
    /// Assignments waiting for the computation thread, with when each arrived (for its timings).
    private var queue: [Job] = []
    private let computation = ComputationSlot()
    private var weights: FloatPayload?
    /// This worker's part in the sharded reduction (nil under `central`).
    private var shard: ShardRole?
    /// Set when the sharded reduction finds this worker out of step: it joins again.
    private var shardFailure: Error?
    /// Failed handshakes on the ZeroMQ connection (nil for other transports).
    private var handshakeMonitor: SocketMonitor?
    /// Opens a fresh connection to the coordinator: libzmq never tries again on a connection whose
    /// handshake was refused.
    private var reconnect: (() throws -> Void)?

    /// A worker connected over ZeroMQ to `options.connect`.
    public convenience init(options: WorkerOptions, logger: Logger) throws {
        let context = try ZMQContext()
        let dealer = try ZMQSocket(context: context, kind: .dealer)
        try dealer.setLinger(milliseconds: 2000)
        // A refused CURVE handshake leaves the DEALER with no connection, where a send would
        // block for ever; with a timeout the join loop keeps its deadline and can say why.
        try dealer.setSendTimeout(milliseconds: 1000)
        try options.security?.apply(to: dealer)
        // libzmq tells a refused client only through a monitor, once per connection: watch from
        // before the connect so the first refusal is not missed.
        let monitor = try SocketMonitor(watching: dealer, events: HandshakeRefusal.monitoredEvents)
        do {
            try dealer.connect(options.connect)
        } catch {
            monitor.close()
            dealer.close()
            context.close()
            throw UsageError("cannot connect to \(options.connect): \(error); "
                + "give the coordinator's address as printed by cnn-coord, e.g. tcp://HOST:5555")
        }
        var options = options
        if options.peerTransport == nil {
            let coordinator = options.connect, security = options.security
            options.peerTransport = { id in
                // Peers connect where this worker reaches the coordinator: the bind policy's
                // interface, never a wildcard.
                let bind = try PeerMesh.bindAddress(reaching: coordinator)
                return try PeerMesh(selfID: id, bind: bind, security: try security.map { try PeerMeshSecurity(keyPair: $0.keyPair) },
                                    limits: .default)
            }
        }
        self.init(options: options, logger: logger, transport: MessageSocket(socket: dealer)) {
            monitor.close()
            dealer.close()
            context.close()
        }
        handshakeMonitor = monitor
        let endpoint = options.connect
        reconnect = {
            try dealer.disconnect(endpoint)
            try dealer.connect(endpoint)
        }
    }

    /// A worker talking to its coordinator through `transport` (an in-memory one, in tests);
    /// `close` runs when the worker is released.
    public init(options: WorkerOptions, logger: Logger, transport: MessageTransport, close: @escaping () -> Void = {}) {
        self.options = options
        self.logger = logger
        self.transport = transport
        closeTransport = close
    }

    deinit {
        computation.close()
        closeTransport()
    }

    /// Serves until the coordinator says goodbye (returns normally) or fails. A coordinator that
    /// goes silent is waited for: the worker says hello again with backoff and rejoins whatever
    /// coordinator answers at the same address (a restarted one resuming from its checkpoint).
    public func run() throws {
        // However the worker leaves, a computation still running finishes first: the process
        // must not exit, nor free the engine, under the thread computing with it (a worker stopped
        // mid-computation died of SIGSEGV, with either GEMM library).
        defer { computation.waitUntilIdle() }
        try join()
        while true {
            if Interruption.requested != nil {
                send(.bye(Bye(reason: "worker \(options.name) stopped by \(Interruption.signalName)")), step: 0)
                return
            }
            if let parent = options.parentProcess, getppid() != parent {
                logger.info("the coordinator that started this worker is gone; exiting")
                return
            }
            let finished = computation.take()
            for part in computation.takeStreamed() where part.runID == runID {
                if shard?.streamed(part.values, slices: part.slices, step: part.step) == true, firstSliceSentAt == nil {
                    firstSliceSentAt = monotonicSeconds()
                }
            }
            if let finished {
                // Results of a run this worker has since left are of no use to anyone.
                if finished.runID == runID { try deliver(finished) }
                startNextComputation()
            }
            if let shard {
                do {
                    try shard.poll(timeoutMilliseconds: 0)
                } catch let outOfStep as ShardOutOfStep {
                    shardFailure = outOfStep
                }
                startNextComputation()
            }
            do {
                if let incoming = try receiveFromCoordinator(waitingUpTo: 5) {
                    switch try handle(incoming) {
                    case .carryOn: break
                    case .stop: return
                    case .rejoin(let why):
                        logger.warning("\(why); joining again")
                        try join()
                    }
                }
                if let failure = shardFailure { throw failure }
            } catch let outOfStep as ShardOutOfStep {
                logger.warning("\(outOfStep); joining again")
                try join()
            }
            let now = monotonicSeconds()
            if now - lastSent > heartbeatInterval {
                send(.heartbeat(Heartbeat(sentAtMilliseconds: UInt64(now * 1000), busy: computation.isBusy)), step: 0)
            }
            if now - lastHeard > coordinatorTimeout {
                logger.warning("no message from the coordinator at \(options.connect) for \(Int(now - lastHeard)) s; waiting for it to come back (up to \(Int(options.joinTimeout)) s)")
                try join()
            }
        }
    }

    /// The coordinator's next message. The wait also ends when the computation finishes, and
    /// under the sharded reduction when a peer's message arrives, so that the loop takes either
    /// at once: a finished result waited up to a millisecond of polling before, and a step has
    /// several rounds of peer messages.
    private func receiveFromCoordinator(waitingUpTo milliseconds: Int) throws -> Incoming? {
        let wake = computation.wakeDescriptor
        guard let own = (transport as? MessageSocket)?.socket, wake >= 0 else {
            // Another transport (in-memory, in tests) cannot wait on the pipe: while computing,
            // look every millisecond (a 5 ms wait here doubled the step time of a small model).
            return try transport.receive(timeoutMilliseconds: computation.isBusy ? 1 : milliseconds)
        }
        _ = try zmqPoll([own] + (shard?.peerSocket.map { [$0] } ?? []), descriptors: [wake], timeoutMilliseconds: milliseconds)
        return try transport.receive(timeoutMilliseconds: 0)
    }

    /// When the computation in progress had its first slice of partial sums sent, while it still
    /// ran (nil until then; each computation starts without one).
    private var firstSliceSentAt: Double?

    /// How long before its results a computation's first slice went: never more than the time
    /// since its assignment arrived, which the coordinator checks it against (a slice sent before
    /// that was another computation's), and 0 when none went.
    static func streamedSeconds(firstSliceSentAt: Double?, receivedAt: Double, now: Double) -> Double {
        firstSliceSentAt.map { max(now - max($0, receivedAt), 0) } ?? 0
    }

    /// Seconds an assignment may wait for its weights from the slice owners before the worker
    /// says what it lacks.
    static let weightsPatience = 2.0
    private var lastWeightsWaitReported: Double?

    /// Seconds between fresh connections while the coordinator's handshake refuses this worker.
    static let reconnectInterval = 3.0
    /// Seconds before a fresh connection after a handshake that failed without saying why.
    static let probeInterval = 0.4

    /// Says hello until welcomed, with backoff, so a worker may start before its coordinator or
    /// outlive a coordinator that restarts.
    private func join() throws {
        queue.removeAll()
        shard?.mesh.close()
        shard = nil
        shardFailure = nil
        weights = nil
        weightsVersion = nil
        let start = monotonicSeconds()
        let deadline = start + options.joinTimeout
        var nextHello = 0.0
        var backoff = 0.25
        // What the coordinator's handshake said, each cause logged once and repeated in the final error.
        var refusals = HandshakeRefusalLog(coordinator: options.connect, security: options.security)
        var helloFailed = false
        var lastReconnect = start
        // Only a connection that failed is replaced: a fresh one is a new peer to the coordinator,
        // so replacing a working one (say, while a restarted coordinator is still loading its
        // checkpoint) loses the hello queued on it, or the welcome sent back.
        var failedSinceReconnect = false
        while true {
            if Interruption.requested != nil { throw WorkerError(description: "stopped by \(Interruption.signalName) before joining") }
            if let parent = options.parentProcess, getppid() != parent {
                throw WorkerError(description: "the coordinator that started this worker is gone")
            }
            let now = monotonicSeconds()
            let failures = (try handshakeMonitor?.poll()) ?? []
            if !failures.isEmpty { failedSinceReconnect = true }
            for refusal in refusals.record(failures, at: now) {
                logger.warning("\(refusal); still trying for up to \(Int((deadline - now).rounded(.up))) s")
            }
            // libzmq never tries again on a refused connection, and may be slow to after one that
            // only closed: a fresh connection soon after a vague failure gets the precise cause
            // before the vague one is told, and one every few seconds after a refusal lets a
            // coordinator put right meanwhile (the key authorised, keys given or dropped) take it.
            let interval = refusals.knowsThePreciseCause ? Self.reconnectInterval : Self.probeInterval
            if failedSinceReconnect, now - lastReconnect >= interval, let reconnect {
                do { try reconnect() } catch { logger.debug("could not reconnect to \(options.connect): \(error)") }
                lastReconnect = now
                failedSinceReconnect = false
            }
            if now > deadline {
                if let refusal = refusals.cause {
                    throw WorkerError(description: "could not join the coordinator at \(options.connect) within \(Int(options.joinTimeout)) s: \(refusal)")
                }
                throw WorkerError(description: "no coordinator answered at \(options.connect) within \(Int(options.joinTimeout)) s; "
                    + "check the address and that cnn-coord is running (it prints the address to use)"
                    + (options.security.map { "; \($0.joinHint)" } ?? ""))
            }
            if now >= nextHello {
                let hello = Hello(
                    name: options.name, threads: options.threads, processID: getpid(),
                    hostName: ProcessInfo.processInfo.hostName, coreType: BLAS.kernelName)
                do {
                    try transport.send(Envelope(runID: runID, step: 0, message: .hello(hello)), to: nil)
                    lastSent = monotonicSeconds()
                } catch {
                    // A refused handshake leaves no connection, so every hello times out; the
                    // monitor names the cause, and this detail is said once, at debug level.
                    if !helloFailed { logger.debug("could not send hello (will keep trying): \(error)") }
                    helloFailed = true
                }
                nextHello = now + backoff
                backoff = min(backoff * 2, 5)
            }
            guard let incoming = try transport.receive(timeoutMilliseconds: 100) else { continue }
            // Whatever arrives came over the present connection, which therefore works.
            failedSinceReconnect = false
            guard case .success(let envelope) = incoming.result else { continue }
            switch envelope.message {
            case .welcome(let welcome):
                do {
                    try accept(welcome, runID: envelope.runID)
                } catch let outOfStep as ShardOutOfStep {
                    // Its peers cannot be reached yet (a link down): say hello again later.
                    logger.warning("\(outOfStep); saying hello again")
                    continue
                }
                // Failures from before the welcome are settled; a later join must not report them.
                _ = try handshakeMonitor?.poll()
                return
            case .error(let failure) where [400, 401, 409].contains(failure.code):
                // Answers to messages sent before this hello (heartbeats to a coordinator that
                // restarted): the hello itself is still on its way.
                continue
            case .error(let failure):
                throw WorkerError(description: "the coordinator refused this worker: \(PeerText.printable(failure.text))")
            default:
                continue
            }
        }
    }

    private func accept(_ welcome: Welcome, runID: UInt64) throws {
        // A refusal carries the welcome's run id (this worker has none yet): the coordinator
        // drops messages of other runs unread.
        func refuse(_ text: String) {
            do {
                try transport.send(Envelope(runID: runID, step: 0, message: .error(WireFailure(code: 500, text: text))), to: nil)
            } catch {
                logger.warning("could not send error: \(error)")
            }
        }
        let config: TrainingConfig
        do {
            config = try TrainingConfig.parse(yaml: welcome.configText, source: "config from \(options.connect)")
        } catch {
            refuse("worker \(options.name) cannot use the config: \(error)")
            throw WorkerError(description: "the coordinator's config does not work here: \(error)")
        }
        do {
            _ = try config.precision()
        } catch {
            // Short, so that the coordinator's log (which cuts peers' texts) keeps all of it.
            refuse("worker \(options.name) has no bf16 products for train.precision: bf16")
            throw WorkerError(description: "the coordinator's config does not work here: \(error)")
        }
        let engine: MicroBatchEngine
        if let existing = self.engine, existing.config.yaml == config.yaml {
            // Rejoining the same run (or its resumed successor): the model and data are as they were.
            engine = existing
        } else {
            let data: DataSource
            do {
                data = try DataSource.load(config)
            } catch {
                refuse("worker \(options.name) cannot load the data: \(error)")
                throw WorkerError(description: "\(error)")
            }
            engine = try MicroBatchEngine(config: config, data: data, threads: options.threads)
        }
        guard engine.parameterCount == welcome.parameterCount else {
            throw WorkerError(description: "the model has \(engine.parameterCount) parameters here but \(welcome.parameterCount) at the coordinator")
        }
        self.engine = engine
        self.runID = runID
        workerID = welcome.workerID
        shard?.mesh.close()
        shard = nil
        if config.distributed.reduction == .sharded {
            guard let makePeers = options.peerTransport else {
                throw WorkerError(description: "the run uses the sharded reduction, and this worker has no way to reach its peers")
            }
            let mesh: PeerTransport
            do {
                mesh = try makePeers(welcome.workerID)
            } catch {
                throw ShardOutOfStep(description: "cannot listen for peers: \(error)")
            }
            shard = try ShardRole(config: config, engine: engine, selfID: welcome.workerID, mesh: mesh, logger: logger,
                                  isComputing: { [computation] in computation.isBusy }) { [weak self] message, step in
                self?.send(message, step: step)
            }
            if let local = mesh.localEndpoint { logger.debug("peers on this host connect to \(local)") }
            send(.listening(Listening(endpoint: mesh.endpoint, publicKey: options.security?.keyPair.publicKey ?? "",
                                      localEndpoint: mesh.localEndpoint ?? "", host: mesh.host ?? "")), step: 0)
        }
        heartbeatInterval = Double(welcome.heartbeatIntervalMilliseconds) / 1000
        coordinatorTimeout = Double(welcome.workerTimeoutMilliseconds) / 1000
        lastHeard = monotonicSeconds()
        logger.info("joined as w\(welcome.workerID): \(engine.parameterCount) parameters, \(options.threads) thread\(options.threads == 1 ? "" : "s"), GEMM \(BLAS.kernelName)\(engine.precision == .bf16 ? ", products in bf16 (\(BFloat16Support.kernelName))" : "")")
    }

    /// Sends a finished computation's results: to the coordinator, and under the sharded
    /// reduction each slice of the gradients to its owner.
    private func deliver(_ finished: ComputationSlot.Outcome) throws {
        var message = finished.message
        if let shard, case .gradients(let gradients) = message {
            var computed = try shard.computed(gradients, step: finished.step)
            computed.streamedSeconds = Self.streamedSeconds(firstSliceSentAt: firstSliceSentAt, receivedAt: finished.receivedAt,
                                                            now: monotonicSeconds())
            message = .computed(computed)
        }
        send(Self.stampingTotal(message, receivedAt: finished.receivedAt), step: finished.step)
    }

    private enum Next {
        case carryOn
        case stop
        case rejoin(String)
    }

    private func handle(_ incoming: Incoming) throws -> Next {
        guard case .success(let envelope) = incoming.result else {
            if case .failure(let error) = incoming.result { logger.warning("dropped a malformed message: \(error)") }
            return .carryOn
        }
        if case .error(let failure) = envelope.message, failure.code == 409, envelope.runID == runID {
            // About a message of an earlier run, sent before this worker joined the coordinator's
            // present one (it restarted): this worker belongs to that run already. Joining again
            // would retire its fresh record, and with it, under the sharded reduction, a plan member.
            logger.debug("ignored the coordinator's complaint about a message of an earlier run: \(PeerText.printable(failure.text))")
            return .carryOn
        }
        if case .error(let failure) = envelope.message, failure.code == 401 || failure.code == 409 {
            // The coordinator does not know us: it restarted, or declared us dead.
            return .rejoin("the coordinator no longer knows this worker (\(PeerText.printable(failure.text)))")
        }
        guard envelope.runID == runID else {
            logger.debug("ignored a message of another run")
            return .carryOn
        }
        guard let step = Int(exactly: envelope.step) else {
            logger.warning("dropped a \(envelope.message.typeName) message for step \(envelope.step), past any step a run can reach")
            return .carryOn
        }
        lastHeard = monotonicSeconds()
        switch envelope.message {
        case .weights(let message):
            guard let engine, message.values.count == engine.parameterCount + engine.stateCount else {
                send(.error(WireFailure(code: 422, text: "weights of \(message.values.count) values do not fit this model")), step: step)
                return .carryOn
            }
            if let shard { try shard.receiveWholeWeights(message.values, step: step) }
            weights = message.values
            weightsVersion = step
        case .assign(let assignment) where shard != nil:
            // The weights come from the slice owners; the work waits for them. Work of another
            // step is over: an earlier step completed, or a later one was left when the run went
            // back to a checkpoint (its work, waiting at the head, would block this for ever).
            queue.removeAll { $0.step != step || $0.assignment.kind != assignment.kind }
            queue.append((step, assignment, nil, monotonicSeconds()))
            startNextComputation()
        case .plan(let plan):
            try shard?.adopt(plan, step: step)
        case .reduce(let cover):
            try shard?.receiveCover(cover, step: step)
        case .norm(let norm):
            try shard?.receiveNorm(norm.value, step: step)
        case .sliceState(let state):
            try shard?.receiveState(state, step: step, from: nil)
        case .gather(let gather):
            try shard?.gather(planVersion: gather.planVersion, step: step)
        case .planInForce(let inForce):
            try shard?.planInForce(inForce.planVersion)
        case .assign(let assignment):
            guard weightsVersion == step, let weights else {
                send(.error(WireFailure(code: 428, text: "assignment for step \(step) but this worker holds weights of step \(weightsVersion.map(String.init) ?? "none")")), step: step)
                return .carryOn
            }
            // Work of another step still waiting here is no longer wanted: its step is over.
            queue.removeAll { $0.step != step || $0.assignment.kind != assignment.kind }
            queue.append((step, assignment, weights, monotonicSeconds()))
            startNextComputation()
        case .bye(let bye):
            logger.info("coordinator says goodbye: \(PeerText.printable(bye.reason))")
            return .stop
        case .error(let failure):
            logger.warning("coordinator reported error \(failure.code): \(PeerText.printable(failure.text))")
        case .welcome(let welcome) where welcome.workerID == workerID:
            // The answer to a hello queued behind the first (sent before the coordinator listened).
            break
        case .welcome(let welcome):
            // The coordinator took this worker afresh under a new id: that is who it is now.
            logger.info("welcomed again, as w\(welcome.workerID)")
            queue.removeAll()
            weights = nil
            weightsVersion = nil
            try accept(welcome, runID: envelope.runID)
        case .heartbeat, .hello, .gradients, .evaluation, .listening, .computed, .slicePartials, .blockSums, .weightSlice, .sliceGradient, .stepDone,
             .planAdopted:
            break
        }
        return .carryOn
    }

    /// An assignment waiting for the computation thread: its step, the weights it starts from,
    /// and when it arrived (for its timings).
    typealias Job = (step: Int, assignment: Assignment, weights: FloatPayload?, receivedAt: Double)

    /// Starts the first queued assignment when the computation thread is free.
    private func startNextComputation() {
        guard !computation.isBusy, !queue.isEmpty, let engine else { return }
        var waiting = queue[0]
        if let shard, waiting.weights == nil {
            let held: FloatPayload?
            do { held = try shard.weights(forStep: waiting.step) } catch { shardFailure = error; return }
            guard let held else {
                // Said once per assignment, so that a stalled step shows what its work waits for.
                if monotonicSeconds() - waiting.receivedAt > Self.weightsPatience, lastWeightsWaitReported != waiting.receivedAt {
                    lastWeightsWaitReported = waiting.receivedAt
                    logger.warning("step \(waiting.step): an assignment has waited \(Int(Self.weightsPatience)) s for its weights: \(shard.whyNoWeights(forStep: waiting.step))")
                }
                return
            }
            waiting.weights = held
        }
        queue.removeFirst()
        let job = waiting
        let delay = options.computeDelay
        // A computation whose results were never delivered (of a run this worker has left) may
        // have sent slices: their time is not this one's.
        firstSliceSentAt = nil
        // Under the sharded reduction each slice of the partial sums goes to its owner as soon as
        // backward has made it final, while the earlier layers still compute.
        let streaming = shard.map { [computation, runID] shard in
            PartialSumStream(slices: shard.layout.slices, microBatchesInStep: Int(job.assignment.totalMicroBatches)) { ready, values in
                computation.post((runID, job.step, ready, values))
            }
        }
        computation.start(runID: runID, receivedAt: job.receivedAt) {
            if delay > 0 { Thread.sleep(forTimeInterval: delay) }
            let message: Message
            switch job.assignment.kind {
            case .train: message = try Self.train(job, on: engine, streaming: streaming)
            case .evaluate: message = Self.evaluate(job, on: engine)
            }
            // A sample that could not be made leaves the results wrong: they are not sent.
            if let failure = engine.data.train.failure ?? engine.data.test.failure { throw SampleFailure(description: "\(failure)") }
            return (job.step, message)
        }
    }

    private func send(_ message: Message, step: Int) {
        do {
            try transport.send(Envelope(runID: runID, step: UInt64(step), message: message), to: nil)
            lastSent = monotonicSeconds()
        } catch {
            logger.warning("could not send \(message.typeName): \(error)")
        }
    }
}

/// The coordinator started a step this worker is not ready for: it must join again.
struct ShardOutOfStep: Error, CustomStringConvertible {
    var description: String
}
