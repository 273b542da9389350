import Foundation
import Wire

// libFuzzer entry points for `WireCodec.decode`, and a `main` that hands control to libFuzzer
// (SwiftPM links an executable's entry point under its own name, so libFuzzer's `main` is not used). The input is cut into frames: the first byte
// (mod 8) is the frame count, then each frame but the last is a little-endian UInt16 length and
// its bytes (cut short when the input ends); the last frame takes whatever remains. Every input
// must either decode or throw a `DecodeError`; what decodes must re-encode to the same frames
// (the format is canonical), or the target traps and libFuzzer keeps the input.

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

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let given = frames(from: UnsafeRawBufferPointer(start: data, count: size))
    do {
        let envelope = try WireCodec.decode(bytes: given, limits: limits)
        let again = WireCodec.encodeToBytes(envelope)
        if again != given {
            fatalError("decoded \(envelope) from \(given.map(\.count)) byte frames, but it re-encodes to \(again.map(\.count))")
        }
    } catch {
        // A rejection must always say why.
        if error.description.isEmpty { fatalError("a DecodeError with no description") }
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
        .gradients(Gradients(epoch: 1, results: [MicroBatchResult(index: 2, lossSum: 1.5, correct: 1, samples: 2)],
                             nodes: [TreeNode(level: 0, index: 2)], tensors: [FloatPayload(copying: [.nan, 1, -.infinity, 0])])),
        .evaluation(Evaluation(epoch: 1, results: [MicroBatchResult(index: 0, lossSum: 0.5, correct: 3, samples: 4)],
                               timings: WorkerTimings(forwardSeconds: 0.25, backwardSeconds: 0, packSeconds: 0, totalSeconds: 0.5))),
        .heartbeat(Heartbeat(sentAtMilliseconds: 99, busy: true)),
        .bye(Bye(reason: "done")),
        .error(WireFailure(code: 422, text: "refused")),
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
