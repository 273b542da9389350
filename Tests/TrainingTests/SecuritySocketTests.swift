import Foundation
import PeerSecurity
import TestSupport
import Training
import Wire
import XCTest

/// `CoordinatorSecurity` and `WorkerSecurity` on real sockets: who gets through, and what the
/// coordinator learns about who did not.
final class SecuritySocketTests: XCTestCase {
    private var folder = ""
    private var context: ZMQContext!
    private var sockets: [ZMQSocket] = []
    private var gates: [CurveGate] = []

    override func setUpWithError() throws {
        folder = try LocalCluster.temporaryDirectory("curve")
        context = try ZMQContext()
    }

    override func tearDown() {
        sockets.forEach { $0.close() }
        // The ZAP handler's socket lives in the context: stop it before closing the context.
        gates.forEach { $0.stop() }
        context.close()
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func socket(_ kind: SocketKind) throws -> ZMQSocket {
        let socket = try ZMQSocket(context: context, kind: kind)
        try socket.setLinger(milliseconds: 0)
        sockets.append(socket)
        return socket
    }

    /// A coordinator key pair and an authorised folder holding the named workers' public keys.
    private func coordinator(authorising names: [String]) throws -> (CoordinatorSecurity, [String: String]) {
        let server = try KeyFiles.generate(directory: folder + "/coordinator", name: "coordinator")
        var secretFiles: [String: String] = [:]
        for name in names + ["stranger"] {
            secretFiles[name] = try KeyFiles.generate(directory: folder + "/\(name)", name: name).secretKeyPath
        }
        let authorised = folder + "/authorised"
        try FileManager.default.createDirectory(atPath: authorised, withIntermediateDirectories: false)
        for name in names {
            try FileManager.default.copyItem(atPath: folder + "/\(name)/\(name).key", toPath: authorised + "/\(name).key")
        }
        secretFiles["coordinator.key"] = server.publicKeyPath
        return (try CoordinatorSecurity.load(secretKeyFile: server.secretKeyPath, authorizedKeysDirectory: authorised), secretFiles)
    }

    private func server(_ security: CoordinatorSecurity) throws -> (MessageSocket, CurveGate, String) {
        let router = try socket(.router)
        let gate = try security.apply(to: router, context: context)
        gates.append(gate)
        let endpoint = try router.bind("tcp://127.0.0.1:0")
        return (MessageSocket(socket: router), gate, endpoint)
    }

    private func client(_ security: WorkerSecurity?, endpoint: String) throws -> MessageSocket {
        let dealer = try socket(.dealer)
        try security?.apply(to: dealer)
        try dealer.connect(endpoint)
        return MessageSocket(socket: dealer)
    }

    private let hello = Envelope(runID: 0, step: 0, message: .hello(Hello(name: "w", threads: 1, processID: 1, hostName: "h", coreType: "c")))

    func testAnAuthorisedWorkerIsHeardAndAnswered() throws {
        let (security, files) = try coordinator(authorising: ["worker-1"])
        let (router, gate, endpoint) = try server(security)
        let worker = try WorkerSecurity.load(keyFile: files["worker-1"]!, serverPublicKeyFile: files["coordinator.key"]!)
        let dealer = try client(worker, endpoint: endpoint)
        try dealer.send(hello)
        let incoming = try XCTUnwrap(try router.receive(timeoutMilliseconds: 5000), "the authorised worker was not heard")
        XCTAssertEqual(try incoming.result.get(), hello)
        try router.send(Envelope(runID: 9, step: 0, message: .bye(Bye(reason: "done"))), to: incoming.peer)
        XCTAssertEqual(try XCTUnwrap(try dealer.receive(timeoutMilliseconds: 5000)).result.get().runID, 9)
        XCTAssertEqual(gate.newRefusals(), [])
    }

    func testAnUnlistedWorkerIsNotHeardAndItsRefusalIsReportedOnce() throws {
        let (security, files) = try coordinator(authorising: ["worker-1"])
        let (router, gate, endpoint) = try server(security)
        let stranger = try WorkerSecurity.load(keyFile: files["stranger"]!, serverPublicKeyFile: files["coordinator.key"]!)
        let dealer = try client(stranger, endpoint: endpoint)
        try dealer.send(hello)
        XCTAssertNil(try router.receive(timeoutMilliseconds: 700), "a worker whose key is not authorised must not get through")
        let refusals = gate.newRefusals()
        XCTAssertEqual(refusals.map(\.publicKey), [stranger.keyPair.publicKey])
        XCTAssertTrue(refusals.first?.address.contains("127.0.0.1") == true, "\(refusals)")
        // The same worker trying again is named once in the log, not on every attempt.
        try client(stranger, endpoint: endpoint).send(hello)
        XCTAssertNil(try router.receive(timeoutMilliseconds: 500))
        XCTAssertGreaterThanOrEqual(gate.authenticator.refusals.count, 2, "the second attempt was refused too")
        XCTAssertEqual(gate.newRefusals(), [])
        let line = CurveGate.describe(refusals[0], authorizedKeysDirectory: security.authorizedKeysDirectory)
        XCTAssertTrue(line.contains(stranger.keyPair.publicKey) && line.contains(security.authorizedKeysDirectory), line)
    }

    func testAWorkerWithTheWrongServerKeyOrNoKeysIsNotHeard() throws {
        let (security, files) = try coordinator(authorising: ["worker-1"])
        let (router, gate, endpoint) = try server(security)
        // The right worker key, but the public key of some other server.
        let wrongServer = try WorkerSecurity.load(keyFile: files["worker-1"]!, serverPublicKeyFile: folder + "/stranger/stranger.key")
        try client(wrongServer, endpoint: endpoint).send(hello)
        // No keys at all: the handshake cannot even agree on a mechanism.
        try client(nil, endpoint: endpoint).send(hello)
        XCTAssertNil(try router.receive(timeoutMilliseconds: 700), "neither may get through")
        XCTAssertEqual(gate.newRefusals(), [], "neither reaches the authenticator: the handshake fails before it")
    }

    /// The first failed-handshake event a monitored client sees within `seconds`.
    private func firstHandshakeFailure(_ security: WorkerSecurity?, endpoint: String, seconds: Double = 5) throws -> SocketEvent? {
        let dealer = try socket(.dealer)
        try security?.apply(to: dealer)
        let monitor = try SocketMonitor(watching: dealer, events: SocketMonitor.handshakeFailures)
        defer { monitor.close() }
        try dealer.connect(endpoint)
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let event = try monitor.poll().first { return event }
            usleep(10_000)
        }
        return nil
    }

    func testTheClientsMonitorSeesWhyItsHandshakeFailed() throws {
        let (security, files) = try coordinator(authorising: ["worker-1"])
        let (_, _, keyed) = try server(security)
        let plain = try socket(.router).bind("tcp://127.0.0.1:0")
        let stranger = try WorkerSecurity.load(keyFile: files["stranger"]!, serverPublicKeyFile: files["coordinator.key"]!)
        let listed = try WorkerSecurity.load(keyFile: files["worker-1"]!, serverPublicKeyFile: files["coordinator.key"]!)

        let refused = try XCTUnwrap(try firstHandshakeFailure(stranger, endpoint: keyed), "no event for an unlisted key")
        XCTAssertEqual(refused.kind, .handshakeFailedAuth)
        XCTAssertEqual(refused.value, 400, "the ZAP status of a refused key")
        XCTAssertEqual(refused.endpoint, keyed)
        // libzmq may first see the connection close (no detail) before it reports the mismatch.
        for (client, endpoint) in [(nil, keyed), (listed, plain)] as [(WorkerSecurity?, String)] {
            let dealer = try socket(.dealer)
            try client?.apply(to: dealer)
            let monitor = try SocketMonitor(watching: dealer, events: SocketMonitor.handshakeFailures)
            defer { monitor.close() }
            try dealer.connect(endpoint)
            var events: [SocketEvent] = []
            let deadline = Date().addingTimeInterval(5)
            while Date() < deadline, !events.contains(where: { $0.kind == .handshakeFailedProtocol }) {
                events += try monitor.poll()
                usleep(10_000)
            }
            let mismatch = try XCTUnwrap(events.first { $0.kind == .handshakeFailedProtocol }, "no protocol failure: \(events)")
            XCTAssertEqual(mismatch.value, ProtocolError.mechanismMismatch, ProtocolError.name(mismatch.value))
        }
        XCTAssertNil(try firstHandshakeFailure(listed, endpoint: keyed, seconds: 1), "an authorised worker's handshake does not fail")
    }

    func testSpawnedWorkersGetAPrivateKeyAuthorisedForThisRunOnly() throws {
        let (base, _) = try coordinator(authorising: ["worker-1"])
        let (security, credentials) = try base.addingLocalWorkerCredentials()
        defer { credentials.remove() }
        XCTAssertEqual(security.authorizedKeys.count, base.authorizedKeys.count + 1)
        XCTAssertEqual(credentials.workerArguments, ["--curve-key", credentials.secretKeyFile, "--server-public-key", credentials.serverPublicKeyFile])
        let mode = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: credentials.directory)[.posixPermissions] as? Int)
        XCTAssertEqual(mode, 0o700)
        let (router, _, endpoint) = try server(security)
        let local = try WorkerSecurity.load(keyFile: credentials.secretKeyFile, serverPublicKeyFile: credentials.serverPublicKeyFile)
        try client(local, endpoint: endpoint).send(hello)
        XCTAssertNotNil(try router.receive(timeoutMilliseconds: 5000), "the spawned workers' key must be let in")
        credentials.remove()
        XCTAssertFalse(FileManager.default.fileExists(atPath: credentials.directory))
    }
}
