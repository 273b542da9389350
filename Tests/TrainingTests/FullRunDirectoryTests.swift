import Foundation
import TestSupport
import XCTest

/// A run whose directory's disk fills up stops with an error that says where and what to do, and
/// leaves metrics.jsonl whole (it used to crash in Foundation's FileHandle.write). The disk is a
/// small tmpfs, which needs root (a test host or CI); elsewhere this skips.
final class FullRunDirectoryTests: XCTestCase {
    private var mountPoint = ""

    override func tearDown() {
        guard !mountPoint.isEmpty else { return }
        _ = try? LocalCluster.run("/bin/umount", [mountPoint], seconds: 10)
        try? FileManager.default.removeItem(atPath: mountPoint)
    }

    func testAFullDiskStopsTheRunWithTheDirectoryAndLeavesEveryMetricsLineWhole() throws {
        let folder = try LocalCluster.temporaryDirectory("fullrun")
        mountPoint = folder + "/disk"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mounted = try LocalCluster.run("/bin/mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", mountPoint], seconds: 10)
        guard mounted.status == 0 else { throw XCTSkip("cannot mount a tmpfs here (needs root): \(mounted.error)") }
        // All but three pages taken: config.yaml, worker-command.txt and a first page of metrics.
        try Data(count: 64 * 1024 - 3 * 4096).write(to: URL(fileURLWithPath: mountPoint + "/filler"))
        let config = Fixtures.fashionConfig().replacingOccurrences(of: "log_every: 5", with: "log_every: 1")
        let configPath = try LocalCluster.write(config, to: "config.yaml", in: folder)
        let run = mountPoint + "/run"
        // Central: a sharded run writes a checkpoint as it starts, which this disk has no room for
        // (that stops it at once, with the checkpoint store's own error).
        let result = try LocalCluster.run(
            "cnn-coord", ["--config", configPath, "--spawn-workers", "1", "--steps", "80", "--reduction", "central", "--run-dir", run, "--quiet"],
            seconds: 120)
        XCTAssertNotEqual(result.status, 0, result.combined)
        XCTAssertFalse(result.combined.contains("Fatal error"), result.combined)
        XCTAssertTrue(result.error.contains("cannot append to \(run)/metrics.jsonl"), result.error)
        XCTAssertTrue(result.error.contains("free space in \(run) and continue with --resume"), result.error)
        let lines = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
        XCTAssertGreaterThan(lines.count, 5, "the disk filled before any step")
        XCTAssertEqual(lines.last, "", "the file does not end with a whole line")
        for line in lines.dropLast() {
            XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(line.utf8)), "a line cut short: \(line)")
        }
    }
}
