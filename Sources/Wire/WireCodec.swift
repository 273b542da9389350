import Hashing

/// The wire format: a ZeroMQ multipart message of [header] [meta] [tensor]*.
///
/// Header, 40 bytes, little-endian:
/// ```
///  0 magic        UInt32  0x574E4E43 ("CNNW" in memory)
///  4 version      UInt16  7 (6 sent replicas their owner's new optimiser state, not the slice's gradient; 5 lacked the tensor encoding of gradients and slice-partials; 4 lacked the sharded reduction's messages; 3 lacked top-5 counts; 2 sent evaluation results as gradients; 1 also lacked their timings)
///  6 type         UInt8   1 hello, 2 welcome, 3 weights, 4 assign, 5 gradients, 6 heartbeat, 7 bye, 8 error,
///                         9 evaluation, 10-23 the sharded reduction's (see `ShardCodec.swift`)
///  7 reserved     UInt8   0
///  8 run id       UInt64
/// 16 step         UInt64
/// 24 meta length  UInt32  bytes of the meta frame
/// 28 tensors      UInt32  number of tensor frames
/// 32 meta xxh64   UInt64  of the meta frame
/// ```
/// Meta, little-endian, per type (strings are a UInt32 byte count then UTF-8; arrays a UInt32
/// count then the elements; Int fields are Int64; Double is its IEEE bit pattern; Bool a 0/1
/// byte), then one xxh64 UInt64 per tensor frame:
/// ```
/// hello      name, threads Int64, processID Int32, hostName, coreType
/// welcome    workerID UInt32, configText, parameterCount Int64, heartbeat ms UInt32, timeout ms UInt32
/// weights    (nothing; one tensor)
/// assign     kind UInt8, epoch UInt32, totalMicroBatches UInt32,
///            [index UInt32, [sample UInt32]]
/// gradients  epoch UInt32, results, [level UInt8, index UInt32]  (one tensor per node), encoding, timings
/// evaluation epoch UInt32, results, timings
///            where results  = [index UInt32, lossSum Double, correct UInt32, topFiveCorrect UInt32, samples UInt32]
///            and   timings  = forward s Double, backward s Double, pack s Double, total s Double
///            and   encoding = kind UInt8, bfloat16Values UInt32 (`TensorEncoding`)
/// heartbeat  sentAt ms UInt64, busy Bool
/// bye        reason
/// error      code UInt16, text
/// ```
/// Tensor frames are raw little-endian Float32 values, but for the tensors of a message whose
/// encoding puts their first values in bf16 (`TensorEncoding`). Every tensor checksum is of the
/// frame's bytes as sent.
public enum WireCodec {
    /// "CNNW" read as a little-endian UInt32.
    public static let magic: UInt32 = 0x574E_4E43
    /// The protocol version this build writes.
    public static let version: UInt16 = 9
    /// The protocol versions this build reads. Version 8 lacks workers' local listeners
    /// (`listening` and plan members without `localEndpoint` and `host`), version 7 the expected cover (`reduce`
    /// without `isFinal`), version 6 sends replicas their owner's new state,
    /// version 5 lacks the tensor encoding, version 4 the sharded reduction, version 3 the top-5
    /// counts, version 2 sends evaluation results as gradients and version 1 also lacks their
    /// timings; rather than translate, an older peer is refused and told to run the same release
    /// (a coordinator and its workers come from one build).
    public static let understoodVersions: [UInt16] = [9]
    /// Slack allowed when checking that a worker's timed parts fit in its total: they come from
    /// one monotonic clock, so only rounding separates them.
    public static let timingTolerance: Double = 1e-3
    /// Size of the header frame.
    public static let headerSize = 40
    /// Highest tree level: a level-31 node covers 2^31 micro-batches, half the index space.
    public static let maximumTreeLevel: UInt8 = 31

    /// The checksum the wire uses for meta and tensor frames: xxh64 with seed 0.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        XXHash64.hash(bytes)
    }

    /// The wire checksum of a byte array.
    public static func checksum(_ bytes: [UInt8]) -> UInt64 {
        XXHash64.hash(array: bytes)
    }

    // MARK: Encoding

    /// The frames of `envelope`: header and meta as bytes, tensors as zero-copy payload frames.
    public static func encode(_ envelope: Envelope) -> [OutgoingFrame] {
        let encoding = encodingOf(envelope.message)
        // Float32 tensors go as they lie; others are packed once, into the buffer that is sent.
        let tensors: [(frame: OutgoingFrame, checksum: UInt64)] = tensors(of: envelope.message).map { tensor in
            if encoding.isFloat32 { return (.payload(tensor), tensor.checksum) }
            let packed = PackedTensor(packing: tensor, in: encoding)
            return (.packed(packed), packed.checksum)
        }
        var meta = ByteWriter()
        writeFields(of: envelope.message, into: &meta)
        for tensor in tensors { meta.u64(tensor.checksum) }

        var header = ByteWriter(capacity: headerSize)
        header.u32(magic)
        header.u16(version)
        header.u8(MessageType(envelope.message).rawValue)
        header.u8(0)
        header.u64(envelope.runID)
        header.u64(envelope.step)
        header.u32(UInt32(clamping: meta.bytes.count))
        header.u32(UInt32(clamping: tensors.count))
        header.u64(XXHash64.hash(array: meta.bytes))

        return [.bytes(header.bytes), .bytes(meta.bytes)] + tensors.map(\.frame)
    }

    /// The frames of `envelope` as plain byte arrays (a copy; for tests, fuzzers and captures).
    public static func encodeToBytes(_ envelope: Envelope) -> [[UInt8]] {
        encode(envelope).map { $0.copyBytes() }
    }

    /// The tensors `message` carries, in the order they travel.
    public static func tensors(of message: Message) -> [FloatPayload] {
        switch message {
        case .weights(let weights): return [weights.values]
        case .gradients(let gradients): return gradients.tensors
        case .slicePartials(let partials): return partials.tensors
        case .weightSlice(let slice): return [slice.values]
        case .sliceState(let state): return (state.weights.map { [$0] } ?? []) + state.tensors
        case .sliceGradient(let gradient): return [gradient.values]
        default: return []
        }
    }

    private static func encodingOf(_ message: Message) -> TensorEncoding {
        switch message {
        case .gradients(let gradients): return gradients.encoding
        case .slicePartials(let partials): return partials.encoding
        default: return .float32
        }
    }

    private static func writeFields(of message: Message, into meta: inout ByteWriter) {
        switch message {
        case .hello(let hello):
            meta.string(hello.name)
            meta.u64(UInt64(bitPattern: Int64(hello.threads)))
            meta.u32(UInt32(bitPattern: hello.processID))
            meta.string(hello.hostName)
            meta.string(hello.coreType)
        case .welcome(let welcome):
            meta.u32(welcome.workerID)
            meta.string(welcome.configText)
            meta.u64(UInt64(bitPattern: Int64(welcome.parameterCount)))
            meta.u32(welcome.heartbeatIntervalMilliseconds)
            meta.u32(welcome.workerTimeoutMilliseconds)
        case .weights:
            break
        case .assign(let assignment):
            meta.u8(assignment.kind.rawValue)
            meta.u32(assignment.epoch)
            meta.u32(assignment.totalMicroBatches)
            meta.count(assignment.microBatches.count)
            for microBatch in assignment.microBatches {
                meta.u32(narrowed(microBatch.index, "assign.microBatches.index"))
                meta.count(microBatch.samples.count)
                meta.u32s(microBatch.samples, "assign.microBatches.samples")
            }
        case .gradients(let gradients):
            meta.u32(gradients.epoch)
            meta.results(gradients.results)
            meta.count(gradients.nodes.count)
            for node in gradients.nodes {
                meta.u8(narrowed(node.level, "gradients.nodes.level"))
                meta.u32(narrowed(node.index, "gradients.nodes.index"))
            }
            meta.encoding(gradients.encoding)
            meta.timings(gradients.timings)
        case .evaluation(let evaluation):
            meta.u32(evaluation.epoch)
            meta.results(evaluation.results)
            meta.timings(evaluation.timings)
        case .heartbeat(let heartbeat):
            meta.u64(heartbeat.sentAtMilliseconds)
            meta.u8(heartbeat.busy ? 1 : 0)
        case .bye(let bye):
            meta.string(bye.reason)
        case .error(let failure):
            meta.u16(failure.code)
            meta.string(failure.text)
        case .listening, .plan, .computed, .slicePartials, .reduce, .blockSums, .norm, .weightSlice, .sliceState, .sliceGradient, .stepDone, .gather,
             .planAdopted, .planInForce:
            writeShardFields(of: message, into: &meta)
        }
    }

    // MARK: Decoding

    /// Decodes and validates one message's frames (routing-id frame already removed). Tensor
    /// frames that are 4-byte aligned are read in place, so the payloads keep the frames alive.
    /// Throws `DecodeError`; never traps, whatever the bytes.
    public static func decode(_ frames: [ReceivedFrame], limits: DecodeLimits = .default) throws(DecodeError) -> Envelope {
        guard frames.count >= 2 else { throw .missingFrames(got: frames.count) }
        let header = try frames[0].withUnsafeBytes { (bytes) throws(DecodeError) -> Header in try Header(bytes) }
        let meta = frames[1]
        let tensorFrames = frames.count - 2
        guard Int(header.metaLength) == meta.count else {
            throw .metaLengthMismatch(header: header.metaLength, frame: meta.count)
        }
        guard meta.count <= limits.maxMetaBytes else { throw .metaTooLarge(bytes: meta.count, limit: limits.maxMetaBytes) }
        guard tensorFrames <= limits.maxTensorFrames else {
            throw .tooManyTensorFrames(count: tensorFrames, limit: limits.maxTensorFrames)
        }
        guard Int(header.tensorCount) == tensorFrames else {
            throw .tensorCountMismatch(header: header.tensorCount, frames: tensorFrames)
        }

        let (body, checksums) = try meta.withUnsafeBytes { (bytes) throws(DecodeError) -> (Body, [UInt64]) in
            let computed = XXHash64.hash(bytes)
            guard computed == header.metaChecksum else {
                throw .metaChecksumMismatch(expected: header.metaChecksum, computed: computed)
            }
            var reader = ByteReader(bytes)
            let body = try readFields(header.type, from: &reader, limits: limits)
            var checksums: [UInt64] = []
            checksums.reserveCapacity(tensorFrames)
            for index in 0..<tensorFrames { checksums.append(try reader.u64("tensor checksum \(index)")) }
            guard reader.remaining == 0 else { throw .trailingBytes(count: reader.remaining) }
            return (body, checksums)
        }

        let expectedTensors = body.expectedTensorCount
        guard tensorFrames == expectedTensors else {
            throw .wrongTensorCount(message: body.tensorRule, expected: expectedTensors, got: tensorFrames)
        }

        let encoding = body.tensorEncoding
        var tensors: [FloatPayload] = []
        tensors.reserveCapacity(tensorFrames)
        for index in 0..<tensorFrames {
            let frame = frames[2 + index]
            guard let values = encoding.values(inBytes: frame.count) else {
                throw encoding.isFloat32
                    ? .tensorByteLength(tensor: index, bytes: frame.count)
                    : .tensorEncodingLength(tensor: index, bytes: frame.count, bfloat16Values: encoding.bfloat16Values)
            }
            guard values <= limits.maxTensorValues else {
                throw .tensorTooLarge(tensor: index, values: values, limit: limits.maxTensorValues)
            }
            let computed = frame.withUnsafeBytes { XXHash64.hash($0) }
            guard computed == checksums[index] else {
                throw .tensorChecksumMismatch(tensor: index, expected: checksums[index], computed: computed)
            }
            tensors.append(encoding.isFloat32
                ? FloatPayload(frame: frame, checksum: computed)
                : FloatPayload(widening: frame, count: values, encoding: encoding))
        }

        return Envelope(runID: header.runID, step: header.step, message: body.message(tensors: tensors))
    }

    /// Decodes frames given as byte arrays, for tests and fuzzers that have no socket.
    public static func decode(bytes frames: [[UInt8]], limits: DecodeLimits = .default) throws(DecodeError) -> Envelope {
        try decode(frames.map { ReceivedFrame(bytes: $0) }, limits: limits)
    }

    private struct Header {
        var type: MessageType
        var runID: UInt64
        var step: UInt64
        var metaLength: UInt32
        var tensorCount: UInt32
        var metaChecksum: UInt64

        init(_ bytes: UnsafeRawBufferPointer) throws(DecodeError) {
            guard bytes.count == WireCodec.headerSize else {
                throw .headerSize(expected: WireCodec.headerSize, got: bytes.count)
            }
            var reader = ByteReader(bytes)
            // The header's size was checked above, so these reads cannot run short.
            let magic = try reader.u32("header.magic")
            guard magic == WireCodec.magic else { throw .badMagic(expected: WireCodec.magic, got: magic) }
            let version = try reader.u16("header.version")
            guard WireCodec.understoodVersions.contains(version) else {
                throw .unsupportedVersion(got: version, understood: WireCodec.understoodVersions)
            }
            let typeByte = try reader.u8("header.type")
            guard let type = MessageType(rawValue: typeByte) else { throw .unknownMessageType(typeByte) }
            let reserved = try reader.u8("header.reserved")
            guard reserved == 0 else { throw .reservedNotZero(reserved) }
            self.type = type
            runID = try reader.u64("header.runID")
            step = try reader.u64("header.step")
            metaLength = try reader.u32("header.metaLength")
            tensorCount = try reader.u32("header.tensorCount")
            metaChecksum = try reader.u64("header.metaChecksum")
        }
    }

    /// A decoded meta frame, waiting for its tensors.
    enum Body {
        case complete(Message)
        case weights
        case gradients(epoch: UInt32, results: [MicroBatchResult], nodes: [TreeNode], encoding: TensorEncoding, timings: WorkerTimings)
        /// A message of `count` tensors (`rule` says which, for errors) in `encoding`, built once
        /// they are read.
        case withTensors(count: Int, rule: String, encoding: TensorEncoding = .float32, build: ([FloatPayload]) -> Message)

        var expectedTensorCount: Int {
            switch self {
            case .complete: return 0
            case .weights: return 1
            case .gradients(_, _, let nodes, _, _): return nodes.count
            case .withTensors(let count, _, _, _): return count
            }
        }

        /// How the tensor frames are laid out.
        var tensorEncoding: TensorEncoding {
            switch self {
            case .complete, .weights: return .float32
            case .gradients(_, _, _, let encoding, _): return encoding
            case .withTensors(_, _, let encoding, _): return encoding
            }
        }

        var tensorRule: String {
            switch self {
            case .complete(let message):
                let name = message.typeName
                return ("aeiou".contains(name.first!) ? "an " : "a ") + name + " message"
            case .weights: return "a weights message"
            case .gradients: return "a gradients message (one tensor per tree node)"
            case .withTensors(_, let rule, _, _): return rule
            }
        }

        func message(tensors: [FloatPayload]) -> Message {
            switch self {
            case .complete(let message):
                return message
            case .weights:
                return .weights(Weights(values: tensors[0]))
            case .gradients(let epoch, let results, let nodes, let encoding, let timings):
                return .gradients(Gradients(epoch: epoch, results: results, nodes: nodes, tensors: tensors, encoding: encoding, timings: timings))
            case .withTensors(_, _, _, let build):
                return build(tensors)
            }
        }
    }

    private static func readFields(_ type: MessageType, from reader: inout ByteReader, limits: DecodeLimits) throws(DecodeError) -> Body {
        switch type {
        case .hello:
            let name = try reader.string("hello.name", limit: limits.maxStringBytes)
            let threads = Int64(bitPattern: try reader.u64("hello.threads"))
            guard threads >= 1, let threadCount = Int(exactly: threads) else {
                throw .invalidValue(field: "hello.threads", value: String(threads), requirement: "a worker needs at least 1 thread")
            }
            let processID = Int32(bitPattern: try reader.u32("hello.processID"))
            let hostName = try reader.string("hello.hostName", limit: limits.maxStringBytes)
            let coreType = try reader.string("hello.coreType", limit: limits.maxStringBytes)
            return .complete(.hello(Hello(name: name, threads: threadCount, processID: processID, hostName: hostName, coreType: coreType)))

        case .welcome:
            let workerID = try reader.u32("welcome.workerID")
            let configText = try reader.string("welcome.configText", limit: limits.maxStringBytes)
            let parameters = Int64(bitPattern: try reader.u64("welcome.parameterCount"))
            guard parameters >= 0, let parameterCount = Int(exactly: parameters) else {
                throw .invalidValue(field: "welcome.parameterCount", value: String(parameters), requirement: "must not be negative")
            }
            let heartbeat = try reader.u32("welcome.heartbeatIntervalMilliseconds")
            let timeout = try reader.u32("welcome.workerTimeoutMilliseconds")
            return .complete(.welcome(Welcome(workerID: workerID, configText: configText, parameterCount: parameterCount,
                                              heartbeatIntervalMilliseconds: heartbeat, workerTimeoutMilliseconds: timeout)))

        case .weights:
            return .weights

        case .assign:
            let kind = try reader.taskKind("assign.kind")
            let epoch = try reader.u32("assign.epoch")
            let total = try reader.u32("assign.totalMicroBatches")
            let count = try reader.count("assign.microBatches", elementBytes: 8, limit: limits.maxMicroBatches)
            var microBatches: [MicroBatch] = []
            microBatches.reserveCapacity(count)
            var seen = Set<UInt32>(minimumCapacity: count)
            for position in 0..<count {
                let index = try reader.u32("assign.microBatches[\(position)].index")
                guard index < total else {
                    throw .microBatchOutOfRange(field: "assign.microBatches[\(position)].index", index: index, total: total)
                }
                guard seen.insert(index).inserted else {
                    throw .duplicateMicroBatch(field: "assign.microBatches[\(position)].index", index: index)
                }
                let samples = try reader.u32s("assign.microBatches[\(position)].samples", limit: limits.maxSamplesPerMicroBatch)
                microBatches.append(MicroBatch(index: Int(index), samples: samples))
            }
            return .complete(.assign(Assignment(kind: kind, epoch: epoch, totalMicroBatches: total, microBatches: microBatches)))

        case .gradients:
            let epoch = try reader.u32("gradients.epoch")
            let results = try readResults("gradients", from: &reader, limits: limits)
            let nodes = try readNodes("gradients.nodes", from: &reader, limit: limits.maxTensorFrames)
            let encoding = try reader.encoding("gradients.encoding")
            let timings = try readTimings("gradients", from: &reader)
            return .gradients(epoch: epoch, results: results, nodes: nodes, encoding: encoding, timings: timings)

        case .evaluation:
            let epoch = try reader.u32("evaluation.epoch")
            let results = try readResults("evaluation", from: &reader, limits: limits)
            let timings = try readTimings("evaluation", from: &reader)
            return .complete(.evaluation(Evaluation(epoch: epoch, results: results, timings: timings)))

        case .heartbeat:
            let sentAt = try reader.u64("heartbeat.sentAtMilliseconds")
            let busy = try reader.bool("heartbeat.busy")
            return .complete(.heartbeat(Heartbeat(sentAtMilliseconds: sentAt, busy: busy)))

        case .bye:
            return .complete(.bye(Bye(reason: try reader.string("bye.reason", limit: limits.maxStringBytes))))

        case .error:
            let code = try reader.u16("error.code")
            let text = try reader.string("error.text", limit: limits.maxStringBytes)
            return .complete(.error(WireFailure(code: code, text: text)))

        case .listening, .plan, .computed, .slicePartials, .reduce, .blockSums, .norm, .weightSlice, .sliceState, .sliceGradient, .stepDone, .gather,
             .planAdopted, .planInForce:
            return try readShardFields(type, from: &reader, limits: limits)
        }
    }
}

/// One of our own values in its fixed-width wire field. The decoder keeps every received value
/// in range, so one that does not fit was made here: a programming error, so this traps (also
/// in `-Ounchecked` builds) rather than send a wrapped number.
func narrowed<T: FixedWidthInteger>(_ value: Int, _ field: @autoclosure () -> String) -> T {
    guard let narrow = T(exactly: value) else { fatalError("\(field()): \(value) does not fit the wire's \(T.self)") }
    return narrow
}

/// Appends little-endian fields.
struct ByteWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ value: UInt8) { bytes.append(value) }

    mutating func u16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }

    /// A count prefix. Counts above 2^32 - 1 cannot be sent: they are clamped, and the receiver
    /// then rejects the message for its missing bytes rather than misreading it.
    mutating func count(_ value: Int) { u32(UInt32(clamping: value)) }

    mutating func string(_ value: String) {
        let utf8 = Array(value.utf8)
        count(utf8.count)
        bytes.append(contentsOf: utf8)
    }

    /// Per-micro-batch results, count first.
    mutating func results(_ results: [MicroBatchResult]) {
        count(results.count)
        for result in results {
            u32(result.index)
            u64(result.lossSum.bitPattern)
            u32(result.correct)
            u32(result.topFiveCorrect)
            u32(result.samples)
        }
    }

    /// Worker timings: forward, backward, pack and total seconds.
    mutating func timings(_ timings: WorkerTimings) {
        u64(timings.forwardSeconds.bitPattern)
        u64(timings.backwardSeconds.bitPattern)
        u64(timings.packSeconds.bitPattern)
        u64(timings.totalSeconds.bitPattern)
    }

    /// Each value as a UInt32 (no count prefix).
    mutating func u32s(_ values: [Int], _ field: @autoclosure () -> String) {
        bytes.reserveCapacity(bytes.count + 4 * values.count)
        for value in values { u32(narrowed(value, field())) }
    }
}

/// Reads little-endian fields, checking every length against what remains before using it.
struct ByteReader {
    private let buffer: UnsafeRawBufferPointer
    private var offset = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var remaining: Int { buffer.count - offset }

    private mutating func take<T: FixedWidthInteger>(_ type: T.Type, _ field: @autoclosure () -> String) throws(DecodeError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated(field: field(), needed: size, remaining: remaining) }
        let value = buffer.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += size
        return T(littleEndian: value)
    }

    mutating func u8(_ field: @autoclosure () -> String) throws(DecodeError) -> UInt8 { try take(UInt8.self, field()) }
    mutating func u16(_ field: @autoclosure () -> String) throws(DecodeError) -> UInt16 { try take(UInt16.self, field()) }
    mutating func u32(_ field: @autoclosure () -> String) throws(DecodeError) -> UInt32 { try take(UInt32.self, field()) }
    mutating func u64(_ field: @autoclosure () -> String) throws(DecodeError) -> UInt64 { try take(UInt64.self, field()) }

    mutating func bool(_ field: @autoclosure () -> String) throws(DecodeError) -> Bool {
        let value = try u8(field())
        guard value <= 1 else { throw .invalidBoolean(field: field(), value: value) }
        return value == 1
    }

    mutating func taskKind(_ field: @autoclosure () -> String) throws(DecodeError) -> TaskKind {
        let value = try u8(field())
        guard let kind = TaskKind(rawValue: value) else { throw .unknownEnumValue(field: field(), value: value) }
        return kind
    }

    /// A count prefix, checked against `limit` and against the bytes its elements need
    /// (`elementBytes` each, at least), so nothing is allocated from a lying count.
    mutating func count(_ field: @autoclosure () -> String, elementBytes: Int, limit: Int) throws(DecodeError) -> Int {
        let value = Int(try u32(field()))
        guard value <= limit else { throw .lengthOverLimit(field: field(), length: UInt64(value), limit: limit) }
        guard value * elementBytes <= remaining else {
            throw .truncated(field: field(), needed: value * elementBytes, remaining: remaining)
        }
        return value
    }

    mutating func string(_ field: @autoclosure () -> String, limit: Int) throws(DecodeError) -> String {
        let length = try count(field(), elementBytes: 1, limit: limit)
        let bytes = UnsafeRawBufferPointer(rebasing: buffer[offset ..< offset + length])
        offset += length
        var iterator = bytes.makeIterator()
        var parser = Unicode.UTF8.ForwardParser()
        // Parsing first rejects what String(decoding:) would silently replace with U+FFFD.
        while true {
            switch parser.parseScalar(from: &iterator) {
            case .valid: continue
            case .emptyInput: return String(decoding: bytes, as: UTF8.self)
            case .error: throw .invalidUTF8(field: field())
            }
        }
    }

    /// A count-prefixed array of UInt32, widened to Int.
    mutating func u32s(_ field: @autoclosure () -> String, limit: Int) throws(DecodeError) -> [Int] {
        let count = try count(field(), elementBytes: 4, limit: limit)
        let values = (0..<count).map { position in
            Int(UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: offset + 4 * position, as: UInt32.self)))
        }
        offset += count * 4
        return values
    }
}
