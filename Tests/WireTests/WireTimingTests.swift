import Wire
import XCTest

/// The worker timings carried by gradients and evaluation results: they round-trip exactly, sit
/// where the format says, and every impossible duration is refused naming its field.
final class WireTimingTests: XCTestCase {
    /// The two messages with timings, named as their fields are.
    private static let messages = ["gradients", "evaluation"]

    private func gradients(_ timings: WorkerTimings) -> Envelope {
        Envelope(runID: 3, step: 4, message: .gradients(Gradients(
            epoch: 1, results: [MicroBatchResult(index: 2, lossSum: 1.5, correct: 1, samples: 2)],
            nodes: [TreeNode(level: 0, index: 2)], tensors: [FloatPayload(copying: [1, 2, 3])], timings: timings)))
    }

    private func evaluation(_ timings: WorkerTimings) -> Envelope {
        Envelope(runID: 3, step: 4, message: .evaluation(Evaluation(
            epoch: 1, results: [MicroBatchResult(index: 2, lossSum: 1.5, correct: 1, samples: 2)], timings: timings)))
    }

    /// A gradients (no nodes) or evaluation meta frame by hand, with one result for micro-batch 0,
    /// ending in the given timing bit patterns.
    private func handBuilt(_ message: String, _ forward: Double, _ backward: Double, _ pack: Double, total: Double) -> [[UInt8]] {
        let meta = Bytes()
        meta.u32(0).u32(1).u32(0).u64((0.5 as Double).bitPattern).u32(1).u32(1).u32(1)
        if message == "gradients" { meta.u32(0).u8(0).u32(0) }  // no nodes, all-Float32 encoding
        meta.timings(forward, backward, pack, total: total)
        return rawMessage(type: message == "gradients" ? 5 : 9, meta: meta.bytes)
    }

    private func assertRefused(_ frames: [[UInt8]], field: String, mentioning words: [String],
                               file: StaticString = #filePath, line: UInt = #line) {
        do {
            let envelope = try WireCodec.decode(bytes: frames)
            XCTFail("decoded \(envelope)", file: file, line: line)
        } catch {
            guard case .invalidValue(let badField, _, _) = error else {
                return XCTFail("expected an invalid value, got \(error)", file: file, line: line)
            }
            XCTAssertEqual(badField, field, file: file, line: line)
            for word in words { XCTAssertTrue(error.description.contains(word), "\(word) missing from: \(error)", file: file, line: line) }
        }
    }

    func testTimingsRoundTripBitForBitForTrainingAndEvaluation() throws {
        let cases = [
            WorkerTimings(forwardSeconds: 0.012_345_678_9, backwardSeconds: 0.024_681_357_9, packSeconds: 0.000_321, totalSeconds: 0.05),
            WorkerTimings(forwardSeconds: 0, backwardSeconds: 0, packSeconds: 0, totalSeconds: 0),
            WorkerTimings(forwardSeconds: .leastNonzeroMagnitude, backwardSeconds: 0, packSeconds: 0, totalSeconds: 86_400 * 365),
            // Parts equal to the total, and a hair above it (clock rounding), are both fine.
            WorkerTimings(forwardSeconds: 1, backwardSeconds: 2, packSeconds: 3, totalSeconds: 6),
            WorkerTimings(forwardSeconds: 1, backwardSeconds: 2, packSeconds: 3.000_5, totalSeconds: 6),
        ]
        for timings in cases {
            for envelope in [gradients(timings), evaluation(timings)] {
                let decoded = try WireCodec.decode(bytes: WireCodec.encodeToBytes(envelope))
                let back: WorkerTimings
                switch decoded.message {
                case .gradients(let gradients): back = gradients.timings
                case .evaluation(let evaluation): back = evaluation.timings
                default: return XCTFail("neither gradients nor evaluation: \(decoded)")
                }
                XCTAssertEqual(back.forwardSeconds.bitPattern, timings.forwardSeconds.bitPattern, "\(timings)")
                XCTAssertEqual(back.backwardSeconds.bitPattern, timings.backwardSeconds.bitPattern, "\(timings)")
                XCTAssertEqual(back.packSeconds.bitPattern, timings.packSeconds.bitPattern, "\(timings)")
                XCTAssertEqual(back.totalSeconds.bitPattern, timings.totalSeconds.bitPattern, "\(timings)")
                XCTAssertEqual(decoded, envelope)
            }
        }
    }

    func testTimingsAreTheLastFourDoublesOfTheMetaBeforeTheTensorChecksums() throws {
        let timings = WorkerTimings(forwardSeconds: 0.25, backwardSeconds: 0.5, packSeconds: 0.125, totalSeconds: 1)
        let meta = WireCodec.encodeToBytes(gradients(timings))[1]
        // One tensor: its xxh64 is the last 8 bytes; the 32 before it are the timings.
        let fields = Array(meta[(meta.count - 40)..<(meta.count - 8)])
        XCTAssertEqual(fields, Bytes().timings(0.25, 0.5, 0.125, total: 1).bytes)
        // No tensors: the timings end the meta frame.
        let evaluationMeta = WireCodec.encodeToBytes(evaluation(timings))[1]
        XCTAssertEqual(Array(evaluationMeta.suffix(32)), Bytes().timings(0.25, 0.5, 0.125, total: 1).bytes)
        for envelope in [gradients(timings), evaluation(timings)] {
            XCTAssertTrue(envelope.description.contains("forward=250.0ms backward=500.0ms pack=125.0ms total=1000.0ms"), envelope.description)
        }
    }

    func testNonFiniteOrNegativeDurationsAreRefusedNamingTheField() {
        let bad: [(Double, String)] = [(.nan, "nan"), (-.nan, "nan"), (.infinity, "inf"), (-.infinity, "-inf"), (-1e-9, "-1e-09"), (-5, "-5.0")]
        for message in Self.messages {
            for (value, shown) in bad {
                assertRefused(handBuilt(message, value, 0, 0, total: 1), field: "\(message).timings.forwardSeconds", mentioning: [shown, "finite", "0 or more"])
                assertRefused(handBuilt(message, 0, value, 0, total: 1), field: "\(message).timings.backwardSeconds", mentioning: [shown])
                assertRefused(handBuilt(message, 0, 0, value, total: 1), field: "\(message).timings.packSeconds", mentioning: [shown])
                assertRefused(handBuilt(message, 0, 0, 0, total: value), field: "\(message).timings.totalSeconds", mentioning: [shown])
            }
            XCTAssertNoThrow(try WireCodec.decode(bytes: handBuilt(message, 0.1, 0.2, 0.3, total: 0.7)), "the hand-built \(message) itself is valid")
        }
    }

    func testPartsLongerThanTheTotalAreRefused() {
        for message in Self.messages {
            assertRefused(handBuilt(message, 1, 2, 3, total: 5.9), field: "\(message).timings.totalSeconds",
                          mentioning: ["5.9", "forward + backward + pack (6.0 s)", "must fit in the total"])
            assertRefused(handBuilt(message, 0, 0, 0.5, total: 0), field: "\(message).timings.totalSeconds", mentioning: ["0.0"])
        }
    }

    func testTimingsOfSeveralResultsAddFieldByField() {
        let a = WorkerTimings(forwardSeconds: 0.25, backwardSeconds: 0.5, packSeconds: 0.125, totalSeconds: 1)
        let b = WorkerTimings(forwardSeconds: 1, backwardSeconds: 2, packSeconds: 4, totalSeconds: 8)
        XCTAssertEqual(a + b, WorkerTimings(forwardSeconds: 1.25, backwardSeconds: 2.5, packSeconds: 4.125, totalSeconds: 9))
        XCTAssertEqual(a + .zero, a)
        XCTAssertEqual((a + b).accountedSeconds, 7.875)
    }

    func testTimingsCutShortAreRefusedAsTruncated() {
        for message in Self.messages {
            var frames = handBuilt(message, 0.1, 0.2, 0.3, total: 0.7)
            frames[1].removeLast(8)
            do {
                _ = try WireCodec.decode(bytes: resealed(frames))
                XCTFail("decoded \(message) without a total")
            } catch {
                XCTAssertEqual(error, .truncated(field: "\(message).timings.totalSeconds", needed: 8, remaining: 0))
            }
        }
    }
}
