import Hashing
import Wire
import XCTest

/// `FloatPayload.refill(_:count:fillingBlocks:)` rewrites a payload's own buffer only while the
/// holder's reference is the only one: a payload someone else still holds (a send in flight, a
/// message being decoded) must keep its values and checksum, or a worker would get the next step's
/// weights under the last step's checksum.
final class PayloadReuseTests: XCTestCase {
    /// Two whole 64 KB blocks and a short third one.
    private let count = 2 * FloatPayload.blockFloats + 1_234

    private func values(step: Int) -> [Float] {
        (0..<count).map { Float(($0 + 31 * step) % 977) * 0.25 - 100 }
    }

    @discardableResult
    private func refill(_ held: inout FloatPayload?, step: Int) -> FloatPayload {
        let source = values(step: step)
        return FloatPayload.refill(&held, count: count, fillingBlocks: { range, block in
            source.withUnsafeBufferPointer { block.baseAddress!.update(from: $0.baseAddress! + range.lowerBound, count: range.count) }
        })
    }

    private func address(_ payload: FloatPayload) -> UnsafePointer<Float>? {
        payload.withUnsafeBufferPointer { $0.baseAddress }
    }

    func testRefillRewritesAUniquelyHeldPayloadInPlaceWithTheNewChecksum() {
        var held: FloatPayload?
        refill(&held, step: 0)
        let first = address(held!)
        for step in 1...3 {
            refill(&held, step: step)
            XCTAssertEqual(address(held!), first, "step \(step): a payload nobody else holds is reused")
            XCTAssertTrue(held!.toArray() == values(step: step), "step \(step)")
            XCTAssertEqual(held!.checksum, XXHash64.hash(array: values(step: step)), "step \(step)")
        }
    }

    func testRefillNeverChangesAPayloadHeldElsewhere() {
        var held: FloatPayload?
        refill(&held, step: 0)
        let inFlight = held!
        let next = refill(&held, step: 1)
        XCTAssertFalse(next === inFlight, "a payload with another reference gets a new buffer")
        XCTAssertTrue(inFlight.toArray() == values(step: 0))
        XCTAssertEqual(inFlight.checksum, XXHash64.hash(array: values(step: 0)))
        XCTAssertTrue(next.toArray() == values(step: 1))
        XCTAssertEqual(next.checksum, XXHash64.hash(array: values(step: 1)))
    }

    func testRefillOfAnotherCountOrOfAWrappingPayloadAllocates() {
        var held: FloatPayload? = FloatPayload(copying: [1, 2, 3])
        let small = address(held!)
        refill(&held, step: 2)
        XCTAssertNotEqual(address(held!), small)
        XCTAssertTrue(held!.toArray() == values(step: 2))

        let memory = values(step: 5)
        let owner = memory as AnyObject
        held = memory.withUnsafeBufferPointer { FloatPayload(wrapping: $0.baseAddress!, count: count, owner: owner) }
        let wrapped = address(held!)
        refill(&held, step: 3)
        XCTAssertNotEqual(address(held!), wrapped, "memory the payload does not own is never written")
        XCTAssertTrue(memory == values(step: 5))
        XCTAssertEqual(held!.checksum, XXHash64.hash(array: values(step: 3)))
    }
}
