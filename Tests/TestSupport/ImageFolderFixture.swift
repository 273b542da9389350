import Data
import Foundation

/// Real image folders made from Fashion-MNIST for tests: the first N training and test images
/// written as PNG or JPEG files in torchvision's ImageFolder layout (`DIR/train/CLASS/00042.png`,
/// the number being the image's index in the IDX file), in a mix of storage kinds: most grey,
/// every third one RGB (grey copied to all three channels) and, for PNG, every seventh RGBA with
/// a varying alpha, so loaders meet every kind a photo folder holds.
public enum ImageFolderFixture {
    /// Where Debian's `dataset-fashion-mnist` installs the IDX files.
    public static let idxDirectory = "/usr/share/datasets/fashion-mnist"

    /// Class folder names: the label first, so that sorting them gives the IDX label order.
    public static let classFolders = [
        "0-tshirt", "1-trouser", "2-pullover", "3-dress", "4-coat",
        "5-sandal", "6-shirt", "7-sneaker", "8-bag", "9-ankle-boot",
    ]

    public enum Format: String, Sendable { case png, jpeg }

    /// One split's raw IDX images and labels, first `count` of them.
    public static func idx(_ split: String, count: Int) throws -> (images: [[UInt8]], labels: [Int], size: Int) {
        let prefix = split == "train" ? "train" : "t10k"
        let images = try IDXFile.read(path: "\(idxDirectory)/\(prefix)-images-idx3-ubyte.gz")
        let labels = try IDXFile.read(path: "\(idxDirectory)/\(prefix)-labels-idx1-ubyte.gz")
        let size = images.dimensions[1] * images.dimensions[2]
        let n = min(count, images.dimensions[0])
        return ((0..<n).map { Array(images.bytes[$0 * size..<($0 + 1) * size]) }, (0..<n).map { Int(labels.bytes[$0]) }, size)
    }

    /// Whether the IDX files are installed (tests skip with this reason otherwise).
    public static var available: Bool {
        FileManager.default.fileExists(atPath: "\(idxDirectory)/train-images-idx3-ubyte.gz")
    }

    /// Writes `DIR/train` (the first `trainCount` training images) and `DIR/val` (the first
    /// `testCount` test images) and returns, per split, the IDX index of every file in
    /// ImageFolder order (class by class, by index within a class).
    @discardableResult
    public static func write(
        to directory: String, format: Format, trainCount: Int, testCount: Int, quality: Int = 90
    ) throws -> [String: [Int]] {
        var order: [String: [Int]] = [:]
        for (split, count) in [("train", trainCount), ("val", testCount)] {
            let (images, labels, _) = try idx(split, count: count)
            for folder in classFolders {
                try FileManager.default.createDirectory(
                    atPath: "\(directory)/\(split)/\(folder)", withIntermediateDirectories: true)
            }
            for (index, pixels) in images.enumerated() {
                let name = String(format: "%05d", index) + (format == .png ? ".png" : ".jpg")
                let path = "\(directory)/\(split)/\(classFolders[labels[index]])/\(name)"
                try Foundation.Data(encode(pixels, index: index, format: format, quality: quality))
                    .write(to: URL(fileURLWithPath: path))
            }
            order[split] = images.indices.sorted { (labels[$0], $0) < (labels[$1], $1) }
        }
        return order
    }

    /// One 28x28 grey image stored as grey, RGB or RGBA, by its index.
    static func encode(_ grey: [UInt8], index: Int, format: Format, quality: Int) throws -> [UInt8] {
        let rgb = index % 3 == 1
        let rgba = format == .png && index % 7 == 3
        let channels = rgba ? 4 : rgb ? 3 : 1
        var pixels = [UInt8]()
        pixels.reserveCapacity(grey.count * channels)
        for (p, value) in grey.enumerated() {
            for _ in 0..<min(channels, 3) { pixels.append(value) }
            if rgba { pixels.append(UInt8(truncatingIfNeeded: 40 + p * 7)) }
        }
        switch format {
        case .png: return try ImageEncoding.png(width: 28, height: 28, channels: channels, pixels: pixels)
        case .jpeg: return try ImageEncoding.jpeg(width: 28, height: 28, channels: channels, pixels: pixels, quality: quality)
        }
    }
}
