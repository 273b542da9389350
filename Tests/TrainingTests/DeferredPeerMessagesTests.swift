import Wire
import XCTest
@testable import Training

/// What a sharded worker keeps of its peers' messages for a plan or step it has not reached: all
/// that an honest peer can send ahead, and no more than a bound from any one peer.
final class DeferredPeerMessagesTests: XCTestCase {
    private let leafLength = 1_000
    private let microBatches = 4

    private func partials(step: UInt64, floats: Int) -> Envelope {
        Envelope(runID: 1, step: step, message: .slicePartials(SlicePartials(
            slice: 0, nodes: [TreeNode(level: 0, index: 0)], tensors: [FloatPayload(copying: [Float](repeating: 1, count: floats))])))
    }

    func testTheBoundIsTwiceWhatAnHonestPeerCanSendAhead() {
        // Partial sums: a node and a backup copy per micro-batch (8 vectors); weights and three
        // state tensors handed over, and gradients (5 more); twice that, in bytes.
        XCTAssertEqual(DeferredPeerMessages.bound(leafLength: leafLength, microBatchesPerStep: microBatches), 2 * 13 * 1_000 * 4)
    }

    func testAllThatAnHonestPeerSendsAheadIsKeptInOrder() {
        var deferred = DeferredPeerMessages(leafLength: leafLength, microBatchesPerStep: microBatches)
        // Everything an honest peer may have sent one step ahead, as whole vectors.
        let honest = 2 * microBatches + 1 + DeferredPeerMessages.mostOptimizerStateTensors + 1
        for index in 0..<honest {
            XCTAssertTrue(deferred.keep(partials(step: UInt64(10 + index), floats: leafLength), from: 3, messageLimit: 100), "message \(index)")
        }
        // Another peer's allowance is its own.
        XCTAssertTrue(deferred.keep(partials(step: 99, floats: leafLength), from: 4, messageLimit: 100))
        XCTAssertEqual(deferred.bytes[3], honest * leafLength * 4)
        let taken = deferred.take()
        XCTAssertEqual(taken.map(\.envelope.step), (0..<UInt64(honest)).map { 10 + $0 } + [99])
        XCTAssertEqual(taken.map(\.sender), Array(repeating: 3, count: honest) + [4])
        XCTAssertTrue(deferred.messages.isEmpty)
        XCTAssertTrue(deferred.bytes.isEmpty, "taking them frees their allowance")
    }

    func testAFloodingPeerIsHeldToItsBytesAndEveryoneToTheMessageLimit() {
        let bound = DeferredPeerMessages.bound(leafLength: leafLength, microBatchesPerStep: microBatches)
        var deferred = DeferredPeerMessages(leafLength: leafLength, microBatchesPerStep: microBatches)
        let kept = (0..<1_000).filter { _ in deferred.keep(partials(step: 5, floats: leafLength), from: 7, messageLimit: 10_000) }.count
        XCTAssertEqual(kept, bound / (leafLength * 4))
        XCTAssertLessThanOrEqual(deferred.bytes[7] ?? 0, bound)
        // Small messages still go for another peer, up to the number of messages.
        var tiny = DeferredPeerMessages(leafLength: leafLength, microBatchesPerStep: microBatches)
        XCTAssertEqual((0..<50).filter { _ in tiny.keep(partials(step: 5, floats: 1), from: 8, messageLimit: 20) }.count, 20)
    }
}
