/// Gradient clipping by global norm (Pascanu et al. 2013), as PyTorch's `clip_grad_norm_`.
///
/// The sum of squares is taken per block of `normBlock` elements at fixed offsets of the whole
/// vector, and the block sums are added in order. A process that holds only some whole blocks (the
/// owner of a slice under the sharded reduction) computes exactly the block sums the whole-vector
/// computation does, so the norm has the same bits however the vector was cut among owners.
public enum GradientClipping {
    /// Elements per block of the norm's sum. Slices of a sharded reduction start at multiples of it.
    public static let normBlock = 1 << 16

    /// The L2 norm of `count` values, summed in Double in a fixed order that depends only on
    /// `count`, so every process computes the same bits.
    public static func globalNorm(_ gradient: UnsafePointer<Float>, count: Int) -> Double {
        norm(blockSums: blockSumsOfSquares(gradient, offset: 0, count: count))
    }

    /// The sums of squares of the blocks that `values` covers: `values` is the part of the whole
    /// vector that starts at element `offset` (a multiple of `normBlock`) and holds `count`
    /// elements, which end at a block boundary or at the end of the whole vector.
    public static func blockSumsOfSquares(_ values: UnsafePointer<Float>, offset: Int, count: Int) -> [Double] {
        precondition(offset % normBlock == 0, "a norm block starts at a multiple of \(normBlock), not at \(offset)")
        return stride(from: 0, to: count, by: normBlock).map { start in
            Reduction.sumOfSquaresInDouble(values + start, count: min(normBlock, count - start))
        }
    }

    /// The norm from every block's sum of squares, in block order.
    public static func norm(blockSums: [Double]) -> Double {
        blockSums.reduce(0, +).squareRoot()
    }

    /// PyTorch's scale maxNorm / (norm + 1e-6) for a gradient whose norm exceeds `maxNorm`; nil
    /// when it does not, and for a non-finite norm (an overflowed or NaN gradient), which no scale
    /// can repair: the caller should skip that step.
    public static func coefficient(norm: Double, maxNorm: Float) -> Float? {
        guard norm.isFinite, norm > Double(maxNorm) else { return nil }
        return Float(Double(maxNorm) / (norm + 1e-6))
    }

    /// Scales the whole gradient by `coefficient(norm:maxNorm:)` where there is one, and returns the
    /// norm before clipping.
    @discardableResult
    public static func clipGlobalNorm(_ gradient: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float) -> Float {
        let norm = globalNorm(gradient, count: count)
        if let coefficient = coefficient(norm: norm, maxNorm: maxNorm) {
            scale(gradient, count: count, by: coefficient)
        }
        return Float(norm)
    }

    /// Multiplies each element by `coefficient`: the clipping of any part of the vector, alone.
    public static func scale(_ gradient: UnsafeMutablePointer<Float>, count: Int, by coefficient: Float) {
        for i in 0..<count { gradient[i] *= coefficient }
    }
}
