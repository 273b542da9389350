import Data
import Foundation
import TestSupport
import XCTest

/// Decoding only the part of a JPEG the random crop reads gives the pixels of a full decode, and
/// a training sample made that way equals one made from the whole image.
final class FolderDecodeRegionTests: XCTestCase {
    /// A colourful picture with smooth fields, sharp edges and noise (so every chroma block differs).
    static func picture(width: Int, height: Int, channels: Int, seed: Int) -> [UInt8] {
        var pixels = [UInt8](repeating: 0, count: width * height * channels)
        var state = UInt32(truncatingIfNeeded: seed &* 2_654_435_761 &+ 1)
        for y in 0..<height {
            for x in 0..<width {
                state = state &* 1_664_525 &+ 1_013_904_223
                let noise = Int(state >> 27)
                let values = [
                    (x * 255) / max(width - 1, 1), (y * 255) / max(height - 1, 1),
                    ((x / 5 + y / 3 + seed) % 2 == 0 ? 220 : 30),
                ]
                for c in 0..<channels { pixels[(y * width + x) * channels + c] = UInt8(min(values[c] + noise, 255)) }
            }
        }
        return pixels
    }

    /// Every chroma subsampling TurboJPEG writes, baseline and progressive, and grey; sizes from one
    /// pixel up, odd ones included (partial iMCUs at the right and bottom); random regions and
    /// ones touching each edge, one pixel wide among them (libjpeg-turbo 2.1 gets a 4:2:0 region of
    /// one chroma column, and one cut at the right edge, wrong: the reader widens both).
    func testRegionOfAJPEGEqualsTheSameRegionOfAFullDecode() throws {
        let directory = try TemporaryDirectory()
        var random = SystemRandomNumberGenerator()
        var checked = 0
        for (width, height) in [(1, 1), (17, 9), (61, 45), (130, 97), (40, 131)] {
            var kinds: [(String, Int, ImageEncoding.ChromaSubsampling, Bool)] = []
            for chroma in ImageEncoding.ChromaSubsampling.allCases {
                kinds += [("\(chroma)", 3, chroma, false), ("\(chroma)-progressive", 3, chroma, true)]
            }
            kinds += [("grey", 1, .halfBoth, false), ("grey-progressive", 1, .halfBoth, true)]
            for (name, channels, chroma, progressive) in kinds {
                let pixels = Self.picture(width: width, height: height, channels: channels, seed: width + height)
                let path = try directory.write("\(name)-\(width)x\(height).jpg", ImageEncoding.jpeg(
                    width: width, height: height, channels: channels, pixels: pixels, quality: 87,
                    chroma: chroma, progressive: progressive))
                for wanted in [1, 3] {
                    let full = try ImageFile.decode(path: path, channels: wanted)
                    var regions = [
                        ImageRegion.whole(width: width, height: height),
                        ImageRegion(left: 0, top: 0, width: 1, height: 1),
                        ImageRegion(left: width - 1, top: height - 1, width: 1, height: 1),
                        // Columns one pixel wide, top to bottom, at both edges and inside.
                        ImageRegion(left: 0, top: 0, width: 1, height: height),
                        ImageRegion(left: width / 2, top: 0, width: 1, height: height),
                        ImageRegion(left: width - 1, top: 0, width: 1, height: height),
                    ]
                    for _ in 0..<12 {
                        let w = Int.random(in: 1...width, using: &random), h = Int.random(in: 1...height, using: &random)
                        regions.append(ImageRegion(
                            left: Int.random(in: 0...(width - w), using: &random), top: Int.random(in: 0...(height - h), using: &random),
                            width: w, height: h))
                    }
                    for region in regions {
                        let part = try ImageFile.decode(path: path, channels: wanted) { w, h in
                            XCTAssertEqual([w, h], [width, height])
                            return region
                        }
                        let expected = ImageTransforms.crop(
                            full, top: region.top, left: region.left, height: region.height, width: region.width)
                        XCTAssertEqual(part, expected, "\(name) \(width)x\(height) as \(wanted) channels, region \(region)")
                        checked += 1
                    }
                }
            }
        }
        XCTAssertEqual(checked, 5 * 12 * 2 * 18)
    }

    /// The streamed training samples of a JPEG folder (each decoded only where its random crop
    /// lies) equal the pipeline applied to the fully decoded images, with every transform on;
    /// and with the flips certain, equal torchvision's order of operations spelled out: crop,
    /// resize, flip, flip, normalise.
    func testTrainingSamplesFromTheCropAloneEqualThoseFromTheWholeImage() throws {
        let directory = try TemporaryDirectory()
        for label in 0..<2 {
            try FileManager.default.createDirectory(atPath: directory.path + "/train/c\(label)", withIntermediateDirectories: true)
            for i in 0..<6 {
                let (width, height, channels) = (30 + 7 * i, 50 - 3 * i, i % 3 == 2 ? 1 : 3)
                let pixels = Self.picture(width: width, height: height, channels: channels, seed: i + 10 * label)
                try directory.write("train/c\(label)/\(i).jpg", ImageEncoding.jpeg(
                    width: width, height: height, channels: channels, pixels: pixels, quality: 90))
            }
        }
        let listing = try ImageFolderListing.list(directory.path + "/train")
        var everything = ImagePipeline(mean: ImageFolder.imageNetMean, standardDeviation: ImageFolder.imageNetStandardDeviation)
        everything.randomResizedCrop = .init(size: 24)
        everything.horizontalFlip = 0.5
        everything.verticalFlip = 0.5
        everything.colorJitter = .init(brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1)
        everything.randomErasing = 0.5
        var flips = ImagePipeline(mean: ImageFolder.imageNetMean, standardDeviation: ImageFolder.imageNetStandardDeviation)
        flips.randomResizedCrop = .init(size: 24)
        flips.horizontalFlip = 1
        flips.verticalFlip = 1
        for pipeline in [everything, flips] {
            let stream = try ImageFolderStream(
                listing, name: "region", pipeline: pipeline, training: true, channels: 3, height: 24, width: 24,
                skipBadFiles: false, threads: 2)
            let size = stream.sampleSize
            var streamed = [Float](repeating: 0, count: listing.paths.count * size)
            var labels = [Int32](repeating: 0, count: listing.paths.count)
            streamed.withUnsafeMutableBufferPointer { images in
                stream.copyBatch(Array(listing.paths.indices), images: images.baseAddress!, labels: &labels,
                                 augmentation: .none, seed: 7, epoch: 3)
            }
            for index in listing.paths.indices {
                let whole = try ImageFile.decode(path: listing.paths[index], channels: 3)
                var expected = [Float](repeating: 0, count: size)
                pipeline.training(whole, seed: 7, epoch: 3, sample: index, into: &expected)
                XCTAssertEqual(Array(streamed[index * size..<(index + 1) * size]), expected, "sample \(index)")
                guard pipeline == flips else { continue }
                let box = pipeline.trainingRegion(width: whole.width, height: whole.height, seed: 7, epoch: 3, sample: index)
                var image = ImageTransforms.crop(whole, top: box.top, left: box.left, height: box.height, width: box.width)
                image = ImageTransforms.resize(image, width: 24, height: 24)
                image = ImageTransforms.verticalFlip(ImageTransforms.horizontalFlip(image))
                var spelledOut = [Float](repeating: 0, count: size)
                ImageTransforms.normalise(
                    image, mean: ImageFolder.imageNetMean, standardDeviation: ImageFolder.imageNetStandardDeviation, into: &spelledOut)
                XCTAssertEqual(expected, spelledOut, "sample \(index) with both flips")
            }
        }
    }

    /// Evaluation samples (resize, then a centre crop inside the resized image, decoded only where
    /// the crop's outputs read) equal evaluation of the fully decoded images; also where the
    /// resize keeps the size, where the crop pads (the whole image then), and for grey files.
    func testEvaluationSamplesFromTheCropWindowEqualThoseFromTheWholeImage() throws {
        let directory = try TemporaryDirectory()
        try FileManager.default.createDirectory(atPath: directory.path + "/val/c0", withIntermediateDirectories: true)
        let sizes = [(40, 30), (30, 40), (23, 23), (97, 61), (16, 50), (61, 17)]
        for (i, (width, height)) in sizes.enumerated() {
            let channels = i % 3 == 2 ? 1 : 3
            try directory.write("val/c0/\(i).jpg", ImageEncoding.jpeg(
                width: width, height: height, channels: channels,
                pixels: Self.picture(width: width, height: height, channels: channels, seed: i), quality: 90))
        }
        let listing = try ImageFolderListing.list(directory.path + "/val")
        for (resize, crop) in [(20, 16), (23, 23), (16, 16), (12, 14)] {
            var pipeline = ImagePipeline(mean: ImageFolder.imageNetMean, standardDeviation: ImageFolder.imageNetStandardDeviation)
            pipeline.resize = resize
            pipeline.centerCrop = crop
            let stream = try ImageFolderStream(
                listing, name: "evaluation", pipeline: pipeline, training: false, channels: 3, height: crop, width: crop,
                skipBadFiles: false, threads: 2)
            let size = stream.sampleSize
            var streamed = [Float](repeating: 0, count: listing.paths.count * size)
            var labels = [Int32](repeating: 0, count: listing.paths.count)
            streamed.withUnsafeMutableBufferPointer { images in
                stream.copyBatch(Array(listing.paths.indices), images: images.baseAddress!, labels: &labels)
            }
            for index in listing.paths.indices {
                var expected = [Float](repeating: 0, count: size)
                pipeline.evaluation(try ImageFile.decode(path: listing.paths[index], channels: 3), into: &expected)
                XCTAssertEqual(Array(streamed[index * size..<(index + 1) * size]), expected,
                               "resize \(resize), crop \(crop), file \(sizes[index])")
            }
        }
    }
}
