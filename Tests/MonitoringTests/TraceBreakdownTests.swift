import Foundation
import Monitoring
import TestSupport
import Training
import XCTest

/// The per-worker split of step time (forward, backward, pack, send, other) and the work after
/// the last step, in the summary and in the trace of a real run.
final class TraceBreakdownTests: XCTestCase {
    /// One step at `t` in which w0 computes 40 ms and w1 80 ms, each split into its parts.
    private func step(_ number: Int, at t: Double) -> StepReport {
        let phases = [
            Reports.phase("broadcast", 0, t, 0.001),
            Reports.phase("compute", 0, t + 0.001, 0.040),
            Reports.phase("other", 0, t + 0.001, 0.002),
            Reports.phase("forward", 0, t + 0.003, 0.010),
            Reports.phase("backward", 0, t + 0.013, 0.020),
            Reports.phase("pack", 0, t + 0.033, 0.001),
            Reports.phase("send", 0, t + 0.034, 0.007),
            Reports.phase("compute", 1, t + 0.002, 0.080),
            Reports.phase("other", 1, t + 0.002, 0.004),
            Reports.phase("forward", 1, t + 0.006, 0.020),
            Reports.phase("backward", 1, t + 0.026, 0.040),
            Reports.phase("pack", 1, t + 0.066, 0.004),
            Reports.phase("send", 1, t + 0.070, 0.012),
            Reports.phase("wait", nil, t + 0.002, 0.080),
            Reports.phase("reduce", nil, t + 0.082, 0.002),
        ]
        return Reports.step(number, start: t, seconds: 0.090,
                            workers: [Reports.worker(0, done: 4 * number), Reports.worker(1, done: 4 * number)], phases: phases)
    }

    func testSummarySplitsEachWorkersComputeAndSaysWhereTheSlowestOnesWent() throws {
        var summary = TraceSummary()
        summary.add(step(1, at: 100))
        summary.add(step(2, at: 101))
        let w0 = try XCTUnwrap(summary.workers[0]), w1 = try XCTUnwrap(summary.workers[1])
        XCTAssertEqual(w0.forwardSeconds, 0.020, accuracy: 1e-12)
        XCTAssertEqual(w0.backwardSeconds, 0.040, accuracy: 1e-12)
        XCTAssertEqual(w0.packSeconds, 0.002, accuracy: 1e-12)
        XCTAssertEqual(w0.sendSeconds, 0.014, accuracy: 1e-12)
        XCTAssertEqual(w0.otherSeconds, 0.004, accuracy: 1e-12)
        XCTAssertEqual(w1.forwardSeconds + w1.backwardSeconds + w1.packSeconds + w1.sendSeconds + w1.otherSeconds,
                       w1.computeSeconds, accuracy: 1e-12)
        XCTAssertEqual(summary.slowestWorker?.id, 1)
        let text = summary.text
        XCTAssertTrue(text.contains("slowest worker: w1 node1-101, 20.0 ms per micro-batch, 2.00x the fastest (w0, 10.0 ms); "
            + "its compute went to forward 25%, backward 50%, pack 5%, send 15%, other 5%"), text)
        let header = try XCTUnwrap(text.split(separator: "\n").first { $0.contains("micro-batches") && $0.contains("forward") })
        for column in ["compute", "forward", "backward", "pack", "send", "other", "per micro-batch", "last to finish"] {
            XCTAssertTrue(header.contains(column), "\(column) missing from \(header)")
        }
        let row = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("  w1 node1-101") })
        XCTAssertEqual(row.split(separator: " ", omittingEmptySubsequences: true).dropFirst(2).joined(separator: " "),
                       "8 160 ms 40 ms 80 ms 8 ms 24 ms 8 ms 20.0 ms 2 of 2 steps", String(row))
    }

    func testWorkOutsideStepsCountsByWallTimeAndKeepsEvaluationOutOfPerMicroBatchTimes() throws {
        var summary = TraceSummary()
        summary.add(step(1, at: 100))
        // After step 1 both workers evaluate (w0 10 micro-batches, w1 none) and a checkpoint is written.
        summary.add(outsideSteps: [Reports.phase("broadcast", 0, 100.5, 0.001), Reports.phase("evaluate", 0, 100.5, 0.3),
                                   Reports.phase("evaluate", 1, 100.5, 0.2), Reports.phase("checkpoint", nil, 100.9, 0.05)])
        var next = step(2, at: 101)
        next.workers = [Reports.worker(0, done: 18), Reports.worker(1, done: 8)]
        summary.add(next)
        XCTAssertEqual(try XCTUnwrap(summary.outsideSteps["evaluate"]), 0.3, accuracy: 1e-12, "two workers at once: wall time")
        XCTAssertEqual(try XCTUnwrap(summary.outsideSteps["checkpoint"]), 0.05, accuracy: 1e-12)
        XCTAssertEqual(summary.workers[0]?.microBatches, 4, "step 2 of w0 followed its evaluation and is left out")
        XCTAssertEqual(summary.workers[1]?.microBatches, 4, "step 2 of w1 also followed an evaluation it took part in")
        XCTAssertTrue(summary.text.contains("outside steps: broadcast 1 ms, checkpoint 50 ms, evaluate 300 ms"), summary.text)
        var third = step(3, at: 102)
        third.workers = [Reports.worker(0, done: 22), Reports.worker(1, done: 12)]
        summary.add(third)
        XCTAssertEqual(summary.workers[0]?.microBatches, 8, "step 3 counts again")
    }

    func testTheTraceDrawsWorkOutsideStepsAsItFinishes() throws {
        let folder = try LocalCluster.temporaryDirectory("trace-outside")
        let path = folder + "/trace.json"
        let clock = ManualClock()
        clock.now = 100
        let observer = try ChromeTraceObserver(path: path, clock: clock.read)
        observer.stepFinished(step(1, at: 100))
        observer.phasesFinished([Reports.phase("evaluate", 1, 100.2, 0.3)], step: 1)
        observer.phasesFinished([Reports.phase("checkpoint", nil, 100.6, 0.05)], step: 1)
        observer.finish()
        let events = try TraceFile.events(path)
        try TraceFile.validate(events)
        let evaluate = try XCTUnwrap(events.first { $0["name"] as? String == "evaluate" })
        XCTAssertEqual(evaluate["tid"] as? Int, 2)
        XCTAssertEqual(try XCTUnwrap(evaluate["ts"] as? Double), 200_000, accuracy: 1e-3)
        XCTAssertEqual((evaluate["args"] as? [String: Any])?["step"] as? Int, 1)
        let checkpoint = try XCTUnwrap(events.first { $0["name"] as? String == "checkpoint" })
        XCTAssertEqual(checkpoint["tid"] as? Int, 0)
        XCTAssertEqual(try XCTUnwrap(checkpoint["dur"] as? Double), 50_000, accuracy: 1e-3)
        XCTAssertEqual(try XCTUnwrap(observer.summary.outsideSteps["checkpoint"]), 0.05, accuracy: 1e-12)
    }

    /// A real run with two spawned workers: every step of every worker is split into the parts
    /// the worker timed, inside its compute span, inside the step; the final evaluation and
    /// checkpoint come after the last step; the summary says where each worker's time went.
    func testARealRunsTraceSplitsEveryWorkersStepAndShowsTheFinalEvaluationAndCheckpoint() throws {
        let (folder, config) = try Fixture.folder("breakdown", config: Fixture.config(synthetic: true))
        let trace = folder + "/trace.json"
        let steps = 6
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", config, "--spawn-workers", "2", "--steps", "\(steps)", "--run-dir", folder + "/run", "--trace", trace],
            seconds: 120)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        let events = try TraceFile.events(trace)
        try TraceFile.validate(events)
        func number(_ event: [String: Any], _ key: String) -> Double { event[key] as? Double ?? .nan }
        func step(of event: [String: Any]) -> Int? { (event["args"] as? [String: Any])?["step"] as? Int }
        let spans = events.filter { $0["ph"] as? String == "X" }
        let stepEvents = spans.filter { $0["cat"] as? String == "step" }
        XCTAssertEqual(stepEvents.count, steps)
        // Times are written with three decimals of a microsecond.
        let slack = 0.002
        var sends: [Int: Int] = [:], streamed: [Int: Int] = [:]
        for stepEvent in stepEvents {
            let stepNumber = try XCTUnwrap(Int((stepEvent["name"] as? String ?? "").dropFirst("step ".count)))
            let window = (number(stepEvent, "ts"), number(stepEvent, "ts") + number(stepEvent, "dur"))
            let inStep = spans.filter { step(of: $0) == stepNumber && $0["cat"] as? String == "phase" }
            for track in [1, 2] {
                let mine = inStep.filter { $0["tid"] as? Int == track }
                let compute = try XCTUnwrap(mine.first { $0["name"] as? String == "compute" }, "step \(stepNumber) track \(track)")
                let span = (number(compute, "ts"), number(compute, "ts") + number(compute, "dur"))
                XCTAssertGreaterThanOrEqual(span.0, window.0 - slack, "compute inside step \(stepNumber)")
                XCTAssertLessThanOrEqual(span.1, window.1 + slack, "compute inside step \(stepNumber)")
                let parts = mine.filter { ["other", "forward", "backward", "backward, sending", "pack", "send"].contains($0["name"] as? String ?? "") }
                let names = parts.compactMap { $0["name"] as? String }
                XCTAssertTrue(names.contains("forward") && (names.contains("backward") || names.contains("backward, sending")) && names.contains("pack"),
                              "step \(stepNumber) track \(track): \(names)")
                if names.contains("send") { sends[track, default: 0] += 1 }
                if names.contains("backward, sending") { streamed[track, default: 0] += 1 }
                for part in parts {
                    XCTAssertGreaterThanOrEqual(number(part, "ts"), span.0 - slack, "\(part)")
                    XCTAssertLessThanOrEqual(number(part, "ts") + number(part, "dur"), span.1 + slack, "\(part)")
                }
                XCTAssertEqual(parts.reduce(0) { $0 + number($1, "dur") }, span.1 - span.0, accuracy: 0.05,
                               "the parts tile the compute span (step \(stepNumber), track \(track))")
                XCTAssertGreaterThan(parts.filter { ($0["name"] as? String ?? "").hasPrefix("backward") }.reduce(0) { $0 + number($1, "dur") }, 0)
            }
            XCTAssertTrue(inStep.contains { $0["name"] as? String == "wait" && $0["tid"] as? Int == 0 }, "the coordinator waits in every step")
        }
        // The network and queues take some time in a step of every worker (micro-seconds at least).
        XCTAssertGreaterThan(sends[1, default: 0], 0, "no send span for w0")
        XCTAssertGreaterThan(sends[2, default: 0], 0, "no send span for w1")
        // Under the sharded reduction (the default) partial sums go to their owners while
        // backward still runs, and the trace shows when.
        XCTAssertGreaterThan(streamed[1, default: 0], 0, "w0 never sent during backward")
        XCTAssertGreaterThan(streamed[2, default: 0], 0, "w1 never sent during backward")

        let lastEnd = stepEvents.map { number($0, "ts") + number($0, "dur") }.max()!
        let evaluations = spans.filter { $0["name"] as? String == "evaluate" }
        XCTAssertFalse(evaluations.isEmpty, "the final evaluation is in the trace")
        XCTAssertTrue(evaluations.allSatisfy { number($0, "ts") >= lastEnd && step(of: $0) == steps }, "\(evaluations)")
        // The final checkpoint, after the evaluation; and the one a sharded run writes as it
        // starts (what it goes back to if a slice is lost), before the first step.
        let checkpoints = spans.filter { $0["name"] as? String == "checkpoint" }
        let firstStart = stepEvents.map { number($0, "ts") }.min()!
        let final = checkpoints.filter { number($0, "ts") >= lastEnd - slack }
        let atStart = checkpoints.filter { number($0, "ts") + number($0, "dur") <= firstStart + slack }
        XCTAssertEqual(final.count, 1, "one checkpoint after the steps of a 6-step run: \(checkpoints)")
        XCTAssertLessThanOrEqual(atStart.count, 1, "\(checkpoints)")
        XCTAssertEqual(final.count + atStart.count, checkpoints.count, "a checkpoint inside the steps: \(checkpoints)")
        let evaluationEnd = evaluations.map { number($0, "ts") + number($0, "dur") }.max()!
        XCTAssertGreaterThanOrEqual(try XCTUnwrap(final.first.map { number($0, "ts") }), evaluationEnd - slack)

        XCTAssertTrue(outcome.output.contains("trace summary: \(steps) steps"), outcome.output)
        XCTAssertTrue(outcome.output.contains("outside steps: ") && outcome.output.contains("checkpoint ")
                      && outcome.output.contains("evaluate "), outcome.output)
        // Which local worker joins first (and so becomes w0) varies from run to run.
        for worker in ["w0 local-", "w1 local-"] {
            XCTAssertTrue(outcome.output.split(separator: "\n").contains { $0.hasPrefix("  \(worker)") && $0.contains(" ms") }, outcome.output)
        }
        XCTAssertNotNil(outcome.output.range(of: #"slowest worker: w[01] local-[01].*its compute went to forward [0-9]+%, backward [0-9]+%, pack [0-9]+%, send [0-9]+%, other [0-9]+%"#,
                                             options: .regularExpression), outcome.output)
    }
}
