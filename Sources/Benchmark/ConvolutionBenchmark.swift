import CNN

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension Benchmark {
    // MARK: Convolution layers against the GEMM of their precision

    static func measureConvolutions(
        _ model: BenchmarkModel, microBatch: Int, precision: Precision, settings: BenchmarkSettings
    ) throws -> [ConvolutionMeasurement] {
        let network = try Network(model.spec)
        var found: [(String, ConvolutionGeometry)] = []
        for (index, layer) in network.layers.enumerated() { collectConvolutions(layer, path: "\(index)", into: &found) }
        // Layers of the same geometry (most of ResNet-20's) are timed once and reported for each.
        var measured: [String: ConvolutionMeasurement] = [:]
        return try found.map { path, geometry in
            let key = "\(geometry.inputShape) \(geometry.summary) \(geometry.hasBias) \(geometry.computesInputGradient)"
            var measurement = try measured[key]
                ?? measureConvolution(geometry, path: path, model: model.name, batch: microBatch, precision: precision, settings: settings)
            measured[key] = measurement
            measurement.layer = path
            return measurement
        }
    }

    /// What the benchmark needs to rebuild a convolution layer and to state its GEMM shape.
    struct ConvolutionGeometry {
        var summary: String
        var inputShape: FeatureShape
        var outputShape: FeatureShape
        var filters: Int
        var groups: Int
        /// Rows of the im2col matrix per group: (C / groups) * kh * kw.
        var patch: Int
        var hasBias: Bool
        /// As in the network: a first layer skips its input gradient.
        var computesInputGradient = true
        /// A fresh copy of the layer computing in the given precision.
        var make: (Precision) throws -> Layer
    }

    static func geometry(of layer: Layer) -> ConvolutionGeometry? {
        switch layer {
        case let c as Conv2D:
            return ConvolutionGeometry(
                summary: c.summary, inputShape: c.inputShape, outputShape: c.outputShape, filters: c.filters, groups: c.groups,
                patch: c.inputShape.channels / c.groups * c.kernelHeight * c.kernelWidth, hasBias: c.hasBias,
                computesInputGradient: c.computesInputGradient,
                make: { precision in
                    let copy = try Conv2D(
                        input: c.inputShape, filters: c.filters, kernelHeight: c.kernelHeight, kernelWidth: c.kernelWidth,
                        stride: c.stride, padding: c.padding, dilation: c.dilation, groups: c.groups, bias: c.hasBias)
                    copy.computesInputGradient = c.computesInputGradient
                    copy.precision = precision
                    return copy
                })
        case let p as PointwiseConv2D:
            return ConvolutionGeometry(
                summary: p.summary, inputShape: p.inputShape, outputShape: p.outputShape, filters: p.outputShape.channels,
                groups: 1, patch: p.inputShape.channels, hasBias: false,
                make: { precision in
                    let copy = try PointwiseConv2D(input: p.inputShape, filters: p.outputShape.channels, stride: p.stride)
                    copy.precision = precision
                    return copy
                })
        default:
            return nil
        }
    }

    /// Every convolution inside `layer`, with its path in PyTorch's naming ("4.conv1", "4.downsample.0").
    static func collectConvolutions(_ layer: Layer, path: String, into found: inout [(String, ConvolutionGeometry)]) {
        if let geometry = geometry(of: layer) {
            found.append((path, geometry))
            return
        }
        switch layer {
        case let sequential as Sequential:
            for child in sequential.children {
                collectConvolutions(child.layer, path: path + "." + child.name, into: &found)
            }
        case let residual as Residual:
            collectConvolutions(residual.path, path: path, into: &found)
            // The projection names its children "downsample.0" and "downsample.1" itself.
            if let projection = residual.projection { collectConvolutions(projection, path: path, into: &found) }
        case let concatenation as Concatenation:
            for (index, branch) in concatenation.branches.enumerated() {
                collectConvolutions(branch, path: path + ".branch\(index + 1)", into: &found)
            }
        default:
            break
        }
    }

    /// Times one layer's forward and backward on a fresh copy with random weights and input, then
    /// the same GEMMs through plain GEMM calls of the precision on buffers of the same sizes: the
    /// whole micro-batch as one GEMM per group, forward (NN), weight gradient (NT) and, where the
    /// layer computes it, input gradient (TN). In bf16 the plain GEMMs read operands rounded
    /// once beforehand: the layer's rounding is part of what it is measured against.
    static func measureConvolution(
        _ geometry: ConvolutionGeometry, path: String, model: String, batch: Int, precision: Precision, settings: BenchmarkSettings
    ) throws -> ConvolutionMeasurement {
        let layer = try geometry.make(precision)
        let parameters = FloatBuffer(count: layer.parameterCount)
        let gradients = FloatBuffer(count: layer.parameterCount)
        fillRandom(parameters.pointer, count: layer.parameterCount, scale: 0.1)
        layer.bind(parameters: parameters.pointer, gradients: gradients.pointer)
        let input = FloatBuffer(count: batch * layer.inputShape.count)
        fillRandom(input.pointer, count: batch * layer.inputShape.count, scale: 1)
        let outputGradient = FloatBuffer(count: batch * layer.outputShape.count)
        fillRandom(outputGradient.pointer, count: batch * layer.outputShape.count, scale: 0.01)
        let context = PassContext(mode: .training)
        let trainLayer = {
            _ = layer.forward(input.pointer, batch: batch, context: context)
            _ = layer.backward(outputGradient.pointer, batch: batch)
        }

        let groups = geometry.groups
        let m = geometry.filters / groups
        let k = geometry.patch
        let n = batch * geometry.outputShape.height * geometry.outputShape.width
        let a = FloatBuffer(count: groups * m * k)       // weights        [g, m, k]
        let b = FloatBuffer(count: groups * k * n)       // columns        [g, k, n]
        let c = FloatBuffer(count: groups * m * n)       // output         [g, m, n]
        let dA = FloatBuffer(count: groups * m * k)      // weight grads   [g, m, k]
        let dB = FloatBuffer(count: groups * k * n)      // column grads   [g, k, n]
        for (buffer, count) in [(a, groups * m * k), (b, groups * k * n), (c, groups * m * n)] {
            fillRandom(buffer.pointer, count: count, scale: 0.1)
        }
        // bf16 copies of the three operands: weights, columns and the output (gradient).
        let roundedA = BFloat16Buffer(count: precision == .bf16 ? groups * m * k : 0)
        let roundedB = BFloat16Buffer(count: precision == .bf16 ? groups * k * n : 0)
        let roundedC = BFloat16Buffer(count: precision == .bf16 ? groups * m * n : 0)
        if precision == .bf16 {
            BFloat16.round(a.pointer, into: roundedA.pointer, count: groups * m * k)
            BFloat16.round(b.pointer, into: roundedB.pointer, count: groups * k * n)
            BFloat16.round(c.pointer, into: roundedC.pointer, count: groups * m * n)
        }
        let runBFloat16GEMMs = {
            for g in 0..<groups {
                let weights = roundedA.pointer + g * m * k, columns = roundedB.pointer + g * k * n
                let output = roundedC.pointer + g * m * n
                BLAS.gemmBFloat16(transposeA: false, transposeB: false, m: m, n: n, k: k, a: weights, lda: k,
                                  b: columns, ldb: n, beta: 0, c: c.pointer + g * m * n, ldc: n)
                BLAS.gemmBFloat16(transposeA: false, transposeB: true, m: m, n: k, k: n, a: output, lda: n,
                                  b: columns, ldb: n, beta: 1, c: dA.pointer + g * m * k, ldc: k)
                if geometry.computesInputGradient {
                    BLAS.gemmBFloat16(transposeA: true, transposeB: false, m: k, n: n, k: m, a: weights, lda: k,
                                      b: output, ldb: n, beta: 0, c: dB.pointer + g * k * n, ldc: n)
                }
            }
        }
        let runFloat32GEMMs = {
            for g in 0..<groups {
                let weights = a.pointer + g * m * k, columns = b.pointer + g * k * n, output = c.pointer + g * m * n
                BLAS.gemm(transposeA: false, transposeB: false, m: m, n: n, k: k, a: weights, lda: k,
                          b: columns, ldb: n, beta: 0, c: output, ldc: n)
                BLAS.gemm(transposeA: false, transposeB: true, m: m, n: k, k: n, a: output, lda: n,
                          b: columns, ldb: n, beta: 1, c: dA.pointer + g * m * k, ldc: k)
                if geometry.computesInputGradient {
                    BLAS.gemm(transposeA: true, transposeB: false, m: k, n: n, k: m, a: weights, lda: k,
                              b: output, ldb: n, beta: 0, c: dB.pointer + g * k * n, ldc: n)
                }
            }
        }
        let (convolutionSeconds, sgemmSeconds) = timeMedians(
            settings: settings, trainLayer, precision == .bf16 ? runBFloat16GEMMs : runFloat32GEMMs)
        return ConvolutionMeasurement(
            model: model, precision: precision, layer: path, summary: geometry.summary, microBatch: batch, m: m, n: n, k: k, groups: groups,
            computesInputGradient: geometry.computesInputGradient,
            flops: Double((geometry.computesInputGradient ? 3 : 2) * 2 * groups * m * n * k),
            seconds: convolutionSeconds, sgemmSeconds: sgemmSeconds)
    }
}
