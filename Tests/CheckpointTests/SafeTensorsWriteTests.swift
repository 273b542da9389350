import Checkpoint
import Foundation
import XCTest

final class SafeTensorsWriteTests: XCTestCase {
    private let tensors = [
        NamedTensor(name: "features.0.weight", shape: [2, 3], values: [-1, -0.5, 0, 0.5, 1, 1.5]),
        NamedTensor(name: "features.1.num_batches_tracked", shape: [], dtype: .int64, values: [12]),
        NamedTensor(name: "classifier.bias", shape: [3], values: [0.25, -7, 3.5e-8]),
    ]

    func testWrittenHeaderFollowsTheFormat() throws {
        let bytes = try SafeTensors.encode(tensors, metadata: ["format": "pt", "k": "v"])
        let headerLength = headerText(bytes).utf8.count
        XCTAssertEqual((8 + headerLength) % 8, 0, "data must start 8-byte aligned")
        XCTAssertEqual(bytes.count, 8 + headerLength + 24 + 8 + 12)

        let header = Array(bytes[8..<(8 + headerLength)])
        let closing = try XCTUnwrap(header.lastIndex(of: UInt8(ascii: "}")))
        XCTAssertTrue(header[(closing + 1)...].allSatisfy { $0 == UInt8(ascii: " ") }, "padding must be spaces")

        // Foundation's parser, independent of the reader under test.
        let json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(header)) as? [String: Any])
        XCTAssertEqual(json["__metadata__"] as? [String: String], ["format": "pt", "k": "v"])
        func entry(_ name: String) throws -> (dtype: String, shape: [Int], offsets: [Int]) {
            let object = try XCTUnwrap(json[name] as? [String: Any], name)
            return (try XCTUnwrap(object["dtype"] as? String), try XCTUnwrap(object["shape"] as? [Int]),
                    try XCTUnwrap(object["data_offsets"] as? [Int]))
        }
        let weight = try entry("features.0.weight")
        XCTAssertEqual(weight.dtype, "F32")
        XCTAssertEqual(weight.shape, [2, 3])
        XCTAssertEqual(weight.offsets, [0, 24])
        let tracked = try entry("features.1.num_batches_tracked")
        XCTAssertEqual(tracked.dtype, "I64")
        XCTAssertEqual(tracked.shape, [])
        XCTAssertEqual(tracked.offsets, [24, 32])
        let bias = try entry("classifier.bias")
        XCTAssertEqual(bias.dtype, "F32")
        XCTAssertEqual(bias.offsets, [32, 44])
        XCTAssertEqual(json.count, 4)

        let data = Array(bytes[(8 + headerLength)...])
        XCTAssertEqual(Array(data[0..<24]), littleEndianBytes([-1, -0.5, 0, 0.5, 1, 1.5]))
        XCTAssertEqual(Array(data[24..<32]), [12, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertEqual(Array(data[32..<44]), littleEndianBytes([0.25, -7, 3.5e-8]))
    }

    func testDataStartsEightByteAlignedWhateverTheHeaderLength() throws {
        // Names of eight consecutive lengths give unpadded headers of every length modulo 8.
        for extra in 0..<8 {
            let name = "w" + String(repeating: "x", count: extra)
            let bytes = try SafeTensors.encode([NamedTensor(name: name, shape: [1], values: [1])], metadata: [:])
            let header = headerText(bytes)
            XCTAssertEqual((8 + header.utf8.count) % 8, 0, "header for '\(name)' is \(header.utf8.count) bytes")
            let json = #"{""# + name + #"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#
            XCTAssertTrue(header.hasPrefix(json), header)
            XCTAssertTrue(header.dropFirst(json.count).allSatisfy { $0 == " " }, "padding must be spaces: '\(header)'")
            XCTAssertLessThan(header.utf8.count - json.utf8.count, 8, "padding is minimal")
        }
    }

    func testWrittenFileReadsBackIdentically() throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/model.safetensors"
        let metadata = ["format": "pt", "quote\"and\\slash": "line\nbreak \u{1}"]
        try SafeTensors.write(tensors, metadata: metadata, to: path)
        let file = try SafeTensors.read(path: path)
        XCTAssertEqual(file.tensors, tensors)
        XCTAssertEqual(file.metadata, metadata)
    }

    func testEmptyMetadataIsOmittedFromTheHeader() throws {
        let bytes = try SafeTensors.encode([NamedTensor(name: "x", shape: [1], values: [2])], metadata: [:])
        XCTAssertEqual(headerText(bytes).trimmingCharacters(in: .whitespaces), #"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#)
        XCTAssertEqual(try decode(bytes).tensors.map(\.name), ["x"])
    }

    func testEqualInputsGiveIdenticalBytes() throws {
        let metadata = (0..<20).reduce(into: [String: String]()) { $0["key\($1)"] = "value\($1)" }
        XCTAssertEqual(try SafeTensors.encode(tensors, metadata: metadata), try SafeTensors.encode(tensors, metadata: metadata))
    }

    func testLargeTensorRoundTripsBitExactly() throws {
        let values = (0..<100_003).map { Float(bitPattern: UInt32(truncatingIfNeeded: $0 &* 2_654_435_761) & 0xBFFF_FFFF) }
        let tensor = NamedTensor(name: "big", shape: [100_003], values: values)
        let file = try decode(try SafeTensors.encode([tensor], metadata: [:]))
        XCTAssertEqual(file["big"]?.values.map(\.bitPattern), values.map(\.bitPattern))
    }

    func testWriterRejectsWhatItCannotStore() {
        let cases: [(NamedTensor, String)] = [
            (NamedTensor(name: "short", shape: [2, 2], values: [1, 2, 3]), "needs 4 values"),
            (NamedTensor(name: "half", shape: [1], dtype: .float16, values: [1]), "F16 cannot be written"),
            (NamedTensor(name: "count", shape: [2], dtype: .int64, values: [1, 2.5]), "value 1 is 2.5"),
            (NamedTensor(name: "__metadata__", shape: [1], values: [1]), "reserved"),
            (NamedTensor(name: "negative", shape: [-1], values: []), "negative dimension"),
        ]
        for (tensor, phrase) in cases {
            assertSafeTensorsError({ _ = try SafeTensors.encode([tensor], metadata: [:]) }, mentions: [tensor.name, phrase]) {
                if case .invalidTensor(let name, _) = $0 { return name == tensor.name }
                return false
            }
        }
        let twice = [NamedTensor(name: "w", shape: [1], values: [1]), NamedTensor(name: "w", shape: [1], values: [2])]
        assertSafeTensorsError({ _ = try SafeTensors.encode(twice, metadata: [:]) }, mentions: ["'w'", "more than one tensor"]) {
            if case .invalidTensor = $0 { return true }
            return false
        }
    }
}
