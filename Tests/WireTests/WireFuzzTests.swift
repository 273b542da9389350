import Foundation
import Wire
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// A hundred thousand hostile messages through the decoder, by kind of damage: each must be
/// decoded or rejected with a `DecodeError` (never a trap), what decodes must be exactly what was
/// sent, and memory must stay flat.
final class WireFuzzTests: XCTestCase {
    /// The kinds of damage, each with its own rule for what the decoder must answer.
    private enum Damage: CaseIterable {
        case randomFrames, truncatedFrame, wrongMetaLength, wrongTensorLength, wrongTensorCount, wrongArrayCount
        case hugeLengthPrefix, hugeFrame, manyFrames, wrongVersion, wrongMagic, otherRunAndStep, nonFinitePayload
        case typeConfusion, bitFlips
    }

    private var random = SplitMix64(state: 0xF0_22_ED)
    private let limits: DecodeLimits = {
        var limits = DecodeLimits.default
        limits.maxTensorFrames = 8
        limits.maxTensorValues = 1 << 20
        limits.maxMetaBytes = 1 << 20
        limits.maxStringBytes = 4096
        return limits
    }()

    /// Resident memory of this process in bytes, from /proc/self/statm.
    private func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }

    private func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }
    private func byte() -> UInt8 { UInt8.random(in: 0...255, using: &random) }
    private func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in byte() } }

    private func setLittleEndian<T: FixedWidthInteger>(_ value: T, in frame: inout [UInt8], at offset: Int) {
        for index in 0..<MemoryLayout<T>.size { frame[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }

    /// Valid messages to damage: every message type, plus gradients and weights whose tensors hold
    /// NaN (quiet and signalling, with payload bits) and infinities.
    private func seeds() -> [(envelope: Envelope, frames: [[UInt8]])] {
        let special: [Float] = [.nan, -.nan, Float(bitPattern: 0x7FA0_0001), Float(bitPattern: 0xFFC1_2345), .infinity, -.infinity, 1, -0.0]
        let nonFinite = [
            Envelope(runID: 77, step: 5, message: .gradients(Gradients(epoch: 0, results: [
                MicroBatchResult(index: 0, lossSum: .nan, correct: 1, samples: 2),
                MicroBatchResult(index: 1, lossSum: .infinity, correct: 0, samples: 2),
            ], nodes: [TreeNode(level: 1, index: 0)], tensors: [FloatPayload(copying: special)]))),
            Envelope(runID: 77, step: 6, message: .weights(Weights(values: FloatPayload(copying: special + special)))),
        ]
        return (sampleEnvelopes() + nonFinite).map { ($0, WireCodec.encodeToBytes($0)) }
    }

    func testAHundredThousandDamagedMessagesAreDecodedOrRejectedAndMemoryStaysFlat() throws {
        let seeds = seeds()
        let nonFiniteSeeds = seeds.indices.filter { index in
            if case .gradients(let gradients) = seeds[index].envelope.message { return gradients.tensors.contains { $0.withUnsafeBufferPointer { $0.contains { !$0.isFinite } } } }
            if case .weights(let weights) = seeds[index].envelope.message { return weights.values.withUnsafeBufferPointer { $0.contains { !$0.isFinite } } }
            return false
        }
        // The two above, the sample gradients and the sample bf16 gradients (NaN travels in bf16 too).
        XCTAssertEqual(nonFiniteSeeds.count, 4)
        let iterations = 100_000
        var decoded: [String: Int] = [:]
        var rejected: [String: Int] = [:]
        var baseline = 0
        var peak = 0
        let clock = ContinuousClock()
        let started = clock.now
        for iteration in 0..<iterations {
            if iteration == 2000 { baseline = residentBytes() }
            if iteration > 2000 && iteration % 5000 == 0 { peak = max(peak, residentBytes()) }
            let damage = Damage.allCases[iteration % Damage.allCases.count]
            let seedIndex = damage == .nonFinitePayload ? nonFiniteSeeds[int(0...(nonFiniteSeeds.count - 1))] : int(0...(seeds.count - 1))
            let seed = seeds[seedIndex]
            let (frames, rule) = damaged(seed.frames, envelope: seed.envelope, by: damage)
            let name = "\(damage)"
            do {
                let envelope = try WireCodec.decode(bytes: frames, limits: limits)
                decoded[name, default: 0] += 1
                // The format is canonical: what decodes re-encodes to exactly the frames received.
                let again = WireCodec.encodeToBytes(envelope)
                if again != frames {
                    XCTFail("iteration \(iteration) (\(name)): decoded \(envelope) but it re-encodes differently")
                }
                if case .mustReject = rule { XCTFail("iteration \(iteration) (\(name)): accepted \(envelope)") }
                if case .mustDecode(let check) = rule, let problem = check(envelope) {
                    XCTFail("iteration \(iteration) (\(name)): \(problem)")
                }
            } catch {
                rejected[name, default: 0] += 1
                if error.description.isEmpty { XCTFail("iteration \(iteration): a rejection must say why") }
                if case .mustDecode = rule { XCTFail("iteration \(iteration) (\(name)): rejected a valid message: \(error)") }
                if case .mustReject(let expected) = rule, let expected, !expected(error) {
                    XCTFail("iteration \(iteration) (\(name)): rejected for the wrong reason: \(error)")
                }
            }
        }
        let elapsed = clock.now - started
        let total = decoded.values.reduce(0, +) + rejected.values.reduce(0, +)
        XCTAssertEqual(total, iterations)
        for damage in Damage.allCases {
            let name = "\(damage)"
            XCTAssertGreaterThan(decoded[name, default: 0] + rejected[name, default: 0], 6000, "\(name) was not exercised")
        }
        XCTAssertEqual(decoded["otherRunAndStep"], iterations / Damage.allCases.count, "run ids and steps are the caller's to judge")
        XCTAssertEqual(decoded["nonFinitePayload"], iterations / Damage.allCases.count, "NaN travels intact; the coordinator refuses it")
        XCTAssertGreaterThan(rejected["bitFlips", default: 0], 1000)
        let growth = peak - baseline
        XCTAssertLessThan(growth, 64 << 20, "resident memory grew by \(growth >> 20) MiB over the run (from \(baseline >> 20) MiB)")
        print("fuzzed \(iterations) messages in \(elapsed); decoded \(decoded.values.reduce(0, +)); resident \(baseline >> 20) -> \(peak >> 20) MiB")
    }

    /// What the decoder must do with a damaged message.
    private enum Rule {
        /// Nothing certain: either answer is fine (as long as a decoded message re-encodes exactly).
        case either
        /// Must be rejected, optionally for a particular reason.
        case mustReject(((DecodeError) -> Bool)?)
        /// Must decode; the closure returns a problem with the result, or nil.
        case mustDecode((Envelope) -> String?)
    }

    private func damaged(_ original: [[UInt8]], envelope: Envelope, by damage: Damage) -> ([[UInt8]], Rule) {
        var frames = original
        switch damage {
        case .randomFrames:
            frames = (0..<int(0...6)).map { _ in bytes(int(0...80)) }
            if frames.count >= 2, int(0...1) == 0 {
                // Random bytes behind a valid-looking header, so the field parser sees them.
                frames[0] = original[0]
                frames = resealed(frames)
            }
            return (frames, .either)
        case .truncatedFrame:
            let which = int(0...(frames.count - 1))
            guard !frames[which].isEmpty else { frames.removeLast(); return (frames, .mustReject(nil)) }
            frames[which].removeLast(int(1...frames[which].count))
            // A shorter meta, resealed, reaches the field parser; a shorter tensor fails its checksum.
            if which == 1 && int(0...1) == 0 { return (resealed(frames), .mustReject(nil)) }
            return (frames, .mustReject(nil))
        case .wrongMetaLength:
            let length = UInt32(frames[1].count)
            var wrong = UInt32.random(in: 0...UInt32.max, using: &random)
            if wrong == length { wrong &+= 1 }
            setLittleEndian(wrong, in: &frames[0], at: 24)
            return (frames, .mustReject { if case .metaLengthMismatch = $0 { return true }; return false })
        case .wrongTensorLength:
            frames.append(bytes(int(0...64) * 4 + int(1...3)))
            frames = retensored(frames, tensorCount: frames.count - 2)
            return (frames, .mustReject(nil))
        case .wrongTensorCount:
            let count = UInt32(frames.count - 2)
            var wrong = UInt32(int(0...12))
            if wrong == count { wrong += 1 }
            setLittleEndian(wrong, in: &frames[0], at: 28)
            return (frames, .mustReject(nil))
        case .wrongArrayCount:
            // A count prefix in the meta one more or less than the elements that follow.
            guard frames[1].count >= 4 else { return (frames, .either) }
            let offset = int(0...(frames[1].count - 4))
            let current = frames[1][offset..<offset + 4].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) }
            setLittleEndian(int(0...1) == 0 ? current &+ 1 : current &- 1, in: &frames[1], at: offset)
            return (resealed(frames), .either)
        case .hugeLengthPrefix:
            guard frames[1].count >= 4 else { return (frames, .either) }
            let offset = int(0...(frames[1].count - 4))
            let huge: [UInt32] = [.max, 0x8000_0000, 0x4000_0000, 0x0100_0000]
            setLittleEndian(huge[int(0...3)], in: &frames[1], at: offset)
            return (resealed(frames), .either)
        case .hugeFrame:
            // A real frame past the limits: a tensor of 8 MiB, or a meta of 2 MiB (only now and then: they are big).
            if int(0...99) == 0 {
                if int(0...1) == 0 {
                    let big = rawMessage(type: 3, meta: [], tensors: [[UInt8](repeating: 0x7F, count: 8 << 20)])
                    return (big, .mustReject { if case .tensorTooLarge = $0 { return true }; return false })
                }
                frames[1] = [UInt8](repeating: 1, count: 2 << 20)
                return (resealed(frames), .mustReject { if case .metaTooLarge = $0 { return true }; return false })
            }
            // Otherwise a header announcing a huge meta or tensor count that never came.
            setLittleEndian(UInt32.max - UInt32(int(0...1000)), in: &frames[0], at: int(0...1) == 0 ? 24 : 28)
            return (frames, .mustReject(nil))
        case .manyFrames:
            frames += Array(repeating: [UInt8](), count: int(0...49) == 0 ? 5000 : int(9...64))
            return (retensored(frames, tensorCount: frames.count - 2),
                    .mustReject { if case .tooManyTensorFrames = $0 { return true }; return false })
        case .wrongVersion:
            var version = UInt16.random(in: 0...UInt16.max, using: &random)
            if WireCodec.understoodVersions.contains(version) { version = WireCodec.version &+ 1 }
            setLittleEndian(version, in: &frames[0], at: 4)
            return (frames, .mustReject { if case .unsupportedVersion = $0 { return true }; return false })
        case .wrongMagic:
            frames[0][int(0...3)] ^= UInt8(1) << UInt8(int(0...7))
            return (frames, .mustReject { if case .badMagic = $0 { return true }; return false })
        case .otherRunAndStep:
            let runID = UInt64.random(in: 0...UInt64.max, using: &random), step = UInt64.random(in: 0...UInt64.max, using: &random)
            setLittleEndian(runID, in: &frames[0], at: 8)
            setLittleEndian(step, in: &frames[0], at: 16)
            // That the message itself is unchanged is checked by the re-encoding (NaN != NaN for ==).
            return (frames, .mustDecode { decoded in
                decoded.runID == runID && decoded.step == step && decoded.message.typeName == envelope.message.typeName ? nil
                    : "run id, step or type not carried through: \(decoded)"
            })
        case .nonFinitePayload:
            // Bits surviving exactly (NaN payloads, signs) is checked by the re-encoding above.
            return (frames, .mustDecode { decoded in
                var tensors: [FloatPayload] = []
                if case .gradients(let gradients) = decoded.message { tensors = gradients.tensors }
                if case .weights(let weights) = decoded.message { tensors = [weights.values] }
                let nonFinite = tensors.contains { $0.withUnsafeBufferPointer { $0.contains { !$0.isFinite } } }
                return nonFinite ? nil : "the non-finite values did not arrive: \(decoded)"
            })
        case .typeConfusion:
            var type = UInt8(int(0...10))
            if type == frames[0][6] { type = 0 }
            frames[0][6] = type
            return (frames, .either)
        case .bitFlips:
            for _ in 0..<int(1...6) {
                let which = int(0...(frames.count - 1))
                guard !frames[which].isEmpty else { continue }
                frames[which][int(0...(frames[which].count - 1))] ^= UInt8(1) << UInt8(int(0...7))
            }
            return (int(0...2) == 0 ? frames : resealed(frames), .either)
        }
    }

    /// Makes the header's tensor count and the meta's checksums agree with `tensorCount` frames,
    /// so a message with extra or odd tensor frames is judged on those frames themselves.
    private func retensored(_ frames: [[UInt8]], tensorCount: Int) -> [[UInt8]] {
        var frames = frames
        setLittleEndian(UInt32(truncatingIfNeeded: tensorCount), in: &frames[0], at: 28)
        return resealed(frames)
    }
}
