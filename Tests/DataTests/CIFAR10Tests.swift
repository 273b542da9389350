import Data
import Foundation
import XCTest

final class CIFAR10Tests: XCTestCase {
    /// One record: label, then R, G, B planes. Each plane's byte encodes (channel, y, x) so any
    /// mix-up of planes, rows or columns shows.
    func record(label: UInt8, salt: Int = 0) -> [UInt8] {
        var bytes = [label]
        for channel in 0..<3 {
            for y in 0..<32 {
                for x in 0..<32 {
                    bytes.append(byte(channel: channel, y: y, x: x, salt: salt))
                }
            }
        }
        return bytes
    }

    func byte(channel: Int, y: Int, x: Int, salt: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: channel * 80 + y * 3 + x * 5 + salt)
    }

    func normalised(_ byte: UInt8, channel: Int) -> Float {
        (Float(byte) / 255 - CIFAR10.mean[channel]) / CIFAR10.standardDeviation[channel]
    }

    func testRecordsKeepPlaneOrderAndAreNormalisedPerChannel() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("test_batch.bin", record(label: 3) + record(label: 8, salt: 1))
        let set = try CIFAR10.load(.test, directory: directory.path)
        XCTAssertEqual(set.name, "cifar10/test")
        XCTAssertEqual([set.count, set.channels, set.height, set.width, set.classes], [2, 3, 32, 32, 10])
        XCTAssertEqual(set.labels, [3, 8])
        for sample in 0..<2 {
            for channel in 0..<3 {
                for (y, x) in [(0, 0), (0, 31), (31, 0), (17, 9), (31, 31)] {
                    let value = set.pixels[((sample * 3 + channel) * 32 + y) * 32 + x]
                    let expected = normalised(byte(channel: channel, y: y, x: x, salt: sample), channel: channel)
                    XCTAssertEqual(value, expected, accuracy: 1e-6, "sample \(sample) channel \(channel) (\(y), \(x)) of \(path)")
                }
            }
        }
    }

    func testTrainingSplitConcatenatesTheFiveBatchesInOrderFromTheNestedFolder() throws {
        let directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(
            atPath: directory.path + "/cifar-10-batches-bin", withIntermediateDirectories: false)
        for batch in 1...5 {
            let records = record(label: UInt8(batch)) + record(label: UInt8(batch + 4), salt: batch)
            try directory.write("cifar-10-batches-bin/data_batch_\(batch).bin", records)
        }
        let set = try CIFAR10.load(.train, directory: directory.path)
        XCTAssertEqual(set.count, 10)
        XCTAssertEqual(set.labels, [1, 5, 2, 6, 3, 7, 4, 8, 5, 9])
        // The last image is batch 5's second record (salt 5); its blue plane's corner byte tells.
        let last = set.pixels[(9 * 3 + 2) * 1024 + 1023]
        XCTAssertEqual(last, normalised(byte(channel: 2, y: 31, x: 31, salt: 5), channel: 2), accuracy: 1e-6)
    }

    func testGzippedBatchReadsLikePlain() throws {
        let directory = try TemporaryDirectory()
        let plain = try directory.write("plain.bin", record(label: 2, salt: 9))
        let packed = try directory.writeGzip("packed.bin", record(label: 2, salt: 9))
        let a = try CIFAR10.load(paths: [plain], name: "a")
        let b = try CIFAR10.load(paths: [packed], name: "b")
        XCTAssertEqual(a.pixels, b.pixels)
        XCTAssertEqual(a.labels, b.labels)
    }

    func testPartialRecordIsRejectedWithPath() throws {
        let directory = try TemporaryDirectory()
        let bytes = record(label: 1) + Array(record(label: 2).prefix(100))
        let path = try directory.write("test_batch.bin", bytes)
        let error = dataError { _ = try CIFAR10.load(.test, directory: directory.path) }
        XCTAssertEqual(error, .incompleteRecord(path: path, recordBytes: 3073, fileBytes: 3173))
    }

    func testLabelOutOfRangeIsRejectedWithRecordIndex() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("test_batch.bin", record(label: 1) + record(label: 10))
        let error = dataError { _ = try CIFAR10.load(.test, directory: directory.path) }
        XCTAssertEqual(error, .labelOutOfRange(path: path, index: 1, label: 10, classes: 10))
    }

    func testMissingBatchSaysWhereToGetTheBinaryVersion() throws {
        let directory = try TemporaryDirectory()
        try directory.write("data_batch_1.bin", record(label: 1))
        let error = dataError { _ = try CIFAR10.load(.train, directory: directory.path) }
        guard case .fileNotFound(let path, _) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertEqual(path, directory.path + "/data_batch_2.bin")
        XCTAssertTrue(error!.description.contains("binary version of CIFAR-10"))
        XCTAssertTrue(error!.description.contains("data.path"))
    }

    func testEmptyBatchIsRejected() throws {
        let directory = try TemporaryDirectory()
        let path = try directory.write("test_batch.bin", [])
        XCTAssertEqual(dataError { _ = try CIFAR10.load(.test, directory: directory.path) }, .empty(path: path))
    }
}
