/// Which part of a data set to load.
public enum DataSplit: String, Sendable, CaseIterable {
    /// The training images.
    case train
    /// The held-out test images.
    case test
}

/// MNIST-format image sets from any pair of IDX files (MNIST, Fashion-MNIST, KMNIST, EMNIST...):
/// a 3-dimensional unsigned-byte images file [count, rows, columns] and a 1-dimensional labels file.
public enum IDXImages {
    /// Loads and normalises an IDX image set: each pixel becomes (pixel / 255 - mean) / standardDeviation.
    ///
    /// Either file may be gzip-compressed. Everything is checked: magic, element type, dimension
    /// counts, sizes against the bytes present, equal image and label counts, labels below `classes`.
    public static func load(
        imagesPath: String, labelsPath: String, mean: Float, standardDeviation: Float, name: String,
        classes: Int = 10
    ) throws -> ImageSet {
        try load(
            imagesPath: imagesPath, labelsPath: labelsPath, mean: mean, standardDeviation: standardDeviation,
            name: name, classes: classes, notFoundFix: IDXHeader.genericNotFoundFix)
    }

    static func load(
        imagesPath: String, labelsPath: String, mean: Float, standardDeviation: Float, name: String,
        classes: Int, notFoundFix: String
    ) throws -> ImageSet {
        let table = try Normalisation.table(mean: mean, standardDeviation: standardDeviation, name: name)
        guard (1...256).contains(classes) else {
            throw DataError.invalidSetting(
                name: "\(name).classes", value: "\(classes)", allowed: "1...256 (labels are single bytes)")
        }

        let labels = try IDXHeader.labels(path: labelsPath, classes: classes, notFoundFix: notFoundFix)

        return try FileContents.withBytes(path: imagesPath, notFoundFix: notFoundFix) { contents in
            let header = try IDXHeader(parsing: contents, path: imagesPath, expectedDimensions: 3)
            let (count, height, width) = (header.dimensions[0], header.dimensions[1], header.dimensions[2])
            guard count > 0, height > 0, width > 0 else { throw DataError.empty(path: imagesPath) }
            guard count == labels.count else {
                throw DataError.countMismatch(
                    imagesPath: imagesPath, images: count, labelsPath: labelsPath, labels: labels.count)
            }
            let source = UnsafeRawBufferPointer(rebasing: contents[header.headerBytes...])
            let pixels = Normalisation.decode(source, table: table)
            return ImageSet(
                unchecked: name, channels: 1, height: height, width: width, classes: classes,
                pixels: pixels, labels: labels.map { Int32($0) })
        }
    }
}

/// Byte-to-float normalisation through a 256-entry table: one load per pixel, and every pixel gets
/// exactly the value (byte / 255 - mean) / standardDeviation computed in Float.
enum Normalisation {
    static func table(mean: Float, standardDeviation: Float, name: String) throws -> [Float] {
        guard mean.isFinite else {
            throw DataError.invalidSetting(name: "\(name) normalisation mean", value: "\(mean)", allowed: "a finite number")
        }
        guard standardDeviation.isFinite, standardDeviation > 0 else {
            throw DataError.invalidSetting(
                name: "\(name) normalisation standard deviation", value: "\(standardDeviation)",
                allowed: "a finite number above 0")
        }
        return (0..<256).map { (Float($0) / 255 - mean) / standardDeviation }
    }

    /// Every byte of `source`, mapped through `table`, into a new array.
    static func decode(_ source: UnsafeRawBufferPointer, table: [Float]) -> [Float] {
        [Float](unsafeUninitializedCapacity: source.count) { destination, initialised in
            decode(source, table: table, into: destination.baseAddress!)
            initialised = source.count
        }
    }

    /// Every byte of `source`, mapped through `table`, written to `destination`.
    static func decode(_ source: UnsafeRawBufferPointer, table: [Float], into destination: UnsafeMutablePointer<Float>) {
        guard source.count > 0 else { return }
        let bytes = source.baseAddress!.assumingMemoryBound(to: UInt8.self)
        table.withUnsafeBufferPointer { lookup in
            let lookup = lookup.baseAddress!
            for i in 0..<source.count {
                destination[i] = lookup[Int(bytes[i])]
            }
        }
    }
}
