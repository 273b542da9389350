import Checkpoint
import Foundation
import Hashing
import XCTest

final class CheckpointStoreTests: XCTestCase {
    private var runDirectory = ""

    override func setUpWithError() throws {
        runDirectory = try makeTemporaryDirectory()
    }

    override func tearDownWithError() throws {
        try FileManager.default.removeItem(atPath: runDirectory)
    }

    private func model(step: Int) -> [NamedTensor] {
        let shift = Float(step)
        return [
            NamedTensor(name: "0.weight", shape: [2, 1, 3, 3], values: (0..<18).map { Float($0) * 0.125 - shift }),
            NamedTensor(name: "0.bias", shape: [2], values: [shift, -shift]),
            NamedTensor(name: "1.running_mean", shape: [2], values: [0.5, 0.25]),
            NamedTensor(name: "1.num_batches_tracked", shape: [], dtype: .int64, values: [Float(step)]),
        ]
    }

    private func optimizer(step: Int) -> [NamedTensor] {
        [NamedTensor(name: "0.weight.momentum", shape: [2, 1, 3, 3], values: (0..<18).map { Float($0 + step) / 7 })]
    }

    private func state(step: Int) -> CheckpointState {
        CheckpointState(
            step: step, epoch: step / 10, positionInEpoch: (step % 10) * 64, configHash: "abc123",
            createdBy: "cnn-coord test", createdAt: "2026-11-22T10:00:00Z", extra: ["run_id": "r1", "path": "a/b"])
    }

    @discardableResult
    private func save(_ store: CheckpointStore, step: Int) throws -> String {
        try store.save(step: step, model: model(step: step), optimizer: optimizer(step: step), state: state(step: step))
    }

    private func entries(_ store: CheckpointStore) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: store.checkpointsDirectory).sorted()
    }

    func testSaveThenNewestValidRoundTrips() throws {
        let store = CheckpointStore(runDirectory: runDirectory + "/", keep: 3)
        let path = try save(store, step: 123)
        XCTAssertEqual(path, runDirectory + "/checkpoints/step-00000123")
        XCTAssertEqual(try entries(store), ["step-00000123"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: path).sorted(),
                       ["model.safetensors", "optimizer.safetensors", "state.json"])

        let (loaded, warnings) = try store.newestValid()
        XCTAssertEqual(warnings, [])
        XCTAssertEqual(loaded.path, path)
        XCTAssertEqual(loaded.model.tensors, model(step: 123))
        XCTAssertEqual(loaded.optimizer.tensors, optimizer(step: 123))
        XCTAssertEqual(loaded.model.metadata["format"], "pt")

        var expected = state(step: 123)
        expected.files = loaded.state.files
        XCTAssertEqual(loaded.state, expected)
        for name in ["model.safetensors", "optimizer.safetensors"] {
            let digest = try XCTUnwrap(loaded.state.files[name])
            let size = try XCTUnwrap(try FileManager.default.attributesOfItem(atPath: path + "/" + name)[.size] as? Int)
            XCTAssertEqual(digest.bytes, size)
            XCTAssertEqual(digest.xxh64.count, 16)
            XCTAssertTrue(digest.xxh64.allSatisfy { $0.isHexDigit && !$0.isUppercase })
        }
    }

    /// Files are written through a 4 MiB staging buffer and hashed there: tensors larger than it,
    /// tensors that end inside the hash's 32-byte stripes and I64 tensors give the very bytes
    /// `SafeTensors.encode` lays out, and state.json records their size and xxh64.
    func testLargeFilesAreWrittenAsEncodedAndRecordedWithTheirDigest() throws {
        let large: [Float] = (0..<(3 * (1 << 20) + 7)).map { (index: Int) -> Float in Float(index % 1_000) * 0.5 - 17 }
        let model = [
            NamedTensor(name: "big.weight", shape: [large.count], values: large),
            NamedTensor(name: "steps", shape: [3], dtype: .int64, values: [1, -2, 16_777_216]),
            NamedTensor(name: "small.bias", shape: [5], values: [1, 2, 3, 4, 5]),
        ]
        let optimizer = [NamedTensor(name: "big.weight.momentum", shape: [large.count], values: Array(large.reversed()))]
        let store = CheckpointStore(runDirectory: runDirectory, keep: 1)
        let path = try store.save(step: 4, model: model, optimizer: optimizer, state: state(step: 4))
        let text = try String(contentsOfFile: path + "/state.json", encoding: .utf8)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        let files = try XCTUnwrap(json["files"] as? [String: [String: Any]])
        for (name, tensors) in [("model.safetensors", model), ("optimizer.safetensors", optimizer)] {
            let written: [UInt8] = try Array(Data(contentsOf: URL(fileURLWithPath: path + "/" + name)))
            let encoded = try SafeTensors.encode(tensors, metadata: ["format": "pt"])
            XCTAssertGreaterThan(encoded.count, 4 << 20)
            XCTAssertTrue(written == encoded, "\(name) is not the bytes encode lays out")
            XCTAssertEqual(files[name]?["bytes"] as? Int, encoded.count)
            let digest = encoded.withUnsafeBytes { XXHash64.hash($0) }
            XCTAssertEqual(files[name]?["xxh64"] as? String, String(format: "%016llx", digest))
        }
        let exported = runDirectory + "/exported.safetensors"
        try SafeTensors.write(model, metadata: ["format": "pt"], to: exported)
        let exportedBytes: [UInt8] = try Array(Data(contentsOf: URL(fileURLWithPath: exported)))
        XCTAssertTrue(try exportedBytes == SafeTensors.encode(model, metadata: ["format": "pt"]))
        XCTAssertEqual(try store.newestValid().checkpoint.model.tensors, model)
    }

    func testStateFileIsSortedSnakeCaseJSON() throws {
        let path = try save(CheckpointStore(runDirectory: runDirectory, keep: 1), step: 7)
        let text = try String(contentsOfFile: path + "/state.json", encoding: .utf8)
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        XCTAssertEqual(json["format_version"] as? Int, 1)
        XCTAssertEqual(json["step"] as? Int, 7)
        XCTAssertEqual(json["position_in_epoch"] as? Int, 448)
        XCTAssertEqual(json["config_hash"] as? String, "abc123")
        XCTAssertEqual(Set(json.keys), ["format_version", "step", "epoch", "position_in_epoch", "config_hash",
                                        "created_by", "created_at", "files", "extra"])
        let keys = ["config_hash", "created_at", "created_by", "epoch", "extra", "files", "format_version"]
        let positions = keys.map { text.range(of: "\"\($0)\"")!.lowerBound }
        XCTAssertEqual(positions, positions.sorted(), "keys are written sorted")
    }

    func testKeepPrunesTheOldest() throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 2)
        for step in [10, 20, 30, 40] { try save(store, step: step) }
        XCTAssertEqual(store.list(), [store.checkpointsDirectory + "/step-00000030", store.checkpointsDirectory + "/step-00000040"])
        XCTAssertEqual(try entries(store), ["step-00000030", "step-00000040"])
    }

    func testListOrdersByStepNotByName() throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 5)
        try save(store, step: 100_000_000)
        try save(store, step: 99_999_999)
        XCTAssertEqual(store.list().map { ($0 as NSString).lastPathComponent }, ["step-99999999", "step-100000000"])
        XCTAssertEqual(try store.newestValid().checkpoint.state.step, 100_000_000)
    }

    func testPruningNeverRemovesTheCheckpointJustSaved() throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 1)
        try save(store, step: 50)
        try save(store, step: 30)
        XCTAssertEqual(try entries(store), ["step-00000030"])
    }

    func testSavingAnExistingStepReplacesIt() throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 2)
        try save(store, step: 5)
        let replacement = [NamedTensor(name: "w", shape: [1], values: [42])]
        try store.save(step: 5, model: replacement, optimizer: [], state: state(step: 5))
        XCTAssertEqual(try entries(store), ["step-00000005"])
        XCTAssertEqual(try store.newestValid().checkpoint.model.tensors, replacement)
    }

    // MARK: Corruption in the newest checkpoint falls back to the older one

    /// Saves steps 1 and 2, lets `corrupt` damage step 2, and checks that step 1 is chosen with one
    /// warning naming step 2's directory and containing `problem`.
    private func assertFallsBack(problem: String, line: UInt = #line, corrupt: (String) throws -> Void) throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 3)
        let older = try save(store, step: 1)
        let newer = try save(store, step: 2)
        try corrupt(newer)
        let (loaded, warnings) = try store.newestValid()
        XCTAssertEqual(loaded.path, older, line: line)
        XCTAssertEqual(loaded.state.step, 1, line: line)
        XCTAssertEqual(loaded.model.tensors, model(step: 1), line: line)
        XCTAssertEqual(warnings.count, 1, "\(warnings)", line: line)
        XCTAssertTrue(warnings.first?.contains(newer) ?? false, "warning does not name \(newer): \(warnings)", line: line)
        XCTAssertTrue(warnings.first?.contains(problem) ?? false, "warning does not say '\(problem)': \(warnings)", line: line)
    }

    func testTruncatedModelFileFallsBackWithWarning() throws {
        try assertFallsBack(problem: "model.safetensors is") { directory in
            let path = directory + "/model.safetensors"
            let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            try bytes.prefix(bytes.count - 10).write(to: URL(fileURLWithPath: path))
        }
    }

    func testFlippedByteFallsBackWithWarning() throws {
        try assertFallsBack(problem: "model.safetensors has xxh64") { directory in
            let path = directory + "/model.safetensors"
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            bytes[bytes.count - 20] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: path))
        }
    }

    /// Where each tensor's bytes lie in a safetensors file: the 8-byte header length, the JSON
    /// header, then the data, with offsets relative to the data's start.
    private func tensorRanges(ofSafeTensorsAt path: String) throws -> [String: Range<Int>] {
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let header = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + headerLength)])) as? [String: Any])
        var ranges: [String: Range<Int>] = [:]
        for (name, entry) in header where name != "__metadata__" {
            let offsets = try XCTUnwrap((entry as? [String: Any])?["data_offsets"] as? [Int])
            ranges[name] = (8 + headerLength + offsets[0])..<(8 + headerLength + offsets[1])
        }
        return ranges
    }

    /// One flipped bit inside any tensor of either file, the size unchanged: every such damage is
    /// caught (a momentum buffer resumed silently would change the run's bits without a word).
    func testAFlippedByteInsideAnyTensorOfEitherFileFallsBack() throws {
        for file in ["model.safetensors", "optimizer.safetensors"] {
            let probe = try save(CheckpointStore(runDirectory: runDirectory + "/probe", keep: 1), step: 2)
            for (name, range) in try tensorRanges(ofSafeTensorsAt: probe + "/" + file) where !range.isEmpty {
                try? FileManager.default.removeItem(atPath: runDirectory + "/checkpoints")
                try assertFallsBack(problem: "\(file) has xxh64") { directory in
                    let path = directory + "/" + file
                    var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
                    let size = bytes.count
                    bytes[range.lowerBound + range.count / 2] ^= 0x10
                    try bytes.write(to: URL(fileURLWithPath: path))
                    XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: path)).count, size, "\(file): \(name)")
                }
            }
        }
    }

    func testAFlippedDigitInStateJSONsRecordedDigestFallsBack() throws {
        try assertFallsBack(problem: "optimizer.safetensors has xxh64") { directory in
            let path = directory + "/state.json"
            var text = try String(contentsOfFile: path, encoding: .utf8)
            let digest = try XCTUnwrap(text.range(of: #""optimizer.safetensors"[^}]*"xxh64" *: *"([0-9a-f])"#, options: .regularExpression))
            let digit = text.index(before: digest.upperBound)
            text.replaceSubrange(digit...digit, with: text[digit] == "0" ? "1" : "0")
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
    }

    func testMissingOptimizerFileFallsBackWithWarning() throws {
        try assertFallsBack(problem: "optimizer.safetensors is missing") { directory in
            try FileManager.default.removeItem(atPath: directory + "/optimizer.safetensors")
        }
    }

    func testGarbledStateFileFallsBackWithWarning() throws {
        try assertFallsBack(problem: "state.json") { directory in
            try Data(#"{"format_version": 1, "step": 2, "epo"#.utf8).write(to: URL(fileURLWithPath: directory + "/state.json"))
        }
    }

    func testStateFileMissingAFieldIsNamed() throws {
        try assertFallsBack(problem: "missing key 'config_hash'") { directory in
            let path = directory + "/state.json"
            var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as? [String: Any])
            json["config_hash"] = nil
            try JSONSerialization.data(withJSONObject: json).write(to: URL(fileURLWithPath: path))
        }
    }

    func testUnknownFormatVersionFallsBackWithWarning() throws {
        try assertFallsBack(problem: "format_version 2") { directory in
            let path = directory + "/state.json"
            let text = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "\"format_version\" : 1", with: "\"format_version\" : 2")
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        }
    }

    func testRenamedCheckpointDirectoryIsDetected() throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 3)
        let older = try save(store, step: 1)
        let newer = try save(store, step: 2)
        let renamed = store.checkpointsDirectory + "/step-00000009"
        try FileManager.default.moveItem(atPath: newer, toPath: renamed)
        let (loaded, warnings) = try store.newestValid()
        XCTAssertEqual(loaded.path, older)
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings[0].contains(renamed) && warnings[0].contains("step 2"), warnings[0])
        XCTAssertThrowsError(try CheckpointStore.load(directory: renamed)) { error in
            guard case CheckpointError.directoryStepMismatch(renamed, 2) = error else { return XCTFail("\(error)") }
        }
    }

    func testOnlyCorruptCheckpointsThrowListingEach() throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 3)
        let first = try save(store, step: 1)
        let second = try save(store, step: 2)
        try FileManager.default.removeItem(atPath: first + "/model.safetensors")
        try Data("not json".utf8).write(to: URL(fileURLWithPath: second + "/state.json"))
        XCTAssertThrowsError(try store.newestValid()) { error in
            guard case CheckpointError.noValidCheckpoint(let directory, let problems) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(directory, store.checkpointsDirectory)
            XCTAssertEqual(problems.count, 2)
            XCTAssertTrue(problems[0].contains(second) && problems[0].contains("state.json"), problems[0])
            XCTAssertTrue(problems[1].contains(first) && problems[1].contains("model.safetensors is missing"), problems[1])
            let description = "\(error)"
            XCTAssertTrue(description.contains(first) && description.contains(second), description)
        }
    }

    func testEmptyRunDirectoryThrowsNoCheckpoints() {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 1)
        XCTAssertThrowsError(try store.newestValid()) { error in
            guard case CheckpointError.noCheckpoints(store.checkpointsDirectory) = error else { return XCTFail("\(error)") }
            XCTAssertTrue("\(error)".contains("--resume"))
        }
        XCTAssertEqual(store.list(), [])
    }

    func testStaleTemporaryDirectoryIsIgnoredAndCleanedByTheNextSave() throws {
        let store = CheckpointStore(runDirectory: runDirectory, keep: 3)
        let saved = try save(store, step: 1)
        let stale = store.checkpointsDirectory + "/.tmp-step-00000002"
        try FileManager.default.createDirectory(atPath: stale, withIntermediateDirectories: false)
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: stale + "/model.safetensors"))

        XCTAssertEqual(store.list(), [saved])
        let (loaded, warnings) = try store.newestValid()
        XCTAssertEqual(loaded.path, saved)
        XCTAssertEqual(warnings.count, 1)
        XCTAssertTrue(warnings[0].contains(stale) && warnings[0].contains("interrupted save"), warnings[0])

        try save(store, step: 2)
        XCTAssertEqual(try entries(store), ["step-00000001", "step-00000002"])
    }

    func testUnwritableRunDirectoryIsReportedWithItsPath() throws {
        let blocker = runDirectory + "/not-a-directory"
        try Data([0]).write(to: URL(fileURLWithPath: blocker))
        let store = CheckpointStore(runDirectory: blocker, keep: 1)
        XCTAssertThrowsError(try save(store, step: 1)) { error in
            guard case CheckpointError.fileSystem(_, let path, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, blocker)
            XCTAssertTrue("\(error)".contains("Not a directory"), "\(error)")
        }
    }

    func testSaveRejectsInconsistentArguments() throws {
        XCTAssertThrowsError(try save(CheckpointStore(runDirectory: runDirectory, keep: 0), step: 1)) { error in
            guard case CheckpointError.invalidKeep(0) = error else { return XCTFail("\(error)") }
        }
        let store = CheckpointStore(runDirectory: runDirectory, keep: 1)
        XCTAssertThrowsError(try store.save(step: 4, model: model(step: 4), optimizer: [], state: state(step: 3))) { error in
            guard case CheckpointError.stepMismatch(4, 3) = error else { return XCTFail("\(error)") }
        }
        let broken = [NamedTensor(name: "w", shape: [3], values: [1])]
        XCTAssertThrowsError(try store.save(step: 4, model: broken, optimizer: [], state: state(step: 4))) { error in
            guard case SafeTensorsError.invalidTensor("w", _) = error else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(store.list(), [])
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.checkpointsDirectory + "/.tmp-step-00000004"))
    }
}
