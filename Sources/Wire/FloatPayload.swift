import Hashing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

#if _endian(big)
#error("the wire format is little-endian and tensors are sent as they lie in memory; a big-endian host would need byte swaps")
#endif

/// A read-only Float32 tensor frame: either built by the sender (owns its buffer; it must not be
/// changed once sent, which the API makes impossible after `init(count:fill:)` returns) or
/// received (keeps the zmq message alive and reads the floats in place).
///
/// Why it is `Sendable`: nothing in it changes after `init`.
public final class FloatPayload: @unchecked Sendable {
    /// Number of floats.
    public let count: Int
    /// xxh64 of the bytes (little-endian floats), computed once when the payload is built (or
    /// while a received frame is verified).
    public let checksum: UInt64
    private let base: UnsafePointer<Float>
    private let allocation: UnsafeMutableRawPointer?
    private let frame: ReceivedFrame?

    /// Buffers start on a cache line, which SIMD code and memcpy like.
    private static let alignment = 64

    /// A payload holding a copy of `values`.
    public convenience init(copying values: [Float]) {
        self.init(count: values.count) { buffer in
            _ = buffer.update(fromContentsOf: values)
        }
    }

    /// A payload holding a copy of `count` floats at `pointer`.
    public convenience init(copying pointer: UnsafePointer<Float>, count: Int) {
        self.init(count: count) { buffer in
            buffer.baseAddress!.update(from: pointer, count: count)
        }
    }

    /// A payload of `count` floats that `fill` writes straight into the buffer that will be sent,
    /// so the producer (a reduction, a copy of the weights) makes the only copy. The buffer starts
    /// zeroed, so floats `fill` leaves alone are 0.
    public init(count: Int, fill: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        precondition(count >= 0, "a payload cannot have a negative count (\(count))")
        let byteCount = max(count, 1) * MemoryLayout<Float>.size
        let allocation = UnsafeMutableRawPointer.allocate(byteCount: byteCount, alignment: Self.alignment)
        let floats = allocation.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
        do {
            try fill(UnsafeMutableBufferPointer(start: floats, count: count))
        } catch {
            allocation.deallocate()
            throw error
        }
        self.count = count
        self.allocation = allocation
        self.base = UnsafePointer(floats)
        self.frame = nil
        self.checksum = XXHash64.hash(allocation, count: count * MemoryLayout<Float>.size)
    }

    /// A payload over a received frame whose checksum the caller has verified; reads in place
    /// when the bytes are 4-byte aligned (libzmq gives at least 8), copies otherwise.
    init(frame: ReceivedFrame, checksum: UInt64) {
        let count = frame.count / MemoryLayout<Float>.size
        self.count = count
        self.checksum = checksum
        if let start = frame.baseAddress, Int(bitPattern: start) % MemoryLayout<Float>.alignment == 0 {
            self.base = start.assumingMemoryBound(to: Float.self)
            self.allocation = nil
            self.frame = frame
        } else {
            let allocation = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.size, alignment: Self.alignment)
            let floats = allocation.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
            if let start = frame.baseAddress {
                allocation.copyMemory(from: start, byteCount: count * MemoryLayout<Float>.size)
            }
            self.base = UnsafePointer(floats)
            self.allocation = allocation
            self.frame = nil
        }
    }

    deinit { allocation?.deallocate() }

    /// Bytes on the wire.
    public var byteCount: Int { count * MemoryLayout<Float>.size }

    /// True when the floats are read straight from a received message's buffer (no copy made).
    public var readsInPlace: Bool { frame != nil }

    /// Calls `body` with the floats. The floats never move or change while the payload lives, so
    /// a reader that keeps the payload alive (holds a strong reference) may keep the pointer too.
    public func withUnsafeBufferPointer<R, Failure: Error>(_ body: (UnsafeBufferPointer<Float>) throws(Failure) -> R) throws(Failure) -> R {
        try body(UnsafeBufferPointer(start: base, count: count))
    }

    /// A copy of the floats.
    public func toArray() -> [Float] {
        withUnsafeBufferPointer { Array($0) }
    }
}

extension FloatPayload: Equatable {
    /// Same count and the same bits (so NaNs with equal bits are equal and 0 differs from -0).
    public static func == (left: FloatPayload, right: FloatPayload) -> Bool {
        if left === right { return true }
        guard left.count == right.count, left.checksum == right.checksum else { return false }
        if left.count == 0 { return true }
        return left.withUnsafeBufferPointer { l in
            right.withUnsafeBufferPointer { r in
                memcmp(l.baseAddress!, r.baseAddress!, left.byteCount) == 0
            }
        }
    }
}

extension FloatPayload: CustomStringConvertible {
    /// Size and checksum; never the values (a log line must stay a line).
    public var description: String {
        "\(count) floats, xxh64 \(hex(checksum))"
    }
}

/// 16 hex digits, zero-padded.
func hex(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: 16 - digits.count) + digits
}
