import Wire

/// One envelope of every message type, with values that exercise every field (non-ASCII text,
/// negative numbers, empty lists next to full ones).
func sampleEnvelopes() -> [Envelope] {
    let weights = FloatPayload(copying: (0..<1000).map { Float($0) * 0.25 - 7 })
    let gradientA = FloatPayload(copying: [1, -2, 3.5, .infinity, -0.0, .leastNonzeroMagnitude])
    let gradientB = FloatPayload(copying: [])
    let gradientC = FloatPayload(count: 300) { buffer in
        for index in buffer.indices { buffer[index] = Float(index).squareRoot() }
    }
    let messages: [Message] = [
        .hello(Hello(name: "w-ünïcødé-1", threads: 2, processID: -17, hostName: "node03.cluster", coreType: "SkylakeX")),
        .welcome(Welcome(workerID: 7, configText: "model: lenet5\ntrain:\n  batch: 128\n  lr: 0.05 # π\n", parameterCount: 61_706,
                         heartbeatIntervalMilliseconds: 1000, workerTimeoutMilliseconds: 5000)),
        .weights(Weights(values: weights)),
        .assign(Assignment(kind: .train, epoch: 3, totalMicroBatches: 16, microBatches: [
            MicroBatch(index: 4, samples: [9, 8, 7, 59_999]),
            MicroBatch(index: 5, samples: []),
            MicroBatch(index: 15, samples: Array(0..<32)),
        ])),
        .assign(Assignment(kind: .evaluate, epoch: 0, totalMicroBatches: 1, microBatches: [])),
        .gradients(Gradients(epoch: 3, results: [
            MicroBatchResult(index: 4, lossSum: 12.5, correct: 3, samples: 4),
            MicroBatchResult(index: 5, lossSum: -0.0, correct: 0, samples: 0),
            MicroBatchResult(index: 15, lossSum: 1e-300, correct: 32, samples: 32),
        ], nodes: [TreeNode(level: 0, index: 15), TreeNode(level: 1, index: 2), TreeNode(level: 31, index: 1)],
        tensors: [gradientA, gradientB, gradientC],
        timings: WorkerTimings(forwardSeconds: 0.012_5, backwardSeconds: 0.031_25, packSeconds: 1e-6, totalSeconds: 0.25))),
        .evaluation(Evaluation(epoch: 9, results: [
            MicroBatchResult(index: 0, lossSum: 3, correct: 1, samples: 2),
            MicroBatchResult(index: 78, lossSum: .infinity, correct: 0, samples: 1),
        ], timings: WorkerTimings(forwardSeconds: 0.5, backwardSeconds: 0, packSeconds: 1e-6, totalSeconds: 0.75))),
        .evaluation(Evaluation(epoch: 0, results: [])),
        .heartbeat(Heartbeat(sentAtMilliseconds: UInt64.max - 1, busy: true)),
        .heartbeat(Heartbeat(sentAtMilliseconds: 0, busy: false)),
        .bye(Bye(reason: "")),
        .bye(Bye(reason: "shutting down: SIGTERM ✋")),
        .error(WireFailure(code: 65535, text: "step 42: gradient of 10 floats, expected 61706")),
    ] + shardSampleMessages() + bfloat16SampleMessages()
    return messages.enumerated().map { position, message in
        Envelope(runID: 0xDEAD_BEEF_0000_0000 | UInt64(position), step: UInt64(position) * 1000, message: message)
    }
}

/// Messages whose gradient nodes travel in bf16 (`distributed.wire_precision: bf16`): bf16-exact
/// values (a NaN with payload bits, infinities, -0, a subnormal), one tensor with a Float32 tail
/// (a central leaf's state) of odd offset, slice partials all in bf16.
func bfloat16SampleMessages() -> [Message] {
    let exact: [Float] = [1, -2.5, .infinity, -.infinity, Float(bitPattern: 0x7FA1_0000), -0.0, Float(bitPattern: 0x0001_0000), 0.333984375, 65280]
    return [
        .gradients(Gradients(epoch: 2, results: [MicroBatchResult(index: 0, lossSum: 1.5, correct: 1, samples: 2)],
                             nodes: [TreeNode(level: 0, index: 0)], tensors: [FloatPayload(copying: exact + [0.1, -7e-3])],
                             encoding: .bfloat16(first: exact.count),
                             timings: WorkerTimings(forwardSeconds: 0.5, backwardSeconds: 0.25, packSeconds: 0, totalSeconds: 1))),
        .slicePartials(SlicePartials(slice: 2, nodes: [TreeNode(level: 1, index: 0), TreeNode(level: 0, index: 2)],
                                     tensors: [FloatPayload(copying: exact), FloatPayload(copying: exact.reversed())],
                                     encoding: .bfloat16(first: exact.count))),
    ]
}

/// Little-endian bytes written by hand, to build wire messages independently of the encoder.
/// A class so that appends chain: `meta.u8(0).u32(5)`.
final class Bytes {
    private(set) var bytes: [UInt8] = []

    @discardableResult func u8(_ value: UInt8) -> Bytes { bytes.append(value); return self }
    @discardableResult func u16(_ value: UInt16) -> Bytes { append(value) }
    @discardableResult func u32(_ value: UInt32) -> Bytes { append(value) }
    @discardableResult func u64(_ value: UInt64) -> Bytes { append(value) }
    @discardableResult func string(_ text: String) -> Bytes { u32(UInt32(text.utf8.count)).raw(Array(text.utf8)) }
    @discardableResult func raw(_ more: [UInt8]) -> Bytes { bytes += more; return self }
    /// The four worker timings that end a gradients or evaluation meta frame (seconds, as Double bit patterns).
    @discardableResult func timings(_ forward: Double = 0, _ backward: Double = 0, _ pack: Double = 0, total: Double = 0) -> Bytes {
        u64(forward.bitPattern).u64(backward.bitPattern).u64(pack.bitPattern).u64(total.bitPattern)
    }

    private func append<T: FixedWidthInteger>(_ value: T) -> Bytes {
        for shift in stride(from: 0, to: T.bitWidth, by: 8) { bytes.append(UInt8(truncatingIfNeeded: value >> shift)) }
        return self
    }
}

/// A message assembled from parts: a 40-byte header whose fields default to a valid message
/// for `meta` (length, tensor count and checksum computed), each overridable to corrupt it.
func rawMessage(type: UInt8, meta metaFields: [UInt8], tensors: [[UInt8]] = [], magic: UInt32 = 0x574E_4E43,
                version: UInt16 = WireCodec.version, reserved: UInt8 = 0, runID: UInt64 = 1, step: UInt64 = 2,
                metaLength: UInt32? = nil, tensorCount: UInt32? = nil, metaChecksum: UInt64? = nil,
                tensorChecksums: [UInt64]? = nil) -> [[UInt8]] {
    let meta = Bytes()
    meta.raw(metaFields)
    for checksum in tensorChecksums ?? tensors.map({ WireCodec.checksum($0) }) { meta.u64(checksum) }
    let header = Bytes()
    header.u32(magic).u16(version).u8(type).u8(reserved).u64(runID).u64(step)
    header.u32(metaLength ?? UInt32(meta.bytes.count))
    header.u32(tensorCount ?? UInt32(tensors.count))
    header.u64(metaChecksum ?? WireCodec.checksum(meta.bytes))
    return [header.bytes, meta.bytes] + tensors
}

/// Rewrites a message's header so its meta length and checksum match its (edited) meta frame.
func resealed(_ frames: [[UInt8]]) -> [[UInt8]] {
    guard frames.count >= 2, frames[0].count == 40 else { return frames }
    var frames = frames
    let length = Bytes()
    length.u32(UInt32(truncatingIfNeeded: frames[1].count))
    let checksum = Bytes()
    checksum.u64(WireCodec.checksum(frames[1]))
    frames[0].replaceSubrange(24..<28, with: length.bytes)
    frames[0].replaceSubrange(32..<40, with: checksum.bytes)
    return frames
}

/// The bytes of floats as they go on the wire.
func floatBytes(_ values: [Float]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}

/// SplitMix64: a small deterministic generator, so a failing fuzz case can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
