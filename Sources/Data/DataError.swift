/// Everything that can go wrong while reading or checking a data set. Each case names the file (or
/// setting) at fault, and `description` says what was wrong, where, and how to fix it.
public enum DataError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file does not exist; `fix` says how to obtain it (it differs per data set).
    case fileNotFound(path: String, fix: String)
    /// The file exists but could not be opened or read (permissions, a directory, an I/O error).
    case unreadable(path: String, reason: String)
    /// The file starts like gzip but does not decompress; `reason` is zlib's account.
    case corruptCompression(path: String, reason: String)
    /// The first bytes are not an IDX header (two zero bytes, a type code, a dimension count).
    case badMagic(path: String, found: [UInt8])
    /// The IDX element type is valid IDX but not unsigned bytes, the only type these sets use.
    case unsupportedElementType(path: String, typeCode: UInt8)
    /// The IDX file has the wrong number of dimensions for its role (3 for images, 1 for labels).
    case wrongDimensionCount(path: String, expected: Int, found: Int)
    /// The file is shorter than its header (or record size) promises.
    case truncated(path: String, expectedBytes: Int, actualBytes: Int)
    /// The file is longer than its header promises.
    case trailingBytes(path: String, expectedBytes: Int, actualBytes: Int)
    /// A file of fixed-size records (CIFAR-10) whose length is not a whole number of records.
    case incompleteRecord(path: String, recordBytes: Int, fileBytes: Int)
    /// The file holds no samples at all.
    case empty(path: String)
    /// The images file and the labels file disagree on the number of samples.
    case countMismatch(imagesPath: String, images: Int, labelsPath: String, labels: Int)
    /// A label is not below the number of classes.
    case labelOutOfRange(path: String, index: Int, label: Int, classes: Int)
    /// A setting (normalisation, augmentation, image-set shape) is out of its allowed range.
    case invalidSetting(name: String, value: String, allowed: String)

    /// What was wrong, where, and how to fix it, in one line.
    public var description: String {
        switch self {
        case let .fileNotFound(path, fix):
            return "\(path): file not found; \(fix)"
        case let .unreadable(path, reason):
            return "\(path): cannot read the file (\(reason)); check that it is a readable regular file"
        case let .corruptCompression(path, reason):
            return "\(path): the gzip data is corrupt (\(reason)); the file is damaged or was cut short "
                + "while downloading: replace it (`gzip -t \(path)` shows the same fault)"
        case let .badMagic(path, found):
            let hex = found.map { byte in
                let digits = String(byte, radix: 16)
                return digits.count == 1 ? "0" + digits : digits
            }.joined(separator: " ")
            return "\(path): not an IDX file (first bytes \(hex), expected 00 00 08 then the dimension "
                + "count); point the loader at the MNIST-format `-idx3-ubyte` / `-idx1-ubyte` files"
        case let .unsupportedElementType(path, typeCode):
            return "\(path): IDX element type 0x\(String(typeCode, radix: 16)) (\(Self.idxTypeName(typeCode))) "
                + "is not supported; only 0x08 (unsigned byte) is, which is what MNIST-format image and "
                + "label files use"
        case let .wrongDimensionCount(path, expected, found):
            let role = expected == 1 ? "a labels file (1 dimension: count)" : "an images file (3 dimensions: count, rows, columns)"
            return "\(path): IDX file has \(found) dimension(s), expected \(expected); it is not \(role) — "
                + "check that the images and labels paths are not swapped"
        case let .truncated(path, expectedBytes, actualBytes):
            return "\(path): file is truncated: its header promises \(expectedBytes) bytes but it holds "
                + "\(actualBytes); the download was probably cut short: replace the file"
        case let .trailingBytes(path, expectedBytes, actualBytes):
            return "\(path): file has \(actualBytes - expectedBytes) unexpected trailing bytes "
                + "(header promises \(expectedBytes), file holds \(actualBytes)); the file is damaged or "
                + "not what its header says: replace it"
        case let .incompleteRecord(path, recordBytes, fileBytes):
            return "\(path): \(fileBytes) bytes is not a whole number of \(recordBytes)-byte records; "
                + "the file is truncated or not a CIFAR-10 binary batch: replace it with the file from the "
                + "binary version of CIFAR-10"
        case let .empty(path):
            return "\(path): holds no samples; replace it with a complete copy"
        case let .countMismatch(imagesPath, images, labelsPath, labels):
            return "\(imagesPath) holds \(images) images but \(labelsPath) holds \(labels) labels; "
                + "the two files must come from the same split (train with train, test with test)"
        case let .labelOutOfRange(path, index, label, classes):
            return "\(path): label \(label) of sample \(index) is not below the number of classes "
                + "(\(classes)); the file is damaged or belongs to another data set"
        case let .invalidSetting(name, value, allowed):
            return "\(name) = \(value) is not allowed; use \(allowed)"
        }
    }

    private static func idxTypeName(_ code: UInt8) -> String {
        switch code {
        case 0x08: return "unsigned byte"
        case 0x09: return "signed byte"
        case 0x0B: return "16-bit integer"
        case 0x0C: return "32-bit integer"
        case 0x0D: return "32-bit float"
        case 0x0E: return "64-bit float"
        default: return "not an IDX type code"
        }
    }
}
