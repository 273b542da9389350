/// Fashion-MNIST: 28x28 greyscale images of clothing in 10 classes, 60,000 for training and 10,000
/// for testing, stored as four IDX files (gzip-compressed or not).
public enum FashionMNIST {
    /// Where Debian's `dataset-fashion-mnist` package installs the files.
    public static let defaultDirectory = "/usr/share/datasets/fashion-mnist"
    /// The training set's pixel mean, on the 0...1 scale.
    public static let mean: Float = 0.2860
    /// The training set's pixel standard deviation, on the 0...1 scale.
    public static let standardDeviation: Float = 0.3530
    /// Class names, indexed by label.
    public static let classNames = [
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ]

    /// Which of the two splits to load.
    public typealias Split = DataSplit

    /// The fix printed when a file is missing.
    public static let installHint = "install the data set with `apt-get install dataset-fashion-mnist`, "
        + "or set `data.path` in the config to the directory holding the Fashion-MNIST IDX files"

    /// Loads one split from `directory`, normalised with the training set's mean and standard
    /// deviation. Accepts `train-images-idx3-ubyte.gz` or the uncompressed `train-images-idx3-ubyte`
    /// (and likewise for the other files), preferring the compressed file when both exist.
    public static func load(_ split: Split, directory: String = defaultDirectory) throws -> ImageSet {
        let prefix = split == .train ? "train" : "t10k"
        return try IDXImages.load(
            imagesPath: try locate("\(prefix)-images-idx3-ubyte", in: directory),
            labelsPath: try locate("\(prefix)-labels-idx1-ubyte", in: directory),
            mean: mean, standardDeviation: standardDeviation, name: "fashion-mnist/\(split.rawValue)",
            classes: classNames.count, notFoundFix: installHint)
    }

    private static func locate(_ baseName: String, in directory: String) throws -> String {
        let compressed = joinPath(directory, baseName + ".gz")
        if FileContents.exists(compressed) { return compressed }
        let plain = joinPath(directory, baseName)
        if FileContents.exists(plain) { return plain }
        throw DataError.fileNotFound(
            path: compressed, fix: "neither it nor the uncompressed `\(baseName)` exists; " + installHint)
    }
}

/// `directory/name`, without doubling a trailing slash.
func joinPath(_ directory: String, _ name: String) -> String {
    if directory.isEmpty { return name }
    return directory.hasSuffix("/") ? directory + name : directory + "/" + name
}
