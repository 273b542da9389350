import Hashing

/// How the tensors of a message that carries gradient tree nodes (`gradients`, `slice-partials`)
/// travel: every value as a little-endian Float32, or the first `bfloat16Values` values of each
/// tensor as bf16 (2 bytes each: the top half of the Float32) and the rest as Float32.
///
/// bf16 on the wire is lossless: a sender that chooses it has already rounded those values to
/// bf16 (the fixed tree's rounding, `distributed.wire_precision: bf16`), so dropping the low
/// half drops only zeros, and the receiver widens them back to the very same Float32s. Sending a
/// value whose low half is not zero in bf16 is a programming error and traps. What is not a
/// gradient (batch norm's state observations at the end of a central leaf) stays Float32.
///
/// In the meta frame: kind UInt8 (0 Float32, 1 bf16 first), then bfloat16Values UInt32 (0 for
/// kind 0, at least 1 for kind 1). A tensor of n values under kind 1 is 2 min(b, n) + 4 (n - b)
/// bytes, and must hold at least b values.
public struct TensorEncoding: Hashable, Sendable, CustomStringConvertible {
    /// Values at the start of every tensor that travel as bf16.
    public let bfloat16Values: Int

    /// Every value as Float32.
    public static let float32 = TensorEncoding(bfloat16Values: 0)

    /// The first `count` values of every tensor as bf16, the rest as Float32 (`count` of 0 is
    /// `float32`).
    public static func bfloat16(first count: Int) -> TensorEncoding {
        precondition(count >= 0, "a negative count of bf16 values (\(count))")
        return TensorEncoding(bfloat16Values: count)
    }

    private init(bfloat16Values: Int) { self.bfloat16Values = bfloat16Values }

    public var isFloat32: Bool { bfloat16Values == 0 }

    /// Bytes on the wire of a tensor of `values` values (at least `bfloat16Values` of them).
    public func byteCount(values: Int) -> Int {
        2 * bfloat16Values + 4 * (values - bfloat16Values)
    }

    /// The values a tensor frame of `bytes` bytes holds, nil when no tensor is that long.
    func values(inBytes bytes: Int) -> Int? {
        let head = 2 * bfloat16Values
        guard bytes >= head, (bytes - head) % 4 == 0 else { return nil }
        return bfloat16Values + (bytes - head) / 4
    }

    public var description: String { isFloat32 ? "fp32" : "bf16x\(bfloat16Values)+fp32" }

    /// Floats per block when packing or widening: 64 KB of Float32, which stays in cache between
    /// being written and being hashed.
    static let blockValues = FloatPayload.blockFloats
}

extension ByteWriter {
    mutating func encoding(_ encoding: TensorEncoding) {
        u8(encoding.isFloat32 ? 0 : 1)
        u32(narrowed(encoding.bfloat16Values, "encoding.bfloat16Values"))
    }
}

extension ByteReader {
    /// A tensor encoding (kind byte, then the count of bf16 values), canonical: kind 0 with a
    /// count of 0, kind 1 with a count of at least 1.
    mutating func encoding(_ field: @autoclosure () -> String) throws(DecodeError) -> TensorEncoding {
        let kind = try u8("\(field()).kind")
        let count = try u32("\(field()).bfloat16Values")
        switch kind {
        case 0:
            guard count == 0 else {
                throw .invalidValue(field: "\(field()).bfloat16Values", value: String(count),
                                    requirement: "an all-Float32 encoding (kind 0) has 0 bf16 values")
            }
            return .float32
        case 1:
            guard count > 0 else {
                throw .invalidValue(field: "\(field()).bfloat16Values", value: "0",
                                    requirement: "a bf16 encoding (kind 1) has at least 1 bf16 value")
            }
            return .bfloat16(first: Int(count))
        default:
            throw .unknownEnumValue(field: "\(field()).kind", value: kind)
        }
    }
}

/// A tensor packed for the wire in a `TensorEncoding` other than all-Float32: the bytes that are
/// sent (handed to libzmq without a further copy) and their xxh64, which the meta frame carries,
/// so the checksum covers exactly the bytes on the wire.
///
/// Why it is `Sendable`: its bytes never change after `init`.
public final class PackedTensor: @unchecked Sendable {
    /// Bytes on the wire.
    public let byteCount: Int
    /// xxh64 of those bytes.
    public let checksum: UInt64
    let bytes: UnsafeMutableRawPointer

    /// Packs `payload` in `encoding`: its first `encoding.bfloat16Values` values as their top
    /// halves (each must be bf16-exact: the low half zero), the rest copied as Float32, block by
    /// block, each block hashed right after it is written.
    init(packing payload: FloatPayload, in encoding: TensorEncoding) {
        let head = encoding.bfloat16Values
        precondition(payload.count >= head, "a tensor of \(payload.count) values cannot send its first \(head) in bf16")
        let byteCount = encoding.byteCount(values: payload.count)
        let bytes = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        var hash = XXHash64.Stream()
        // The stream takes whole 32-byte stripes until its last piece: hash what is written up to
        // the last whole stripe after each block, and the rest at the end.
        var hashed = 0
        func hashWritten(upTo end: Int, last: Bool) {
            let stop = last ? end : end & ~31
            guard stop > hashed else { return }
            hash.update(UnsafeRawPointer(bytes + hashed), count: stop - hashed)
            hashed = stop
        }
        var stray: UInt32 = 0
        payload.withUnsafeBufferPointer { source in
            let halves = bytes.bindMemory(to: UInt16.self, capacity: max(head, 1))
            var start = 0
            while start < head {
                let end = min(start + TensorEncoding.blockValues, head)
                for i in start..<end {
                    let bits = source[i].bitPattern
                    halves[i] = UInt16(truncatingIfNeeded: bits >> 16)
                    stray |= bits & 0xFFFF
                }
                hashWritten(upTo: 2 * end, last: false)
                start = end
            }
            // The Float32 values after the halves, 2-byte aligned only when the head is odd: copied
            // as bytes, a block at a time.
            start = head
            while start < payload.count {
                let end = min(start + TensorEncoding.blockValues, payload.count)
                (bytes + 2 * head + 4 * (start - head)).copyMemory(from: UnsafeRawPointer(source.baseAddress! + start), byteCount: 4 * (end - start))
                hashWritten(upTo: 2 * head + 4 * (end - head), last: false)
                start = end
            }
            hashWritten(upTo: byteCount, last: true)
        }
        precondition(stray == 0, "a tensor sent in bf16 holds values that are not bf16 (the fixed tree's rounding was skipped)")
        self.byteCount = byteCount
        self.bytes = bytes
        checksum = hash.digest()
    }

    deinit { bytes.deallocate() }

    /// A copy of the bytes (for tests, fuzzers and captures).
    public func copyBytes() -> [UInt8] { Array(UnsafeRawBufferPointer(start: bytes, count: byteCount)) }
}

extension FloatPayload {
    /// The Float32 values of a received frame in `encoding` (other than all-Float32) holding
    /// `count` values: bf16 halves widened (exactly), Float32 values copied. The frame's checksum
    /// has been verified on its bytes; the payload's own is of its Float32s, as for any payload.
    convenience init(widening frame: ReceivedFrame, count: Int, encoding: TensorEncoding) {
        let head = encoding.bfloat16Values
        self.init(count: count, fillingBlocks: { range, block in
            frame.withUnsafeBytes { bytes in
                let split = min(max(head, range.lowerBound), range.upperBound)
                for i in range.lowerBound..<split {
                    let half = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    block[i - range.lowerBound] = Float(bitPattern: UInt32(half) << 16)
                }
                for i in split..<range.upperBound {
                    let bits = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: 2 * head + 4 * (i - head), as: UInt32.self))
                    block[i - range.lowerBound] = Float(bitPattern: bits)
                }
            }
        })
    }
}
