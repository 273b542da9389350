import Foundation
import Wire
import XCTest

/// The worker-to-worker transport: real sockets on loopback, with and without CURVE, and its
/// in-memory stand-in.
final class PeerMeshTests: XCTestCase {
    private var meshes: [PeerMesh] = []

    override func tearDown() {
        for mesh in meshes { mesh.close() }
        meshes = []
    }

    private func mesh(_ id: UInt32, keys: (publicKey: String, secretKey: String)? = nil, limits: DecodeLimits = .default) throws -> PeerMesh {
        let security = try keys.map { try PeerMeshSecurity(publicKey: $0.publicKey, secretKey: $0.secretKey) }
        let mesh = try PeerMesh(selfID: id, bind: "tcp://127.0.0.1:0", security: security, limits: limits, maxMessageBytes: 1 << 20)
        meshes.append(mesh)
        return mesh
    }

    private func address(_ mesh: PeerMesh, key: String? = nil) -> PeerAddress {
        PeerAddress(workerID: mesh.selfID, endpoint: mesh.endpoint, publicKey: key)
    }

    /// Messages received until `count` arrived or `milliseconds` passed.
    private func receive(_ transport: PeerTransport, count: Int, within milliseconds: Int = 5000) throws -> [PeerIncoming] {
        let deadline = Date(timeIntervalSinceNow: Double(milliseconds) / 1000)
        var received: [PeerIncoming] = []
        while received.count < count, Date() < deadline {
            if let incoming = try transport.receive(timeoutMilliseconds: 50) { received.append(incoming) }
        }
        return received
    }

    /// A gradients message carrying tensors, marked with who sent it to whom.
    private func envelope(from sender: UInt32, to receiver: UInt32) -> Envelope {
        let values = (0..<777).map { Float($0) * 0.5 - Float(sender) + Float(receiver) / 8 }
        return Envelope(runID: 42, step: UInt64(sender) << 32 | UInt64(receiver), message: .gradients(Gradients(
            epoch: 1, results: [MicroBatchResult(index: sender, lossSum: 1.5, correct: 2, samples: 4)],
            nodes: [TreeNode(level: 0, index: Int(sender)), TreeNode(level: 0, index: Int(sender) + 100)],
            tensors: [FloatPayload(copying: values), FloatPayload(copying: [Float(receiver)])],
            timings: WorkerTimings(forwardSeconds: 0.25, backwardSeconds: 0.5, packSeconds: 0, totalSeconds: 1))))
    }

    func testThreeMeshesExchangeEnvelopesWithTensorsAndKnowEachSender() throws {
        // 256 starts with a zero byte little-endian, which libzmq refuses as a routing id by itself.
        let all = try [0, 7, 256].map { try mesh($0) }
        for mesh in all { try mesh.setPeers(all.map { address($0) }) }
        XCTAssertEqual(all[0].peers.map(\.workerID), [7, 256], "a worker is not its own peer")
        for sender in all {
            for receiver in all where receiver !== sender {
                try sender.send(envelope(from: sender.selfID, to: receiver.selfID), to: receiver.selfID)
            }
        }
        for receiver in all {
            let received = try receive(receiver, count: 2)
            XCTAssertEqual(Set(received.map(\.sender)), Set(all.map(\.selfID)).subtracting([receiver.selfID]))
            for incoming in received {
                XCTAssertEqual(try incoming.result.get(), envelope(from: incoming.sender, to: receiver.selfID))
            }
            XCTAssertEqual(receiver.droppedMessages, 0)
        }
        XCTAssertEqual(all.map(\.bytesSent).reduce(0, +), all.map(\.bytesReceived).reduce(0, +))
        XCTAssertGreaterThan(all[0].bytesSent, 2 * 777 * 4)
        XCTAssertThrowsError(try all[0].send(envelope(from: 0, to: 9), to: 9)) { error in
            XCTAssertTrue(String(describing: error).contains("worker 9 is not a peer of worker 0"), String(describing: error))
        }
    }

    func testMalformedAndOversizedMessagesComeBackAsFailuresFromTheirSender() throws {
        var limits = DecodeLimits.default
        limits.maxTensorValues = 100
        let strict = try mesh(1, limits: limits)
        let sender = try mesh(2)
        try strict.setPeers([address(sender)])
        try sender.setPeers([address(strict)])
        try sender.send(envelope(from: 2, to: 1), to: 1)
        let incoming = try XCTUnwrap(receive(strict, count: 1).first)
        XCTAssertEqual(incoming.sender, 2)
        guard case .failure(let error) = incoming.result else { return XCTFail("777 floats passed a limit of 100") }
        XCTAssertTrue(String(describing: error).contains("100"), String(describing: error))
    }

    func testRemovingAPeerStopsItsMessages() throws {
        let first = try mesh(1), second = try mesh(2)
        try first.setPeers([address(second)])
        try second.setPeers([address(first)])
        try second.send(envelope(from: 2, to: 1), to: 1)
        XCTAssertEqual(try receive(first, count: 1).map(\.sender), [2])
        try first.setPeers([])
        XCTAssertThrowsError(try first.send(envelope(from: 1, to: 2), to: 2))
        try second.send(envelope(from: 2, to: 1), to: 1)
        XCTAssertEqual(try receive(first, count: 1, within: 500).count, 0, "a departed peer's message got through")
        XCTAssertEqual(first.droppedMessages, 1)
        try first.setPeers([address(second)])
        try second.send(envelope(from: 2, to: 1), to: 1)
        XCTAssertEqual(try receive(first, count: 1).map(\.sender), [2], "a peer listed again is heard again")
    }

    func testCurvePeersTalkAndAKeyNotOnTheListGetsNothingThrough() throws {
        let keysA = try CurveKeys.generatePair(), keysB = try CurveKeys.generatePair(), keysS = try CurveKeys.generatePair()
        let a = try mesh(1, keys: keysA), b = try mesh(2, keys: keysB), stranger = try mesh(3, keys: keysS)
        try a.setPeers([address(b, key: keysB.publicKey)])
        // a's first connection reaches b before b lists a, and is refused; the send still goes.
        Thread.sleep(forTimeInterval: 0.2)
        XCTAssertEqual(try a.handshakeFailures().map(\.event.kind), [.handshakeFailedAuth])
        try b.setPeers([address(a, key: keysA.publicKey)])
        // The stranger knows a's address and key, but a does not list it.
        try stranger.setPeers([address(a, key: keysA.publicKey)])
        try a.send(envelope(from: 1, to: 2), to: 2)
        try b.send(envelope(from: 2, to: 1), to: 1)
        XCTAssertThrowsError(try stranger.send(envelope(from: 3, to: 1), to: 1)) { error in
            XCTAssertTrue(String(describing: error).contains("no connection to it was ready"), String(describing: error))
        }
        XCTAssertEqual(try receive(b, count: 1).map { try $0.result.get() }, [envelope(from: 1, to: 2)])
        XCTAssertEqual(try receive(a, count: 2, within: 1000).map(\.sender), [2], "only the listed peer gets through")
        XCTAssertEqual(a.droppedMessages, 0, "the stranger's message never reached the listener")
        let refusals = a.newRefusals()
        XCTAssertEqual(refusals.map(\.publicKey), [keysS.publicKey])
        XCTAssertTrue(refusals.first?.address.contains("127.0.0.1") == true, "\(refusals)")
        XCTAssertEqual(a.newRefusals(), [], "each refused client is reported once")
        let failures = try stranger.handshakeFailures()
        XCTAssertEqual(failures.count, 1, "one report, though the send tried again: \(failures)")
        let failure = try XCTUnwrap(failures.first, "the refused side sees its handshake fail")
        XCTAssertEqual(failure.event.kind, .handshakeFailedAuth)
        XCTAssertTrue(failure.description.contains("worker 1") && failure.description.contains("refused this worker's CURVE key"),
                      failure.description)
    }

    func testPeersOnThisHostMeetAtTheLocalListenerUnderTheSameChecks() throws {
        try XCTSkipIf(HostIdentity.current == nil, "no host identity here (not Linux, or no /proc): meshes bind no local listener")
        let keysA = try CurveKeys.generatePair(), keysB = try CurveKeys.generatePair(), keysS = try CurveKeys.generatePair()
        let a = try mesh(1, keys: keysA), b = try mesh(2, keys: keysB), stranger = try mesh(3, keys: keysS)
        func local(_ mesh: PeerMesh, key: String, host: String? = HostIdentity.current) -> PeerAddress {
            PeerAddress(workerID: mesh.selfID, endpoint: mesh.endpoint, publicKey: key, localEndpoint: mesh.localEndpoint, host: host)
        }
        XCTAssertTrue(a.localEndpoint?.hasPrefix(PeerMesh.localEndpointPrefix) == true, "\(String(describing: a.localEndpoint))")
        XCTAssertNotEqual(a.localEndpoint, b.localEndpoint)
        XCTAssertEqual(a.host, HostIdentity.current)
        try a.setPeers([local(b, key: keysB.publicKey)])
        try b.setPeers([local(a, key: keysA.publicKey)])
        try stranger.setPeers([local(a, key: keysA.publicKey)])
        XCTAssertEqual(a.linkEndpoint(to: 2), b.localEndpoint)
        XCTAssertEqual(stranger.linkEndpoint(to: 1), a.localEndpoint)
        try a.send(envelope(from: 1, to: 2), to: 2)
        try b.send(envelope(from: 2, to: 1), to: 1)
        XCTAssertThrowsError(try stranger.send(envelope(from: 3, to: 1), to: 1), "CURVE's allow-list holds on the local listener too")
        XCTAssertEqual(try receive(b, count: 1).map { try $0.result.get() }, [envelope(from: 1, to: 2)])
        XCTAssertEqual(try receive(a, count: 2, within: 1000).map(\.sender), [2], "only the listed peer gets through")
        XCTAssertEqual(a.newRefusals().map(\.publicKey), [keysS.publicKey])
        // The stranger is told which endpoint turned it away: the local one its link uses.
        let failures = try stranger.handshakeFailures()
        XCTAssertEqual(failures.map(\.event.kind), [.handshakeFailedAuth])
        XCTAssertTrue(failures.allSatisfy { $0.description.hasPrefix("worker 1 at \(a.localEndpoint!) refused") },
                      failures.map(\.description).joined(separator: "\n"))

        // From another host (or network namespace, which cannot see the socket) the same peer is
        // reached over the network.
        let keysC = try CurveKeys.generatePair()
        let c = try mesh(4, keys: keysC)
        try b.setPeers([local(a, key: keysA.publicKey), local(c, key: keysC.publicKey)])
        try c.setPeers([local(b, key: keysB.publicKey, host: "another-host/net:1")])
        XCTAssertEqual(c.linkEndpoint(to: 2), b.endpoint)
        try c.send(envelope(from: 4, to: 2), to: 2)
        XCTAssertEqual(try receive(b, count: 1).map { try $0.result.get() }, [envelope(from: 4, to: 2)])
    }

    func testAMeshWithoutSameHostLinksBindsOnlyItsNetworkEndpoint() throws {
        let mesh = try PeerMesh(selfID: 1, bind: "tcp://127.0.0.1:0", security: nil, sameHostLinks: false)
        meshes.append(mesh)
        XCTAssertNil(mesh.localEndpoint)
        XCTAssertNil(mesh.host)
    }

    func testCurvePeerClaimingAnotherWorkersIDIsDroppedAndADepartedKeyIsNotHeard() throws {
        let keysA = try CurveKeys.generatePair(), keysB = try CurveKeys.generatePair(), keysC = try CurveKeys.generatePair()
        let a = try mesh(1, keys: keysA), c = try mesh(3, keys: keysC)
        try a.setPeers([PeerAddress(workerID: 2, endpoint: "tcp://127.0.0.1:1", publicKey: keysB.publicKey), address(c, key: keysC.publicKey)])
        try c.setPeers([address(a, key: keysA.publicKey)])
        // A client with c's key (admitted) presenting worker 2's routing id.
        let context = try ZMQContext()
        defer { context.close() }
        let impostor = try ZMQSocket(context: context, kind: .dealer)
        defer { impostor.close() }
        try impostor.setLinger(milliseconds: 0)
        try impostor.setRoutingID(PeerMesh.routingID(workerID: 2))
        try impostor.enableCurveClient(serverPublicKey: keysA.publicKey, publicKey: keysC.publicKey, secretKey: keysC.secretKey)
        try impostor.connect(a.endpoint)
        try impostor.send(WireCodec.encode(envelope(from: 2, to: 1)))
        try c.send(envelope(from: 3, to: 1), to: 1)
        XCTAssertEqual(try receive(a, count: 2, within: 1000).map(\.sender), [3], "only c's own message counts")
        XCTAssertEqual(a.droppedMessages, 1, "the message claiming worker 2 was dropped")
        // c departs; its connection is still open, but what comes over it is no longer heard.
        try a.setPeers([PeerAddress(workerID: 2, endpoint: "tcp://127.0.0.1:1", publicKey: keysB.publicKey)])
        try c.send(envelope(from: 3, to: 1), to: 1)
        XCTAssertEqual(try receive(a, count: 1, within: 500).count, 0)
        XCTAssertEqual(a.droppedMessages, 2)
    }

    func testAPlainWorkerMeetingACurvePeerIsToldWhy() throws {
        let keys = try CurveKeys.generatePair()
        let plain = try mesh(1), curved = try mesh(2, keys: keys)
        try plain.setPeers([address(curved)])
        // The CURVE side first just closes the connection; a retry says exactly why.
        var failures: [PeerHandshakeFailure] = []
        let deadline = Date(timeIntervalSinceNow: 3)
        while !failures.contains(where: { $0.event.kind == .handshakeFailedProtocol }), Date() < deadline {
            XCTAssertThrowsError(try plain.send(envelope(from: 1, to: 2), to: 2))
            failures += try plain.handshakeFailures()
        }
        XCTAssertTrue(failures.allSatisfy { $0.description.contains("uses CURVE") && $0.description.contains("this worker does not") },
                      "\(failures)")
        let failure = try XCTUnwrap(failures.first { $0.event.kind == .handshakeFailedProtocol }, "\(failures)")
        XCTAssertTrue(failure.description.contains("security mechanism mismatch"), failure.description)
    }

    func testPeerListsAreCheckedAgainstTheMeshsSecurity() throws {
        let plain = try mesh(1)
        let keys = try CurveKeys.generatePair()
        let curved = try mesh(2, keys: keys)
        let describe = { (body: () throws -> Void) -> String in
            do { try body(); return "no error" } catch { return String(describing: error) }
        }
        XCTAssertTrue(describe { try plain.setPeers([PeerAddress(workerID: 2, endpoint: curved.endpoint, publicKey: keys.publicKey)]) }
            .contains("runs without CURVE"))
        XCTAssertTrue(describe { try curved.setPeers([address(plain)]) }.contains("has no public key"))
        XCTAssertTrue(describe { try curved.setPeers([PeerAddress(workerID: 1, endpoint: plain.endpoint, publicKey: "short")]) }
            .contains("public key of worker 1"))
        XCTAssertTrue(describe { try plain.setPeers([address(curved), address(curved)]) }.contains("worker 2 is listed twice"))
        XCTAssertTrue(describe { try plain.setPeers([PeerAddress(workerID: 5, endpoint: "nonsense")]) }.contains("nonsense"))
        XCTAssertEqual(plain.peers, [], "a refused list leaves the peers as they were")
        XCTAssertThrowsError(try PeerMeshSecurity(publicKey: keys.publicKey, secretKey: "nope"))
    }

    func testBindAddressIsThisHostsAddressTowardTheCoordinator() throws {
        XCTAssertEqual(try PeerMesh.bindAddress(reaching: "tcp://127.0.0.1:5555"), "tcp://127.0.0.1:0")
        XCTAssertEqual(try PeerMesh.bindAddress(reaching: "tcp://localhost:1"), "tcp://127.0.0.1:0")
        XCTAssertThrowsError(try PeerMesh.bindAddress(reaching: "ipc://x")) { error in
            XCTAssertTrue(String(describing: error).contains("tcp://HOST:PORT"), String(describing: error))
        }
        XCTAssertThrowsError(try PeerMesh.bindAddress(reaching: "tcp://127.0.0.1")) { error in
            XCTAssertTrue(String(describing: error).contains("expected tcp://HOST:PORT"), String(describing: error))
        }
        XCTAssertThrowsError(try PeerMesh.bindAddress(reaching: "tcp://no-such-host.invalid:5555")) { error in
            XCTAssertTrue(String(describing: error).contains("cannot resolve"), String(describing: error))
        }
        // The address it gives is one this host can bind.
        let listener = try PeerMesh(selfID: 1, bind: PeerMesh.bindAddress(reaching: "tcp://localhost:1"), security: nil)
        defer { listener.close() }
        XCTAssertTrue(listener.endpoint.hasPrefix("tcp://127.0.0.1:") && !listener.endpoint.hasSuffix(":0"), listener.endpoint)
    }

    func testInMemoryPeersRoundTripThroughTheCodecAndObeyThePeerList() throws {
        let hub = InMemoryPeerHub()
        var limits = DecodeLimits.default
        limits.maxTensorValues = 100
        let zero = try hub.transport(workerID: 0), one = try hub.transport(workerID: 1), strict = try hub.transport(workerID: 2, limits: limits)
        XCTAssertThrowsError(try hub.transport(workerID: 1))
        let addresses = [zero, one, strict].map { PeerAddress(workerID: $0.workerID, endpoint: $0.endpoint) }
        try zero.setPeers(addresses)
        try one.setPeers([addresses[0]])
        try strict.setPeers(addresses)
        try zero.send(envelope(from: 0, to: 1), to: 1)
        let incoming = try XCTUnwrap(one.receive(timeoutMilliseconds: 1000))
        XCTAssertEqual(incoming.sender, 0)
        XCTAssertEqual(try incoming.result.get(), envelope(from: 0, to: 1))
        XCTAssertEqual(zero.bytesSent, one.bytesReceived)
        try zero.send(envelope(from: 0, to: 2), to: 2)
        guard case .failure = try XCTUnwrap(strict.receive(timeoutMilliseconds: 1000)).result else {
            return XCTFail("the receiver's limits did not apply")
        }
        XCTAssertThrowsError(try one.send(envelope(from: 1, to: 2), to: 2), "2 is not one of 1's peers")
        try strict.send(envelope(from: 2, to: 1), to: 1)
        XCTAssertNil(try one.receive(timeoutMilliseconds: 0), "1 does not listen to 2")
        XCTAssertEqual(one.droppedMessages, 1)
        one.close()
        XCTAssertThrowsError(try zero.send(envelope(from: 0, to: 1), to: 1), "a closed transport has left the hub")
    }
}
