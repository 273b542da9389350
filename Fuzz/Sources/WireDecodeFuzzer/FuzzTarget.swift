import Foundation
import Wire

// libFuzzer entry points for `WireCodec.decode`, and a `main` that hands control to libFuzzer
// (SwiftPM links an executable's entry point under its own name, so libFuzzer's `main` is not used). The input is cut into frames: the first byte
// (mod 8) is the frame count, then each frame but the last is a little-endian UInt16 length and
// its bytes (cut short when the input ends); the last frame takes whatever remains. Every input
// must either decode or throw a `DecodeError`; what decodes must re-encode to the same frames
// (the format is canonical), or the target traps and libFuzzer keeps the input.
//
// Two modes, chosen when the process starts. By default the frames are decoded as given, so the
// target proves that damaged checksums are rejected; but a random mutation almost never leaves
// the meta checksum right, so few inputs get past it. With CNN_FUZZ_FIX_CHECKSUMS=1 every checksum
// the decoder verifies is first recomputed and written back (`fixingChecksums`), so mutations
// reach the field checks behind it.

/// Small limits, so that inputs the fuzzer can write reach every limit check.
private let limits = DecodeLimits(maxMetaBytes: 4096, maxTensorFrames: 4, maxTensorValues: 256, maxStringBytes: 64,
                                  maxMicroBatches: 16, maxSamplesPerMicroBatch: 16)

/// The frames an input stands for.
func frames(from input: UnsafeRawBufferPointer) -> [[UInt8]] {
    guard let first = input.first else { return [] }
    let count = Int(first % 8)
    var frames: [[UInt8]] = []
    var offset = 1
    for index in 0..<count {
        if index == count - 1 {
            frames.append(Array(input[min(offset, input.count)...]))
            break
        }
        guard offset + 2 <= input.count else { frames.append([]); continue }
        let length = Int(input[offset]) | Int(input[offset + 1]) << 8
        offset += 2
        let end = min(offset + length, input.count)
        frames.append(Array(input[offset..<end]))
        offset = end
    }
    return frames
}

/// The input that stands for `frames` (the inverse of `frames(from:)`, for seeds).
func input(for frames: [[UInt8]]) -> [UInt8] {
    var bytes: [UInt8] = [UInt8(frames.count % 8)]
    for (index, frame) in frames.enumerated() {
        if index < frames.count - 1 {
            bytes += [UInt8(frame.count & 0xFF), UInt8(frame.count >> 8 & 0xFF)]
        }
        bytes += frame
    }
    return bytes
}

/// Whether this process recomputes checksums before decoding (CNN_FUZZ_FIX_CHECKSUMS=1).
private let fixesChecksums = ProcessInfo.processInfo.environment["CNN_FUZZ_FIX_CHECKSUMS"] == "1"

/// `frames` with every checksum the decoder verifies recomputed as the encoder computes it:
/// first each tensor frame's xxh64 into its slot in the meta frame, then the meta frame's xxh64
/// into the header. Lengths and counts are left as they are, so their checks still see the
/// fuzzer's values.
///
/// The tensor checksums are the meta frame's last 8 bytes per tensor frame: the decoder reads
/// them after the fields and refuses trailing bytes, so in any meta frame that can pass, that is
/// where they are. A slot that does not fit (meta shorter than the checksums) is left alone, as
/// is a header that is not 40 bytes; the decoder rejects those before any checksum.
func fixingChecksums(_ frames: [[UInt8]]) -> [[UInt8]] {
    guard frames.count >= 2 else { return frames }
    var fixed = frames
    let tensorCount = frames.count - 2
    let firstSlot = fixed[1].count - 8 * tensorCount
    if firstSlot >= 0 {
        for tensor in 0..<tensorCount {
            store(WireCodec.checksum(fixed[2 + tensor]), into: &fixed[1], at: firstSlot + 8 * tensor)
        }
    }
    if fixed[0].count == WireCodec.headerSize {
        store(WireCodec.checksum(fixed[1]), into: &fixed[0], at: 32)  // header offset 32: meta xxh64
    }
    return fixed
}

/// Writes `value` little-endian into `bytes[offset ..< offset + 8]`.
private func store(_ value: UInt64, into bytes: inout [UInt8], at offset: Int) {
    for byte in 0..<8 { bytes[offset + byte] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(byte))) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let cut = frames(from: UnsafeRawBufferPointer(start: data, count: size))
    let given = fixesChecksums ? fixingChecksums(cut) : cut
    do {
        let envelope = try WireCodec.decode(bytes: given, limits: limits)
        let again = WireCodec.encodeToBytes(envelope)
        if again != given {
            fatalError("decoded \(envelope) from \(given.map(\.count)) byte frames, but it re-encodes to \(again.map(\.count))")
        }
    } catch {
        // A rejection must always say why.
        if error.description.isEmpty { fatalError("a DecodeError with no description") }
        // With checksums fixed, none can be wrong: one that is means the fix-up and the codec
        // disagree on which bytes a checksum covers, and this mode would be testing nothing.
        if fixesChecksums {
            switch error {
            case .metaChecksumMismatch, .tensorChecksumMismatch:
                fatalError("checksum mode: \(error) after the checksums were recomputed")
            default:
                break
            }
        }
    }
    return 0
}

/// With CNN_FUZZ_SEED_DIR set, writes one valid input per message type into that folder (the
/// seed corpus), so the fuzzer starts from real messages instead of from nothing.
@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>?, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> CInt {
    guard let folder = ProcessInfo.processInfo.environment["CNN_FUZZ_SEED_DIR"] else { return 0 }
    try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let messages: [Message] = [
        .hello(Hello(name: "w1", threads: 2, processID: 7, hostName: "node", coreType: "SkylakeX")),
        .welcome(Welcome(workerID: 1, configText: "model: x", parameterCount: 4, heartbeatIntervalMilliseconds: 500, workerTimeoutMilliseconds: 5000)),
        .weights(Weights(values: FloatPayload(copying: [1, 2, 3, 4]))),
        .assign(Assignment(kind: .train, epoch: 1, totalMicroBatches: 4, microBatches: [MicroBatch(index: 2, samples: [5, 6])])),
        .gradients(Gradients(epoch: 1, results: [MicroBatchResult(index: 2, lossSum: 1.5, correct: 1, topFiveCorrect: 2, samples: 2)],
                             nodes: [TreeNode(level: 0, index: 2)], tensors: [FloatPayload(copying: [.nan, 1, -.infinity, 0])])),
        .evaluation(Evaluation(epoch: 1, results: [MicroBatchResult(index: 0, lossSum: 0.5, correct: 3, topFiveCorrect: 4, samples: 4)],
                               timings: WorkerTimings(forwardSeconds: 0.25, backwardSeconds: 0, packSeconds: 0, totalSeconds: 0.5))),
        .heartbeat(Heartbeat(sentAtMilliseconds: 99, busy: true)),
        .bye(Bye(reason: "done")),
        .error(WireFailure(code: 422, text: "refused")),
        .listening(Listening(endpoint: "tcp://10.0.0.2:4000", publicKey: String(repeating: "k", count: 40))),
        .plan(ShardPlan(version: 2, members: [ShardMember(workerID: 0, endpoint: "tcp://a:1", publicKey: ""),
                                              ShardMember(workerID: 1, endpoint: "tcp://b:1", publicKey: "")],
                        slices: [SliceAssignment(owner: 0, replica: 1, source: 1, ownerNeedsState: true),
                                 SliceAssignment(owner: 1, replica: 0)], newMembers: [0])),
        .computed(Computed(epoch: 1, results: [MicroBatchResult(index: 0, lossSum: 1, correct: 1, samples: 2)],
                           nodes: [TreeNode(level: 0, index: 0)], nonFinite: "")),
        .slicePartials(SlicePartials(slice: 1, nodes: [TreeNode(level: 1, index: 0)], tensors: [FloatPayload(copying: [1, 2])])),
        // Gradient nodes in bf16 (distributed.wire_precision: bf16): a central leaf with a Float32
        // tail, and slice partials all in bf16, with a NaN payload, an infinity and -0.
        .gradients(Gradients(epoch: 1, results: [MicroBatchResult(index: 0, lossSum: 1, correct: 1, samples: 2)],
                             nodes: [TreeNode(level: 0, index: 0)], tensors: [FloatPayload(copying: [1, -.infinity, 0.5, 0.1])],
                             encoding: .bfloat16(first: 3))),
        .slicePartials(SlicePartials(slice: 0, nodes: [TreeNode(level: 0, index: 1)],
                                     tensors: [FloatPayload(copying: [Float(bitPattern: 0x7FA1_0000), -0.0, 2])], encoding: .bfloat16(first: 3))),
        .reduce(ReduceCover(version: 1, totalMicroBatches: 3, learningRate: 0.1, nodes: [
            CoverNode(node: TreeNode(level: 1, index: 0), worker: 0), CoverNode(node: TreeNode(level: 0, index: 2), worker: 1)])),
        .blockSums(BlockSums(slice: 0, sums: [1.5, 2])),
        .norm(GlobalNorm(value: 2.5)),
        .weightSlice(WeightSlice(slice: 3, values: FloatPayload(copying: [1, 2, 3]))),
        .sliceState(SliceState(slice: 0, names: ["momentum_buffer"], weights: FloatPayload(copying: [1]), tensors: [FloatPayload(copying: [2])])),
        .stepDone(StepDone(planVersion: 4)),
        .gather(Gather(planVersion: 4)),
        .planAdopted(PlanAdopted(planVersion: 4)),
        .planInForce(PlanInForce(planVersion: 4)),
    ]
    for (index, message) in messages.enumerated() {
        let frames = WireCodec.encodeToBytes(Envelope(runID: 0xC0FFEE, step: 3, message: message))
        _ = FileManager.default.createFile(atPath: "\(folder)/seed-\(index)-\(message.typeName)", contents: Data(input(for: frames)))
    }
    return 0
}

/// libFuzzer's driver, for programs that have their own `main`.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                     _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

@main
enum WireDecodeFuzzer {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        _ = fuzzInitialize(&argc, &argv)
        exit(runFuzzerDriver(&argc, &argv, { data, size in fuzzOneInput(data, size) }))
    }
}
