import Wire
import XCTest

/// Every check the decoder makes, each shown failing on a hand-corrupted message.
final class WireValidationTests: XCTestCase {
    private func assertRejected(_ frames: [[UInt8]], limits: DecodeLimits = .default, as expected: DecodeError,
                                file: StaticString = #filePath, line: UInt = #line) {
        do {
            let envelope = try WireCodec.decode(bytes: frames, limits: limits)
            XCTFail("decoded \(envelope) but expected \(expected)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
        }
    }

    private var heartbeatMeta: [UInt8] { let meta = Bytes(); meta.u64(5).u8(1); return meta.bytes }

    private func assignMeta(total: UInt32, indices: [UInt32]) -> [UInt8] {
        let meta = Bytes()
        meta.u8(0).u32(1).u32(total).u32(UInt32(indices.count))
        for index in indices { meta.u32(index).u32(1).u32(99) }
        return meta.bytes
    }

    func testValidHandBuiltMessageIsAcceptedSoTheCorruptionsBelowAreWhatFails() throws {
        XCTAssertEqual(try WireCodec.decode(bytes: rawMessage(type: 6, meta: heartbeatMeta)).message,
                       .heartbeat(Heartbeat(sentAtMilliseconds: 5, busy: true)))
        XCTAssertNoThrow(try WireCodec.decode(bytes: rawMessage(type: 4, meta: assignMeta(total: 4, indices: [3, 0]))))
        XCTAssertNoThrow(try WireCodec.decode(bytes: rawMessage(type: 3, meta: [], tensors: [floatBytes([1, 2, 3])])))
    }

    func testFlippedTensorByteFailsTheTensorChecksum() {
        let envelope = sampleEnvelopes().first { if case .gradients = $0.message { return true } else { return false } }!
        var frames = WireCodec.encodeToBytes(envelope)
        let good = WireCodec.checksum(frames[4])
        frames[4][17] ^= 0x01
        assertRejected(frames, as: .tensorChecksumMismatch(tensor: 2, expected: good, computed: WireCodec.checksum(frames[4])))
    }

    func testWrongMagicIsRejected() {
        assertRejected(rawMessage(type: 6, meta: heartbeatMeta, magic: 0x5A4D_5451),
                       as: .badMagic(expected: 0x574E_4E43, got: 0x5A4D_5451))
    }

    func testVersionsOtherThanNineAreRejectedNamingTheUnderstoodVersion() {
        // Version 8 workers announce no local listener; version 7 covers carry no finality (an owner would call an expected cover's non-finite
        // mean the step's); version 6 replicas expect their owner's new state, not the gradient it
        // took; version 5 gradients carry no tensor encoding, version 4 lacks the sharded reduction's
        // messages, version 3 results carry no top-5 count; versions 1 and 2 are older releases
        // that send evaluation results as gradients (and version 1 gradients carry no timings).
        for version: UInt16 in [1, 2, 3, 4, 5, 6, 7, 8, 10] {
            assertRejected(rawMessage(type: 6, meta: heartbeatMeta, version: version), as: .unsupportedVersion(got: version, understood: [9]))
        }
    }

    func testUnknownMessageTypesAreRejected() {
        assertRejected(rawMessage(type: 0, meta: heartbeatMeta), as: .unknownMessageType(0))
        assertRejected(rawMessage(type: 24, meta: heartbeatMeta), as: .unknownMessageType(24))
    }

    func testNonZeroReservedByteIsRejected() {
        assertRejected(rawMessage(type: 6, meta: heartbeatMeta, reserved: 3), as: .reservedNotZero(3))
    }

    func testMissingFramesAndWrongHeaderSizesAreRejected() {
        let frames = rawMessage(type: 6, meta: heartbeatMeta)
        assertRejected([], as: .missingFrames(got: 0))
        assertRejected([frames[0]], as: .missingFrames(got: 1))
        assertRejected([Array(frames[0].dropLast()), frames[1]], as: .headerSize(expected: 40, got: 39))
        assertRejected([frames[0] + [0], frames[1]], as: .headerSize(expected: 40, got: 41))
    }

    func testMetaLengthDisagreeingWithTheFrameIsRejected() {
        assertRejected(rawMessage(type: 6, meta: heartbeatMeta, metaLength: 8), as: .metaLengthMismatch(header: 8, frame: 9))
    }

    func testCorruptedMetaFailsTheMetaChecksum() {
        var frames = rawMessage(type: 6, meta: heartbeatMeta)
        let good = WireCodec.checksum(frames[1])
        frames[1][0] ^= 0x80
        assertRejected(frames, as: .metaChecksumMismatch(expected: good, computed: WireCodec.checksum(frames[1])))
    }

    func testTruncatedMetaIsRejectedNamingTheField() {
        let hello = WireCodec.encodeToBytes(sampleEnvelopes()[0])
        var frames = hello
        frames[1].removeLast(3)
        assertRejected(resealed(frames), as: .truncated(field: "hello.coreType", needed: 8, remaining: 5))
        let meta = Bytes()
        meta.u64(5)
        assertRejected(rawMessage(type: 6, meta: meta.bytes), as: .truncated(field: "heartbeat.busy", needed: 1, remaining: 0))
    }

    func testLyingLengthPrefixOfTwoToTheThirtyOneIsRejectedWithoutAllocating() {
        let meta = Bytes()
        meta.u32(1 << 31).raw(Array("x".utf8))
        assertRejected(rawMessage(type: 7, meta: meta.bytes),
                       as: .lengthOverLimit(field: "bye.reason", length: 1 << 31, limit: DecodeLimits.default.maxStringBytes))
        // With every limit lifted, the length is still checked against the bytes that are there.
        var unlimited = DecodeLimits.default
        unlimited.maxStringBytes = .max
        unlimited.maxMicroBatches = .max
        unlimited.maxSamplesPerMicroBatch = .max
        assertRejected(rawMessage(type: 7, meta: meta.bytes), limits: unlimited,
                       as: .truncated(field: "bye.reason", needed: 1 << 31, remaining: 1))
        let assign = Bytes()
        assign.u8(0).u32(1).u32(10).u32(1 << 31)
        assertRejected(rawMessage(type: 4, meta: assign.bytes), limits: unlimited,
                       as: .truncated(field: "assign.microBatches", needed: 8 << 31, remaining: 0))
        let samples = Bytes()
        samples.u8(0).u32(1).u32(10).u32(1).u32(2).u32(0xFFFF_FFFF)
        assertRejected(rawMessage(type: 4, meta: samples.bytes), limits: unlimited,
                       as: .truncated(field: "assign.microBatches[0].samples", needed: 4 * 0xFFFF_FFFF, remaining: 0))
    }

    func testLengthsAboveTheLimitsAreRejected() {
        var limits = DecodeLimits.default
        limits.maxStringBytes = 4
        assertRejected(WireCodec.encodeToBytes(Envelope(runID: 0, step: 0, message: .bye(Bye(reason: "12345")))), limits: limits,
                       as: .lengthOverLimit(field: "bye.reason", length: 5, limit: 4))
        limits = .default
        limits.maxSamplesPerMicroBatch = 3
        let samples = Bytes()
        samples.u8(0).u32(0).u32(1).u32(1).u32(0).u32(4).raw([UInt8](repeating: 0, count: 16))
        assertRejected(rawMessage(type: 4, meta: samples.bytes), limits: limits,
                       as: .lengthOverLimit(field: "assign.microBatches[0].samples", length: 4, limit: 3))
        limits = .default
        limits.maxMicroBatches = 1
        assertRejected(rawMessage(type: 4, meta: assignMeta(total: 9, indices: [1, 2])), limits: limits,
                       as: .lengthOverLimit(field: "assign.microBatches", length: 2, limit: 1))
        for (type, message) in [(UInt8(5), "gradients"), (9, "evaluation")] {
            let results = Bytes()
            results.u32(0).u32(2).raw([UInt8](repeating: 0, count: 48))
            assertRejected(rawMessage(type: type, meta: results.bytes), limits: limits,
                           as: .lengthOverLimit(field: "\(message).results", length: 2, limit: 1))
            let lying = Bytes()
            lying.u32(0).u32(1).u32(0)
            assertRejected(rawMessage(type: type, meta: lying.bytes), as: .truncated(field: "\(message).results", needed: 24, remaining: 4))
        }
        limits = .default
        limits.maxMetaBytes = 8
        assertRejected(rawMessage(type: 6, meta: heartbeatMeta), limits: limits, as: .metaTooLarge(bytes: 9, limit: 8))
    }

    func testTooManyTensorFramesAreRejectedBeforeReadingThem() {
        var limits = DecodeLimits.default
        limits.maxTensorFrames = 2
        let tensors = [[UInt8]](repeating: floatBytes([1]), count: 3)
        assertRejected(rawMessage(type: 3, meta: [], tensors: tensors), limits: limits, as: .tooManyTensorFrames(count: 3, limit: 2))
    }

    func testTensorCountDisagreeingWithTheFramesIsRejected() {
        assertRejected(rawMessage(type: 3, meta: [], tensors: [floatBytes([1])], tensorCount: 2, tensorChecksums: [0, 0]),
                       as: .tensorCountMismatch(header: 2, frames: 1))
    }

    func testOddTensorByteLengthIsRejected() {
        assertRejected(rawMessage(type: 3, meta: [], tensors: [[1, 2, 3, 4, 5, 6]]), as: .tensorByteLength(tensor: 0, bytes: 6))
    }

    func testTensorAboveTheValueLimitIsRejected() {
        var limits = DecodeLimits.default
        limits.maxTensorValues = 2
        assertRejected(rawMessage(type: 3, meta: [], tensors: [floatBytes([1, 2, 3])]), limits: limits,
                       as: .tensorTooLarge(tensor: 0, values: 3, limit: 2))
    }

    func testEachMessageTypeNeedsItsNumberOfTensors() {
        assertRejected(rawMessage(type: 3, meta: []), as: .wrongTensorCount(message: "a weights message", expected: 1, got: 0))
        assertRejected(rawMessage(type: 6, meta: heartbeatMeta, tensors: [floatBytes([1])]),
                       as: .wrongTensorCount(message: "a heartbeat message", expected: 0, got: 1))
        assertRejected(rawMessage(type: 8, meta: Bytes().u16(3).string("no").bytes, tensors: [floatBytes([1])]),
                       as: .wrongTensorCount(message: "an error message", expected: 0, got: 1))
        let gradients = Bytes()
        gradients.u32(0).u32(0).u32(2).u8(0).u32(0).u8(0).u32(1).u8(0).u32(0).timings()
        assertRejected(rawMessage(type: 5, meta: gradients.bytes, tensors: [floatBytes([1])]),
                       as: .wrongTensorCount(message: "a gradients message (one tensor per tree node)", expected: 2, got: 1))
        let evaluation = Bytes()
        evaluation.u32(0).u32(0).timings()
        XCTAssertNoThrow(try WireCodec.decode(bytes: rawMessage(type: 9, meta: evaluation.bytes)))
        assertRejected(rawMessage(type: 9, meta: evaluation.bytes, tensors: [floatBytes([1])]),
                       as: .wrongTensorCount(message: "an evaluation message", expected: 0, got: 1))
    }

    func testEvaluationCarriesNoTreeNodes() {
        // A gradients meta frame (with its node list) sent as an evaluation: the node count and
        // node are left over after the timings are read from the wrong place, or fail them.
        let withNode = Bytes()
        withNode.u32(0).u32(0).u32(1).u8(0).u32(0).u8(0).u32(0).timings()
        XCTAssertThrowsError(try WireCodec.decode(bytes: rawMessage(type: 9, meta: withNode.bytes)))
        let withoutNode = Bytes()
        withoutNode.u32(0).u32(0).u32(0).timings()
        assertRejected(rawMessage(type: 9, meta: withoutNode.bytes), as: .trailingBytes(count: 4))
    }

    func testMicroBatchIndexAtOrAboveTheTotalIsRejected() {
        assertRejected(rawMessage(type: 4, meta: assignMeta(total: 4, indices: [0, 4])),
                       as: .microBatchOutOfRange(field: "assign.microBatches[1].index", index: 4, total: 4))
        assertRejected(rawMessage(type: 4, meta: assignMeta(total: 0, indices: [0])),
                       as: .microBatchOutOfRange(field: "assign.microBatches[0].index", index: 0, total: 0))
    }

    func testDuplicateMicroBatchesAreRejected() {
        assertRejected(rawMessage(type: 4, meta: assignMeta(total: 4, indices: [2, 2])),
                       as: .duplicateMicroBatch(field: "assign.microBatches[1].index", index: 2))
        for (type, message) in [(UInt8(5), "gradients"), (9, "evaluation")] {
            let meta = Bytes()
            meta.u32(0).u32(2).u32(3).u64(0).u32(0).u32(0).u32(1).u32(3).u64(0).u32(0).u32(0).u32(1).u32(0)
            assertRejected(rawMessage(type: type, meta: meta.bytes), as: .duplicateMicroBatch(field: "\(message).results[1].index", index: 3))
        }
    }

    func testTrailingBytesAfterTheLastFieldAreRejected() {
        assertRejected(rawMessage(type: 6, meta: heartbeatMeta + [0, 0]), as: .trailingBytes(count: 2))
        assertRejected(rawMessage(type: 3, meta: [7], tensors: [floatBytes([1])]), as: .trailingBytes(count: 1))
    }

    func testBooleanOtherThanZeroOrOneIsRejected() {
        let meta = Bytes()
        meta.u64(5).u8(2)
        assertRejected(rawMessage(type: 6, meta: meta.bytes), as: .invalidBoolean(field: "heartbeat.busy", value: 2))
    }

    func testUnknownTaskKindIsRejected() {
        let meta = Bytes()
        meta.u8(7).u32(0).u32(1).u32(0)
        assertRejected(rawMessage(type: 4, meta: meta.bytes), as: .unknownEnumValue(field: "assign.kind", value: 7))
    }

    func testInvalidUTF8IsRejected() {
        for bad: [UInt8] in [[0xC3, 0x28], [0xC0, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]] {
            let meta = Bytes()
            meta.u32(UInt32(bad.count)).raw(bad)
            assertRejected(rawMessage(type: 7, meta: meta.bytes), as: .invalidUTF8(field: "bye.reason"))
        }
    }

    func testTreeLevelAboveThirtyOneAndNodesPastTwoToTheThirtyTwoAreRejected() {
        func gradients(level: UInt8, index: UInt32) -> [[UInt8]] {
            let meta = Bytes()
            meta.u32(0).u32(0).u32(1).u8(level).u32(index).u8(0).u32(0).timings()
            return rawMessage(type: 5, meta: meta.bytes, tensors: [floatBytes([1])])
        }
        XCTAssertNoThrow(try WireCodec.decode(bytes: gradients(level: 31, index: 1)))
        XCTAssertNoThrow(try WireCodec.decode(bytes: gradients(level: 0, index: .max)))
        assertRejected(gradients(level: 32, index: 0), as: .treeLevelTooHigh(field: "gradients.nodes[0].level", level: 32, maximum: 31))
        assertRejected(gradients(level: 31, index: 2), as: .treeNodeOutOfRange(field: "gradients.nodes[0]", level: 31, index: 2))
        assertRejected(gradients(level: 4, index: 1 << 28), as: .treeNodeOutOfRange(field: "gradients.nodes[0]", level: 4, index: 1 << 28))
    }

    func testOverlappingTreeNodesAreRejected() {
        let meta = Bytes()
        meta.u32(0).u32(0).u32(2).u8(2).u32(1).u8(0).u32(6)   // [4,8) contains [6,7)
        assertRejected(rawMessage(type: 5, meta: meta.bytes, tensors: [floatBytes([1]), floatBytes([2])]),
                       as: .overlappingTreeNodes(field: "gradients.nodes", first: TreeNode(level: 2, index: 1), second: TreeNode(level: 0, index: 6)))
    }

    func testImpossibleCountsAreRejected() {
        for (type, message) in [(UInt8(5), "gradients"), (9, "evaluation")] {
            let meta = Bytes()
            meta.u32(0).u32(1).u32(4).u64(0).u32(5).u32(5).u32(4).u32(0)
            assertRejected(rawMessage(type: type, meta: meta.bytes),
                           as: .invalidValue(field: "\(message).results[0].correct", value: "5", requirement: "cannot exceed the micro-batch's 4 samples"))
            // Top-5 counts at least the correct ones and at most the samples.
            for (correct, topFive) in [(UInt32(3), UInt32(2)), (1, 5)] {
                let counts = Bytes()
                counts.u32(0).u32(1).u32(4).u64(0).u32(correct).u32(topFive).u32(4).u32(0)
                assertRejected(rawMessage(type: type, meta: counts.bytes),
                               as: .invalidValue(field: "\(message).results[0].topFiveCorrect", value: String(topFive),
                                                 requirement: "must lie from the \(correct) correct to the micro-batch's 4 samples"))
            }
        }
        let hello = Bytes()
        hello.string("w").u64(0).u32(1).string("h").string("c")
        assertRejected(rawMessage(type: 1, meta: hello.bytes),
                       as: .invalidValue(field: "hello.threads", value: "0", requirement: "a worker needs at least 1 thread"))
        let welcome = Bytes()
        welcome.u32(1).string("").u64(UInt64(bitPattern: -5)).u32(1).u32(1)
        assertRejected(rawMessage(type: 2, meta: welcome.bytes),
                       as: .invalidValue(field: "welcome.parameterCount", value: "-5", requirement: "must not be negative"))
    }

    /// Thousands of random and mutated frame sets: each must decode or throw, never trap; and
    /// whatever decodes must re-encode to exactly the bytes it came from (the format is canonical).
    func testRandomAndMutatedInputsNeverCrashTheDecoder() throws {
        var random = SplitMix64(state: 0x5EED)
        let seeds = sampleEnvelopes().map { WireCodec.encodeToBytes($0) }
        var limits = DecodeLimits.default
        limits.maxTensorFrames = 8
        var decoded = 0
        for iteration in 0..<4000 {
            var frames: [[UInt8]]
            if iteration % 4 == 0 {
                frames = (0..<Int.random(in: 0...5, using: &random)).map { _ in
                    (0..<Int.random(in: 0...64, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
                }
            } else {
                frames = seeds[Int.random(in: 0..<seeds.count, using: &random)]
                for _ in 0..<Int.random(in: 1...4, using: &random) { mutate(&frames, using: &random) }
                // Resealing most mutants gets them past the meta checksum into the field parser.
                if iteration % 4 != 3 { frames = resealed(frames) }
            }
            do {
                let envelope = try WireCodec.decode(bytes: frames, limits: limits)
                decoded += 1
                XCTAssertEqual(WireCodec.encodeToBytes(envelope), frames, "iteration \(iteration): \(envelope)")
            } catch {
                XCTAssertFalse(error.description.isEmpty)
            }
        }
        XCTAssertGreaterThan(decoded, 50, "mutations such as changed run ids or sample values must still decode")
    }

    private func mutate(_ frames: inout [[UInt8]], using random: inout SplitMix64) {
        guard !frames.isEmpty else { frames.append([]); return }
        let which = Int.random(in: 0..<frames.count, using: &random)
        switch Int.random(in: 0..<7, using: &random) {
        case 0 where !frames[which].isEmpty:
            frames[which][Int.random(in: 0..<frames[which].count, using: &random)] ^= UInt8(1) << UInt8.random(in: 0...7, using: &random)
        case 1 where !frames[which].isEmpty:
            frames[which][Int.random(in: 0..<frames[which].count, using: &random)] = UInt8.random(in: 0...255, using: &random)
        case 2 where !frames[which].isEmpty:
            frames[which].removeLast(Int.random(in: 1...frames[which].count, using: &random))
        case 3:
            frames[which] += (0..<Int.random(in: 1...9, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
        case 4:
            frames.remove(at: which)
        case 5:
            frames.insert(frames[which], at: Int.random(in: 0...frames.count, using: &random))
        default:
            // Large values in a length-prefix-shaped spot: 0xFF.. or 0x80.. at a random aligned offset.
            if frames[which].count >= 4 {
                let offset = Int.random(in: 0...(frames[which].count - 4), using: &random)
                let fill: [UInt8] = Bool.random(using: &random) ? [0xFF, 0xFF, 0xFF, 0xFF] : [0, 0, 0, 0x80]
                frames[which].replaceSubrange(offset..<offset + 4, with: fill)
            }
        }
    }
}
