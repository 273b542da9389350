import COneDNN

/// bfloat16: the top 16 bits of a Float32 (sign, the same 8 exponent bits, 7 fraction bits),
/// kept here as those bits in a `UInt16`. Products in bf16 mode round their operands to it.
///
/// The rounding is round-to-nearest-even on the bit pattern, a pure function of the Float32, so
/// a value rounds the same wherever and whenever it is rounded: results cannot depend on threads
/// or on which worker rounded them. NaN stays NaN (made quiet, sign kept, so that no payload
/// rounds into infinity); infinities stay infinite; finite values too large for bf16 round to
/// infinity as IEEE rounding says; subnormals round like any other bit pattern (bf16 has
/// Float32's exponent range, so they stay subnormal or become zero or the least normal).
public enum BFloat16 {
    /// The bits of `value` rounded to bf16, to nearest, ties to even.
    @inline(__always)
    public static func round(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if bits & 0x7FFF_FFFF > 0x7F80_0000 { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        // Adding 0x7FFF rounds up exactly when the dropped half is above a half; the kept
        // part's lowest bit adds the last 1 for a tie, so that a tie goes to the even neighbour.
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
    }

    /// The Float32 a bf16 value stands for (exact: every bf16 value is a Float32).
    @inline(__always)
    public static func float(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// `value` rounded to bf16 and back: the Float32 the bf16 products compute with.
    @inline(__always)
    public static func rounded(_ value: Float) -> Float { float(round(value)) }

    /// Whether `round(_:into:count:)` rounds sixteen values at a time with AVX-512F.
    static let hasVectorRounding: Bool = {
        #if arch(x86_64)
        return cnn_has_avx512f() != 0
        #else
        return false
        #endif
    }()

    /// destination[i] = round(source[i]) for `count` values: sixteen at a time with AVX-512F
    /// where the CPU has it (every CPU with bf16 products does), the rest one by one. Both give
    /// the same bits (the same integer arithmetic).
    public static func round(_ source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<UInt16>, count: Int) {
        var i = 0
        #if arch(x86_64)
        if hasVectorRounding {
            cnn_round_to_bf16_avx512(source, destination, count)
            i = count - count % 16
        }
        #endif
        while i < count {
            destination[i] = round(source[i])
            i += 1
        }
    }

    /// Rounds a `rows` x `columns` matrix whose rows lie `stride` floats apart into a packed one
    /// (rows `columns` apart): one call when the rows are contiguous.
    static func round(
        _ source: UnsafePointer<Float>, rows: Int, columns: Int, stride: Int, into destination: UnsafeMutablePointer<UInt16>
    ) {
        if stride == columns {
            round(source, into: destination, count: rows * columns)
            return
        }
        for row in 0..<rows { round(source + row * stride, into: destination + row * columns, count: columns) }
    }
}

/// A growable buffer of bf16 values (their bits) at a stable, 64-byte aligned address: the
/// rounded operands of bf16 products. The `UInt16` twin of `FloatBuffer`.
public final class BFloat16Buffer: @unchecked Sendable {
    // Sendable for FloatBuffer's reason: a replica, buffers included, is used by one thread at a time.
    public private(set) var pointer: UnsafeMutablePointer<UInt16>
    public private(set) var capacity: Int

    public init(count: Int = 0) {
        capacity = max(count, 32)
        pointer = ZeroedMemory.allocate(bytes: capacity * 2).bindMemory(to: UInt16.self, capacity: capacity)
    }

    deinit { ZeroedMemory.free(pointer, bytes: capacity * 2) }

    /// Makes room for `count` values; contents are not kept when it grows.
    @discardableResult
    public func reserve(_ count: Int) -> UnsafeMutablePointer<UInt16> {
        if count > capacity {
            ZeroedMemory.free(pointer, bytes: capacity * 2)
            capacity = count
            pointer = ZeroedMemory.allocate(bytes: count * 2).bindMemory(to: UInt16.self, capacity: count)
        }
        return pointer
    }
}
