import CNN
import Checkpoint
import ConfigReading
import Foundation
import TestSupport
import Training
import XCTest

/// `train.precision`: the config key, bf16 runs bit-identical for any thread and worker count,
/// the refusal where bf16 is missing (simulated with the `CNN_PRETEND_NO_BF16=1` test hook), the
/// fall-back of `bf16-if-available`, and checkpoints that resume in either precision.
final class BFloat16TrainingTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    private func skipUnlessAvailable() throws {
        if !BFloat16Support.isAvailable { throw XCTSkip("no bf16 products here: \(BFloat16Support.missingReason)") }
    }

    private static let precisionLine = "  precision: bf16"

    /// A small synthetic model with every kind of product (convolution, residual projection,
    /// dense) and batch normalisation, quick to train in-process.
    private func syntheticConfig(precision: String?) throws -> TrainingConfig {
        try TrainingConfig.parse(yaml: """
            model:
              input: [1, 12, 12]
              layers:
                - basic_block: {filters: 4, stride: 2, projection: auto}
                - conv: {filters: 6, kernel: 3, padding: 1}
                - batchnorm
                - relu
                - flatten
                - dense: 5
            data: {dataset: synthetic, synthetic_train: 96, synthetic_test: 16, shuffle: true}
            train:
              epochs: 1
              batch: 24
              micro_batch: 4
              seed: 11
              optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
            \(precision.map { "  precision: \($0)" } ?? "")
            """, source: "bf16-synthetic")
    }

    // MARK: The config key

    func testPrecisionKeyParsesRendersAndLeavesConfigsWithoutItAsTheyWere() throws {
        let plain = try syntheticConfig(precision: nil)
        XCTAssertEqual(plain.train.precision, .fp32)
        XCTAssertFalse(plain.yaml.contains("precision"), "a config without the key must render (and hash) as before")
        XCTAssertEqual(try syntheticConfig(precision: "fp32").yaml, plain.yaml)
        for setting in [PrecisionSetting.bf16, .bf16IfAvailable] {
            let config = try syntheticConfig(precision: setting.rawValue)
            XCTAssertEqual(config.train.precision, setting)
            let reread = try TrainingConfig.parse(yaml: config.yaml, source: "rendered")
            XCTAssertEqual(reread.train.precision, setting, "the rendering must read back")
            // Master weights are Float32 in both precisions: a checkpoint resumes in either.
            XCTAssertEqual(config.hash, plain.hash)
        }
        XCTAssertThrowsError(try syntheticConfig(precision: "fp16")) { error in
            let text = "\(error)"
            XCTAssertTrue(error is ConfigError, text)
            XCTAssertTrue(text.contains("train.precision must be one of fp32, bf16, bf16-if-available, found 'fp16'"), text)
        }
    }

    func testPrecisionIsDecidedByWhatTheMachineHas() throws {
        let bf16 = try syntheticConfig(precision: "bf16"), fallback = try syntheticConfig(precision: "bf16-if-available")
        XCTAssertEqual(try bf16.precision(bf16Available: true), .bf16)
        XCTAssertEqual(try fallback.resolvingPrecision(bf16Available: true).train.precision, .bf16)
        XCTAssertEqual(try fallback.resolvingPrecision(bf16Available: false).train.precision, .fp32)
        XCTAssertEqual(try syntheticConfig(precision: nil).precision(bf16Available: false), .fp32)
        XCTAssertThrowsError(try bf16.resolvingPrecision(bf16Available: false)) { error in
            let text = "\(error)"
            XCTAssertTrue(error is ConfigError, text)
            for part in ["train.precision: bf16 needs bf16 matrix products", "bf16-if-available", "precision: fp32"] {
                XCTAssertTrue(text.contains(part), "'\(part)' missing: \(text)")
            }
        }
    }

    // MARK: Bits

    func testEngineInBFloat16GivesBitIdenticalWeightsOnOneAndTwoThreads() throws {
        try skipUnlessAvailable()
        func train(_ config: TrainingConfig, threads: Int) throws -> [UInt32] {
            let trainer = try ReferenceTrainer(config: config, data: DataSource.load(config), threads: threads)
            try trainer.train()
            return Array(UnsafeBufferPointer(start: trainer.state.network.parameters.pointer, count: trainer.state.parameterCount))
                .map(\.bitPattern)
        }
        let bf16 = try syntheticConfig(precision: "bf16")
        let one = try train(bf16, threads: 1), two = try train(bf16, threads: 2)
        XCTAssertEqual(one, two, "bf16 weights after an epoch differ between 1 and 2 threads")
        XCTAssertNotEqual(one, try train(syntheticConfig(precision: nil), threads: 1), "bf16 must change the arithmetic")
    }

    private func cluster(
        workers: Int, steps: Int, config: String, run: String, resume: Bool = false, environment: [String: String] = LocalCluster.environment
    ) throws -> LocalCluster.Outcome {
        let configPath = try LocalCluster.write(config, to: "config-\(UUID().uuidString).yaml", in: (run as NSString).deletingLastPathComponent)
        return try LocalCluster.Child(
            "cnn-coord",
            ["--config", configPath, "--spawn-workers", "\(workers)", "--steps", "\(steps)", "--run-dir", run, "--quiet"]
                + (resume ? ["--resume"] : []),
            environment: environment
        ).wait(seconds: 120)
    }

    private func finalModel(_ run: String) throws -> (step: Int, bytes: [UInt8]) {
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 3).list().last, "no checkpoint in \(run)")
        let state = try CheckpointStore.load(directory: newest).state
        return (state.step, Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/model.safetensors"))))
    }

    func testThreeWorkersInBFloat16MatchOneWorkerAndTheInProcessReferenceBitForBit() throws {
        try skipUnlessAvailable()
        let folder = try LocalCluster.temporaryDirectory("bf16-workers")
        let text = Fixtures.fashionConfig(extraTrain: Self.precisionLine)
        let one = try cluster(workers: 1, steps: 6, config: text, run: folder + "/one")
        let three = try cluster(workers: 3, steps: 6, config: text, run: folder + "/three")
        XCTAssertEqual(one.status, 0, one.combined)
        XCTAssertEqual(three.status, 0, three.combined)
        XCTAssertEqual(try finalModel(folder + "/one").bytes, try finalModel(folder + "/three").bytes,
                       "bf16 weights after 6 steps differ between 1 and 3 workers")
        // The workers computed in bf16: the in-process bf16 reference gives their very bits.
        var config = try TrainingConfig.parse(yaml: text, source: "fixture")
        config.train.maxSteps = 6
        let reference = try ReferenceTrainer(config: config, data: DataSource.load(config))
        try reference.train()
        let saved = try CheckpointStore.load(directory: CheckpointStore(runDirectory: folder + "/three", keep: 3).list().last!).model
        for tensor in reference.state.modelTensors() {
            XCTAssertEqual(saved[tensor.name]?.values.map(\.bitPattern), tensor.values.map(\.bitPattern), "\(tensor.name)")
        }
    }

    // MARK: Where bf16 is missing

    private var withoutBFloat16: [String: String] {
        var environment = LocalCluster.environment
        environment[BFloat16Support.pretendMissingVariable] = "1"
        return environment
    }

    func testCoordinatorRefusesBFloat16WhereItIsMissingWithCodeTwo() throws {
        let folder = try LocalCluster.temporaryDirectory("bf16-refused")
        let outcome = try cluster(
            workers: 1, steps: 1, config: Fixtures.fashionConfig(extraTrain: Self.precisionLine), run: folder + "/run",
            environment: withoutBFloat16)
        XCTAssertEqual(outcome.status, 2, outcome.combined)
        for part in ["train.precision: bf16 needs bf16 matrix products", "CNN_PRETEND_NO_BF16=1", "bf16-if-available"] {
            XCTAssertTrue(outcome.error.contains(part), "'\(part)' missing:\n\(outcome.error)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/run/checkpoints"), "nothing may be trained")
    }

    func testBFloat16IfAvailableFallsBackToFloat32WhereBFloat16IsMissing() throws {
        let folder = try LocalCluster.temporaryDirectory("bf16-fallback")
        let outcome = try cluster(
            workers: 1, steps: 3, config: Fixtures.fashionConfig(extraTrain: "  precision: bf16-if-available"), run: folder + "/run",
            environment: withoutBFloat16)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertTrue(outcome.error.contains("bf16-if-available computes in fp32 here"), outcome.error)
        // The workers were sent the resolved config, and computed exactly as an fp32 run does.
        let written = try TrainingConfig.parse(yaml: String(contentsOfFile: folder + "/run/config.yaml", encoding: .utf8), source: "run")
        XCTAssertEqual(written.train.precision, .fp32)
        var config = try TrainingConfig.parse(yaml: Fixtures.fashionConfig(), source: "fixture")
        config.train.maxSteps = 3
        let reference = try ReferenceTrainer(config: config, data: DataSource.load(config))
        try reference.train()
        let saved = try CheckpointStore.load(directory: CheckpointStore(runDirectory: folder + "/run", keep: 3).list().last!).model
        for tensor in reference.state.modelTensors() {
            XCTAssertEqual(saved[tensor.name]?.values.map(\.bitPattern), tensor.values.map(\.bitPattern), "\(tensor.name)")
        }
    }

    func testWorkerWithoutBFloat16IsRefusedAtJoinAndNamedByTheCoordinator() throws {
        try skipUnlessAvailable()
        let folder = try LocalCluster.temporaryDirectory("bf16-worker")
        let text = Fixtures.fashionConfig(extraTrain: Self.precisionLine).replacingOccurrences(of: "join_timeout: 30", with: "join_timeout: 4")
        let configPath = try LocalCluster.write(text, to: "config.yaml", in: folder)
        let coordinator = try LocalCluster.Child("cnn-coord", [
            "--config", configPath, "--bind", "tcp://127.0.0.1:0", "--workers", "1", "--steps", "1", "--run-dir", folder + "/run"])
        defer { coordinator.signal(SIGKILL); _ = coordinator.wait(seconds: 10) }
        let endpoint = try FuzzCoordinatorTests.endpoint(fromRunDirectory: folder + "/run", coordinator: coordinator)
        let worker = try LocalCluster.Child(
            "cnn-worker", ["--connect", endpoint, "--name", "old-cpu", "--join-timeout", "10"], environment: withoutBFloat16)
        let refused = worker.wait(seconds: 30)
        XCTAssertNotEqual(refused.status, 0, refused.combined)
        XCTAssertTrue(refused.error.contains("train.precision: bf16 needs bf16 matrix products"), refused.error)
        let outcome = coordinator.wait(seconds: 30)
        XCTAssertNotEqual(outcome.status, 0, "no worker could train:\n\(outcome.combined)")
        let report = outcome.error.split(separator: "\n").first { $0.contains("reported error 500") }
        XCTAssertNotNil(report, outcome.error)
        for part in ["(old-cpu)", "worker old-cpu has no bf16 products for train.precision: bf16"] {
            XCTAssertTrue(report?.contains(part) == true, "'\(part)' missing:\n\(outcome.error)")
        }
    }

    // MARK: Checkpoints

    func testCheckpointWrittenInBFloat16IsFloat32AndResumesInEitherPrecision() throws {
        try skipUnlessAvailable()
        let folder = try LocalCluster.temporaryDirectory("bf16-resume")
        let bf16 = Fixtures.fashionConfig(extraTrain: Self.precisionLine), fp32 = Fixtures.fashionConfig()
        let first = try cluster(workers: 1, steps: 3, config: bf16, run: folder + "/first")
        XCTAssertEqual(first.status, 0, first.combined)
        let checkpoint = try XCTUnwrap(CheckpointStore(runDirectory: folder + "/first", keep: 3).list().last)
        // Every tensor of the checkpoint is F32: the master weights, never bf16 copies.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: checkpoint + "/model.safetensors"))
        let headerLength = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let header = String(decoding: bytes.dropFirst(8).prefix(headerLength), as: UTF8.self)
        XCTAssertEqual(header.components(separatedBy: "\"dtype\"").count - 1, 8, header)
        XCTAssertEqual(header.components(separatedBy: "\"F32\"").count - 1, 8, header)

        // Resumed in bf16 it continues exactly as an uninterrupted bf16 run; in fp32 it continues too.
        for name in ["in-bf16", "in-fp32"] {
            try FileManager.default.copyItem(atPath: folder + "/first", toPath: folder + "/" + name)
        }
        let inBFloat16 = try cluster(workers: 1, steps: 6, config: bf16, run: folder + "/in-bf16", resume: true)
        let inFloat32 = try cluster(workers: 1, steps: 6, config: fp32, run: folder + "/in-fp32", resume: true)
        let uninterrupted = try cluster(workers: 1, steps: 6, config: bf16, run: folder + "/uninterrupted")
        for outcome in [inBFloat16, inFloat32, uninterrupted] { XCTAssertEqual(outcome.status, 0, outcome.combined) }
        let resumedBFloat16 = try finalModel(folder + "/in-bf16"), resumedFloat32 = try finalModel(folder + "/in-fp32")
        XCTAssertEqual(resumedBFloat16.step, 6)
        XCTAssertEqual(resumedFloat32.step, 6)
        XCTAssertEqual(resumedBFloat16.bytes, try finalModel(folder + "/uninterrupted").bytes)
        XCTAssertNotEqual(resumedFloat32.bytes, resumedBFloat16.bytes, "the fp32 continuation computes differently")
    }

    // MARK: cnn bench

    func testBenchMeasuresBothPrecisionsSideBySideEachBitIdenticalAcrossThreads() throws {
        try skipUnlessAvailable()
        let outcome = try LocalCluster.run("cnn", [
            "bench", "--model", "lenet5", "--threads", "1", "--threads", "2", "--precision", "fp32,bf16", "--json",
            "--repetitions", "1", "--seconds", "0.05", "--no-memory",
        ], seconds: 120)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        let objects = try outcome.output.split(separator: "\n").map { line in
            try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], String(line))
        }
        XCTAssertEqual(objects.map { $0["threads"] as? Int }, [1, 1, 2, 2])
        XCTAssertEqual(objects.map { $0["precision"] as? String }, ["fp32", "bf16", "fp32", "bf16"])
        for object in objects {
            XCTAssertEqual(object["bit_identical_across_threads"] as? Bool, true, "\(object)")
            XCTAssertEqual(object["bf16_kernel"] as? String, object["precision"] as? String == "bf16" ? BFloat16Support.kernelName : nil)
            let convolutions = try XCTUnwrap(object["convolutions"] as? [[String: Any]])
            XCTAssertEqual(convolutions.map { $0["layer"] as? String }, ["0", "3"])
            for convolution in convolutions { XCTAssertGreaterThan(convolution["ratio"] as? Double ?? 0, 0, "\(convolution)") }
        }
        XCTAssertNotEqual(objects[0]["weights_digest"] as? String, objects[1]["weights_digest"] as? String, "bf16 computes differently")
    }

    func testBenchRefusesAnUnknownPrecisionAndBFloat16WhereItIsMissing() throws {
        let unknown = try LocalCluster.run("cnn", ["bench", "--model", "lenet5", "--precision", "fp32,fp16"], seconds: 30)
        XCTAssertEqual(unknown.status, 2, unknown.combined)
        XCTAssertTrue(unknown.error.contains("'fp16' is not a precision; use fp32, bf16 or fp32,bf16"), unknown.error)
        let missing = try LocalCluster.Child("cnn", ["bench", "--model", "lenet5", "--precision", "bf16"], environment: withoutBFloat16)
            .wait(seconds: 30)
        XCTAssertEqual(missing.status, 2, missing.combined)
        XCTAssertTrue(missing.error.contains("--precision bf16 needs bf16 matrix products") && missing.error.contains("CNN_PRETEND_NO_BF16=1"),
                      missing.error)
        XCTAssertEqual(missing.output, "", "nothing measured")
    }
}
