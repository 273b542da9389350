import Hashing
import Wire
import XCTest

/// Payloads hashed block by block as they are built (`init(count:fillingBlocks:)`) and payloads
/// over memory they do not own (`init(wrapping:count:owner:)`) must carry the checksum of their
/// bytes exactly, or every message they go out in is rejected (or, worse, a wrong one accepted).
final class BlockPayloadTests: XCTestCase {
    /// Two whole 64 KB blocks and a short third one: every kind of block the fill meets.
    private let count = 2 * FloatPayload.blockFloats + 1_234

    private func value(_ index: Int) -> Float { Float(index % 977) * 0.25 - 100 }

    private func blockPayload() -> FloatPayload {
        FloatPayload(count: count, fillingBlocks: { range, block in
            for (offset, index) in range.enumerated() { block[offset] = value(index) }
        })
    }

    func testBlockFilledPayloadHasTheChecksumOfItsBytes() {
        let payload = blockPayload()
        let values = (0..<count).map(value)
        XCTAssertEqual(payload.toArray(), values)
        XCTAssertEqual(payload.checksum, XXHash64.hash(array: values))
        XCTAssertEqual(payload, FloatPayload(count: count) { buffer in
            for index in 0..<count { buffer[index] = value(index) }
        })
    }

    func testFillIsCalledOnConsecutiveBlocksOfAtMost64KB() {
        var ranges: [Range<Int>] = []
        _ = FloatPayload(count: count, fillingBlocks: { range, block in
            XCTAssertEqual(block.count, range.count)
            ranges.append(range)
            block.update(repeating: 1)
        })
        XCTAssertEqual(ranges, [0..<16_384, 16_384..<32_768, 32_768..<count])
        XCTAssertEqual(FloatPayload.blockFloats * MemoryLayout<Float>.size, 65_536)
    }

    func testEmptyAndShortBlockPayloadsMatchTheOneShotHash() {
        for length in [0, 1, 7, 8, 9, 100] {
            let payload = FloatPayload(count: length, fillingBlocks: { range, block in
                for (offset, index) in range.enumerated() { block[offset] = value(index) }
            })
            XCTAssertEqual(payload.checksum, XXHash64.hash(array: (0..<length).map(value)), "\(length) floats")
        }
    }

    func testBlockFilledWeightsDecodeAndAFlippedBitInAnyBlockIsRejected() throws {
        let envelope = Envelope(runID: 1, step: 2, message: .weights(Weights(values: blockPayload())))
        let frames = WireCodec.encodeToBytes(envelope)
        XCTAssertEqual(try WireCodec.decode(bytes: frames), envelope)
        let tensorFrame = frames.count - 1
        let blockBytes = FloatPayload.blockFloats * MemoryLayout<Float>.size
        // One bit in the first and the last byte of every block, and one in the middle.
        for block in 0..<3 {
            let start = block * blockBytes, end = min(start + blockBytes, frames[tensorFrame].count)
            for byte in [start, (start + end) / 2, end - 1] {
                var corrupted = frames
                corrupted[tensorFrame][byte] ^= 0x08
                XCTAssertThrowsError(try WireCodec.decode(bytes: corrupted), "bit flipped in byte \(byte) of block \(block)") { error in
                    guard case .tensorChecksumMismatch(tensor: 0, _, _) = error as? DecodeError else {
                        return XCTFail("byte \(byte): expected a tensor checksum mismatch, got \(error)")
                    }
                }
            }
        }
    }

    func testWrappingPayloadHashesInPlaceAndKeepsItsOwnerAlive() throws {
        final class Owner {
            let pointer: UnsafeMutablePointer<Float>
            init(count: Int) { pointer = .allocate(capacity: count) }
            deinit { pointer.deallocate() }
        }
        var owner: Owner? = Owner(count: count)
        for index in 0..<count { owner!.pointer[index] = value(index) }
        weak var watched = owner
        let payload = FloatPayload(wrapping: owner!.pointer, count: count, owner: owner!)
        owner = nil
        XCTAssertNotNil(watched, "the payload must keep its owner alive")
        XCTAssertEqual(payload, blockPayload())
        payload.withUnsafeBufferPointer { XCTAssertEqual($0.baseAddress, UnsafePointer(watched!.pointer)) }
        let envelope = Envelope(runID: 1, step: 2, message: .weights(Weights(values: payload)))
        XCTAssertEqual(try WireCodec.decode(bytes: WireCodec.encodeToBytes(envelope)), envelope)
    }
}
