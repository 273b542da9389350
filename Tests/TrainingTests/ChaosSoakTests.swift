import Foundation
import TestSupport
import XCTest

/// The short version of `scripts/chaos`: 50 random faults (workers killed, paused, stalled past
/// the timeout and joining, the coordinator killed and resumed, a checkpoint truncated, and with
/// root a full disk and links cut and slowed between simulated hosts) on a real run with the executables built next to this test; the final
/// weights, optimiser state and every step's metrics must equal an undisturbed run's. The seed is
/// fixed so that a failure replays; the long soak (`scripts/chaos --faults 1000`) is documented in
/// the README.
final class ChaosSoakTests: XCTestCase {
    private static let script = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("scripts/chaos").path

    func testFiftyFaultsLeaveTheBitsAndMetricsOfAnUndisturbedRun() throws {
        guard FileManager.default.fileExists(atPath: Fixtures.fashionDirectory + "/train-images-idx3-ubyte.gz") else {
            throw XCTSkip("no Fashion-MNIST in \(Fixtures.fashionDirectory): run scripts/setup")
        }
        let folder = try LocalCluster.temporaryDirectory("chaos")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let report = folder + "/report.json"
        // As root, on simulated hosts (network namespaces) with links cut and slowed too.
        let network = geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
            || geteuid() == 0 && FileManager.default.isExecutableFile(atPath: "/sbin/ip")
        let result = try LocalCluster.run(
            "/usr/bin/env", ["python3", Self.script, "--faults", "50", "--seed", "20261207", "--bin", LocalCluster.binaries.path,
                             "--keep", folder + "/runs", "--json", report] + (network ? ["--network"] : []),
            seconds: 170)
        if result.status == 127 { throw XCTSkip("no python3 to run scripts/chaos: \(result.error)") }
        XCTAssertFalse(result.timedOut, "the soak took more than 170 s")
        XCTAssertEqual(result.status, 0, result.combined)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any]
        let injected = try XCTUnwrap(json?["injected"] as? [String: Int], result.combined)
        XCTAssertEqual(injected.values.reduce(0, +), 50)
        for kind in ["kill", "pause", "stall", "coordinator"] + (network ? ["cut"] : []) {
            XCTAssertGreaterThan(injected[kind] ?? 0, 0, "no \(kind) fault in \(injected)")
        }
        XCTAssertEqual(json?["differences"] as? [String], [])
    }

    /// The same under the sharded reduction: every worker owns slices and mirrors others', so the
    /// kills, stalls and pauses hit slice owners; the undisturbed run is central.
    func testFiftyFaultsAmongSliceOwnersLeaveTheBitsOfACentralRun() throws {
        guard FileManager.default.fileExists(atPath: Fixtures.fashionDirectory + "/train-images-idx3-ubyte.gz") else {
            throw XCTSkip("no Fashion-MNIST in \(Fixtures.fashionDirectory): run scripts/setup")
        }
        let folder = try LocalCluster.temporaryDirectory("chaos-sharded")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let report = folder + "/report.json"
        let result = try LocalCluster.run(
            "/usr/bin/env", ["python3", Self.script, "--faults", "50", "--seed", "20261208", "--reduction", "sharded",
                             "--kinds", "kill,join,pause,stall,coordinator", "--bin", LocalCluster.binaries.path,
                             "--keep", folder + "/runs", "--json", report],
            seconds: 170)
        if result.status == 127 { throw XCTSkip("no python3 to run scripts/chaos: \(result.error)") }
        XCTAssertFalse(result.timedOut, "the soak took more than 170 s")
        XCTAssertEqual(result.status, 0, result.combined)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: report))) as? [String: Any]
        let injected = try XCTUnwrap(json?["injected"] as? [String: Int], result.combined)
        XCTAssertEqual(injected.values.reduce(0, +), 50)
        XCTAssertGreaterThan(injected["kill"] ?? 0, 0, "no kill in \(injected)")
        XCTAssertEqual(json?["differences"] as? [String], [])
    }
}
