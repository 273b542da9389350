import CNN
import Checkpoint
import Data
import Foundation
import Training

/// How a data set's pixels become model inputs: (byte / 255 - mean) / standardDeviation, per
/// channel, exactly as the data loaders do it, so an image file gives the numbers training saw.
public struct InputNormalisation: Sendable, Equatable {
    public var mean: [Float]
    public var standardDeviation: [Float]

    public init(mean: [Float], standardDeviation: [Float]) {
        self.mean = mean
        self.standardDeviation = standardDeviation
    }

    /// The normalisation of the data set a config trains on.
    public static func forDataset(_ name: String, channels: Int) -> InputNormalisation {
        switch name {
        case "fashion-mnist":
            return InputNormalisation(mean: [FashionMNIST.mean], standardDeviation: [FashionMNIST.standardDeviation])
        case "mnist":
            // The published MNIST statistics, as DataSource uses them.
            return InputNormalisation(mean: [0.1307], standardDeviation: [0.3081])
        case "cifar10":
            return InputNormalisation(mean: CIFAR10.mean, standardDeviation: CIFAR10.standardDeviation)
        default:
            // Synthetic sets are generated already normalised; map 0...255 onto about -2...2.
            return InputNormalisation(mean: [Float](repeating: 0.5, count: channels), standardDeviation: [Float](repeating: 0.25, count: channels))
        }
    }

    /// The model input [C, H, W] for an image in channel-interleaved layout.
    public func apply(to image: RasterImage) -> [Float] {
        let plane = image.width * image.height
        var out = [Float](repeating: 0, count: plane * image.channels)
        for c in 0..<image.channels {
            // Same table arithmetic as the loaders: Float(byte) / 255 - mean, over the deviation.
            let m = mean[min(c, mean.count - 1)], s = standardDeviation[min(c, standardDeviation.count - 1)]
            let table = (0..<256).map { (Float($0) / 255 - m) / s }
            for p in 0..<plane {
                out[c * plane + p] = table[Int(image.pixels[p * image.channels + c])]
            }
        }
        return out
    }
}

/// An image named on the command line: a PNG, PGM or PPM file, or sample N of an IDX images
/// file written `FILE:N` (MNIST-format, gzip or not).
public struct ImageReference: Sendable, Equatable {
    public var path: String
    /// The sample index for IDX files.
    public var index: Int?

    /// Parses `photo.png`, `digit.pgm`, `t10k-images-idx3-ubyte.gz:42`.
    public init(_ text: String) {
        if let colon = text.lastIndex(of: ":"), let index = Int(text[text.index(after: colon)...]), index >= 0,
           !text[..<colon].isEmpty {
            path = String(text[..<colon])
            self.index = index
        } else {
            path = text
            index = nil
        }
    }

    /// As written on the command line.
    public var description: String { index.map { "\(path):\($0)" } ?? path }

    /// Loads the image with `channels` channels (converting grey and colour as needed).
    public func load(channels: Int) throws -> RasterImage {
        guard FileManager.default.fileExists(atPath: path) else {
            throw MonitoringError("\(path): no such file; give a PNG, PGM or PPM image, or FILE:N for sample N of an IDX images file")
        }
        if let index {
            return try loadIDX(index: index).converted(toChannels: channels)
        }
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw MonitoringError("\(path): cannot open the file; check its permissions")
        }
        let head = [UInt8](handle.readData(ofLength: 8))
        try? handle.close()
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47]) {
            return try PNGCodec.read(path: path, channels: channels)
        }
        if head.count >= 2, head[0] == UInt8(ascii: "P"), [50, 51, 53, 54].contains(head[1]) {
            return try NetpbmCodec.read(path: path).converted(toChannels: channels)
        }
        if head.starts(with: [0, 0, 8]) || head.starts(with: [0x1F, 0x8B]) {
            throw MonitoringError("\(path) looks like an IDX file; name a sample with \(path):N (N from 0)")
        }
        throw MonitoringError("\(path): not a PNG, PGM or PPM image (unknown first bytes); convert it, e.g. `convert \(path) image.png`")
    }

    private func loadIDX(index: Int) throws -> RasterImage {
        let file = try IDXFile.read(path: path)
        guard file.dimensions.count == 3 else {
            throw MonitoringError("\(path) holds \(file.dimensions.count)-dimensional data; an images file is [count, rows, columns]")
        }
        let (count, height, width) = (file.dimensions[0], file.dimensions[1], file.dimensions[2])
        guard index < count else {
            throw MonitoringError("\(path) holds \(count) images; sample \(index) does not exist (use 0 to \(count - 1))")
        }
        let plane = height * width
        return RasterImage(width: width, height: height, channels: 1, pixels: Array(file.bytes[(index * plane)..<((index + 1) * plane)]))
    }

    /// The label of an IDX sample from the labels file beside it (`...-images-idx3-ubyte` ->
    /// `...-labels-idx1-ubyte`), if there is one.
    public func label() -> Int? {
        guard let index, path.contains("images-idx3") else { return nil }
        let labels = path.replacingOccurrences(of: "images-idx3", with: "labels-idx1")
        guard FileManager.default.fileExists(atPath: labels), let file = try? IDXFile.read(path: labels),
              file.dimensions.count == 1, index < file.bytes.count else { return nil }
        return Int(file.bytes[index])
    }
}

/// A model loaded from a checkpoint for inference, with what is needed to feed it images.
public final class CheckpointModel {
    public let config: TrainingConfig
    public let network: Network
    /// The step the checkpoint was written at (0 for a plain weights file).
    public let checkpointStep: Int
    /// Class names by output index (the data set's, or "class N").
    public let classNames: [String]
    public let normalisation: InputNormalisation
    /// For a model trained on an image folder: the evaluation transforms (resize, centre crop,
    /// normalisation) applied to JPEG and PNG files, as in training.
    public let folderPipeline: ImagePipeline?

    /// Loads `checkpoint` (a checkpoint directory, or a safetensors weights file such as
    /// torchvision's) with the config beside it (`RUN_DIR/config.yaml`) or `configPath`; with
    /// `inputSize`, a fully convolutional model is built for images of that height and width.
    public init(checkpoint: String, configPath: String?, inputSize: (height: Int, width: Int)? = nil) throws {
        let loaded = try TrainedModel.load(checkpoint, configPath: configPath) { config in
            if let inputSize {
                try config.resizeInput(height: inputSize.height, width: inputSize.width, checkpoint: checkpoint)
            }
        }
        config = loaded.config
        network = loaded.network
        checkpointStep = loaded.step ?? 0
        let classes = network.outputShape.count
        switch config.data.dataset {
        case "fashion-mnist": classNames = FashionMNIST.classNames
        case "cifar10": classNames = CIFAR10.classNames
        case "mnist": classNames = (0..<classes).map(String.init)
        default: classNames = loaded.classNames ?? (0..<classes).map { "class \($0)" }
        }
        normalisation = InputNormalisation.forDataset(config.data.dataset, channels: network.inputShape.channels)
        folderPipeline = config.data.dataset == "folder" ? config.data.imagePipeline(channels: network.inputShape.channels) : nil
    }

    /// The model input for an image reference, checked against the model's input size.
    public func input(for reference: ImageReference) throws -> [Float] {
        let shape = network.inputShape
        if let folderPipeline, reference.index == nil {
            let image = try ImageFile.decode(path: reference.path, channels: shape.channels)
            let size = folderPipeline.outputSize(width: image.width, height: image.height, training: false)
            guard size == (shape.width, shape.height) else {
                throw MonitoringError("\(reference.path) is \(image.width)x\(image.height), which the config's transforms make "
                    + "\(size.width)x\(size.height), but the model takes \(shape.width)x\(shape.height) images; resize it first")
            }
            var input = [Float](repeating: 0, count: shape.channels * shape.height * shape.width)
            input.withUnsafeMutableBufferPointer { folderPipeline.evaluation(image, into: $0.baseAddress!) }
            return input
        }
        let image = try reference.load(channels: shape.channels)
        guard image.width == shape.width, image.height == shape.height else {
            throw MonitoringError("\(reference.description) is \(image.width)x\(image.height) but the model takes "
                + "\(shape.width)x\(shape.height) images; resize it first (e.g. `convert IN -resize \(shape.width)x\(shape.height)! OUT.png`)")
        }
        return normalisation.apply(to: image)
    }

    /// The name of output `index`.
    public func className(_ index: Int) -> String {
        index < classNames.count ? classNames[index] : "class \(index)"
    }
}
