// Legend: n sample, p output position, k filter, j patch entry (channel-major, then taps), N batch,
// P output positions, K filters, J = C * taps.

/// A locally connected layer: a convolution's windows without parameter sharing, so each output
/// position has its own filters (DeepFace's layers for aligned, centred faces). For sequences,
/// images and volumes alike. With `cols = unfold(x)` ([N, J, P], PyTorch's `F.unfold` order):
///
///     y[n, k, p] = sum_j weight[p, k, j] * cols[n, j, p] + bias[k, p]
///
/// `weight` is [P, K, J] and `bias` [K, output spatial...]: one bias per output value, as Keras'
/// `LocallyConnected2D`. Each position's filters multiply the batch's patches for that position in
/// one GEMM; every sum runs in an order fixed by the shapes and the batch.
public final class LocallyConnected: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let filters: Int
    public let kernel: [Int]
    public let stride: [Int]
    public let padding: [Int]
    public let dilation: [Int]
    public let hasBias: Bool

    private let geometry: VolumeGeometry
    private var weights: UnsafeMutablePointer<Float>!
    private var weightGradients: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var biasGradients: UnsafeMutablePointer<Float>?
    private let output = FloatBuffer()          // [N, K, P]
    private var inputGradient = FloatBuffer()   // [N, C, D, H, W]
    private let columns = FloatBuffer()         // [J, P], one sample at a time
    private let patches = FloatBuffer()         // [P, N, J], kept from forward for backward
    private let byPosition = FloatBuffer()      // [P, N, K] forward; [P, N, J] backward (the patches' gradient)
    private let gradientByPosition = FloatBuffer()  // [P, N, K]

    public init(
        input: FeatureShape, filters: Int, kernel: [Int], stride: [Int], padding: [Int], dilation: [Int],
        bias: Bool = true, name: String = "LocallyConnected"
    ) throws {
        let window = try VolumeGeometry.window(
            input: input, filters: filters, kernel: kernel, stride: stride, padding: padding, dilation: dilation, layer: name)
        geometry = window.geometry
        self.inputShape = input
        self.outputShape = window.output
        self.filters = filters
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.hasBias = bias
    }

    public var summary: String {
        "LocallyConnected\(inputShape.spatialRank)d(\(filters), \(VolumeGeometry.text(kernel))"
            + VolumeGeometry.optionsText(stride: stride, padding: padding, dilation: dilation) + ")"
    }

    public var parameterSpecs: [ParameterSpec] {
        var specs = [ParameterSpec(
            name: "weight", shape: [geometry.columns, filters, geometry.rows], initialiser: .heNormal(fanIn: geometry.rows))]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: outputShape.dimensions, initialiser: .zeros)) }
        return specs
    }

    public var forwardFLOPs: Int { 2 * filters * geometry.columns * geometry.rows }
    /// The output and the patches kept for backward.
    public var savedFloatsPerSample: Int { outputShape.count + geometry.rows * geometry.columns }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
        if hasBias {
            bias = parameters + geometry.columns * filters * geometry.rows
            biasGradients = gradients + geometry.columns * filters * geometry.rows
        }
    }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let (positions, patch) = (geometry.columns, geometry.rows)
        let cols = columns.reserve(patch * positions)
        let gathered = patches.reserve(positions * batch * patch)
        for n in 0..<batch {
            geometry.im2col(input + n * inputShape.count, into: cols)
            for j in 0..<patch {
                for p in 0..<positions { gathered[(p * batch + n) * patch + j] = cols[j * positions + p] }
            }
        }
        let results = byPosition.reserve(positions * batch * filters)
        for p in 0..<positions {
            // y_p [N, K] = patches_p [N, J] x W_p^T [J, K]
            BLAS.gemm(
                transposeA: false, transposeB: true, m: batch, n: filters, k: patch,
                a: gathered + p * batch * patch, lda: patch, b: weights + p * filters * patch, ldb: patch,
                beta: 0, c: results + p * batch * filters, ldc: filters)
        }
        let out = output.reserve(batch * outputShape.count)
        for n in 0..<batch {
            for k in 0..<filters {
                let row = out + (n * filters + k) * positions
                for p in 0..<positions {
                    row[p] = results[(p * batch + n) * filters + k] + (bias?[k * positions + p] ?? 0)
                }
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let (positions, patch) = (geometry.columns, geometry.rows)
        let gathered = patches.pointer
        if let biasGradients {
            for n in 0..<batch {
                for i in 0..<(filters * positions) { biasGradients[i] += outputGradient[n * filters * positions + i] }
            }
        }
        // dY regrouped by position: [P, N, K].
        let dByPosition = gradientByPosition.reserve(positions * batch * filters)
        for n in 0..<batch {
            for k in 0..<filters {
                let row = outputGradient + (n * filters + k) * positions
                for p in 0..<positions { dByPosition[(p * batch + n) * filters + k] = row[p] }
            }
        }
        let dPatches = byPosition.reserve(positions * batch * patch)
        for p in 0..<positions {
            let dY = dByPosition + p * batch * filters
            // dW_p [K, J] += dY_p^T [K, N] x patches_p [N, J]
            BLAS.gemm(
                transposeA: true, transposeB: false, m: filters, n: patch, k: batch,
                a: dY, lda: filters, b: gathered + p * batch * patch, ldb: patch,
                beta: 1, c: weightGradients + p * filters * patch, ldc: patch)
            // dpatches_p [N, J] = dY_p [N, K] x W_p [K, J]
            BLAS.gemm(
                transposeA: false, transposeB: false, m: batch, n: patch, k: filters,
                a: dY, lda: filters, b: weights + p * filters * patch, ldb: patch,
                beta: 0, c: dPatches + p * batch * patch, ldc: patch)
        }
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let cols = columns.reserve(patch * positions)
        for n in 0..<batch {
            for j in 0..<patch {
                for p in 0..<positions { cols[j * positions + p] = dPatches[(p * batch + n) * patch + j] }
            }
            geometry.col2im(cols, into: dInput + n * inputShape.count)
        }
        return dInput
    }
}
