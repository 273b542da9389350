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
