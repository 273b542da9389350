import Checkpoint
import XCTest

/// Every malformation is rejected with an error naming the file and what is wrong.
final class SafeTensorsMalformedTests: XCTestCase {
    private let source = "runs/x/bad.safetensors"
    private let eightBytes: [UInt8] = [0, 0, 0x80, 0x3F, 0, 0, 0, 0x40] // 1.0, 2.0

    private func check(
        header: String, data: [UInt8], mentions: [String], line: UInt = #line, _ expected: (SafeTensorsError) -> Bool
    ) {
        assertSafeTensorsError({ _ = try decode(handBuiltFile(header: header, data: data), source: source) },
                               mentions: [source] + mentions, line: line, expected)
    }

    func testHeaderLengthBeyondFileIsRejected() {
        var bytes = handBuiltFile(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eightBytes)
        bytes[0] = 0xE8
        bytes[1] = 0x03 // header length 1000 in a 70-byte file
        assertSafeTensorsError({ _ = try decode(bytes, source: source) }, mentions: [source, "1000", "truncated"]) {
            if case .headerBeyondFile(_, let length, let size) = $0 { return length == 1000 && size == bytes.count }
            return false
        }
    }

    func testHeaderLengthAboveCapIsRejected() {
        var bytes = handBuiltFile(header: "{}", data: [])
        bytes[3] = 0x10 // 2^28 + 2 bytes
        assertSafeTensorsError({ _ = try decode(bytes, source: source) }, mentions: [source, "limit"]) {
            if case .headerTooLarge = $0 { return true }
            return false
        }
    }

    func testFileShorterThanLengthFieldIsRejected() {
        assertSafeTensorsError({ _ = try decode([1, 0, 0], source: source) }, mentions: [source, "3 bytes"]) {
            if case .fileTooSmall(_, 3) = $0 { return true }
            return false
        }
    }

    func testInvalidJSONIsRejectedWithPosition() {
        check(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#, data: eightBytes, mentions: ["not valid JSON", "byte 53"]) {
            if case .invalidJSON(_, 53, _) = $0 { return true }
            return false
        }
        check(header: #"{"a":{"dtype":'F32'}}"#, data: [], mentions: ["not valid JSON"]) {
            if case .invalidJSON = $0 { return true }
            return false
        }
        check(header: String(repeating: "[", count: 10_000), data: [], mentions: ["nesting"]) {
            if case .invalidJSON = $0 { return true }
            return false
        }
    }

    func testHeaderThatIsNotUTF8IsRejected() {
        var bytes = handBuiltFile(header: #"{"ab":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eightBytes)
        bytes[11] = 0xFF
        assertSafeTensorsError({ _ = try decode(bytes, source: source) }, mentions: [source, "UTF-8"]) {
            if case .headerNotUTF8 = $0 { return true }
            return false
        }
    }

    func testUnknownDTypeIsRejected() {
        check(header: #"{"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}}"#, data: eightBytes, mentions: ["'a'", "F33"]) {
            if case .unknownDType(_, "a", "F33") = $0 { return true }
            return false
        }
    }

    func testKnownButUnsupportedDTypeIsNamedAsSuch() {
        check(header: #"{"mask":{"dtype":"BOOL","shape":[8],"data_offsets":[0,8]}}"#, data: eightBytes, mentions: ["'mask'", "BOOL", "does not convert"]) {
            if case .unsupportedDType(_, "mask", "BOOL") = $0 { return true }
            return false
        }
    }

    func testOffsetsBeyondBufferAreRejected() {
        check(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: eightBytes, mentions: ["'a'", "[0, 16]", "8-byte data buffer"]) {
            if case .offsetsOutOfBounds(_, "a", 0, 16, 8) = $0 { return true }
            return false
        }
        check(header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, data: eightBytes, mentions: ["'a'", "before its begin"]) {
            if case .offsetsOutOfBounds(_, "a", 8, 4, _) = $0 { return true }
            return false
        }
    }

    func testOverlappingTensorsAreRejected() {
        let header = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        check(header: header, data: eightBytes + [0, 0, 0, 0], mentions: ["'a'", "'b'", "4..<8"]) {
            if case .overlappingTensors(_, "a", "b", 4, 8) = $0 { return true }
            return false
        }
    }

    func testGapBetweenTensorsIsRejected() {
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#
        check(header: header, data: eightBytes + [0, 0, 0, 0], mentions: ["4..<8", "'b'", "belong to no tensor"]) {
            if case .gapInBuffer(_, 4, 8, "b") = $0 { return true }
            return false
        }
    }

    func testTrailingBytesOutsideEveryTensorAreRejected() {
        check(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, data: eightBytes, mentions: ["4..<8", "end of the buffer"]) {
            if case .gapInBuffer(_, 4, 8, nil) = $0 { return true }
            return false
        }
    }

    func testShapeDisagreeingWithOffsetsIsRejected() {
        check(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: eightBytes, mentions: ["'a'", "[3]", "12 bytes", "8 bytes"]) {
            if case .shapeMismatch(_, "a", [3], "F32", 12, 8) = $0 { return true }
            return false
        }
    }

    func testDuplicateTensorNameIsRejected() {
        let header = #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
        check(header: header, data: eightBytes, mentions: ["'a'", "more than once"]) {
            if case .duplicateName(_, "a") = $0 { return true }
            return false
        }
    }

    func testNonStringMetadataValueIsRejected() {
        check(header: #"{"__metadata__":{"epoch":3},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eightBytes, mentions: ["'epoch'", "not a string"]) {
            if case .metadataValueNotString(_, "epoch") = $0 { return true }
            return false
        }
    }

    func testMalformedTensorEntriesNameTheField() {
        let cases: [(String, String)] = [
            (#"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#, "a.shape"),
            (#"{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}"#, "a.shape[0]"),
            (#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, "a.shape[0]"),
            (#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}"#, "a.data_offsets"),
            (#"{"a":[1,2]}"#, "'a'"),
            (#"[1,2]"#, "(top level)"),
        ]
        for (header, field) in cases {
            check(header: header, data: eightBytes, mentions: [field]) {
                if case .invalidHeader = $0 { return true }
                return false
            }
        }
    }
}
