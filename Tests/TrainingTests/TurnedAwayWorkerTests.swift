import Foundation
import PeerSecurity
import TestSupport
import Wire
import XCTest

/// A worker the coordinator's handshake turns away (key not authorised, keys on one side only)
/// says once why and how to fix it, and gives up at its join timeout with the same cause.
final class TurnedAwayWorkerTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = try LocalCluster.temporaryDirectory("turned-away")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    // MARK: What the events mean

    private func security() throws -> WorkerSecurity {
        let worker = try KeyFiles.generate(directory: folder + "/worker", name: "worker")
        let server = try KeyFiles.generate(directory: folder + "/coordinator", name: "coordinator")
        return try WorkerSecurity.load(keyFile: worker.secretKeyPath, serverPublicKeyFile: server.publicKeyPath)
    }

    private let endpoint = "tcp://10.0.0.1:5555"

    private func event(_ kind: SocketEvent.Kind, _ value: UInt32) -> SocketEvent {
        SocketEvent(kind: kind, value: value, endpoint: endpoint)
    }

    func testARefusedKeyNamesTheKeyFileToAuthorise() throws {
        let keys = try security()
        let text = try XCTUnwrap(HandshakeRefusal.explain(event(.handshakeFailedAuth, 400), coordinator: endpoint, security: keys)).description
        for part in [endpoint, "refused this worker's key", keys.keyPair.publicKey, folder + "/worker/worker.key", "--authorized-keys"] {
            XCTAssertTrue(text.contains(part), "'\(part)' missing: \(text)")
        }
    }

    func testAMechanismMismatchIsExplainedByWhichSideHasKeys() throws {
        let keys = try security()
        let mismatch = event(.handshakeFailedProtocol, ProtocolError.mechanismMismatch)
        let withoutKeys = try XCTUnwrap(HandshakeRefusal.explain(mismatch, coordinator: endpoint, security: nil)).description
        XCTAssertTrue(withoutKeys.contains("requires keys and this worker has none"), withoutKeys)
        XCTAssertTrue(withoutKeys.contains("--curve-key") && withoutKeys.contains("--server-public-key") && withoutKeys.contains("cnn keygen"), withoutKeys)
        let withKeys = try XCTUnwrap(HandshakeRefusal.explain(mismatch, coordinator: endpoint, security: keys)).description
        XCTAssertTrue(withKeys.contains("does not use CURVE, but this worker does"), withKeys)
        XCTAssertTrue(withKeys.contains("without --curve-key") && withKeys.contains("--curve-secret-key"), withKeys)
        XCTAssertNil(HandshakeRefusal.explain(event(.connectRetried, 100), coordinator: endpoint, security: keys))
    }

    func testAVagueFailureIsToldOnlyWhenNothingPreciseFollowsAndEachCauseOnce() throws {
        let closed = event(.handshakeFailedNoDetail, UInt32(EPIPE))
        let mismatch = event(.handshakeFailedProtocol, ProtocolError.mechanismMismatch)
        // A closed connection, then the mismatch on the next attempt: only the mismatch is told.
        var log = HandshakeRefusalLog(coordinator: endpoint, security: nil, vagueDelay: 1)
        XCTAssertEqual(log.record([closed], at: 0), [])
        XCTAssertEqual(log.record([mismatch, closed, mismatch], at: 0.2).count, 1)
        XCTAssertEqual(log.record([mismatch], at: 5), [])
        XCTAssertTrue(log.cause?.description.contains("mechanism mismatch") == true)
        // Only closed connections: told once, after the delay.
        var vague = HandshakeRefusalLog(coordinator: endpoint, security: try security(), vagueDelay: 1)
        XCTAssertEqual(vague.record([closed], at: 0), [])
        XCTAssertEqual(vague.record([closed], at: 0.5), [])
        XCTAssertEqual(vague.record([closed], at: 1.1).count, 1)
        XCTAssertEqual(vague.record([closed, closed], at: 3), [])
        XCTAssertTrue(vague.cause?.description.contains("--server-public-key") == true)
        XCTAssertNil(HandshakeRefusalLog(coordinator: endpoint, security: nil).cause)
    }

    // MARK: The real programs

    private func configPath() throws -> String {
        try LocalCluster.writeTinyConfig(in: folder, more: """
            distributed:
              join_timeout: 120
            """)
    }

    private func keygen(_ name: String) throws -> (secret: String, public: String) {
        let outcome = try LocalCluster.run("cnn", ["keygen", "--out", folder + "/keys", "--name", name], seconds: 20)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        return (folder + "/keys/\(name).key_secret", folder + "/keys/\(name).key")
    }

    /// The lines of `text` that contain `part`.
    private func lines(_ text: String, containing part: String) -> [Substring] {
        text.split(separator: "\n").filter { $0.contains(part) }
    }

    func testTurnedAwayWorkersSayTheCauseAndTheFixOnceAndExitAtTheirJoinTimeout() throws {
        let coordinatorKeys = try keygen("coordinator")
        let listed = try keygen("listed")
        let unlisted = try keygen("unlisted")
        let authorised = folder + "/authorised"
        try FileManager.default.createDirectory(atPath: authorised, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: listed.public, toPath: authorised + "/listed.key")
        let config = try configPath()
        let keyed = try LocalCluster.Child("cnn-coord", [
            "--config", config, "--curve-secret-key", coordinatorKeys.secret, "--authorized-keys", authorised,
            "--bind", "tcp://127.0.0.1:0", "--workers", "1", "--steps", "1", "--run-dir", folder + "/keyed"])
        let plain = try LocalCluster.Child("cnn-coord", [
            "--config", config, "--bind", "tcp://127.0.0.1:0", "--workers", "1", "--steps", "1", "--run-dir", folder + "/plain"])
        defer {
            keyed.signal(SIGKILL)
            plain.signal(SIGKILL)
            _ = keyed.wait(seconds: 10)
            _ = plain.wait(seconds: 10)
        }
        let keyedEndpoint = try FuzzCoordinatorTests.endpoint(fromRunDirectory: folder + "/keyed", coordinator: keyed)
        let plainEndpoint = try FuzzCoordinatorTests.endpoint(fromRunDirectory: folder + "/plain", coordinator: plain)
        let unlistedKey = try KeyFiles.readPublicKey(path: unlisted.public)

        // Each case: the worker's arguments, a phrase of its cause, and parts of the fix.
        let cases: [(name: String, arguments: [String], cause: String, fix: [String])] = [
            ("unlisted", ["--connect", keyedEndpoint, "--curve-key", unlisted.secret, "--server-public-key", coordinatorKeys.public],
             "refused this worker's key \(unlistedKey) (CURVE authentication failed)", [unlisted.public, "--authorized-keys"]),
            ("keyless", ["--connect", keyedEndpoint],
             "requires keys and this worker has none", ["--curve-key", "--server-public-key", "cnn keygen"]),
            ("keyed", ["--connect", plainEndpoint, "--curve-key", listed.secret, "--server-public-key", coordinatorKeys.public],
             "does not use CURVE, but this worker does", ["without --curve-key", "--curve-secret-key"]),
        ]
        let workers = try cases.map { try LocalCluster.Child("cnn-worker", $0.arguments + ["--name", $0.name, "--join-timeout", "3"]) }
        for (item, worker) in zip(cases, workers) {
            let outcome = worker.wait(seconds: 30)
            XCTAssertFalse(outcome.timedOut, "\(item.name) kept waiting")
            XCTAssertEqual(outcome.status, 1, "\(item.name): \(outcome.combined)")
            let endpoint = item.name == "keyed" ? plainEndpoint : keyedEndpoint
            let warnings = lines(outcome.error, containing: "warning:")
            XCTAssertEqual(warnings.count, 1, "\(item.name) must warn once, and of nothing else:\n\(outcome.error)")
            XCTAssertEqual(lines(outcome.error, containing: item.cause).count, 2, "\(item.name): once as a warning, once in the final error:\n\(outcome.error)")
            let final = try XCTUnwrap(lines(outcome.error, containing: "error: could not join the coordinator at \(endpoint) within 3 s").first,
                                      "\(item.name) must end with the cause:\n\(outcome.error)")
            for part in item.fix + [item.cause] {
                XCTAssertTrue(warnings.first?.contains(part) == true && final.contains(part), "\(item.name): '\(part)' missing:\n\(outcome.error)")
            }
            XCTAssertFalse(outcome.error.contains("could not send hello"), "\(item.name):\n\(outcome.error)")
        }
    }

    /// libzmq never retries a connection whose handshake was refused: the worker opens fresh ones,
    /// so once the coordinator is put right (here: restarted with the worker's key authorised) it
    /// joins within its join timeout instead of waiting it out.
    func testARefusedWorkerJoinsACoordinatorRestartedWithItsKeyAuthorised() throws {
        let coordinatorKeys = try keygen("coordinator")
        let late = try keygen("late")
        let other = try keygen("other")
        let authorised = folder + "/authorised"
        try FileManager.default.createDirectory(atPath: authorised, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: other.public, toPath: authorised + "/other.key")
        let config = try configPath()
        func coordinator(bind: String, run: String) throws -> LocalCluster.Child {
            try LocalCluster.Child("cnn-coord", [
                "--config", config, "--curve-secret-key", coordinatorKeys.secret, "--authorized-keys", authorised,
                "--bind", bind, "--workers", "1", "--steps", "1", "--run-dir", folder + "/" + run])
        }
        let first = try coordinator(bind: "tcp://127.0.0.1:0", run: "first")
        defer { first.signal(SIGKILL); _ = first.wait(seconds: 10) }
        let endpoint = try FuzzCoordinatorTests.endpoint(fromRunDirectory: folder + "/first", coordinator: first)
        let worker = try LocalCluster.Child("cnn-worker", [
            "--connect", endpoint, "--curve-key", late.secret, "--server-public-key", coordinatorKeys.public,
            "--name", "late", "--join-timeout", "60"])
        defer { worker.signal(SIGKILL); _ = worker.wait(seconds: 10) }
        let refusedBy = Date().addingTimeInterval(20)
        while Date() < refusedBy, !worker.error.contains("refused this worker's key") { usleep(20_000) }
        XCTAssertTrue(worker.error.contains("refused this worker's key"), worker.error)

        first.signal(SIGKILL)
        _ = first.wait(seconds: 10)
        try FileManager.default.copyItem(atPath: late.public, toPath: authorised + "/late.key")
        let second = try coordinator(bind: endpoint, run: "second")
        let outcome = second.wait(seconds: 40)
        XCTAssertEqual(outcome.status, 0, "the restarted coordinator must train with the late worker:\n\(outcome.combined)")
        let served = worker.wait(seconds: 20)
        XCTAssertEqual(served.status, 0, served.combined)
        XCTAssertTrue(served.error.contains("joined as w0"), served.error)
    }

    func testAMissingWorkerKeyFileSuggestsKeygen() throws {
        let coordinatorKeys = try keygen("coordinator")
        let outcome = try LocalCluster.run("cnn-worker", [
            "--connect", "tcp://127.0.0.1:9", "--curve-key", folder + "/keys/missing.key_secret",
            "--server-public-key", coordinatorKeys.public, "--join-timeout", "1"], seconds: 20)
        XCTAssertEqual(outcome.status, 2, outcome.combined)
        for part in [folder + "/keys/missing.key_secret", "No such file or directory", "cnn keygen --out DIR --name NAME"] {
            XCTAssertTrue(outcome.error.contains(part), "'\(part)' missing: \(outcome.error)")
        }
    }
}
