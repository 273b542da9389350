import Data
import XCTest

final class AugmentationTests: XCTestCase {
    let channels = 2
    let height = 5
    let width = 7

    /// A sample whose every pixel is distinct and non-zero, so moves, mirrors and zero fill all show.
    var sample: [Float] {
        (0..<(channels * height * width)).map { Float($0 + 1) }
    }

    func augmented(
        _ augmentation: Augmentation, _ input: [Float]? = nil, seed: UInt64 = 1, epoch: Int = 0, sampleIndex: Int = 0
    ) -> [Float] {
        var values = input ?? sample
        values.withUnsafeMutableBufferPointer {
            augmentation.apply(
                to: $0.baseAddress!, channels: channels, height: height, width: width,
                seed: seed, epoch: epoch, sampleIndex: sampleIndex)
        }
        return values
    }

    func pixel(_ values: [Float], _ channel: Int, _ y: Int, _ x: Int) -> Float {
        values[(channel * height + y) * width + x]
    }

    /// The sample moved by (dy, dx), zero-filled: output(y, x) = input(y - dy, x - dx).
    func shifted(_ values: [Float], dy: Int, dx: Int) -> [Float] {
        var result = [Float](repeating: 0, count: values.count)
        for c in 0..<channels {
            for y in 0..<height {
                for x in 0..<width where (0..<height).contains(y - dy) && (0..<width).contains(x - dx) {
                    result[(c * height + y) * width + x] = pixel(values, c, y - dy, x - dx)
                }
            }
        }
        return result
    }

    func mirrored(_ values: [Float], horizontally: Bool) -> [Float] {
        var result = values
        for c in 0..<channels {
            for y in 0..<height {
                for x in 0..<width {
                    let source = horizontally ? pixel(values, c, y, width - 1 - x) : pixel(values, c, height - 1 - y, x)
                    result[(c * height + y) * width + x] = source
                }
            }
        }
        return result
    }

    func testIdentityConfigurationChangesNothing() {
        XCTAssertTrue(Augmentation().isIdentity)
        XCTAssertEqual(Augmentation(), .none)
        for index in 0..<20 {
            XCTAssertEqual(augmented(Augmentation(), sampleIndex: index), sample)
        }
        XCTAssertFalse(Augmentation(horizontalFlip: true).isIdentity)
        XCTAssertFalse(Augmentation(contrast: 0.1).isIdentity)
    }

    func testCropWithZeroPaddingIsIdentity() {
        let augmentation = Augmentation(cropPadding: 0)
        XCTAssertTrue(augmentation.isIdentity)
        for index in 0..<20 {
            XCTAssertEqual(augmented(augmentation, sampleIndex: index), sample)
        }
    }

    func testCropWithPaddingIsAZeroFilledShiftWithinThePadding() {
        let augmentation = Augmentation(cropPadding: 2)
        var shiftsSeen = Set<[Int]>()
        for index in 0..<200 {
            let result = augmented(augmentation, sampleIndex: index)
            let matches = (-2...2).flatMap { dy in (-2...2).map { dx in [dy, dx] } }
                .filter { shifted(sample, dy: $0[0], dx: $0[1]) == result }
            XCTAssertEqual(matches.count, 1, "sample \(index) is not a shift within the padding")
            if let shift = matches.first { shiftsSeen.insert(shift) }
        }
        XCTAssertEqual(shiftsSeen.count, 25, "all 25 crop positions should occur in 200 draws")
    }

    func testTranslationIsAZeroFilledShiftWithinTheLimit() {
        let augmentation = Augmentation(maxTranslation: 1)
        var shiftsSeen = Set<[Int]>()
        for index in 0..<100 {
            let result = augmented(augmentation, sampleIndex: index)
            let match = (-1...1).flatMap { dy in (-1...1).map { dx in [dy, dx] } }
                .first { shifted(sample, dy: $0[0], dx: $0[1]) == result }
            XCTAssertNotNil(match, "sample \(index)")
            if let match { shiftsSeen.insert(match) }
        }
        XCTAssertEqual(shiftsSeen.count, 9)
    }

    func testHorizontalFlipExactlyMirrorsAboutHalfTheTime() {
        let mirror = mirrored(sample, horizontally: true)
        var flips = 0
        for index in 0..<200 {
            let result = augmented(Augmentation(horizontalFlip: true), sampleIndex: index)
            if result == mirror { flips += 1 } else { XCTAssertEqual(result, sample, "sample \(index)") }
        }
        XCTAssertTrue((70...130).contains(flips), "\(flips) flips in 200")
    }

    func testVerticalFlipExactlyMirrorsAboutHalfTheTime() {
        let mirror = mirrored(sample, horizontally: false)
        var flips = 0
        for index in 0..<200 {
            let result = augmented(Augmentation(verticalFlip: true), sampleIndex: index)
            if result == mirror { flips += 1 } else { XCTAssertEqual(result, sample, "sample \(index)") }
        }
        XCTAssertTrue((70...130).contains(flips), "\(flips) flips in 200")
    }

    func testBrightnessAddsOneOffsetWithinTheBound() {
        var offsets: [Float] = []
        for index in 0..<100 {
            let result = augmented(Augmentation(brightness: 0.5), sampleIndex: index)
            let offset = result[0] - sample[0]
            XCTAssertLessThanOrEqual(abs(offset), 0.5)
            for (after, before) in zip(result, sample) {
                XCTAssertEqual(after - before, offset, accuracy: 1e-4)
            }
            offsets.append(offset)
        }
        XCTAssertLessThan(offsets.min()!, -0.3)
        XCTAssertGreaterThan(offsets.max()!, 0.3)
    }

    func testContrastScalesAroundTheSampleMeanWithinTheBound() {
        let mean = sample.reduce(0, +) / Float(sample.count)
        for index in 0..<50 {
            let result = augmented(Augmentation(contrast: 0.4), sampleIndex: index)
            let factor = (result[0] - mean) / (sample[0] - mean)
            XCTAssertTrue((0.6...1.4).contains(factor), "factor \(factor)")
            for (after, before) in zip(result, sample) {
                XCTAssertEqual(after, (before - mean) * factor + mean, accuracy: 1e-3)
            }
        }
    }

    func testAugmentationIsAPureFunctionOfSeedEpochAndSample() {
        let augmentation = Augmentation(
            cropPadding: 2, horizontalFlip: true, verticalFlip: true, maxTranslation: 1, brightness: 0.2, contrast: 0.2)
        var differentEpoch = 0
        var differentSeed = 0
        for index in 0..<50 {
            let first = augmented(augmentation, seed: 3, epoch: 4, sampleIndex: index)
            XCTAssertEqual(augmented(augmentation, seed: 3, epoch: 4, sampleIndex: index), first)
            if augmented(augmentation, seed: 3, epoch: 5, sampleIndex: index) != first { differentEpoch += 1 }
            if augmented(augmentation, seed: 4, epoch: 4, sampleIndex: index) != first { differentSeed += 1 }
        }
        // With continuous brightness and contrast draws, equal results would mean the key was ignored.
        XCTAssertEqual(differentEpoch, 50)
        XCTAssertEqual(differentSeed, 50)
    }

    func testValidateRejectsNegativeAndOutOfRangeSettings() {
        XCTAssertNoThrow(try Augmentation(cropPadding: 4, horizontalFlip: true, brightness: 0.1, contrast: 0.2).validate())
        let error = dataError { try Augmentation(cropPadding: -1).validate(prefix: "data.augment") }
        XCTAssertEqual(error, .invalidSetting(name: "data.augment.crop_padding", value: "-1", allowed: "0 or more pixels"))
        guard case .invalidSetting = dataError({ try Augmentation(contrast: 1.5).validate() }) else {
            return XCTFail("contrast 1.5 should be rejected")
        }
        guard case .invalidSetting = dataError({ try Augmentation(brightness: .nan).validate() }) else {
            return XCTFail("brightness NaN should be rejected")
        }
    }
}
