import CNN
import Foundation

/// Steps gathered between two log lines: every `train.log_every` steps, at the end of each epoch
/// and at the last step, metrics.jsonl and the progress lines report the mean loss and accuracy
/// of the steps since the previous line, and the images per second over that time.
struct StepWindow {
    private var score = BatchScore()
    private var startedAt: Double?

    /// Adds a step; returns the window's score and rate when a line is due, and starts a new window.
    mutating func add(_ report: StepReport, logEvery: Int, totalSteps: Int) -> (score: BatchScore, imagesPerSecond: Double)? {
        let start = startedAt ?? report.start
        startedAt = start
        score = score + report.score
        let epochEnded = report.stepInEpoch == report.stepsPerEpoch
        guard report.step % logEvery == 0 || epochEnded || report.step >= totalSteps else { return nil }
        let end = report.start + report.seconds
        defer {
            score = BatchScore()
            startedAt = end
        }
        return (score, Double(score.samples) / max(end - start, 1e-9))
    }
}

/// Writes metrics.jsonl: one JSON object per logged window of steps and per evaluation.
final class MetricsLog: RunObserver {
    private let directory: RunDirectory
    private var window = StepWindow()
    private var start: RunStart?
    private var workers = 0

    init(directory: RunDirectory) {
        self.directory = directory
    }

    func runStarted(_ start: RunStart) { self.start = start }
    func workerJoined(_ worker: WorkerStatus) { workers += 1 }
    func workerLeft(_ worker: WorkerStatus, reason: String) { workers -= 1 }

    func stepFinished(_ report: StepReport) {
        guard let start, let (score, rate) = window.add(report, logEvery: start.config.train.logEvery, totalSteps: start.totalSteps) else {
            return
        }
        let topFive: [(String, MetricValue)] = start.reportsTopFive ? [("top5_accuracy", .double(score.topFiveAccuracy))] : []
        directory.appendMetrics([
            ("step", .int(report.step)), ("epoch", .int(report.epoch + 1)), ("loss", .double(score.meanLoss)),
            ("accuracy", .double(score.accuracy))] + topFive + [("images_per_second", .double(rate)),
            ("workers", .int(report.workers.count)), ("learning_rate", .double(report.learningRate)),
            ("time", .wallTime(Date().timeIntervalSince1970)),
        ])
    }

    func runRewound(toStep step: Int) { window = StepWindow() }

    func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {
        let topFive: [(String, MetricValue)] = start?.reportsTopFive == true ? [("test_top5_accuracy", .double(score.topFiveAccuracy))] : []
        directory.appendMetrics([
            ("step", .int(step)), ("epoch", .int(epoch + 1)), ("test_loss", .double(score.meanLoss)),
            ("test_accuracy", .double(score.accuracy))] + topFive + [("workers", .int(workers)),
            ("time", .wallTime(Date().timeIntervalSince1970)),
        ])
    }
}

/// Progress lines on standard output: one per logged window of steps and per evaluation, and a
/// last line when the run ends (`finalLineOnly`: just that one, for --quiet).
final class ProgressLines: RunObserver {
    private let finalLineOnly: Bool
    private let write: (String) -> Void
    private var window = StepWindow()
    private var start: RunStart?

    init(finalLineOnly: Bool, write: @escaping (String) -> Void = printProgress) {
        self.finalLineOnly = finalLineOnly
        self.write = write
    }

    func runStarted(_ start: RunStart) { self.start = start }

    func stepFinished(_ report: StepReport) {
        guard !finalLineOnly, let start,
              let (score, rate) = window.add(report, logEvery: start.config.train.logEvery, totalSteps: start.totalSteps) else { return }
        let workers = report.workers.count
        write("epoch \(report.epoch + 1)/\(start.config.train.epochs) step \(report.stepInEpoch)/\(report.stepsPerEpoch) "
            + "(\(report.step) total) loss \(String(format: "%.4f", score.meanLoss)) "
            + "accuracy \(String(format: "%.2f", score.accuracy * 100))% \(String(format: "%.0f", rate)) images/s, "
            + "\(workers) worker\(workers == 1 ? "" : "s")")
    }

    func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {
        guard !finalLineOnly else { return }
        write("epoch \(epoch + 1) step \(step): test accuracy \(String(format: "%.2f", score.accuracy * 100))% "
            + "(loss \(String(format: "%.4f", score.meanLoss)), \(score.samples) images)")
    }

    func runFinished(_ summary: RunSummary) {
        var line = "done: \(summary.steps) steps in \(String(format: "%.1f", summary.seconds)) s, "
            + "\(String(format: "%.0f", summary.imagesPerSecond)) images/s"
        if let accuracy = summary.testAccuracy { line += ", test accuracy \(String(format: "%.2f", accuracy * 100))%" }
        write(line + "; checkpoint \(summary.finalCheckpoint)")
    }
}

/// A warning that may repeat without end (one per hostile message, say): said at most once per
/// `interval` seconds, with how many were held back in between.
public struct RepeatedWarning {
    public let interval: Double
    private var lastSaid: Double?
    private var heldBack = 0

    public init(interval: Double) {
        self.interval = interval
    }

    /// Whether to say it now: the number held back since it was last said, or nil to hold this one back.
    public mutating func shouldSay(now: Double) -> Int? {
        if let lastSaid, now - lastSaid < interval {
            heldBack += 1
            return nil
        }
        defer { heldBack = 0 }
        lastSaid = now
        return heldBack
    }
}
