import Dispatch
import Foundation

/// The files of one split of a folder data set in torchvision's `ImageFolder` layout: one
/// sub-folder per class (`DIR/train/cat/001.jpg`), the class index being the folder's place among
/// the sorted class names, and the files in `ImageFolder`'s order (class by class; within a class,
/// folders and files sorted by name, descending into sub-folders).
public struct ImageFolderListing: Sendable, Equatable {
    /// The split's folder (`DIR/train`).
    public let directory: String
    /// Class names, sorted; a label is an index into them.
    public let classNames: [String]
    /// Every image file's path, in order.
    public let paths: [String]
    /// Each file's class index.
    public let labels: [Int32]

    /// Lists `directory`: a folder with no class folders, or a class folder with no images, is an
    /// error naming it (torchvision refuses both too).
    public static func list(_ directory: String) throws -> ImageFolderListing {
        let manager = FileManager.default
        var isFolder: ObjCBool = false
        guard manager.fileExists(atPath: directory, isDirectory: &isFolder), isFolder.boolValue else {
            throw ImageFolderError(
                path: directory,
                problem: "no such folder; data.path must hold train/ and val/, each with one sub-folder per class "
                    + "(torchvision's ImageFolder layout: DIR/train/CLASS/*.jpg)")
        }
        let entries = try sortedEntries(directory)
        let classNames = entries.filter { isDirectory(joinPath(directory, $0)) }
        guard !classNames.isEmpty else {
            throw ImageFolderError(
                path: directory, problem: "holds no class folders; put each class's images in a sub-folder named after it")
        }
        var paths: [String] = []
        var labels: [Int32] = []
        for (label, name) in classNames.enumerated() {
            let files = try imageFiles(under: joinPath(directory, name))
            guard !files.isEmpty else {
                throw ImageFolderError(
                    path: joinPath(directory, name),
                    problem: "class '\(name)' holds no images (.jpg, .jpeg or .png); add some or remove the folder")
            }
            paths += files
            labels += repeatElement(Int32(label), count: files.count)
        }
        return ImageFolderListing(directory: directory, classNames: classNames, paths: paths, labels: labels)
    }

    /// The listing without the files at `excluded` (bad files left out).
    func removing(_ excluded: Set<Int>) -> ImageFolderListing {
        let kept = paths.indices.filter { !excluded.contains($0) }
        return ImageFolderListing(
            directory: directory, classNames: classNames, paths: kept.map { paths[$0] }, labels: kept.map { labels[$0] })
    }

    /// Image files below `folder`, as Python's `sorted(os.walk(folder))` then `sorted(files)`
    /// visits them: folders in order of their whole path, files by name within each.
    private static func imageFiles(under folder: String) throws -> [String] {
        var folders = [folder]
        var pending = [folder]
        while let next = pending.popLast() {
            for entry in try sortedEntries(next) where isDirectory(joinPath(next, entry)) {
                folders.append(joinPath(next, entry))
                pending.append(joinPath(next, entry))
            }
        }
        folders.sort(by: codePointOrder)
        var files: [String] = []
        for folder in folders {
            for entry in try sortedEntries(folder) {
                let path = joinPath(folder, entry)
                let suffix = entry.split(separator: ".").count > 1 ? entry.split(separator: ".").last!.lowercased() : ""
                if ImageFile.extensions.contains(suffix), !isDirectory(path) { files.append(path) }
            }
        }
        return files
    }

    /// Python sorts strings by code point; Swift's `<` on String does not quite.
    private static func codePointOrder(_ a: String, _ b: String) -> Bool {
        a.unicodeScalars.lexicographicallyPrecedes(b.unicodeScalars)
    }

    private static func sortedEntries(_ folder: String) throws -> [String] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: folder).sorted(by: codePointOrder)
        } catch {
            throw ImageFolderError(path: folder, problem: "cannot list the folder (\(error.localizedDescription)); check its permissions")
        }
    }

    private static func isDirectory(_ path: String) -> Bool {
        var isFolder: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) && isFolder.boolValue
    }
}

/// Loading a split of a folder data set into memory, decoded and normalised.
public enum ImageFolder {
    /// ImageNet's per-channel mean and standard deviation (torchvision's reference recipes), the
    /// default for RGB folders; greyscale folders default to their average.
    public static let imageNetMean: [Float] = [0.485, 0.456, 0.406]
    public static let imageNetStandardDeviation: [Float] = [0.229, 0.224, 0.225]
    public static let greyMean: [Float] = [0.449]
    public static let greyStandardDeviation: [Float] = [0.226]

    /// What `load` read: the set, and its class names (index = label).
    public struct Loaded: Sendable {
        public let images: ImageSet
        public let classNames: [String]
        /// Files left out because they could not be decoded (with `skipBadFiles`).
        public let skipped: [String]
    }

    /// Decodes every file of `listing` to `channels` x `height` x `width` and normalises channel c
    /// as (v / 255 - mean[c]) / standardDeviation[c]: the same table as the IDX loaders, so a PNG
    /// copy of an IDX set loads to the same bits. Files are decoded on `threads` threads, each into
    /// its own slot, so the result does not depend on the thread count. A file of another size is
    /// an error (this loader does not resize); a file that does not decode is an error naming it,
    /// or with `skipBadFiles` left out and listed in `skipped`.
    public static func load(
        _ listing: ImageFolderListing, name: String, channels: Int, height: Int, width: Int,
        mean: [Float], standardDeviation: [Float], skipBadFiles: Bool, threads: Int = 2
    ) throws -> Loaded {
        guard channels == 1 || channels == 3 else {
            throw ImageFolderError(path: listing.directory, problem: "images load as 1 (grey) or 3 (RGB) channels, not \(channels); set model.input's first number to 1 or 3")
        }
        guard mean.count == channels, standardDeviation.count == channels else {
            throw DataError.invalidSetting(
                name: "data.mean / data.std", value: "\(mean.count) / \(standardDeviation.count) numbers",
                allowed: "one number per channel (\(channels))")
        }
        let tables = try (0..<channels).map {
            try Normalisation.table(mean: mean[$0], standardDeviation: standardDeviation[$0], name: name)
        }
        let sampleSize = channels * height * width
        let plane = height * width
        var pixels = [Float](repeating: 0, count: listing.paths.count * sampleSize)
        let (kept, skipped, keptIndices) = try pixels.withUnsafeMutableBufferPointer { buffer in
            // Each thread writes only its own files' slots.
            nonisolated(unsafe) let base = buffer.baseAddress!
            return try scan(listing, channels: channels, skipBadFiles: skipBadFiles, threads: threads) { index, image in
                guard image.width == width, image.height == height else {
                    throw ImageFolderError(
                        path: listing.paths[index],
                        problem: "is \(image.width)x\(image.height) but model.input is \(width)x\(height); "
                            + "resize the images, set model.input to their size, or add data.transforms (resize, center_crop)")
                }
                let destination = base + index * sampleSize
                image.pixels.withUnsafeBufferPointer { source in
                    for c in 0..<channels {
                        tables[c].withUnsafeBufferPointer { table in
                            for p in 0..<plane { destination[c * plane + p] = table[Int(source[p * channels + c])] }
                        }
                    }
                }
            }
        }
        if keptIndices.count != listing.paths.count {
            pixels = keptIndices.flatMap { pixels[$0 * sampleSize..<($0 + 1) * sampleSize] }
        }
        let images = ImageSet(
            unchecked: name, channels: channels, height: height, width: width, classes: kept.classNames.count,
            pixels: pixels, labels: kept.labels)
        return Loaded(images: images, classNames: kept.classNames, skipped: skipped)
    }

    /// Decodes every file of `listing` once on `threads` threads and hands each image to `body`
    /// (called concurrently, each index once). A file that does not decode is an error naming it
    /// or, with `skipBadFiles`, left out; any other error from `body` stops the scan. Returns the
    /// listing without the files left out, their paths, and the indices kept.
    public static func scan(
        _ listing: ImageFolderListing, channels: Int, skipBadFiles: Bool, threads: Int,
        _ body: @Sendable (Int, DecodedImage) throws -> Void
    ) throws -> (listing: ImageFolderListing, skipped: [String], kept: [Int]) {
        try visit(listing, skipBadFiles: skipBadFiles, threads: threads) { index in
            try body(index, try ImageFile.decode(path: listing.paths[index], channels: channels))
        }
    }

    /// `scan` with `ImageFile.check` in place of decoding: every file's structure checked and its
    /// width and height handed to `body`, at a fraction of the cost (opening a streamed folder).
    public static func check(
        _ listing: ImageFolderListing, skipBadFiles: Bool, threads: Int,
        _ body: @Sendable (_ index: Int, _ width: Int, _ height: Int) throws -> Void
    ) throws -> (listing: ImageFolderListing, skipped: [String], kept: [Int]) {
        try visit(listing, skipBadFiles: skipBadFiles, threads: threads) { index in
            let size = try ImageFile.check(path: listing.paths[index])
            try body(index, size.width, size.height)
        }
    }

    /// Runs `body` for every file index on `threads` threads, each index once, and sorts out the
    /// failures as `scan` describes.
    private static func visit(
        _ listing: ImageFolderListing, skipBadFiles: Bool, threads: Int, _ body: @Sendable (Int) throws -> Void
    ) throws -> (listing: ImageFolderListing, skipped: [String], kept: [Int]) {
        let count = listing.paths.count
        let failures = Failures(count: count)
        let workers = max(1, min(threads, count))
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            for index in stride(from: worker, to: count, by: workers) {
                do {
                    try body(index)
                } catch {
                    failures.set(index, error)
                }
            }
        }
        let failed = failures.all()
        if let first = failed.first(where: { !skipBadFiles || !isDecodeFailure($0.error) }) {
            throw first.error
        }
        let excluded = Set(failed.map(\.index))
        let kept = listing.removing(excluded)
        guard !kept.paths.isEmpty else {
            throw ImageFolderError(path: listing.directory, problem: "no file could be decoded; check the images")
        }
        return (kept, failed.map { listing.paths[$0.index] }, (0..<count).filter { !excluded.contains($0) })
    }

    /// A file that is there but does not decode; size mismatches and unreadable files are not skipped.
    private static func isDecodeFailure(_ error: Error) -> Bool {
        guard let error = error as? ImageFolderError else { return false }
        return error.problem.hasPrefix("cannot decode")
    }

    /// Errors collected from decoding threads, by file index.
    private final class Failures: @unchecked Sendable {
        // Sendable: every access holds the lock.
        private let lock = NSLock()
        private var errors: [Int: Error] = [:]
        init(count: Int) {}
        func set(_ index: Int, _ error: Error) { lock.withLock { errors[index] = error } }
        func all() -> [(index: Int, error: Error)] {
            lock.withLock { errors.sorted { $0.key < $1.key }.map { (index: $0.key, error: $0.value) } }
        }
    }
}
