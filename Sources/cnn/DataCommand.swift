import ArgumentParser
import CommandLineSupport
import Data
import Foundation
import Monitoring
import Training
import UsageErrors

/// `cnn data`: looking at a data set before training on it.
struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Look at a data set: per-channel statistics, augmented samples.",
        subcommands: [DataStats.self, DataShow.self, DataBench.self])
}

struct DataStats: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stats",
        abstract: "Per-channel mean and std (0...1 scale) of a folder of JPEG/PNG images, for data.mean and data.std.",
        discussion: "DIR is a data set folder (its train/ split is measured) or one split with a sub-folder per class.")

    @Argument(help: "The folder.") var directory: String
    @Option(help: "Channels to decode the images to: 3 (RGB) or 1 (grey).") var channels: Int = 3

    func validate() throws {
        if channels != 1 && channels != 3 { throw ValidationError("--channels must be 1 or 3, got \(channels)") }
    }

    func run() throws {
        let train = (directory as NSString).appendingPathComponent("train")
        let split = FileManager.default.fileExists(atPath: train) ? train : directory
        let listing = try ImageFolderListing.list(split)
        let threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let stats = try ImageFolderStatistics.measure(listing, channels: channels, threads: threads)
        func list(_ values: [Double]) -> String { "[" + values.map { String(format: "%.4f", $0) }.joined(separator: ", ") + "]" }
        print("\(split): \(stats.images) images in \(listing.classNames.count) classes, \(stats.pixels) pixels per channel")
        print("mean: \(list(stats.mean))")
        print("std:  \(list(stats.standardDeviation))")
    }
}

struct DataShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show",
        abstract: "Write a PNG grid of training samples as the network sees them (augmented, from epoch EPOCH's order).")

    @Argument(help: "The training config.") var config: String
    @Option(help: "How many samples.") var samples: Int = 16
    @Option(help: "The epoch whose order and augmentations to show (from 0).") var epoch: Int = 0
    @Option(help: "The PNG to write.") var output: String = "data-show.png"

    func validate() throws {
        if samples < 1 { throw ValidationError("--samples must be at least 1, got \(samples)") }
        if epoch < 0 { throw ValidationError("--epoch must not be negative, got \(epoch)") }
    }

    func run() throws {
        try ProcessSetup.prepare()
        let config = try TrainingConfig.load(path: config)
        let data = try DataSource.load(config)
        let set = data.train
        let n = min(samples, set.count)
        let order = DataOrder.epochOrder(count: set.count, seed: config.train.seed, epoch: epoch, shuffle: config.data.shuffle)
        let indices = Array(order.prefix(n))
        var pixels = [Float](repeating: 0, count: n * set.sampleSize)
        var labels = [Int32](repeating: 0, count: n)
        set.copyBatch(indices, images: &pixels, labels: &labels, augmentation: config.data.augmentation,
                      seed: config.train.seed, epoch: epoch)
        if let failure = set.failure { throw UsageError("\(failure)") }
        let normalisation: (mean: [Float], std: [Float])
        if config.data.dataset == "folder" {
            let pipeline = config.data.imagePipeline(channels: set.channels)
            normalisation = (pipeline.mean, pipeline.standardDeviation)
        } else {
            let known = InputNormalisation.forDataset(config.data.dataset, channels: set.channels)
            normalisation = (known.mean, known.standardDeviation)
        }
        let columns = Int(Double(n).squareRoot().rounded(.up))
        let grid = SampleGrid.make(
            samples: pixels, count: n, channels: set.channels, height: set.height, width: set.width, columns: columns,
            mean: normalisation.mean, standardDeviation: normalisation.std)
        let png = try ImageEncoding.png(width: grid.width, height: grid.height, channels: grid.channels, pixels: grid.pixels)
        try Foundation.Data(png).write(to: URL(fileURLWithPath: output))
        let names = labels.map { label in data.classNames.map { $0[Int(label)] } ?? "\(label)" }
        print("wrote \(output): \(n) samples of \(set.name), epoch \(epoch), \(columns) per row; labels \(names.joined(separator: ", "))")
    }
}

struct DataBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Time the training data pipeline alone: decode, augment and normalise batches on one thread.",
        discussion: "Prints one JSON line: images, seconds, images_per_second (scripts/folder_bench.py compares it with torchvision).")

    @Argument(help: "The training config.") var config: String
    @Option(help: "Images to time (after a warm-up batch).") var images: Int = 512
    @Option(help: "Images per batch.") var batch: Int = 64

    func run() throws {
        try ProcessSetup.prepare()
        let config = try TrainingConfig.load(path: config)
        let set = try DataSource.load(config).train
        let order = DataOrder.epochOrder(count: set.count, seed: config.train.seed, epoch: 0, shuffle: config.data.shuffle)
        var pixels = [Float](repeating: 0, count: batch * set.sampleSize)
        var labels = [Int32](repeating: 0, count: batch)
        func run(_ start: Int) {
            let indices = (start..<start + batch).map { order[$0 % order.count] }
            set.copyBatch(indices, images: &pixels, labels: &labels, augmentation: config.data.augmentation,
                          seed: config.train.seed, epoch: 0)
        }
        func check() throws {
            if let failure = set.failure { throw UsageError("\(failure)") }
        }
        run(0)
        try check()
        let started = DispatchTime.now().uptimeNanoseconds
        var done = 0
        while done < images {
            run(batch + done)
            done += batch
        }
        try check()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        print("{\"images\": \(done), \"seconds\": \(String(format: "%.3f", seconds)), \"images_per_second\": \(String(format: "%.1f", Double(done) / seconds))}")
    }
}
