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
    /// Which progress lines go to standard output (warnings always go to standard error).
    public var progress: ProgressOutput = .everyLine
    /// Start the workers of `spawnWorkers` with `--quiet`: they share this terminal, and while a
    /// live display redraws it their info lines would tear it. Their warnings and errors still show.
    public var quietLocalWorkers: Bool = false
    /// Start the workers of `spawnWorkers` with `--log-timestamps`, as this coordinator's lines are.
    public var timestampLocalWorkers: Bool = false
    /// Listeners for progress, metrics endpoints and traces.
    public var observers: [RunObserver] = []
    /// CURVE keys (`--curve-secret-key`, `--authorized-keys`); nil for a plain socket.
    public var security: CoordinatorSecurity?
    /// Without keys, bind an address other hosts can reach anyway (`--insecure-bind`).
    public var insecureBind: Bool = false

    public init() {}
}

/// Which progress lines the coordinator prints on standard output.
public enum ProgressOutput: Sendable {
    /// A line per logged window of steps, per evaluation, and at the end.
    case everyLine
    /// Only the line that ends the run (--quiet).
    case finalLine
    /// None (a live display owns the terminal).
    case none
}

/// What a finished run reports.
public struct RunSummary: Sendable {
    public var steps: Int
    public var epochs: Int
    public var testAccuracy: Double?
    public var imagesPerSecond: Double
    /// Seconds from the first step to the end of the final checkpoint.
    public var seconds: Double
    public var finalCheckpoint: String
    public var interrupted: Bool

    public init(steps: Int, epochs: Int, testAccuracy: Double?, imagesPerSecond: Double, seconds: Double, finalCheckpoint: String,
                interrupted: Bool) {
        self.steps = steps
        self.epochs = epochs
        self.testAccuracy = testAccuracy
        self.imagesPerSecond = imagesPerSecond
        self.seconds = seconds
        self.finalCheckpoint = finalCheckpoint
        self.interrupted = interrupted
    }
}

/// A failure the coordinator cannot train through.
public struct CoordinatorError: Error, CustomStringConvertible {
    public var description: String
}

/// The coordinator: owns the config, master weights, optimiser state, data order and checkpoints,
/// and runs the loop of DESIGN.md: assign micro-batches, combine their gradients along the fixed
/// tree, apply the optimiser, send the weights. Who computes what is decided by the
/// `StepScheduler`, how gradients are combined by the `ReductionStrategy`, what peers may send by
/// `PeerGuard` and `ResultCheck`, and everything it reports goes to `RunObserver`s.
public final class Coordinator {
    public let config: TrainingConfig
    public let options: CoordinatorOptions
    let logger: Logger
    let state: ModelState
    private let directory: RunDirectory
    let runID: UInt64
    let link: CoordinatorLink
    var transport: MessageTransport { link.transport }
    public var endpoint: String { link.endpoint }
    var pool = WorkerPool()
    var scheduler: StepScheduler
    /// Message rate, strikes and bans per peer.
    let peerGuard: PeerGuard
    /// Earlier runs whose workers' messages the log has named (a few: one line for all of them).
    var earlierRunsNamed: Set<UInt64> = []
    private let reduction: ReductionStrategy
    /// The sharded reduction's state (nil under `central`).
    let sharding: ShardedReduction?
    private let meanGradient: FloatBuffer
    private let local: LocalWorkers
    private let observers: [RunObserver]
    private let trainCount: Int
    /// The data set's class names, recorded in checkpoints (image folders).
    private let classNames: [String]?
    private let testCount: Int

    /// The task in progress (a training step or an evaluation), while it runs.
    var task: Task?
    /// Set when the task cannot finish; thrown by the task loop.
    var stopError: Error?
    /// Weights of the current version, shared by every send of it.
    private var weightsPayload: FloatPayload?
    private var weightsPayloadVersion = -1
    /// Spans of the step in progress, for observers.
    var phases: [PhaseTiming] = []
    /// Hellos turned away for a full pool are logged at most every 10 s, however many peers try.
    var turnedAway = RepeatedWarning(interval: 10)

    /// A coordinator listening where `options.bind` says.
    public convenience init(config: TrainingConfig, options: CoordinatorOptions, logger: Logger) throws {
        // Refuse an unsafe or malformed --bind before loading anything.
        let bindDecision = try BindPolicy.check(endpoint: options.bind, secured: options.security != nil, insecureBind: options.insecureBind)
        try self.init(config: config, options: options, logger: logger) { maxMessageBytes, limits in
            try CoordinatorLink(options: options, bindDecision: bindDecision, maxMessageBytes: maxMessageBytes, limits: limits, logger: logger)
        }
    }

    /// A coordinator reached through `transport` (an in-memory one, in tests), known as `endpoint`.
    public convenience init(config: TrainingConfig, options: CoordinatorOptions, logger: Logger, transport: MessageTransport,
                            endpoint: String) throws {
        try self.init(config: config, options: options, logger: logger) { _, _ in CoordinatorLink(transport: transport, endpoint: endpoint) }
    }

    /// `makeLink` opens the network, given the largest message a peer may send and the limits
    /// its messages are decoded with.
    private init(config: TrainingConfig, options: CoordinatorOptions, logger: Logger,
                 makeLink: (Int, DecodeLimits) throws -> CoordinatorLink) throws {
        // Decided once, here: workers get the resolved config, so all compute the same way.
        let requested = config.train.precision, config = try config.resolvingPrecision()
        self.config = config
        self.options = options
        self.logger = logger
        if config.train.precision == .bf16 { logger.info("products in bf16: \(BFloat16Support.kernelName)") }
        if requested == .bf16IfAvailable && config.train.precision == .fp32 {
            logger.warning("train.precision: bf16-if-available computes in fp32 here: \(BFloat16Support.missingReason)")
        }
        if config.distributed.wirePrecision == .bf16 {
            logger.info("gradients travel in bf16 (distributed.wire_precision): every node of the summation tree is rounded to bf16")
        }
        peerGuard = PeerGuard(config: PeerLimits(maxMessagesPerSecond: Double(config.distributed.maxMessagesPerSecond)))
        scheduler = StepScheduler(settings: .init(workerTimeout: config.distributed.workerTimeout, joinTimeout: config.distributed.joinTimeout,
                                                  nonFinite: config.distributed.nonFinite))
        // A resumed run's weights all come from its checkpoint (`prepare`), or it does not start.
        state = try ModelState(config: config, initialise: !options.resume)
        reduction = TreeReduction(rounding: config.nodeRounding(gradientCount: state.parameterCount))
        directory = try RunDirectory(path: options.runDirectory, keep: config.checkpoint.keep)
        runID = UInt64.random(in: 1...UInt64.max)
        meanGradient = FloatBuffer(count: config.distributed.reduction == .sharded ? 1 : state.leafLength)
        sharding = config.distributed.reduction == .sharded
            ? ShardedReduction(parameterCount: state.parameterCount, stateCount: state.network.stateCount) : nil
        // The coordinator reads the data only to know the set sizes; workers load it themselves.
        let data = try DataSource.load(config)
        if !data.skippedFiles.isEmpty {
            logger.warning("left out \(data.skippedFiles.count) image file(s) that do not decode (data.skip_bad_files), first \(data.skippedFiles[0])")
        }
        trainCount = data.train.count
        testCount = data.test.count
        classNames = data.classNames
        // The largest honest message is a worker's partial sums for a whole step.
        let microBatches = config.train.microBatchesPerStep
        let limits = DecodeLimits.forModel(weights: max(state.weightsCount, state.leafLength), microBatches: microBatches,
                                           samples: max(config.train.microBatch, config.train.evalBatch))
        link = try makeLink((microBatches + 1) * state.leafLength * 4 + (1 << 20), limits)
        local = LocalWorkers(logger: logger)
        var observers = options.observers
        observers.append(MetricsLog(directory: directory))
        switch options.progress {
        case .everyLine: observers.append(ProgressLines(finalLineOnly: false))
        case .finalLine: observers.append(ProgressLines(finalLineOnly: true))
        case .none: break
        }
        self.observers = observers
    }

    /// The address workers should connect to: the bound endpoint, with a wildcard host replaced
    /// by this host's name (a worker cannot connect to 0.0.0.0).
    public var connectAddress: String {
        for wildcard in ["://0.0.0.0:", "://*:", "://[::]:"] where endpoint.contains(wildcard) {
            return endpoint.replacingOccurrences(of: wildcard, with: "://\(ProcessInfo.processInfo.hostName):")
        }
        return endpoint
    }

    var expectedWorkers: Int { options.expectedWorkers ?? max(options.spawnWorkers, 1) }

    /// Runs to the end of the configured epochs or steps, or until SIGINT/SIGTERM.
    public func run() throws -> RunSummary {
        try prepare()
        try startLocalWorkers()
        defer { local.stop() }
        try waitForWorkers(expectedWorkers)

        let stepsPerEpoch = EpochPlan(config: config, trainCount: trainCount, epoch: 0).steps
        let totalSteps = config.train.maxSteps > 0 ? min(config.train.maxSteps, config.train.epochs * stepsPerEpoch)
            : config.train.epochs * stepsPerEpoch
        notify { $0.runStarted(RunStart(config: config, endpoint: endpoint, runDirectory: directory.path, firstStep: state.step,
                                        stepsPerEpoch: stepsPerEpoch, totalSteps: totalSteps, classes: state.network.outputShape.count)) }
        let runStart = monotonicSeconds()
        var progress = RunProgress()
        var final = ""
        while true {
            do {
                try train(stepsPerEpoch: stepsPerEpoch, progress: &progress)
            } catch let stopped as RunStopped {
                // The weights of the last whole step are good: keep them, then report.
                let path = try saveCheckpoint()
                sayGoodbye(reason: "run stopped")
                throw CoordinatorError(description: stopped.reason + " (last good weights: \(path))")
            }
            if progress.interrupted {
                logger.notice("\(Interruption.signalName) received: stopping after step \(state.step) and writing a checkpoint")
            }
            do {
                final = try saveCheckpoint()
                break
            } catch let rewind as ShardRewind where !progress.interrupted {
                // The final weights were lost with their slices: train the steps since the last checkpoint again.
                try rewindToCheckpoint(after: rewind)
            }
        }
        sayGoodbye(reason: progress.interrupted ? "coordinator interrupted" : "training finished")
        let elapsed = monotonicSeconds() - runStart
        let summary = RunSummary(
            steps: state.step, epochs: state.epoch, testAccuracy: progress.lastTestAccuracy,
            imagesPerSecond: Double(progress.trainedImages) / max(elapsed, 1e-9), seconds: elapsed, finalCheckpoint: final,
            interrupted: progress.interrupted)
        notify { $0.runFinished(summary) }
        return summary
    }

    /// What the training loop has done so far.
    private struct RunProgress {
        var interrupted = false
        var trainedImages = 0
        var lastTestAccuracy: Double?
    }

    /// The loop: the next step, its report, an evaluation at the end of each epoch, a checkpoint
    /// when one is due. Returns when the run is done or interrupted.
    private func train(stepsPerEpoch: Int, progress: inout RunProgress) throws {
        // Under the sharded reduction a checkpoint is what the run falls back to when a slice's
        // owner and replica die together: there is always one.
        if sharding != nil && directory.checkpoints.list().isEmpty { try saveCheckpoint() }
        var plan = EpochPlan(config: config, trainCount: trainCount, epoch: state.epoch)
        while !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
            if Interruption.requested != nil { progress.interrupted = true; return }
            if plan.epoch != state.epoch { plan = EpochPlan(config: config, trainCount: trainCount, epoch: state.epoch) }
            let outcome: StepReport?
            do {
                outcome = try trainStep(plan.work(step: state.stepInEpoch), epoch: plan.epoch, stepsPerEpoch: stepsPerEpoch)
            } catch let rewind as ShardRewind {
                try rewindToCheckpoint(after: rewind)
                continue
            }
            guard let report = outcome else {
                progress.interrupted = true
                return
            }
            notify { $0.stepFinished(report) }
            try checkMetricsWritten()
            progress.trainedImages += report.score.samples
            if state.stepInEpoch == 0 || state.isFinished(stepsPerEpoch: stepsPerEpoch) {
                guard let test = try evaluate(epoch: report.epoch) else { progress.interrupted = true; return }
                try checkMetricsWritten()
                progress.lastTestAccuracy = test.accuracy
            }
            if config.checkpoint.every > 0 && state.step % config.checkpoint.every == 0 && !state.isFinished(stepsPerEpoch: stepsPerEpoch) {
                do {
                    try saveCheckpoint()
                } catch let rewind as ShardRewind {
                    try rewindToCheckpoint(after: rewind)
                }
            }
        }
    }

    /// Goes back to the newest checkpoint after a lost slice: the steps since are computed again
    /// and give the same bits, since every step is a function of the weights and the data order.
    private func rewindToCheckpoint(after rewind: ShardRewind) throws {
        let (checkpoint, warnings) = try directory.checkpoints.newestValid()
        for warning in warnings { logger.warning("\(warning)") }
        try state.restore(from: checkpoint)
        directory.truncateMetrics(after: state.step)
        notify { $0.runRewound(toStep: state.step) }
        sharding?.restart()
        phases.removeAll(keepingCapacity: true)
        logger.warning("\(rewind); going back to \(checkpoint.path) (step \(state.step)) and computing the steps since again")
    }

    /// Stops the run when metrics.jsonl could not be written (a full disk): training on would
    /// leave steps without their lines, and the next checkpoint would fail the same way.
    private func checkMetricsWritten() throws {
        guard let failure = directory.metricsFailure else { return }
        let newest = directory.checkpoints.list().last.map { "the newest checkpoint, \($0), is kept" } ?? "no checkpoint was written yet"
        throw CoordinatorError(description: "\(failure); stopped after step \(state.step): free space in \(directory.path) and continue with --resume (\(newest))")
    }

    /// One optimiser step: assign the micro-batches, collect their gradients, reduce, update.
    /// Nil when interrupted; the weights then stay those of the last whole step.
    private func trainStep(_ work: [MicroBatch], epoch: Int, stepsPerEpoch: Int) throws -> StepReport? {
        if let sharding { return try trainShardedStep(work, epoch: epoch, stepsPerEpoch: stepsPerEpoch, sharding: sharding) }
        let stepStart = monotonicSeconds()
        let bytesBefore = (transport.bytesSent, transport.bytesReceived)
        let learningRate = Double(state.learningRate(stepsPerEpoch: stepsPerEpoch))
        let plan = reduction.plan(length: state.leafLength, workers: pool.all.map(\.id))
        guard plan.owners == [.coordinator] else {
            throw CoordinatorError(description: "the \(reduction.name) reduction gives slices to \(plan.owners); this coordinator completes them all itself")
        }
        reduction.begin(microBatches: work.count, length: plan.length(ownedBy: .coordinator))
        defer { reduction.end() }
        guard let scores = try runTask(.train, epoch: epoch, work: work) else { return nil }
        try timed("reduce") { try reduction.mean(into: meanGradient.pointer) }
        timed("optimizer") { state.apply(meanGradient: meanGradient.pointer, stepsPerEpoch: stepsPerEpoch) }
        defer { phases.removeAll(keepingCapacity: true) }
        return StepReport(
            step: state.step, epoch: epoch, stepInEpoch: state.stepInEpoch == 0 ? stepsPerEpoch : state.stepInEpoch,
            stepsPerEpoch: stepsPerEpoch, score: scores.reduce(BatchScore(), +), learningRate: learningRate, start: stepStart,
            seconds: monotonicSeconds() - stepStart, workers: pool.all.map { $0.status(alive: true) }, phases: phases,
            bytesSent: transport.bytesSent - bytesBefore.0, bytesReceived: transport.bytesReceived - bytesBefore.1)
    }

    private func evaluate(epoch: Int) throws -> BatchScore? {
        let work = evaluationWork(testCount: testCount, microBatch: config.train.evalBatch)
        guard let scores = try runTask(.evaluate, epoch: epoch, work: work) else { return nil }
        let total = scores.reduce(BatchScore(), +)
        notify { $0.evaluationFinished(step: state.step, epoch: epoch, score: total) }
        reportPhasesOutsideSteps()
        return total
    }

    // MARK: Tasks

    /// A training step's or an evaluation's micro-batches and what has come back of them.
    struct Task {
        let kind: TaskKind
        let epoch: Int
        let step: Int
        let work: [MicroBatch]
        var scores: [Int: BatchScore] = [:]
        /// What each worker reported of its own time, summed over its results in this task.
        var timings: [UInt32: WorkerTimings] = [:]
        /// How long before its last results each worker's partial sums began to go to their owners.
        var streamedSeconds: [UInt32: Double] = [:]
    }

    /// Runs one task to completion over whatever workers are alive, as the scheduler decides.
    /// Returns nil when interrupted.
    /// With `until`, the task also waits for that to hold (the sharded reduction's owners).
    func runTask(_ kind: TaskKind, epoch: Int, work: [MicroBatch], until: (() throws -> Bool)? = nil) throws -> [BatchScore]? {
        task = Task(kind: kind, epoch: epoch, step: state.step, work: work)
        defer { task = nil }
        apply(scheduler.begin(step: state.step, microBatches: work.count, at: monotonicSeconds()))
        // `until` runs on every round, not only once every micro-batch is in: it is also what
        // turns a sharded run's new workers into members, which the scheduler may be waiting for.
        while true {
            let othersDone = try until?() ?? true
            if othersDone && scheduler.isTaskComplete { break }
            if let error = stopError { stopError = nil; throw error }
            if Interruption.requested != nil { _ = scheduler.end(); return nil }
            try local.checkAlive()
            try pump(timeout: 0.05)
            apply(scheduler.handle(.tick, at: monotonicSeconds()))
            sendHeartbeats()
        }
        let timeline = scheduler.end()!
        let scores = work.indices.map { task!.scores[$0]! }
        recordPhases(of: timeline, kind: kind)
        return scores
    }

    private func recordPhases(of timeline: StepScheduler.Timeline, kind: TaskKind) {
        for (id, start) in timeline.assignedAt.sorted(by: { $0.key < $1.key }) {
            guard let end = timeline.finishedAt[id] else { continue }
            if kind == .train {
                pool[id]?.lastStepSeconds = end - start
                phases.append(PhaseTiming(name: "compute", workerID: id, start: start, duration: end - start))
                phases += PhaseTiming.parts(ofComputeFrom: start, to: end, timings: task?.timings[id] ?? .zero,
                                            streamedSeconds: task?.streamedSeconds[id] ?? 0, workerID: id)
            } else {
                phases.append(PhaseTiming(name: "evaluate", workerID: id, start: start, duration: end - start))
            }
        }
        if kind == .train, let waitStart = timeline.allAssignedAt, let lastResult = timeline.finishedAt.values.max(), lastResult > waitStart {
            phases.append(PhaseTiming(name: "wait", workerID: nil, start: waitStart, duration: lastResult - waitStart))
        }
    }

    /// Takes checked results the scheduler accepted: their scores, and in training their
    /// partial sums for the reduction.
    func take(_ results: CheckedResults, of accepted: [Int], from worker: WorkerRecord, timings: WorkerTimings, streamedSeconds: Double = 0) throws {
        guard var task else { return }
        for (node, values) in results.partialSums {
            _ = try values.withUnsafeBufferPointer { try reduction.offer(node, values: $0.baseAddress!, owner: values) }
        }
        if let sharding, !accepted.isEmpty { sharding.cover.offer(results.nodes, from: worker.id) }
        for index in accepted { task.scores[index] = results.scores[index] }
        task.timings[worker.id] = (task.timings[worker.id] ?? .zero) + timings
        task.streamedSeconds[worker.id] = streamedSeconds
        worker.microBatchesDone += results.microBatches.count
        self.task = task
    }

    /// The weights of the current step, encoded once for every worker that needs them: one copy
    /// into the buffer that is sent, hashed block by block as it is written. The last step's
    /// buffer is rewritten when every send of it has finished (`FloatPayload.refill`), so a step
    /// does not page-fault a fresh allocation of the whole model; one still in flight is left alone.
    func currentWeights() -> FloatPayload {
        if weightsPayloadVersion != state.step {
            let network = state.network
            let parameters = network.parameters.pointer, parameterCount = network.parameterCount
            let stateValues = network.state.pointer
            // The payload is parameters then state, as `ModelState.copyWeights(into:)` writes them.
            FloatPayload.refill(&weightsPayload, count: state.weightsCount, fillingBlocks: { range, block in
                let split = min(max(parameterCount, range.lowerBound), range.upperBound)
                let output = block.baseAddress!
                if range.lowerBound < split {
                    output.update(from: parameters + range.lowerBound, count: split - range.lowerBound)
                }
                if split < range.upperBound {
                    (output + (split - range.lowerBound)).update(from: stateValues + (split - parameterCount), count: range.upperBound - split)
                }
            })
            weightsPayloadVersion = state.step
        }
        return weightsPayload!
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

    private func startLocalWorkers() throws {
        logger.info("listening on \(endpoint); start workers with: cnn-worker --connect \(connectAddress)")
        let keyOptions = options.security == nil ? "" : " --curve-key WORKER.key_secret --server-public-key COORDINATOR.key"
        try? "cnn-worker --connect \(connectAddress)\(keyOptions)\n".write(toFile: directory.path + "/worker-command.txt", atomically: true, encoding: .utf8)
        guard options.spawnWorkers > 0 else { return }
        try local.spawn(
            count: options.spawnWorkers, endpoint: endpoint, threads: options.workerThreads, executable: options.workerExecutable,
            extraArguments: link.localWorkerArguments + (options.quietLocalWorkers ? ["--quiet"] : [])
                + (options.timestampLocalWorkers ? ["--log-timestamps"] : []))
    }

    private func waitForWorkers(_ count: Int) throws {
        let deadline = monotonicSeconds() + config.distributed.joinTimeout
        if pool.count < count { logger.info("waiting for \(count) worker\(count == 1 ? "" : "s")") }
        while (sharding?.readyCount ?? pool.count) < count {
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

    // MARK: Checkpoints and reports

    @discardableResult
    private func saveCheckpoint() throws -> String {
        try gatherShards()
        let checkpointState = CheckpointState(
            formatVersion: CheckpointState.currentFormatVersion, step: state.step, epoch: state.epoch,
            positionInEpoch: state.stepInEpoch * config.train.batch, configHash: config.hash,
            createdBy: "cnn-coord \(Version.current)", createdAt: CheckpointState.timestampNow(), files: [:],
            extra: CheckpointState.extra(["run_id": String(runID, radix: 16), "blas_core": BLAS.kernelName], classNames: classNames))
        let path = try timed("checkpoint") {
            try directory.checkpoints.save(
                step: state.step, model: state.modelTensors(), optimizer: state.optimizerTensors(), state: checkpointState)
        }
        logger.info("checkpoint \(path)")
        reportPhasesOutsideSteps()
        return path
    }

    func notify(_ body: (RunObserver) -> Void) {
        observers.forEach(body)
    }

    func timed<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let start = monotonicSeconds()
        defer { phases.append(PhaseTiming(name: name, workerID: nil, start: start, duration: monotonicSeconds() - start)) }
        return try body()
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
