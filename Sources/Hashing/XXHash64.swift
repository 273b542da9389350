/// xxHash64 (Yann Collet's XXH64, seed 0 by default): the checksum of wire payloads and checkpoint
/// files. Several GB/s in plain Swift, so checking every gradient frame costs little next to the
/// arithmetic that produced it. It detects corruption, not tampering: CURVE handles the latter.
public struct XXHash64: Sendable {
    private static let prime1: UInt64 = 0x9E37_79B1_85EB_CA87
    private static let prime2: UInt64 = 0xC2B2_AE3D_27D4_EB4F
    private static let prime3: UInt64 = 0x1656_67B1_9E37_79F9
    private static let prime4: UInt64 = 0x85EB_CA77_C2B2_AE63
    private static let prime5: UInt64 = 0x27D4_EB2F_1656_67C5

    /// The hash of `count` bytes at `bytes`, which need no particular alignment.
    public static func hash(_ bytes: UnsafeRawPointer?, count: Int, seed: UInt64 = 0) -> UInt64 {
        guard let bytes, count > 0 else { return finish(seed &+ prime5, remaining: UnsafeRawBufferPointer(start: nil, count: 0), total: 0) }
        var offset = 0
        var h: UInt64
        if count >= 32 {
            var lanes = Lanes(seed: seed)
            offset = lanes.consumeStripes(bytes, count: count)
            h = lanes.merged()
        } else {
            h = seed &+ prime5
        }
        return finish(h, remaining: UnsafeRawBufferPointer(start: bytes + offset, count: count - offset), total: count)
    }

    /// The four accumulators of the 32-byte stripe loop.
    private struct Lanes {
        var v1, v2, v3, v4: UInt64

        init(seed: UInt64) {
            v1 = seed &+ prime1 &+ prime2
            v2 = seed &+ prime2
            v3 = seed
            v4 = seed &- prime1
        }

        /// Consumes every whole 32-byte stripe of `count` bytes; returns the bytes consumed.
        @inline(__always) mutating func consumeStripes(_ bytes: UnsafeRawPointer, count: Int) -> Int {
            var offset = 0
            while offset + 32 <= count {
                v1 = round(v1, load(bytes, offset))
                v2 = round(v2, load(bytes, offset + 8))
                v3 = round(v3, load(bytes, offset + 16))
                v4 = round(v4, load(bytes, offset + 24))
                offset += 32
            }
            return offset
        }

        func merged() -> UInt64 {
            var h = rotl(v1, 1) &+ rotl(v2, 7) &+ rotl(v3, 12) &+ rotl(v4, 18)
            h = merge(h, v1)
            h = merge(h, v2)
            h = merge(h, v3)
            h = merge(h, v4)
            return h
        }
    }

    /// The hash of bytes that arrive in pieces, equal to `hash` of all of them at once: so a
    /// producer can hash each block of a buffer right after writing it, while it is still in
    /// cache, instead of reading the whole buffer again afterwards. Every piece but the last must
    /// be a whole number of 32-byte stripes (64 KB blocks are); the last may have any length.
    public struct Stream: Sendable {
        private var lanes: Lanes
        private let seed: UInt64
        private var total = 0
        /// The last piece's bytes past its last whole stripe (fewer than 32).
        private var tail: [UInt8] = []
        private var closed = false

        /// An empty stream with the given seed (0, the wire's, by default).
        public init(seed: UInt64 = 0) {
            self.seed = seed
            lanes = Lanes(seed: seed)
        }

        /// Adds `count` bytes at `bytes` (no particular alignment needed). Only the last piece
        /// may end inside a stripe.
        public mutating func update(_ bytes: UnsafeRawPointer?, count: Int) {
            precondition(!closed, "XXHash64.Stream: a piece after one whose length is not a multiple of 32 bytes")
            guard let bytes, count > 0 else { return }
            let consumed = lanes.consumeStripes(bytes, count: count)
            total += count
            if consumed < count {
                tail = Array(UnsafeRawBufferPointer(start: bytes + consumed, count: count - consumed))
                closed = true
            }
        }

        /// The hash of all bytes added so far.
        public func digest() -> UInt64 {
            let h = total >= 32 ? lanes.merged() : seed &+ prime5
            return tail.withUnsafeBytes { finish(h, remaining: $0, total: total) }
        }
    }

    /// The hash of a byte buffer.
    public static func hash(_ buffer: UnsafeRawBufferPointer, seed: UInt64 = 0) -> UInt64 {
        hash(buffer.baseAddress, count: buffer.count, seed: seed)
    }

    /// The hash of an array's bytes (for example a Float32 tensor as it is sent).
    public static func hash<T>(array: [T], seed: UInt64 = 0) -> UInt64 {
        array.withUnsafeBytes { hash($0, seed: seed) }
    }

    @inline(__always) private static func load(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }

    @inline(__always) private static func load32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt64 {
        UInt64(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }

    @inline(__always) private static func rotl(_ x: UInt64, _ r: UInt64) -> UInt64 {
        (x << r) | (x >> (64 - r))
    }

    @inline(__always) private static func round(_ acc: UInt64, _ input: UInt64) -> UInt64 {
        rotl(acc &+ input &* prime2, 31) &* prime1
    }

    @inline(__always) private static func merge(_ acc: UInt64, _ value: UInt64) -> UInt64 {
        (acc ^ round(0, value)) &* prime1 &+ prime4
    }

    private static func finish(_ start: UInt64, remaining: UnsafeRawBufferPointer, total: Int) -> UInt64 {
        var h = start &+ UInt64(total)
        var offset = 0
        let count = remaining.count
        if let p = remaining.baseAddress {
            while offset + 8 <= count {
                h ^= round(0, load(p, offset))
                h = rotl(h, 27) &* prime1 &+ prime4
                offset += 8
            }
            if offset + 4 <= count {
                h ^= load32(p, offset) &* prime1
                h = rotl(h, 23) &* prime2 &+ prime3
                offset += 4
            }
            while offset < count {
                h ^= UInt64(p.load(fromByteOffset: offset, as: UInt8.self)) &* prime5
                h = rotl(h, 11) &* prime1
                offset += 1
            }
        }
        h ^= h >> 33
        h = h &* prime2
        h ^= h >> 29
        h = h &* prime3
        h ^= h >> 32
        return h
    }
}
