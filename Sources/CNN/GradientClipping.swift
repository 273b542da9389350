/// Gradient clipping by global norm (Pascanu et al. 2013), as PyTorch's `clip_grad_norm_`.
public enum GradientClipping {
    /// The L2 norm of `count` values, summed in Double in a fixed order that depends only on
    /// `count`, so every process computes the same bits.
    public static func globalNorm(_ gradient: UnsafePointer<Float>, count: Int) -> Double {
        Reduction.sumOfSquaresInDouble(gradient, count: count).squareRoot()
    }

    /// Scales the whole gradient by maxNorm / (norm + 1e-6) when its norm exceeds `maxNorm`
    /// (PyTorch's coefficient), and returns the norm before clipping.
    ///
    /// A non-finite norm (an overflowed or NaN gradient) is returned without touching the gradient,
    /// since no scale can repair it: the caller should skip that step.
    @discardableResult
    public static func clipGlobalNorm(_ gradient: UnsafeMutablePointer<Float>, count: Int, maxNorm: Float) -> Float {
        let norm = globalNorm(gradient, count: count)
        guard norm.isFinite, norm > Double(maxNorm) else { return Float(norm) }
        let coefficient = Float(Double(maxNorm) / (norm + 1e-6))
        for i in 0..<count { gradient[i] *= coefficient }
        return Float(norm)
    }
}
