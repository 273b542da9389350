import CNN
import Foundation
import JSONWriting
import Training

/// Writes a Chrome trace (the Trace Event Format read by chrome://tracing, Perfetto's UI and
/// speedscope) of every step: one track for the coordinator (steps, wait, reduce, optimiser,
/// checkpoints) and one per worker (broadcast of weights to it; compute, split into other,
/// forward, backward, pack and send; evaluation), plus loss and throughput as counter tracks.
/// Evaluations and checkpoints appear as they finish, the final ones after the last step too.
/// At the end it prints a `TraceSummary`.
///
/// Events are written as they come (unbuffered), as a JSON array, so a run that dies still leaves a
/// trace the viewers open: they accept an unterminated array.
public final class ChromeTraceObserver: RunObserver {
    /// The trace file.
    public let path: String
    /// What has been learnt about step time so far.
    public private(set) var summary = TraceSummary()
    private let file: FileHandle
    private let origin: Double
    private let clock: () -> Double
    private let report: (String) -> Void
    private var first = true
    private var closed = false
    private var named: Set<UInt32> = []
    private var recent = RecentSteps(capacity: 20)

    /// The trace's process id; the coordinator's track is thread 0, worker wN is thread N + 1.
    static let processID = 1

    /// Creates (or truncates) the trace file.
    ///
    /// - Parameters:
    ///   - report: receives the summary text at the end of the run (for example `printProgress`).
    ///   - clock: the coordinator's monotonic clock (`PhaseTiming` times are on it).
    public init(path: String, report: @escaping (String) -> Void = { _ in },
                clock: @escaping () -> Double = monotonicSeconds) throws {
        let url = URL(fileURLWithPath: path)
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw MonitoringError("cannot write the trace file \(path); check that its folder exists and is writable, or pass another --trace")
        }
        self.path = path
        self.file = handle
        self.clock = clock
        self.report = report
        origin = clock()
        write("[\n")
        emit(Self.object().string("name", "process_name").string("ph", "M").int("pid", Self.processID)
            .object("args", Self.object().string("name", "cnn-coord")))
        nameThread(0, label: "coordinator")
    }

    deinit {
        finish()
    }

    public func runStarted(_ start: RunStart) {
        instant("run started: \(start.totalSteps - start.firstStep) steps to go", at: clock(), args: Self.object()
            .string("endpoint", start.endpoint).string("run_directory", start.runDirectory)
            .int("first_step", start.firstStep).int("total_steps", start.totalSteps))
    }

    public func workerJoined(_ worker: WorkerStatus) {
        nameTrack(worker)
        instant("w\(worker.id) joined", at: clock(), thread: Self.thread(worker.id), args: Self.object()
            .string("name", worker.name).string("host", worker.host).int("threads", worker.threads))
    }

    public func workerLeft(_ worker: WorkerStatus, reason: String) {
        nameTrack(worker)
        instant("w\(worker.id) left", at: clock(), thread: Self.thread(worker.id), args: Self.object().string("reason", reason))
    }

    public func stepFinished(_ report: StepReport) {
        summary.add(report)
        for worker in report.workers { nameTrack(worker) }
        let samples = report.score.samples
        emit(Self.object().string("name", "step \(report.step)").string("cat", "step").string("ph", "X")
            .int("pid", Self.processID).int("tid", 0).raw("ts", microseconds(report.start)).raw("dur", duration(report.seconds))
            .object("args", Self.object().int("epoch", report.epoch + 1).double("loss", report.score.meanLoss)
                .double("accuracy", report.score.accuracy).int("images", samples)
                .int("bytes_sent", report.bytesSent).int("bytes_received", report.bytesReceived)))
        for phase in report.phases { span(phase, step: report.step) }
        let end = report.start + report.seconds
        recent.add(end: end, seconds: report.seconds, samples: samples)
        counter("loss", value: report.score.meanLoss, at: end)
        if let rate = recent.imagesPerSecond { counter("images per second", value: rate, at: end) }
    }

    public func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {
        let now = clock()
        instant("evaluation after step \(step)", at: now, args: Self.object()
            .double("test_accuracy", score.accuracy).double("test_loss", score.meanLoss))
        counter("test accuracy", value: score.accuracy, at: now)
    }

    public func phasesFinished(_ phases: [PhaseTiming], step: Int) {
        summary.add(outsideSteps: phases)
        for phase in phases { span(phase, step: step) }
    }

    public func runFinished(_ summary: RunSummary) {
        instant(summary.interrupted ? "run interrupted" : "run finished", at: clock(), args: Self.object()
            .int("steps", summary.steps).string("checkpoint", summary.finalCheckpoint))
        finish()
        report(self.summary.text + "\ntrace written to \(path) (open it in https://ui.perfetto.dev or chrome://tracing)")
    }

    /// Closes the JSON array and the file (also done when the observer goes away).
    public func finish() {
        guard !closed else { return }
        closed = true
        write("\n]\n")
        try? file.close()
    }

    // MARK: Events

    static func thread(_ workerID: UInt32) -> Int { Int(workerID) + 1 }

    private func nameTrack(_ worker: WorkerStatus) {
        guard !named.contains(worker.id) else { return }
        named.insert(worker.id)
        var label = "w\(worker.id) \(worker.name)"
        if !worker.host.isEmpty && !worker.name.hasPrefix(worker.host) { label += " @ \(worker.host)" }
        nameThread(Self.thread(worker.id), label: label)
    }

    /// Names a track and sorts it by its number.
    private func nameThread(_ thread: Int, label: String) {
        emit(Self.object().string("name", "thread_name").string("ph", "M").int("pid", Self.processID).int("tid", thread)
            .object("args", Self.object().string("name", label)))
        emit(Self.object().string("name", "thread_sort_index").string("ph", "M").int("pid", Self.processID).int("tid", thread)
            .object("args", Self.object().int("sort_index", thread)))
    }

    /// A complete event on the coordinator's track or the worker's.
    private func span(_ phase: PhaseTiming, step: Int) {
        let thread = phase.workerID.map(Self.thread) ?? 0
        emit(Self.object().string("name", phase.name).string("cat", "phase").string("ph", "X").int("pid", Self.processID)
            .int("tid", thread).raw("ts", microseconds(phase.start)).raw("dur", duration(phase.duration))
            .object("args", Self.object().int("step", step)))
    }

    private func instant(_ name: String, at time: Double, thread: Int = 0, args: JSONObject) {
        emit(Self.object().string("name", name).string("ph", "i").string("s", "t").int("pid", Self.processID).int("tid", thread)
            .raw("ts", microseconds(time)).object("args", args))
    }

    private func counter(_ name: String, value: Double, at time: Double) {
        guard value.isFinite else { return }
        emit(Self.object().string("name", name).string("ph", "C").int("pid", Self.processID).raw("ts", microseconds(time))
            .object("args", Self.object().double("value", value)))
    }

    /// An empty event or argument object: compact, whole numbers as integers, others to six digits.
    private static func object() -> JSONObject {
        JSONObject(numbers: .wholeOrSixSignificantDigits)
    }

    /// Microseconds since the observer started, with sub-microsecond digits kept.
    private func microseconds(_ time: Double) -> String {
        String(format: "%.3f", (time - origin) * 1e6)
    }

    private func duration(_ seconds: Double) -> String {
        String(format: "%.3f", max(seconds, 0) * 1e6)
    }

    private func emit(_ object: JSONObject) {
        guard !closed else { return }
        let event = object.text
        write(first ? event : ",\n" + event)
        first = false
    }

    private func write(_ text: String) {
        file.write(Data(text.utf8))
    }
}
