extension Conv2D {
    /// Whether the weight gradient of a convolution is computed transposed, as
    /// dW^T [patch, filters] = columns [patch, S P] x dOut^T [S P, filters], rather than as
    /// dW [filters, patch] = dOut [filters, S P] x columns^T [S P, patch]. Both are the same
    /// products; the libraries run one orientation much faster than the other, depending on the
    /// shape. The choice depends on the shape and library only, so every process and thread
    /// computes a layer's gradient the same way.
    ///
    /// OpenBLAS packs the transposed operands faster whenever patch > filters (a tenth of the
    /// backward pass of ResNet's 16-filter layers). oneDNN's kernels lose most of their rate when
    /// the result has fewer than 16 columns; when both orientations have at least 16, the
    /// transposed one wins when patch > filters. Measured on one core with oneDNN (GFLOP/s plain /
    /// transposed): 56 / 98 at 32 filters and patch 9 (Fashion-MNIST's first layer), 117 / 35 at
    /// 6 and 25 (LeNet-5's), 83 / 28 at 32 and 16, 84 / 45 at 64 and 32, 28 / 67 at 16 and 27,
    /// 64 / 101 at 16 and 144, 109-182 / 158-206 from 32 and 288 to 384 and 2304.
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
