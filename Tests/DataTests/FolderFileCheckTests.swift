import Data
import Foundation
import TestSupport
import XCTest

/// Opening a streamed folder checks each file's structure instead of decoding it: good files of
/// every kind pass with their size, damaged ones are named (or left out with skip_bad_files),
/// and one that passes but does not decode stops training naming it.
final class FolderFileCheckTests: XCTestCase {
    private func jpeg(_ width: Int, _ height: Int, channels: Int = 3, progressive: Bool = false) throws -> [UInt8] {
        try ImageEncoding.jpeg(
            width: width, height: height, channels: channels,
            pixels: FolderDecodeRegionTests.picture(width: width, height: height, channels: channels, seed: 1),
            progressive: progressive)
    }

    private func png(_ width: Int, _ height: Int, channels: Int) throws -> [UInt8] {
        try ImageEncoding.png(
            width: width, height: height, channels: channels,
            pixels: FolderDecodeRegionTests.picture(width: width, height: height, channels: min(channels, 3), seed: 2)
                .withChannels(from: min(channels, 3), to: channels))
    }

    /// A JPEG whose compressed data holds a restart marker it has no business holding: the
    /// markers are in order, so the check passes, but libjpeg stops on it.
    private func jpegDamagedInside() throws -> [UInt8] {
        var bytes = try jpeg(64, 48)
        var sos = 2
        while !(bytes[sos] == 0xFF && bytes[sos + 1] == 0xDA) { sos += 1 }
        let dataStart = sos + 2 + (Int(bytes[sos + 2]) << 8 | Int(bytes[sos + 3]))
        let middle = (dataStart + bytes.count) / 2
        bytes[middle] = 0xFF
        bytes[middle + 1] = 0xD3
        return bytes
    }

    func testGoodFilesPassWithTheirSize() throws {
        let directory = try TemporaryDirectory()
        let files: [(String, [UInt8], Int, Int)] = [
            ("colour.jpg", try jpeg(37, 23), 37, 23),
            ("grey.jpg", try jpeg(5, 70, channels: 1), 5, 70),
            ("progressive.jpg", try jpeg(64, 33, progressive: true), 64, 33),
            ("grey.png", try png(9, 4, channels: 1), 9, 4),
            ("rgb.png", try png(31, 17, channels: 3), 31, 17),
            ("rgba.png", try png(3, 8, channels: 4), 3, 8),
        ]
        for (name, bytes, width, height) in files {
            let path = try directory.write(name, bytes)
            let size = try ImageFile.check(path: path)
            XCTAssertEqual([size.width, size.height], [width, height], name)
        }
        // Bytes after the end marker are no damage (cameras append thumbnails and padding).
        let padded = try directory.write("padded.jpg", try jpeg(8, 8) + [0, 0, 0xFF, 0xD9, 7])
        XCTAssertEqual(try ImageFile.check(path: padded).width, 8)
    }

    func testDamagedFilesAreNamedWithTheReason() throws {
        let directory = try TemporaryDirectory()
        let goodJPEG = try jpeg(40, 30), goodPNG = try png(40, 30, channels: 3)
        var flippedPNGData = goodPNG
        flippedPNGData[goodPNG.count - 20] ^= 0x55  // inside IDAT
        let idat = goodPNG.indices.first { goodPNG[$0..<$0 + 4].elementsEqual("IDAT".utf8) }!
        var longPNGChunk = goodPNG
        longPNGChunk[idat - 2] = 0x7F  // IDAT's length now runs past the end
        var jpegBadLength = goodJPEG
        jpegBadLength[4] = 0xFF  // APP0/DQT length past the end
        let cases: [(String, [UInt8], String)] = [
            ("empty.jpg", [], "empty"),
            ("garbage.png", Array("not an image at all".utf8), "neither a JPEG nor a PNG"),
            ("jpeg-no-end.jpg", Array(goodJPEG.dropLast(2)), "truncated"),
            ("jpeg-half.jpg", Array(goodJPEG.prefix(goodJPEG.count / 2)), "truncated"),
            ("jpeg-header-only.jpg", Array(goodJPEG.prefix(30)), "truncated"),
            ("jpeg-bad-length.jpg", jpegBadLength, "runs past the end"),
            ("png-half.png", Array(goodPNG.prefix(goodPNG.count / 2)), "truncated"),
            ("png-no-end.png", Array(goodPNG.dropLast(12)), "truncated"),
            ("png-flipped.png", flippedPNGData, "CRC"),
            ("png-long-chunk.png", longPNGChunk, "runs past the end"),
            ("png-signature-only.png", Array(goodPNG.prefix(8)), "truncated"),
        ]
        for (name, bytes, reason) in cases {
            let path = try directory.write(name, bytes)
            XCTAssertThrowsError(try ImageFile.check(path: path), name) { error in
                XCTAssertTrue("\(error)".hasPrefix(path + ": cannot decode"), "\(name): \(error)")
                XCTAssertTrue("\(error)".contains(reason), "\(name): \(error)")
                XCTAssertTrue("\(error)".contains("skip_bad_files"), "\(name): \(error)")
            }
            // What the check refuses, decoding refuses too, but for the missing IEND, which
            // libpng does not read.
            if name != "png-no-end.png" { XCTAssertThrowsError(try ImageFile.decode(path: path, channels: 3), name) }
        }
        let inside = try directory.write("inside.jpg", try jpegDamagedInside())
        XCTAssertNoThrow(try ImageFile.check(path: inside))
        XCTAssertThrowsError(try ImageFile.decode(path: inside, channels: 3)) {
            XCTAssertTrue("\($0)".hasPrefix(inside + ": cannot decode"), "\($0)")
        }
    }

    /// Opening a stream: a damaged file stops it naming the file, or with skip_bad_files is left
    /// out and listed; a file of the wrong size for the model is named from its header alone.
    func testOpeningAStreamNamesOrLeavesOutDamagedFiles() throws {
        let directory = try TemporaryDirectory()
        for label in 0..<2 {
            try FileManager.default.createDirectory(atPath: directory.path + "/train/c\(label)", withIntermediateDirectories: true)
            for i in 0..<4 { try directory.write("train/c\(label)/\(i).jpg", try jpeg(16, 16)) }
        }
        let bad = try directory.write("train/c1/truncated.jpg", Array(try jpeg(16, 16).dropLast(40)))
        let pipeline = ImagePipeline(mean: ImageFolder.imageNetMean, standardDeviation: ImageFolder.imageNetStandardDeviation)
        func open(skip: Bool) throws -> ImageFolderStream {
            try ImageFolderStream(
                try ImageFolderListing.list(directory.path + "/train"), name: "check", pipeline: pipeline, training: false,
                channels: 3, height: 16, width: 16, skipBadFiles: skip, threads: 2)
        }
        XCTAssertThrowsError(try open(skip: false)) { XCTAssertTrue("\($0)".hasPrefix(bad + ": cannot decode"), "\($0)") }
        let stream = try open(skip: true)
        XCTAssertEqual(stream.count, 8)
        XCTAssertEqual(stream.skipped, [bad])
        try FileManager.default.removeItem(atPath: bad)
        let large = try directory.write("train/c0/large.jpg", try jpeg(20, 16))
        XCTAssertThrowsError(try open(skip: true)) { XCTAssertTrue("\($0)".hasPrefix(large + ": is 20x16"), "\($0)") }
    }

    /// A file that passes the check but does not decode stops `cnn data bench` (training's sample
    /// maker) with exit code 2 and the file's name; with skip_bad_files the run goes on.
    func testAFileThatFailsWhenItsSampleIsMadeStopsTheRunNamingIt() throws {
        let directory = try TemporaryDirectory()
        for split in ["train", "val"] {
            for label in 0..<2 {
                try FileManager.default.createDirectory(atPath: "\(directory.path)/\(split)/c\(label)", withIntermediateDirectories: true)
                for i in 0..<3 { try directory.write("\(split)/c\(label)/\(i).jpg", try jpeg(64, 48)) }
            }
        }
        let inside = try directory.write("train/c1/inside.jpg", try jpegDamagedInside())
        for skip in [false, true] {
            let config = try directory.write("config-\(skip).yaml", Array("""
                model: {input: [3, 32, 32], layers: [globalavgpool, flatten, {dense: 2}]}
                data:
                  dataset: folder
                  path: \(directory.path)
                  skip_bad_files: \(skip)
                  transforms: {random_resized_crop: {size: 32}, resize: 32, center_crop: 32}
                train: {batch: 7, micro_batch: 7}

                """.utf8))
            let outcome = try LocalCluster.run(
                LocalCluster.executable("cnn"), ["data", "bench", config, "--images", "7", "--batch", "7"], seconds: 60)
            if skip {
                XCTAssertEqual(outcome.status, 0, outcome.combined)
                XCTAssertTrue(outcome.error.contains("warning: \(inside): cannot decode"), outcome.combined)
            } else {
                XCTAssertEqual(outcome.status, 2, outcome.combined)
                XCTAssertTrue(outcome.error.contains("error: \(inside): cannot decode"), outcome.combined)
            }
        }
    }
}

extension FolderFileCheckTests {
    /// The same file met by workers mid-run: the coordinator stops the run at once, naming the
    /// file, instead of losing its workers one by one and waiting for others to join.
    func testAWorkerThatCannotMakeASampleStopsTheRunNamingTheFile() throws {
        let directory = try TemporaryDirectory()
        for split in ["train", "val"] {
            for label in 0..<2 {
                try FileManager.default.createDirectory(atPath: "\(directory.path)/\(split)/c\(label)", withIntermediateDirectories: true)
                for i in 0..<3 { try directory.write("\(split)/c\(label)/\(i).jpg", try jpeg(64, 48)) }
            }
        }
        let inside = try directory.write("train/c1/inside.jpg", try jpegDamagedInside())
        let config = try directory.write("config.yaml", Array("""
            model: {input: [3, 32, 32], layers: [globalavgpool, flatten, {dense: 2}]}
            data:
              dataset: folder
              path: \(directory.path)
              transforms: {random_resized_crop: {size: 32}, resize: 32, center_crop: 32}
            train: {batch: 6, micro_batch: 2, epochs: 1}

            """.utf8))
        let start = Date()
        let outcome = try LocalCluster.run(
            LocalCluster.executable("cnn-coord"), ["--config", config, "--spawn-workers", "2", "--run-dir", directory.path + "/run", "--quiet"],
            seconds: 60)
        XCTAssertFalse(outcome.timedOut, outcome.combined)
        XCTAssertEqual(outcome.status, 1, outcome.combined)
        XCTAssertTrue(outcome.error.contains("could not make a sample") && outcome.error.contains("\(inside): cannot decode"), outcome.combined)
        XCTAssertLessThan(Date().timeIntervalSince(start), 30, "the run must stop at once, not after the join timeout")
    }
}

extension Array where Element == UInt8 {
    /// Pixels of `from` channels as `to` channels, the last channel repeated into the new ones.
    func withChannels(from: Int, to: Int) -> [UInt8] {
        guard from != to else { return self }
        var output: [UInt8] = []
        for p in 0..<count / from {
            let pixel = Array(self[p * from..<(p + 1) * from])
            output += (0..<to).map { pixel[Swift.min($0, from - 1)] }
        }
        return output
    }
}
