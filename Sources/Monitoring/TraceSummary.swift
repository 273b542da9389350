import Foundation
import Training

/// Where a run's step time went and which worker was slowest, accumulated from step reports.
///
/// The coordinator sees a worker's compute as one span, from its first assignment of a step to its
/// last result. Inside it, each worker's own timings split it into forward, backward, pack
/// (partial sums) and other (the worker's queueing, weight load, idle threads); the rest of the
/// span is send: the network both ways and the sockets' queues.
public struct TraceSummary: Sendable {
    /// Time in steps by what the coordinator was doing, in seconds.
    public struct Breakdown: Sendable, Equatable {
        /// Waiting for gradients: the time some worker was computing and the coordinator had
        /// nothing else to do.
        public var waitingForWorkers: Double = 0
        /// Sending weights to workers.
        public var broadcast: Double = 0
        /// Completing the reduction tree.
        public var reduce: Double = 0
        /// Applying the optimiser.
        public var optimizer: Double = 0
        /// The rest: scheduling, message handling, bookkeeping.
        public var other: Double = 0
    }

    /// One worker's totals.
    public struct WorkerTotals: Sendable, Equatable {
        public var id: UInt32
        public var name: String
        public var host: String
        /// Steps it computed in.
        public var steps: Int = 0
        /// Seconds from assignment to last result, summed over its steps.
        public var computeSeconds: Double = 0
        /// Training micro-batches it computed in the steps timed per micro-batch (steps not
        /// preceded by an evaluation), and the compute seconds of those steps.
        public var microBatches: Int = 0
        public var timedSeconds: Double = 0
        /// Steps in which it was the last worker to deliver.
        public var lastToFinish: Int = 0
        /// `computeSeconds` split by what the worker timed itself (zero for workers that do not
        /// report timings): forward, backward and pack passes, its other time, and send (the part
        /// of the span outside the worker).
        public var forwardSeconds: Double = 0
        public var backwardSeconds: Double = 0
        public var packSeconds: Double = 0
        public var otherSeconds: Double = 0
        public var sendSeconds: Double = 0

        /// Whether the compute seconds are split at all.
        public var hasParts: Bool { forwardSeconds + backwardSeconds + packSeconds + otherSeconds + sendSeconds > 0 }

        /// Mean compute seconds per micro-batch (nil before it computed any).
        public var secondsPerMicroBatch: Double? {
            microBatches > 0 ? timedSeconds / Double(microBatches) : nil
        }

        /// "w1 node-7 @ host", as in logs.
        public var label: String { "w\(id) \(name)" + (host.isEmpty || name.hasPrefix(host) ? "" : " @ \(host)") }
    }

    /// Steps added.
    public private(set) var steps = 0
    /// Their wall time at the coordinator, summed.
    public private(set) var stepSeconds = 0.0
    /// `stepSeconds` by what the coordinator was doing.
    public private(set) var breakdown = Breakdown()
    /// Seconds outside steps, by phase ("evaluate", "checkpoint").
    public private(set) var outsideSteps: [String: Double] = [:]
    /// Per worker id.
    public private(set) var workers: [UInt32: WorkerTotals] = [:]
    private var microBatchesSeen: [UInt32: Int] = [:]
    /// Workers that evaluated since the last step: their micro-batch counts grew by evaluation work.
    private var evaluatedSinceLastStep: Set<UInt32> = []

    public init() {}

    /// Adds work done outside the steps (`RunObserver.phasesFinished`): evaluations and
    /// checkpoints, counted by wall time (the union of the spans of each name).
    public mutating func add(outsideSteps phases: [PhaseTiming]) {
        for (name, spans) in Dictionary(grouping: phases, by: \.name) {
            outsideSteps[name, default: 0] += TraceSummary.union(spans.map { ($0.start, $0.start + $0.duration) })
        }
        evaluatedSinceLastStep.formUnion(phases.filter { $0.name == "evaluate" }.compactMap(\.workerID))
    }

    /// Adds one step.
    public mutating func add(_ report: StepReport) {
        steps += 1
        stepSeconds += report.seconds
        let stepEnd = report.start + report.seconds
        var inStep: [PhaseTiming] = []
        var outside: [PhaseTiming] = []
        for phase in report.phases {
            // Evaluation and checkpoint spans reported with a step happened before it started.
            if phase.start + phase.duration <= report.start + 1e-9 || phase.start >= stepEnd {
                outside.append(phase)
            } else {
                inStep.append(phase)
            }
        }
        add(outsideSteps: outside)
        let compute = inStep.filter { $0.name == "compute" }
        let broadcasts = inStep.filter { $0.name == "broadcast" }
        let union = TraceSummary.union(compute.map { ($0.start, $0.start + $0.duration) })
        let broadcastSeconds = broadcasts.reduce(0) { $0 + $1.duration }
        // Broadcasts to later workers happen while earlier ones already compute: that time is
        // counted as broadcast, not as waiting.
        let broadcastInsideCompute = broadcasts.reduce(0.0) { total, span in
            total + TraceSummary.overlap((span.start, span.start + span.duration), with: compute.map { ($0.start, $0.start + $0.duration) })
        }
        let waiting = max(union - broadcastInsideCompute, 0)
        let reduce = inStep.filter { $0.name == "reduce" }.reduce(0) { $0 + $1.duration }
        let optimizer = inStep.filter { $0.name == "optimizer" }.reduce(0) { $0 + $1.duration }
        breakdown.waitingForWorkers += waiting
        breakdown.broadcast += broadcastSeconds
        breakdown.reduce += reduce
        breakdown.optimizer += optimizer
        breakdown.other += max(report.seconds - waiting - broadcastSeconds - reduce - optimizer, 0)

        // A worker's micro-batch count also grows with evaluation work, which the coordinator
        // reports with the following step; such steps are left out of the per-micro-batch figures.
        let evaluated = evaluatedSinceLastStep
        evaluatedSinceLastStep = []
        for status in report.workers {
            var totals = workers[status.id] ?? WorkerTotals(id: status.id, name: status.name, host: status.host)
            let done = status.microBatchesDone - (microBatchesSeen[status.id] ?? 0)
            microBatchesSeen[status.id] = status.microBatchesDone
            if let span = compute.first(where: { $0.workerID == status.id }), !evaluated.contains(status.id), done > 0 {
                totals.microBatches += done
                totals.timedSeconds += span.duration
            }
            workers[status.id] = totals
        }
        for span in compute {
            guard let id = span.workerID else { continue }
            var totals = workers[id] ?? WorkerTotals(id: id, name: "", host: "")
            totals.steps += 1
            totals.computeSeconds += span.duration
            workers[id] = totals
        }
        for part in inStep {
            guard let id = part.workerID, workers[id] != nil else { continue }
            switch part.name {
            case "forward": workers[id]!.forwardSeconds += part.duration
            case "backward", "backward, sending": workers[id]!.backwardSeconds += part.duration
            case "pack": workers[id]!.packSeconds += part.duration
            case "other": workers[id]!.otherSeconds += part.duration
            case "send": workers[id]!.sendSeconds += part.duration
            default: break
            }
        }
        if compute.count > 1, let last = compute.max(by: { $0.start + $0.duration < $1.start + $1.duration }), let id = last.workerID {
            workers[id]?.lastToFinish += 1
        }
    }

    /// The worker with the most compute seconds per micro-batch.
    public var slowestWorker: WorkerTotals? {
        workers.values.filter { $0.secondsPerMicroBatch != nil }
            .max { ($0.secondsPerMicroBatch!, $1.id) < ($1.secondsPerMicroBatch!, $0.id) }
    }

    /// The worker with the fewest compute seconds per micro-batch.
    public var fastestWorker: WorkerTotals? {
        workers.values.filter { $0.secondsPerMicroBatch != nil }
            .min { ($0.secondsPerMicroBatch!, $0.id) < ($1.secondsPerMicroBatch!, $1.id) }
    }

    /// The report printed at the end of a traced run.
    public var text: String {
        guard steps > 0 else { return "trace summary: no steps were traced" }
        var lines = ["trace summary: \(steps) step\(steps == 1 ? "" : "s"), \(Format.duration(stepSeconds)) in steps "
            + "(\(Format.milliseconds(stepSeconds / Double(steps))) per step)"]
        lines.append("where step time went (as the coordinator saw it):")
        let rows: [(String, Double)] = [
            ("waiting for workers' gradients", breakdown.waitingForWorkers),
            ("broadcasting weights", breakdown.broadcast),
            ("reducing gradients", breakdown.reduce),
            ("optimiser", breakdown.optimizer),
            ("other (scheduling, messages)", breakdown.other),
        ]
        for (name, seconds) in rows {
            let share = stepSeconds > 0 ? seconds / stepSeconds : 0
            lines.append("  \(Format.pad(name, 32)) \(Format.padLeft(Format.duration(seconds), 9)) \(Format.padLeft(Format.percent(share, digits: 1), 6))")
        }
        let outside = outsideSteps.filter { $0.value >= 0.0005 }
        if !outside.isEmpty {
            let parts = outside.sorted { $0.key < $1.key }.map { "\($0.key) \(Format.duration($0.value))" }
            lines.append("outside steps: " + parts.joined(separator: ", "))
        }
        let sorted = workers.values.sorted { $0.id < $1.id }
        if !sorted.isEmpty {
            lines.append(contentsOf: workerTable(sorted))
        }
        if let slowest = slowestWorker, let perMicroBatch = slowest.secondsPerMicroBatch {
            var line = "slowest worker: \(slowest.label), \(Format.milliseconds(perMicroBatch)) per micro-batch"
            if let fastest = fastestWorker, fastest.id != slowest.id, let best = fastest.secondsPerMicroBatch, best > 0 {
                line += String(format: ", %.2fx the fastest (w\(fastest.id), ", perMicroBatch / best) + Format.milliseconds(best) + ")"
            } else if workers.count == 1 {
                line += " (the only worker)"
            }
            if slowest.hasParts, slowest.computeSeconds > 0 {
                let share = { (seconds: Double) in Format.percent(seconds / slowest.computeSeconds, digits: 0) }
                line += "; its compute went to forward \(share(slowest.forwardSeconds)), backward \(share(slowest.backwardSeconds)), "
                    + "pack \(share(slowest.packSeconds)), send \(share(slowest.sendSeconds)), other \(share(slowest.otherSeconds))"
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    /// One line per worker: micro-batches, compute seconds and, when the workers timed
    /// themselves, those seconds split into forward, backward, pack, send and other.
    private func workerTable(_ sorted: [WorkerTotals]) -> [String] {
        let split = sorted.contains { $0.hasParts }
        let width = min(max(sorted.map(\.label.count).max() ?? 6, 6), 40)
        var lines: [String] = []
        if split {
            lines.append("workers (compute = assignment sent to last result; forward, backward, pack and other as each worker "
                + "timed itself; send = the rest: network both ways and queues):")
            let columns = ["compute", "forward", "backward", "pack", "send", "other"].map { Format.padLeft($0, 8) }.joined(separator: " ")
            lines.append("  \(Format.pad("worker", width))  micro-batches \(columns)  per micro-batch  last to finish")
        } else {
            lines.append("workers (compute = first assignment to last result, per step):")
        }
        for worker in sorted {
            var line = "  \(Format.pad(worker.label, width))  \(Format.padLeft("\(worker.microBatches)", 6)) micro-batches"
            if split {
                let figures = [worker.computeSeconds, worker.forwardSeconds, worker.backwardSeconds, worker.packSeconds,
                               worker.sendSeconds, worker.otherSeconds]
                line = "  \(Format.pad(worker.label, width))  \(Format.padLeft("\(worker.microBatches)", 13)) "
                    + figures.map { Format.padLeft(Format.duration($0), 8) }.joined(separator: " ")
                line += "  " + Format.padLeft(worker.secondsPerMicroBatch.map(Format.milliseconds) ?? "-", 15)
                line += "  \(worker.lastToFinish) of \(worker.steps) steps"
            } else {
                line += "  \(Format.padLeft(Format.duration(worker.computeSeconds), 8))"
                if let perMicroBatch = worker.secondsPerMicroBatch { line += "  \(Format.milliseconds(perMicroBatch)) per micro-batch" }
                line += "  last to finish in \(worker.lastToFinish) of \(worker.steps) steps"
            }
            lines.append(line)
        }
        return lines
    }

    /// Total length of the union of intervals.
    static func union(_ intervals: [(Double, Double)]) -> Double {
        let sorted = intervals.filter { $0.1 > $0.0 }.sorted { $0.0 < $1.0 }
        var total = 0.0
        var current: (Double, Double)?
        for interval in sorted {
            if let open = current, interval.0 <= open.1 {
                current = (open.0, max(open.1, interval.1))
            } else {
                if let open = current { total += open.1 - open.0 }
                current = interval
            }
        }
        if let open = current { total += open.1 - open.0 }
        return total
    }

    /// Length of `span` covered by the union of `intervals`.
    static func overlap(_ span: (Double, Double), with intervals: [(Double, Double)]) -> Double {
        let clipped = intervals.map { (max($0.0, span.0), min($0.1, span.1)) }
        return union(clipped)
    }
}
