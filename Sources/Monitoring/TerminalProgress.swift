import CNN
import Foundation
import Training

/// The live progress display of `cnn-coord` on a terminal: epoch, step, a bar, loss, accuracy,
/// images per second, the time left, and one line per worker, redrawn in place. Evaluations and
/// the final result are printed above it as lasting lines.
///
/// Install it only when standard output is a terminal (`TerminalScreen.isTerminal(1)`), and then
/// run the coordinator with `quiet` so it does not print its own plain progress lines.
public final class TerminalProgressObserver: RunObserver {
    private let screen: TerminalScreen
    private let clock: () -> Double
    private let minimumInterval: Double
    private var lastDraw = -Double.infinity

    private var start: RunStart?
    private var last: StepReport?
    private var recent = RecentSteps(capacity: 20)
    private var testAccuracy: Double?
    /// Top-5 test accuracy, with more than five classes.
    private var testTopFive: Double?
    /// The step of the newest checkpoint written, and how long writing it took.
    private var checkpoint: (step: Int, seconds: Double)?
    private var workers: [UInt32: WorkerStatus] = [:]
    private var departures: [UInt32: String] = [:]
    private var order: [UInt32] = []

    /// - Parameters:
    ///   - screen: where to draw (its log lines must go through the same screen).
    ///   - minimumInterval: redraws closer together than this are skipped (the last step of an
    ///     epoch and the end of the run are always drawn).
    ///   - clock: monotonic seconds.
    public init(screen: TerminalScreen, minimumInterval: Double = 0.1, clock: @escaping () -> Double = monotonicSeconds) {
        self.screen = screen
        self.minimumInterval = minimumInterval
        self.clock = clock
    }

    public func runStarted(_ start: RunStart) {
        self.start = start
        draw(force: true)
    }

    public func workerJoined(_ worker: WorkerStatus) {
        if workers[worker.id] == nil { order.append(worker.id) }
        workers[worker.id] = worker
        departures[worker.id] = nil
        draw(force: true)
    }

    public func workerLeft(_ worker: WorkerStatus, reason: String) {
        if workers[worker.id] == nil { order.append(worker.id) }
        var gone = worker
        gone.alive = false
        workers[worker.id] = gone
        departures[worker.id] = reason
        draw(force: true)
    }

    public func stepFinished(_ report: StepReport) {
        last = report
        recent.add(end: report.start + report.seconds, seconds: report.seconds, samples: report.score.samples)
        for status in report.workers {
            if workers[status.id] == nil { order.append(status.id) }
            workers[status.id] = status
        }
        draw(force: report.stepInEpoch == report.stepsPerEpoch)
    }

    public func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {
        testAccuracy = score.accuracy
        testTopFive = start?.reportsTopFive == true ? score.topFiveAccuracy : nil
        let topFive = testTopFive.map { ", top-5 \(Format.percent($0))" } ?? ""
        screen.print("epoch \(epoch + 1) step \(step): test accuracy \(Format.percent(score.accuracy))\(topFive) "
            + "(loss \(Format.fixed(score.meanLoss, 4)), \(score.samples) images)")
        draw(force: true)
    }

    public func phasesFinished(_ phases: [PhaseTiming], step: Int) {
        guard let written = phases.last(where: { $0.name == "checkpoint" }) else { return }
        checkpoint = (step, written.duration)
        draw(force: true)
    }

    public func runFinished(_ summary: RunSummary) {
        draw(force: true)
        screen.release()
        var line = summary.interrupted ? "stopped" : "done"
        line += ": \(summary.steps) steps, \(Int(summary.imagesPerSecond.rounded())) images/s"
        if let accuracy = summary.testAccuracy { line += ", test accuracy \(Format.percent(accuracy))" }
        screen.print(line + "; checkpoint \(summary.finalCheckpoint)")
    }

    /// The status block as it stands (for tests and for anyone drawing it elsewhere).
    public var lines: [String] {
        var lines: [String] = []
        guard let start else { return ["waiting for workers..."] }
        let epochs = start.config.train.epochs
        let step = last?.step ?? start.firstStep
        let total = max(start.totalSteps, 1)
        let fraction = min(Double(step) / Double(total), 1)
        let epochText: String
        let inEpochText: String
        if let last {
            epochText = "epoch \(last.epoch + 1)/\(epochs)"
            inEpochText = "step \(last.stepInEpoch)/\(last.stepsPerEpoch)"
        } else {
            epochText = "epoch \(start.stepsPerEpoch > 0 ? step / start.stepsPerEpoch + 1 : 1)/\(epochs)"
            inEpochText = "step 0/\(start.stepsPerEpoch)"
        }
        lines.append("\(epochText)  \(inEpochText)  \(TerminalProgressObserver.bar(fraction, width: 24)) "
            + "\(Format.padLeft(Format.fixed(fraction * 100, 1), 5))%  (\(step)/\(start.totalSteps) steps)")

        var figures: [String] = []
        if let last {
            figures.append("loss \(Format.fixed(last.score.meanLoss, 4))")
            figures.append("accuracy \(Format.percent(last.score.accuracy))")
            if start.reportsTopFive { figures.append("top-5 \(Format.percent(last.score.topFiveAccuracy))") }
        }
        if let testAccuracy { figures.append("test \(Format.percent(testAccuracy))") }
        if let testTopFive { figures.append("test top-5 \(Format.percent(testTopFive))") }
        if let rate = recent.imagesPerSecond { figures.append("\(Int(rate.rounded())) img/s") }
        if let last { figures.append("lr \(String(format: "%.4g", last.learningRate))") }
        if let checkpoint { figures.append("checkpoint step \(checkpoint.step) (\(Format.duration(checkpoint.seconds)))") }
        if step >= start.totalSteps {
            figures.append("all steps done")
        } else if let eta = recent.estimatedSeconds(remaining: start.totalSteps - step) {
            figures.append("ETA \(Format.duration(eta))")
        } else {
            figures.append("ETA -")
        }
        lines.append(figures.joined(separator: "  "))

        let alive = workers.values.filter(\.alive).count
        lines.append("workers: \(alive) alive" + (workers.count > alive ? ", \(workers.count - alive) gone" : ""))
        let nameWidth = min(max(order.compactMap { workers[$0]?.name.count }.max() ?? 4, 4), 24)
        for id in order {
            guard let worker = workers[id] else { continue }
            var line = "  " + Format.pad("w\(id)", 4) + " "
            line += worker.alive ? "\u{1B}[32malive\u{1B}[0m" : "\u{1B}[31mgone \u{1B}[0m"
            line += "  " + Format.pad(worker.name, nameWidth)
            if !worker.host.isEmpty && !worker.name.hasPrefix(worker.host) { line += " @ \(worker.host)" }
            line += "  \(worker.threads) thread\(worker.threads == 1 ? "" : "s")"
            line += "  " + Format.padLeft("\(worker.microBatchesDone)", 6) + " micro-batches"
            if let seconds = worker.lastStepSeconds { line += "  last step \(Format.milliseconds(seconds))" }
            if let reason = departures[id] { line += "  (\(reason))" }
            lines.append(line)
        }
        return lines
    }

    private func draw(force: Bool) {
        let now = clock()
        guard force || now - lastDraw >= minimumInterval else { return }
        lastDraw = now
        screen.show(lines)
    }

    /// "[██████······]"
    static func bar(_ fraction: Double, width: Int) -> String {
        let filled = Int((fraction * Double(width)).rounded(.down))
        return "[" + String(repeating: "█", count: filled) + String(repeating: "·", count: max(width - filled, 0)) + "]"
    }
}
