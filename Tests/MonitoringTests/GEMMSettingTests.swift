import CommandLineSupport
import Foundation
import TestSupport
import XCTest

/// CNN_GEMM picks the matrix-multiply library; a value naming none is bad usage (exit code 2, as
/// the README's exit-code contract says), refused before anything runs, with the allowed values.
final class GEMMSettingTests: XCTestCase {
    func testAnUnknownGEMMLibraryIsABadUsageNamingTheAllowedValues() throws {
        var environment = LocalCluster.environment
        environment["CNN_GEMM"] = "mkl"
        let commands: [(String, [String])] = [
            ("cnn-worker", ["--connect", "tcp://127.0.0.1:1", "--join-timeout", "1"]),
            ("cnn-coord", ["--config", "configs/lenet5.yaml", "--run-dir", try LocalCluster.temporaryDirectory("gemm")]),
            ("cnn", ["eval", "--checkpoint", "/nonexistent"]),
        ]
        for (program, arguments) in commands {
            let outcome = try LocalCluster.Child(program, arguments, environment: environment).wait(seconds: 30)
            XCTAssertEqual(outcome.status, ExitCodes.badUsage, "\(program): \(outcome.combined)")
            XCTAssertTrue(outcome.error.contains("error: CNN_GEMM=mkl names no matrix-multiply library; use onednn or openblas"),
                          "\(program): \(outcome.error)")
        }
    }
}
