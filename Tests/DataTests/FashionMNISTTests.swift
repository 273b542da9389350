import Data
import Foundation
import XCTest

final class FashionMNISTTests: XCTestCase {
    func testRealTrainingSetHasSixtyThousandNormalisedImages() throws {
        let start = ContinuousClock.now
        let set = try FashionMNIST.load(.train)
        let seconds = (ContinuousClock.now - start) / .seconds(1)
        print("fashion-mnist/train loaded in \(seconds) s")
        XCTAssertEqual(set.name, "fashion-mnist/train")
        XCTAssertEqual([set.count, set.channels, set.height, set.width, set.classes], [60_000, 1, 28, 28, 10])
        XCTAssertEqual(set.pixels.count, 60_000 * 784)
        XCTAssertEqual(set.labels[0], 9)
        XCTAssertEqual(FashionMNIST.classNames[Int(set.labels[0])], "Ankle boot")
        XCTAssertEqual(set.classCounts(), [Int](repeating: 6000, count: 10))

        var sum = 0.0
        var squares = 0.0
        for value in set.pixels {
            sum += Double(value)
            squares += Double(value) * Double(value)
        }
        let mean = sum / Double(set.pixels.count)
        let deviation = (squares / Double(set.pixels.count) - mean * mean).squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 0.01)
        XCTAssertEqual(deviation, 1, accuracy: 0.01)
        // Generous bound (the target is well under 1 s) so a busy machine does not fail it.
        XCTAssertLessThan(seconds, 3, "loading 60,000 images should take well under a second")
    }

    func testRealTestSetHasTenThousandImages() throws {
        let set = try FashionMNIST.load(.test)
        XCTAssertEqual(set.name, "fashion-mnist/test")
        XCTAssertEqual([set.count, set.channels, set.height, set.width], [10_000, 1, 28, 28])
        XCTAssertEqual(set.labels[0], 9)
        XCTAssertEqual(set.classCounts(), [Int](repeating: 1000, count: 10))
        // Pixel 0 of a Fashion-MNIST image is background: byte 0.
        XCTAssertEqual(set.pixels[0], -FashionMNIST.mean / FashionMNIST.standardDeviation, accuracy: 1e-6)
    }

    func testMissingDirectorySaysHowToInstallTheDataSet() throws {
        let directory = try TemporaryDirectory()
        let error = dataError { _ = try FashionMNIST.load(.train, directory: directory.path) }
        guard case .fileNotFound(let path, _) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertEqual(path, directory.path + "/train-images-idx3-ubyte.gz")
        XCTAssertTrue(error!.description.contains("apt-get install dataset-fashion-mnist"))
        XCTAssertTrue(error!.description.contains("data.path"))
        XCTAssertTrue(error!.description.contains("train-images-idx3-ubyte`"))
    }

    func testUncompressedFilesAreAcceptedAndGzipIsPreferredWhenBothExist() throws {
        let directory = try TemporaryDirectory()
        let pixels: [UInt8] = [0, 255, 128, 64]
        try directory.write("t10k-images-idx3-ubyte", idxBytes(dimensions: [1, 2, 2], payload: pixels))
        try directory.write("t10k-labels-idx1-ubyte", idxBytes(dimensions: [1], payload: [4]))
        let plain = try FashionMNIST.load(.test, directory: directory.path)
        XCTAssertEqual(plain.labels, [4])
        XCTAssertEqual(plain.pixels[1], (1 - FashionMNIST.mean) / FashionMNIST.standardDeviation, accuracy: 1e-6)

        // A compressed copy with a different label must win over the plain file.
        try directory.writeGzip("t10k-labels-idx1-ubyte.gz", idxBytes(dimensions: [1], payload: [7]))
        let preferred = try FashionMNIST.load(.test, directory: directory.path + "/")
        XCTAssertEqual(preferred.labels, [7])
        XCTAssertEqual(preferred.pixels, plain.pixels)
    }

    func testHalfInstalledDirectoryNamesTheMissingFile() throws {
        let directory = try TemporaryDirectory()
        try directory.write("train-images-idx3-ubyte", idxBytes(dimensions: [1, 2, 2], payload: [0, 0, 0, 0]))
        let error = dataError { _ = try FashionMNIST.load(.train, directory: directory.path) }
        guard case .fileNotFound(let path, _) = error else { return XCTFail("got \(String(describing: error))") }
        XCTAssertEqual(path, directory.path + "/train-labels-idx1-ubyte.gz")
    }
}
