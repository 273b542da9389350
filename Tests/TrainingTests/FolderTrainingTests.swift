import Foundation
import TestSupport
import Data
import Training
import XCTest

/// Training from a folder of image files (torchvision's ImageFolder layout) with the real
/// executables: bit-identical for any number of workers with every augmentation on, and a
/// broken folder stops the run at start with exit code 2 and the path.
final class FolderTrainingTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        guard ImageFolderFixture.available else {
            throw XCTSkip("Fashion-MNIST IDX files are not in \(ImageFolderFixture.idxDirectory) (apt-get install dataset-fashion-mnist)")
        }
        folder = try LocalCluster.temporaryDirectory("folder-training")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func config(path: String, prefetch: Int = 2) throws -> String {
        try LocalCluster.write("""
            model:
              input: [1, 28, 28]
              layers:
                - conv: {filters: 8, kernel: 3, padding: 1}
                - batchnorm
                - relu
                - maxpool: 2
                - flatten
                - dropout: 0.25
                - dense: 10
            data:
              dataset: folder
              path: \(path)
              prefetch: \(prefetch)
              mean: [0.286]
              std: [0.353]
              transforms:
                random_resized_crop: {size: 28, scale: [0.5, 1.0], ratio: [0.75, 1.3333]}
                horizontal_flip: 0.5
                vertical_flip: 0.5
                color_jitter: {brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1}
                random_erasing: 0.5
              augment: {crop_padding: 2, max_translation: 1, brightness: 0.1, contrast: 0.2}
            train:
              epochs: 1
              batch: 48
              micro_batch: 8
              optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
              eval_batch: 64
              log_every: 1
            """, to: "folder-\(prefetch).yaml", in: folder)
    }

    /// One worker and three workers (one and two threads; prefetch depth 0 and 4) give the same weights, bit for bit,
    /// from a PNG folder of grey, RGB and RGBA files with every augmentation on (torchvision's
    /// transforms and the older float-domain ones).
    func testOneAndThreeWorkersTrainBitIdenticallyFromAFolder() throws {
        try ImageFolderFixture.write(to: folder + "/images", format: .png, trainCount: 288, testCount: 64)
        var digests: [Foundation.Data] = []
        // Prefetch depths differ too: decoding ahead must not change a sample.
        for (workers, threads, prefetch) in [(1, 1, 0), (3, 2, 4)] {
            let config = try config(path: folder + "/images", prefetch: prefetch)
            let run = "\(folder)/run-\(workers)"
            let outcome = try LocalCluster.run(
                "cnn-coord", ["--config", config, "--spawn-workers", "\(workers)", "--threads", "\(threads)",
                              "--steps", "6", "--quiet", "--run-dir", run], seconds: 120)
            XCTAssertEqual(outcome.status, 0, outcome.combined)
            let checkpoint = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints").sorted().last!
            digests.append(try Foundation.Data(contentsOf: URL(fileURLWithPath: "\(run)/checkpoints/\(checkpoint)/model.safetensors")))
            let metrics = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)
            XCTAssertTrue(metrics.contains("\"step\": 6,"), metrics)
        }
        XCTAssertEqual(digests[0], digests[1], "1 worker and 3 workers trained different weights from the folder")

        // The class folders' names travel in the checkpoint: eval and predict print them.
        let checkpoint = try FileManager.default.contentsOfDirectory(atPath: folder + "/run-1/checkpoints").sorted().last!
        let path = "\(folder)/run-1/checkpoints/\(checkpoint)"
        let evaluation = try LocalCluster.run("cnn", ["eval", "--checkpoint", path], seconds: 60)
        XCTAssertEqual(evaluation.status, 0, evaluation.combined)
        XCTAssertTrue(evaluation.output.contains("9-ankle-boot") && evaluation.output.contains("0-tshirt"), evaluation.combined)
        XCTAssertTrue(evaluation.output.contains("(top-1), top-5 "), evaluation.combined)
        let image = folder + "/images/val/1-trouser/" + (try FileManager.default.contentsOfDirectory(atPath: folder + "/images/val/1-trouser").sorted()[0])
        let prediction = try LocalCluster.run("cnn", ["predict", "--checkpoint", path, image], seconds: 60)
        XCTAssertEqual(prediction.status, 0, prediction.combined)
        XCTAssertTrue(ImageFolderFixture.classFolders.contains { prediction.output.contains($0) }, prediction.combined)
    }

    /// `cnn data stats` measures the folder's mean and std as a direct count of the IDX bytes
    /// gives them; `cnn data show` writes a grid whose tiles are the samples (no augmentation:
    /// the files' own pixels).
    func testDataStatsAndShowOnAFolder() throws {
        try ImageFolderFixture.write(to: folder + "/images", format: .png, trainCount: 50, testCount: 60)
        let (images, _, _) = try ImageFolderFixture.idx("train", count: 50)
        let values = images.flatMap { $0 }.map { Double($0) / 255 }
        let mean = values.reduce(0, +) / Double(values.count)
        let deviation = (values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(values.count)).squareRoot()
        let stats = try LocalCluster.run("cnn", ["data", "stats", folder + "/images", "--channels", "1"], seconds: 60)
        XCTAssertEqual(stats.status, 0, stats.combined)
        XCTAssertTrue(stats.output.contains(String(format: "mean: [%.4f]", mean)), "expected mean \(mean): \(stats.output)")
        XCTAssertTrue(stats.output.contains(String(format: "std:  [%.4f]", deviation)), "expected std \(deviation): \(stats.output)")
        XCTAssertTrue(stats.output.contains("50 images in 10 classes"), stats.output)

        let plain = try LocalCluster.write("""
            model: {input: [1, 28, 28], layers: [flatten, {dense: 10}]}
            data: {dataset: folder, path: \(folder)/images, shuffle: false, mean: [0.5], std: [0.25]}
            train: {batch: 10, micro_batch: 10}
            """, to: "show.yaml", in: folder)
        let grid = folder + "/grid.png"
        let show = try LocalCluster.run("cnn", ["data", "show", plain, "--samples", "4", "--output", grid], seconds: 60)
        XCTAssertEqual(show.status, 0, show.combined)
        let picture = try ImageFile.decode(path: grid, channels: 1)
        // Two tiles a row: 2 + 28 + 2 + 28 + 2 pixels each way.
        XCTAssertEqual([picture.width, picture.height], [62, 62])
        // Unshuffled, the first sample is the first file of the first class folder.
        let first = try ImageFolderListing.list(folder + "/images/train").paths[0]
        let expected = try ImageFile.decode(path: first, channels: 1)
        for y in 0..<28 {
            XCTAssertEqual(Array(picture.pixels[(2 + y) * 62 + 2..<(2 + y) * 62 + 30]), Array(expected.pixels[y * 28..<(y + 1) * 28]))
        }
    }

    /// A class folder without images in val/: exit 2 naming it, before any worker starts.
    func testAFolderWithAnEmptyClassStopsWithItsPath() throws {
        try ImageFolderFixture.write(to: folder + "/images", format: .png, trainCount: 30, testCount: 20)
        let empty = folder + "/images/val/5-sandal"
        for file in try FileManager.default.contentsOfDirectory(atPath: empty) {
            try FileManager.default.removeItem(atPath: empty + "/" + file)
        }
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", try config(path: folder + "/images"), "--spawn-workers", "1", "--steps", "1",
                          "--quiet", "--run-dir", folder + "/run"], seconds: 60)
        XCTAssertEqual(outcome.status, 2, outcome.combined)
        XCTAssertTrue(outcome.error.contains("\(empty): class '5-sandal' holds no images"), outcome.combined)
    }
}

/// Top-5 accuracy's ranking: the true class counts when at most four classes score higher.
final class TopFiveRankTests: XCTestCase {
    func testRankCountsOnlyStrictlyHigherScores() {
        let scores: [Float] = [0.1, 0.9, 0.3, 0.3, 0.8, -1, 0.7, 0.2]
        scores.withUnsafeBufferPointer { row in
            XCTAssertEqual(CheckpointEvaluation.rank(of: 1, in: row), 0)
            XCTAssertEqual(CheckpointEvaluation.rank(of: 6, in: row), 2)
            XCTAssertEqual(CheckpointEvaluation.rank(of: 2, in: row), 3)
            XCTAssertEqual(CheckpointEvaluation.rank(of: 3, in: row), 3)
            XCTAssertEqual(CheckpointEvaluation.rank(of: 7, in: row), 5)
            XCTAssertEqual(CheckpointEvaluation.rank(of: 5, in: row), 7)
        }
    }
}
