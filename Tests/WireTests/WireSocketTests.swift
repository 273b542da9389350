import Foundation
import Wire
import XCTest

final class WireSocketTests: XCTestCase {
    private var context: ZMQContext!
    private var sockets: [ZMQSocket] = []

    override func setUpWithError() throws {
        context = try ZMQContext()
    }

    override func tearDown() {
        for socket in sockets { socket.close() }
        sockets = []
        context.close()
        context = nil
    }

    private func socket(_ kind: SocketKind) throws -> ZMQSocket {
        let socket = try ZMQSocket(context: context, kind: kind)
        try socket.setLinger(milliseconds: 100)
        sockets.append(socket)
        return socket
    }

    /// A ROUTER bound on a free loopback port and a DEALER connected to it.
    private func routerAndDealer(endpoint: String = "tcp://127.0.0.1:*", limits: DecodeLimits = .default,
                                 dealerID: [UInt8]? = nil) throws -> (router: MessageSocket, dealer: MessageSocket, endpoint: String) {
        let router = try socket(.router)
        let bound = try router.bind(endpoint)
        let dealer = try socket(.dealer)
        if let dealerID { try dealer.setRoutingID(dealerID) }
        try dealer.connect(bound)
        return (MessageSocket(socket: router, limits: limits), MessageSocket(socket: dealer, limits: limits), bound)
    }

    private func receiveEnvelope(_ socket: MessageSocket, file: StaticString = #filePath, line: UInt = #line) throws -> (PeerID?, Envelope) {
        let incoming = try XCTUnwrap(try socket.receive(timeoutMilliseconds: 5000), "nothing arrived within 5 s", file: file, line: line)
        return (incoming.peer, try incoming.result.get())
    }

    func testBindToAnyPortReturnsTheRealEndpoint() throws {
        let router = try socket(.router)
        let bound = try router.bind("tcp://127.0.0.1:*")
        XCTAssertTrue(bound.hasPrefix("tcp://127.0.0.1:"), bound)
        XCTAssertNotEqual(bound, "tcp://127.0.0.1:*")
        XCTAssertGreaterThan(Int(bound.split(separator: ":").last!) ?? 0, 0, bound)
        let other = try socket(.router)
        let boundZero = try other.bind("tcp://127.0.0.1:0")
        XCTAssertGreaterThan(Int(boundZero.split(separator: ":").last!) ?? 0, 0, boundZero)
    }

    func testBindingAPortInUseNamesTheEndpointAndTheFix() throws {
        let first = try socket(.router)
        let bound = try first.bind("tcp://127.0.0.1:*")
        let second = try socket(.router)
        XCTAssertThrowsError(try second.bind(bound)) { error in
            let description = String(describing: error)
            XCTAssertTrue(description.contains(bound), description)
            XCTAssertTrue(description.contains("Address already in use"), description)
            XCTAssertTrue(description.contains("choose another port"), description)
        }
        XCTAssertThrowsError(try second.bind("nonsense")) { error in
            XCTAssertTrue(String(describing: error).contains("tcp://HOST:PORT"), String(describing: error))
        }
    }

    func testEveryMessageTypeCrossesRealDealerAndRouterSockets() throws {
        let (router, dealer, _) = try routerAndDealer()
        for envelope in sampleEnvelopes() {
            try dealer.send(envelope)
            let (peer, received) = try receiveEnvelope(router)
            XCTAssertEqual(received, envelope)
            try router.send(envelope, to: XCTUnwrap(peer))
            let (noPeer, reply) = try receiveEnvelope(dealer)
            XCTAssertNil(noPeer, "a DEALER has no peer ids")
            XCTAssertEqual(reply, envelope)
        }
    }

    func testLargeAndMultipleTensorsArriveIntactAndAreReadInPlace() throws {
        let (router, dealer, _) = try routerAndDealer()
        let big = FloatPayload(count: 1 << 20) { buffer in
            for index in buffer.indices { buffer[index] = Float(index) * 1e-3 - 17 }
        }
        let weights = Envelope(runID: 5, step: 6, message: .weights(Weights(values: big)))
        try dealer.send(weights)
        let (peer, received) = try receiveEnvelope(router)
        XCTAssertEqual(received, weights)
        guard case .weights(let receivedWeights) = received.message else { return XCTFail("not weights") }
        XCTAssertEqual(receivedWeights.values.byteCount, 4 << 20)
        XCTAssertTrue(receivedWeights.values.readsInPlace, "tcp delivers 8-byte aligned data, which needs no copy")
        XCTAssertEqual(receivedWeights.values.toArray(), big.toArray())

        let tensors = (0..<5).map { tensor in FloatPayload(copying: (0..<(1000 * tensor + 1)).map { Float(tensor * 100_000 + $0) }) }
        let nodes = (0..<5).map { TreeNode(level: 1, index: $0) }
        let gradients = Envelope(runID: 5, step: 6, message: .gradients(Gradients(epoch: 1, results: [], nodes: nodes, tensors: tensors)))
        try router.send(gradients, to: XCTUnwrap(peer))
        XCTAssertEqual(try receiveEnvelope(dealer).1, gradients)
    }

    func testRouterSeesTheDealersRoutingIDAndReplies() throws {
        let (router, dealer, _) = try routerAndDealer(dealerID: Array("worker-7".utf8))
        try dealer.send(Envelope(runID: 1, step: 0, message: .hello(Hello(name: "w7", threads: 1, processID: 7, hostName: "h", coreType: "c"))))
        let (peer, _) = try receiveEnvelope(router)
        XCTAssertEqual(peer, PeerID(bytes: Array("worker-7".utf8)))
        XCTAssertEqual(peer?.description, "peer:worker-7")
        let welcome = Envelope(runID: 1, step: 0, message: .welcome(Welcome(workerID: 7, configText: "x: 1", parameterCount: 10,
                                                                          heartbeatIntervalMilliseconds: 100, workerTimeoutMilliseconds: 500)))
        try router.send(welcome, to: XCTUnwrap(peer))
        XCTAssertEqual(try receiveEnvelope(dealer).1, welcome)
        XCTAssertEqual(PeerID(bytes: [0, 0x80, 0, 0, 0x41]).description, "peer:0x0080000041")
    }

    func testGeneratedRoutingIDsDistinguishTwoDealers() throws {
        let (router, first, endpoint) = try routerAndDealer()
        let secondSocket = try socket(.dealer)
        try secondSocket.connect(endpoint)
        let second = MessageSocket(socket: secondSocket)
        try first.send(Envelope(runID: 1, step: 0, message: .bye(Bye(reason: "first"))))
        try second.send(Envelope(runID: 1, step: 0, message: .bye(Bye(reason: "second"))))
        var peers: [String: PeerID] = [:]
        for _ in 0..<2 {
            let (peer, envelope) = try receiveEnvelope(router)
            guard case .bye(let bye) = envelope.message else { return XCTFail("not bye") }
            peers[bye.reason] = try XCTUnwrap(peer)
        }
        XCTAssertNotEqual(peers["first"], peers["second"])
        try router.send(Envelope(runID: 1, step: 1, message: .bye(Bye(reason: "to second"))), to: XCTUnwrap(peers["second"]))
        XCTAssertEqual(try receiveEnvelope(second).1.message, .bye(Bye(reason: "to second")))
        XCTAssertNil(try first.receive(timeoutMilliseconds: 50), "the reply must reach only the addressed peer")
    }

    /// Sends a payload made with `init(count:fill:)` and returns only a weak reference to it.
    private func sendFreshPayload(from dealer: MessageSocket) throws -> WeakPayload {
        let payload = FloatPayload(count: 4096) { buffer in
            for index in buffer.indices { buffer[index] = Float(index) }
        }
        try dealer.send(Envelope(runID: 1, step: 1, message: .weights(Weights(values: payload))))
        return WeakPayload(payload)
    }

    func testZeroCopyPayloadIsReleasedOnceSentAndTheSocketIsClosed() throws {
        let (router, dealer, _) = try routerAndDealer()
        let weak = try sendFreshPayload(from: dealer)
        let (_, received) = try receiveEnvelope(router)
        guard case .weights(let weights) = received.message else { return XCTFail("not weights") }
        XCTAssertEqual(weights.values.toArray(), (0..<4096).map { Float($0) })
        dealer.socket.close()
        // libzmq drops its reference from its I/O thread, so give it a moment.
        let deadline = ContinuousClock.now + .seconds(3)
        while weak.payload != nil && ContinuousClock.now < deadline { usleep(2000) }
        XCTAssertNil(weak.payload, "libzmq must release the payload after sending it")
    }

    func testInprocSendSharesTheSendersBufferWithoutCopying() throws {
        let (router, dealer, _) = try routerAndDealer(endpoint: "inproc://zero-copy")
        let payload = FloatPayload(copying: (0..<10_000).map { Float($0) })
        try dealer.send(Envelope(runID: 1, step: 1, message: .weights(Weights(values: payload))))
        let (_, received) = try receiveEnvelope(router)
        guard case .weights(let weights) = received.message else { return XCTFail("not weights") }
        XCTAssertTrue(weights.values.readsInPlace)
        let sent = payload.withUnsafeBufferPointer { $0.baseAddress }
        let arrived = weights.values.withUnsafeBufferPointer { $0.baseAddress }
        XCTAssertEqual(sent, arrived, "inproc passes the very buffer the sender filled")
    }

    func testOnePayloadSentToTwoPeersArrivesIntactAtBoth() throws {
        let (router, first, endpoint) = try routerAndDealer()
        let secondSocket = try socket(.dealer)
        try secondSocket.connect(endpoint)
        let second = MessageSocket(socket: secondSocket)
        var peers: [PeerID] = []
        for dealer in [first, second] {
            try dealer.send(Envelope(runID: 1, step: 0, message: .heartbeat(Heartbeat(sentAtMilliseconds: 1, busy: false))))
            peers.append(try XCTUnwrap(try receiveEnvelope(router).0))
        }
        let shared = FloatPayload(count: 300_000) { buffer in
            for index in buffer.indices { buffer[index] = Float(index % 977) * 0.5 }
        }
        let weights = Envelope(runID: 1, step: 3, message: .weights(Weights(values: shared)))
        for peer in peers { try router.send(weights, to: peer) }
        XCTAssertEqual(try receiveEnvelope(first).1, weights)
        XCTAssertEqual(try receiveEnvelope(second).1, weights)
        XCTAssertEqual(shared.toArray().prefix(3), [0, 0.5, 1], "sending must leave the sender's payload untouched")
    }

    func testReceiveTimeoutReturnsNilPromptly() throws {
        let dealer = try socket(.dealer)
        try dealer.connect("tcp://127.0.0.1:9")
        let clock = ContinuousClock()
        let start = clock.now
        XCTAssertNil(try dealer.receive(timeoutMilliseconds: 50))
        let elapsed = clock.now - start
        XCTAssertGreaterThanOrEqual(elapsed, .milliseconds(45))
        XCTAssertLessThan(elapsed, .milliseconds(1000))
        let immediate = clock.now
        XCTAssertNil(try MessageSocket(socket: dealer).receive(timeoutMilliseconds: 0))
        XCTAssertLessThan(clock.now - immediate, .milliseconds(50))
    }

    func testPollReportsWhichSocketIsReadable() throws {
        let (router, dealer, _) = try routerAndDealer()
        let idle = try socket(.pair)
        try idle.bind("inproc://idle")
        XCTAssertEqual(try zmqPoll([router.socket, idle], timeoutMilliseconds: 0), [false, false])
        try dealer.send(Envelope(runID: 1, step: 1, message: .bye(Bye(reason: "x"))))
        XCTAssertEqual(try zmqPoll([router.socket, idle], timeoutMilliseconds: 5000), [true, false])
    }

    func testMalformedMessageIsReportedWithItsPeerAndDoesNotStopTheSocket() throws {
        let (router, dealer, _) = try routerAndDealer()
        try dealer.socket.send([.bytes(Array("GET / HTTP/1.1".utf8))])
        let bad = try XCTUnwrap(try router.receive(timeoutMilliseconds: 5000))
        XCTAssertNotNil(bad.peer)
        XCTAssertEqual(bad.result.failure, .missingFrames(got: 1))
        var corrupted = WireCodec.encodeToBytes(sampleEnvelopes()[2])
        corrupted[2][100] ^= 0xFF
        try dealer.socket.send(corrupted.map { .bytes($0) })
        guard case .tensorChecksumMismatch(tensor: 0, _, _) = try XCTUnwrap(try router.receive(timeoutMilliseconds: 5000)).result.failure else {
            return XCTFail("a corrupted tensor must be caught")
        }
        let good = sampleEnvelopes()[0]
        try dealer.send(good)
        XCTAssertEqual(try receiveEnvelope(router).1, good)
    }

    func testMessageWithTooManyFramesIsCutAtTheLimit() throws {
        var limits = DecodeLimits.default
        limits.maxTensorFrames = 2
        let (router, dealer, _) = try routerAndDealer(limits: limits)
        try dealer.socket.send([OutgoingFrame](repeating: .bytes([1, 2, 3, 4]), count: 1000))
        let incoming = try XCTUnwrap(try router.receive(timeoutMilliseconds: 5000))
        XCTAssertEqual(incoming.result.failure, .tooManyTensorFrames(count: 998, limit: 2))
        XCTAssertEqual(router.bytesReceived, 5 + 5 * 4, "only the routing id and the kept frames are held")
    }

    func testByteCountersAddUpTheFrames() throws {
        let (router, dealer, _) = try routerAndDealer(dealerID: [1, 2, 3])
        let envelope = sampleEnvelopes()[5]
        let size = WireCodec.encodeToBytes(envelope).reduce(0) { $0 + $1.count }
        try dealer.send(envelope)
        let (peer, _) = try receiveEnvelope(router)
        XCTAssertEqual(dealer.bytesSent, size)
        XCTAssertEqual(router.bytesReceived, size + 3)
        try router.send(envelope, to: XCTUnwrap(peer))
        XCTAssertEqual(router.bytesSent, size + 3)
    }

    func testRoutingMistakesAreRefusedWithAnExplanation() throws {
        let (router, dealer, _) = try routerAndDealer()
        let envelope = Envelope(runID: 1, step: 1, message: .bye(Bye(reason: "x")))
        XCTAssertThrowsError(try router.send(envelope)) { error in
            XCTAssertTrue(String(describing: error).contains("a ROUTER socket needs a peer"), String(describing: error))
        }
        XCTAssertThrowsError(try dealer.send(envelope, to: PeerID(bytes: [1])))
        try router.socket.setRouterMandatory(true)
        XCTAssertThrowsError(try router.send(envelope, to: PeerID(bytes: Array("nobody".utf8)))) { error in
            XCTAssertTrue((error as? ZMQError)?.isPeerUnreachable == true, String(describing: error))
        }
        dealer.socket.close()
        XCTAssertThrowsError(try dealer.send(envelope)) { error in
            XCTAssertTrue(String(describing: error).contains("already closed"), String(describing: error))
        }
    }

    func testCurveEncryptedMessagesFlowBetweenAllowedPeers() throws {
        let server = try CurveKeys.generatePair()
        let client = try CurveKeys.generatePair()
        XCTAssertEqual(try CurveKeys.publicKey(forSecretKey: server.secretKey), server.publicKey)
        let authenticator = try CurveAuthenticator(context: context, allowedClientKeys: [client.publicKey])
        defer { authenticator.stop() }
        let router = try socket(.router)
        try router.enableCurveServer(secretKey: server.secretKey)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let dealer = try socket(.dealer)
        try dealer.enableCurveClient(serverPublicKey: server.publicKey, publicKey: client.publicKey, secretKey: client.secretKey)
        try dealer.connect(endpoint)
        let envelope = sampleEnvelopes()[2]
        try MessageSocket(socket: dealer).send(envelope)
        XCTAssertEqual(try receiveEnvelope(MessageSocket(socket: router)).1, envelope)
        XCTAssertEqual(authenticator.refusals, [])
    }

    func testCurveAuthenticatorRefusesAnUnknownClientKey() throws {
        let server = try CurveKeys.generatePair()
        let allowed = try CurveKeys.generatePair()
        let stranger = try CurveKeys.generatePair()
        let authenticator = try CurveAuthenticator(context: context, allowedClientKeys: [allowed.publicKey])
        defer { authenticator.stop() }
        let router = try socket(.router)
        try router.enableCurveServer(secretKey: server.secretKey)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let dealer = try socket(.dealer)
        try dealer.enableCurveClient(serverPublicKey: server.publicKey, publicKey: stranger.publicKey, secretKey: stranger.secretKey)
        try dealer.connect(endpoint)
        try MessageSocket(socket: dealer).send(Envelope(runID: 1, step: 1, message: .bye(Bye(reason: "let me in"))))
        XCTAssertNil(try router.receive(timeoutMilliseconds: 300), "a client with an unlisted key must not get through")
        let refusal = try XCTUnwrap(authenticator.refusals.first)
        XCTAssertEqual(refusal.publicKey, stranger.publicKey)
        XCTAssertTrue(refusal.address.contains("127.0.0.1"), refusal.address)
    }

    func testCurveAuthenticatorTakesANewKeyListAndNamesTheAdmittedKeyAsUserID() throws {
        let server = try CurveKeys.generatePair()
        let client = try CurveKeys.generatePair()
        let authenticator = try CurveAuthenticator(context: context, allowedClientKeys: [])
        defer { authenticator.stop() }
        let router = try socket(.router)
        try router.enableCurveServer(secretKey: server.secretKey)
        let endpoint = try router.bind("tcp://127.0.0.1:*")
        let envelope = Envelope(runID: 1, step: 1, message: .bye(Bye(reason: "hi")))
        func connectClient() throws -> ZMQSocket {
            let dealer = try socket(.dealer)
            try dealer.enableCurveClient(serverPublicKey: server.publicKey, publicKey: client.publicKey, secretKey: client.secretKey)
            try dealer.connect(endpoint)
            try MessageSocket(socket: dealer).send(envelope)
            return dealer
        }
        _ = try connectClient()
        XCTAssertNil(try router.receive(timeoutMilliseconds: 300), "not on the (empty) list yet")
        XCTAssertEqual(authenticator.refusals.map(\.publicKey).first, client.publicKey)
        try authenticator.setAllowedClientKeys([client.publicKey])
        XCTAssertThrowsError(try authenticator.setAllowedClientKeys(["not a key"]))
        _ = try connectClient()
        let received = try XCTUnwrap(router.receive(timeoutMilliseconds: 5000, keepingAtMost: 10, readingProperty: "User-Id"))
        XCTAssertEqual(received.property, client.publicKey)
        XCTAssertEqual(try WireCodec.decode(Array(received.frames.dropFirst())), envelope)
    }

    func testMalformedCurveKeysAreRejectedWithTheFix() throws {
        let router = try socket(.router)
        XCTAssertThrowsError(try router.enableCurveServer(secretKey: "too short")) { error in
            let description = String(describing: error)
            XCTAssertTrue(description.contains("server secret key") && description.contains("40 Z85 characters") && description.contains("cnn keygen"), description)
        }
        XCTAssertThrowsError(try CurveKeys.validate(String(repeating: "\"", count: 40), role: "key"))
    }
}

/// Holds a payload without keeping it alive.
final class WeakPayload {
    weak var payload: FloatPayload?
    init(_ payload: FloatPayload) { self.payload = payload }
}

extension Result {
    /// The error of a failure, nil for a success.
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
