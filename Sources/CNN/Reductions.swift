/// Sums over runs of floats for the normalisation layers and gradient clipping.
///
/// Each sum keeps sixteen Float partial sums side by side (so the loop vectorises) and adds the
/// lanes and the tail in Double in a fixed order. The order depends only on `count`, never on
/// threads or alignment, so a result is the same on every worker.
enum Reduction {
    private typealias Lanes = SIMD16<Float>
    private static let width = 16

    @inline(__always)
    private static func load(_ pointer: UnsafePointer<Float>, _ index: Int) -> Lanes {
        UnsafeRawPointer(pointer + index).loadUnaligned(as: Lanes.self)
    }

    @inline(__always)
    private static func total(_ lanes: Lanes) -> Double {
        var sum = 0.0
        for lane in 0..<width { sum += Double(lanes[lane]) }
        return sum
    }

    /// sum(x[i]) for i in 0..<count.
    static func sum(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var lanes = Lanes()
        var i = 0
        while i + width <= count {
            lanes += load(x, i)
            i += width
        }
        var sum = total(lanes)
        while i < count {
            sum += Double(x[i])
            i += 1
        }
        return sum
    }

    /// sum((x[i] - mean)^2): the second pass of a two-pass variance, which does not cancel
    /// catastrophically as sum(x^2) - n * mean^2 would.
    static func squaredDeviations(_ x: UnsafePointer<Float>, count: Int, mean: Float) -> Double {
        var lanes = Lanes()
        let centre = Lanes(repeating: mean)
        var i = 0
        while i + width <= count {
            let d = load(x, i) - centre
            lanes += d * d
            i += width
        }
        var sum = total(lanes)
        while i < count {
            let d = Double(x[i]) - Double(mean)
            sum += d * d
            i += 1
        }
        return sum
    }

    /// (sum(a[i]), sum(a[i] * (x[i] - mean))) in one pass, each added as `sum` adds.
    static func sumAndCentredDot(
        _ a: UnsafePointer<Float>, _ x: UnsafePointer<Float>, count: Int, mean: Float
    ) -> (sum: Double, centredDot: Double) {
        var sumLanes = Lanes(), dotLanes = Lanes()
        let centre = Lanes(repeating: mean)
        var i = 0
        while i + width <= count {
            let values = load(a, i)
            sumLanes += values
            dotLanes += values * (load(x, i) - centre)
            i += width
        }
        var sum = total(sumLanes), dot = total(dotLanes)
        while i < count {
            sum += Double(a[i])
            dot += Double(a[i]) * (Double(x[i]) - Double(mean))
            i += 1
        }
        return (sum, dot)
    }

    /// sum(x[i]^2) accumulated entirely in Double (eight lanes), for norms over millions of values
    /// where Float partial sums would lose digits.
    static func sumOfSquaresInDouble(_ x: UnsafePointer<Float>, count: Int) -> Double {
        var lanes = SIMD8<Double>()
        var i = 0
        while i + 8 <= count {
            let v = SIMD8<Double>(UnsafeRawPointer(x + i).loadUnaligned(as: SIMD8<Float>.self))
            lanes += v * v
            i += 8
        }
        var sum = 0.0
        for lane in 0..<8 { sum += lanes[lane] }
        while i < count {
            let v = Double(x[i])
            sum += v * v
            i += 1
        }
        return sum
    }
}
