import JSONWriting

/// The contents of a safetensors file: its tensors, in the order of their data in the file, and its
/// `__metadata__` strings.
public struct SafeTensorsFile: Sendable {
    /// Tensors ordered by where their bytes lie in the data buffer.
    public var tensors: [NamedTensor]
    /// The header's `__metadata__` map (empty when the file has none).
    public var metadata: [String: String]

    /// A file's contents as given.
    public init(tensors: [NamedTensor], metadata: [String: String]) {
        self.tensors = tensors
        self.metadata = metadata
    }

    /// The tensor called `name`, if the file has one.
    public subscript(name: String) -> NamedTensor? {
        tensors.first { $0.name == name }
    }
}

/// Reads and writes the safetensors format: an 8-byte little-endian header length N, N bytes of
/// UTF-8 JSON describing each tensor (`dtype`, `shape`, `data_offsets` into the data buffer) plus an
/// optional `__metadata__` string map, then the data buffer of little-endian, row-major tensors.
///
/// Files written here load in PyTorch with `safetensors.torch.load_file`, and files PyTorch writes
/// read here. Everything read is validated as the reference implementation does, so a corrupt or
/// hostile file produces a `SafeTensorsError`, never a crash or a huge allocation.
public enum SafeTensors {
    /// The reference implementation's cap on the header length.
    public static let maximumHeaderSize = 100_000_000

    /// The header key reserved for the metadata map.
    public static let metadataKey = "__metadata__"

    // MARK: Writing

    /// The bytes of a safetensors file holding `tensors`, laid out in the data buffer in the order
    /// given, with `metadata` (omitted from the header when empty, as the reference writer does).
    ///
    /// The header is padded with spaces so the data starts 8-byte aligned. Metadata keys are written
    /// sorted, so equal inputs give identical bytes. Throws `SafeTensorsError.invalidTensor` for a
    /// dtype other than F32 or I64, a value count that does not match the shape, a non-integral or
    /// out-of-range I64 value, or a repeated or reserved name.
    public static func encode(_ tensors: [NamedTensor], metadata: [String: String]) throws -> [UInt8] {
        let layout = try SafeTensorsLayout(tensors, metadata: metadata)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(layout.byteCount)
        layout.emit { bytes.append(contentsOf: $0) }
        return bytes
    }

    /// The header of a file holding `tensors` with `metadata`, the 8-byte length before it
    /// included, and each tensor's size in bytes; throws as `encode` does.
    static func header(_ tensors: [NamedTensor], metadata: [String: String]) throws -> (header: [UInt8], byteCounts: [Int]) {
        var byteCounts: [Int] = []
        byteCounts.reserveCapacity(tensors.count)
        var names = Set<String>()
        for tensor in tensors {
            byteCounts.append(try validateForWriting(tensor))
            guard names.insert(tensor.name).inserted else {
                throw SafeTensorsError.invalidTensor(
                    name: tensor.name, reason: "the name is used by more than one tensor; give each tensor a distinct name")
            }
        }

        var object = JSONObject()
        if !metadata.isEmpty {
            object = object.object(metadataKey, metadata.keys.sorted().reduce(JSONObject()) { $0.string($1, metadata[$1]!) })
        }
        var offset = 0
        for (tensor, byteCount) in zip(tensors, byteCounts) {
            object = object.object(tensor.name, JSONObject().string("dtype", tensor.dtype.rawValue)
                .raw("shape", "[" + tensor.shape.map(String.init).joined(separator: ",") + "]")
                .raw("data_offsets", "[\(offset),\(offset + byteCount)]"))
            offset += byteCount
        }
        var json = Array(object.text.utf8)
        // Spaces after the JSON keep the data buffer 8-byte aligned, as the reference writer does;
        // readers skip them as JSON whitespace.
        while json.count % 8 != 0 { json.append(UInt8(ascii: " ")) }
        var header = [UInt8](repeating: 0, count: 8)
        header.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(json.count).littleEndian, as: UInt64.self) }
        return (header + json, byteCounts)
    }

    /// Writes `tensors` and `metadata` to `path` as `encode` lays them out, replacing any file there.
    /// This is a plain write: durability and atomic replacement are `CheckpointStore`'s job.
    public static func write(_ tensors: [NamedTensor], metadata: [String: String], to path: String) throws {
        let layout = try SafeTensorsLayout(tensors, metadata: metadata)
        do {
            _ = try POSIXFile.writeFile(to: path, sync: false) { (writer) throws(POSIXFailure) in try layout.emit(writer.append) }
        } catch {
            throw SafeTensorsError.fileUnwritable(path: path, reason: error.reason)
        }
    }

    /// Checks a tensor can be written and returns its size in bytes.
    private static func validateForWriting(_ tensor: NamedTensor) throws -> Int {
        guard tensor.name != metadataKey else {
            throw SafeTensorsError.invalidTensor(name: tensor.name, reason: "the name '\(metadataKey)' is reserved for the metadata map; rename the tensor")
        }
        guard tensor.dtype.isWritable else {
            throw SafeTensorsError.invalidTensor(
                name: tensor.name, reason: "dtype \(tensor.dtype.rawValue) cannot be written (only F32 and I64 can); store it as F32")
        }
        var elements = 1
        for dimension in tensor.shape {
            guard dimension >= 0 else {
                throw SafeTensorsError.invalidTensor(name: tensor.name, reason: "shape \(tensor.shape) has a negative dimension")
            }
            let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
            guard !overflow else {
                throw SafeTensorsError.invalidTensor(name: tensor.name, reason: "shape \(tensor.shape) has more elements than fit in memory")
            }
            elements = product
        }
        guard elements == tensor.values.count else {
            throw SafeTensorsError.invalidTensor(
                name: tensor.name,
                reason: "shape \(tensor.shape) needs \(elements) values but the tensor holds \(tensor.values.count); fix the shape or the values")
        }
        if tensor.dtype == .int64 {
            // Float(Int64.max) rounds up to 2^63, so the upper bound is exclusive.
            let limit = -Float(Int64.min)
            if let index = tensor.values.firstIndex(where: { !($0 >= -limit && $0 < limit) || $0.rounded(.towardZero) != $0 }) {
                throw SafeTensorsError.invalidTensor(
                    name: tensor.name,
                    reason: "I64 tensors hold integers, but value \(index) is \(tensor.values[index]); round it or store the tensor as F32")
            }
        }
        return elements * tensor.dtype.byteSize
    }

    // MARK: Reading

    /// Reads and validates the safetensors file at `path`.
    public static func read(path: String) throws -> SafeTensorsFile {
        let bytes: [UInt8]
        do {
            bytes = try POSIXFile.readAll(path: path)
        } catch {
            throw SafeTensorsError.fileUnreadable(path: path, reason: error.reason)
        }
        return try bytes.withUnsafeBytes { try decode($0, source: path) }
    }

    /// Parses and validates a whole safetensors file held in memory. `source` names it in errors
    /// (a path, usually). Every tensor is converted to Float, whatever its dtype.
    ///
    /// Validation follows the format: the header length fits the file and the 100 MB cap; the
    /// header is UTF-8 JSON whose top level is an object; `__metadata__`, if present, maps strings
    /// to strings; every other key names a tensor once, with a known dtype, a shape of non-negative
    /// integers and two data_offsets; each tensor's byte count equals its shape's element count
    /// times its dtype size; and the tensors cover the data buffer exactly, without gaps or overlaps.
    public static func decode(_ bytes: UnsafeRawBufferPointer, source: String) throws -> SafeTensorsFile {
        guard bytes.count >= 8 else { throw SafeTensorsError.fileTooSmall(path: source, size: bytes.count) }
        let headerLength = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength <= UInt64(maximumHeaderSize) else {
            throw SafeTensorsError.headerTooLarge(path: source, headerLength: headerLength, limit: maximumHeaderSize)
        }
        guard headerLength <= UInt64(bytes.count - 8) else {
            throw SafeTensorsError.headerBeyondFile(path: source, headerLength: headerLength, fileSize: bytes.count)
        }
        let dataStart = 8 + Int(headerLength)
        let header = UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart])
        let data = UnsafeRawBufferPointer(rebasing: bytes[dataStart...])

        guard isValidUTF8(header) else { throw SafeTensorsError.headerNotUTF8(path: source) }
        let root: HeaderJSONValue
        do {
            root = try HeaderJSONParser.parse(header)
        } catch {
            throw SafeTensorsError.invalidJSON(path: source, offset: error.offset, detail: error.detail)
        }
        let (metadata, headerEntries) = try interpretHeader(root, source: source)
        var entries = headerEntries
        try checkLayout(&entries, bufferSize: data.count, source: source)

        let tensors = entries.map { entry in
            NamedTensor(
                name: entry.name, shape: entry.shape, dtype: entry.dtype,
                values: convert(UnsafeRawBufferPointer(rebasing: data[entry.begin..<entry.end]), dtype: entry.dtype))
        }
        return SafeTensorsFile(tensors: tensors, metadata: metadata)
    }

    /// Whether `bytes` is well-formed UTF-8 (the stdlib's `String(validating:)` needs macOS 15).
    private static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    /// One tensor's header entry after validation.
    private struct Entry {
        var name: String
        var dtype: TensorDType
        var shape: [Int]
        var begin: Int
        var end: Int
    }

    /// Reads the metadata and tensor entries from the parsed header, checking each field's type.
    private static func interpretHeader(_ root: HeaderJSONValue, source: String) throws -> ([String: String], [Entry]) {
        guard case .object(let members) = root else {
            throw SafeTensorsError.invalidHeader(path: source, field: "(top level)", detail: "expected a JSON object but found \(root.kindName)")
        }
        var seen = Set<String>()
        var metadata: [String: String] = [:]
        var entries: [Entry] = []
        for member in members {
            guard seen.insert(member.key).inserted else {
                if member.key == metadataKey {
                    throw SafeTensorsError.invalidHeader(path: source, field: metadataKey, detail: "appears more than once")
                }
                throw SafeTensorsError.duplicateName(path: source, name: member.key)
            }
            if member.key == metadataKey {
                metadata = try interpretMetadata(member.value, source: source)
            } else {
                entries.append(try interpretTensor(name: member.key, member.value, source: source))
            }
        }
        return (metadata, entries)
    }

    private static func interpretMetadata(_ value: HeaderJSONValue, source: String) throws -> [String: String] {
        if case .null = value { return [:] }
        guard case .object(let members) = value else {
            throw SafeTensorsError.invalidHeader(path: source, field: metadataKey, detail: "expected an object of strings but found \(value.kindName)")
        }
        var metadata: [String: String] = [:]
        for member in members {
            guard case .string(let text) = member.value else {
                throw SafeTensorsError.metadataValueNotString(path: source, key: member.key)
            }
            guard metadata.updateValue(text, forKey: member.key) == nil else {
                throw SafeTensorsError.invalidHeader(path: source, field: "\(metadataKey).\(member.key)", detail: "the key appears more than once")
            }
        }
        return metadata
    }

    private static func interpretTensor(name: String, _ value: HeaderJSONValue, source: String) throws -> Entry {
        guard case .object(let members) = value else {
            throw SafeTensorsError.invalidHeader(path: source, field: name, detail: "expected an object with dtype, shape and data_offsets but found \(value.kindName)")
        }
        var fields: [String: HeaderJSONValue] = [:]
        for member in members {
            guard fields.updateValue(member.value, forKey: member.key) == nil else {
                throw SafeTensorsError.invalidHeader(path: source, field: "\(name).\(member.key)", detail: "the key appears more than once")
            }
        }
        func field(_ key: String) throws -> HeaderJSONValue {
            guard let value = fields[key] else {
                throw SafeTensorsError.invalidHeader(path: source, field: "\(name).\(key)", detail: "missing")
            }
            return value
        }
        func integers(_ key: String) throws -> [Int] {
            guard case .array(let elements) = try field(key) else {
                throw SafeTensorsError.invalidHeader(path: source, field: "\(name).\(key)", detail: "expected an array of non-negative integers")
            }
            return try elements.enumerated().map { index, element in
                guard let integer = element.nonNegativeInteger else {
                    throw SafeTensorsError.invalidHeader(
                        path: source, field: "\(name).\(key)[\(index)]", detail: "expected a non-negative integer but found \(element.kindName)")
                }
                return integer
            }
        }

        guard case .string(let dtypeName) = try field("dtype") else {
            throw SafeTensorsError.invalidHeader(path: source, field: "\(name).dtype", detail: "expected a string such as \"F32\"")
        }
        guard let dtype = TensorDType(rawValue: dtypeName) else {
            if TensorDType.otherFormatNames.contains(dtypeName) {
                throw SafeTensorsError.unsupportedDType(path: source, tensor: name, dtype: dtypeName)
            }
            throw SafeTensorsError.unknownDType(path: source, tensor: name, dtype: dtypeName)
        }
        let shape = try integers("shape")
        let offsets = try integers("data_offsets")
        guard offsets.count == 2 else {
            throw SafeTensorsError.invalidHeader(path: source, field: "\(name).data_offsets", detail: "expected [begin, end] but found \(offsets.count) numbers")
        }
        return Entry(name: name, dtype: dtype, shape: shape, begin: offsets[0], end: offsets[1])
    }

    /// Checks sizes against shapes, and that the tensors tile the data buffer; sorts `entries` into
    /// buffer order.
    private static func checkLayout(_ entries: inout [Entry], bufferSize: Int, source: String) throws {
        for entry in entries {
            guard entry.begin <= entry.end, entry.end <= bufferSize else {
                throw SafeTensorsError.offsetsOutOfBounds(path: source, tensor: entry.name, begin: entry.begin, end: entry.end, bufferSize: bufferSize)
            }
            var expected: Int? = entry.dtype.byteSize
            for dimension in entry.shape {
                expected = expected.flatMap { value in
                    let (product, overflow) = value.multipliedReportingOverflow(by: dimension)
                    return overflow ? nil : product
                }
            }
            guard let expected, expected == entry.end - entry.begin else {
                throw SafeTensorsError.shapeMismatch(
                    path: source, tensor: entry.name, shape: entry.shape, dtype: entry.dtype.rawValue,
                    expectedBytes: expected ?? Int.max, actualBytes: entry.end - entry.begin)
            }
        }
        entries.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var covered = 0
        var previous: String?
        for entry in entries {
            if entry.begin > covered {
                throw SafeTensorsError.gapInBuffer(path: source, begin: covered, end: entry.begin, before: entry.name)
            }
            if entry.begin < covered, let previous {
                throw SafeTensorsError.overlappingTensors(path: source, first: previous, second: entry.name, begin: entry.begin, end: min(covered, entry.end))
            }
            covered = entry.end
            previous = entry.name
        }
        if covered < bufferSize {
            throw SafeTensorsError.gapInBuffer(path: source, begin: covered, end: bufferSize, before: nil)
        }
    }

    /// The elements of `raw` (little-endian, of `dtype`) as Float.
    private static func convert(_ raw: UnsafeRawBufferPointer, dtype: TensorDType) -> [Float] {
        let count = raw.count / dtype.byteSize
        return [Float](unsafeUninitializedCapacity: count) { output, initialized in
            switch dtype {
            case .float32:
                #if _endian(little)
                UnsafeMutableRawBufferPointer(output).copyMemory(from: raw)
                #else
                for index in 0..<count {
                    output[index] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
                }
                #endif
            case .float64:
                for index in 0..<count {
                    output[index] = Float(Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self))))
                }
            case .float16:
                for index in 0..<count {
                    output[index] = floatFromHalf(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self)))
                }
            case .bfloat16:
                // bfloat16 is the top half of a Float32's bits.
                for index in 0..<count {
                    let bits = UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self))
                    output[index] = Float(bitPattern: UInt32(bits) << 16)
                }
            case .int64:
                for index in 0..<count {
                    output[index] = Float(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: index * 8, as: Int64.self)))
                }
            case .int32:
                for index in 0..<count {
                    output[index] = Float(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: index * 4, as: Int32.self)))
                }
            case .uint8:
                for index in 0..<count {
                    output[index] = Float(raw[index])
                }
            }
            initialized = count
        }
    }

    /// IEEE 754 binary16 to Float, exactly (every half value is a Float value). Done on the bits
    /// because Swift's Float16 is missing on some platforms (macOS on Intel).
    static func floatFromHalf(_ bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let mantissa = UInt32(bits) & 0x3FF
        switch exponent {
        case 0:
            // Zero or subnormal: mantissa * 2^-24.
            let magnitude = Float(mantissa) * 0x1p-24
            return sign == 0 ? magnitude : -magnitude
        case 0x1F:
            return Float(bitPattern: sign | 0x7F80_0000 | mantissa << 13)
        default:
            // Rebias the exponent from 15 to 127.
            return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
        }
    }
}

/// A safetensors file checked and laid out before any byte of it is written (so a tensor the
/// format cannot hold is refused before a file is begun), then emitted piece by piece: the
/// header, then each tensor's bytes straight from its values where they are already the file's
/// (Float32 on a little-endian machine), so a large checkpoint needs no copy of itself in memory.
struct SafeTensorsLayout {
    private let tensors: [NamedTensor]
    private let header: [UInt8]
    /// The file's size in bytes.
    let byteCount: Int

    /// The layout of a file holding `tensors` (their data in the order given) and `metadata`;
    /// throws as `SafeTensors.encode` does.
    init(_ tensors: [NamedTensor], metadata: [String: String]) throws {
        let (header, byteCounts) = try SafeTensors.header(tensors, metadata: metadata)
        self.tensors = tensors
        self.header = header
        byteCount = header.count + byteCounts.reduce(0, +)
    }

    /// Hands `sink` the file's bytes in order, in pieces.
    func emit<Failure: Error>(_ sink: (UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
        try withBytes(of: header, sink)
        for tensor in tensors {
            switch tensor.dtype {
            case .int64:
                try withBytes(of: tensor.values.map { UInt64(bitPattern: Int64($0)).littleEndian }, sink)
            default:
                // F32, the only other type a layout admits.
                #if _endian(little)
                try withBytes(of: tensor.values, sink)
                #else
                try withBytes(of: tensor.values.map { $0.bitPattern.littleEndian }, sink)
                #endif
            }
        }
    }

}

/// Calls `body` with the bytes of `array` in place, and throws what it throws (`withUnsafeBytes`
/// rethrows untyped errors, which typed callers could not pass on).
func withBytes<Element, Failure: Error>(of array: [Element], _ body: (UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
    var failure: Failure?
    array.withUnsafeBytes { bytes in
        do throws(Failure) { try body(bytes) } catch { failure = error }
    }
    if let failure { throw failure }
}
