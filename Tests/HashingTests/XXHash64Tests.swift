import Hashing
import XCTest

final class XXHash64Tests: XCTestCase {
    /// Reference values from the xxHash project's own test vectors (XXH64, seed 0).
    func testMatchesPublishedXXH64Values() {
        XCTAssertEqual(XXHash64.hash(array: [UInt8]()), 0xEF46_DB37_51D8_E999)
        XCTAssertEqual(XXHash64.hash(array: Array("a".utf8)), 0xD24E_C4F1_A98C_6E5B)
        XCTAssertEqual(XXHash64.hash(array: Array("abc".utf8)), 0x44BC_2CF5_AD77_0999)
        let long = Array("Nobody inspects the spammish repetition".utf8)
        XCTAssertEqual(XXHash64.hash(array: long), 0xFBCE_A83C_8A37_8BF1)
    }

    func testUnalignedInputHashesLikeAligned() {
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let expected = XXHash64.hash(array: Array(bytes[1...]))
        bytes.withUnsafeBytes { raw in
            XCTAssertEqual(XXHash64.hash(raw.baseAddress! + 1, count: 999), expected)
        }
    }

    func testSingleFlippedBitChangesHash() {
        var bytes = [UInt8](repeating: 7, count: 4096)
        let before = XXHash64.hash(array: bytes)
        bytes[2049] ^= 0x10
        XCTAssertNotEqual(XXHash64.hash(array: bytes), before)
    }
}

final class XXHash64StreamTests: XCTestCase {
    /// Pieces of whole stripes and a last piece of any length hash as the whole buffer does.
    func testStreamInPiecesEqualsOneShotHash() {
        let bytes = (0..<(3 * 65_536 + 45)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ $0 >> 9) }
        bytes.withUnsafeBytes { raw in
            for length in [0, 1, 31, 32, 33, 64, 100, 65_536, 65_537, raw.count] {
                for piece in [32, 96, 65_536] {
                    var stream = XXHash64.Stream()
                    var offset = 0
                    while offset < length {
                        let size = min(piece, length - offset)
                        stream.update(raw.baseAddress! + offset, count: size)
                        offset += size
                    }
                    XCTAssertEqual(stream.digest(), XXHash64.hash(raw.baseAddress, count: length),
                                   "\(length) bytes in pieces of \(piece)")
                }
            }
        }
    }

    func testStreamWithSeedEqualsSeededHash() {
        let bytes = [UInt8](repeating: 0xA5, count: 200)
        bytes.withUnsafeBytes { raw in
            var stream = XXHash64.Stream(seed: 42)
            stream.update(raw.baseAddress, count: 128)
            stream.update(raw.baseAddress! + 128, count: 72)
            XCTAssertEqual(stream.digest(), XXHash64.hash(raw, seed: 42))
        }
    }
}
