extension Conv2D {
    /// Whether the weight gradient of a convolution is computed transposed, as
    /// dW^T [patch, filters] = columns [patch, S P] x dOut^T [S P, filters], rather than as
    /// dW [filters, patch] = dOut [filters, S P] x columns^T [S P, patch]. Both are the same
    /// products; the libraries run one orientation much faster than the other, depending on the
    /// shape. The choice depends on the shape and library only, so every process and thread
    /// computes a layer's gradient the same way.
    ///
    /// OpenBLAS packs the transposed operands faster whenever patch > filters. oneDNN's kernels
    /// lose most of their rate when the result has fewer than 16 columns; when both orientations
    /// have at least 16, the transposed one wins when patch > filters (`cnn bench --threads 1`
    /// shows the layer rates, with `CNN_GEMM=openblas` for OpenBLAS).
    public static func transposesWeightGradient(patch: Int, filters: Int, library: BLAS.Library = BLAS.library) -> Bool {
        switch library {
        case .openBLAS:
            return patch > filters
        case .oneDNN:
            let narrow = 16
            if filters < narrow && patch >= narrow { return false }
            if patch < narrow && filters >= narrow { return true }
            return patch > filters
        }
    }
}

extension UnfoldingConvolution {
    /// dW[g] [K/g, patch] += the transposed sums `totals` [G, patch, K/g] of a backward call (see
    /// `Conv2D.transposesWeightGradient`).
    func addTransposed(_ totals: UnsafePointer<Float>, to weightGradients: UnsafeMutablePointer<Float>) {
        let patch = patchSize, filtersPerGroup = filters / groups
        for g in 0..<groups {
            let group = totals + g * patch * filtersPerGroup
            for k in 0..<filtersPerGroup {
                let row = weightGradients + (g * filtersPerGroup + k) * patch
                for r in 0..<patch { row[r] += group[r * filtersPerGroup + k] }
            }
        }
    }
}
