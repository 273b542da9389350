/// Fully connected: y = x W^T + b with W [out, in] (PyTorch's `nn.Linear` layout), b [out].
/// Takes any input shape and treats each sample as a flat vector.
public final class Dense: Layer {
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let units: Int
    public let hasBias: Bool

    private var weights: UnsafeMutablePointer<Float>!
    private var weightGradients: UnsafeMutablePointer<Float>!
    private var bias: UnsafeMutablePointer<Float>?
    private var biasGradients: UnsafeMutablePointer<Float>?
    private var savedInput: UnsafePointer<Float>!

    private let output = FloatBuffer()          // [N, out]
    private var inputGradient = FloatBuffer()   // [N, in]
    /// Where bf16 products keep their rounded operands: the network's workspace once bound.
    private var workspace = LayerWorkspace()

    /// The arithmetic of this layer's three products (`BLAS.gemm(precision:)`); the bias and its
    /// gradient stay Float32.
    public var precision: Precision = .fp32

    /// Where the replicas of a network keep this layer's weights rounded to bf16, once for all
    /// of them and both passes (`Network.share(filterTransforms:)`); nil while each call rounds
    /// its own. A dense layer reads every weight once per pass, so at small batches rounding them
    /// costs as much as the product.
    var sharedRoundedWeights: SharedFilterTransforms.Slot?

    /// The weights rounded to bf16 in bf16, nil in fp32.
    private func roundedWeights() -> UnsafePointer<UInt16>? {
        guard precision == .bf16 else { return nil }
        let count = units * inputShape.count
        if let sharedRoundedWeights { return sharedRoundedWeights.roundedWeights(weights, count: count) }
        return workspace.bfloat16Operands.rounded(weights, count: count, into: \.weights, precision: precision)
    }

    public init(input: FeatureShape, units: Int, bias: Bool = true, name: String = "Dense") throws {
        guard units > 0 else { throw ModelError(layer: name, message: "units must be positive, got \(units)") }
        self.inputShape = input
        self.outputShape = .vector(units)
        self.units = units
        self.hasBias = bias
    }

    public var summary: String { "Dense(\(units))" }

    public var parameterSpecs: [ParameterSpec] {
        var specs = [ParameterSpec(name: "weight", shape: [units, inputShape.count], initialiser: .heNormal(fanIn: inputShape.count))]
        if hasBias { specs.append(ParameterSpec(name: "bias", shape: [units], initialiser: .zeros)) }
        return specs
    }

    public var forwardFLOPs: Int { 2 * units * inputShape.count }
    public var savedFloatsPerSample: Int { outputShape.count }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        weights = parameters
        weightGradients = gradients
        if hasBias {
            bias = parameters + units * inputShape.count
            biasGradients = gradients + units * inputShape.count
        }
    }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func bind(workspace: LayerWorkspace) { self.workspace = workspace }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let inputs = inputShape.count
        let out = output.reserve(batch * units)
        if let bias {
            for n in 0..<batch { (out + n * units).update(from: bias, count: units) }
        }
        // out [N, out] (+)= x [N, in] x W^T [in, out]
        BLAS.gemm(
            precision: precision, operands: workspace.bfloat16Operands, transposeA: false, transposeB: true, m: batch, n: units, k: inputs,
            a: input, lda: inputs, b: weights, ldb: inputs, roundedB: roundedWeights(), beta: hasBias ? 1 : 0, c: out, ldc: units)
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let inputs = inputShape.count
        // dW [out, in] += dY^T [out, N] x x [N, in]
        BLAS.gemm(
            precision: precision, operands: workspace.bfloat16Operands, transposeA: true, transposeB: false, m: units, n: inputs, k: batch,
            a: outputGradient, lda: units, b: savedInput, ldb: inputs, beta: 1, c: weightGradients, ldc: inputs)
        if let biasGradients {
            for n in 0..<batch {
                let row = outputGradient + n * units
                for j in 0..<units { biasGradients[j] += row[j] }
            }
        }
        // dX [N, in] = dY [N, out] x W [out, in]
        let dInput = inputGradient.reserve(batch * inputs)
        BLAS.gemm(
            precision: precision, operands: workspace.bfloat16Operands, transposeA: false, transposeB: false, m: batch, n: inputs, k: units,
            a: outputGradient, lda: units, b: weights, ldb: inputs, roundedB: roundedWeights(), beta: 0, c: dInput, ldc: inputs)
        return dInput
    }
}
