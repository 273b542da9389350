import Data
import Foundation
import TestSupport
import XCTest

/// Every transform with fixed parameters against torchvision's functional API on the PIL image
/// (what ImageFolder + transforms computes): the same pixels within 1/255.
final class TorchvisionTransformTests: XCTestCase {
    /// Applies each named transform to the PNG given and writes NAME.raw (uint8 HWC, or float32
    /// CHW for the tensor transforms).
    private static let script = """
        import sys, os
        import numpy as np
        import torch
        from PIL import Image
        import torchvision.transforms.functional as F
        folder = sys.argv[1]
        for source in ("colour", "grey"):
            image = Image.open(os.path.join(folder, source + ".png"))
            image.load()
            ops = {
                "resize-short-32": lambda i: F.resize(i, 32),
                "resize-20x30": lambda i: F.resize(i, [20, 30]),
                "resize-up-90": lambda i: F.resize(i, 90),
                "center-crop-24x30": lambda i: F.center_crop(i, [24, 30]),
                "center-crop-pad-60x70": lambda i: F.center_crop(i, [60, 70]),
                "resized-crop": lambda i: F.resized_crop(i, 5, 7, 30, 25, [16, 16]),
                "resized-crop-outside": lambda i: F.resized_crop(i, -3, 40, 30, 25, [19, 23]),
                "hflip": F.hflip,
                "vflip": F.vflip,
                "brightness-1.4": lambda i: F.adjust_brightness(i, 1.4),
                "brightness-0.6": lambda i: F.adjust_brightness(i, 0.6),
                "contrast-1.5": lambda i: F.adjust_contrast(i, 1.5),
                "contrast-0.5": lambda i: F.adjust_contrast(i, 0.5),
                "saturation-1.7": lambda i: F.adjust_saturation(i, 1.7),
                "saturation-0.3": lambda i: F.adjust_saturation(i, 0.3),
                "hue-0.2": lambda i: F.adjust_hue(i, 0.2),
                "hue--0.3": lambda i: F.adjust_hue(i, -0.3),
                "hue-0.45": lambda i: F.adjust_hue(i, 0.45),
            }
            for name, op in ops.items():
                with open(os.path.join(folder, source + "." + name + ".raw"), "wb") as out:
                    out.write(np.asarray(op(image), dtype=np.uint8).tobytes())
            channels = 3 if source == "colour" else 1
            mean, std = [0.485, 0.456, 0.406][:channels], [0.229, 0.224, 0.225][:channels]
            tensor = F.normalize(F.to_tensor(image), mean, std)
            with open(os.path.join(folder, source + ".normalize.raw"), "wb") as out:
                out.write(tensor.numpy().astype(np.float32).tobytes())
            erased = F.erase(tensor, 3, 4, 10, 12, torch.tensor(0.0))
            with open(os.path.join(folder, source + ".erase.raw"), "wb") as out:
                out.write(erased.numpy().astype(np.float32).tobytes())
        """

    private typealias Op = (DecodedImage) -> DecodedImage

    private let ops: [(String, Op)] = [
        ("resize-short-32", { i in
            let size = ImageTransforms.resizedSize(width: i.width, height: i.height, shorterSide: 32)
            return ImageTransforms.resize(i, width: size.width, height: size.height)
        }),
        ("resize-20x30", { ImageTransforms.resize($0, width: 30, height: 20) }),
        ("resize-up-90", { i in
            let size = ImageTransforms.resizedSize(width: i.width, height: i.height, shorterSide: 90)
            return ImageTransforms.resize(i, width: size.width, height: size.height)
        }),
        ("center-crop-24x30", { ImageTransforms.centerCrop($0, height: 24, width: 30) }),
        ("center-crop-pad-60x70", { ImageTransforms.centerCrop($0, height: 60, width: 70) }),
        ("resized-crop", { ImageTransforms.resizedCrop($0, top: 5, left: 7, cropHeight: 30, cropWidth: 25, height: 16, width: 16) }),
        ("resized-crop-outside", { ImageTransforms.resizedCrop($0, top: -3, left: 40, cropHeight: 30, cropWidth: 25, height: 19, width: 23) }),
        ("hflip", { ImageTransforms.horizontalFlip($0) }),
        ("vflip", { ImageTransforms.verticalFlip($0) }),
        ("brightness-1.4", { ImageTransforms.adjustBrightness($0, factor: 1.4) }),
        ("brightness-0.6", { ImageTransforms.adjustBrightness($0, factor: 0.6) }),
        ("contrast-1.5", { ImageTransforms.adjustContrast($0, factor: 1.5) }),
        ("contrast-0.5", { ImageTransforms.adjustContrast($0, factor: 0.5) }),
        ("saturation-1.7", { ImageTransforms.adjustSaturation($0, factor: 1.7) }),
        ("saturation-0.3", { ImageTransforms.adjustSaturation($0, factor: 0.3) }),
        ("hue-0.2", { ImageTransforms.adjustHue($0, factor: 0.2) }),
        ("hue--0.3", { ImageTransforms.adjustHue($0, factor: -0.3) }),
        ("hue-0.45", { ImageTransforms.adjustHue($0, factor: 0.45) }),
    ]

    func testEveryTransformMatchesTorchvisionWithinOneLevel() throws {
        if case .failure(let reason) = PythonEnvironment.interpreter() { throw XCTSkip(reason.description) }
        let directory = try TemporaryDirectory()
        // A photo-like colour picture: smooth gradients, hard edges, saturated and grey areas.
        let (width, height) = (61, 47)
        var rgb = [UInt8]()
        for y in 0..<height {
            for x in 0..<width {
                let r = UInt8((x * 255) / (width - 1)), g = UInt8((y * 255) / (height - 1))
                let edge = (x / 9 + y / 7) % 2 == 0
                let green: UInt8 = edge ? 230 : g
                let blue: UInt8 = edge ? 15 : UInt8((x * y) % 256)
                let pixel: [UInt8] = x > 50 ? [r, r, r] : [r, green, blue]
                rgb += pixel
            }
        }
        let colour = DecodedImage(width: width, height: height, channels: 3, pixels: rgb)
        let greyPixels: [UInt8] = (0..<width * height).map { (index: Int) -> UInt8 in UInt8((index * 37 + index / 61 * 11) % 256) }
        let grey = DecodedImage(width: width, height: height, channels: 1, pixels: greyPixels)
        try directory.write("colour.png", ImageEncoding.png(width: width, height: height, channels: 3, pixels: colour.pixels))
        try directory.write("grey.png", ImageEncoding.png(width: width, height: height, channels: 1, pixels: grey.pixels))
        let outcome = try PythonEnvironment.run(Self.script, arguments: [directory.path])
        XCTAssertEqual(outcome.status, 0, outcome.combined)

        var exact = 0, total = 0
        for (source, image) in [("colour", colour), ("grey", grey)] {
            for (name, op) in ops {
                let theirs = [UInt8](try Foundation.Data(contentsOf: URL(fileURLWithPath: "\(directory.path)/\(source).\(name).raw")))
                let ours = op(image)
                XCTAssertEqual(ours.pixels.count, theirs.count, "\(source) \(name): shape differs")
                let worst = zip(ours.pixels, theirs).map { abs(Int($0) - Int($1)) }.max() ?? 0
                XCTAssertLessThanOrEqual(worst, 1, "\(source) \(name): a value differs from torchvision's by \(worst)/255")
                exact += zip(ours.pixels, theirs).filter { $0 == $1 }.count
                total += theirs.count
            }
            let channels = image.channels
            let mean = Array(ImageFolder.imageNetMean.prefix(channels)), deviation = Array(ImageFolder.imageNetStandardDeviation.prefix(channels))
            var normalised = [Float](repeating: 0, count: width * height * channels)
            normalised.withUnsafeMutableBufferPointer {
                ImageTransforms.normalise(image, mean: mean, standardDeviation: deviation, into: $0.baseAddress!)
            }
            try assertClose(normalised, "\(directory.path)/\(source).normalize.raw", tolerance: 1 / 255 / 0.224, "\(source) normalize")
            normalised.withUnsafeMutableBufferPointer {
                ImageTransforms.erase($0.baseAddress!, channels: channels, height: height, width: width,
                                      top: 3, left: 4, eraseHeight: 10, eraseWidth: 12)
            }
            try assertClose(normalised, "\(directory.path)/\(source).erase.raw", tolerance: 1 / 255 / 0.224, "\(source) erase")
        }
        print("TorchvisionTransformTests: \(exact) of \(total) values equal torchvision's exactly")
    }

    private func assertClose(_ ours: [Float], _ path: String, tolerance: Float, _ label: String) throws {
        let bytes = try Foundation.Data(contentsOf: URL(fileURLWithPath: path))
        let theirs = bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(ours.count, theirs.count, label)
        let worst = zip(ours, theirs).map { abs($0 - $1) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, tolerance, "\(label): differs by \(worst)")
    }
}
