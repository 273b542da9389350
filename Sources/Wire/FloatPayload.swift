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
/// Why it is `Sendable`: nothing in it changes while more than one reference to it exists, but
/// a view's checksum, which is computed once under a lock. The other change,
/// `refill(_:count:fillingBlocks:)`, rewrites a payload only when its caller's reference is the
/// only one, so no other thread (a socket's I/O thread included) can be reading it.
public final class FloatPayload: @unchecked Sendable {
    /// Number of floats.
    public let count: Int
    /// xxh64 of the bytes (little-endian floats), computed when the payload is built or refilled
    /// (or while a received frame is verified); for a view (`init(viewing:count:owner:)`), the
    /// first time it is asked for.
    public var checksum: UInt64 {
        guard let onDemand else { return storedChecksum }
        return onDemand.withLock {
            if let known = viewChecksum { return known }
            let computed = XXHash64.hash(base, count: byteCount)
            viewChecksum = computed
            return computed
        }
    }
    private var storedChecksum: UInt64
    /// A view's checksum once computed, and the lock that makes that happen once.
    private var viewChecksum: UInt64?
    private let onDemand: Mutex?
    private let base: UnsafePointer<Float>
    private let allocation: UnsafeMutableRawPointer?
    private let frame: ReceivedFrame?
    /// Whatever keeps the memory of a wrapping payload (`init(wrapping:count:owner:)`) alive.
    private let owner: AnyObject?

    /// Buffers start on a cache line, which SIMD code and memcpy like.
    private static let alignment = 64

    /// Floats per block of `init(count:fillingBlocks:)`: 64 KB, which stays in L2 cache between
    /// being written and being hashed, and is a whole number of the hash's 32-byte stripes.
    public static let blockFloats = 16_384

    /// A payload holding a copy of `values`.
    public convenience init(copying values: [Float]) {
        self.init(count: values.count, fillingBlocks: { range, block in
            values.withUnsafeBufferPointer { block.baseAddress!.update(from: $0.baseAddress! + range.lowerBound, count: range.count) }
        })
    }

    /// A payload holding a copy of `count` floats at `pointer`.
    public convenience init(copying pointer: UnsafePointer<Float>, count: Int) {
        self.init(count: count, fillingBlocks: { range, block in
            block.baseAddress!.update(from: pointer + range.lowerBound, count: range.count)
        })
    }

    /// A payload of `count` floats that `fill` writes straight into the buffer that will be sent,
    /// one block of `blockFloats` floats at a time (the last may be shorter), in order: `fill`
    /// gets the block's range of float indices and the block's memory, and must write every float
    /// of it (the buffer is not zeroed first). Each block is hashed right after it is written,
    /// while it is still in cache, so building the payload reads and writes its bytes once.
    public init(count: Int, fillingBlocks fill: (_ range: Range<Int>, _ block: UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        precondition(count >= 0, "a payload cannot have a negative count (\(count))")
        let allocation = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.size, alignment: Self.alignment)
        let floats = allocation.bindMemory(to: Float.self, capacity: max(count, 1))
        if count == 0 { floats.initialize(to: 0) }
        let checksum: UInt64
        do {
            checksum = try Self.fillBlocks(floats, count: count, fill)
        } catch {
            allocation.deallocate()
            throw error
        }
        self.count = count
        self.allocation = allocation
        self.base = UnsafePointer(floats)
        self.frame = nil
        self.owner = nil
        self.storedChecksum = checksum
        self.onDemand = nil
    }

    /// Calls `fill` on consecutive blocks of `count` floats at `floats` and returns the xxh64 of
    /// the bytes, each block hashed right after it is written.
    private static func fillBlocks(_ floats: UnsafeMutablePointer<Float>, count: Int,
                                   _ fill: (_ range: Range<Int>, _ block: UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows -> UInt64 {
        var hash = XXHash64.Stream()
        var start = 0
        while start < count {
            let end = min(start + blockFloats, count)
            let block = UnsafeMutableBufferPointer(start: floats + start, count: end - start)
            try fill(start..<end, block)
            hash.update(block.baseAddress, count: block.count * MemoryLayout<Float>.size)
            start = end
        }
        return hash.digest()
    }

    /// The payload of `count` floats that `fill` writes block by block, as
    /// `init(count:fillingBlocks:)` does, copy-on-write style: when `held` is the only reference
    /// to a payload that owns a buffer of `count` floats, that buffer is rewritten (and its
    /// checksum recomputed as the blocks are written) instead of allocating fresh memory, whose
    /// page faults cost more than the copy for a large model; otherwise a new payload is built.
    /// Either way `held` then holds the result, which is also returned.
    ///
    /// Why rewriting is safe: `isKnownUniquelyReferenced` sees every strong reference, and
    /// whoever reads a payload's memory holds one while it does: a message being built or
    /// decoded, a caller of `withUnsafeBufferPointer` that keeps the pointer (which its documentation
    /// allows only while it holds the payload), and a zero-copy send, for which `ZMQSocket.send`
    /// retains the payload until libzmq's free callback, called once the bytes have left
    /// (or the message is dropped), releases it. That release is a release-ordered atomic
    /// decrement, so the I/O thread's reads of the buffer come before it, and the writes here
    /// depend on the check having seen it: the ordering Swift's own copy-on-write collections rely
    /// on when another thread drops its copy. A payload wrapping memory it does not own is never
    /// rewritten.
    /// If `fill` throws, `held` is left nil (a half-written buffer is never kept).
    @discardableResult
    public static func refill(_ held: inout FloatPayload?, count: Int,
                              fillingBlocks fill: (_ range: Range<Int>, _ block: UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows -> FloatPayload {
        if isKnownUniquelyReferenced(&held), let payload = held, payload.count == count, let allocation = payload.allocation {
            let floats = allocation.assumingMemoryBound(to: Float.self)
            do {
                payload.storedChecksum = try fillBlocks(floats, count: count, fill)
            } catch {
                held = nil
                throw error
            }
            return payload
        }
        held = nil
        let payload = try FloatPayload(count: count, fillingBlocks: fill)
        held = payload
        return payload
    }

    /// A payload over `count` floats at `pointer` that are not copied: `owner` is kept alive while
    /// the payload lives and must keep the memory valid and unchanged meanwhile (a buffer the
    /// producer will not reuse while anyone else holds it, say). Hashing them is the one pass over
    /// the bytes before they are sent.
    public convenience init(wrapping pointer: UnsafePointer<Float>, count: Int, owner: AnyObject) {
        self.init(over: pointer, count: count, owner: owner, checksum: XXHash64.hash(pointer, count: count * MemoryLayout<Float>.size))
    }

    /// A payload over `count` floats at `pointer`, kept as `init(wrapping:count:owner:)` keeps
    /// them, whose checksum is computed only when something asks for it (sending it whole): for
    /// memory that may only be read, or sent in parts with checksums of their own, where hashing
    /// it all would be a pass over the bytes for nothing.
    public convenience init(viewing pointer: UnsafePointer<Float>, count: Int, owner: AnyObject) {
        self.init(over: pointer, count: count, owner: owner, checksum: nil)
    }

    /// Memory of `owner`'s, with its checksum, or nil to compute it when asked.
    private init(over pointer: UnsafePointer<Float>, count: Int, owner: AnyObject, checksum: UInt64?) {
        precondition(count >= 0, "a payload cannot have a negative count (\(count))")
        self.count = count
        self.base = pointer
        self.allocation = nil
        self.frame = nil
        self.owner = owner
        self.storedChecksum = checksum ?? 0
        self.onDemand = checksum == nil ? Mutex() : nil
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
        self.owner = nil
        self.storedChecksum = XXHash64.hash(allocation, count: count * MemoryLayout<Float>.size)
        self.onDemand = nil
    }

    /// A payload over a received frame whose checksum the caller has verified; reads in place
    /// when the bytes are 4-byte aligned (libzmq gives at least 8), copies otherwise.
    init(frame: ReceivedFrame, checksum: UInt64) {
        let count = frame.count / MemoryLayout<Float>.size
        self.count = count
        self.storedChecksum = checksum
        self.onDemand = nil
        if let start = frame.baseAddress, Int(bitPattern: start) % MemoryLayout<Float>.alignment == 0 {
            self.base = start.assumingMemoryBound(to: Float.self)
            self.allocation = nil
            self.frame = frame
            self.owner = nil
        } else {
            let allocation = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * MemoryLayout<Float>.size, alignment: Self.alignment)
            let floats = allocation.initializeMemory(as: Float.self, repeating: 0, count: max(count, 1))
            if let start = frame.baseAddress {
                allocation.copyMemory(from: start, byteCount: count * MemoryLayout<Float>.size)
            }
            self.base = UnsafePointer(floats)
            self.allocation = allocation
            self.frame = nil
            self.owner = nil
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
