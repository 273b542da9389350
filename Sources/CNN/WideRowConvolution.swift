// Legend: n sample, c input channel, k output channel (filter), (i, j) kernel tap, d dilation,
// Wp = W + 2P the padded width, wide = OH * Wp columns of one sample's unfolded matrix.

/// Convolution through im2col and GEMM on wide rows: output rows as wide as the padded input,
/// so that every tap's row of the unfolded matrix is one contiguous run of the padded plane.
/// Chosen instead of `Im2colConvolution` by `Conv2D.usesWideRows`.
///
/// At stride 1, output position (oh, ow) sees padded input (oh + i d, ow + j d) through tap
/// (i, j). Computing OH rows of Wp columns instead of OW makes tap (i, j)'s row of the matrix
/// the run of OH * Wp floats starting at (i d, j d): im2col becomes one block copy per tap, and
/// col2im one long vector add per tap, instead of OH short row copies each. The (kw - 1) d extra
/// columns per row cost as many extra GEMM columns and are dropped from the output; their
/// gradient is set to zero, so they add exactly nothing backward. Worth it for wide planes
/// (ResNet's 32x32 layers: 6% more arithmetic for a third less unfolding), where one sample
/// fills a cache block, so the GEMM runs per sample.
final class WideRowConvolution: UnfoldingConvolution {
    let geometry: ConvolutionGeometry
    var workspace: LayerWorkspace

    private let biasScratch = FloatBuffer()     // [K]: the bias gradient of one backward pass
    private let paddedInput = FloatBuffer()     // [H + 2P, W + 2P] and slack: one input channel inside a zero border
    private let paddedGradient = FloatBuffer()  // the same shape: one channel's input gradient, border included

    /// The arithmetic of the GEMMs: bf16 rounds their operands (`BLAS.gemm(precision:)`).
    let precision: Precision

    init(geometry: ConvolutionGeometry, workspace: LayerWorkspace, precision: Precision = .fp32) {
        self.geometry = geometry
        self.workspace = workspace
        self.precision = precision
    }

    /// Nothing beyond the layer's input and output: each sample is unfolded again in backward.
    var keptFloatsPerSample: Int { 0 }

    /// Wide rows of one sample: OH * Wp.
    private var widePlane: Int { outputShape.height * (inputShape.width + 2 * padding) }

    func forward(
        _ input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        into out: UnsafeMutablePointer<Float>
    ) {
        let patch = patchSize, wide = widePlane
        let outWidth = outputShape.width, outHeight = outputShape.height, plane = outputPlane
        let paddedWidth = inputShape.width + 2 * padding
        let cols = workspace.unfoldedInput.reserve(patch * wide)
        let result = workspace.blockProducts.reserve(filters * wide)
        // In bf16 the weights are rounded once for every sample.
        let roundedWeights = workspace.bfloat16Operands.rounded(weights, count: filters * patch, into: \.weights, precision: precision)
        for n in 0..<batch {
            unfoldWide(input + n * inputShape.count, into: cols)
            // result [K, OH * Wp] = W [K, patch] x cols [patch, OH * Wp]
            BLAS.gemm(
                precision: precision, operands: workspace.bfloat16Operands,
                transposeA: false, transposeB: false, m: filters, n: wide, k: patch,
                a: weights, lda: patch, roundedA: roundedWeights, b: cols, ldb: wide, beta: 0, c: result, ldc: wide)
            // Drop the extra columns of each row, adding the bias on the way.
            let sample = out + n * outputShape.count
            for k in 0..<filters {
                let addend = bias?[k] ?? 0
                for oh in 0..<outHeight {
                    VectorKernels.copy(
                        result + k * wide + oh * paddedWidth, to: sample + k * plane + oh * outWidth, count: outWidth, adding: addend)
                }
            }
        }
    }

    func backward(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>,
        weightGradients: UnsafeMutablePointer<Float>, biasGradients: UnsafeMutablePointer<Float>?,
        inputGradient dInput: UnsafeMutablePointer<Float>?
    ) {
        let patch = patchSize, wide = widePlane, inputCount = inputShape.count
        let outWidth = outputShape.width, outHeight = outputShape.height, plane = outputPlane
        let paddedWidth = inputShape.width + 2 * padding
        let cols = workspace.unfoldedInput.reserve(patch * wide)
        let gradient = workspace.blockProducts.reserve(filters * wide)   // [K, OH * Wp]
        let weightTotals = Conv2D.transposesWeightGradient(patch: patch, filters: filters)
            ? workspace.weightGradientTotals.reserve(filters * patch) : nil
        let biasTotals = biasGradients == nil ? nil : biasScratch.reserve(filters)
        biasTotals?.update(repeating: 0, count: filters)
        let operands = workspace.bfloat16Operands
        let roundedWeights = dInput == nil ? nil : operands.rounded(weights, count: filters * patch, into: \.weights, precision: precision)
        for n in 0..<batch {
            let dy = outputGradient + n * outputShape.count
            // The gradient on wide rows: zero in the extra columns, which then contribute nothing.
            for k in 0..<filters {
                if let biasTotals { biasTotals[k] += VectorKernels.sum(dy + k * plane, count: plane) }
                for oh in 0..<outHeight {
                    let row = gradient + k * wide + oh * paddedWidth
                    VectorKernels.copy(dy + k * plane + oh * outWidth, to: row, count: outWidth)
                    for extra in outWidth..<paddedWidth { row[extra] = 0 }
                }
            }
            unfoldWide(input + n * inputCount, into: cols)
            // In bf16 the sample's output gradient is rounded once for both products.
            let roundedGradient = operands.rounded(gradient, count: filters * wide, into: \.gradient, precision: precision)
            if let weightTotals {
                // dW^T [patch, K] (+)= cols [patch, OH * Wp] x dOut^T [OH * Wp, K]
                BLAS.gemm(
                    precision: precision, operands: workspace.bfloat16Operands,
                    transposeA: false, transposeB: true, m: patch, n: filters, k: wide,
                    a: cols, lda: wide, b: gradient, ldb: wide, roundedB: roundedGradient, beta: n == 0 ? 0 : 1, c: weightTotals, ldc: filters)
            } else {
                // dW [K, patch] += dOut [K, OH * Wp] x cols^T [OH * Wp, patch]
                BLAS.gemm(
                    precision: precision, operands: workspace.bfloat16Operands,
                    transposeA: false, transposeB: true, m: filters, n: patch, k: wide,
                    a: gradient, lda: wide, roundedA: roundedGradient, b: cols, ldb: wide, beta: 1, c: weightGradients, ldc: patch)
            }
            if let dInput {
                // dCols [patch, OH * Wp] = W^T [patch, K] x dOut [K, OH * Wp]
                BLAS.gemm(
                    precision: precision, operands: workspace.bfloat16Operands,
                    transposeA: true, transposeB: false, m: patch, n: wide, k: filters,
                    a: weights, lda: patch, roundedA: roundedWeights, b: gradient, ldb: wide, roundedB: roundedGradient, beta: 0, c: cols, ldc: wide)
                foldWide(cols, into: dInput + n * inputCount)
            }
        }
        if let weightTotals, batch > 0 { addTransposed(weightTotals, to: weightGradients) }
        if let biasGradients, let biasTotals {
            for k in 0..<filters { biasGradients[k] += biasTotals[k] }
        }
    }

    /// Floats read past the padded plane by the last tap's run: (kw - 1) d, plus slack.
    private var wideSlack: Int { (kernelWidth - 1) * dilation + 16 }

    /// One sample [C, H, W] -> [patch, OH * Wp]: row (c, i, j) is the padded plane of channel c
    /// from (i d, j d) on. The run of the last taps reaches past the plane into its slack, which
    /// only the dropped extra columns see.
    private func unfoldWide(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let paddedWidth = width + 2 * padding, wide = widePlane
        let padded = paddedInput.reserve((height + 2 * padding) * paddedWidth + wideSlack)
        var row = columns
        for c in 0..<inputShape.channels {
            // Only the interior is ever written, so the border and slack stay as allocated: zero.
            VectorKernels.copyRows(
                image + c * height * width, sourceStride: width, to: padded + padding * paddedWidth + padding,
                destinationStride: paddedWidth, rows: height, count: width)
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    row.update(from: padded + (i * paddedWidth + j) * dilation, count: wide)
                    row += wide
                }
            }
        }
    }

    /// The adjoint of `unfoldWide`: adds each tap's run onto a zeroed padded plane, in tap order,
    /// and keeps the interior.
    private func foldWide(_ columns: UnsafePointer<Float>, into image: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let paddedWidth = width + 2 * padding, wide = widePlane
        let paddedCount = (height + 2 * padding) * paddedWidth + wideSlack
        let padded = paddedGradient.reserve(paddedCount)
        var row = columns
        for c in 0..<inputShape.channels {
            VectorKernels.zero(padded, count: paddedCount)
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    BLAS.axpy(count: wide, x: row, y: padded + (i * paddedWidth + j) * dilation)
                    row += wide
                }
            }
            VectorKernels.copyRows(
                padded + padding * paddedWidth + padding, sourceStride: paddedWidth, to: image + c * height * width,
                destinationStride: width, rows: height, count: width)
        }
    }
}
