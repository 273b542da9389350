import Checkpoint
import Foundation
import XCTest

/// A checkpoint that does not fit is refused whole, with the directory and the space it needs,
/// and the newest complete checkpoint stays the one a resume takes. The disk is a small tmpfs,
/// which needs root (a test host or CI); elsewhere these tests skip.
final class FullDiskTests: XCTestCase {
    private var mountPoint = ""

    private func mountTmpfs(_ options: String) throws {
        mountPoint = FileManager.default.temporaryDirectory.appendingPathComponent("cnn-fulldisk-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mount = Process()
        mount.executableURL = URL(fileURLWithPath: "/bin/mount")
        mount.arguments = ["-t", "tmpfs", "-o", options, "tmpfs", mountPoint]
        mount.standardError = FileHandle.nullDevice
        try mount.run()
        mount.waitUntilExit()
        guard mount.terminationStatus == 0 else {
            throw XCTSkip("cannot mount a tmpfs here (needs root): a full disk cannot be made")
        }
    }

    override func tearDown() {
        guard !mountPoint.isEmpty else { return }
        let umount = Process()
        umount.executableURL = URL(fileURLWithPath: "/bin/umount")
        umount.arguments = [mountPoint]
        try? umount.run()
        umount.waitUntilExit()
        try? FileManager.default.removeItem(atPath: mountPoint)
    }

    /// A model of `floats` values and an optimiser state of as many.
    private func save(_ store: CheckpointStore, step: Int, floats: Int) throws -> String {
        let values = (0..<floats).map { Float($0 % 1000) + Float(step) }
        return try store.save(
            step: step, model: [NamedTensor(name: "0.weight", shape: [floats], values: values)],
            optimizer: [NamedTensor(name: "0.weight.momentum_buffer", shape: [floats], values: values)],
            state: CheckpointState(step: step, epoch: 0, positionInEpoch: step * 8, configHash: "full-disk",
                                   createdBy: "test", createdAt: "2026-12-07T00:00:00Z", extra: [:]))
    }

    private func leftovers(_ store: CheckpointStore) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: store.checkpointsDirectory).sorted()
    }

    func testACheckpointThatDoesNotFitIsRefusedWholeNamingTheDirectoryAndTheSpace() throws {
        try mountTmpfs("size=1m")
        let store = CheckpointStore(runDirectory: mountPoint + "/run", keep: 3)
        let first = try save(store, step: 5, floats: 50_000)  // 400 KB of tensors
        XCTAssertThrowsError(try save(store, step: 10, floats: 100_000)) { error in
            guard case CheckpointError.noSpace(let directory, let needed, let available) = error else {
                return XCTFail("expected noSpace, got \(error)")
            }
            XCTAssertEqual(directory, store.checkpointsDirectory)
            XCTAssertGreaterThan(needed, 800_000)
            XCTAssertLessThan(available, needed)
            let text = "\(error)"
            XCTAssertTrue(text.contains("'\(store.checkpointsDirectory)'") && text.contains("MB free there") && text.contains("--resume"), text)
        }
        XCTAssertEqual(try leftovers(store), ["step-00000005"], "a refused checkpoint left something behind")
        XCTAssertEqual(try store.newestValid().checkpoint.path, first)
    }

    func testAFileSystemFullWhileWritingLeavesNothingHalfWritten() throws {
        // Bytes to spare, but only a few files: the free-space check passes and a write fails
        // part way (as when another writer takes the space first).
        try mountTmpfs("size=4m,nr_inodes=9")
        let store = CheckpointStore(runDirectory: mountPoint + "/run", keep: 3)
        let first = try save(store, step: 5, floats: 1_000)
        XCTAssertThrowsError(try save(store, step: 10, floats: 1_000)) { error in
            guard case CheckpointError.noSpace(let directory, _, _) = error else { return XCTFail("expected noSpace, got \(error)") }
            XCTAssertEqual(directory, store.checkpointsDirectory)
            XCTAssertTrue("\(error)".contains("ran out of files (inodes) or reached a quota"), "\(error)")
        }
        XCTAssertEqual(try leftovers(store), ["step-00000005"], "a failed checkpoint left something behind")
        XCTAssertEqual(try store.newestValid().checkpoint.path, first)
    }
}
