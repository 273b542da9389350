import Hashing
import XCTest

@testable import Wire

/// Gradient tree nodes in bf16 on the wire (`distributed.wire_precision: bf16`): the bytes sent
/// are the values' top halves, losslessly (the sender rounded them), the checksum covers those
/// bytes, the receiver gets the same Float32s back, and every malformed length or encoding is
/// refused by the decoder.
final class TensorEncodingTests: XCTestCase {
    /// bf16-exact values of every kind: signs, zeros, a subnormal, infinities, NaN, large and small.
    private static let exact: [Float] = [1, -2.5, 0, -0.0, 0x1p-130, .infinity, -.infinity, .nan, 3.3895314e38, 1.1754944e-38,
                                         0.333984375, -65280]

    /// `count` bf16-exact values (their low halves zero) followed by `tail` arbitrary Float32s.
    private func values(bf16 count: Int, float32 tail: Int) -> [Float] {
        let head = (0..<count).map { Self.exact[$0 % Self.exact.count] * Float(1 << ($0 % 7)) }
        return head + (0..<tail).map { Float($0) * 0.1 + 1e-7 }
    }

    private func gradients(_ tensors: [[Float]], encoding: TensorEncoding) -> Envelope {
        Envelope(runID: 7, step: 3, message: .gradients(Gradients(
            epoch: 1, results: [MicroBatchResult(index: 0, lossSum: 1, correct: 1, samples: 2),
                                MicroBatchResult(index: 1, lossSum: 1, correct: 1, samples: 2)],
            nodes: tensors.count == 1 ? [TreeNode(level: 1, index: 0)] : [TreeNode(level: 0, index: 0), TreeNode(level: 0, index: 1)],
            tensors: tensors.map { FloatPayload(copying: $0) }, encoding: encoding)))
    }

    func testBFloat16GradientsRoundTripBitForBitAndTheirFramesAreTwoBytesAValue() throws {
        for (head, tail) in [(12, 0), (3, 5), (1000, 10), (40_000, 3)] {
            let first = values(bf16: head, float32: tail)
            let second = first.map { -$0 }
            let envelope = gradients([first, second], encoding: .bfloat16(first: head))
            let frames = WireCodec.encodeToBytes(envelope)
            XCTAssertEqual(frames.count, 4)
            for frame in frames[2...] { XCTAssertEqual(frame.count, 2 * head + 4 * tail, "head \(head), tail \(tail)") }
            // Each tensor checksum in the meta is of the frame's bytes as sent.
            let meta = frames[1]
            for (index, frame) in frames[2...].enumerated() {
                let slot = meta.count - 8 * (2 - index)
                let stored = meta[slot..<(slot + 8)].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
                XCTAssertEqual(stored, XXHash64.hash(array: frame))
            }
            let decoded = try WireCodec.decode(bytes: frames)
            XCTAssertEqual(decoded, envelope, "head \(head), tail \(tail)")
            guard case .gradients(let back) = decoded.message else { return XCTFail("\(decoded)") }
            XCTAssertEqual(back.encoding, .bfloat16(first: head))
            XCTAssertEqual(back.tensors[0].toArray().map(\.bitPattern), first.map(\.bitPattern))
            // Received frames that start anywhere (odd addresses too) read the same.
            let shifted = frames.enumerated().map { ReceivedFrame(bytes: $0.element, misalignedBy: $0.offset < 2 ? 0 : 1) }
            XCTAssertEqual(try WireCodec.decode(shifted), envelope)
        }
    }

    func testBFloat16HalvesTheGradientBytesOfGradientsAndSlicePartials() throws {
        // A central leaf: 100,000 parameter gradients in bf16, then 64 state values in Float32.
        let parameters = 100_000, state = 64
        let leaf = values(bf16: parameters, float32: state)
        func tensorBytes(_ envelope: Envelope) -> Int { WireCodec.encode(envelope).dropFirst(2).reduce(0) { $0 + $1.byteCount } }
        let fp32 = tensorBytes(gradients([leaf], encoding: .float32))
        let bf16 = tensorBytes(gradients([leaf], encoding: .bfloat16(first: parameters)))
        XCTAssertEqual(fp32, 4 * (parameters + state))
        XCTAssertEqual(bf16, 2 * parameters + 4 * state)
        XCTAssertEqual(fp32 - bf16, 2 * parameters, "two bytes saved per gradient, none on state")
        // A parameter slice's partial sums: exactly half.
        let slice = Array(leaf.prefix(parameters))
        func partials(_ encoding: TensorEncoding) -> Envelope {
            Envelope(runID: 1, step: 2, message: .slicePartials(SlicePartials(
                slice: 0, nodes: [TreeNode(level: 0, index: 0), TreeNode(level: 1, index: 1)],
                tensors: [FloatPayload(copying: slice), FloatPayload(copying: slice)], encoding: encoding)))
        }
        XCTAssertEqual(tensorBytes(partials(.bfloat16(first: parameters))) * 2, tensorBytes(partials(.float32)))
        for envelope in [partials(.bfloat16(first: parameters)), partials(.float32)] {
            XCTAssertEqual(try WireCodec.decode(bytes: WireCodec.encodeToBytes(envelope)), envelope)
        }
        // The meta frame is the same size either way: only the tensors shrink.
        XCTAssertEqual(WireCodec.encodeToBytes(partials(.float32))[1].count, WireCodec.encodeToBytes(partials(.bfloat16(first: parameters)))[1].count)
    }

    /// A slice-partials meta frame by hand: slice 0, one node [0,1), then the encoding bytes.
    private func slicePartials(kind: UInt8, bf16Values: UInt32, tensor: [UInt8]) -> [[UInt8]] {
        var meta: [UInt8] = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, kind]
        withUnsafeBytes(of: bf16Values.littleEndian) { meta += $0 }
        return rawMessage(type: 13, meta: meta, tensors: [tensor])
    }

    private func assertRejected(_ frames: [[UInt8]], as expected: DecodeError, file: StaticString = #filePath, line: UInt = #line) {
        do {
            let envelope = try WireCodec.decode(bytes: frames)
            XCTFail("decoded \(envelope)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
            XCTAssertFalse(error.description.isEmpty, file: file, line: line)
        }
    }

    func testHandBuiltBFloat16SlicePartialsDecodeToTheirValues() throws {
        // 1.0 and -2.0 as bf16 (0x3F80, 0xC000), then 0.5 as a Float32.
        let tensor: [UInt8] = [0x80, 0x3F, 0x00, 0xC0] + floatBytes([0.5])
        let envelope = try WireCodec.decode(bytes: slicePartials(kind: 1, bf16Values: 2, tensor: tensor))
        guard case .slicePartials(let partials) = envelope.message else { return XCTFail("\(envelope)") }
        XCTAssertEqual(partials.encoding, .bfloat16(first: 2))
        XCTAssertEqual(partials.tensors[0].toArray(), [1, -2, 0.5])
        XCTAssertTrue(partials.description.contains("sent as bf16x2+fp32"), partials.description)
    }

    func testTheDecoderRefusesBadEncodingsAndLengthsThatFitNone() {
        let good: [UInt8] = [0x80, 0x3F, 0x00, 0xC0] + floatBytes([0.5])
        assertRejected(slicePartials(kind: 2, bf16Values: 2, tensor: good), as: .unknownEnumValue(field: "slicePartials.encoding.kind", value: 2))
        assertRejected(slicePartials(kind: 0, bf16Values: 2, tensor: good),
                       as: .invalidValue(field: "slicePartials.encoding.bfloat16Values", value: "2",
                                         requirement: "an all-Float32 encoding (kind 0) has 0 bf16 values"))
        assertRejected(slicePartials(kind: 1, bf16Values: 0, tensor: good),
                       as: .invalidValue(field: "slicePartials.encoding.bfloat16Values", value: "0",
                                         requirement: "a bf16 encoding (kind 1) has at least 1 bf16 value"))
        // Shorter than its bf16 head; a tail that is not whole Float32s; an odd byte count.
        assertRejected(slicePartials(kind: 1, bf16Values: 5, tensor: good), as: .tensorEncodingLength(tensor: 0, bytes: 8, bfloat16Values: 5))
        assertRejected(slicePartials(kind: 1, bf16Values: 1, tensor: good), as: .tensorEncodingLength(tensor: 0, bytes: 8, bfloat16Values: 1))
        assertRejected(slicePartials(kind: 1, bf16Values: 2, tensor: Array(good.prefix(7))),
                       as: .tensorEncodingLength(tensor: 0, bytes: 7, bfloat16Values: 2))
        // An all-bf16 tensor of 3 values is 6 bytes, which Float32 would refuse.
        XCTAssertNoThrow(try WireCodec.decode(bytes: slicePartials(kind: 1, bf16Values: 3, tensor: [0, 0, 0x80, 0x3F, 0, 0])))
        assertRejected(slicePartials(kind: 0, bf16Values: 0, tensor: [0, 0, 0x80, 0x3F, 0, 0]), as: .tensorByteLength(tensor: 0, bytes: 6))
        // A bf16 byte flipped in transit: the checksum, which covers the bytes sent, catches it.
        var frames = WireCodec.encodeToBytes(gradients([values(bf16: 8, float32: 2)], encoding: .bfloat16(first: 8)))
        frames[2][3] ^= 0x01
        XCTAssertThrowsError(try WireCodec.decode(bytes: frames)) { error in
            guard case DecodeError.tensorChecksumMismatch(tensor: 0, _, _) = error else { return XCTFail("\(error)") }
        }
        // The gradients message reads its encoding between the nodes and the timings.
        let meta = Bytes()
        meta.u32(0).u32(0).u32(1).u8(0).u32(0).u8(9).u32(1).timings()
        assertRejected(rawMessage(type: 5, meta: meta.bytes, tensors: [floatBytes([1])]),
                       as: .unknownEnumValue(field: "gradients.encoding.kind", value: 9))
    }
}
