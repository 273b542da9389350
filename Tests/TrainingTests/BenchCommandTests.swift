import CNN
import Foundation
import TestSupport
import XCTest

/// `cnn bench`, the real binary, briefly: what its JSON lines promise scripts, not how fast
/// anything is (speed is for the benchmark itself to say, on a quiet machine).
final class BenchCommandTests: XCTestCase {
    private func lines(_ arguments: [String]) throws -> [[String: Any]] {
        let outcome = try LocalCluster.run("cnn", ["bench"] + arguments, seconds: 120)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        return try outcome.output.split(separator: "\n").map { line in
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
        }
    }

    func testJSONLinesNameModelBatchThreadsRateAndEveryConvolutionAgainstSgemm() throws {
        let objects = try lines([
            "--model", "lenet5", "--threads", "1", "--threads", "2", "--json", "--repetitions", "1", "--seconds", "0.05",
            "--no-memory",
        ])
        XCTAssertEqual(objects.count, 2, "one line per thread count")
        for (object, threads) in zip(objects, [1, 2]) {
            XCTAssertEqual(object["model"] as? String, "lenet5")
            XCTAssertEqual(object["batch"] as? Int, 64)
            XCTAssertEqual(object["threads"] as? Int, threads)
            XCTAssertGreaterThan(object["images_per_second"] as? Double ?? 0, 0)
            XCTAssertEqual(object["blas_kernel"] as? String, BLAS.kernelName)
            XCTAssertEqual(object["engine_build"] as? String, EngineBuild.name)
            XCTAssertEqual(object["bit_identical_across_threads"] as? Bool, true)
        }
        // LeNet-5's two convolutions; the first, like the network's first layer in training,
        // computes no input gradient, and is timed against the two GEMMs it does run.
        let convolutions = try XCTUnwrap(objects[0]["convolutions"] as? [[String: Any]])
        XCTAssertEqual(convolutions.map { $0["layer"] as? String }, ["0", "3"])
        XCTAssertEqual(convolutions.map { $0["input_gradient"] as? Bool }, [false, true])
        XCTAssertEqual(convolutions.map { $0["m"] as? Int }, [6, 16])
        for convolution in convolutions {
            XCTAssertGreaterThan(convolution["gflops"] as? Double ?? 0, 0, "\(convolution)")
            XCTAssertGreaterThan(convolution["ratio"] as? Double ?? 0, 0, "\(convolution)")
        }
    }

    /// A config's model at the config's batch and micro-batch, its memory measured in a child
    /// process given the same config: the in-process side of a one-host comparison.
    func testAConfigsModelIsMeasuredAtItsBatchAndMicroBatch() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("bench-config-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let path = folder.appendingPathComponent("small.yaml").path
        try """
        model:
          input: [1, 12, 12]
          layers:
            - conv: {filters: 4, kernel: 3, padding: 1}
            - batchnorm
            - relu
            - flatten
            - dense: 10
        data: {dataset: fashion-mnist, path: /nonexistent}
        train:
          batch: 24
          micro_batch: 6
          optimizer: {name: adamw, lr: 0.001}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let objects = try lines(["--config", path, "--threads", "1", "--threads", "2", "--json", "--repetitions", "1", "--seconds", "0.05",
                                 "--no-convolutions"])
        XCTAssertEqual(objects.count, 2, "only the config's model, once per thread count")
        for (object, threads) in zip(objects, [1, 2]) {
            XCTAssertEqual(object["model"] as? String, path)
            XCTAssertEqual(object["batch"] as? Int, 24)
            XCTAssertEqual(object["micro_batch"] as? Int, 6, "the config's micro-batch at any thread count")
            XCTAssertEqual(object["threads"] as? Int, threads)
            XCTAssertGreaterThan(object["images_per_second"] as? Double ?? 0, 0)
            XCTAssertGreaterThan(object["peak_resident_bytes"] as? Int ?? 0, 0, "the memory probe runs the config's model too")
            XCTAssertEqual(object["bit_identical_across_threads"] as? Bool, true)
        }
        let missing = try LocalCluster.run("cnn", ["bench", "--config", folder.appendingPathComponent("none.yaml").path], seconds: 30)
        XCTAssertEqual(missing.status, 2, missing.combined)
        XCTAssertTrue(missing.error.contains("none.yaml") && missing.error.contains("cannot read"), missing.error)
        XCTAssertFalse(missing.output.contains("images/s"), "nothing measured")
    }

    func testAnUnknownGEMMLibraryIsRefusedWithTheChoicesBeforeAnythingRuns() throws {
        var environment = LocalCluster.environment
        environment[BLAS.libraryVariable] = "mkl"
        let outcome = try LocalCluster.Child("cnn", ["bench", "--model", "lenet5"], environment: environment).wait(seconds: 30)
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.error.contains("CNN_GEMM=mkl") && outcome.error.contains("onednn or openblas"), outcome.error)
        XCTAssertEqual(outcome.output, "", "nothing measured")
    }
}
