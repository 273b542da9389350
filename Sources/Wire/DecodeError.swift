/// Upper bounds a decoder enforces before it allocates or hashes anything a peer announced.
/// They bound the damage of a buggy or hostile peer; the defaults fit every model and batch the
/// trainer is meant for with room to spare.
public struct DecodeLimits: Sendable, Equatable {
    /// Largest meta frame (bytes).
    public var maxMetaBytes: Int
    /// Most tensor frames in one message (also bounds gradient tree nodes).
    public var maxTensorFrames: Int
    /// Most floats in one tensor frame.
    public var maxTensorValues: Int
    /// Longest string (bytes of UTF-8), including the configuration text.
    public var maxStringBytes: Int
    /// Most micro-batches in one assignment or result list.
    public var maxMicroBatches: Int
    /// Most sample indices in one micro-batch.
    public var maxSamplesPerMicroBatch: Int

    /// Limits with every bound given.
    public init(maxMetaBytes: Int, maxTensorFrames: Int, maxTensorValues: Int, maxStringBytes: Int, maxMicroBatches: Int, maxSamplesPerMicroBatch: Int) {
        self.maxMetaBytes = maxMetaBytes
        self.maxTensorFrames = maxTensorFrames
        self.maxTensorValues = maxTensorValues
        self.maxStringBytes = maxStringBytes
        self.maxMicroBatches = maxMicroBatches
        self.maxSamplesPerMicroBatch = maxSamplesPerMicroBatch
    }

    /// 16 MiB of meta, 4096 tensors of up to 2^28 floats (1 GiB), 1 MiB strings, 65536
    /// micro-batches of up to 65536 samples.
    public static let `default` = DecodeLimits(
        maxMetaBytes: 16 << 20, maxTensorFrames: 4096, maxTensorValues: 1 << 28,
        maxStringBytes: 1 << 20, maxMicroBatches: 65536, maxSamplesPerMicroBatch: 65536)
}

/// Why a received message was rejected: what was wrong, where (field paths such as
/// `assign.microBatches[3].samples`), and the numbers involved.
public enum DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Fewer than the header and meta frames.
    case missingFrames(got: Int)
    /// The header frame is not 40 bytes.
    case headerSize(expected: Int, got: Int)
    /// The first four bytes are not "CNNW".
    case badMagic(expected: UInt32, got: UInt32)
    /// A protocol version this build does not read.
    case unsupportedVersion(got: UInt16, understood: [UInt16])
    /// A message type byte outside 1...22.
    case unknownMessageType(UInt8)
    /// The header's reserved byte is not 0.
    case reservedNotZero(UInt8)
    /// The header's meta length differs from the meta frame's size.
    case metaLengthMismatch(header: UInt32, frame: Int)
    /// The meta frame is larger than `DecodeLimits.maxMetaBytes`.
    case metaTooLarge(bytes: Int, limit: Int)
    /// The header's tensor count differs from the number of frames after the meta frame.
    case tensorCountMismatch(header: UInt32, frames: Int)
    /// More tensor frames than `DecodeLimits.maxTensorFrames`.
    case tooManyTensorFrames(count: Int, limit: Int)
    /// The meta frame's xxh64 differs from the header's.
    case metaChecksumMismatch(expected: UInt64, computed: UInt64)
    /// A field needed more bytes than the meta frame had left.
    case truncated(field: String, needed: Int, remaining: Int)
    /// A length or count prefix above the configured limit.
    case lengthOverLimit(field: String, length: UInt64, limit: Int)
    /// A boolean byte other than 0 or 1.
    case invalidBoolean(field: String, value: UInt8)
    /// An enumeration byte (such as the task kind) with no known meaning.
    case unknownEnumValue(field: String, value: UInt8)
    /// A string whose bytes are not valid UTF-8.
    case invalidUTF8(field: String)
    /// A value outside what the field allows.
    case invalidValue(field: String, value: String, requirement: String)
    /// Bytes left in the meta frame after the last field.
    case trailingBytes(count: Int)
    /// The message type needs a different number of tensor frames.
    case wrongTensorCount(message: String, expected: Int, got: Int)
    /// A tensor frame whose length is not a whole number of floats.
    case tensorByteLength(tensor: Int, bytes: Int)
    /// A tensor frame whose length fits no tensor of its message's encoding (`TensorEncoding`).
    case tensorEncodingLength(tensor: Int, bytes: Int, bfloat16Values: Int)
    /// A tensor with more floats than `DecodeLimits.maxTensorValues`.
    case tensorTooLarge(tensor: Int, values: Int, limit: Int)
    /// A tensor frame's xxh64 differs from the one in the meta frame.
    case tensorChecksumMismatch(tensor: Int, expected: UInt64, computed: UInt64)
    /// A micro-batch index not below the step's micro-batch count.
    case microBatchOutOfRange(field: String, index: UInt32, total: UInt32)
    /// The same micro-batch twice in one message.
    case duplicateMicroBatch(field: String, index: UInt32)
    /// A tree node above level 31.
    case treeLevelTooHigh(field: String, level: UInt8, maximum: UInt8)
    /// A node whose range does not fit in 32-bit micro-batch indices.
    case treeNodeOutOfRange(field: String, level: UInt8, index: UInt32)
    /// Two nodes of one message cover a common micro-batch (their sum would count it twice).
    case overlappingTreeNodes(field: String, first: TreeNode, second: TreeNode)

    public var description: String {
        switch self {
        case .missingFrames(let got):
            return "message has \(got) frame(s), expected at least 2 (header, meta): not a cnn wire message"
        case .headerSize(let expected, let got):
            return "header frame is \(got) bytes, expected \(expected): not a cnn wire message, or a different protocol"
        case .badMagic(let expected, let got):
            return "header magic is 0x\(String(got, radix: 16)), expected 0x\(String(expected, radix: 16)) (\"CNNW\"): something other than a cnn coordinator or worker is talking to this socket"
        case .unsupportedVersion(let got, let understood):
            return "protocol version \(got) is not understood (this build speaks \(understood.map(String.init).joined(separator: ", "))): run coordinator and workers from the same release"
        case .unknownMessageType(let type):
            return "unknown message type \(type) (known: 1-22): the peer runs a newer or different protocol"
        case .reservedNotZero(let value):
            return "header reserved byte is \(value), must be 0"
        case .metaLengthMismatch(let header, let frame):
            return "header says meta is \(header) bytes but the meta frame has \(frame)"
        case .metaTooLarge(let bytes, let limit):
            return "meta frame of \(bytes) bytes exceeds the limit of \(limit) (DecodeLimits.maxMetaBytes)"
        case .tensorCountMismatch(let header, let frames):
            return "header says \(header) tensor frame(s) but \(frames) followed the meta frame"
        case .tooManyTensorFrames(let count, let limit):
            return "\(count) tensor frames exceed the limit of \(limit) (DecodeLimits.maxTensorFrames)"
        case .metaChecksumMismatch(let expected, let computed):
            return "meta checksum mismatch: header says \(hex(expected)), bytes hash to \(hex(computed)); the message was corrupted in transit"
        case .truncated(let field, let needed, let remaining):
            return "\(field): needs \(needed) byte(s) but only \(remaining) remain in the meta frame (truncated or lying length)"
        case .lengthOverLimit(let field, let length, let limit):
            return "\(field): length \(length) exceeds the limit of \(limit)"
        case .invalidBoolean(let field, let value):
            return "\(field): boolean byte is \(value), must be 0 or 1"
        case .unknownEnumValue(let field, let value):
            return "\(field): unknown value \(value)"
        case .invalidUTF8(let field):
            return "\(field): string is not valid UTF-8"
        case .invalidValue(let field, let value, let requirement):
            return "\(field): \(value) is invalid: \(requirement)"
        case .trailingBytes(let count):
            return "\(count) unexpected byte(s) after the last field of the meta frame"
        case .wrongTensorCount(let message, let expected, let got):
            return "\(message) needs \(expected) tensor frame(s), got \(got)"
        case .tensorByteLength(let tensor, let bytes):
            return "tensor \(tensor): \(bytes) bytes is not a whole number of Float32 values (multiple of 4)"
        case .tensorEncodingLength(let tensor, let bytes, let head):
            return "tensor \(tensor): \(bytes) bytes do not hold \(head) bf16 values (2 bytes each) followed by whole Float32 values (4 bytes each), as the message's encoding says"
        case .tensorTooLarge(let tensor, let values, let limit):
            return "tensor \(tensor): \(values) floats exceed the limit of \(limit) (DecodeLimits.maxTensorValues)"
        case .tensorChecksumMismatch(let tensor, let expected, let computed):
            return "tensor \(tensor): checksum mismatch: meta says \(hex(expected)), bytes hash to \(hex(computed)); the tensor was corrupted in transit"
        case .microBatchOutOfRange(let field, let index, let total):
            return "\(field): micro-batch index \(index) is not below the step's \(total) micro-batches"
        case .duplicateMicroBatch(let field, let index):
            return "\(field): micro-batch \(index) appears twice"
        case .treeLevelTooHigh(let field, let level, let maximum):
            return "\(field): tree level \(level) exceeds the maximum \(maximum)"
        case .treeNodeOutOfRange(let field, let level, let index):
            return "\(field): tree node level \(level) index \(index) covers micro-batches beyond 2^32"
        case .overlappingTreeNodes(let field, let first, let second):
            return "\(field): nodes \(first) and \(second) overlap, so their micro-batches would be counted twice"
        }
    }
}
