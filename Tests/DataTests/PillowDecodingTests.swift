import Data
import Foundation
import TestSupport
import XCTest

/// The decoders against Pillow, which torchvision's ImageFolder loads files with: the same
/// pixels for JPEG (libjpeg-turbo with libjpeg's defaults, as Pillow) and PNG, and the same
/// conversions (colour to grey with Pillow's luma weights, alpha dropped).
final class PillowDecodingTests: XCTestCase {
    /// Writes every file in `directory` decoded by Pillow as FILE.L and FILE.RGB (raw bytes).
    private static let script = """
        import os, sys
        from PIL import Image
        folder = sys.argv[1]
        for name in sorted(os.listdir(folder)):
            if name.endswith(".raw"):
                continue
            with Image.open(os.path.join(folder, name)) as image:
                for mode in ("L", "RGB"):
                    with open(os.path.join(folder, name + "." + mode + ".raw"), "wb") as out:
                        out.write(image.convert(mode).tobytes())
        """

    func testJPEGAndPNGDecodeToPillowsPixels() throws {
        if case .failure(let reason) = PythonEnvironment.interpreter() { throw XCTSkip(reason.description) }
        let directory = try TemporaryDirectory()
        // A smooth colourful picture with sharp edges, odd sizes (chroma upsampling at the borders).
        let (width, height) = (37, 23)
        var rgb = [UInt8](), rgba = [UInt8](), grey = [UInt8]()
        for y in 0..<height {
            for x in 0..<width {
                let r = UInt8((x * 255) / (width - 1)), g = UInt8((y * 255) / (height - 1))
                let b: UInt8 = (x / 6 + y / 5) % 2 == 0 ? 230 : 20
                rgb += [r, g, b]
                rgba += [r, g, b, UInt8((x * 7 + y * 11) % 256)]
                grey.append(UInt8((x * 13 + y * 29) % 256))
            }
        }
        try directory.write("colour.jpg", ImageEncoding.jpeg(width: width, height: height, channels: 3, pixels: rgb, quality: 85))
        try directory.write("grey.jpg", ImageEncoding.jpeg(width: width, height: height, channels: 1, pixels: grey, quality: 85))
        try directory.write("colour-444-progressive.jpg", ImageEncoding.jpeg(
            width: width, height: height, channels: 3, pixels: rgb, quality: 85, chroma: .full, progressive: true))
        try directory.write("colour-422.jpg", ImageEncoding.jpeg(
            width: width, height: height, channels: 3, pixels: rgb, quality: 85, chroma: .halfAcross))
        try directory.write("colour.png", ImageEncoding.png(width: width, height: height, channels: 3, pixels: rgb))
        try directory.write("alpha.png", ImageEncoding.png(width: width, height: height, channels: 4, pixels: rgba))
        try directory.write("grey.png", ImageEncoding.png(width: width, height: height, channels: 1, pixels: grey))
        let outcome = try PythonEnvironment.run(Self.script, arguments: [directory.path])
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        let files = ["colour.jpg", "grey.jpg", "colour-444-progressive.jpg", "colour-422.jpg", "colour.png", "alpha.png", "grey.png"]
        for name in files {
            for (mode, channels) in [("L", 1), ("RGB", 3)] {
                let ours = try ImageFile.decode(path: directory.path + "/" + name, channels: channels)
                let pillow = [UInt8](try Foundation.Data(contentsOf: URL(fileURLWithPath: "\(directory.path)/\(name).\(mode).raw")))
                XCTAssertEqual([ours.width, ours.height, ours.channels], [width, height, channels])
                let differing = zip(ours.pixels, pillow).filter { $0 != $1 }.count
                XCTAssertEqual(pillow.count, ours.pixels.count, "\(name) as \(mode)")
                XCTAssertEqual(differing, 0, "\(name) as \(mode): \(differing) of \(pillow.count) values differ from Pillow's")
                // Only a region decoded (what training's random crop does): Pillow's pixels there.
                let region = ImageRegion(left: 9, top: 5, width: 17, height: 11)
                let part = try ImageFile.decode(path: directory.path + "/" + name, channels: channels) { _, _ in region }
                var pillowPart: [UInt8] = []
                for y in region.top..<region.top + region.height {
                    let start: Int = (y * width + region.left) * channels
                    pillowPart += pillow[start..<start + region.width * channels]
                }
                XCTAssertEqual(part.pixels, pillowPart, "\(name) as \(mode), region \(region)")
            }
        }
    }
}
