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
}
