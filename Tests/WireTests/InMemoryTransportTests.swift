import Wire
import XCTest

/// The in-memory transport delivers what a socket would: encoded frames, decoded and validated
/// with the receiver's limits, the sender named on a routing endpoint.
final class InMemoryTransportTests: XCTestCase {
    private let coordinatorID = PeerID(bytes: Array("coordinator".utf8))
    private let workerID = PeerID(bytes: Array("w0".utf8))

    func testARoundTripNamesTheSenderOnTheRoutingSideOnly() throws {
        let network = InMemoryNetwork()
        let router = network.endpoint(coordinatorID)
        let dealer = network.endpoint(workerID, connectedTo: coordinatorID)
        let hello = Envelope(runID: 0, step: 0, message: .hello(Hello(name: "w", threads: 2, processID: 7, hostName: "h", coreType: "c")))
        try dealer.send(hello, to: nil)
        let incoming = try XCTUnwrap(router.receive(timeoutMilliseconds: 100))
        XCTAssertEqual(incoming.peer, workerID)
        XCTAssertEqual(try incoming.result.get(), hello)
        let weights = Envelope(runID: 9, step: 3, message: .weights(Weights(values: FloatPayload(copying: [1, 2, 3]))))
        try router.send(weights, to: workerID)
        let back = try XCTUnwrap(dealer.receive(timeoutMilliseconds: 100))
        XCTAssertNil(back.peer)
        XCTAssertEqual(try back.result.get(), weights)
        XCTAssertEqual(router.bytesReceived, dealer.bytesSent)
        XCTAssertEqual(dealer.bytesReceived, router.bytesSent)
        XCTAssertGreaterThan(router.bytesSent, 12, "the tensor's bytes are counted")
    }

    func testTheReceiversLimitsRejectAnOversizedMessageAsASocketWould() throws {
        let network = InMemoryNetwork()
        var limits = DecodeLimits.default
        limits.maxTensorValues = 2
        let router = network.endpoint(coordinatorID, limits: limits)
        let dealer = network.endpoint(workerID, connectedTo: coordinatorID)
        try dealer.send(Envelope(runID: 1, step: 0, message: .weights(Weights(values: FloatPayload(copying: [1, 2, 3])))), to: nil)
        let incoming = try XCTUnwrap(router.receive(timeoutMilliseconds: 100))
        guard case .failure = incoming.result else { return XCTFail("three values where two are allowed must be refused") }
    }

    func testSendingToAClosedEndpointFailsAndAnEmptyQueueTimesOut() throws {
        let network = InMemoryNetwork()
        let router = network.endpoint(coordinatorID)
        network.close(workerID)
        XCTAssertThrowsError(try router.send(Envelope(runID: 1, step: 0, message: .heartbeat(Heartbeat(sentAtMilliseconds: 0, busy: false))), to: workerID))
        XCTAssertThrowsError(try router.send(Envelope(runID: 1, step: 0, message: .heartbeat(Heartbeat(sentAtMilliseconds: 0, busy: false))), to: nil),
                             "a routing endpoint needs a peer")
        XCTAssertNil(try router.receive(timeoutMilliseconds: 0))
        XCTAssertNil(try router.receive(timeoutMilliseconds: 20))
    }
}
