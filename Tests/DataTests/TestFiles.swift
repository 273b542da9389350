import Data
import Foundation
import XCTest

/// A fresh temporary directory per test, removed when the test ends.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "data-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Writes `bytes` to `name` inside the directory and returns the full path.
    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> String {
        let file = path + "/" + name
        try Foundation.Data(bytes).write(to: URL(fileURLWithPath: file))
        return file
    }

    /// Writes `bytes` gzip-compressed (by the `gzip` tool, an independent writer) to `name`.
    @discardableResult
    func writeGzip(_ name: String, _ bytes: [UInt8]) throws -> String {
        let plain = try write(name + ".plain-for-gzip", bytes)
        let compressed = try gzip(plain)
        let target = path + "/" + name
        try FileManager.default.moveItem(atPath: compressed, toPath: target)
        try FileManager.default.removeItem(atPath: plain)
        return target
    }

    /// Compresses the file at `file` with `gzip -n`, returning the path of the `.gz` file.
    func gzip(_ file: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["gzip", "-n", "-f", "-k", file]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw NSError(domain: "gzip", code: Int(process.terminationStatus))
        }
        return file + ".gz"
    }
}

/// An IDX file's bytes: magic (0, 0, type code, dimension count), big-endian sizes, payload.
func idxBytes(typeCode: UInt8 = 0x08, dimensions: [Int], payload: [UInt8]) -> [UInt8] {
    var bytes: [UInt8] = [0, 0, typeCode, UInt8(dimensions.count)]
    for size in dimensions {
        bytes += [UInt8(size >> 24 & 0xff), UInt8(size >> 16 & 0xff), UInt8(size >> 8 & 0xff), UInt8(size & 0xff)]
    }
    return bytes + payload
}

/// Runs `body`, which must throw a `DataError`, and returns it (failing the test otherwise).
func dataError(
    _ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line
) -> DataError? {
    do {
        try body()
        XCTFail("expected a DataError, but nothing was thrown", file: file, line: line)
    } catch let error as DataError {
        return error
    } catch {
        XCTFail("expected a DataError, got \(error)", file: file, line: line)
    }
    return nil
}
