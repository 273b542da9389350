import Randomness

/// Deterministic test data: every array is a pure function of (seed, stream), drawn with
/// `CounterRandom`, so a failing test fails the same way on every machine and every run.
public enum TestArrays {
    /// `count` samples of N(0, scale^2).
    public static func normal(count: Int, seed: UInt64, stream: UInt64 = 0, scale: Float = 1) -> [Float] {
        (0..<count).map { e in
            Float(CounterRandom.normal(seed: seed, purpose: .synthetic, stream, 0, 0, UInt64(e))) * scale
        }
    }

    /// `count` samples uniform in [lower, upper).
    public static func uniform(count: Int, seed: UInt64, stream: UInt64 = 0, lower: Float = -1, upper: Float = 1) -> [Float] {
        (0..<count).map { e in
            let u = CounterRandom.uniform(seed: seed, purpose: .synthetic, stream, 1, 0, UInt64(e))
            return lower + Float(u) * (upper - lower)
        }
    }

    /// `count` values in random order, all different and at least `spacing` apart, none within
    /// `spacing / 2` of zero: inputs with no ties for max pooling and no kinks for ReLU, so a
    /// finite-difference step smaller than `spacing / 2` never crosses a non-differentiable point.
    public static func distinct(count: Int, seed: UInt64, stream: UInt64 = 0, spacing: Float = 0.1) -> [Float] {
        let order = CounterRandom.permutation(count: count, seed: seed, purpose: .synthetic, stream, 2)
        // Values (k - floor(count/2) + 0.5) * spacing for k = 0..<count: about half negative, none zero.
        return order.map { k in (Float(k - count / 2) + 0.5) * spacing }
    }

    /// `count` labels in 0..<classes.
    public static func labels(count: Int, classes: Int, seed: UInt64, stream: UInt64 = 0) -> [Int32] {
        (0..<count).map { e in
            let bits = CounterRandom.bits(seed: seed, purpose: .synthetic, stream, 3, 0, UInt64(e))
            return Int32(bits % UInt64(classes))
        }
    }

    /// One whole number drawn uniformly from `range`: the dimensions of randomised test cases.
    public static func integer(in range: ClosedRange<Int>, seed: UInt64, stream: UInt64) -> Int {
        let u = CounterRandom.uniform(seed: seed, purpose: .synthetic, stream, 4, 0, 0)
        return range.lowerBound + min(Int(u * Double(range.count)), range.count - 1)
    }

    /// 0, 1, 2, ... as floats: the input of hand-computed golden values.
    public static func arange(_ count: Int) -> [Float] {
        (0..<count).map(Float.init)
    }
}
