import Data
import XCTest

final class SyntheticImagesTests: XCTestCase {
    func testSameSeedGivesTheSameSetAndAnotherSeedADifferentOne() throws {
        let a = try SyntheticImages.make(count: 50, channels: 3, height: 8, width: 8, classes: 5, seed: 11)
        let b = try SyntheticImages.make(count: 50, channels: 3, height: 8, width: 8, classes: 5, seed: 11)
        let c = try SyntheticImages.make(count: 50, channels: 3, height: 8, width: 8, classes: 5, seed: 12)
        XCTAssertEqual(a.pixels, b.pixels)
        XCTAssertEqual(a.labels, b.labels)
        XCTAssertNotEqual(a.pixels, c.pixels)
        XCTAssertEqual([a.count, a.channels, a.height, a.width, a.classes], [50, 3, 8, 8, 5])
        XCTAssertEqual(a.pixels.count, 50 * 3 * 8 * 8)
        XCTAssertTrue(a.pixels.allSatisfy(\.isFinite))
    }

    func testEveryClassAppearsInBalancedShuffledLabels() throws {
        let set = try SyntheticImages.make(count: 103, channels: 1, height: 6, width: 6, classes: 10, seed: 3)
        let counts = set.classCounts()
        XCTAssertTrue(counts.allSatisfy { $0 == 10 || $0 == 11 }, "\(counts)")
        XCTAssertEqual(counts.reduce(0, +), 103)
        XCTAssertNotEqual(set.labels.map(Int.init), (0..<103).map { $0 % 10 }, "labels should be shuffled")
    }

    func testClassesAreLearnableByNearestClassMean() throws {
        // Fit class means on the first half, classify the second half: a learnable set scores far
        // above chance (10%).
        let set = try SyntheticImages.make(count: 400, channels: 1, height: 12, width: 12, classes: 10, seed: 5)
        let size = set.sampleSize
        var means = [[Float]](repeating: [Float](repeating: 0, count: size), count: 10)
        var counts = [Float](repeating: 0, count: 10)
        for sample in 0..<200 {
            let label = Int(set.labels[sample])
            counts[label] += 1
            for i in 0..<size { means[label][i] += set.pixels[sample * size + i] }
        }
        for label in 0..<10 { means[label] = means[label].map { $0 / max(counts[label], 1) } }
        var correct = 0
        for sample in 200..<400 {
            let distances = means.map { mean in
                (0..<size).reduce(Float(0)) { sum, i in
                    let d = set.pixels[sample * size + i] - mean[i]
                    return sum + d * d
                }
            }
            if distances.firstIndex(of: distances.min()!) == Int(set.labels[sample]) { correct += 1 }
        }
        XCTAssertGreaterThan(correct, 180, "nearest-mean accuracy \(correct) / 200")
    }

    func testPixelsAreRoughlyStandardised() throws {
        let set = try SyntheticImages.make(count: 200, channels: 3, height: 16, width: 16, classes: 10, seed: 1)
        let mean = set.pixels.reduce(0, +) / Float(set.pixels.count)
        let variance = set.pixels.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(set.pixels.count)
        XCTAssertEqual(mean, 0, accuracy: 0.1)
        XCTAssertEqual(variance, 1, accuracy: 0.15)
    }

    func testImpossibleShapesAreRejected() {
        guard case .invalidSetting(let name, _, _) = dataError({
            _ = try SyntheticImages.make(count: 10, channels: 0, height: 4, width: 4, classes: 2, seed: 0)
        }) else { return XCTFail("channels 0 should be rejected") }
        XCTAssertTrue(name.hasSuffix("channels"))
        guard case .invalidSetting = dataError({
            _ = try SyntheticImages.make(count: 10, channels: 1, height: 4, width: 4, classes: 0, seed: 0)
        }) else { return XCTFail("0 classes should be rejected") }
    }

    /// Labels hold any class count (ImageNet's 1,000 did not fit the single bytes they once were).
    func testAThousandClassesKeepEveryLabel() throws {
        let set = try SyntheticImages.make(count: 2000, channels: 1, height: 2, width: 2, classes: 1000, seed: 3)
        XCTAssertEqual(Set(set.labels).count, 1000)
        XCTAssertEqual(set.classCounts(), [Int](repeating: 2, count: 1000))
    }

    /// Only the classes drawn are made: six ImageNet-shaped samples of 1,000 classes (labels 0-5,
    /// as with six classes) are the very images of a six-class set, whose patterns are all made.
    func testAFewSamplesOfManyClassesAreTheImagesOfTheClassesDrawn() throws {
        let many = try SyntheticImages.make(count: 6, channels: 3, height: 224, width: 224, classes: 1000, seed: 4)
        let six = try SyntheticImages.make(count: 6, channels: 3, height: 224, width: 224, classes: 6, seed: 4)
        XCTAssertEqual(many.labels, six.labels)
        XCTAssertEqual(Set(many.labels), Set(0..<6))
        XCTAssertEqual(many.pixels, six.pixels)
    }
}
