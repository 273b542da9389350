/// Labelled samples of any shape in IDX files: sequences [C, L], images [C, H, W] or volumes
/// [C, D, H, W]. The samples file holds [count] + the sample's dimensions (a single channel may be
/// left out: [count, D, H, W] for one-channel volumes such as PET scans); its elements are unsigned
/// bytes, read as byte / 255, or big-endian Float32 (type 0x0D), read as they are. The labels file
/// is the usual one-dimensional unsigned-byte file.
public enum IDXSamples {
    /// Loads a samples file and its labels, checking that the samples have `dimensions` ([C, L],
    /// [C, H, W] or [C, D, H, W]) and every label is below `classes`.
    public static func load(samplesPath: String, labelsPath: String, dimensions: [Int], classes: Int, name: String) throws -> ImageSet {
        guard (2...4).contains(dimensions.count), dimensions.allSatisfy({ $0 > 0 }) else {
            throw DataError.invalidSetting(
                name: "\(name) sample shape", value: "\(dimensions)", allowed: "[C, L], [C, H, W] or [C, D, H, W] of positive sizes")
        }
        guard (1...256).contains(classes) else {
            throw DataError.invalidSetting(name: "\(name).classes", value: "\(classes)", allowed: "1...256 (labels are single bytes)")
        }
        let labels = try IDXHeader.labels(path: labelsPath, classes: classes, notFoundFix: notFoundFix)

        return try FileContents.withBytes(path: samplesPath, notFoundFix: notFoundFix) { contents in
            let header = try IDXHeader(parsing: contents, path: samplesPath, elementTypes: [0x08: 1, 0x0D: 4])
            let found = Array(header.dimensions.dropFirst())
            let accepted = dimensions[0] == 1 ? [dimensions, Array(dimensions.dropFirst())] : [dimensions]
            guard accepted.contains(found) else {
                throw DataError.invalidSetting(
                    name: "\(samplesPath) sample shape", value: "\(found)",
                    allowed: "\(dimensions) (model.input)" + (dimensions[0] == 1 ? " or \(Array(dimensions.dropFirst()))" : ""))
            }
            let count = header.dimensions[0]
            guard count == labels.count else {
                throw DataError.countMismatch(imagesPath: samplesPath, images: count, labelsPath: labelsPath, labels: labels.count)
            }
            let data = UnsafeRawBufferPointer(rebasing: contents[header.headerBytes...])
            let values: [Float]
            if header.typeCode == 0x08 {
                values = Normalisation.decode(data, table: (0..<256).map { Float($0) / 255 })
            } else {
                values = (0..<(data.count / 4)).map { i in
                    Float(bitPattern: UInt32(bigEndian: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
            }
            let spatial = Array(dimensions.dropFirst())
            let (depth, height, width) = spatial.count == 1 ? (1, 1, spatial[0])
                : spatial.count == 2 ? (1, spatial[0], spatial[1]) : (spatial[0], spatial[1], spatial[2])
            return try ImageSet(
                name: name, channels: dimensions[0], depth: depth, height: height, width: width, classes: classes,
                pixels: values, labels: labels.map { Int32($0) })
        }
    }

    static let notFoundFix = "check data.path: the idx data set reads train-samples.idx, train-labels.idx, "
        + "test-samples.idx and test-labels.idx (each may be gzipped, with .gz appended)"

    /// The bytes of an IDX file holding `values` as big-endian Float32 with the given dimensions
    /// (count first): how tests and scripts make sequence and volume data sets.
    public static func float32File(dimensions: [Int], values: [Float]) -> [UInt8] {
        precondition(dimensions.reduce(1, *) == values.count && dimensions.count < 256)
        var bytes: [UInt8] = [0, 0, 0x0D, UInt8(dimensions.count)]
        for size in dimensions { withUnsafeBytes(of: UInt32(size).bigEndian) { bytes += $0 } }
        for value in values { withUnsafeBytes(of: value.bitPattern.bigEndian) { bytes += $0 } }
        return bytes
    }

    /// The bytes of an IDX labels file.
    public static func labelsFile(_ labels: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [0, 0, 0x08, 1]
        withUnsafeBytes(of: UInt32(labels.count).bigEndian) { bytes += $0 }
        return bytes + labels
    }
}
