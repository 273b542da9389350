/// CIFAR-10, binary version: 32x32 colour images in 10 classes. Each batch file is a sequence of
/// 3073-byte records: one label byte, then the red, green and blue planes (32x32 bytes each, rows
/// top to bottom), which is already CHW order.
public enum CIFAR10 {
    /// Per-channel (R, G, B) mean of the training set, on the 0...1 scale.
    public static let mean: [Float] = [0.4914, 0.4822, 0.4465]
    /// Per-channel (R, G, B) standard deviation of the training set, on the 0...1 scale.
    public static let standardDeviation: [Float] = [0.2470, 0.2435, 0.2616]
    /// Class names, indexed by label.
    public static let classNames = [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]

    /// Which of the two splits to load (train: the five data batches; test: the test batch).
    public typealias Split = DataSplit

    /// Image shape: 3 channels (R, G, B) of 32x32.
    public static let channels = 3
    /// Image height in pixels.
    public static let height = 32
    /// Image width in pixels.
    public static let width = 32
    /// Bytes per record: the label, then 3 planes of 32x32.
    public static let recordBytes = 1 + 3 * 32 * 32

    /// The batch files of each split, in the order their images are concatenated.
    public static func fileNames(_ split: Split) -> [String] {
        switch split {
        case .train: return (1...5).map { "data_batch_\($0).bin" }
        case .test: return ["test_batch.bin"]
        }
    }

    /// The fix printed when a file is missing.
    public static let installHint = "download the binary version of CIFAR-10 (cifar-10-binary.tar.gz), "
        + "unpack it, and set `data.path` in the config to the `cifar-10-batches-bin` directory holding "
        + "data_batch_1.bin ... data_batch_5.bin and test_batch.bin"

    /// Loads one split from `directory` (the `cifar-10-batches-bin` folder, or the folder that
    /// holds it), normalised per channel with the training set's statistics.
    public static func load(_ split: Split, directory: String) throws -> ImageSet {
        let names = fileNames(split)
        var folder = directory
        let nested = joinPath(directory, "cifar-10-batches-bin")
        if !FileContents.exists(joinPath(directory, names[0])), FileContents.exists(joinPath(nested, names[0])) {
            folder = nested
        }
        return try load(paths: names.map { joinPath(folder, $0) }, name: "cifar10/\(split.rawValue)")
    }

    /// Loads and concatenates CIFAR-10 binary batch files from any paths (each may be gzipped).
    public static func load(
        paths: [String], name: String, mean: [Float] = mean, standardDeviation: [Float] = standardDeviation
    ) throws -> ImageSet {
        guard mean.count == channels, standardDeviation.count == channels else {
            throw DataError.invalidSetting(
                name: "\(name) normalisation", value: "\(mean.count) means, \(standardDeviation.count) deviations",
                allowed: "one mean and one standard deviation per channel (3 each)")
        }
        guard !paths.isEmpty else {
            throw DataError.invalidSetting(name: "\(name) files", value: "none", allowed: "at least one batch file")
        }
        let tables = try (0..<channels).map {
            try Normalisation.table(mean: mean[$0], standardDeviation: standardDeviation[$0], name: name)
        }
        let plane = height * width
        let sampleSize = channels * plane
        var labels: [Int32] = []
        var pixels: [Float] = []
        // The standard files hold 10,000 records each; reserving avoids regrowing 600 MB of floats.
        labels.reserveCapacity(10_000 * paths.count)
        pixels.reserveCapacity(10_000 * paths.count * sampleSize)

        for path in paths {
            try FileContents.withBytes(path: path, notFoundFix: installHint) { contents in
                guard contents.count > 0 else { throw DataError.empty(path: path) }
                guard contents.count % recordBytes == 0 else {
                    throw DataError.incompleteRecord(path: path, recordBytes: recordBytes, fileBytes: contents.count)
                }
                let records = contents.count / recordBytes
                for record in 0..<records {
                    let label = contents[record * recordBytes]
                    guard label < classNames.count else {
                        throw DataError.labelOutOfRange(
                            path: path, index: record, label: Int(label), classes: classNames.count)
                    }
                }
                let start = pixels.count
                pixels.append(contentsOf: repeatElement(0, count: records * sampleSize))
                pixels.withUnsafeMutableBufferPointer { destination in
                    let base = destination.baseAddress! + start
                    for record in 0..<records {
                        let recordStart = record * recordBytes
                        labels.append(Int32(contents[recordStart]))
                        for channel in 0..<channels {
                            let planeStart = recordStart + 1 + channel * plane
                            Normalisation.decode(
                                UnsafeRawBufferPointer(rebasing: contents[planeStart..<planeStart + plane]),
                                table: tables[channel],
                                into: base + record * sampleSize + channel * plane)
                        }
                    }
                }
            }
        }
        return ImageSet(
            unchecked: name, channels: channels, height: height, width: width, classes: classNames.count,
            pixels: pixels, labels: labels)
    }
}
