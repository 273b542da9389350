import Foundation
import TestSupport
import XCTest

/// `scripts/bench-cluster` end to end: one worker on two simulated hosts for three steps of a small
/// synthetic run, with the executables built next to this test. Skipped with the script's own
/// reason where network namespaces cannot be made (it exits 0 and says why on standard error).
final class ClusterBenchmarkTests: XCTestCase {
    private static let repository = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func testBenchClusterPrintsOneTableRowPerWorkerCount() throws {
        let (folder, config) = try Fixture.folder("bench-cluster", config: Fixture.config(logEvery: 1, synthetic: true))
        let script = Self.repository.appendingPathComponent("scripts/bench-cluster").path
        let result = try Shell.run("/usr/bin/env", ["python3", script, "--workers", "1", "--steps", "3", "--skip", "1",
                                                    "--config", config, "--bin", LocalCluster.binaries.path,
                                                    "--keep", folder + "/bench"],
                                   environment: LocalCluster.environment, seconds: 60)
        if result.status == 127 { throw XCTSkip("no python3 to run scripts/bench-cluster: \(result.error)") }
        if result.status == 0, result.output.isEmpty, let reason = result.error.split(separator: "\n").first(where: { $0.contains("skipped:") }) {
            throw XCTSkip(String(reason))
        }
        XCTAssertEqual(result.status, 0, result.error)
        let rows = result.output.split(separator: "\n").filter { $0.hasPrefix("|") }
        // Header, rule, and the row for N = 1.
        XCTAssertEqual(rows.count, 3, result.output)
        guard rows.count == 3 else { return }
        let cells = rows.map { $0.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) } }
        XCTAssertEqual(cells[0], ["N", "step s", "coord link/W (rx+tx)", "= x N", "worker rx/W", "worker tx/W",
                                  "speedup", "efficiency", "fwd+bwd s", "ring bound s"])
        XCTAssertEqual(cells[2].count, 10, String(rows[2]))
        XCTAssertEqual(cells[2].first, "1")
        XCTAssertGreaterThan(Double(cells[2][1]) ?? 0, 0, "step time: \(rows[2])")
        XCTAssertEqual(cells[2][6], "1.00", "speedup of N = 1 against itself")
        XCTAssertEqual(cells[2][7], "1.00", "efficiency of N = 1 against itself")
        // Link columns are figures, or n/a when the steps were too short to read the counters between.
        for cell in cells[2][2...5] {
            XCTAssertTrue(cell == "n/a" || Double(cell) != nil, "link column '\(cell)' in \(rows[2])")
        }
        XCTAssertTrue(result.output.contains("whole run on the coordinator's eth0"), result.output)
    }
}
