import CommandLineSupport
import Foundation
import Monitoring
import TestSupport
import Training
import XCTest

/// The exit-code contract (0 done, 1 runtime failure, 2 bad usage) for the monitoring tools'
/// errors, checked on the real executables.
final class ToolExitCodeTests: XCTestCase {
    func testMonitoringErrorsAreUsageFailuresUnlessMarkedRuntime() {
        XCTAssertTrue(MonitoringError("runs/x: no such file").isBadUsage)
        XCTAssertEqual(MonitoringError("x").kind, .usage)
        XCTAssertFalse(MonitoringError("socket() failed", kind: .runtime).isBadUsage)
    }

    func testPlotOfAMissingRunDirectoryExitsWithTheUsageCode() throws {
        let missing = try LocalCluster.temporaryDirectory("no-run") + "/nothing-here"
        let outcome = try LocalCluster.run("cnn", ["plot", missing], seconds: 30)
        XCTAssertEqual(outcome.status, ExitCodes.badUsage, outcome.combined)
        XCTAssertTrue(outcome.error.contains("error: \(missing): no such file; give a run directory (the --run-dir of cnn-coord)"), outcome.error)
        XCTAssertTrue(outcome.output.isEmpty, "errors go to standard error: \(outcome.output)")
    }

    func testPlotOfARunWithoutMetricsExitsWithTheUsageCode() throws {
        let run = try LocalCluster.temporaryDirectory("empty-run")
        _ = try LocalCluster.write("", to: "metrics.jsonl", in: run)
        let outcome = try LocalCluster.run("cnn", ["plot", run], seconds: 30)
        XCTAssertEqual(outcome.status, ExitCodes.badUsage, outcome.combined)
        XCTAssertTrue(outcome.error.contains("holds no metrics yet"), outcome.error)
    }

    func testCoordinatorWithAMetricsPortInUseOrAnUnwritableTraceExitsWithTheUsageCode() throws {
        let (folder, config) = try Fixture.folder("usage", config: Fixture.config(synthetic: true))
        let occupant = try MetricsHTTPServer(port: 0) { [] }
        defer { occupant.stop() }
        let busy = try LocalCluster.run(
            "cnn-coord", ["--config", config, "--spawn-workers", "1", "--steps", "1", "--run-dir", folder + "/a",
                          "--metrics-port", "\(occupant.port)"], seconds: 60)
        XCTAssertEqual(busy.status, ExitCodes.badUsage, busy.combined)
        XCTAssertTrue(busy.error.contains("the port is in use; choose another --metrics-port"), busy.error)
        let trace = try LocalCluster.run(
            "cnn-coord", ["--config", config, "--spawn-workers", "1", "--steps", "1", "--run-dir", folder + "/b",
                          "--trace", "/proc/no/such/trace.json"], seconds: 60)
        XCTAssertEqual(trace.status, ExitCodes.badUsage, trace.combined)
        XCTAssertTrue(trace.error.contains("cannot write the trace file /proc/no/such/trace.json"), trace.error)
    }

    func testAWorkerThatGivesUpOnAnUnreachableCoordinatorIsARuntimeFailure() throws {
        let address = "tcp://127.0.0.1:\(EndpointTests.freePort())"
        let outcome = try LocalCluster.run("cnn-worker", ["--connect", address, "--join-timeout", "1"], seconds: 30)
        XCTAssertEqual(outcome.status, ExitCodes.runtimeFailure, outcome.combined)
        XCTAssertTrue(outcome.error.contains("no coordinator answered at \(address) within 1 s")
                      && outcome.error.contains("tried \(address)"), outcome.error)
    }
}
