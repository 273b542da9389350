import Foundation
import Monitoring
import TestSupport
import XCTest

final class ImageTests: XCTestCase {
    func testTextAndBinaryPGMAndPPMDecodeToTheSamePixels() throws {
        let text = try NetpbmCodec.decode(Array("P2\n# a comment\n3 2\n255\n0 128 255\n1 2 3\n".utf8), source: "a.pgm")
        XCTAssertEqual(text, RasterImage(width: 3, height: 2, channels: 1, pixels: [0, 128, 255, 1, 2, 3]))
        let binary = try NetpbmCodec.decode(NetpbmCodec.encode(text), source: "b.pgm")
        XCTAssertEqual(binary, text)
        let colour = try NetpbmCodec.decode(Array("P3 1 1 15 15 0 5".utf8), source: "c.ppm")
        XCTAssertEqual(colour.pixels, [255, 0, 85], "samples are scaled from the file's maximum to 255")
        let wide = try NetpbmCodec.decode(Array("P5 2 1 65535\n".utf8) + [0xFF, 0xFF, 0x80, 0x00], source: "d.pgm")
        XCTAssertEqual(wide.pixels, [255, 128])
    }

    func testDamagedNetpbmFilesAreRejectedSayingWhatIsWrong() {
        let cases: [([UInt8], String)] = [
            (Array("P5 4 4 255\n".utf8) + [1, 2, 3], "promises 16 bytes of samples but the file holds 3"),
            (Array("P2 2 1 255 1 300".utf8), "sample 300 exceeds the maximum value 255"),
            (Array("P2 0 1 255".utf8), "width and height must be positive"),
            (Array("GIF89a".utf8), "does not start with P2, P3, P5 or P6"),
        ]
        for (bytes, expected) in cases {
            XCTAssertThrowsError(try NetpbmCodec.decode(bytes, source: "bad.pgm")) { error in
                XCTAssertTrue("\(error)".hasPrefix("bad.pgm: not a valid PGM/PPM image"), "\(error)")
                XCTAssertTrue("\(error)".contains(expected), "\(error)")
            }
        }
    }

    func testPNGRoundTripsThroughLibpngInGreyAndColour() throws {
        let folder = try LocalCluster.temporaryDirectory("png")
        let grey = RasterImage(width: 5, height: 3, channels: 1, pixels: (0..<15).map { UInt8($0 * 17) })
        try PNGCodec.write(grey, to: folder + "/grey.png")
        XCTAssertEqual(try PNGCodec.read(path: folder + "/grey.png", channels: 1), grey)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: folder + "/grey.png"))
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let colour = RasterImage(width: 2, height: 2, channels: 3, pixels: [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30])
        try PNGCodec.write(colour, to: folder + "/colour.png")
        XCTAssertEqual(try PNGCodec.read(path: folder + "/colour.png", channels: 3), colour)
        // Read as grey, colour becomes luma.
        XCTAssertEqual(try PNGCodec.read(path: folder + "/colour.png", channels: 1).pixels.count, 4)
        XCTAssertEqual(colour.converted(toChannels: 1).pixels, [76, 150, 29, 18])
    }

    func testNonImagesAndMissingFilesAreRefusedNamingTheFormats() throws {
        let folder = try LocalCluster.temporaryDirectory("notimage")
        try "hello".write(toFile: folder + "/notes.txt", atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try ImageReference(folder + "/notes.txt").load(channels: 1)) { error in
            XCTAssertTrue("\(error)".contains("not a PNG, PGM or PPM image"), "\(error)")
        }
        try Data([0x89, 0x50, 0x4E, 0x47, 0, 0, 0, 0]).write(to: URL(fileURLWithPath: folder + "/broken.png"))
        XCTAssertThrowsError(try ImageReference(folder + "/broken.png").load(channels: 1)) { error in
            XCTAssertTrue("\(error)".contains("broken.png: cannot read as PNG (libpng:"), "\(error)")
        }
        XCTAssertThrowsError(try ImageReference(folder + "/missing.pgm").load(channels: 1)) { error in
            XCTAssertTrue("\(error)".contains("missing.pgm: no such file"), "\(error)")
        }
    }

    func testIDXReferencesNameASampleAndItsLabel() throws {
        let reference = ImageReference("/data/t10k-images-idx3-ubyte.gz:42")
        XCTAssertEqual(reference.path, "/data/t10k-images-idx3-ubyte.gz")
        XCTAssertEqual(reference.index, 42)
        XCTAssertNil(ImageReference("C:picture.png").index)
        let folder = try LocalCluster.temporaryDirectory("idx")
        // Three 2x2 images and their labels.
        let images: [UInt8] = [0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 2] + (0..<12).map { UInt8($0 * 20) }
        let labels: [UInt8] = [0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 9]
        try Data(images).write(to: URL(fileURLWithPath: folder + "/x-images-idx3-ubyte"))
        try Data(labels).write(to: URL(fileURLWithPath: folder + "/x-labels-idx1-ubyte"))
        let second = ImageReference(folder + "/x-images-idx3-ubyte:1")
        XCTAssertEqual(try second.load(channels: 1).pixels, [80, 100, 120, 140])
        XCTAssertEqual(second.label(), 1)
        XCTAssertThrowsError(try ImageReference(folder + "/x-images-idx3-ubyte:3").load(channels: 1)) { error in
            XCTAssertTrue("\(error)".contains("holds 3 images; sample 3 does not exist (use 0 to 2)"), "\(error)")
        }
        XCTAssertThrowsError(try ImageReference(folder + "/x-images-idx3-ubyte").load(channels: 1)) { error in
            XCTAssertTrue("\(error)".contains("looks like an IDX file; name a sample with"), "\(error)")
        }
    }

    func testNormalisationMatchesTheDataLoaders() {
        let fashion = InputNormalisation.forDataset("fashion-mnist", channels: 1)
        let image = RasterImage(width: 2, height: 1, channels: 1, pixels: [0, 255])
        let mean: Float = 0.2860, deviation: Float = 0.3530
        let zero: Float = (0 - mean) / deviation, one: Float = (1 - mean) / deviation
        XCTAssertEqual(fashion.apply(to: image), [zero, one])
        let cifar = InputNormalisation.forDataset("cifar10", channels: 3)
        let rgb = cifar.apply(to: RasterImage(width: 1, height: 1, channels: 3, pixels: [255, 255, 255]))
        let expected: [Float] = [(1 - 0.4914) / 0.2470, (1 - 0.4822) / 0.2435, (1 - 0.4465) / 0.2616]
        XCTAssertEqual(rgb, expected)
    }
}
