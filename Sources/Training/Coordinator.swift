import AllReduce
import CNN
import Checkpoint
import ConfigReading
import Foundation
import Logging
import PeerSecurity
import Wire

/// How a coordinator runs: everything from the command line that is not in the config.
public struct CoordinatorOptions {
    /// ZeroMQ endpoint to bind; port 0 or `*` picks a free port.
    public var bind: String = "tcp://127.0.0.1:5555"
    /// Local worker processes to start.
    public var spawnWorkers: Int = 0
    /// Workers to wait for before the first step (default: the spawned ones, else 1).
    public var expectedWorkers: Int?
    /// Threads of each spawned worker.
    public var workerThreads: Int = 1
    public var runDirectory: String = "runs/latest"
    public var resume: Bool = false
    public var initialWeights: String?
    /// The `cnn-worker` program for --spawn-workers (default: next to the running program).
    public var workerExecutable: String?
    /// No progress lines on standard output (warnings still go to standard error).
    public var quiet: Bool = false
    /// Start the workers of `spawnWorkers` with `--quiet`: they share this terminal, and while a
    /// live display redraws it their info lines would tear it. Their warnings and errors still show.
    public var quietLocalWorkers: Bool = false
    /// Listeners for progress, metrics endpoints and traces.
    public var observers: [RunObserver] = []
    /// CURVE keys (`--curve-secret-key`, `--authorized-keys`); nil for a plain socket.
    public var security: CoordinatorSecurity?
    /// Without keys, bind an address other hosts can reach anyway (`--insecure-bind`).
    public var insecureBind: Bool = false

    public init() {}
}

/// What a finished run reports.
public struct RunSummary: Sendable {
    public var steps: Int
    public var epochs: Int
    public var testAccuracy: Double?
    public var imagesPerSecond: Double
    public var finalCheckpoint: String
    public var interrupted: Bool

    public init(steps: Int, epochs: Int, testAccuracy: Double?, imagesPerSecond: Double, finalCheckpoint: String, interrupted: Bool) {
        self.steps = steps
        self.epochs = epochs
        self.testAccuracy = testAccuracy
        self.imagesPerSecond = imagesPerSecond
        self.finalCheckpoint = finalCheckpoint
        self.interrupted = interrupted
    }
}

/// A failure the coordinator cannot train through.
public struct CoordinatorError: Error, CustomStringConvertible {
    public var description: String
}

/// The coordinator: owns the config, master weights, optimiser state, data order and checkpoints,
/// binds one ROUTER socket, and runs the loop of DESIGN.md: assign micro-batches, combine their
/// gradients along the fixed tree, apply the optimiser, broadcast the weights.
public final class Coordinator {
    public let config: TrainingConfig
    public let options: CoordinatorOptions
    private let logger: Logger
    private let state: ModelState
    private let directory: RunDirectory
    private let runID: UInt64
    private let context: ZMQContext
    private let socket: MessageSocket
    public let endpoint: String
    private var pool = WorkerPool()
    /// The ZAP handler when CURVE is on; stopped before the context closes.
    private let gate: CurveGate?
    /// Keys for the workers of --spawn-workers when CURVE is on; deleted at the end.
    private let localCredentials: LocalWorkerCredentials?
    /// Message rate, strikes and bans per peer.
    private let peerGuard: PeerGuard
    private let reduction = TreeReduction()
    private let meanGradient: FloatBuffer
    private let local: LocalWorkers
    private let trainCount: Int
    private let testCount: Int

    /// Weights of the current version, shared by every send of it.
    private var weightsPayload: FloatPayload?
    private var weightsPayloadVersion = -1
    /// Spans of the step in progress, for observers.
    private var phases: [PhaseTiming] = []
    private var workerHosts: [UInt32: String] = [:]
    private var lastStepSeconds: [UInt32: Double] = [:]

    public init(config: TrainingConfig, options: CoordinatorOptions, logger: Logger) throws {
        self.config = config
        self.options = options
        self.logger = logger
        // Refuse an unsafe or malformed --bind before loading anything.
        let bindDecision = try BindPolicy.check(endpoint: options.bind, secured: options.security != nil, insecureBind: options.insecureBind)
        peerGuard = PeerGuard(config: PeerLimits(maxMessagesPerSecond: Double(config.distributed.maxMessagesPerSecond)))
        state = try ModelState(config: config)
        directory = try RunDirectory(path: options.runDirectory, keep: config.checkpoint.keep)
        runID = UInt64.random(in: 1...UInt64.max)
        meanGradient = FloatBuffer(count: state.leafLength)
        // The coordinator reads the data only to know the set sizes; workers load it themselves.
        let data = try DataSource.load(config)
        trainCount = data.train.count
        testCount = data.test.count

        context = try ZMQContext()
        let router = try ZMQSocket(context: context, kind: .router)
        try router.setLinger(milliseconds: 2000)
        try router.setRouterMandatory(true)
        // A peer that does not read its socket must not block the coordinator: a send to a full
        // queue fails after this long and the peer is treated as gone.
        try router.setSendTimeout(milliseconds: 250)
        var security = options.security
        var credentials: LocalWorkerCredentials?
        if let base = security, options.spawnWorkers > 0 { (security, credentials) = try base.addingLocalWorkerCredentials() }
        localCredentials = credentials
        let gate = try security?.apply(to: router, context: context)
        self.gate = gate
        // libzmq drops anything larger before it is buffered: the largest honest message is a
        // worker's partial sums for a whole step.
        try router.setMaxMessageSize(bytes: (config.train.microBatchesPerStep + 1) * state.leafLength * 4 + (1 << 20))
        let limits = DecodeLimits.forModel(weights: max(state.weightsCount, state.leafLength), microBatches: config.train.microBatchesPerStep,
                                           samples: max(config.train.microBatch, config.train.evalBatch))
        socket = MessageSocket(socket: router, limits: limits)
        do {
            endpoint = try router.bind(options.bind)
        } catch {
            // The ZAP handler's socket lives in the context, which cannot close while it runs.
            gate?.stop()
            credentials?.remove()
            throw BindPolicy.bindFailure(endpoint: options.bind, error: error)
        }
        if bindDecision.isWarning { logger.warning("\(bindDecision.message)") } else { logger.info("\(bindDecision.message)") }
        if let security {
            logger.info("\(security.summary)")
            for warning in security.warnings { logger.warning("\(warning)") }
        }
        local = LocalWorkers(logger: logger)
    }

    deinit {
        socket.socket.close()
        gate?.stop()
        localCredentials?.remove()
        context.close()
    }

    /// The address workers should connect to: the bound endpoint, with a wildcard host replaced
    /// by this host's name (a worker cannot connect to 0.0.0.0).
    public var connectAddress: String {
        for wildcard in ["://0.0.0.0:", "://*:", "://[::]:"] where endpoint.contains(wildcard) {
            return endpoint.replacingOccurrences(of: wildcard, with: "://\(ProcessInfo.processInfo.hostName):")
        }
        return endpoint
    }

    private var expectedWorkers: Int { options.expectedWorkers ?? max(options.spawnWorkers, 1) }

    /// Runs to the end of the configured epochs or steps, or until SIGINT/SIGTERM.
    public func run() throws -> RunSummary {
        try prepare()
        logger.info("listening on \(endpoint); start workers with: cnn-worker --connect \(connectAddress)")
        let keyOptions = options.security == nil ? "" : " --curve-key WORKER.key_secret --server-public-key COORDINATOR.key"
        try? "cnn-worker --connect \(connectAddress)\(keyOptions)\n".write(toFile: directory.path + "/worker-command.txt", atomically: true, encoding: .utf8)
        if options.spawnWorkers > 0 {
            try local.spawn(
                count: options.spawnWorkers, endpoint: endpoint, threads: options.workerThreads,
                executable: options.workerExecutable,
                extraArguments: (localCredentials?.workerArguments ?? []) + (options.quietLocalWorkers ? ["--quiet"] : []))
        }
        defer { local.stop() }
        try waitForWorkers(expectedWorkers)

        let stepsPerEpoch = EpochPlan(config: config, trainCount: trainCount, epoch: 0).steps
        let totalSteps = config.train.maxSteps > 0 ? min(config.train.maxSteps, config.train.epochs * stepsPerEpoch)
            : config.train.epochs * stepsPerEpoch
        notify { $0.runStarted(RunStart(config: config, endpoint: endpoint, runDirectory: directory.path, firstStep: state.step,
                                        stepsPerEpoch: stepsPerEpoch, totalSteps: totalSteps)) }
        var plan = EpochPlan(config: config, trainCount: trainCount, epoch: state.epoch)
        var interrupted = false
        var windowStart = monotonicSeconds()
        var windowImages = 0
        var windowScore = BatchScore()
        let runStart = monotonicSeconds()
        var trainedImages = 0
        var lastTestAccuracy: Double?

        while !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
            if Interruption.requested != nil { interrupted = true; break }
            if plan.epoch != state.epoch { plan = EpochPlan(config: config, trainCount: trainCount, epoch: state.epoch) }
            let epoch = state.epoch
            let work = plan.work(step: state.stepInEpoch)
            let stepStart = monotonicSeconds()
            let bytesBefore = (socket.bytesSent, socket.bytesReceived)
            let learningRate = Double(state.learningRate(stepsPerEpoch: stepsPerEpoch))
            let outcome: [BatchScore]?
            do {
                outcome = try runTask(kind: .train, epoch: epoch, work: work)
            } catch let stopped as RunStopped {
                // The weights of the last whole step are good: keep them, then report.
                let path = try saveCheckpoint(stepsPerEpoch: stepsPerEpoch)
                sayGoodbye(reason: "run stopped")
                throw CoordinatorError(description: stopped.reason + " (last good weights: \(path))")
            }
            guard let scores = outcome else { interrupted = true; break }
            try timed("reduce") { try reduction.mean(into: meanGradient.pointer) }
            reduction.end()
            timed("optimizer") { state.apply(meanGradient: meanGradient.pointer, stepsPerEpoch: stepsPerEpoch) }

            let score = scores.reduce(BatchScore(), +)
            let report = StepReport(
                step: state.step, epoch: epoch, stepInEpoch: state.stepInEpoch == 0 ? stepsPerEpoch : state.stepInEpoch,
                stepsPerEpoch: stepsPerEpoch, score: score, learningRate: learningRate, start: stepStart,
                seconds: monotonicSeconds() - stepStart, workers: workerStatuses(), phases: phases,
                bytesSent: socket.bytesSent - bytesBefore.0, bytesReceived: socket.bytesReceived - bytesBefore.1)
            phases.removeAll(keepingCapacity: true)
            notify { $0.stepFinished(report) }
            windowScore = windowScore + score
            windowImages += score.samples
            trainedImages += score.samples
            let epochEnded = state.stepInEpoch == 0
            if state.step % config.train.logEvery == 0 || epochEnded || state.isFinished(stepsPerEpoch: stepsPerEpoch) {
                let now = monotonicSeconds()
                let rate = Double(windowImages) / max(now - windowStart, 1e-9)
                logStep(epoch: epoch, stepsPerEpoch: stepsPerEpoch, score: windowScore, imagesPerSecond: rate)
                windowStart = now
                windowImages = 0
                windowScore = BatchScore()
            }
            if epochEnded || state.isFinished(stepsPerEpoch: stepsPerEpoch) {
                guard let test = try evaluate(epoch: epoch) else { interrupted = true; break }
                lastTestAccuracy = test.accuracy
            }
            if config.checkpoint.every > 0 && state.step % config.checkpoint.every == 0
                && !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
                try saveCheckpoint(stepsPerEpoch: stepsPerEpoch)
            }
        }
        if interrupted {
            logger.notice("\(Interruption.signalName) received: stopping after step \(state.step) and writing a checkpoint")
        }
        let final = try saveCheckpoint(stepsPerEpoch: stepsPerEpoch)
        sayGoodbye(reason: interrupted ? "coordinator interrupted" : "training finished")
        let elapsed = monotonicSeconds() - runStart
        let summary = RunSummary(
            steps: state.step, epochs: state.epoch, testAccuracy: lastTestAccuracy,
            imagesPerSecond: Double(trainedImages) / max(elapsed, 1e-9), finalCheckpoint: final, interrupted: interrupted)
        var line = "done: \(summary.steps) steps in \(String(format: "%.1f", elapsed)) s, "
            + "\(String(format: "%.0f", summary.imagesPerSecond)) images/s"
        if let accuracy = summary.testAccuracy { line += ", test accuracy \(String(format: "%.2f", accuracy * 100))%" }
        if !options.quiet { printProgress(line + "; checkpoint \(final)") }
        notify { $0.runFinished(summary) }
        return summary
    }

    // MARK: Start-up

    private func prepare() throws {
        if options.resume {
            let (checkpoint, warnings) = try directory.checkpoints.newestValid()
            for warning in warnings { logger.warning("\(warning)") }
            guard checkpoint.state.configHash == config.hash else {
                throw ConfigError(
                    file: config.source, line: nil,
                    message: "\(checkpoint.path) was written for another config (hash \(checkpoint.state.configHash), "
                        + "this one is \(config.hash)); resume with the run's own \(directory.path)/config.yaml or start a new --run-dir")
            }
            try state.restore(from: checkpoint)
            directory.truncateMetrics(after: state.step)
            logger.info("resumed from \(checkpoint.path) at step \(state.step), epoch \(state.epoch + 1)")
        } else if let initial = options.initialWeights {
            let report = try state.loadInitialWeights(from: initial, skipMismatched: config.train.initSkipMismatched)
            for line in report.lines { logger.info("\(line)") }
            logger.info("initial weights from \(initial)")
        }
        try directory.writeConfig(config)
    }

    private func waitForWorkers(_ count: Int) throws {
        let deadline = monotonicSeconds() + config.distributed.joinTimeout
        if pool.count < count { logger.info("waiting for \(count) worker\(count == 1 ? "" : "s")") }
        while pool.count < count {
            if Interruption.requested != nil { return }
            if monotonicSeconds() > deadline {
                throw CoordinatorError(
                    description: "only \(pool.count) of \(count) workers joined within \(Int(config.distributed.joinTimeout)) s; "
                        + "start them with `cnn-worker --connect \(connectAddress)` or lower --workers")
            }
            try local.checkAlive()
            try pump(timeout: 0.1)
        }
    }

    // MARK: Tasks

    private enum Kind { case train, evaluate }

    /// Runs one task (a training step or an evaluation) to completion over whatever workers are
    /// alive, reassigning the micro-batches of workers that die. Returns nil when interrupted.
    private func runTask(kind: Kind, epoch: Int, work: [MicroBatchWork]) throws -> [BatchScore]? {
        let total = work.count
        currentTask = TaskState(kind: kind, epoch: epoch, step: state.step, work: work)
        defer { currentTask = nil }
        if kind == .train { reduction.begin(microBatches: total, length: state.leafLength) }
        for worker in pool.all {
            worker.outstanding = []
            worker.assignedThisTask = []
        }
        var waitingSince: Double?
        /// When every micro-batch had first been handed out: the coordinator waits from then on.
        var allAssignedAt: Double?
        while let task = currentTask, task.scores.count < total {
            if Interruption.requested != nil { return nil }
            if let reason = stopReason { throw RunStopped(reason: reason) }
            try local.checkAlive()
            expireSilentWorkers()
            if pool.count == 0 {
                let since = waitingSince ?? monotonicSeconds()
                if waitingSince == nil {
                    logger.warning("step \(state.step): no workers alive; waiting up to \(Int(config.distributed.joinTimeout)) s for one to join")
                }
                waitingSince = since
                if monotonicSeconds() - since > config.distributed.joinTimeout {
                    throw CoordinatorError(
                        description: "step \(state.step): no worker has been alive for \(Int(config.distributed.joinTimeout)) s; "
                            + "the last checkpoint is in \(directory.checkpoints.checkpointsDirectory). Start workers with "
                            + "`cnn-worker --connect \(connectAddress)`, then resume with --resume")
                }
            } else {
                waitingSince = nil
                try assignUnclaimedWork()
                try assignBackupCopies()
                if allAssignedAt == nil, currentTask?.unassigned.isEmpty == true { allAssignedAt = monotonicSeconds() }
            }
            try pump(timeout: 0.05)
            sendHeartbeats()
        }
        guard let task = currentTask else { return nil }
        for (id, start) in task.assignedAt.sorted(by: { $0.key < $1.key }) {
            guard let end = task.finishedAt[id] else { continue }
            if kind == .train {
                lastStepSeconds[id] = end - start
                phases.append(PhaseTiming(name: "compute", workerID: id, start: start, duration: end - start))
                phases += PhaseTiming.parts(ofComputeFrom: start, to: end, timings: task.timings[id] ?? .zero, workerID: id)
            } else {
                phases.append(PhaseTiming(name: "evaluate", workerID: id, start: start, duration: end - start))
            }
        }
        if kind == .train, let waitStart = allAssignedAt, let lastResult = task.finishedAt.values.max(), lastResult > waitStart {
            phases.append(PhaseTiming(name: "wait", workerID: nil, start: waitStart, duration: lastResult - waitStart))
        }
        return (0..<total).map { task.scores[$0]! }
    }

    private struct TaskState {
        let kind: Kind
        let epoch: Int
        let step: Int
        let work: [MicroBatchWork]
        var scores: [Int: BatchScore] = [:]
        var unassigned: Set<Int>
        /// When each worker was first given work in this task, and when its last result came.
        var assignedAt: [UInt32: Double] = [:]
        var finishedAt: [UInt32: Double] = [:]
        /// What each worker reported of its own time, summed over its results in this task.
        var timings: [UInt32: WorkerTimings] = [:]
        let startedAt = monotonicSeconds()
        /// When the first worker had nothing left to do in this task.
        var firstIdleAt: Double?
        /// Workers whose remaining micro-batches were already copied to others.
        var backedUp: Set<UInt32> = []
        /// Micro-batches that came back with NaN or infinity once, and who must not redo them.
        var nonFinite: Set<Int> = []
        var avoid: [Int: Set<UInt32>] = [:]

        init(kind: Kind, epoch: Int, step: Int, work: [MicroBatchWork]) {
            self.kind = kind
            self.epoch = epoch
            self.step = step
            self.work = work
            unassigned = Set(work.indices)
        }

        var wireKind: TaskKind { kind == .train ? .train : .evaluate }
    }

    private var currentTask: TaskState?
    /// Set when the run cannot go on (non-finite gradients under the stop policy).
    private var stopReason: String?

    /// Gives micro-batches nobody is computing to the workers that are alive.
    private func assignUnclaimedWork() throws {
        guard let task = currentTask, !task.unassigned.isEmpty else { return }
        let workers = pool.all
        // Micro-batches that came back non-finite go to someone else first.
        let (special, ordinary) = task.unassigned.sorted().reduce(into: ([Int](), [Int]())) { parts, index in
            if task.avoid[index] != nil { parts.0.append(index) } else { parts.1.append(index) }
        }
        for index in special {
            let others = workers.filter { !(task.avoid[index]?.contains($0.id) ?? false) }
            if let worker = others.first ?? workers.first { try give([index], to: worker) }
        }
        for (worker, indices) in WorkerPool.split(ordinary, among: workers) {
            try give(indices, to: worker)
        }
    }

    /// Stragglers: once some worker is idle and the rest of the step has taken more than twice as
    /// long as that worker needed, the slow workers' remaining micro-batches are copied to the
    /// idle ones. The first copy to arrive is used; every copy has the same bits.
    private func assignBackupCopies() throws {
        guard var task = currentTask, task.unassigned.isEmpty, let idleAt = task.firstIdleAt else { return }
        let now = monotonicSeconds()
        let patience = max(2 * (idleAt - task.startedAt), 0.2)
        guard now - task.startedAt > patience else { return }
        let idle = pool.all.filter { $0.outstanding.isEmpty }
        guard !idle.isEmpty else { return }
        for slow in pool.all where !slow.outstanding.isEmpty && !task.backedUp.contains(slow.id) {
            task.backedUp.insert(slow.id)
            let remaining = slow.outstanding.sorted()
            let message = "step \(task.step): worker \(slow.label) is slow: micro-batches \(remaining) not back after "
                + "\(String(format: "%.1f", now - task.startedAt)) s (the first worker finished in \(String(format: "%.1f", idleAt - task.startedAt)) s); "
                + "backup copies go to \(idle.map(\.label).joined(separator: ", "))"
            logger.warning("\(message)")
            currentTask = task
            for (worker, indices) in WorkerPool.split(remaining, among: idle) {
                try give(indices, to: worker)
            }
            guard let updated = currentTask else { return }
            task = updated
        }
        currentTask = task
    }

    /// Sends weights (if needed) and an assignment of `indices` of the current task to `worker`.
    private func give(_ indices: [Int], to worker: WorkerRecord) throws {
        guard var task = currentTask else { return }
        try ensureWeights(worker)
        let assignment = Assignment(
            kind: task.wireKind, epoch: UInt32(task.epoch), totalMicroBatches: UInt32(task.work.count),
            microBatches: indices.map { MicroBatch(index: UInt32($0), samples: task.work[$0].samples.map(UInt32.init)) })
        // The worker's compute span starts as the assignment leaves: the worker may hold it
        // before this thread is back from sending it.
        let sendingAt = monotonicSeconds()
        try send(.assign(assignment), to: worker)
        guard pool[worker.peer] != nil else { return }  // the send found it gone
        worker.outstanding.formUnion(indices)
        worker.assignedThisTask.formUnion(indices)
        task.unassigned.subtract(indices)
        if task.assignedAt[worker.id] == nil { task.assignedAt[worker.id] = sendingAt }
        currentTask = task
    }

    private func ensureWeights(_ worker: WorkerRecord) throws {
        guard worker.weightsVersion != state.step else { return }
        if weightsPayloadVersion != state.step {
            weightsPayload = FloatPayload(count: state.weightsCount) { state.copyWeights(into: $0.baseAddress!) }
            weightsPayloadVersion = state.step
        }
        let start = monotonicSeconds()
        try send(.weights(Weights(values: weightsPayload!)), to: worker)
        worker.weightsVersion = state.step
        phases.append(PhaseTiming(name: "broadcast", workerID: worker.id, start: start, duration: monotonicSeconds() - start))
    }

    // MARK: Messages

    private func send(_ message: Message, to worker: WorkerRecord) throws {
        do {
            try socket.send(Envelope(runID: runID, step: UInt64(state.step), message: message), to: worker.peer)
            worker.lastSent = monotonicSeconds()
        } catch {
            // Unroutable: the worker's connection is gone. Treat it as dead now rather than at its timeout.
            // A full queue means it does not read what it is sent: ignore it for a while too.
            if (error as? ZMQError)?.isWouldBlock == true { peerGuard.ban(worker.peer, now: monotonicSeconds()) }
            logger.warning("step \(state.step): cannot reach worker \(worker.label): \(error)")
            declareDead(worker, reason: "its connection is gone")
        }
    }

    /// Receives and handles messages until none arrives within `timeout` seconds.
    private func pump(timeout: Double) throws {
        gate?.logNewRefusals(logger)
        var wait = Int(timeout * 1000)
        while let incoming = try socket.receive(timeoutMilliseconds: wait) {
            wait = 0
            handle(incoming)
        }
    }

    private func handle(_ incoming: Incoming) {
        guard let peer = incoming.peer else { return }
        switch peerGuard.admit(peer, now: monotonicSeconds()) {
        case .accept: break
        case .ignore: return
        case .evict(let reason): return evict(peer, reason: reason)
        }
        let envelope: Envelope
        switch incoming.result {
        case .failure(let error):
            return offence(peer, "a malformed message: \(error)", code: 400)
        case .success(let decoded):
            envelope = decoded
        }
        if case .hello(let hello) = envelope.message {
            admit(peer: peer, hello: hello)
            return
        }
        guard envelope.runID == runID else {
            return offence(peer, "a \(envelope.message.typeName) message for another run; this coordinator runs another run: send hello to join it", code: 409)
        }
        guard let worker = pool[peer] else {
            return offence(peer, "a \(envelope.message.typeName) message from an unknown worker; send hello first", code: 401)
        }
        worker.lastHeard = monotonicSeconds()
        if worker.countMessage(now: worker.lastHeard) > config.distributed.maxMessagesPerSecond {
            logger.warning("evicted worker \(worker.label): more than \(config.distributed.maxMessagesPerSecond) messages in a second (distributed.max_messages_per_second)")
            reply(peer, code: 429, text: "too many messages; evicted")
            declareDead(worker, reason: "it flooded the coordinator")
            return
        }
        switch envelope.message {
        case .gradients(let gradients):
            accept(gradients, step: Int(envelope.step), from: worker)
        case .bye(let bye):
            logger.info("worker \(worker.label) left: \(bye.reason)")
            declareDead(worker, reason: "it said goodbye")
        case .error(let failure):
            logger.warning("worker \(worker.label) reported error \(failure.code): \(failure.text)")
            declareDead(worker, reason: "it reported an error")
        case .heartbeat:
            break
        default:
            logger.warning("unexpected \(envelope.message.typeName) from worker \(worker.label); ignored")
        }
    }

    /// A bad message from `peer`: logged and answered only the first few times, so a flood
    /// cannot fill the log or the peer's queue; too many evict it.
    private func offence(_ peer: PeerID, _ what: String, code: UInt16) {
        let outcome = peerGuard.strike(peer, reason: what, now: monotonicSeconds())
        if case .evict(let reason) = outcome.verdict { return evict(peer, reason: reason) }
        if outcome.shouldLog {
            let repeats = outcome.offences > 1 ? " (offence \(outcome.offences); only some are logged)" : ""
            logger.warning("\(pool[peer]?.label ?? "unknown peer \(peer)") sent \(what)\(repeats)")
        }
        if outcome.shouldReply { reply(peer, code: code, text: what) }
    }

    /// Drops a misbehaving peer: a worker is declared dead (its micro-batches go to others) and
    /// named; either way its messages are ignored for a while.
    private func evict(_ peer: PeerID, reason: String) {
        if let worker = pool[peer] {
            logger.warning("evicted worker \(worker.label) (\(peer)): \(reason)")
            declareDead(worker, reason: "evicted: \(reason)")
        } else {
            logger.warning("ignoring \(peer): \(reason)")
        }
    }

    private func admit(peer: PeerID, hello: Hello) {
        if pool[peer] == nil && pool.count >= config.distributed.maxWorkers {
            logger.warning("turned away worker \(hello.name) from \(hello.hostName): already \(pool.count) workers (distributed.max_workers)")
            reply(peer, code: 503, text: "the coordinator has its maximum of \(config.distributed.maxWorkers) workers")
            return
        }
        if let existing = pool[peer] {
            // The same connection saying hello again has restarted: its old work is lost.
            declareDead(existing, reason: "it said hello again")
        }
        let worker = pool.add(peer: peer, name: hello.name, threads: hello.threads, now: monotonicSeconds())
        let welcome = Welcome(
            workerID: worker.id, configText: config.yaml, parameterCount: state.parameterCount,
            heartbeatIntervalMilliseconds: UInt32(config.distributed.heartbeatInterval * 1000),
            workerTimeoutMilliseconds: UInt32(config.distributed.workerTimeout * 1000))
        do {
            try send(.welcome(welcome), to: worker)
        } catch {
            logger.warning("could not welcome \(worker.label): \(error)")
            return
        }
        workerHosts[worker.id] = hello.hostName
        notify { $0.workerJoined(status(of: worker, alive: true)) }
        logger.info("worker \(worker.label) joined from \(hello.hostName) (pid \(hello.processID), \(hello.threads) thread\(hello.threads == 1 ? "" : "s"), GEMM \(hello.coreType)); \(pool.count) alive")
        if hello.coreType != BLAS.kernelName {
            // Another library or kernel rounds differently: the run stays correct, but its
            // results no longer match, bit for bit, a run on any other set of workers.
            logger.warning("""
                worker \(worker.label) multiplies with \(hello.coreType), this coordinator with \(BLAS.kernelName): \
                its gradients can differ in the last bits; run every process with the same \(BLAS.libraryVariable) \
                (and OPENBLAS_CORETYPE) for bit-identical runs
                """)
        }
    }

    /// Checks a worker's results against its assignment and the model, then takes them.
    private func accept(_ gradients: Gradients, step: Int, from worker: WorkerRecord) {
        guard var task = currentTask, step == task.step, gradients.kind == task.wireKind,
              Int(gradients.epoch) == task.epoch else {
            logger.debug("ignored late \(gradients.kind) results of step \(step) from \(worker.label)")
            return
        }
        let total = task.work.count
        let tree = ReductionTree(leafCount: total)
        func refuse(_ why: String) {
            logger.warning("step \(task.step): refused results from worker \(worker.label): \(why); its micro-batches go to others")
            reply(worker.peer, code: 422, text: "results refused: \(why)")
            declareDead(worker, reason: "it sent invalid results")
        }
        var covered = Set<Int>()
        for result in gradients.results {
            let index = Int(result.index)
            guard worker.assignedThisTask.contains(index) else {
                return refuse("result for micro-batch \(index), which it was not given")
            }
            guard Int(result.samples) == task.work[index].samples.count, result.correct <= result.samples else {
                return refuse("impossible score for micro-batch \(index)")
            }
            covered.insert(index)
        }
        if task.kind == .train {
            guard gradients.tensors.count == gradients.nodes.count else {
                return refuse("\(gradients.nodes.count) tree nodes but \(gradients.tensors.count) tensors")
            }
            var nodeLeaves = Set<Int>()
            for (node, tensor) in zip(gradients.nodes, gradients.tensors) {
                let id = TreeNodeID(level: Int(node.level), index: Int(node.index))
                guard tree.contains(id) else { return refuse("\(node) is outside the tree of \(total) micro-batches") }
                let leaves = tree.leaves(of: id)
                guard leaves.allSatisfy({ worker.assignedThisTask.contains($0) }) else {
                    return refuse("partial sum over micro-batches \(leaves) it was not given")
                }
                guard tensor.count == state.leafLength else {
                    return refuse("a gradient of \(tensor.count) values; the model needs \(state.leafLength) "
                        + "(\(state.parameterCount) parameters and \(state.leafLength - state.parameterCount) state values)")
                }
                if let bad = tensor.withUnsafeBufferPointer({ $0.firstIndex { !$0.isFinite } }) {
                    // Everything in the message goes elsewhere at once, not only this node: the
                    // rest would otherwise wait for the straggler rule or the worker's timeout.
                    return rejectNonFinite(leaves: covered.union(leaves).sorted(), at: bad, from: worker, task: task)
                }
                nodeLeaves.formUnion(leaves)
            }
            guard nodeLeaves == covered else {
                return refuse("scores for micro-batches \(covered.sorted()) but gradients for \(nodeLeaves.sorted())")
            }
            let diverged = gradients.results.filter { !$0.lossSum.isFinite }.map { Int($0.index) }
            if !diverged.isEmpty {
                return rejectNonFinite(leaves: diverged, at: nil, from: worker, task: task)
            }
            for (node, tensor) in zip(gradients.nodes, gradients.tensors) {
                let id = TreeNodeID(level: Int(node.level), index: Int(node.index))
                let pointer = tensor.withUnsafeBufferPointer { $0.baseAddress! }
                do {
                    _ = try reduction.offer(id, values: pointer, owner: tensor)
                } catch {
                    return refuse("\(error)")
                }
            }
        }
        if task.kind != .train {
            let diverged = gradients.results.filter { !$0.lossSum.isFinite }.map { Int($0.index) }
            if !diverged.isEmpty {
                return rejectNonFinite(leaves: diverged, at: nil, from: worker, task: task)
            }
        }
        for result in gradients.results where task.scores[Int(result.index)] == nil {
            task.scores[Int(result.index)] = BatchScore(
                lossSum: result.lossSum, correct: Int(result.correct), samples: Int(result.samples))
        }
        worker.microBatchesDone += covered.count
        task.finishedAt[worker.id] = monotonicSeconds()
        task.timings[worker.id] = (task.timings[worker.id] ?? .zero) + gradients.timings
        for other in pool.all { other.outstanding.subtract(covered) }
        if task.firstIdleAt == nil && worker.outstanding.isEmpty { task.firstIdleAt = monotonicSeconds() }
        task.unassigned.subtract(covered)
        currentTask = task
    }

    /// A gradient with NaN or infinity: the step's weights stay untouched. Under `recompute` its
    /// micro-batches go to another worker; a second non-finite copy means the numbers themselves
    /// diverged (every copy has the same bits), and the run stops with a report.
    private func rejectNonFinite(leaves: [Int], at index: Int?, from worker: WorkerRecord, task: TaskState) {
        let location = index.map(describe(leafIndex:)) ?? "the loss"
        let report = "step \(task.step): worker \(worker.label) sent a gradient with NaN or infinity for micro-batches \(leaves), "
            + "first in \(location)"
        var task = task
        // Computation is deterministic, so only when every live worker got a non-finite result
        // for a micro-batch is the model itself to blame; before that it may be one bad worker
        // (or a hostile one that rejoins under new ids), and the micro-batch goes to another.
        let alive = Set(pool.all.map(\.id)).union([worker.id])
        let seenBefore = leaves.contains { alive.isSubset(of: task.avoid[$0, default: []].union([worker.id])) }
        if config.distributed.nonFinite == .stop || seenBefore {
            let why = seenBefore ? "; every live worker computed them with a non-finite result, so training diverged"
                : " (distributed.nonfinite_gradients: stop)"
            stopReason = report + why + ". Lower train.optimizer.lr, add gradient clipping, or resume from an earlier checkpoint"
            currentTask = task
            return
        }
        logger.warning("\(report); recomputing them on another worker")
        // Its answer for these micro-batches is spent: a second, finite answer from the same
        // worker (a hostile one trying again) is refused like any result for work not given.
        worker.assignedThisTask.subtract(leaves)
        task.nonFinite.formUnion(leaves)
        for leaf in leaves { task.avoid[leaf, default: []].insert(worker.id) }
        for other in pool.all { other.outstanding.subtract(leaves) }
        task.unassigned.formUnion(leaves)
        currentTask = task
    }

    /// "parameter 3.weight, element 17" for an index into a gradient leaf.
    private func describe(leafIndex index: Int) -> String {
        let network = state.network
        if let slot = network.parameterSlots.first(where: { index >= $0.offset && index < $0.offset + $0.count }) {
            return "the gradient of \(slot.name) (element \(index - slot.offset))"
        }
        let stateIndex = index - network.parameterCount
        if let slot = network.stateSlots.first(where: { stateIndex >= $0.offset && stateIndex < $0.offset + $0.count }) {
            return "the observed \(slot.name) (element \(stateIndex - slot.offset))"
        }
        return "element \(index)"
    }

    private func reply(_ peer: PeerID, code: UInt16, text: String) {
        try? socket.send(Envelope(runID: runID, step: UInt64(state.step), message: .error(WireFailure(code: code, text: text))), to: peer)
    }

    private func declareDead(_ worker: WorkerRecord, reason: String) {
        guard pool.remove(worker.peer) != nil else { return }
        notify { $0.workerLeft(status(of: worker, alive: false), reason: reason) }
        // Micro-batches another worker is also computing (a backup copy) are not lost.
        let stillComputed = pool.all.reduce(into: Set<Int>()) { $0.formUnion($1.outstanding) }
        let lost = worker.outstanding.subtracting(stillComputed).sorted()
        if var task = currentTask, !lost.isEmpty {
            task.unassigned.formUnion(lost)
            currentTask = task
            let others = pool.all.map(\.label).joined(separator: ", ")
            logger.warning("step \(state.step): worker \(worker.label) is gone (\(reason)); its micro-batches \(lost) go to \(others.isEmpty ? "the next worker to join" : others)")
        } else {
            logger.info("worker \(worker.label) is gone (\(reason)); \(pool.count) alive")
        }
    }

    private func expireSilentWorkers() {
        let now = monotonicSeconds()
        for worker in pool.all where now - worker.lastHeard > config.distributed.workerTimeout {
            declareDead(worker, reason: "silent for \(String(format: "%.1f", now - worker.lastHeard)) s, more than distributed.worker_timeout")
        }
    }

    private func sendHeartbeats() {
        let now = monotonicSeconds()
        for worker in pool.all where now - worker.lastSent > config.distributed.heartbeatInterval {
            try? send(.heartbeat(Heartbeat(sentAtMilliseconds: UInt64(now * 1000), busy: false)), to: worker)
        }
    }

    private func sayGoodbye(reason: String) {
        for worker in pool.all {
            try? send(.bye(Bye(reason: reason)), to: worker)
        }
    }

    // MARK: Evaluation, logging, checkpoints

    private func evaluate(epoch: Int) throws -> BatchScore? {
        let work = evaluationWork(testCount: testCount, microBatch: config.train.evalBatch)
        guard let scores = try runTask(kind: .evaluate, epoch: epoch, work: work) else { return nil }
        let total = scores.reduce(BatchScore(), +)
        notify { $0.evaluationFinished(step: state.step, epoch: epoch, score: total) }
        reportPhasesOutsideSteps()
        directory.appendMetrics([
            ("step", .int(state.step)), ("epoch", .int(epoch + 1)), ("test_loss", .double(total.meanLoss)),
            ("test_accuracy", .double(total.accuracy)), ("workers", .int(pool.count)),
        ])
        if !options.quiet {
            printProgress("epoch \(epoch + 1) step \(state.step): test accuracy \(String(format: "%.2f", total.accuracy * 100))% "
                + "(loss \(String(format: "%.4f", total.meanLoss)), \(total.samples) images)")
        }
        return total
    }

    private func logStep(epoch: Int, stepsPerEpoch: Int, score: BatchScore, imagesPerSecond: Double) {
        directory.appendMetrics([
            ("step", .int(state.step)), ("epoch", .int(epoch + 1)), ("loss", .double(score.meanLoss)),
            ("accuracy", .double(score.accuracy)), ("images_per_second", .double(imagesPerSecond)),
            ("workers", .int(pool.count)), ("learning_rate", .double(Double(state.learningRate(stepsPerEpoch: stepsPerEpoch)))),
        ])
        guard !options.quiet else { return }
        let inEpoch = state.stepInEpoch == 0 ? stepsPerEpoch : state.stepInEpoch
        printProgress("epoch \(epoch + 1)/\(config.train.epochs) step \(inEpoch)/\(stepsPerEpoch) (\(state.step) total) "
            + "loss \(String(format: "%.4f", score.meanLoss)) accuracy \(String(format: "%.2f", score.accuracy * 100))% "
            + "\(String(format: "%.0f", imagesPerSecond)) images/s, \(pool.count) worker\(pool.count == 1 ? "" : "s")")
    }

    private func notify(_ body: (RunObserver) -> Void) {
        options.observers.forEach(body)
    }

    private func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let start = monotonicSeconds()
        defer { phases.append(PhaseTiming(name: name, workerID: nil, start: start, duration: monotonicSeconds() - start)) }
        return try body()
    }

    private func status(of worker: WorkerRecord, alive: Bool) -> WorkerStatus {
        WorkerStatus(id: worker.id, name: worker.name, host: workerHosts[worker.id] ?? "", threads: worker.threads, alive: alive,
                     microBatchesDone: worker.microBatchesDone, lastStepSeconds: lastStepSeconds[worker.id])
    }

    private func workerStatuses() -> [WorkerStatus] {
        pool.all.map { status(of: $0, alive: true) }
    }

    @discardableResult
    private func saveCheckpoint(stepsPerEpoch: Int) throws -> String {
        let checkpointState = CheckpointState(
            formatVersion: CheckpointState.currentFormatVersion, step: state.step, epoch: state.epoch,
            positionInEpoch: state.stepInEpoch * config.train.batch, configHash: config.hash,
            createdBy: "cnn-coord \(Version.current)", createdAt: CheckpointState.timestampNow(), files: [:],
            extra: ["run_id": String(runID, radix: 16), "blas_core": BLAS.kernelName])
        let path = try timed("checkpoint") {
            try directory.checkpoints.save(
                step: state.step, model: state.modelTensors(), optimizer: state.optimizerTensors(), state: checkpointState)
        }
        logger.info("checkpoint \(path)")
        reportPhasesOutsideSteps()
        return path
    }

    /// Hands the spans gathered since the last step (an evaluation with the weights it needed, a
    /// checkpoint) to the observers at once, so the work after the last step is seen too.
    private func reportPhasesOutsideSteps() {
        guard !phases.isEmpty else { return }
        let finished = phases
        phases.removeAll(keepingCapacity: true)
        notify { $0.phasesFinished(finished, step: state.step) }
    }
}

/// Thrown inside a step when the run must stop; the step is not applied.
struct RunStopped: Error {
    var reason: String
}

/// The program version recorded in checkpoints and shown by `--version`.
public enum Version {
    public static let current = "0.1.0"
}

extension DecodeLimits {
    /// Limits sized for a model: nothing a well-behaved peer sends is refused, and nothing
    /// larger is ever allocated.
    static func forModel(weights: Int, microBatches: Int, samples: Int) -> DecodeLimits {
        var limits = DecodeLimits.default
        limits.maxTensorValues = max(weights, 1)
        limits.maxTensorFrames = max(microBatches, 1)
        limits.maxMicroBatches = max(microBatches, 10_000)
        limits.maxSamplesPerMicroBatch = max(samples, 1)
        return limits
    }
}
