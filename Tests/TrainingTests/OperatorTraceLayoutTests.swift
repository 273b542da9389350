import Training
import Wire
import XCTest

/// How a worker's compute span is cut into what it timed itself and what it did not see.
final class OperatorTraceLayoutTests: XCTestCase {
    private func layout(_ start: Double, _ end: Double, _ timings: WorkerTimings, streamed: Double = 0) -> [(String, Double, Double)] {
        PhaseTiming.parts(ofComputeFrom: start, to: end, timings: timings, streamedSeconds: streamed, workerID: 3).map { phase in
            XCTAssertEqual(phase.workerID, 3)
            return (phase.name, phase.start, phase.duration)
        }
    }

    private func assertLayout(_ got: [(String, Double, Double)], _ expected: [(String, Double, Double)],
                              file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(got.map(\.0), expected.map(\.0), file: file, line: line)
        for (a, b) in zip(got, expected) {
            XCTAssertEqual(a.1, b.1, accuracy: 1e-12, "start of \(a.0)", file: file, line: line)
            XCTAssertEqual(a.2, b.2, accuracy: 1e-12, "duration of \(a.0)", file: file, line: line)
        }
    }

    func testPartsFollowTheWorkInOrderAndSendTakesTheRestOfTheSpan() {
        // Span 10.0..10.1; the worker spent 80 ms: 5 ms other, 20 forward, 50 backward, 5 pack.
        let timings = WorkerTimings(forwardSeconds: 0.020, backwardSeconds: 0.050, packSeconds: 0.005, totalSeconds: 0.080)
        assertLayout(layout(10, 10.1, timings), [
            ("other", 10, 0.005), ("forward", 10.005, 0.020), ("backward", 10.025, 0.050), ("pack", 10.075, 0.005),
            ("send", 10.080, 0.020),
        ])
    }

    func testBackwardAfterTheFirstSliceWentToItsOwnerIsShownAsSending() {
        // As above, and the first slice of partial sums went 35 ms before the results: during the
        // last 30 ms of backward (pack, 5 ms, came after it).
        let timings = WorkerTimings(forwardSeconds: 0.020, backwardSeconds: 0.050, packSeconds: 0.005, totalSeconds: 0.080)
        assertLayout(layout(10, 10.1, timings, streamed: 0.035), [
            ("other", 10, 0.005), ("forward", 10.005, 0.020), ("backward", 10.025, 0.020), ("backward, sending", 10.045, 0.030),
            ("pack", 10.075, 0.005), ("send", 10.080, 0.020),
        ])
        // Never more than backward, and nothing when the first slice went with the results.
        XCTAssertEqual(layout(10, 10.1, timings, streamed: 0.079).map(\.0), ["other", "forward", "backward, sending", "pack", "send"])
        XCTAssertEqual(layout(10, 10.1, timings, streamed: 0.004).map(\.0), ["other", "forward", "backward", "pack", "send"])
    }

    func testAWorkerReportingMoreThanTheSpanIsScaledToFitAndSendsNothing() {
        // Two queued assignments: 150 ms reported inside a 100 ms span; parts 40 + 80 + 0 of 120.
        let timings = WorkerTimings(forwardSeconds: 0.040, backwardSeconds: 0.080, packSeconds: 0, totalSeconds: 0.150)
        let parts = layout(5, 5.1, timings)
        assertLayout(parts, [("forward", 5, 0.1 / 3), ("backward", 5 + 0.1 / 3, 0.2 / 3)])
        XCTAssertEqual(parts.reduce(0) { $0 + $1.2 }, 0.1, accuracy: 1e-12, "the parts fill the span exactly")
    }

    func testNoTimingsGiveNoPartsAndAnEmptySpanGivesNone() {
        XCTAssertTrue(layout(1, 2, .zero).isEmpty, "a peer that did not time itself")
        XCTAssertTrue(layout(2, 2, WorkerTimings(forwardSeconds: 0, backwardSeconds: 0, packSeconds: 0, totalSeconds: 1)).isEmpty)
        // Only network: the worker reports 1 ms of total and nothing measured.
        assertLayout(layout(0, 0.01, WorkerTimings(forwardSeconds: 0, backwardSeconds: 0, packSeconds: 0, totalSeconds: 0.001)),
                     [("other", 0, 0.001), ("send", 0.001, 0.009)])
    }
}
