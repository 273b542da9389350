// Legend: n sample, c and j channels, i position in the H x W plane, s_c the denominator base.

/// Local response normalisation across channels (Krizhevsky et al. 2012) in PyTorch's convention:
///
///     s_c = k + alpha / size * sum of x_j^2 for j in [c - size/2, c + (size-1)/2] (within 0..<C)
///     y_c = x_c * s_c^-beta
///
/// AlexNet's parameters are size 5, beta 0.75, k 2 and the paper's alpha 1e-4, which does not
/// divide by size: written here as alpha = 5e-4 for the paper's model, or alpha = 1e-4 as PyTorch
/// users usually transcribe it.
public final class LocalResponseNorm: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }
    public let size: Int
    public let alpha: Float
    public let beta: Float
    public let k: Float

    private var savedInput: UnsafePointer<Float>!   // [N, C, H, W]
    private let output = FloatBuffer()              // [N, C, H, W]
    private let base = FloatBuffer()                // [N, C, H, W]: s
    private let power = FloatBuffer()               // [N, C, H, W]: s^-beta
    private var inputGradient = FloatBuffer()       // [N, C, H, W]
    /// Where a call keeps its one sample of squares (forward) or dy * y / s (backward): the
    /// layer's own workspace until a network binds it to the one all its layers share.
    private var workspace = LayerWorkspace()
    private var work: FloatBuffer { workspace.sampleScratch }

    /// Normalises across the channels of samples of shape `input`; throws a `ModelError` naming
    /// `name` for a size below 1, k <= 0 or a negative alpha or beta.
    public init(input: FeatureShape, spec: LocalResponseNormSpec, name: String = "LocalResponseNorm") throws {
        guard spec.size >= 1 else { throw ModelError(layer: name, message: "lrn size must be at least 1, found \(spec.size)") }
        guard spec.k > 0, spec.alpha >= 0, spec.beta >= 0, spec.k.isFinite, spec.alpha.isFinite, spec.beta.isFinite else {
            throw ModelError(
                layer: name,
                message: "lrn needs k > 0, alpha >= 0 and beta >= 0 (finite), found k \(spec.k), alpha \(spec.alpha), beta \(spec.beta)")
        }
        self.inputShape = input
        self.size = spec.size
        self.alpha = Float(spec.alpha)
        self.beta = Float(spec.beta)
        self.k = Float(spec.k)
    }

    public var summary: String { "LocalResponseNorm(\(size), alpha \(alpha), beta \(beta), k \(k))" }
    public var forwardFLOPs: Int { inputShape.count * (2 * size + 4) }
    public var savedFloatsPerSample: Int { 3 * inputShape.count }

    public func bind(workspace: LayerWorkspace) {
        self.workspace = workspace
    }

    /// The channels whose window sums include channel j's square: j - (size-1)/2 ... j + size/2.
    @inline(__always)
    private func windowRange(of c: Int) -> ClosedRange<Int> {
        max(0, c - size / 2)...min(inputShape.channels - 1, c + (size - 1) / 2)
    }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        let count = batch * inputShape.count
        let out = output.reserve(count), s = base.reserve(count), p = power.reserve(count)
        let channels = inputShape.channels, plane = inputShape.spatialCount
        let squares = work.reserve(inputShape.count)
        let scale = alpha / Float(size), k = self.k, negativeBeta = -beta
        typealias Lanes = VectorKernels.Lanes
        let lanes = VectorKernels.width
        for n in 0..<batch {
            let sample = n * inputShape.count
            let x = input + sample
            VectorKernels.multiply(x, x, into: squares, count: inputShape.count)
            for c in 0..<channels {
                let sc = s + sample + c * plane
                let pc = p + sample + c * plane, xc = x + c * plane, yc = out + sample + c * plane
                let window = windowRange(of: c)
                var i = 0
                if beta == 0.75 {
                    // Every published LRN uses beta = 3/4: s^-3/4 = 1 / (sqrt(s) * sqrt(sqrt(s))), two
                    // square roots instead of a call to powf per value. The window's squares are
                    // summed in registers, channel after channel from zero, and every result
                    // written once.
                    let kLanes = Lanes(repeating: k), scaleLanes = Lanes(repeating: scale), one = Lanes(repeating: 1)
                    while i + lanes <= plane {
                        var total = Lanes()
                        for j in window { total += VectorKernels.load(squares + j * plane + i) }
                        let denominator = kLanes + scaleLanes * total
                        let root = denominator.squareRoot()
                        let factor = one / (root * root.squareRoot())
                        VectorKernels.store(denominator, sc + i)
                        VectorKernels.store(factor, pc + i)
                        VectorKernels.store(VectorKernels.load(xc + i) * factor, yc + i)
                        i += lanes
                    }
                }
                while i < plane {
                    var total: Float = 0
                    for j in window { total += squares[j * plane + i] }
                    let denominator = k + scale * total
                    let factor: Float
                    if beta == 0.75 {
                        let root = denominator.squareRoot()
                        factor = 1 / (root * root.squareRoot())
                    } else {
                        factor = powf(denominator, negativeBeta)
                    }
                    sc[i] = denominator
                    pc[i] = factor
                    yc[i] = xc[i] * factor
                    i += 1
                }
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        let channels = inputShape.channels, plane = inputShape.spatialCount
        let s = base.pointer, p = power.pointer, y = output.pointer
        let t = work.reserve(inputShape.count)
        // dx_j = dy_j s_j^-beta - (2 alpha beta / size) x_j * sum over the c whose window holds j of dy_c y_c / s_c
        let coupling = 2 * alpha * beta / Float(size)
        for n in 0..<batch {
            let sample = n * inputShape.count
            let dy = outputGradient + sample
            for i in 0..<inputShape.count { t[i] = dy[i] * y[sample + i] / s[sample + i] }
            for j in 0..<channels {
                let offset = sample + j * plane
                let dx = dInput + offset
                // Channel c's window holds j when c - size/2 <= j <= c + (size-1)/2.
                let from = max(0, j - (size - 1) / 2), through = min(channels - 1, j + size / 2)
                for i in 0..<plane { dx[i] = 0 }
                for c in from...through {
                    let tc = t + c * plane
                    for i in 0..<plane { dx[i] += tc[i] }
                }
                let x = savedInput + offset, dyj = dy + j * plane, pj = p + offset
                for i in 0..<plane { dx[i] = dyj[i] * pj[i] - coupling * x[i] * dx[i] }
            }
        }
        return dInput
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
