import CNN
import Foundation
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
        emit(#"{"name":"process_name","ph":"M","pid":\#(Self.processID),"args":{"name":"cnn-coord"}}"#)
        emit(#"{"name":"thread_name","ph":"M","pid":\#(Self.processID),"tid":0,"args":{"name":"coordinator"}}"#)
        emit(#"{"name":"thread_sort_index","ph":"M","pid":\#(Self.processID),"tid":0,"args":{"sort_index":0}}"#)
    }

    deinit {
        finish()
    }

    public func runStarted(_ start: RunStart) {
        instant("run started: \(start.totalSteps - start.firstStep) steps to go", at: clock(), args: [
            ("endpoint", Format.json(start.endpoint)), ("run_directory", Format.json(start.runDirectory)),
            ("first_step", "\(start.firstStep)"), ("total_steps", "\(start.totalSteps)"),
        ])
    }

    public func workerJoined(_ worker: WorkerStatus) {
        nameTrack(worker)
        instant("w\(worker.id) joined", at: clock(), thread: Self.thread(worker.id), args: [
            ("name", Format.json(worker.name)), ("host", Format.json(worker.host)), ("threads", "\(worker.threads)"),
        ])
    }

    public func workerLeft(_ worker: WorkerStatus, reason: String) {
        nameTrack(worker)
        instant("w\(worker.id) left", at: clock(), thread: Self.thread(worker.id), args: [("reason", Format.json(reason))])
    }

    public func stepFinished(_ report: StepReport) {
        summary.add(report)
        for worker in report.workers { nameTrack(worker) }
        let samples = report.score.samples
        emit(#"{"name":"step \#(report.step)","cat":"step","ph":"X","pid":\#(Self.processID),"tid":0,"#
            + #""ts":\#(microseconds(report.start)),"dur":\#(duration(report.seconds)),"args":{"#
            + #""epoch":\#(report.epoch + 1),"loss":\#(Format.jsonNumber(report.score.meanLoss)),"#
            + #""accuracy":\#(Format.jsonNumber(report.score.accuracy)),"images":\#(samples),"#
            + #""bytes_sent":\#(report.bytesSent),"bytes_received":\#(report.bytesReceived)}}"#)
        for phase in report.phases { span(phase, step: report.step) }
        let end = report.start + report.seconds
        recent.add(end: end, seconds: report.seconds, samples: samples)
        counter("loss", value: report.score.meanLoss, at: end)
        if let rate = recent.imagesPerSecond { counter("images per second", value: rate, at: end) }
    }

    public func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {
        let now = clock()
        instant("evaluation after step \(step)", at: now, args: [
            ("test_accuracy", Format.jsonNumber(score.accuracy)), ("test_loss", Format.jsonNumber(score.meanLoss)),
        ])
        counter("test accuracy", value: score.accuracy, at: now)
    }

    public func phasesFinished(_ phases: [PhaseTiming], step: Int) {
        summary.add(outsideSteps: phases)
        for phase in phases { span(phase, step: step) }
    }

    public func runFinished(_ summary: RunSummary) {
        instant(summary.interrupted ? "run interrupted" : "run finished", at: clock(), args: [
            ("steps", "\(summary.steps)"), ("checkpoint", Format.json(summary.finalCheckpoint)),
        ])
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
        let thread = Self.thread(worker.id)
        emit(#"{"name":"thread_name","ph":"M","pid":\#(Self.processID),"tid":\#(thread),"args":{"name":\#(Format.json(label))}}"#)
        emit(#"{"name":"thread_sort_index","ph":"M","pid":\#(Self.processID),"tid":\#(thread),"args":{"sort_index":\#(thread)}}"#)
    }

    /// A complete event on the coordinator's track or the worker's.
    private func span(_ phase: PhaseTiming, step: Int) {
        let thread = phase.workerID.map(Self.thread) ?? 0
        emit(#"{"name":\#(Format.json(phase.name)),"cat":"phase","ph":"X","pid":\#(Self.processID),"tid":\#(thread),"#
            + #""ts":\#(microseconds(phase.start)),"dur":\#(duration(phase.duration)),"args":{"step":\#(step)}}"#)
    }

    private func instant(_ name: String, at time: Double, thread: Int = 0, args: [(String, String)]) {
        let body = args.map { "\(Format.json($0.0)):\($0.1)" }.joined(separator: ",")
        emit(#"{"name":\#(Format.json(name)),"ph":"i","s":"t","pid":\#(Self.processID),"tid":\#(thread),"#
            + #""ts":\#(microseconds(time)),"args":{\#(body)}}"#)
    }

    private func counter(_ name: String, value: Double, at time: Double) {
        guard value.isFinite else { return }
        emit(#"{"name":\#(Format.json(name)),"ph":"C","pid":\#(Self.processID),"ts":\#(microseconds(time)),"#
            + #""args":{"value":\#(Format.jsonNumber(value))}}"#)
    }

    /// Microseconds since the observer started, with sub-microsecond digits kept.
    private func microseconds(_ time: Double) -> String {
        String(format: "%.3f", (time - origin) * 1e6)
    }

    private func duration(_ seconds: Double) -> String {
        String(format: "%.3f", max(seconds, 0) * 1e6)
    }

    private func emit(_ event: String) {
        guard !closed else { return }
        write(first ? event : ",\n" + event)
        first = false
    }

    private func write(_ text: String) {
        file.write(Data(text.utf8))
    }
}
