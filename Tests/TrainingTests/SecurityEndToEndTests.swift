import Checkpoint
import Foundation
import PeerSecurity
import TestSupport
import Training
import XCTest

/// CURVE and the bind policy with the real programs: `cnn keygen`, `cnn-coord --curve-secret-key
/// --authorized-keys`, `cnn-worker --curve-key --server-public-key`, `--insecure-bind`.
final class SecurityEndToEndTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = try LocalCluster.temporaryDirectory("secure")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// A small synthetic run: a few steps take well under a second.
    private func configPath(joinTimeout: Double = 20) throws -> String {
        try LocalCluster.write("""
            model:
              input: [1, 8, 8]
              layers:
                - conv: {filters: 4, kernel: 3, padding: 1}
                - relu
                - flatten
                - dense: 10
            data:
              dataset: synthetic
              synthetic_train: 256
              synthetic_test: 64
            train:
              epochs: 1
              batch: 32
              micro_batch: 8
              seed: 3
              eval_batch: 64
            distributed:
              worker_timeout: 5
              heartbeat_interval: 0.5
              join_timeout: \(joinTimeout)
            """, to: "config.yaml", in: folder)
    }

    private func keygen(_ name: String, in directory: String, file: StaticString = #filePath, line: UInt = #line) throws -> (secret: String, public: String) {
        let outcome = try LocalCluster.run("cnn", ["keygen", "--out", directory, "--name", name], seconds: 20)
        XCTAssertEqual(outcome.status, 0, outcome.combined, file: file, line: line)
        return (directory + "/\(name).key_secret", directory + "/\(name).key")
    }

    private func waitFor(_ text: String, in child: LocalCluster.Child, seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if child.error.contains(text) || child.output.contains(text) { return true }
            if !child.process.isRunning { return child.error.contains(text) || child.output.contains(text) }
            usleep(20_000)
        }
        return false
    }

    private func finalModel(_ run: String) throws -> [UInt8] {
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 3).list().last, "no checkpoint in \(run)")
        return Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/model.safetensors")))
    }

    func testKeygenWritesAPrivatePairAndNeverOverwritesIt() throws {
        let keys = folder + "/keys"
        let outcome = try LocalCluster.run("cnn", ["keygen", "--out", keys, "--name", "node-1"], seconds: 20)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        let publicKey = try KeyFiles.readPublicKey(path: keys + "/node-1.key")
        XCTAssertTrue(outcome.output.contains(publicKey), outcome.output)
        XCTAssertEqual(try KeyFiles.readKeyPair(path: keys + "/node-1.key_secret").publicKey, publicKey)
        let mode = { (path: String) in try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int }
        XCTAssertEqual(try mode(keys + "/node-1.key_secret"), 0o600)
        XCTAssertEqual(try mode(keys + "/node-1.key"), 0o644)
        let again = try LocalCluster.run("cnn", ["keygen", "--out", keys, "--name", "node-1"], seconds: 20)
        XCTAssertEqual(again.status, 2, again.combined)
        XCTAssertTrue(again.error.contains("already exists"), again.error)
        XCTAssertEqual(try KeyFiles.readPublicKey(path: keys + "/node-1.key"), publicKey, "the pair must be untouched")
    }

    func testOnlyAnAuthorisedWorkerWithTheRightServerKeyJoinsAndRefusalsAreLogged() throws {
        let keys = folder + "/keys"
        let coordinatorKeys = try keygen("coordinator", in: keys)
        let good = try keygen("good", in: keys)
        let stranger = try keygen("stranger", in: keys)
        let authorised = folder + "/authorised"
        try FileManager.default.createDirectory(atPath: authorised, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: good.public, toPath: authorised + "/good.key")
        let strangerKey = try KeyFiles.readPublicKey(path: stranger.public)

        let run = folder + "/run"
        let coordinator = try LocalCluster.Child("cnn-coord", [
            "--config", try configPath(), "--curve-secret-key", coordinatorKeys.secret, "--authorized-keys", authorised,
            "--bind", "tcp://127.0.0.1:0", "--workers", "1", "--steps", "3", "--run-dir", run])
        let endpoint = try FuzzCoordinatorTests.endpoint(fromRunDirectory: run, coordinator: coordinator)
        // Not on the list, and the right key pair aimed at the wrong server key: neither can join.
        let unlisted = try LocalCluster.Child("cnn-worker", [
            "--connect", endpoint, "--curve-key", stranger.secret, "--server-public-key", coordinatorKeys.public,
            "--name", "unlisted", "--join-timeout", "3"])
        let wrongServer = try LocalCluster.Child("cnn-worker", [
            "--connect", endpoint, "--curve-key", good.secret, "--server-public-key", stranger.public,
            "--name", "wrong-server", "--join-timeout", "3"])
        XCTAssertTrue(waitFor(strangerKey, in: coordinator, seconds: 20), "the coordinator did not log the refused key:\n\(coordinator.error)")
        for (name, worker) in [("unlisted", unlisted), ("wrong-server", wrongServer)] {
            let outcome = worker.wait(seconds: 30)
            XCTAssertFalse(outcome.timedOut, "\(name) kept waiting")
            XCTAssertEqual(outcome.status, 1, "\(name): \(outcome.combined)")
            XCTAssertFalse(outcome.combined.contains("joined as"), "\(name) joined: \(outcome.combined)")
            // Each names the file to fix: the unlisted worker's key for the folder, or the server key.
            let fix = name == "unlisted" ? "--authorized-keys" : "--server-public-key"
            XCTAssertTrue(outcome.error.contains(fix), "\(name) must say what to check: \(outcome.error)")
        }
        let worker = try LocalCluster.Child("cnn-worker", [
            "--connect", endpoint, "--curve-key", good.secret, "--server-public-key", coordinatorKeys.public, "--name", "good"])
        let outcome = coordinator.wait(seconds: 60)
        _ = worker.wait(seconds: 20)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("CURVE on"), outcome.error)
        XCTAssertTrue(outcome.error.contains("(good) joined"), outcome.error)
        XCTAssertFalse(outcome.error.contains("(unlisted) joined"), outcome.error)
        XCTAssertFalse(outcome.error.contains("(wrong-server) joined"), outcome.error)
        let lines = outcome.error.split(separator: "\n")
        let refusal = try XCTUnwrap(lines.first(where: { $0.contains(strangerKey) }), "no log line names the refused key")
        XCTAssertTrue(refusal.contains("refused") && refusal.contains("127.0.0.1") && refusal.contains(authorised), String(refusal))
        XCTAssertEqual(CheckpointStore(runDirectory: run, keep: 3).list().last.map { ($0 as NSString).lastPathComponent }, "step-00000003")
    }

    /// Under the sharded reduction workers talk to each other too: with keys, each listens as a
    /// CURVE server that admits only the plan's members, each connects with its own key pair.
    func testShardedWorkersWithTheirOwnKeysTrainToTheSameBitsAsPlainOnes() throws {
        let keys = folder + "/keys"
        let coordinatorKeys = try keygen("coordinator", in: keys)
        let authorised = folder + "/authorised"
        try FileManager.default.createDirectory(atPath: authorised, withIntermediateDirectories: false)
        let workerKeys = try ["w1", "w2"].map { name in
            let pair = try keygen(name, in: keys)
            try FileManager.default.copyItem(atPath: pair.public, toPath: authorised + "/\(name).key")
            return pair
        }
        let config = try configPath()
        let run = folder + "/secured"
        let coordinator = try LocalCluster.Child("cnn-coord", [
            "--config", config, "--curve-secret-key", coordinatorKeys.secret, "--authorized-keys", authorised, "--reduction", "sharded",
            "--bind", "tcp://127.0.0.1:0", "--workers", "2", "--steps", "4", "--run-dir", run])
        let endpoint = try FuzzCoordinatorTests.endpoint(fromRunDirectory: run, coordinator: coordinator)
        let workers = try workerKeys.enumerated().map { index, pair in
            try LocalCluster.Child("cnn-worker", ["--connect", endpoint, "--curve-key", pair.secret, "--server-public-key",
                                                  coordinatorKeys.public, "--name", "w\(index + 1)"])
        }
        defer { workers.forEach { $0.signal(SIGKILL) } }
        let outcome = coordinator.wait(seconds: 60)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("sharded plan 1: 2 member(s)"), outcome.error)
        let plain = try LocalCluster.run("cnn-coord", ["--config", config, "--spawn-workers", "2", "--steps", "4", "--reduction", "sharded",
                                                       "--run-dir", folder + "/plain"], seconds: 60)
        XCTAssertEqual(plain.status, 0, plain.combined)
        let spawned = try LocalCluster.run("cnn-coord", [
            "--config", config, "--curve-secret-key", coordinatorKeys.secret, "--authorized-keys", authorised, "--reduction", "sharded",
            "--spawn-workers", "3", "--steps", "4", "--run-dir", folder + "/spawned"], seconds: 60)
        XCTAssertEqual(spawned.status, 0, spawned.combined)
        XCTAssertEqual(try finalModel(run), try finalModel(folder + "/plain"))
        XCTAssertEqual(try finalModel(folder + "/spawned"), try finalModel(folder + "/plain"))
    }

    func testSpawnedWorkersTrainUnderCurveToTheSameBitsAsWithoutIt() throws {
        let keys = folder + "/keys"
        let coordinatorKeys = try keygen("coordinator", in: keys)
        let worker = try keygen("worker", in: keys)
        let authorised = folder + "/authorised"
        try FileManager.default.createDirectory(atPath: authorised, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: worker.public, toPath: authorised + "/worker.key")
        let config = try configPath()
        let secured = try LocalCluster.run("cnn-coord", [
            "--config", config, "--curve-secret-key", coordinatorKeys.secret, "--authorized-keys", authorised,
            "--spawn-workers", "2", "--steps", "4", "--run-dir", folder + "/secured"], seconds: 60)
        XCTAssertEqual(secured.status, 0, secured.combined)
        XCTAssertTrue(secured.error.contains("CURVE on"), secured.error)
        let plain = try LocalCluster.run("cnn-coord", ["--config", config, "--spawn-workers", "2", "--steps", "4", "--run-dir", folder + "/plain"],
                                         seconds: 60)
        XCTAssertEqual(plain.status, 0, plain.combined)
        XCTAssertEqual(try finalModel(folder + "/secured"), try finalModel(folder + "/plain"))
    }

    func testWithoutKeysTheCoordinatorStaysOnThisHostUnlessToldOtherwiseAndSaysSo() throws {
        let config = try configPath()
        let refused = try LocalCluster.run("cnn-coord", ["--config", config, "--bind", "tcp://0.0.0.0:0", "--run-dir", folder + "/r1"], seconds: 30)
        XCTAssertEqual(refused.status, 2, refused.combined)
        for part in ["tcp://0.0.0.0:0", "without CURVE keys", "cnn keygen", "--insecure-bind"] {
            XCTAssertTrue(refused.error.contains(part), "'\(part)' missing: \(refused.error)")
        }
        let insecure = try LocalCluster.run("cnn-coord", [
            "--config", config, "--bind", "tcp://0.0.0.0:0", "--insecure-bind", "--spawn-workers", "1", "--steps", "2",
            "--run-dir", folder + "/r2"], seconds: 60)
        XCTAssertEqual(insecure.status, 0, insecure.combined)
        XCTAssertTrue(insecure.error.contains("--insecure-bind: listening on"), insecure.error)
        let local = try LocalCluster.run("cnn-coord", ["--config", config, "--spawn-workers", "1", "--steps", "2", "--run-dir", folder + "/r3"],
                                         seconds: 60)
        XCTAssertEqual(local.status, 0, local.combined)
        XCTAssertTrue(local.error.contains("no CURVE keys") && local.error.contains("this host only"), local.error)
    }
}
