import Foundation
import Logging
import TestSupport
import Training
import XCTest

/// Log lines on standard error, with and without the time (`--log-timestamps`).
final class ConsoleLogTests: XCTestCase {
    func testALineCarriesTheLabelTheLevelAndWhenAskedTheTimeToTheMillisecond() {
        XCTAssertEqual(ConsoleLogHandler.line(label: "coord", level: .info, message: "step 3"), "[coord] step 3")
        XCTAssertEqual(ConsoleLogHandler.line(label: "coord", level: .warning, message: "slow"), "[coord] warning: slow")
        XCTAssertEqual(ConsoleLogHandler.line(label: "worker w1", level: .error, message: "x", at: 1_796_683_893.0836),
                       "[worker w1 1796683893.083] error: x")
        XCTAssertEqual(ConsoleLogHandler.formatTime(12), "12.000")
        XCTAssertEqual(ConsoleLogHandler.formatTime(5.007), "5.007")
        XCTAssertEqual(ConsoleLogHandler.formatTime(0.0999), "0.099")
        XCTAssertEqual(ConsoleLogHandler.now(), Date().timeIntervalSince1970, accuracy: 1)
    }

    /// Every line the coordinator and its spawned worker log has the time, within the run.
    func testLogTimestampsReachTheCoordinatorsAndItsSpawnedWorkersLines() throws {
        let folder = try LocalCluster.temporaryDirectory("console-log")
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let config = try LocalCluster.writeTinyConfig(in: folder)
        let started = Date().timeIntervalSince1970
        let outcome = try LocalCluster.run("cnn-coord", ["--config", config, "--spawn-workers", "1", "--steps", "2", "--plain",
                                                         "--run-dir", folder + "/run", "--log-timestamps"], seconds: 60)
        let ended = Date().timeIntervalSince1970
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        let lines = outcome.error.split(separator: "\n").map(String.init).filter { $0.hasPrefix("[") }
        XCTAssertTrue(lines.contains { $0.hasPrefix("[coord ") }, outcome.error)
        XCTAssertTrue(lines.contains { $0.hasPrefix("[worker local-0 ") }, "the spawned worker was not given the flag:\n" + outcome.error)
        let stamped = try NSRegularExpression(pattern: #"^\[[^\]]* (\d+\.\d{3})\] "#)
        for line in lines {
            let match = stamped.firstMatch(in: line, range: NSRange(line.startIndex..., in: line))
            guard let match, let range = Range(match.range(at: 1), in: line), let seconds = Double(line[range]) else {
                XCTFail("a line without the time: \(line)")
                continue
            }
            XCTAssertTrue((started - 1)...(ended + 1) ~= seconds, "\(line): not within the run")
        }
    }
}
