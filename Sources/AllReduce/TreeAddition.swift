/// The one addition of the fixed reduction tree: value(parent) = value(left) + value(right),
/// element by element, in this order. The engine's threads, workers and the coordinator all add
/// nodes through it, so every strategy and every split of the work rounds the same way.
public enum TreeAddition {
    /// `left[i] += right[i]` for every element: `left` becomes the parent's value.
    public static func add(_ right: UnsafePointer<Float>, into left: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { left[i] += right[i] }
    }

    /// `left[i] = (left[i] + right[i]) / divisor`: the root's addition with the mean's division
    /// in the same pass. Each element is rounded as the sum is, then divided, so the bits equal
    /// `add` followed by `divide`.
    public static func add(_ right: UnsafePointer<Float>, into left: UnsafeMutablePointer<Float>, count: Int, dividingBy divisor: Float) {
        for i in 0..<count { left[i] = (left[i] + right[i]) / divisor }
    }

    /// `output[i] = left[i] + right[i]`: the parent built from two children that lie elsewhere,
    /// in one pass rather than a copy of the left child and an addition into it. `output` may be
    /// `left` (then this is `add(_:into:count:)`, whose loop the compiler vectorises where a
    /// three-pointer loop over overlapping memory would not be).
    public static func add(_ left: UnsafePointer<Float>, _ right: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, count: Int) {
        guard left != UnsafePointer(output) else { return add(right, into: output, count: count) }
        for i in 0..<count { output[i] = left[i] + right[i] }
    }

    /// `output[i] = (left[i] + right[i]) / divisor`: the root's addition and the mean's division
    /// from two children, in one pass; `output` may be `left`.
    public static func add(_ left: UnsafePointer<Float>, _ right: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, count: Int,
                           dividingBy divisor: Float) {
        guard left != UnsafePointer(output) else { return add(right, into: output, count: count, dividingBy: divisor) }
        for i in 0..<count { output[i] = (left[i] + right[i]) / divisor }
    }

    /// `values[i] /= divisor`: a mean whose last node had no right child.
    public static func divide(_ values: UnsafeMutablePointer<Float>, count: Int, by divisor: Float) {
        for i in 0..<count { values[i] /= divisor }
    }

    /// `output[i] = values[i] / divisor`: a mean taken from a node that was received whole.
    public static func divide(_ values: UnsafePointer<Float>, into output: UnsafeMutablePointer<Float>, count: Int, by divisor: Float) {
        for i in 0..<count { output[i] = values[i] / divisor }
    }
}
