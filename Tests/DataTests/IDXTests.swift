import Data
import Foundation
import XCTest

final class IDXTests: XCTestCase {
    /// Three 2x3 images with bytes chosen to hit both ends of the range and a few values between.
    let imageBytes: [UInt8] = [
        0, 255, 51, 102, 153, 204,
        1, 2, 3, 4, 5, 6,
        250, 128, 127, 0, 255, 17,
    ]
    let labelBytes: [UInt8] = [3, 0, 9]
    let mean: Float = 0.5
    let deviation: Float = 0.25

    func normalised(_ byte: UInt8) -> Float { (Float(byte) / 255 - mean) / deviation }

    func writeSet(
        in directory: TemporaryDirectory, gzip: Bool = false,
        images: [UInt8]? = nil, labels: [UInt8]? = nil
    ) throws -> (images: String, labels: String) {
        let imageFile = images ?? idxBytes(dimensions: [3, 2, 3], payload: imageBytes)
        let labelFile = labels ?? idxBytes(dimensions: [3], payload: labelBytes)
        if gzip {
            return (try directory.writeGzip("images.gz", imageFile), try directory.writeGzip("labels.gz", labelFile))
        }
        return (try directory.write("images", imageFile), try directory.write("labels", labelFile))
    }

    func load(_ paths: (images: String, labels: String), classes: Int = 10) throws -> ImageSet {
        try IDXImages.load(
            imagesPath: paths.images, labelsPath: paths.labels, mean: mean, standardDeviation: deviation,
            name: "hand-built", classes: classes)
    }

    func testPlainIDXImagesAreNormalisedToKnownValues() throws {
        let directory = try TemporaryDirectory()
        let set = try load(writeSet(in: directory))
        XCTAssertEqual(set.name, "hand-built")
        XCTAssertEqual([set.count, set.channels, set.height, set.width, set.classes], [3, 1, 2, 3, 10])
        XCTAssertEqual(set.sampleSize, 6)
        XCTAssertEqual(set.labels, labelBytes.map { Int32($0) })
        XCTAssertEqual(set.pixels.count, imageBytes.count)
        for (value, byte) in zip(set.pixels, imageBytes) {
            XCTAssertEqual(value, normalised(byte), accuracy: 1e-6)
        }
        XCTAssertEqual(set.pixels[0], -2, accuracy: 1e-6)  // (0 - 0.5) / 0.25
        XCTAssertEqual(set.pixels[1], 2, accuracy: 1e-6)  // (1 - 0.5) / 0.25
        XCTAssertEqual(set.pixels[2], -1.2, accuracy: 1e-6)  // (0.2 - 0.5) / 0.25
    }

    func testGzippedIDXGivesExactlyTheSameSetAsPlain() throws {
        let directory = try TemporaryDirectory()
        let plain = try load(writeSet(in: directory))
        let compressed = try load(writeSet(in: directory, gzip: true))
        XCTAssertEqual(compressed.pixels, plain.pixels)
        XCTAssertEqual(compressed.labels, plain.labels)
        XCTAssertEqual(compressed.count, 3)
    }

    func testIDXFileReadGivesDimensionsAndPayloadForPlainAndGzip() throws {
        let directory = try TemporaryDirectory()
        let bytes = idxBytes(dimensions: [3, 2, 3], payload: imageBytes)
        for path in [try directory.write("plain", bytes), try directory.writeGzip("packed", bytes)] {
            let file = try IDXFile.read(path: path)
            XCTAssertEqual(file.dimensions, [3, 2, 3], path)
            XCTAssertEqual(file.bytes, imageBytes, path)
        }
    }

    func testLargeGzipFileLargerThanItsFirstGuessDecompressesWhole() throws {
        // 1 MiB of highly compressible data: the output buffer must grow well past the input size.
        let directory = try TemporaryDirectory()
        let payload = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 / 4096) }
        let path = try directory.writeGzip("big.gz", idxBytes(dimensions: [1 << 20], payload: payload))
        XCTAssertEqual(try IDXFile.read(path: path).bytes, payload)
    }

    func testConcatenatedGzipMembersAreReadAsOneFile() throws {
        let directory = try TemporaryDirectory()
        let whole = idxBytes(dimensions: [3], payload: labelBytes)
        let first = try Foundation.Data(contentsOf: URL(fileURLWithPath: directory.writeGzip("a.gz", Array(whole[0..<5]))))
        let second = try Foundation.Data(contentsOf: URL(fileURLWithPath: directory.writeGzip("b.gz", Array(whole[5...]))))
        let path = try directory.write("joined.gz", [UInt8](first) + [UInt8](second))
        XCTAssertEqual(try IDXFile.read(path: path).bytes, labelBytes)
    }

    func testMissingFileIsRejectedWithPath() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(in: directory)
        let missing = directory.path + "/no-such-images"
        let error = dataError { _ = try self.load((missing, paths.labels)) }
        guard case .fileNotFound(let path, _) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertEqual(path, missing)
        XCTAssertTrue(error!.description.contains(missing))
    }

    func testDirectoryInsteadOfFileIsRejectedAsUnreadable() throws {
        let directory = try TemporaryDirectory()
        let error = dataError { _ = try IDXFile.read(path: directory.path) }
        guard case .unreadable(let path, _) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertEqual(path, directory.path)
    }

    func testWrongMagicIsRejectedWithPath() throws {
        let directory = try TemporaryDirectory()
        var bytes = idxBytes(dimensions: [3, 2, 3], payload: imageBytes)
        bytes[0] = 0x50  // "PK", as if a zip archive had been saved under the IDX name
        bytes[1] = 0x4b
        let paths = try writeSet(in: directory, images: bytes)
        let error = dataError { _ = try self.load(paths) }
        XCTAssertEqual(error, .badMagic(path: paths.images, found: [0x50, 0x4b, 0x08, 0x03]))
        XCTAssertTrue(error!.description.contains("not an IDX file"))
    }

    func testNonByteElementTypeIsRejectedSayingOnlyBytesAreSupported() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(in: directory, images: idxBytes(typeCode: 0x0D, dimensions: [3, 2, 3], payload: imageBytes))
        let error = dataError { _ = try self.load(paths) }
        XCTAssertEqual(error, .unsupportedElementType(path: paths.images, typeCode: 0x0D))
        XCTAssertTrue(error!.description.contains("32-bit float"))
        XCTAssertTrue(error!.description.contains("only 0x08 (unsigned byte)"))
    }

    func testTruncatedFileIsRejectedWithPath() throws {
        let directory = try TemporaryDirectory()
        let bytes = idxBytes(dimensions: [3, 2, 3], payload: imageBytes)
        let paths = try writeSet(in: directory, images: Array(bytes.dropLast()))
        let error = dataError { _ = try self.load(paths) }
        XCTAssertEqual(error, .truncated(path: paths.images, expectedBytes: bytes.count, actualBytes: bytes.count - 1))
        XCTAssertTrue(error!.description.contains(paths.images))
    }

    func testFileCutInsideItsHeaderIsRejectedAsTruncated() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(in: directory, images: [0, 0, 8, 3, 0, 0])
        let error = dataError { _ = try self.load(paths) }
        XCTAssertEqual(error, .truncated(path: paths.images, expectedBytes: 16, actualBytes: 6))
    }

    func testHeaderWithOverflowingSizesIsRejectedAsTruncated() throws {
        let directory = try TemporaryDirectory()
        let sizes = [UInt8](repeating: 0xff, count: 12)
        let paths = try writeSet(in: directory, images: [0, 0, 8, 3] + sizes)
        let error = dataError { _ = try self.load(paths) }
        guard case .truncated(let path, _, 16) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertEqual(path, paths.images)
    }

    func testTrailingBytesAreRejectedWithPath() throws {
        let directory = try TemporaryDirectory()
        let bytes = idxBytes(dimensions: [3], payload: labelBytes)
        let paths = try writeSet(in: directory, labels: bytes + [7, 7])
        let error = dataError { _ = try self.load(paths) }
        XCTAssertEqual(error, .trailingBytes(path: paths.labels, expectedBytes: bytes.count, actualBytes: bytes.count + 2))
    }

    func testSwappedImagesAndLabelsAreRejectedByDimensionCount() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(in: directory)
        let error = dataError { _ = try self.load((paths.labels, paths.images)) }
        // The labels are read first, from what is really the images file.
        XCTAssertEqual(error, .wrongDimensionCount(path: paths.images, expected: 1, found: 3))
        XCTAssertTrue(error!.description.contains("swapped"))
    }

    func testDifferentImageAndLabelCountsAreRejectedNamingBothFiles() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(in: directory, labels: idxBytes(dimensions: [2], payload: [1, 2]))
        let error = dataError { _ = try self.load(paths) }
        XCTAssertEqual(error, .countMismatch(imagesPath: paths.images, images: 3, labelsPath: paths.labels, labels: 2))
        XCTAssertTrue(error!.description.contains(paths.images) && error!.description.contains(paths.labels))
    }

    func testGzipGarbageIsRejectedAsCorruptCompression() throws {
        let directory = try TemporaryDirectory()
        let garbage: [UInt8] = [0x1f, 0x8b] + (0..<64).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let path = try directory.write("garbage.gz", garbage)
        let error = dataError { _ = try IDXFile.read(path: path) }
        guard case .corruptCompression(let errorPath, _) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertEqual(errorPath, path)
        XCTAssertTrue(error!.description.contains("gzip -t"))
    }

    func testCutShortGzipIsRejectedAsCorruptCompression() throws {
        let directory = try TemporaryDirectory()
        let payload = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7919 >> 3) }
        let whole = try directory.writeGzip("whole.gz", idxBytes(dimensions: [5000], payload: payload))
        let bytes = [UInt8](try Foundation.Data(contentsOf: URL(fileURLWithPath: whole)))
        let path = try directory.write("half.gz", Array(bytes[0..<(bytes.count / 2)]))
        let error = dataError { _ = try IDXFile.read(path: path) }
        XCTAssertEqual(error, .corruptCompression(path: path, reason: "unexpected end of the compressed data"))
    }

    func testGarbageAfterGzipDataIsRejected() throws {
        let directory = try TemporaryDirectory()
        let whole = try directory.writeGzip("whole.gz", idxBytes(dimensions: [3], payload: labelBytes))
        let bytes = [UInt8](try Foundation.Data(contentsOf: URL(fileURLWithPath: whole)))
        let path = try directory.write("tail.gz", bytes + [1, 2, 3])
        let error = dataError { _ = try IDXFile.read(path: path) }
        guard case .corruptCompression(path, let reason) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertTrue(reason.contains("trailing garbage"))
    }

    func testLabelOutOfRangeIsRejectedWithIndexAndPath() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(in: directory, labels: idxBytes(dimensions: [3], payload: [3, 10, 1]))
        let error = dataError { _ = try self.load(paths) }
        XCTAssertEqual(error, .labelOutOfRange(path: paths.labels, index: 1, label: 10, classes: 10))
        XCTAssertEqual(dataError { _ = try self.load(self.writeSet(in: directory), classes: 5) },
                       .labelOutOfRange(path: paths.labels, index: 2, label: 9, classes: 5))
    }

    func testEmptySetIsRejected() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(
            in: directory, images: idxBytes(dimensions: [0, 2, 3], payload: []),
            labels: idxBytes(dimensions: [0], payload: []))
        XCTAssertEqual(dataError { _ = try self.load(paths) }, .empty(path: paths.labels))
    }

    func testZeroStandardDeviationIsRejected() throws {
        let directory = try TemporaryDirectory()
        let paths = try writeSet(in: directory)
        let error = dataError {
            _ = try IDXImages.load(
                imagesPath: paths.images, labelsPath: paths.labels, mean: 0, standardDeviation: 0, name: "x")
        }
        guard case .invalidSetting = error else { return XCTFail("got \(String(describing: error))") }
    }
}
