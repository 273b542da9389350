import Checkpoint
import XCTest

final class SafeTensorsReadTests: XCTestCase {
    func testHandBuiltFileIsReadWithMetadataInBufferOrder() throws {
        // Header order (b, metadata, a) differs from buffer order (a, b) on purpose.
        let header = #"{"b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]},"__metadata__":{"format":"pt","note":"hand \"made\" \u00e9"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}}"#
        let data: [UInt8] = [
            0x00, 0x00, 0x80, 0x3F, // 1.0
            0x00, 0x00, 0x00, 0xC0, // -2.0
            0x00, 0x00, 0x00, 0x3F, // 0.5
            0x00, 0x00, 0x40, 0x40, // 3.0
            0x00, 0x00, 0x80, 0x3E, // 0.25
            0x00, 0x00, 0x00, 0x80, // -0.0
            0x00, 0x00, 0xC8, 0x42, // 100.0
        ]
        let file = try decode(handBuiltFile(header: header, data: data))

        XCTAssertEqual(file.metadata, ["format": "pt", "note": "hand \"made\" é"])
        XCTAssertEqual(file.tensors.map(\.name), ["a", "b"])
        XCTAssertEqual(file["a"], NamedTensor(name: "a", shape: [2, 2], dtype: .float32, values: [1, -2, 0.5, 3]))
        XCTAssertEqual(file["b"]?.shape, [3])
        XCTAssertEqual(file["b"]?.values, [0.25, -0.0, 100])
        XCTAssertEqual(file["b"]?.values[1].sign, .minus)
        XCTAssertNil(file["c"])
    }

    func testPaddedHeaderScalarAndEmptyTensorsAreRead() throws {
        let header = #"{"scalar":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"empty":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]}}"# + "     "
        let file = try decode(handBuiltFile(header: header, data: [0x00, 0x00, 0x20, 0x41])) // 10.0
        XCTAssertEqual(file["scalar"]?.shape, [])
        XCTAssertEqual(file["scalar"]?.values, [10])
        XCTAssertEqual(file["empty"]?.shape, [0, 5])
        XCTAssertEqual(file["empty"]?.values, [])
        XCTAssertEqual(file.metadata, [:])
    }

    func testFloat16ValuesConvertExactly() throws {
        let header = #"{"h":{"dtype":"F16","shape":[7],"data_offsets":[0,14]}}"#
        let data: [UInt8] = [
            0x00, 0x3C, // 1.0
            0x00, 0xC0, // -2.0
            0xFF, 0x7B, // 65504, the largest half
            0x01, 0x00, // 2^-24, the smallest subnormal
            0x00, 0x04, // 2^-14, the smallest normal
            0x00, 0x7C, // +infinity
            0x55, 0x35, // 0.333251953125
        ]
        let tensor = try XCTUnwrap(try decode(handBuiltFile(header: header, data: data))["h"])
        XCTAssertEqual(tensor.dtype, .float16)
        XCTAssertEqual(tensor.values, [1, -2, 65504, 0x1p-24, 0x1p-14, .infinity, 0.333251953125])
    }

    func testBFloat16ValuesConvertExactly() throws {
        let header = #"{"h":{"dtype":"BF16","shape":[2,2],"data_offsets":[0,8]}}"#
        let data: [UInt8] = [
            0x80, 0x3F, // 1.0
            0xA0, 0xC0, // -5.0
            0x49, 0x40, // 3.140625
            0x80, 0xFF, // -infinity
        ]
        let tensor = try XCTUnwrap(try decode(handBuiltFile(header: header, data: data))["h"])
        XCTAssertEqual(tensor.dtype, .bfloat16)
        XCTAssertEqual(tensor.values, [1, -5, 3.140625, -.infinity])
    }

    func testInt64ValuesConvertToFloat() throws {
        let header = #"{"num_batches_tracked":{"dtype":"I64","shape":[4],"data_offsets":[0,32]}}"#
        let data: [UInt8] = [
            0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, // -3
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0
            0xE8, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 1000
            0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, // 2^40
        ]
        let tensor = try XCTUnwrap(try decode(handBuiltFile(header: header, data: data))["num_batches_tracked"])
        XCTAssertEqual(tensor.dtype, .int64)
        XCTAssertEqual(tensor.values, [-3, 0, 1000, 0x1p40])
    }

    func testFloat64Int32AndUInt8ValuesConvert() throws {
        let header = #"{"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},"i":{"dtype":"I32","shape":[2],"data_offsets":[16,24]},"u":{"dtype":"U8","shape":[3],"data_offsets":[24,27]}}"#
        let data: [UInt8] = [
            0x9A, 0x99, 0x99, 0x99, 0x99, 0x99, 0xB9, 0x3F, // 0.1
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xF8, 0xBF, // -1.5
            0xF9, 0xFF, 0xFF, 0xFF, // -7
            0x00, 0x00, 0x01, 0x00, // 65536
            0x00, 0x07, 0xFF, // 0, 7, 255
        ]
        let file = try decode(handBuiltFile(header: header, data: data))
        XCTAssertEqual(file["d"]?.values, [Float(0.1 as Double), -1.5])
        XCTAssertEqual(file["i"]?.values, [-7, 65536])
        XCTAssertEqual(file["u"]?.values, [0, 7, 255])
        XCTAssertEqual(file.tensors.map(\.dtype), [.float64, .int32, .uint8])
    }

    func testMissingFileIsReportedWithItsPath() throws {
        let path = "/nonexistent-directory-\(UInt32.random(in: 0...UInt32.max))/model.safetensors"
        assertSafeTensorsError({ _ = try SafeTensors.read(path: path) }, mentions: [path, "No such file"]) {
            if case .fileUnreadable(let reported, _) = $0 { return reported == path }
            return false
        }
    }
}
