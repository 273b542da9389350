import Data
import XCTest

final class ImageSetTests: XCTestCase {
    /// Four 1x2x2 images whose pixels are 10 * index + position.
    func smallSet() throws -> ImageSet {
        try ImageSet(
            name: "small", channels: 1, height: 2, width: 2, classes: 4,
            pixels: (0..<4).flatMap { image in (0..<4).map { Float(10 * image + $0) } },
            labels: [0, 1, 2, 3])
    }

    func testCopyBatchCopiesSamplesAndLabelsInTheGivenOrder() throws {
        let set = try smallSet()
        var images = [Float](repeating: -1, count: 3 * 4)
        var labels = [Int32](repeating: -1, count: 3)
        images.withUnsafeMutableBufferPointer { imageBuffer in
            labels.withUnsafeMutableBufferPointer { labelBuffer in
                set.copyBatch([2, 0, 2], images: imageBuffer.baseAddress!, labels: labelBuffer.baseAddress!)
            }
        }
        XCTAssertEqual(images, [20, 21, 22, 23, 0, 1, 2, 3, 20, 21, 22, 23])
        XCTAssertEqual(labels, [2, 0, 2])
    }

    func testCopyBatchWithAugmentationKeysRandomnessBySampleIndexNotSlot() throws {
        let set = try SyntheticImages.make(count: 20, channels: 2, height: 6, width: 6, classes: 4, seed: 9)
        let augmentation = Augmentation(cropPadding: 2, horizontalFlip: true, brightness: 0.5)
        let size = set.sampleSize
        var batch = [Float](repeating: 0, count: 2 * size)
        var labels = [Int32](repeating: 0, count: 2)
        batch.withUnsafeMutableBufferPointer { images in
            labels.withUnsafeMutableBufferPointer { labelBuffer in
                set.copyBatch(
                    [7, 13], images: images.baseAddress!, labels: labelBuffer.baseAddress!,
                    augmentation: augmentation, seed: 4, epoch: 2)
            }
        }
        var alone = Array(set.pixels[13 * size..<14 * size])
        alone.withUnsafeMutableBufferPointer {
            augmentation.apply(to: $0.baseAddress!, channels: 2, height: 6, width: 6, seed: 4, epoch: 2, sampleIndex: 13)
        }
        XCTAssertEqual(Array(batch[size...]), alone)
        XCTAssertEqual(labels, [Int32(set.labels[7]), Int32(set.labels[13])])
    }

    func testSubsetKeepsTheChosenSamplesAndRejectsBadIndices() throws {
        let set = try smallSet()
        let subset = try set.subset([3, 1], name: "small/part")
        XCTAssertEqual(subset.name, "small/part")
        XCTAssertEqual(subset.count, 2)
        XCTAssertEqual(subset.labels, [3, 1])
        XCTAssertEqual(subset.pixels, [30, 31, 32, 33, 10, 11, 12, 13])
        guard case .invalidSetting = dataError({ _ = try set.subset([0, 4]) }) else {
            return XCTFail("index 4 of 4 should be rejected")
        }
    }

    func testInitialiserRejectsMismatchedPixelCountAndOutOfRangeLabels() {
        guard case .invalidSetting = dataError({
            _ = try ImageSet(name: "bad", channels: 1, height: 2, width: 2, classes: 2, pixels: [0, 0, 0], labels: [0])
        }) else { return XCTFail("3 pixels for one 2x2 image should be rejected") }
        XCTAssertEqual(
            dataError {
                _ = try ImageSet(name: "bad", channels: 1, height: 1, width: 1, classes: 2, pixels: [0, 0], labels: [1, 2])
            },
            .labelOutOfRange(path: "bad", index: 1, label: 2, classes: 2))
    }
}
