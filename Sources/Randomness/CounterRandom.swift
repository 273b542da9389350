/// Counter-based randomness: every random number is a pure function of a key, never of hidden
/// generator state. This is what lets any worker compute any micro-batch and get the same bits, and
/// why nothing random needs to be checkpointed (see DESIGN.md, "Step semantics").
///
/// A key is the run's seed, a `RandomPurpose`, and up to four counters (for example epoch, step,
/// sample index and layer). Mixing uses the SplitMix64 finaliser, whose avalanche behaviour is well
/// studied; it is not cryptographic and need not be.
public enum RandomPurpose: UInt64, Sendable {
    case dataOrder = 1
    case initialisation = 2
    case dropout = 3
    case augmentation = 4
    case synthetic = 5
}

public enum CounterRandom {
    /// SplitMix64's output function: a bijection on 64-bit words with full avalanche.
    @inline(__always)
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// 64 random bits for the key (seed, purpose, a, b, c, d).
    @inline(__always)
    public static func bits(
        seed: UInt64, purpose: RandomPurpose,
        _ a: UInt64 = 0, _ b: UInt64 = 0, _ c: UInt64 = 0, _ d: UInt64 = 0
    ) -> UInt64 {
        Stream(seed: seed, purpose: purpose, a, b, c).bits(d)
    }

    /// A uniform double in [0, 1) with 53 random bits.
    @inline(__always)
    public static func uniform(
        seed: UInt64, purpose: RandomPurpose,
        _ a: UInt64 = 0, _ b: UInt64 = 0, _ c: UInt64 = 0, _ d: UInt64 = 0
    ) -> Double {
        Stream(seed: seed, purpose: purpose, a, b, c).uniform(d)
    }

    /// A standard normal sample (Box-Muller on two uniforms drawn from neighbouring counters).
    public static func normal(
        seed: UInt64, purpose: RandomPurpose,
        _ a: UInt64 = 0, _ b: UInt64 = 0, _ c: UInt64 = 0, _ index: UInt64 = 0
    ) -> Double {
        Stream(seed: seed, purpose: purpose, a, b, c).normal(index)
    }

    /// The key (seed, purpose, a, b, c) mixed once, for drawing many values whose keys differ only
    /// in the last counter: the very values of `bits`, `uniform` and `normal` with those keys, at
    /// one mix a value instead of five (filling a large tensor is mostly this hashing otherwise).
    public struct Stream: Sendable {
        private let prefix: UInt64

        @inline(__always)
        public init(seed: UInt64, purpose: RandomPurpose, _ a: UInt64 = 0, _ b: UInt64 = 0, _ c: UInt64 = 0) {
            var h = mix(seed ^ (purpose.rawValue &* 0xD6E8_FEB8_6659_FD93))
            h = mix(h ^ a)
            h = mix(h ^ b)
            prefix = mix(h ^ c)
        }

        /// 64 random bits for the key (seed, purpose, a, b, c, d).
        @inline(__always)
        public func bits(_ d: UInt64) -> UInt64 { mix(prefix ^ d) }

        /// A uniform double in [0, 1) with 53 random bits, for counter `d`.
        @inline(__always)
        public func uniform(_ d: UInt64) -> Double { Double(bits(d) >> 11) * 0x1p-53 }

        /// A standard normal sample for `index` (its uniforms at counters 2 index and 2 index + 1).
        @inline(__always)
        public func normal(_ index: UInt64) -> Double {
            // 1 - u keeps the logarithm's argument in (0, 1].
            let u1 = 1 - uniform(index &* 2)
            let u2 = uniform(index &* 2 &+ 1)
            return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
        }
    }

    /// A permutation of 0..<count drawn by Fisher-Yates, each swap keyed by its position, so the
    /// same (seed, purpose, a, b) always gives the same order.
    public static func permutation(
        count: Int, seed: UInt64, purpose: RandomPurpose, _ a: UInt64 = 0, _ b: UInt64 = 0
    ) -> [Int] {
        var order = Array(0..<count)
        guard count > 1 else { return order }
        for i in stride(from: count - 1, to: 0, by: -1) {
            let r = bits(seed: seed, purpose: purpose, a, b, UInt64(i))
            // Multiply-shift maps 64 random bits onto 0...i with negligible bias for i < 2^32.
            let j = Int((UInt128(r) &* UInt128(i + 1)) >> 64)
            order.swapAt(i, j)
        }
        return order
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
