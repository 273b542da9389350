// Legend: n sample, c input channel, k output channel (filter), g group, (h, w) input position,
// (oh, ow) output position, (i, j) kernel tap, p = oh * OW + ow, P = OH * OW positions per plane,
// wide = S * P columns of a block's im2col matrix.

/// Convolution through im2col and GEMM, a block of samples at a time: every configuration.
///
/// Why blocks: the im2col matrix of a small layer is many times its input (9x for a 3x3 kernel),
/// and writing all of it to memory, reading it back for the GEMM and again for backward cost as
/// much as the arithmetic. So the batch is cut into blocks of samples whose im2col matrix fits in
/// the core's cache (`blockBytes`); each block is unfolded and multiplied while it is still there,
/// and backward unfolds it again instead of keeping it. One GEMM per block, whose N dimension is
/// samples x OH x OW, keeps small layers (6 or 16 filters on 10x10 planes) in the efficient range
/// of the GEMM kernel, where one call per sample spent most of its time packing and calling. The
/// price is a reordering between the GEMM's [K, samples*P] layout and NCHW, which also adds the
/// bias.
final class Im2colConvolution: UnfoldingConvolution {
    let geometry: ConvolutionGeometry
    var workspace: LayerWorkspace

    // Every block's im2col matrix when `keepsColumns`: it lives from forward to backward, so it
    // cannot be in the workspace.
    private let keptColumns = FloatBuffer()
    /// [G * patch, S * P]: one block's im2col matrix, then its column gradient (all blocks' when
    /// `keepsColumns`).
    private var columns: FloatBuffer { keepsColumns ? keptColumns : workspace.unfoldedInput }
    /// [K, S * P]: one block's GEMM result, then its output gradient.
    private var product: FloatBuffer { workspace.blockProducts }
    private let biasScratch = FloatBuffer()     // [K]: the bias gradient of one backward pass
    private let paddedInput = FloatBuffer()     // [H + 2P, W + 2P]: one input channel inside a zero border
    private let paddedGradient = FloatBuffer()  // [H + 2P, W + 2P]: one channel's input gradient, border included

    /// The arithmetic of the GEMMs: bf16 rounds their operands (`BLAS.gemm(precision:)`).
    let precision: Precision

    init(geometry: ConvolutionGeometry, workspace: LayerWorkspace, precision: Precision = .fp32) {
        self.geometry = geometry
        self.workspace = workspace
        self.precision = precision
    }

    var keptFloatsPerSample: Int { keepsColumns ? groups * patchSize * outputPlane : 0 }

    /// Whether forward keeps every block's im2col matrix for backward instead of unfolding the
    /// input again: for small matrices (the first layers of small CNNs), where memory is cheap and
    /// the unfolding is a large part of the work.
    private var keepsColumns: Bool {
        groups * patchSize * outputPlane * MemoryLayout<Float>.stride <= Im2colConvolution.keptColumnBytesPerSample
    }

    /// Largest im2col matrix per sample that `keepsColumns` keeps.
    static let keptColumnBytesPerSample = 128 << 10

    /// Bytes of a block's im2col matrix and GEMM result together: a quarter of this machine's
    /// 2 MiB per-core cache, leaving room for the GEMM's packed panels and for the kept matrices
    /// streaming past (`cnn bench --model lenet5 --model fashion-mnist --threads 1` shows the layer rates).
    static let blockBytes = 1 << 19

    /// Samples per block: as many as fit `blockBytes`, at least one.
    private func samplesPerBlock(batch: Int) -> Int {
        let perSample = (groups * patchSize + filters) * outputPlane * MemoryLayout<Float>.stride
        return max(1, min(batch, Im2colConvolution.blockBytes / max(perSample, 1)))
    }

    func forward(
        _ input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
        into out: UnsafeMutablePointer<Float>
    ) {
        let plane = outputPlane, patch = patchSize, filtersPerGroup = filters / groups
        let inputCount = inputShape.count, outputCount = outputShape.count
        let block = samplesPerBlock(batch: batch)
        // Kept matrices lie block after block: block b starts at its first sample's offset.
        let keep = keepsColumns
        let allColumns = columns.reserve(groups * patch * (keep ? batch : block) * plane)
        let result = block > 1 ? product.reserve(filters * block * plane) : out
        // In bf16 the weights are rounded once for every block and group.
        let roundedWeights = workspace.bfloat16Operands.rounded(weights, count: filters * patch, into: \.weights, precision: precision)
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), wide = samples * plane
            let cols = keep ? allColumns + groups * patch * first * plane : allColumns
            for n in 0..<samples {
                im2col(input + (first + n) * inputCount, into: cols + n * plane, rowStride: wide)
            }
            // With one sample, [K, P] already is NCHW: the GEMM writes the output in place.
            let target = samples == 1 ? out + first * outputCount : result
            for g in 0..<groups {
                // target[g] [K/g, S*P] = W[g] [K/g, patch] x cols[g] [patch, S*P]
                BLAS.gemm(
                    precision: precision, operands: workspace.bfloat16Operands,
                    transposeA: false, transposeB: false, m: filtersPerGroup, n: wide, k: patch,
                    a: weights + g * filtersPerGroup * patch, lda: patch, roundedA: roundedWeights.map { $0 + g * filtersPerGroup * patch },
                    b: cols + g * patch * wide, ldb: wide,
                    beta: 0, c: target + g * filtersPerGroup * wide, ldc: wide)
            }
            if samples == 1 {
                if let bias {
                    for k in 0..<filters { VectorKernels.add(bias[k], to: target + k * plane, count: plane) }
                }
            } else {
                // [K, S*P] -> [S, K, P], adding the bias on the way.
                for n in 0..<samples {
                    let sample = out + (first + n) * outputCount
                    for k in 0..<filters {
                        VectorKernels.copy(result + k * wide + n * plane, to: sample + k * plane, count: plane, adding: bias?[k] ?? 0)
                    }
                }
            }
            first += samples
        }
    }

    func backward(
        _ outputGradient: UnsafePointer<Float>, input: UnsafePointer<Float>, batch: Int, weights: UnsafePointer<Float>,
        weightGradients: UnsafeMutablePointer<Float>, biasGradients: UnsafeMutablePointer<Float>?,
        inputGradient dInput: UnsafeMutablePointer<Float>?
    ) {
        let plane = outputPlane, patch = patchSize, filtersPerGroup = filters / groups
        let inputCount = inputShape.count, outputCount = outputShape.count
        // Bias gradient: per filter, the plane sums of samples 0, 1, ... added in that order.
        let biasTotals = biasGradients == nil ? nil : biasScratch.reserve(filters)
        biasTotals?.update(repeating: 0, count: filters)
        // dW may be computed transposed (whichever orientation the GEMM library runs faster),
        // and the sum is then added into dW once, after the last block.
        let weightTotals = Conv2D.transposesWeightGradient(patch: patch, filters: filtersPerGroup)
            ? workspace.weightGradientTotals.reserve(filters * patch) : nil
        let block = samplesPerBlock(batch: batch)
        let keep = keepsColumns
        let allColumns = columns.reserve(groups * patch * (keep ? batch : block) * plane)
        let gathered = block > 1 ? product.reserve(filters * block * plane) : nil
        let operands = workspace.bfloat16Operands
        let roundedWeights = dInput == nil ? nil : operands.rounded(weights, count: filters * patch, into: \.weights, precision: precision)
        var first = 0
        while first < batch {
            let samples = min(block, batch - first), wide = samples * plane
            let cols = keep ? allColumns + groups * patch * first * plane : allColumns
            // The block's output gradient as [K, S*P], the layout of the forward GEMM's result.
            let gradient: UnsafePointer<Float>
            if samples == 1 {
                gradient = outputGradient + first * outputCount
                if let biasTotals {
                    for k in 0..<filters { biasTotals[k] += VectorKernels.sum(gradient + k * plane, count: plane) }
                }
            } else {
                let destination = gathered!
                for n in 0..<samples {
                    let sample = outputGradient + (first + n) * outputCount
                    for k in 0..<filters {
                        let total = VectorKernels.copySum(sample + k * plane, to: destination + k * wide + n * plane, count: plane)
                        biasTotals?[k] += total
                    }
                }
                gradient = UnsafePointer(destination)
            }
            if !keep {
                for n in 0..<samples {
                    im2col(input + (first + n) * inputCount, into: cols + n * plane, rowStride: wide)
                }
            }
            // In bf16 the block's output gradient is rounded once for both products.
            let roundedGradient = operands.rounded(gradient, count: filters * wide, into: \.gradient, precision: precision)
            for g in 0..<groups {
                if let weightTotals {
                    // dW[g]^T [patch, K/g] (+)= cols[g] [patch, S*P] x dOut[g]^T [S*P, K/g]
                    BLAS.gemm(
                        precision: precision, operands: workspace.bfloat16Operands,
                        transposeA: false, transposeB: true, m: patch, n: filtersPerGroup, k: wide,
                        a: cols + g * patch * wide, lda: wide,
                        b: gradient + g * filtersPerGroup * wide, ldb: wide, roundedB: roundedGradient.map { $0 + g * filtersPerGroup * wide },
                        beta: first == 0 ? 0 : 1, c: weightTotals + g * patch * filtersPerGroup, ldc: filtersPerGroup)
                } else {
                    // dW[g] [K/g, patch] += dOut[g] [K/g, S*P] x cols[g]^T [S*P, patch]
                    BLAS.gemm(
                        precision: precision, operands: workspace.bfloat16Operands,
                        transposeA: false, transposeB: true, m: filtersPerGroup, n: patch, k: wide,
                        a: gradient + g * filtersPerGroup * wide, lda: wide, roundedA: roundedGradient.map { $0 + g * filtersPerGroup * wide },
                        b: cols + g * patch * wide, ldb: wide,
                        beta: 1, c: weightGradients + g * filtersPerGroup * patch, ldc: patch)
                }
            }
            if let dInput {
                // The block's im2col matrix has served: it becomes the column gradient.
                for g in 0..<groups {
                    // dCols[g] [patch, S*P] = W[g]^T [patch, K/g] x dOut[g] [K/g, S*P]
                    BLAS.gemm(
                        precision: precision, operands: workspace.bfloat16Operands,
                        transposeA: true, transposeB: false, m: patch, n: wide, k: filtersPerGroup,
                        a: weights + g * filtersPerGroup * patch, lda: patch, roundedA: roundedWeights.map { $0 + g * filtersPerGroup * patch },
                        b: gradient + g * filtersPerGroup * wide, ldb: wide, roundedB: roundedGradient.map { $0 + g * filtersPerGroup * wide },
                        beta: 0, c: cols + g * patch * wide, ldc: wide)
                }
                for n in 0..<samples {
                    col2im(cols + n * plane, rowStride: wide, into: dInput + (first + n) * inputCount)
                }
            }
            first += samples
        }
        // The first block wrote the totals (beta 0); with no samples there are none to add.
        if let weightTotals, batch > 0 { addTransposed(weightTotals, to: weightGradients) }
        if let biasGradients, let biasTotals {
            for k in 0..<filters { biasGradients[k] += biasTotals[k] }
        }
    }


    /// Unfolds one sample [C, H, W] into its P columns of the block's matrix: row (c, i, j) of
    /// `columns` (rows `rowStride` apart) gets, at position p, the input value output position p
    /// sees through tap (i, j) of channel c, zero where it falls in padding.
    ///
    /// Each channel is first copied into a zero-bordered plane, so every tap row is a plain
    /// (strided) copy with no bounds to check: at stride 1 a row of OW floats is a vector copy.
    /// Only that plane's interior is ever written, so its border stays as allocated: zero.
    private func im2col(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>, rowStride: Int) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        let paddedWidth = width + 2 * padding
        // Sixteen floats of slack after the plane for the vector gather at stride 2.
        let padded = paddedInput.reserve((height + 2 * padding) * paddedWidth + 16)
        var row = columns
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            let source: UnsafePointer<Float>
            if padding == 0 {
                source = plane
            } else {
                VectorKernels.copyRows(
                    plane, sourceStride: width, to: padded + padding * paddedWidth + padding, destinationStride: paddedWidth,
                    rows: height, count: width)
                source = UnsafePointer(padded)
            }
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    let tap = source + i * dilation * paddedWidth + j * dilation
                    if stride == 1 {
                        VectorKernels.copyRows(
                            tap, sourceStride: paddedWidth, to: row, destinationStride: outWidth, rows: outHeight, count: outWidth)
                    } else if stride == 2 && padding > 0 && outWidth >= 8 {
                        // Reads up to one float past a row's last tap: inside the padded plane's slack.
                        for oh in 0..<outHeight {
                            VectorKernels.copyEven(tap + oh * 2 * paddedWidth, to: row + oh * outWidth, count: outWidth)
                        }
                    } else {
                        for oh in 0..<outHeight {
                            let from = tap + oh * stride * paddedWidth
                            let to = row + oh * outWidth
                            for ow in 0..<outWidth { to[ow] = from[ow * stride] }
                        }
                    }
                    row += rowStride
                }
            }
        }
    }

    /// The adjoint of `im2col`: adds one sample's columns back onto [C, H, W], summing where
    /// windows overlap (in a zero-bordered plane whose border is then dropped). Visits taps in a
    /// fixed order, so sums are reproducible.
    private func col2im(_ columns: UnsafePointer<Float>, rowStride: Int, into image: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        let paddedWidth = width + 2 * padding
        let paddedCount = (height + 2 * padding) * paddedWidth
        let padded = paddedGradient.reserve(paddedCount + 16)
        var row = columns
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            // Without padding the plane itself collects the sums.
            let target = padding == 0 ? plane : padded
            VectorKernels.zero(target, count: padding == 0 ? height * width : paddedCount)
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    let tap = target + i * dilation * paddedWidth + j * dilation
                    if stride == 1 {
                        VectorKernels.addRows(
                            row, sourceStride: outWidth, to: tap, destinationStride: paddedWidth, rows: outHeight, count: outWidth)
                    } else if stride == 2 && padding > 0 {
                        for oh in 0..<outHeight {
                            VectorKernels.addToEven(row + oh * outWidth, to: tap + oh * 2 * paddedWidth, count: outWidth)
                        }
                    } else {
                        for oh in 0..<outHeight {
                            let to = tap + oh * stride * paddedWidth
                            let from = row + oh * outWidth
                            for ow in 0..<outWidth { to[ow * stride] += from[ow] }
                        }
                    }
                    row += rowStride
                }
            }
            if padding != 0 {
                VectorKernels.copyRows(
                    padded + padding * paddedWidth + padding, sourceStride: paddedWidth, to: plane, destinationStride: width,
                    rows: height, count: width)
            }
        }
    }

    // MARK: Wide rows

    /// Whether this layer computes on wide rows: output rows as wide as the padded input, so
    /// that every tap's row of the unfolded matrix is one contiguous run of the padded plane.
    ///
    /// At stride 1, output position (oh, ow) sees padded input (oh + i d, ow + j d) through tap
    /// (i, j). Computing OH rows of Wp = W + 2P columns instead of OW makes tap (i, j)'s row
    /// of the matrix the run of OH * Wp floats starting at (i d, j d): im2col becomes one block
}
