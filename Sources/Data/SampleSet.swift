/// A labelled set of images the trainer copies batches from: held in memory (`ImageSet`) or read
/// from files as batches are asked for (`ImageFolderStream`). Every batch is a pure function of
/// the indices, (seed, epoch) and the set, whoever asks for it.
public protocol SampleSet: Sendable {
    /// Where the set came from, for logs and errors.
    var name: String { get }
    var channels: Int { get }
    /// Slices per sample of a volume; 1 for images and sequences.
    var depth: Int { get }
    var height: Int { get }
    var width: Int { get }
    /// The number of classes; every label is below it.
    var classes: Int { get }
    /// The number of samples.
    var count: Int { get }

    /// Copies the given samples, in order, as evaluation sees them: [n, C, H, W] and n labels.
    func copyBatch(_ indices: [Int], images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>)

    /// Copies the given samples as training sees them: augmented, every random choice keyed by
    /// (seed, epoch, sample index).
    func copyBatch(
        _ indices: [Int], images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
        augmentation: Augmentation, seed: UInt64, epoch: Int)

    /// Says which micro-batches will be copied next (training ones with `seed` and `epoch`), in
    /// order, so a set that reads files can prepare them in the background. Changes no sample.
    func prefetch(_ batches: [[Int]], training: Bool, seed: UInt64, epoch: Int)

    /// The first sample that could not be made (a file that stopped decoding after it was
    /// opened), which leaves its batch wrong: whoever copied the batch must stop on it.
    var failure: Error? { get }
}

extension SampleSet {
    /// Floats per sample: channels * depth * height * width.
    public var sampleSize: Int { channels * depth * height * width }

    /// Nothing to prepare for a set in memory.
    public func prefetch(_ batches: [[Int]], training: Bool, seed: UInt64, epoch: Int) {}

    /// A set in memory makes every sample.
    public var failure: Error? { nil }
}

extension ImageSet: SampleSet {
    public func copyBatch(_ indices: [Int], images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        copyBatch(indices[...], images: images, labels: labels)
    }

    public func copyBatch(
        _ indices: [Int], images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
        augmentation: Augmentation, seed: UInt64, epoch: Int
    ) {
        copyBatch(indices[...], images: images, labels: labels, augmentation: augmentation, seed: seed, epoch: epoch)
    }
}
