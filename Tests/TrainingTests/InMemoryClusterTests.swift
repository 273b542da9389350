import CNN
import Foundation
import PeerSecurity
import Training
import Wire
import XCTest

/// The real coordinator and workers in one process, talking through the in-memory transport:
/// the whole protocol without sockets or processes, held to the single-process reference.
final class InMemoryClusterTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    func testACoordinatorAndThreeWorkersInMemoryMatchTheReferenceBitForBit() throws {
        let run = try InMemoryRun(steps: 6, batchNorm: true)
        let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .warning), expectedWorkers: 3)
        for (index, threads) in [1, 2, 1].enumerated() { run.startWorker(name: "m\(index)", threads: threads) }
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 6)
        try run.assertMatchesReference(summary)
        let metrics = try String(contentsOfFile: run.directory + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        XCTAssertEqual(metrics.filter { $0.contains("\"loss\"") }.count, 2, "a line at steps 4 and 6:\n\(metrics.joined(separator: "\n"))")
        XCTAssertEqual(metrics.filter { $0.contains("\"test_accuracy\"") }.count, 1)
        XCTAssertTrue(metrics.first?.contains("\"workers\": 3") ?? false, metrics.first.map(String.init) ?? "")
    }

    /// With ten classes, every metrics line has top-5 beside top-1, and the last evaluation's
    /// top-5 is what `cnn eval` computes from the final checkpoint.
    func testMetricsCarryTopFiveAndTheEvaluationsEqualsCnnEvals() throws {
        let run = try InMemoryRun(steps: 8)
        let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .warning), expectedWorkers: 2)
        for name in ["a", "b"] { run.startWorker(name: name) }
        let summary = try coordinator.run()
        let objects = try String(contentsOfFile: run.directory + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
            .map { try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        for object in objects where object["loss"] != nil {
            let top1 = try XCTUnwrap(object["accuracy"] as? Double), top5 = try XCTUnwrap(object["top5_accuracy"] as? Double, "\(object)")
            XCTAssertTrue(top1 <= top5 && top5 <= 1, "\(object)")
        }
        let evaluation = try XCTUnwrap(objects.last { $0["test_accuracy"] != nil })
        let logged = try XCTUnwrap(evaluation["test_top5_accuracy"] as? Double, "\(evaluation)")
        let eval = try CheckpointEvaluation.run(checkpoint: summary.finalCheckpoint, configPath: nil)
        // metrics.jsonl keeps six significant digits.
        XCTAssertEqual(logged, try XCTUnwrap(eval.topFiveAccuracy), accuracy: 1e-5)
        XCTAssertEqual(evaluation["test_accuracy"] as? Double ?? -1, eval.accuracy, accuracy: 1e-5)
    }

    /// Each metrics line's learning rate is the one its own step's update used (a cosine
    /// schedule changes it every step, so the next step's would differ).
    func testTheMetricsLineCarriesTheLearningRateOfItsOwnStep() throws {
        let run = try InMemoryRun(steps: 4, schedule: "cosine")
        let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .warning))
        run.startWorker(name: "w")
        _ = try coordinator.run()
        let lines = try String(contentsOfFile: run.directory + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        let line = try XCTUnwrap(lines.first { $0.contains("\"loss\"") })
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["step"] as? Int, 4)
        let logged = try XCTUnwrap(object["learning_rate"] as? Double)
        let train = run.config.train
        let stepsPerEpoch = 256 / train.batch
        func rate(_ step: Int) -> Double {
            Double(Float(train.schedule.learningRate(base: train.optimizer.learningRate, step: step, epoch: 0,
                                                     totalSteps: train.epochs * stepsPerEpoch)))
        }
        XCTAssertEqual(logged, rate(3), accuracy: 1e-6, "the fourth step (index 3) used \(rate(3)); the next one uses \(rate(4))")
        XCTAssertGreaterThan(abs(rate(3) - rate(4)), 1e-4, "the schedule must tell the two apart")
    }

    /// A peer saying hello again and again would have the coordinator send it the weights each
    /// time for a few bytes of its own: after `max_strikes` repeats it is evicted and ignored.
    func testAPeerThatKeepsSayingHelloIsEvictedAndTheRunMatchesTheReference() throws {
        let run = try InMemoryRun(steps: 4, batchNorm: true)
        let events = RunEvents()
        let coordinator = try run.coordinator(logger: makeLogger(label: "coord", level: .error), observers: [events])
        let rogue = run.endpoint("rogue")
        events.started = {
            let hello = Envelope(runID: 0, step: 0, message: .hello(Hello(name: "rogue", threads: 1, processID: 1, hostName: "h", coreType: BLAS.kernelName)))
            for _ in 0..<60 { try? rogue.send(hello, to: nil) }
        }
        run.startWorker(name: "honest")
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 4)
        XCTAssertEqual(events.joins["honest"], 1)
        XCTAssertLessThanOrEqual(events.joins["rogue", default: 0], PeerLimits().maxStrikes, "\(events.joins)")
        XCTAssertTrue(events.departures["rogue", default: []].contains { $0.contains("evicted") && $0.contains("hello again") },
                      "\(events.departures)")
        try run.assertMatchesReference(summary)
    }

    func testARepeatedWarningIsSaidOncePerIntervalWithTheCountHeldBack() {
        var warning = RepeatedWarning(interval: 10)
        XCTAssertEqual(warning.shouldSay(now: 0), 0)
        XCTAssertNil(warning.shouldSay(now: 1))
        XCTAssertNil(warning.shouldSay(now: 9.9))
        XCTAssertEqual(warning.shouldSay(now: 10), 2)
        XCTAssertNil(warning.shouldSay(now: 11))
        XCTAssertEqual(warning.shouldSay(now: 30), 1)
    }
}
