import Checkpoint
import Foundation
import XCTest

/// A safetensors file assembled by hand: the 8-byte little-endian length of `header`, the header
/// text exactly as given, then `data`.
func handBuiltFile(header: String, data: [UInt8]) -> [UInt8] {
    let headerBytes = Array(header.utf8)
    var length = UInt64(headerBytes.count)
    var bytes: [UInt8] = []
    for _ in 0..<8 {
        bytes.append(UInt8(length & 0xFF))
        length >>= 8
    }
    return bytes + headerBytes + data
}

/// The header of a safetensors file, read by its length field.
func headerText(_ bytes: [UInt8]) -> String {
    let length = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    return String(decoding: bytes[8..<(8 + length)], as: UTF8.self)
}

func decode(_ bytes: [UInt8], source: String = "hand.safetensors") throws -> SafeTensorsFile {
    try bytes.withUnsafeBytes { try SafeTensors.decode($0, source: source) }
}

/// Little-endian bytes of Float32 values, built from their bit patterns.
func littleEndianBytes(_ values: [Float]) -> [UInt8] {
    values.flatMap { value -> [UInt8] in
        let bits = value.bitPattern
        return (0..<4).map { UInt8((bits >> (8 * UInt32($0))) & 0xFF) }
    }
}

/// Asserts that `body` throws a `SafeTensorsError` matching `expected` whose description mentions
/// every one of `mentions`.
func assertSafeTensorsError(
    _ body: () throws -> Void, mentions: [String], file: StaticString = #filePath, line: UInt = #line,
    _ expected: (SafeTensorsError) -> Bool
) {
    do {
        try body()
        XCTFail("expected an error", file: file, line: line)
    } catch let error as SafeTensorsError {
        XCTAssertTrue(expected(error), "unexpected error case: \(error)", file: file, line: line)
        for mention in mentions {
            XCTAssertTrue(error.description.contains(mention), "'\(error)' does not mention '\(mention)'", file: file, line: line)
        }
    } catch {
        XCTFail("expected a SafeTensorsError, got \(error)", file: file, line: line)
    }
}

/// A fresh directory under the system's temporary directory, removed by the caller.
func makeTemporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("checkpoint-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}
