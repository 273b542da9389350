import CNN
import Wire

/// What the coordinator tells the world as a run goes: progress displays, the Prometheus
/// endpoint, the trace file and the metrics log all listen here, so the training loop itself
/// only says what happened.
public protocol RunObserver: AnyObject {
    func runStarted(_ start: RunStart)
    func workerJoined(_ worker: WorkerStatus)
    func workerLeft(_ worker: WorkerStatus, reason: String)
    func stepFinished(_ report: StepReport)
    func evaluationFinished(step: Int, epoch: Int, score: BatchScore)
    /// Work outside the steps finished: an evaluation (one `evaluate` span per worker, with the
    /// `broadcast` of the weights it needed) or a `checkpoint`, reported as it ends, so the final
    /// evaluation and checkpoint after the last step are seen too. `step` is the last step done.
    func phasesFinished(_ phases: [PhaseTiming], step: Int)
    func runFinished(_ summary: RunSummary)
    /// The run went back to the checkpoint of `step` (a sharded run lost a slice): the steps
    /// after it are computed again, and anything kept of them is void.
    func runRewound(toStep step: Int)
}

extension RunObserver {
    public func runStarted(_ start: RunStart) {}
    public func workerJoined(_ worker: WorkerStatus) {}
    public func workerLeft(_ worker: WorkerStatus, reason: String) {}
    public func stepFinished(_ report: StepReport) {}
    public func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {}
    public func phasesFinished(_ phases: [PhaseTiming], step: Int) {}
    public func runFinished(_ summary: RunSummary) {}
    public func runRewound(toStep step: Int) {}
}

public struct RunStart: Sendable {
    public var config: TrainingConfig
    public var endpoint: String
    public var runDirectory: String
    /// Steps already done (non-zero after a resume).
    public var firstStep: Int
    public var stepsPerEpoch: Int
    public var totalSteps: Int
    /// The model's classes: top-5 accuracy is reported only with more than five.
    public var classes: Int

    public init(config: TrainingConfig, endpoint: String, runDirectory: String, firstStep: Int, stepsPerEpoch: Int, totalSteps: Int,
                classes: Int = 0) {
        self.config = config
        self.endpoint = endpoint
        self.runDirectory = runDirectory
        self.firstStep = firstStep
        self.stepsPerEpoch = stepsPerEpoch
        self.totalSteps = totalSteps
        self.classes = classes
    }

    /// Whether top-5 accuracy means anything: with five classes or fewer it is always 100%.
    public var reportsTopFive: Bool { classes > 5 }
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
    /// Per worker: "compute" (its first assignment sent to its last result received), and inside
    /// it, from the durations the worker reports, "other" (its queueing, weight load and idle
    /// threads), "forward", "backward" ("backward, sending" for its part after the first slice of
    /// partial sums went to its owner, under the sharded reduction), "pack" (partial sums) and
    /// "send" (the rest of the span: the network both ways and socket queues); "broadcast"
    /// (weights sent to it) and "evaluate".
    /// The coordinator's own: "wait" (every micro-batch handed out, until the last result),
    /// "reduce", "optimizer" and "checkpoint".
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

extension PhaseTiming {
    /// A worker's compute span from `start` to `end` split by what the worker measured itself,
    /// laid out in the order the work happens: `other` (its queueing, weight load, idle threads),
    /// `forward`, `backward`, `pack` (partial sums), then `send`: the rest of the span, which the
    /// worker did not see (the assignment and weights travelling to it, the results travelling
    /// back, and queueing in both sockets). Only durations cross the wire, so no clock agreement
    /// is needed. When the worker reports more than the span holds (assignments that queued
    /// behind each other are each timed from their own arrival), its parts are scaled down to
    /// fit. Parts shorter than a nanosecond are left out; nothing when the worker reported no total.
    public static func parts(ofComputeFrom start: Double, to end: Double, timings: WorkerTimings, streamedSeconds: Double = 0,
                             workerID: UInt32) -> [PhaseTiming] {
        let span = max(end - start, 0)
        guard timings.totalSeconds > 0, span > 0 else { return [] }
        let workerSeconds = min(timings.totalSeconds, span)
        let accounted = timings.accountedSeconds
        let scale = accounted > workerSeconds ? workerSeconds / accounted : 1
        let backward = timings.backwardSeconds * scale, pack = timings.packSeconds * scale
        // Sending began that long before the results went, so within backward: its last part.
        let overlapped = min(max(streamedSeconds * scale - pack, 0), backward)
        let parts: [(String, Double)] = [
            ("other", max(workerSeconds - accounted * scale, 0)),
            ("forward", timings.forwardSeconds * scale),
            ("backward", backward - overlapped),
            ("backward, sending", overlapped),
            ("pack", pack),
            ("send", span - workerSeconds),
        ]
        var phases: [PhaseTiming] = []
        var at = start
        for (name, seconds) in parts {
            // The last part ends exactly at the span's end, whatever the rounding on the way.
            let duration = name == "send" ? max(end - at, 0) : min(seconds, max(end - at, 0))
            if duration > 1e-9 { phases.append(PhaseTiming(name: name, workerID: workerID, start: at, duration: duration)) }
            at += duration
        }
        return phases
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
