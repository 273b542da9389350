import CNN

/// What the coordinator tells the world as a run goes: progress displays, the Prometheus
/// endpoint, the trace file and the metrics log all listen here, so the training loop itself
/// only says what happened.
public protocol RunObserver: AnyObject {
    func runStarted(_ start: RunStart)
    func workerJoined(_ worker: WorkerStatus)
    func workerLeft(_ worker: WorkerStatus, reason: String)
    func stepFinished(_ report: StepReport)
    func evaluationFinished(step: Int, epoch: Int, score: BatchScore)
    func runFinished(_ summary: RunSummary)
}

extension RunObserver {
    public func runStarted(_ start: RunStart) {}
    public func workerJoined(_ worker: WorkerStatus) {}
    public func workerLeft(_ worker: WorkerStatus, reason: String) {}
    public func stepFinished(_ report: StepReport) {}
    public func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {}
    public func runFinished(_ summary: RunSummary) {}
}

public struct RunStart: Sendable {
    public var config: TrainingConfig
    public var endpoint: String
    public var runDirectory: String
    /// Steps already done (non-zero after a resume).
    public var firstStep: Int
    public var stepsPerEpoch: Int
    public var totalSteps: Int

    public init(config: TrainingConfig, endpoint: String, runDirectory: String, firstStep: Int, stepsPerEpoch: Int, totalSteps: Int) {
        self.config = config
        self.endpoint = endpoint
        self.runDirectory = runDirectory
        self.firstStep = firstStep
        self.stepsPerEpoch = stepsPerEpoch
        self.totalSteps = totalSteps
    }
}

/// One worker as the coordinator sees it.
public struct WorkerStatus: Sendable {
    public var id: UInt32
    public var name: String
    public var host: String
    public var threads: Int
    public var alive: Bool
    public var microBatchesDone: Int
    /// Seconds from its first assignment to its last result in the last step it took part in.
    public var lastStepSeconds: Double?

    public init(id: UInt32, name: String, host: String, threads: Int, alive: Bool, microBatchesDone: Int, lastStepSeconds: Double?) {
        self.id = id
        self.name = name
        self.host = host
        self.threads = threads
        self.alive = alive
        self.microBatchesDone = microBatchesDone
        self.lastStepSeconds = lastStepSeconds
    }
}

/// A span of time in a step, on the coordinator's monotonic clock (seconds).
public struct PhaseTiming: Sendable {
    /// "compute" (per worker: assignment sent to results received), "reduce", "optimizer",
    /// "broadcast", "evaluate", "checkpoint".
    public var name: String
    /// The worker the span belongs to, or nil for the coordinator's own work.
    public var workerID: UInt32?
    public var start: Double
    public var duration: Double

    public init(name: String, workerID: UInt32?, start: Double, duration: Double) {
        self.name = name
        self.workerID = workerID
        self.start = start
        self.duration = duration
    }
}

/// Everything known about one finished optimiser step.
public struct StepReport: Sendable {
    public var step: Int
    public var epoch: Int
    public var stepInEpoch: Int
    public var stepsPerEpoch: Int
    public var score: BatchScore
    public var learningRate: Double
    public var start: Double
    public var seconds: Double
    public var workers: [WorkerStatus]
    public var phases: [PhaseTiming]
    public var bytesSent: Int
    public var bytesReceived: Int

    public init(step: Int, epoch: Int, stepInEpoch: Int, stepsPerEpoch: Int, score: BatchScore, learningRate: Double, start: Double, seconds: Double, workers: [WorkerStatus], phases: [PhaseTiming], bytesSent: Int, bytesReceived: Int) {
        self.step = step
        self.epoch = epoch
        self.stepInEpoch = stepInEpoch
        self.stepsPerEpoch = stepsPerEpoch
        self.score = score
        self.learningRate = learningRate
        self.start = start
        self.seconds = seconds
        self.workers = workers
        self.phases = phases
        self.bytesSent = bytesSent
        self.bytesReceived = bytesReceived
    }
}
