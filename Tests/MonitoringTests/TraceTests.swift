import CNN
import Foundation
import Monitoring
import TestSupport
import Training
import XCTest

final class TraceTests: XCTestCase {
    /// Two workers; w1 takes twice as long per micro-batch as w0. Each step: broadcast to w0
    /// (1 ms), broadcast to w1 (1 ms, while w0 already computes), compute, reduce, optimizer.
    private func feed(_ observer: RunObserver, steps: Int = 4) {
        observer.runStarted(Reports.start(epochs: 1, stepsPerEpoch: steps))
        observer.workerJoined(Reports.worker(0))
        observer.workerJoined(Reports.worker(1))
        for step in 1...steps {
            let t = 100.0 + Double(step)
            let phases = [
                Reports.phase("broadcast", 0, t, 0.001),
                Reports.phase("broadcast", 1, t + 0.001, 0.001),
                Reports.phase("compute", 0, t + 0.001, 0.040),   // 4 micro-batches: 10 ms each
                Reports.phase("compute", 1, t + 0.002, 0.080),   // 4 micro-batches: 20 ms each
                Reports.phase("reduce", nil, t + 0.082, 0.002),
                Reports.phase("optimizer", nil, t + 0.084, 0.001),
            ]
            observer.stepFinished(Reports.step(step, start: t, seconds: 0.090, stepsPerEpoch: steps,
                                               workers: [Reports.worker(0, done: 4 * step, last: 0.04), Reports.worker(1, done: 4 * step, last: 0.08)],
                                               phases: phases))
        }
    }

    func testSummaryNamesTheSlowestWorkerAndSplitsStepTime() {
        var summary = TraceSummary()
        let collector = Collector()
        feed(collector)
        for report in collector.steps { summary.add(report) }
        XCTAssertEqual(summary.steps, 4)
        XCTAssertEqual(summary.stepSeconds, 0.36, accuracy: 1e-12)
        // Compute spans cover 1 ms..82 ms of each step; the second broadcast (1 ms) falls inside.
        XCTAssertEqual(summary.breakdown.waitingForWorkers, 4 * 0.080, accuracy: 1e-9)
        XCTAssertEqual(summary.breakdown.broadcast, 4 * 0.002, accuracy: 1e-9)
        XCTAssertEqual(summary.breakdown.reduce, 4 * 0.002, accuracy: 1e-9)
        XCTAssertEqual(summary.breakdown.optimizer, 4 * 0.001, accuracy: 1e-9)
        XCTAssertEqual(summary.breakdown.other, 4 * 0.005, accuracy: 1e-9)
        XCTAssertEqual(summary.slowestWorker?.id, 1)
        XCTAssertEqual(summary.fastestWorker?.id, 0)
        XCTAssertEqual(try XCTUnwrap(summary.slowestWorker?.secondsPerMicroBatch), 0.020, accuracy: 1e-12)
        XCTAssertEqual(summary.workers[1]?.lastToFinish, 4)
        XCTAssertEqual(summary.workers[1]?.microBatches, 16)
        let text = summary.text
        XCTAssertTrue(text.contains("slowest worker: w1 node1-101, 20.0 ms per micro-batch, 2.00x the fastest (w0, 10.0 ms)"), text)
        XCTAssertTrue(text.contains("waiting for workers' gradients"), text)
        XCTAssertTrue(text.contains("88.9%"), text)  // 320 ms of 360 ms
    }

    func testStepsAfterAnEvaluationAreLeftOutOfPerMicroBatchTimes() {
        var summary = TraceSummary()
        // Step 1 is preceded by an evaluation of 10 micro-batches by w0: its count grows by 14.
        summary.add(Reports.step(1, start: 10, seconds: 0.05, workers: [Reports.worker(0, done: 14)],
                                 phases: [Reports.phase("evaluate", 0, 9.0, 0.5), Reports.phase("compute", 0, 10.0, 0.04)]))
        summary.add(Reports.step(2, start: 11, seconds: 0.05, workers: [Reports.worker(0, done: 18)],
                                 phases: [Reports.phase("compute", 0, 11.0, 0.04)]))
        XCTAssertEqual(summary.workers[0]?.microBatches, 4)
        XCTAssertEqual(try XCTUnwrap(summary.workers[0]?.secondsPerMicroBatch), 0.01, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(summary.outsideSteps["evaluate"]), 0.5, accuracy: 1e-12)
        XCTAssertTrue(summary.text.contains("outside steps: evaluate 500 ms"), summary.text)
    }

    func testTraceFileIsAChromeTraceWithStepsPhasesPerWorkerAndCounters() throws {
        let folder = try LocalCluster.temporaryDirectory("trace")
        let path = folder + "/sub/trace.json"
        var printed = ""
        let clock = ManualClock()
        clock.now = 100
        let observer = try ChromeTraceObserver(path: path, report: { printed += $0 }, clock: clock.read)
        feed(observer)
        observer.evaluationFinished(step: 4, epoch: 0, score: BatchScore(lossSum: 1, correct: 9, samples: 10))
        observer.runFinished(Reports.summary(steps: 4))
        let events = try TraceFile.events(path)
        try TraceFile.validate(events)
        let steps = events.filter { $0["cat"] as? String == "step" }
        XCTAssertEqual(steps.map { $0["name"] as? String }, ["step 1", "step 2", "step 3", "step 4"])
        XCTAssertEqual(try XCTUnwrap(steps[0]["ts"] as? Double), 1_000_000, accuracy: 1e-3, "times are microseconds from the observer's start")
        XCTAssertEqual(try XCTUnwrap(steps[0]["dur"] as? Double), 90_000, accuracy: 1e-3)
        let compute = events.filter { $0["name"] as? String == "compute" }
        XCTAssertEqual(Set(compute.compactMap { $0["tid"] as? Int }), [1, 2], "one track per worker")
        XCTAssertEqual(events.filter { $0["name"] as? String == "reduce" }.compactMap { $0["tid"] as? Int }, [0, 0, 0, 0])
        let names = events.filter { $0["name"] as? String == "thread_name" }.compactMap { ($0["args"] as? [String: Any])?["name"] as? String }
        XCTAssertEqual(names, ["coordinator", "w0 node0-100", "w1 node1-101"])
        XCTAssertEqual(events.filter { $0["ph"] as? String == "C" && $0["name"] as? String == "loss" }.count, 4)
        XCTAssertTrue(printed.contains("slowest worker: w1"), printed)
        XCTAssertTrue(printed.contains(path), printed)
    }

    func testATraceCutShortStillReadsAsAnOpenArray() throws {
        let folder = try LocalCluster.temporaryDirectory("trace-cut")
        let path = folder + "/trace.json"
        let clock = ManualClock()
        clock.now = 100
        var observer: ChromeTraceObserver? = try ChromeTraceObserver(path: path, clock: clock.read)
        feed(observer!, steps: 2)
        // Mid-run the file is an unterminated array, which the viewers accept.
        let partial = try String(contentsOfFile: path, encoding: .utf8)
        XCTAssertTrue(partial.hasPrefix("[\n"))
        XCTAssertFalse(partial.contains("]\n"))
        let closed = try JSONSerialization.jsonObject(with: Data((partial + "]").utf8)) as? [[String: Any]]
        XCTAssertEqual(closed?.filter { $0["cat"] as? String == "step" }.count, 2)
        observer = nil
        XCTAssertNoThrow(try TraceFile.validate(TraceFile.events(path)), "the file is closed properly when the observer goes away")
    }

    func testAnUnwritableTracePathSaysSo() {
        XCTAssertThrowsError(try ChromeTraceObserver(path: "/proc/no/such/trace.json")) { error in
            XCTAssertTrue("\(error)".contains("/proc/no/such/trace.json") && "\(error)".contains("--trace"), "\(error)")
        }
    }
}

/// Keeps every step report it is given.
final class Collector: RunObserver {
    var steps: [StepReport] = []
    func stepFinished(_ report: StepReport) { steps.append(report) }
}

/// Reads and checks a Chrome trace file against the Trace Event Format.
enum TraceFile {
    static func events(_ path: String) throws -> [[String: Any]] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        guard let events = try JSONSerialization.jsonObject(with: data) as? [[String: Any]] else {
            throw Exposition.Failure("\(path) is not a JSON array of objects")
        }
        return events
    }

    /// Every event has a name, a known phase, a pid and the fields its phase needs.
    static func validate(_ events: [[String: Any]]) throws {
        guard !events.isEmpty else { throw Exposition.Failure("no events") }
        for event in events {
            guard event["name"] is String, let phase = event["ph"] as? String, event["pid"] is Int else {
                throw Exposition.Failure("event lacks name, ph or pid: \(event)")
            }
            switch phase {
            case "X":
                guard let ts = event["ts"] as? Double, let duration = event["dur"] as? Double, event["tid"] is Int, ts >= 0, duration >= 0 else {
                    throw Exposition.Failure("complete event needs ts >= 0, dur >= 0 and tid: \(event)")
                }
            case "i":
                guard event["ts"] is Double, ["g", "p", "t"].contains(event["s"] as? String ?? "t") else {
                    throw Exposition.Failure("bad instant event: \(event)")
                }
            case "C":
                guard event["ts"] is Double, let args = event["args"] as? [String: Any], args.values.allSatisfy({ $0 is Double }) else {
                    throw Exposition.Failure("counter event needs numeric args: \(event)")
                }
            case "M":
                guard ["process_name", "thread_name", "thread_sort_index"].contains(event["name"] as? String ?? ""), event["args"] is [String: Any] else {
                    throw Exposition.Failure("bad metadata event: \(event)")
                }
            default:
                throw Exposition.Failure("unexpected phase \(phase)")
            }
        }
    }
}
