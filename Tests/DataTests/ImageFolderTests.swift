import Data
import Foundation
import TestSupport
import XCTest

/// Folders of real PNG and JPEG files (Fashion-MNIST written out by the test) in torchvision's
/// ImageFolder layout, loaded as training sets.
final class ImageFolderTests: XCTestCase {
    override func setUpWithError() throws {
        guard ImageFolderFixture.available else {
            throw XCTSkip("Fashion-MNIST IDX files are not in \(ImageFolderFixture.idxDirectory) (apt-get install dataset-fashion-mnist)")
        }
    }

    private func load(_ directory: String, threads: Int = 2, skipBadFiles: Bool = false) throws -> ImageFolder.Loaded {
        try ImageFolder.load(
            try ImageFolderListing.list(directory), name: "folder", channels: 1, height: 28, width: 28,
            mean: [FashionMNIST.mean], standardDeviation: [FashionMNIST.standardDeviation],
            skipBadFiles: skipBadFiles, threads: threads)
    }

    /// The PNG copy (grey, RGB and RGBA files mixed) loads to exactly the IDX loader's floats and
    /// labels, in ImageFolder's order (class by class, by file name within a class).
    func testPNGFolderLoadsBitForBitAsTheIDXSetInImageFolderOrder() throws {
        let directory = try TemporaryDirectory()
        let order = try ImageFolderFixture.write(to: directory.path, format: .png, trainCount: 400, testCount: 100)
        let idx = try FashionMNIST.load(.train)
        for threads in [1, 3] {
            let loaded = try load(directory.path + "/train", threads: threads)
            let set = loaded.images
            XCTAssertEqual(loaded.classNames, ImageFolderFixture.classFolders)
            XCTAssertEqual([set.count, set.channels, set.height, set.width, set.classes], [400, 1, 28, 28, 10])
            let expected = try idx.subset(order["train"]!)
            XCTAssertEqual(set.labels, expected.labels)
            XCTAssertTrue(set.pixels.elementsEqual(expected.pixels) { $0.bitPattern == $1.bitPattern },
                          "the PNG folder's pixels differ from the IDX set's (threads \(threads))")
        }
        XCTAssertEqual(try load(directory.path + "/val").images.count, 100)
    }

    /// The streamed split (decoded as batches are asked for) gives the same bits as the IDX
    /// loader too, in any order of indices; with transforms, a sample depends only on (seed,
    /// epoch, index), not on the batch it comes in.
    func testStreamedFolderMatchesTheIDXSetAndDependsOnlyOnTheSample() throws {
        let directory = try TemporaryDirectory()
        let order = try ImageFolderFixture.write(to: directory.path, format: .png, trainCount: 120, testCount: 10)
        let listing = try ImageFolderListing.list(directory.path + "/train")
        let plain = ImagePipeline(mean: [FashionMNIST.mean], standardDeviation: [FashionMNIST.standardDeviation])
        let stream = try ImageFolderStream(
            listing, name: "stream", pipeline: plain, training: true, channels: 1, height: 28, width: 28,
            skipBadFiles: false, threads: 2)
        let expected = try FashionMNIST.load(.train).subset(order["train"]!)
        let indices = [17, 3, 99, 3, 0, 119]
        var ours = [Float](repeating: 0, count: indices.count * 784), theirs = ours
        var labels = [Int32](repeating: 0, count: indices.count), theirLabels = labels
        stream.copyBatch(indices, images: &ours, labels: &labels, augmentation: .none, seed: 5, epoch: 2)
        expected.copyBatch(indices, images: &theirs, labels: &theirLabels)
        XCTAssertEqual(labels, theirLabels)
        XCTAssertTrue(ours.elementsEqual(theirs) { $0.bitPattern == $1.bitPattern })

        var random = plain
        random.randomResizedCrop = .init(size: 28, scale: 0.3...1)
        random.horizontalFlip = 0.5
        random.colorJitter = .init(brightness: 0.5, contrast: 0.5)
        random.randomErasing = 0.7
        let augmented = try ImageFolderStream(
            listing, name: "stream", pipeline: random, training: true, channels: 1, height: 28, width: 28,
            skipBadFiles: false, threads: 1)
        var batch = [Float](repeating: 0, count: 3 * 784), single = [Float](repeating: 0, count: 784)
        var three = [Int32](repeating: 0, count: 3), one: Int32 = 0
        augmented.copyBatch([5, 42, 7], images: &batch, labels: &three, augmentation: .none, seed: 9, epoch: 1)
        augmented.copyBatch([42], images: &single, labels: &one, augmentation: .none, seed: 9, epoch: 1)
        XCTAssertEqual(Array(batch[784..<1568]), single, "sample 42 differs by its place in the batch")
        var untouched = [Float](repeating: 0, count: 784)
        stream.copyBatch([42], images: &untouched, labels: &one, augmentation: .none, seed: 9, epoch: 1)
        XCTAssertNotEqual(single, untouched, "the transforms changed nothing")
        augmented.copyBatch([42], images: &single, labels: &one, augmentation: .none, seed: 9, epoch: 2)
        XCTAssertNotEqual(Array(batch[784..<1568]), single, "epoch 2 repeats epoch 1's augmentation")
    }

    /// Samples prepared in the background (announced micro-batches) equal samples made on the
    /// spot, announced or not, taken in order or not, for training and evaluation.
    func testPrefetchedSamplesEqualSamplesMadeOnTheSpot() throws {
        let directory = try TemporaryDirectory()
        try ImageFolderFixture.write(to: directory.path, format: .png, trainCount: 100, testCount: 10)
        let listing = try ImageFolderListing.list(directory.path + "/train")
        var pipeline = ImagePipeline(mean: [0.3], standardDeviation: [0.35])
        pipeline.randomResizedCrop = .init(size: 28, scale: 0.4...1)
        pipeline.colorJitter = .init(brightness: 0.3, contrast: 0.3)
        pipeline.randomErasing = 0.5
        func open(_ depth: Int, training: Bool) throws -> ImageFolderStream {
            try ImageFolderStream(listing, name: "s", pipeline: pipeline, training: training, channels: 1, height: 28,
                                  width: 28, skipBadFiles: false, threads: 1, prefetchDepth: depth)
        }
        let batches = [[4, 8, 15], [16, 23, 42], [1, 2, 3], [99, 0, 50]]
        for training in [true, false] {
            let plain = try open(0, training: training), ahead = try open(2, training: training)
            ahead.prefetch(batches, training: training, seed: 7, epoch: 3)
            // Under load the background thread may not have started yet: give it a moment, so
            // the copies below meet prefetched samples (they must equal either way).
            let deadline = Date().addingTimeInterval(10)
            while ahead.prefetchedSamplesReady < 3 && Date() < deadline { usleep(1000) }
            for batch in batches.reversed() + [[5, 6, 7]] {
                var a = [Float](repeating: 0, count: batch.count * 784), b = a
                var la = [Int32](repeating: 0, count: batch.count), lb = la
                if training {
                    plain.copyBatch(batch, images: &a, labels: &la, augmentation: .none, seed: 7, epoch: 3)
                    ahead.copyBatch(batch, images: &b, labels: &lb, augmentation: .none, seed: 7, epoch: 3)
                } else {
                    plain.copyBatch(batch, images: &a, labels: &la)
                    ahead.copyBatch(batch, images: &b, labels: &lb)
                }
                XCTAssertEqual(la, lb)
                XCTAssertTrue(a.elementsEqual(b) { $0.bitPattern == $1.bitPattern }, "batch \(batch) (training \(training))")
            }
            XCTAssertGreaterThan(ahead.prefetchedSamplesTaken, 0, "nothing came from the prefetcher")
        }
    }

    /// JPEG files decode (lossily) close to the IDX pixels, grey and RGB alike.
    func testJPEGFolderDecodesCloseToTheOriginalPixels() throws {
        let directory = try TemporaryDirectory()
        let order = try ImageFolderFixture.write(to: directory.path, format: .jpeg, trainCount: 60, testCount: 10, quality: 95)
        let set = try load(directory.path + "/train").images
        let expected = try FashionMNIST.load(.train).subset(order["train"]!)
        XCTAssertEqual(set.labels, expected.labels)
        // Mean absolute error in 0...255 units: JPEG at quality 95 is within a few levels.
        var error: Double = 0
        for (a, b) in zip(set.pixels, expected.pixels) { error += Double(abs(a - b)) * Double(FashionMNIST.standardDeviation) * 255 }
        let meanError = error / Double(set.pixels.count)
        XCTAssertLessThan(meanError, 3, "JPEG pixels are \(meanError) levels away on average")
        XCTAssertGreaterThan(meanError, 0, "the JPEG copy cannot be lossless")
    }

    /// Empty, truncated, garbage and mis-named files: an error naming the file, or with
    /// skip_bad_files each left out and reported.
    func testBadFilesAreNamedOrLeftOut() throws {
        let directory = try TemporaryDirectory()
        try ImageFolderFixture.write(to: directory.path, format: .png, trainCount: 30, testCount: 10)
        let train = directory.path + "/train/"
        let good = try Foundation.Data(contentsOf: URL(fileURLWithPath: train + "9-ankle-boot/00000.png"))
        let jpeg = try ImageEncoding.jpeg(width: 28, height: 28, channels: 1, pixels: [UInt8](repeating: 99, count: 784))
        let bad: [(String, Foundation.Data)] = [
            ("0-tshirt/empty.png", Foundation.Data()),
            ("0-tshirt/truncated.png", good.prefix(good.count / 2)),
            ("1-trouser/garbage.jpg", Foundation.Data("this is not an image".utf8)),
            ("2-pullover/truncated.jpeg", Foundation.Data(jpeg.prefix(jpeg.count / 2))),
        ]
        for (name, bytes) in bad {
            let path = train + name
            try bytes.write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try load(directory.path + "/train")) { error in
                XCTAssertTrue("\(error)".contains(path), "the error does not name \(path): \(error)")
                XCTAssertTrue("\(error)".contains("skip_bad_files"), "the error does not offer the fix: \(error)")
            }
            try FileManager.default.removeItem(atPath: path)
        }
        for (name, bytes) in bad { try bytes.write(to: URL(fileURLWithPath: train + name)) }
        let loaded = try load(directory.path + "/train", skipBadFiles: true)
        XCTAssertEqual(loaded.images.count, 30)
        XCTAssertEqual(Set(loaded.skipped), Set(bad.map { train + $0.0 }))
    }

    /// A missing folder, one without class folders and a class without images: errors naming
    /// the path.
    func testEmptyFoldersAndClassesAreNamed() throws {
        let directory = try TemporaryDirectory()
        XCTAssertThrowsError(try ImageFolderListing.list(directory.path + "/nothing")) {
            XCTAssertTrue("\($0)".contains(directory.path + "/nothing: no such folder"), "\($0)")
        }
        XCTAssertThrowsError(try ImageFolderListing.list(directory.path)) {
            XCTAssertTrue("\($0)".contains("holds no class folders"), "\($0)")
        }
        try FileManager.default.createDirectory(atPath: directory.path + "/cat", withIntermediateDirectories: true)
        try directory.write("cat/notes.txt", Array("not an image".utf8))
        XCTAssertThrowsError(try ImageFolderListing.list(directory.path)) {
            XCTAssertTrue("\($0)".contains(directory.path + "/cat: class 'cat' holds no images"), "\($0)")
        }
    }

    /// Nested folders, upper-case extensions and other files: listed as torchvision lists them.
    func testListingFollowsImageFolderOrder() throws {
        let directory = try TemporaryDirectory()
        let png = try ImageEncoding.png(width: 1, height: 1, channels: 1, pixels: [7])
        for name in ["b/2.png", "b/10.PNG", "b/sub/1.png", "b/a.txt", "a/z.jpg", "a/y.JPEG", "B/x.png"] {
            let folder = (directory.path + "/" + name as NSString).deletingLastPathComponent
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            try directory.write(name, png)
        }
        let listing = try ImageFolderListing.list(directory.path)
        XCTAssertEqual(listing.classNames, ["B", "a", "b"])
        XCTAssertEqual(listing.paths.map { String($0.dropFirst(directory.path.count + 1)) },
                       ["B/x.png", "a/y.JPEG", "a/z.jpg", "b/10.PNG", "b/2.png", "b/sub/1.png"])
        XCTAssertEqual(listing.labels, [0, 1, 1, 2, 2, 2])
    }
}
