import Foundation

/// One split of an image folder read as batches are asked for: only the listing stays in
/// memory; each batch's files are decoded and transformed (`ImagePipeline`) when it is copied, so
/// memory does not grow with the number of images. The files are checked once when the stream
/// is opened (each one's structure and header, not its pixels: `ImageFile.check`; its output size
/// too), so most bad files are named at start; one that passes and still fails to decode stops
/// the run when its sample is made, naming it (or with `skipBadFiles` gives zeros and a warning).
public struct ImageFolderStream: SampleSet {
    public let name: String
    public let listing: ImageFolderListing
    public let pipeline: ImagePipeline
    public let channels: Int
    public let height: Int
    public let width: Int
    /// Files left out when opening because they do not decode (`skipBadFiles`).
    public let skipped: [String]
    /// True for a training split (random transforms), false for evaluation.
    public let training: Bool
    private let failures: DecodeFailureLog
    /// Prepares announced micro-batches on a background thread (nil: depth 0).
    private let prefetcher: SamplePrefetcher?
    /// Evaluation samples have no seed or epoch; they are prefetched under this key.
    private static let evaluationKey: (seed: UInt64, epoch: Int) = (0, -1)

    public var classes: Int { listing.classNames.count }
    /// Images are one slice deep.
    public var depth: Int { 1 }
    public var count: Int { listing.paths.count }

    /// Opens `listing` for samples of channels x height x width: every file is checked once (on
    /// `threads` threads, `ImageFile.check`) and its size with it: `pipeline` must make it that size.
    public init(
        _ listing: ImageFolderListing, name: String, pipeline: ImagePipeline, training: Bool,
        channels: Int, height: Int, width: Int, skipBadFiles: Bool, threads: Int, prefetchDepth: Int = 0
    ) throws {
        guard channels == 1 || channels == 3 else {
            throw ImageFolderError(path: listing.directory, problem: "images load as 1 (grey) or 3 (RGB) channels, not \(channels); set model.input's first number to 1 or 3")
        }
        guard pipeline.mean.count == channels, pipeline.standardDeviation.count == channels else {
            throw DataError.invalidSetting(
                name: "data.mean / data.std", value: "\(pipeline.mean.count) / \(pipeline.standardDeviation.count) numbers",
                allowed: "one number per channel (\(channels))")
        }
        let (kept, skipped, _) = try ImageFolder.check(listing, skipBadFiles: skipBadFiles, threads: threads) { index, fileWidth, fileHeight in
            let size = pipeline.outputSize(width: fileWidth, height: fileHeight, training: training)
            guard size == (width, height) else {
                throw ImageFolderError(
                    path: listing.paths[index],
                    problem: "is \(fileWidth)x\(fileHeight), which the transforms make \(size.width)x\(size.height), "
                        + "but model.input is \(width)x\(height); set data.transforms (resize and center_crop, or "
                        + "random_resized_crop for training) to the model's size")
            }
        }
        self.name = name
        self.listing = kept
        self.pipeline = pipeline
        self.training = training
        self.channels = channels
        self.height = height
        self.width = width
        self.skipped = skipped
        let failures = DecodeFailureLog(skipBadFiles: skipBadFiles)
        self.failures = failures
        let size = channels * height * width
        prefetcher = prefetchDepth < 1 ? nil : SamplePrefetcher(depth: prefetchDepth, sampleSize: size) { index, seed, epoch, output in
            Self.makeSample(index, listing: kept, pipeline: pipeline, training: training && epoch >= 0, channels: channels,
                            size: size, seed: seed, epoch: epoch, failures: failures, into: output)
        }
    }

    /// Samples the background prefetcher has made and not yet handed over.
    public var failure: Error? { failures.failure }

    public var prefetchedSamplesReady: Int { prefetcher?.samplesReady ?? 0 }

    /// Samples copied from the background prefetcher rather than made on the spot.
    public var prefetchedSamplesTaken: Int { prefetcher?.samplesTaken ?? 0 }

    public func prefetch(_ batches: [[Int]], training: Bool, seed: UInt64, epoch: Int) {
        let key = training && self.training ? (seed, epoch) : Self.evaluationKey
        prefetcher?.prefetch(batches, seed: key.0, epoch: key.1)
    }

    /// One sample as the pipeline makes it (before the float-domain `Augmentation`): decoded
    /// (only the part the random crop, or evaluation's centre crop of the resized image, reads),
    /// transformed, normalised. A file that does not decode is kept as `failure` (`DecodeFailureLog`).
    private static func makeSample(
        _ index: Int, listing: ImageFolderListing, pipeline: ImagePipeline, training: Bool, channels: Int, size: Int,
        seed: UInt64, epoch: Int, failures: DecodeFailureLog, into output: UnsafeMutablePointer<Float>
    ) {
        do {
            if training {
                let part = try ImageFile.decode(path: listing.paths[index], channels: channels) { width, height in
                    pipeline.trainingRegion(width: width, height: height, seed: seed, epoch: epoch, sample: index)
                }
                pipeline.training(region: part, seed: seed, epoch: epoch, sample: index, into: output)
            } else {
                var window: ImagePipeline.EvaluationWindow?
                let part = try ImageFile.decode(path: listing.paths[index], channels: channels) { width, height in
                    window = pipeline.evaluationWindow(width: width, height: height)
                    return window?.region ?? .whole(width: width, height: height)
                }
                if let window {
                    pipeline.evaluation(region: part, window: window, into: output)
                } else {
                    pipeline.evaluation(part, into: output)
                }
            }
        } catch {
            failures.report(listing.paths[index], error)
            output.update(repeating: 0, count: size)
        }
    }

    /// One sample, from the prefetcher when it was announced.
    private func sample(_ index: Int, training: Bool, seed: UInt64, epoch: Int, into output: UnsafeMutablePointer<Float>) {
        let key = training ? (seed, epoch) : Self.evaluationKey
        if prefetcher?.take(index, seed: key.0, epoch: key.1, into: output) == true { return }
        Self.makeSample(index, listing: listing, pipeline: pipeline, training: training, channels: channels, size: sampleSize,
                        seed: seed, epoch: epoch, failures: failures, into: output)
    }

    public func copyBatch(_ indices: [Int], images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>) {
        for (slot, index) in indices.enumerated() {
            labels[slot] = listing.labels[index]
            sample(index, training: false, seed: 0, epoch: 0, into: images + slot * sampleSize)
        }
    }

    public func copyBatch(
        _ indices: [Int], images: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<Int32>,
        augmentation: Augmentation, seed: UInt64, epoch: Int
    ) {
        for (slot, index) in indices.enumerated() {
            labels[slot] = listing.labels[index]
            let output = images + slot * sampleSize
            sample(index, training: training, seed: seed, epoch: epoch, into: output)
            // The older float-domain augmentations (crop_padding, translation, ...) still apply after.
            augmentation.apply(
                to: output, channels: channels, height: height, width: width, seed: seed, epoch: epoch, sampleIndex: index)
        }
    }
}

/// Files that fail to decode when their samples are made, though they passed the check at
/// opening (damage inside the compressed data). A sample cannot be left out of a step once the
/// order is fixed without changing the run, so the first such failure is kept for whoever made
/// the batch to stop on (`SampleSet.failure`: a worker tells its coordinator, which stops the
/// run naming the file). With `skip_bad_files` the sample is zeros (the mean colour) instead,
/// with one warning per file.
private final class DecodeFailureLog: @unchecked Sendable {
    // Sendable: every access holds the lock.
    private let lock = NSLock()
    private var reported: Set<String> = []
    private let skipBadFiles: Bool

    init(skipBadFiles: Bool) { self.skipBadFiles = skipBadFiles }

    private var firstFailure: Error?

    /// The first failure kept (without `skip_bad_files`).
    var failure: Error? { lock.withLock { firstFailure } }

    func report(_ path: String, _ error: Error) {
        guard skipBadFiles else {
            lock.withLock { if firstFailure == nil { firstFailure = error } }
            return
        }
        let isNew = lock.withLock { reported.insert(path).inserted }
        guard isNew else { return }
        FileHandle.standardError.write(Data("warning: \(error); its samples are zeros (the mean colour) for the rest of the run\n".utf8))
    }
}
