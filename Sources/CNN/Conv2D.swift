// Legend for the kernels below: n sample, c input channel, k output channel (filter), g group,
// (h, w) input position, (oh, ow) output position, (i, j) kernel tap.

/// 2-D convolution through im2col and one GEMM per sample and group.
///
/// Weights are [K, C/groups, kh, kw] (PyTorch's OIHW), bias [K]. Supports stride, zero padding,
/// dilation and groups (depthwise when groups == C). The im2col matrix of each sample is kept for
/// the backward pass.
public final class Conv2D: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let filters: Int
    public let kernelHeight: Int
    public let kernelWidth: Int
    public let stride: Int
    public let padding: Int
    public let dilation: Int
    public let groups: Int
    public let hasBias: Bool

    private var weights: UnsafeMutablePointer<Float>!
    private var weightGradients: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var biasGradients: UnsafeMutablePointer<Float>?

    private let columns = FloatBuffer()      // [N, C*kh*kw, OH*OW]
    private let output = FloatBuffer()       // [N, K, OH, OW]
    private let inputGradient = FloatBuffer()  // [N, C, H, W]
    private let columnGradient = FloatBuffer()  // [C*kh*kw, OH*OW], one sample at a time

    /// Rows of the im2col matrix per group: (C / groups) * kh * kw.
    private var patchSize: Int { inputShape.channels / groups * kernelHeight * kernelWidth }
    private var outputPlane: Int { outputShape.height * outputShape.width }

    public init(
        input: FeatureShape, filters: Int, kernelHeight: Int, kernelWidth: Int, stride: Int = 1,
        padding: Int = 0, dilation: Int = 1, groups: Int = 1, bias: Bool = true, name: String = "Conv2D"
    ) throws {
        for (value, what) in [(filters, "filters"), (kernelHeight, "kernel height"), (kernelWidth, "kernel width"),
                              (stride, "stride"), (dilation, "dilation"), (groups, "groups")] where value < 1 {
            throw ModelError(layer: name, message: "\(what) must be at least 1, found \(value)")
        }
        guard padding >= 0 else { throw ModelError(layer: name, message: "padding must not be negative, found \(padding)") }
        guard input.channels % groups == 0, filters % groups == 0 else {
            throw ModelError(
                layer: name,
                message: "groups = \(groups) must divide both the input channels (\(input.channels)) and the filters (\(filters))")
        }
        let height = try slidingOutputSize(
            input: input.height, kernel: kernelHeight, stride: stride, padding: padding, dilation: dilation,
            axis: "height", layer: name)
        let width = try slidingOutputSize(
            input: input.width, kernel: kernelWidth, stride: stride, padding: padding, dilation: dilation,
            axis: "width", layer: name)
        self.inputShape = input
        self.outputShape = FeatureShape(channels: filters, height: height, width: width)
        self.filters = filters
        self.kernelHeight = kernelHeight
        self.kernelWidth = kernelWidth
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups
        self.hasBias = bias
    }

    public var summary: String {
        var text = "Conv2D(\(filters), \(kernelHeight)x\(kernelWidth)"
        if stride != 1 { text += ", s\(stride)" }
        if padding != 0 { text += ", p\(padding)" }
        if dilation != 1 { text += ", d\(dilation)" }
        if groups != 1 { text += ", g\(groups)" }
        return text + ")"
    }

    public var parameterSpecs: [ParameterSpec] {
        let fanIn = patchSize
        var specs = [ParameterSpec(
            name: "weight", shape: [filters, inputShape.channels / groups, kernelHeight, kernelWidth],
            initialiser: .heNormal(fanIn: fanIn))]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [filters], initialiser: .zeros)) }
        return specs
    }

    public var forwardFLOPs: Int { 2 * filters * outputPlane * patchSize }
    public var savedFloatsPerSample: Int { groups * patchSize * outputPlane + outputShape.count }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
        let weightCount = filters * patchSize
        if hasBias {
            bias = parameters + weightCount
            biasGradients = gradients + weightCount
        }
    }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let columnCount = groups * patchSize * outputPlane  // per sample
        let cols = columns.reserve(batch * columnCount)
        let out = output.reserve(batch * outputShape.count)
        let filtersPerGroup = filters / groups
        for n in 0..<batch {
            let sampleColumns = cols + n * columnCount
            im2col(input + n * inputShape.count, into: sampleColumns)
            let sampleOut = out + n * outputShape.count
            for g in 0..<groups {
                // out[g] [K/g, OHW] = W[g] [K/g, patch] x cols[g] [patch, OHW]
                BLAS.gemm(
                    transposeA: false, transposeB: false, m: filtersPerGroup, n: outputPlane, k: patchSize,
                    a: weights + g * filtersPerGroup * patchSize, lda: patchSize,
                    b: sampleColumns + g * patchSize * outputPlane, ldb: outputPlane,
                    beta: 0, c: sampleOut + g * filtersPerGroup * outputPlane, ldc: outputPlane)
            }
            if let bias {
                for k in 0..<filters {
                    let plane = sampleOut + k * outputPlane
                    let b = bias[k]
                    for p in 0..<outputPlane { plane[p] += b }
                }
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let columnCount = groups * patchSize * outputPlane
        let cols = columns.pointer
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let dColumns = columnGradient.reserve(columnCount)
        let filtersPerGroup = filters / groups
        for n in 0..<batch {
            let dOut = outputGradient + n * outputShape.count
            let sampleColumns = cols + n * columnCount
            for g in 0..<groups {
                let dOutGroup = dOut + g * filtersPerGroup * outputPlane
                // dW[g] [K/g, patch] += dOut[g] [K/g, OHW] x cols[g]^T [OHW, patch]
                BLAS.gemm(
                    transposeA: false, transposeB: true, m: filtersPerGroup, n: patchSize, k: outputPlane,
                    a: dOutGroup, lda: outputPlane,
                    b: sampleColumns + g * patchSize * outputPlane, ldb: outputPlane,
                    beta: 1, c: weightGradients + g * filtersPerGroup * patchSize, ldc: patchSize)
                // dCols[g] [patch, OHW] = W[g]^T [patch, K/g] x dOut[g] [K/g, OHW]
                BLAS.gemm(
                    transposeA: true, transposeB: false, m: patchSize, n: outputPlane, k: filtersPerGroup,
                    a: weights + g * filtersPerGroup * patchSize, lda: patchSize,
                    b: dOutGroup, ldb: outputPlane,
                    beta: 0, c: dColumns + g * patchSize * outputPlane, ldc: outputPlane)
            }
            if let biasGradients {
                for k in 0..<filters {
                    let plane = dOut + k * outputPlane
                    var sum: Float = 0
                    for p in 0..<outputPlane { sum += plane[p] }
                    biasGradients[k] += sum
                }
            }
            col2im(dColumns, into: dInput + n * inputShape.count)
        }
        return dInput
    }

    /// Unfolds one sample [C, H, W] into [C*kh*kw, OH*OW]: row (c, i, j) holds the input value
    /// each output position sees through tap (i, j) of channel c, zero where it falls in padding.
    private func im2col(_ image: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        var row = columns
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    let rowOffset = i * dilation - padding
                    let columnOffset = j * dilation - padding
                    for oh in 0..<outHeight {
                        let h = oh * stride + rowOffset
                        let destination = row + oh * outWidth
                        if h < 0 || h >= height {
                            destination.update(repeating: 0, count: outWidth)
                            continue
                        }
                        let source = plane + h * width
                        if stride == 1 {
                            // Valid output columns are those with 0 <= ow + columnOffset < width.
                            let first = max(0, -columnOffset)
                            let last = min(outWidth, width - columnOffset)
                            if first > 0 { destination.update(repeating: 0, count: min(first, outWidth)) }
                            if last > first {
                                (destination + first).update(from: source + first + columnOffset, count: last - first)
                            }
                            if last < outWidth { (destination + max(last, 0)).update(repeating: 0, count: outWidth - max(last, 0)) }
                        } else {
                            for ow in 0..<outWidth {
                                let w = ow * stride + columnOffset
                                destination[ow] = (w >= 0 && w < width) ? source[w] : 0
                            }
                        }
                    }
                    row += outHeight * outWidth
                }
            }
        }
    }

    /// The adjoint of `im2col`: scatters [C*kh*kw, OH*OW] back onto [C, H, W], adding where
    /// windows overlap. Always visits taps in the same order, so sums are reproducible.
    private func col2im(_ columns: UnsafePointer<Float>, into image: UnsafeMutablePointer<Float>) {
        let height = inputShape.height, width = inputShape.width
        let outHeight = outputShape.height, outWidth = outputShape.width
        image.update(repeating: 0, count: inputShape.count)
        var row = columns
        for c in 0..<inputShape.channels {
            let plane = image + c * height * width
            for i in 0..<kernelHeight {
                for j in 0..<kernelWidth {
                    let rowOffset = i * dilation - padding
                    let columnOffset = j * dilation - padding
                    for oh in 0..<outHeight {
                        let h = oh * stride + rowOffset
                        if h < 0 || h >= height { continue }
                        let source = row + oh * outWidth
                        let destination = plane + h * width
                        if stride == 1 {
                            let first = max(0, -columnOffset)
                            let last = min(outWidth, width - columnOffset)
                            if last > first {
                                let d = destination + columnOffset
                                for ow in first..<last { d[ow] += source[ow] }
                            }
                        } else {
                            for ow in 0..<outWidth {
                                let w = ow * stride + columnOffset
                                if w >= 0 && w < width { destination[w] += source[ow] }
                            }
                        }
                    }
                    row += outHeight * outWidth
                }
            }
        }
    }
}
