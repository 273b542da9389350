import ConfigReading
import Data
import Foundation

/// The training and test sets a config names, loaded once per process.
public struct DataSource: Sendable {
    public let train: any SampleSet
    public let test: any SampleSet
    /// Class names by label, when the data set has them (image folders: the class folders).
    public var classNames: [String]?
    /// Image files left out because they do not decode (`data.skip_bad_files`).
    public var skippedFiles: [String] = []

    public init(train: any SampleSet, test: any SampleSet, classNames: [String]? = nil) {
        self.train = train
        self.test = test
        self.classNames = classNames
    }

    /// Loads the data set named in `config`, checking that its images fit the model's input.
    public static func load(_ config: TrainingConfig) throws -> DataSource {
        let data = config.data
        let source: DataSource
        switch data.dataset {
        case "fashion-mnist":
            source = DataSource(
                train: try FashionMNIST.load(.train, directory: data.path),
                test: try FashionMNIST.load(.test, directory: data.path))
        case "mnist":
            // MNIST's published normalisation.
            func load(_ prefix: String, _ name: String) throws -> ImageSet {
                try IDXImages.load(
                    imagesPath: locate("\(prefix)-images-idx3-ubyte", in: data.path),
                    labelsPath: locate("\(prefix)-labels-idx1-ubyte", in: data.path),
                    mean: 0.1307, standardDeviation: 0.3081, name: "mnist/\(name)")
            }
            source = DataSource(train: try load("train", "train"), test: try load("t10k", "test"))
        case "folder":
            source = try loadFolder(config)
        case "cifar10":
            source = DataSource(
                train: try CIFAR10.load(.train, directory: data.path),
                test: try CIFAR10.load(.test, directory: data.path))
        case "idx":
            // Sequences, images or volumes of the model's input shape (IDXSamples).
            func load(_ split: String) throws -> ImageSet {
                try IDXSamples.load(
                    samplesPath: locate("\(split)-samples.idx", in: data.path), labelsPath: locate("\(split)-labels.idx", in: data.path),
                    dimensions: config.model.input.dimensions, classes: modelClasses(config), name: "idx/\(split)")
            }
            source = DataSource(train: try load("train"), test: try load("test"))
        default:
            let input = config.model.input
            let classes = modelClasses(config)
            // One set cut in two, so the test samples share the training samples' class patterns.
            // A volume's slices are made as channels of one image, then given their depth back.
            var all = try SyntheticImages.make(
                count: data.syntheticTrain + data.syntheticTest, channels: input.channels * input.depth, height: input.height,
                width: input.width, classes: classes, seed: config.train.seed)
            if input.depth > 1 {
                all = try ImageSet(
                    name: all.name, channels: input.channels, depth: input.depth, height: all.height, width: all.width,
                    classes: all.classes, pixels: all.pixels, labels: all.labels)
            }
            source = DataSource(
                train: try all.subset(0..<data.syntheticTrain, name: "synthetic/train"),
                test: try all.subset(data.syntheticTrain..<all.count, name: "synthetic/test"))
        }
        let input = config.model.input
        let set = source.train
        guard set.channels == input.channels, set.depth == input.depth, set.height == input.height, set.width == input.width else {
            if input.spatialRank != 2 || set.depth != 1 {
                let found = [set.channels] + (set.depth > 1 ? [set.depth] : []) + (input.spatialRank == 1 && set.height == 1 ? [] : [set.height]) + [set.width]
                throw ConfigError(
                    file: config.source, line: nil,
                    message: "model.input is \(input.dimensions) but \(set.name) has samples of \(found); set model.input to \(found)")
            }
            throw ConfigError(
                file: config.source, line: nil,
                message: "model.input is [\(input.channels), \(input.height), \(input.width)] but \(set.name) has "
                    + "\(set.channels)x\(set.height)x\(set.width) images; set model.input to [\(set.channels), \(set.height), \(set.width)]")
        }
        guard set.count >= config.train.batch else {
            throw ConfigError(
                file: config.source, line: nil,
                message: "train.batch (\(config.train.batch)) is larger than the \(set.count) training samples of \(set.name)")
        }
        return source
    }
}

/// The classes of the model's last dense layer (10 without one).
private func modelClasses(_ config: TrainingConfig) -> Int {
    config.model.layers.reversed().compactMap { layer -> Int? in
        if case .dense(let units, _) = layer.unnamed { return units }
        return nil
    }.first ?? 10
}

/// Both splits of an image folder (`path/train`, `path/val`), streamed: each batch's files are
/// decoded and transformed when it is asked for.
private func loadFolder(_ config: TrainingConfig) throws -> DataSource {
    let data = config.data, input = config.model.input
    let pipeline = data.imagePipeline(channels: input.channels)
    let threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
    func open(_ split: String) throws -> ImageFolderStream {
        let listing = try ImageFolderListing.list(joinedPath(data.path, split))
        return try ImageFolderStream(
            listing, name: "folder:\(listing.directory)", pipeline: pipeline, training: split == "train",
            channels: input.channels, height: input.height, width: input.width, skipBadFiles: data.skipBadFiles,
            threads: threads, prefetchDepth: data.prefetch)
    }
    let train = try open("train"), test = try open("val")
    guard train.listing.classNames == test.listing.classNames else {
        throw ConfigError(
            file: config.source, line: nil,
            message: "\(data.path)/train has classes \(train.listing.classNames) but \(data.path)/val has \(test.listing.classNames); "
                + "both splits need the same class folders")
    }
    var source = DataSource(train: train, test: test, classNames: train.listing.classNames)
    source.skippedFiles = train.skipped + test.skipped
    return source
}

private func joinedPath(_ directory: String, _ name: String) -> String {
    directory.hasSuffix("/") ? directory + name : directory + "/" + name
}

extension DataConfig {
    /// The image pipeline of a folder data set: `transforms` with `mean` and `std` (ImageNet's
    /// for RGB by default).
    public func imagePipeline(channels: Int) -> ImagePipeline {
        var pipeline = transforms ?? ImagePipeline(mean: [], standardDeviation: [])
        pipeline.mean = mean ?? (channels == 1 ? ImageFolder.greyMean : ImageFolder.imageNetMean)
        pipeline.standardDeviation = standardDeviation
            ?? (channels == 1 ? ImageFolder.greyStandardDeviation : ImageFolder.imageNetStandardDeviation)
        return pipeline
    }
}

/// The gzipped file if present, else the plain one (whose absence the reader then reports).
private func locate(_ stem: String, in directory: String) -> String {
    let compressed = "\(directory)/\(stem).gz"
    return FileManager.default.fileExists(atPath: compressed) ? compressed : "\(directory)/\(stem)"
}
