/// An IDX file (the MNIST container format) of unsigned bytes: dimensions and raw data.
///
/// Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, then each
/// dimension as a big-endian UInt32, then the data in row-major order. Files compressed with gzip
/// are recognised by their magic bytes and decompressed transparently.
public struct IDXFile: Sendable, Equatable {
    /// The sizes from the header, outermost first (for images: count, rows, columns).
    public let dimensions: [Int]
    /// The data after the header, `dimensions.reduce(1, *)` bytes.
    public let bytes: [UInt8]

    /// Reads and checks an IDX file (plain or gzip): the magic, the element type, and that the file
    /// holds exactly as many bytes as its header promises.
    public static func read(path: String) throws -> IDXFile {
        try FileContents.withBytes(path: path, notFoundFix: IDXHeader.genericNotFoundFix) { contents in
            let header = try IDXHeader(parsing: contents, path: path)
            let data = UnsafeRawBufferPointer(rebasing: contents[header.headerBytes...])
            return IDXFile(dimensions: header.dimensions, bytes: [UInt8](data))
        }
    }
}

/// A checked IDX header, and where the data starts.
struct IDXHeader {
    static let genericNotFoundFix = "check the path (MNIST-format files are usually named like "
        + "`train-images-idx3-ubyte` or `train-images-idx3-ubyte.gz`)"

    let dimensions: [Int]
    let headerBytes: Int
    /// The element type: 0x08 unsigned byte, 0x0D big-endian Float32.
    let typeCode: UInt8

    /// Validates the header against the whole (decompressed) contents, so that afterwards the data
    /// can be read without bounds checks. `elementTypes` maps the accepted type codes to their
    /// sizes in bytes (by default unsigned bytes only).
    init(parsing contents: UnsafeRawBufferPointer, path: String, expectedDimensions: Int? = nil,
         elementTypes: [UInt8: Int] = [0x08: 1]) throws {
        guard contents.count >= 4 else {
            if contents.count >= 2, contents[0] != 0 || contents[1] != 0 {
                throw DataError.badMagic(path: path, found: Array(contents))
            }
            throw DataError.truncated(path: path, expectedBytes: 4, actualBytes: contents.count)
        }
        guard contents[0] == 0, contents[1] == 0 else {
            throw DataError.badMagic(path: path, found: Array(contents[0..<4]))
        }
        let typeCode = contents[2]
        guard let elementBytes = elementTypes[typeCode] else {
            throw DataError.unsupportedElementType(path: path, typeCode: typeCode)
        }
        let rank = Int(contents[3])
        if let expectedDimensions, rank != expectedDimensions {
            throw DataError.wrongDimensionCount(path: path, expected: expectedDimensions, found: rank)
        }
        guard rank >= 1 else {
            throw DataError.wrongDimensionCount(path: path, expected: expectedDimensions ?? 1, found: 0)
        }
        let headerBytes = 4 + 4 * rank
        guard contents.count >= headerBytes else {
            throw DataError.truncated(path: path, expectedBytes: headerBytes, actualBytes: contents.count)
        }
        var dimensions: [Int] = []
        var payload = elementBytes
        var overflow = false
        for axis in 0..<rank {
            let offset = 4 + 4 * axis
            var size = 0
            for k in 0..<4 { size = size << 8 | Int(contents[offset + k]) }
            dimensions.append(size)
            let (product, overflowed) = payload.multipliedReportingOverflow(by: size)
            payload = product
            overflow = overflow || overflowed
        }
        let (total, totalOverflowed) = payload.addingReportingOverflow(headerBytes)
        // A header whose sizes overflow promises more bytes than any file can hold.
        let expected = overflow || totalOverflowed ? Int.max : total
        if contents.count < expected {
            throw DataError.truncated(path: path, expectedBytes: expected, actualBytes: contents.count)
        }
        if contents.count > expected {
            throw DataError.trailingBytes(path: path, expectedBytes: expected, actualBytes: contents.count)
        }
        self.dimensions = dimensions
        self.headerBytes = headerBytes
        self.typeCode = typeCode
    }
}

extension IDXHeader {
    /// The labels of an IDX label file (one byte per sample), each below `classes`; not empty.
    static func labels(path: String, classes: Int, notFoundFix: String) throws -> [UInt8] {
        let labels = try FileContents.withBytes(path: path, notFoundFix: notFoundFix) { contents in
            let header = try IDXHeader(parsing: contents, path: path, expectedDimensions: 1)
            let labels = [UInt8](UnsafeRawBufferPointer(rebasing: contents[header.headerBytes...]))
            if let index = labels.firstIndex(where: { Int($0) >= classes }) {
                throw DataError.labelOutOfRange(path: path, index: index, label: Int(labels[index]), classes: classes)
            }
            return labels
        }
        guard !labels.isEmpty else { throw DataError.empty(path: path) }
        return labels
    }
}
