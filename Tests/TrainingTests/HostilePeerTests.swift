import CNN
import Foundation
import Training
import Wire
import XCTest

/// A peer that sends what no honest worker sends (thread counts past any machine, steps past any
/// run, names with newlines, terminal escape codes and a megabyte of text, NaN inside finite
/// results): the coordinator keeps one log line per event and the bits of an undisturbed run.
final class HostilePeerTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    func testHugeThreadCountsHugeStepsAndHostileTextChangeNoBitsAndKeepTheLogOneLinePerEvent() throws {
        let run = try InMemoryRun(steps: 6, seed: 3, workerTimeout: 1)
        let lines = LogLines()
        let events = RunEvents()
        let coordinator = try run.coordinator(logger: lines.logger(label: "coord"), observers: [events])
        let forged = "w9\n[coord] warning: forged line\u{1b}[2J\u{1b}]0;owned\u{07}"
        let megabyte = String(repeating: "m", count: 1 << 20)
        let hostiles = [("greedy", Int.max), ("escapes", 1), ("huge", 2)]
        // Once the run has started (so the honest worker is the one the first step waits for),
        // each hostile peer joins and then misbehaves with the run's own id.
        events.started = {
            Thread {
                for (name, threads) in hostiles {
                    let endpoint = run.endpoint(name)
                    let hello = Hello(name: name == "escapes" ? forged : (name == "huge" ? megabyte : name), threads: threads,
                                      processID: 1, hostName: name == "escapes" ? forged : megabyte, coreType: forged)
                    try? endpoint.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
                    var runID: UInt64?
                    let deadline = Date().addingTimeInterval(5)
                    while runID == nil, Date() < deadline, let incoming = try? endpoint.receive(timeoutMilliseconds: 100) {
                        if case .success(let envelope) = incoming.result, case .welcome = envelope.message { runID = envelope.runID }
                    }
                    guard let runID else { continue }
                    // "greedy" claims Int.max threads and then falls silent holding its share.
                    guard name != "greedy" else { continue }
                    for step in [UInt64.max, UInt64(Int.max) + 1] {
                        try? endpoint.send(Envelope(runID: runID, step: step, message: .heartbeat(Heartbeat(sentAtMilliseconds: .max, busy: true))), to: nil)
                    }
                    let parting: Message = name == "escapes" ? .error(WireFailure(code: 500, text: forged)) : .bye(Bye(reason: forged + megabyte.prefix(1 << 19)))
                    try? endpoint.send(Envelope(runID: runID, step: .max, message: parting), to: nil)
                }
            }.start()
        }
        run.startWorker(name: "honest")
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 6)
        try run.assertMatchesReference(summary)
        let log = lines.all
        for expected in ["joined from", "reported error 500", "left: w9", "(greedy)"] {
            XCTAssertTrue(log.contains { $0.contains(expected) }, "no line with '\(expected)':\n" + log.map { String($0.prefix(300)) }.joined(separator: "\n"))
        }
        for line in log {
            XCTAssertFalse(line.unicodeScalars.contains { $0.properties.generalCategory == .control }, "a control character reached the log: \(line.prefix(300))")
            XCTAssertLessThan(line.utf8.count, 2000, "a log line carries a peer's megabyte: \(line.prefix(300))")
        }
    }

    /// A worker whose losses are finite but whose gradient holds a NaN: refused, its micro-batches
    /// recomputed by the honest worker, the bits those of the reference. The poisoner sends its
    /// gradients to the coordinator, so the run is `central`.
    func testANaNInsideAGradientWithFiniteLossesIsRefusedAndRecomputedElsewhere() throws {
        let run = try InMemoryRun(steps: 4, seed: 3, workerTimeout: 1, reduction: .central)
        let lines = LogLines()
        let events = RunEvents()
        let coordinator = try run.coordinator(logger: lines.logger(label: "coord"), observers: [events])
        let answered = LogLines()
        events.started = {
            Thread {
                let endpoint = run.endpoint("poisoner")
                let hello = Hello(name: "poisoner", threads: 1, processID: 1, hostName: "h", coreType: BLAS.kernelName)
                try? endpoint.send(Envelope(runID: 0, step: 0, message: .hello(hello)), to: nil)
                var parameters = 0
                let deadline = Date().addingTimeInterval(10)
                while Date() < deadline, let incoming = try? endpoint.receive(timeoutMilliseconds: 200) {
                    guard case .success(let envelope) = incoming.result else { continue }
                    switch envelope.message {
                    case .welcome(let welcome):
                        parameters = welcome.parameterCount
                    case .assign(let assignment) where assignment.kind == .train:
                        let results = assignment.microBatches.map {
                            MicroBatchResult(index: UInt32($0.index), lossSum: 1, correct: 0, samples: UInt32($0.samples.count))
                        }
                        let nodes = assignment.microBatches.map { TreeNode(level: 0, index: $0.index) }
                        let tensors = nodes.map { _ in
                            FloatPayload(count: parameters) { values in
                                for i in values.indices { values[i] = 0 }
                                values[values.count / 2] = .nan
                            }
                        }
                        let gradients = Gradients(epoch: assignment.epoch, results: results, nodes: nodes, tensors: tensors)
                        try? endpoint.send(Envelope(runID: envelope.runID, step: envelope.step, message: .gradients(gradients)), to: nil)
                        answered.append("\(envelope.step)")
                    default:
                        break
                    }
                }
            }.start()
        }
        run.startWorker(name: "honest")
        let summary = try coordinator.run()
        XCTAssertEqual(summary.steps, 4)
        XCTAssertFalse(answered.all.isEmpty, "the poisoner was never given work")
        let refusals = lines.all.filter { $0.contains("NaN or infinity") && $0.contains("recomputing them on another worker") }
        XCTAssertFalse(refusals.isEmpty, lines.all.joined(separator: "\n"))
        XCTAssertTrue(refusals.allSatisfy { $0.contains("poisoner") && $0.contains("NaN at ") }, refusals.joined(separator: "\n"))
        try run.assertMatchesReference(summary)
    }
}
