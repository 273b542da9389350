import Foundation
import Synchronization
import Wire
import XCTest

final class WireCodecTests: XCTestCase {
    func testEveryMessageTypeRoundTripsThroughBytes() throws {
        let envelopes = sampleEnvelopes()
        XCTAssertEqual(Set(envelopes.map { $0.message.typeName }).count, 23, "the samples must cover all twenty-three types")
        for envelope in envelopes {
            let frames = WireCodec.encodeToBytes(envelope)
            let decoded = try WireCodec.decode(bytes: frames)
            XCTAssertEqual(decoded, envelope, "\(envelope)")
            XCTAssertEqual(WireCodec.encodeToBytes(decoded), frames, "re-encoding must give the same bytes: \(envelope)")
        }
    }

    func testHeaderLayoutMatchesTheDocumentedFormat() throws {
        let envelope = Envelope(runID: 0x0102_0304_0506_0708, step: 42, message: .bye(Bye(reason: "done")))
        let frames = WireCodec.encodeToBytes(envelope)
        XCTAssertEqual(frames.count, 2)
        XCTAssertEqual(frames[0].count, 40)
        XCTAssertEqual(Array(frames[0][0..<4]), Array("CNNW".utf8))
        XCTAssertEqual(Array(frames[0][4..<8]), [9, 0, 7, 0], "version 9, type 7 (bye), reserved 0")
        XCTAssertEqual(Array(frames[0][8..<16]), [8, 7, 6, 5, 4, 3, 2, 1])
        XCTAssertEqual(Array(frames[0][16..<24]), [42, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(frames[0][24..<32]), [8, 0, 0, 0, 0, 0, 0, 0], "meta of 8 bytes, no tensors")
        XCTAssertEqual(frames[1], [4, 0, 0, 0] + Array("done".utf8))
        let checksum = Bytes()
        checksum.u64(WireCodec.checksum(frames[1]))
        XCTAssertEqual(Array(frames[0][32..<40]), checksum.bytes)
    }

    func testHandBuiltGradientsDecodeToTheirFields() throws {
        let meta = Bytes()
        meta.u32(5)                                                     // epoch 5
        meta.u32(1).u32(6).u64((2.5 as Double).bitPattern).u32(7).u32(8).u32(8)   // one result
        meta.u32(2).u8(1).u32(3).u8(0).u32(8)                           // nodes [6,8) and [8,9)
        meta.u8(0).u32(0)                                               // encoding: all Float32
        meta.timings(0.5, 1.25, 0.125, total: 2)                        // forward, backward, pack, total
        let tensors = [floatBytes([1, 2]), floatBytes([3])]
        let envelope = try WireCodec.decode(bytes: rawMessage(type: 5, meta: meta.bytes, tensors: tensors, runID: 9, step: 10))
        XCTAssertEqual(envelope, Envelope(runID: 9, step: 10, message: .gradients(Gradients(
            epoch: 5, results: [MicroBatchResult(index: 6, lossSum: 2.5, correct: 7, topFiveCorrect: 8, samples: 8)],
            nodes: [TreeNode(level: 1, index: 3), TreeNode(level: 0, index: 8)],
            tensors: [FloatPayload(copying: [1, 2]), FloatPayload(copying: [3])],
            timings: WorkerTimings(forwardSeconds: 0.5, backwardSeconds: 1.25, packSeconds: 0.125, totalSeconds: 2)))))
    }

    func testHandBuiltEvaluationDecodesToItsFields() throws {
        let meta = Bytes()
        meta.u32(4)                                                     // epoch 4
        meta.u32(2)                                                     // two results
        meta.u32(3).u64((1.5 as Double).bitPattern).u32(2).u32(4).u32(5)
        meta.u32(0).u64((0.25 as Double).bitPattern).u32(1).u32(1).u32(1)
        meta.timings(0.5, 0, 0.125, total: 1)                           // forward, backward, pack, total
        let envelope = try WireCodec.decode(bytes: rawMessage(type: 9, meta: meta.bytes, runID: 9, step: 10))
        XCTAssertEqual(envelope, Envelope(runID: 9, step: 10, message: .evaluation(Evaluation(
            epoch: 4, results: [MicroBatchResult(index: 3, lossSum: 1.5, correct: 2, topFiveCorrect: 4, samples: 5),
                                MicroBatchResult(index: 0, lossSum: 0.25, correct: 1, samples: 1)],
            timings: WorkerTimings(forwardSeconds: 0.5, backwardSeconds: 0, packSeconds: 0.125, totalSeconds: 1)))))
        XCTAssertEqual(envelope.message.typeName, "evaluation")
    }

    func testFourMebibyteTensorRoundTripsThroughBytes() throws {
        let count = 1 << 20
        let payload = FloatPayload(count: count) { buffer in
            for index in buffer.indices { buffer[index] = Float(index % 1013) - 500.5 }
        }
        let envelope = Envelope(runID: 1, step: 1, message: .weights(Weights(values: payload)))
        let frames = WireCodec.encodeToBytes(envelope)
        XCTAssertEqual(frames[2].count, 4 << 20)
        XCTAssertEqual(try WireCodec.decode(bytes: frames), envelope)
    }

    func testDecodedTensorReadsInPlaceWhenAlignedAndCopiesWhenNot() throws {
        let values: [Float] = [1.5, -2, 3e7, .nan]
        let frames = WireCodec.encodeToBytes(Envelope(runID: 1, step: 1, message: .weights(Weights(values: FloatPayload(copying: values)))))
        for (offset, inPlace) in [(0, true), (8, true), (2, false), (1, false)] {
            let received = frames.enumerated().map { ReceivedFrame(bytes: $1, misalignedBy: $0 == 2 ? offset : 0) }
            guard case .weights(let weights) = try WireCodec.decode(received).message else { return XCTFail("not weights") }
            XCTAssertEqual(weights.values.readsInPlace, inPlace, "offset \(offset)")
            XCTAssertEqual(floatBytes(weights.values.toArray()), floatBytes(values), "offset \(offset)")
        }
    }

    func testPayloadEqualityComparesBitsNotValues() {
        XCTAssertEqual(FloatPayload(copying: [.nan, 1]), FloatPayload(copying: [.nan, 1]))
        XCTAssertNotEqual(FloatPayload(copying: [0]), FloatPayload(copying: [-0.0]))
        XCTAssertNotEqual(FloatPayload(copying: [1, 2]), FloatPayload(copying: [1, 2, 0]))
        XCTAssertEqual(FloatPayload(copying: []), FloatPayload(count: 0) { _ in })
        let values: [Float] = [4, 5, 6]
        let fromPointer = values.withUnsafeBufferPointer { FloatPayload(copying: $0.baseAddress!, count: 3) }
        XCTAssertEqual(fromPointer, FloatPayload(copying: values))
        XCTAssertEqual(fromPointer.checksum, WireCodec.checksum(floatBytes(values)))
    }

    /// A view is hashed only when asked, once, whichever threads ask: it goes on the wire as the
    /// same bytes with the same checksum as a payload hashed when it was made.
    func testAViewIsHashedWhenAskedAndEncodesAsAWrappedPayloadDoes() throws {
        final class Memory {
            var values = (0..<100_003).map { Float($0 % 97) - 48.5 }
        }
        let memory = Memory()
        let (view, wrapped) = memory.values.withUnsafeBufferPointer {
            (FloatPayload(viewing: $0.baseAddress! + 3, count: 100_000, owner: memory),
             FloatPayload(wrapping: $0.baseAddress! + 3, count: 100_000, owner: memory))
        }
        let checksums = Mutex<[UInt64]>([])
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            let value = view.checksum
            checksums.withLock { $0.append(value) }
        }
        XCTAssertEqual(checksums.withLock { $0 }, [UInt64](repeating: wrapped.checksum, count: 8))
        XCTAssertEqual(wrapped.checksum, WireCodec.checksum(floatBytes(Array(memory.values[3..<100_003]))))
        let viewFrames = WireCodec.encodeToBytes(Envelope(runID: 1, step: 2, message: .weightSlice(WeightSlice(slice: 0, values: view))))
        let wrappedFrames = WireCodec.encodeToBytes(Envelope(runID: 1, step: 2, message: .weightSlice(WeightSlice(slice: 0, values: wrapped))))
        XCTAssertEqual(viewFrames, wrappedFrames)
        XCTAssertEqual(try WireCodec.decode(bytes: viewFrames).message, .weightSlice(WeightSlice(slice: 0, values: wrapped)))
    }

    func testDescriptionsAreOneLineSummariesWithoutTensorValues() {
        let descriptions = sampleEnvelopes().map { $0.description }
        for description in descriptions {
            XCTAssertFalse(description.contains("\n"), description)
            XCTAssertLessThan(description.count, 400, description)
        }
        XCTAssertTrue(descriptions[0].contains("step=0 hello name=\"w-ünïcødé-1\" threads=2"), descriptions[0])
        XCTAssertTrue(descriptions[2].hasPrefix("run=deadbeef00000002 step=2000 weights 1000 floats, xxh64 "), descriptions[2])
        XCTAssertFalse(descriptions[2].contains("-7.0"), "weights must not be printed")
        XCTAssertTrue(descriptions[3].contains("assign train epoch=3 micro-batches=3/16 [4, 5, 15] samples=36"), descriptions[3])
        XCTAssertTrue(descriptions[5].contains("gradients epoch=3 results=3 [4, 5, 15] nodes=3 [[15,16), [4,6), [2147483648,4294967296)] tensors=3 (306 floats)"), descriptions[5])
        XCTAssertTrue(descriptions[6].contains("evaluation epoch=9 results=2 [0, 78] forward=500.0ms backward=0.0ms pack=0.001ms total=750.0ms"), descriptions[6])
        let many = Message.assign(Assignment(kind: .train, epoch: 0, totalMicroBatches: 100,
                                             microBatches: (0..<20).map { MicroBatch(index: $0, samples: [1]) }))
        XCTAssertTrue(many.description.contains("[0, 1, 2, 3, 4, 5, 6, 7, … +12]"), many.description)
    }

    func testDecodeErrorsDescribeWhatWhereAndTheNumbers() {
        XCTAssertEqual(DecodeError.unsupportedVersion(got: 2, understood: [3]).description,
                       "protocol version 2 is not understood (this build speaks 3): run coordinator and workers from the same release")
        let truncated = DecodeError.truncated(field: "assign.microBatches[3].samples", needed: 400, remaining: 12).description
        XCTAssertTrue(truncated.contains("assign.microBatches[3].samples") && truncated.contains("400") && truncated.contains("12"), truncated)
        let checksum = DecodeError.tensorChecksumMismatch(tensor: 2, expected: 0xAB, computed: 0xCD).description
        XCTAssertTrue(checksum.contains("tensor 2") && checksum.contains("00000000000000ab") && checksum.contains("00000000000000cd"), checksum)
    }
}
