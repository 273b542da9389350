/// A labelled image set held in memory: normalised Float32 pixels in NCHW order, one class index
/// per image (any class count: ImageNet's 1,000 and more). Loaders build it once; the trainer copies batches out of it.
public struct ImageSet: Sendable {
    /// Where the set came from, for logs and errors ("fashion-mnist/train").
    public let name: String
    /// Channels per image (1 for greyscale, 3 for RGB).
    public let channels: Int
    /// Slices per sample of a volume [C, D, H, W]; 1 for images, and for sequences [C, L], which
    /// are held as images of height 1.
    public let depth: Int
    /// Image height in pixels.
    public let height: Int
    /// Image width in pixels.
    public let width: Int
    /// The number of classes; every label is below it.
    public let classes: Int
    /// The number of images.
    public let count: Int
    /// Normalised pixels, [count, channels, height, width].
    public let pixels: [Float]
    /// Class indices, [count], each below `classes`.
    public let labels: [Int32]

    /// Floats per image: channels * depth * height * width.
    public var sampleSize: Int { channels * depth * height * width }

    /// Builds a set from pixels and labels, checking that the shapes agree and every label is in range.
    public init(
        name: String, channels: Int, depth: Int = 1, height: Int, width: Int, classes: Int,
        pixels: [Float], labels: [Int32]
    ) throws {
        for (setting, value) in [("channels", channels), ("depth", depth), ("height", height), ("width", width)] where value < 1 {
            throw DataError.invalidSetting(name: "\(name).\(setting)", value: "\(value)", allowed: "a positive size")
        }
        guard (1...Int(Int32.max)).contains(classes) else {
            throw DataError.invalidSetting(name: "\(name).classes", value: "\(classes)", allowed: "1 or more")
        }
        let sampleSize = channels * depth * height * width
        guard pixels.count == labels.count * sampleSize else {
            throw DataError.invalidSetting(
                name: "\(name).pixels.count", value: "\(pixels.count)",
                allowed: "labels.count * channels * depth * height * width = \(labels.count * sampleSize)")
        }
        if let index = labels.firstIndex(where: { $0 < 0 || Int($0) >= classes }) {
            throw DataError.labelOutOfRange(path: name, index: index, label: Int(labels[index]), classes: classes)
        }
        self.init(
            unchecked: name, channels: channels, depth: depth, height: height, width: width, classes: classes,
            pixels: pixels, labels: labels)
    }

    /// For loaders that have already validated everything.
    init(
        unchecked name: String, channels: Int, depth: Int = 1, height: Int, width: Int, classes: Int,
        pixels: [Float], labels: [Int32]
    ) {
        self.name = name
        self.channels = channels
        self.depth = depth
        self.height = height
        self.width = width
        self.classes = classes
        self.count = labels.count
        self.pixels = pixels
        self.labels = labels
    }

    /// Copies the given samples, in the given order, into a contiguous batch.
    ///
    /// - Parameters:
    ///   - indices: sample indices, each in 0..<count (not checked: this is the hot path, and
    ///     indices come from `DataOrder`, not from users).
    ///   - images: room for indices.count * sampleSize floats, [n, C, H, W].
    ///   - labels: room for indices.count labels.
    public func copyBatch(
        _ indices: some Collection<Int>, images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>
    ) {
        let size = sampleSize
        pixels.withUnsafeBufferPointer { source in
            let base = source.baseAddress!
            var slot = 0
            for index in indices {
                (images + slot * size).update(from: base + index * size, count: size)
                labels[slot] = self.labels[index]
                slot += 1
            }
        }
    }

    /// Copies a batch as `copyBatch(_:images:labels:)` does, then augments each image in place.
    /// The randomness is keyed by the sample's index in this set (not its slot in the batch), so an
    /// image is augmented the same way whichever worker or micro-batch handles it.
    public func copyBatch(
        _ indices: some Collection<Int>, images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
        augmentation: Augmentation, seed: UInt64, epoch: Int
    ) {
        copyBatch(indices, images: images, labels: labels)
        guard !augmentation.isIdentity else { return }
        let size = sampleSize
        var slot = 0
        for index in indices {
            // A volume's slices are augmented alike, as channels of one image.
            augmentation.apply(
                to: images + slot * size, channels: channels * depth, height: height, width: width,
                seed: seed, epoch: epoch, sampleIndex: index)
            slot += 1
        }
    }

    /// A new set holding the given samples in the given order (for a quick run on the first N
    /// images, or a held-out split).
    public func subset(_ indices: some Collection<Int>, name: String? = nil) throws -> ImageSet {
        let size = sampleSize
        var newLabels = [Int32]()
        newLabels.reserveCapacity(indices.count)
        for index in indices {
            guard (0..<count).contains(index) else {
                throw DataError.invalidSetting(
                    name: "\(self.name) subset index", value: "\(index)", allowed: "0..<\(count)")
            }
            newLabels.append(labels[index])
        }
        let newPixels = [Float](unsafeUninitializedCapacity: indices.count * size) { buffer, initialised in
            var slot = 0
            pixels.withUnsafeBufferPointer { source in
                for index in indices {
                    (buffer.baseAddress! + slot * size).initialize(from: source.baseAddress! + index * size, count: size)
                    slot += 1
                }
            }
            initialised = indices.count * size
        }
        return ImageSet(
            unchecked: name ?? self.name, channels: channels, depth: depth, height: height, width: width, classes: classes,
            pixels: newPixels, labels: newLabels)
    }

    /// How many images of each class the set holds, [classes].
    public func classCounts() -> [Int] {
        var counts = [Int](repeating: 0, count: classes)
        for label in labels { counts[Int(label)] += 1 }
        return counts
    }
}
