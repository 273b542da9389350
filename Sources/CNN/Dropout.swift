import Randomness

// Legend: n sample, e unit (a value, or a whole channel when spatial).

/// Inverted dropout: in training each unit is zeroed with probability p and the rest are scaled by
/// 1 / (1 - p), so the expectation is unchanged and inference is the identity. `spatial` drops
/// whole channels of a sample (PyTorch's `Dropout2d`), for convolution outputs whose neighbouring
/// values are too correlated for element-wise dropout to regularise.
///
/// The mask of sample n is a pure function of (seed, epoch, step, the sample's data-set index,
/// this layer's key): the same on whichever worker, thread or micro-batch slot runs the sample.
public final class Dropout: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }
    public let probability: Float
    public let spatial: Bool
    /// Identifies this layer among the model's random streams (see `key(for:)`).
    public let key: UInt64

    private let mask = FloatBuffer()            // [N, units]: 0 or 1 / (1 - p)
    private let output = FloatBuffer()          // [N, C, H, W]
    private var inputGradient = FloatBuffer()   // [N, C, H, W]
    private var maskedLast = false

    /// Drops values (or, when `spatial`, whole channels) of samples of shape `input` with
    /// `probability`, drawing masks under `key` (see `key(for:)`); throws for a probability
    /// outside [0, 1).
    public init(input: FeatureShape, probability: Double, spatial: Bool = false, key: UInt64, name: String = "Dropout") throws {
        guard probability >= 0, probability < 1 else {
            throw ModelError(
                layer: name,
                message: "dropout probability must be at least 0 and below 1, found \(probability); it is the chance of dropping a value")
        }
        self.inputShape = input
        self.probability = Float(probability)
        self.spatial = spatial
        self.key = key
    }

    /// A stable 64-bit key for a layer path such as "model.layers[4]" (FNV-1a over its bytes):
    /// the same on every process and every run, and different for different positions.
    public static func key(for name: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in name.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
        }
        return hash
    }

    public var summary: String { (spatial ? "SpatialDropout" : "Dropout") + "(\(probability))" }
    public var forwardFLOPs: Int { inputShape.count }
    public var savedFloatsPerSample: Int { spatial ? inputShape.channels : inputShape.count }

    private var unitsPerSample: Int { spatial ? inputShape.channels : inputShape.count }
    private var valuesPerUnit: Int { spatial ? inputShape.spatialCount : 1 }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        maskedLast = context.mode == .training && probability > 0
        guard maskedLast else { return UnsafeMutablePointer(mutating: input) }
        let units = unitsPerSample, perUnit = valuesPerUnit
        let scales = mask.reserve(batch * units)
        // Unit e survives when its 32 random bits are at least p * 2^32: probability 1 - p to within 2^-32.
        let threshold = UInt64((Double(probability) * 4_294_967_296).rounded())
        let keep = 1 / (1 - probability)
        let epoch = UInt64(truncatingIfNeeded: context.epoch), step = UInt64(truncatingIfNeeded: context.step)
        for n in 0..<batch {
            // Without data-set indices (a bare forward in a test or tool), the batch position stands in.
            let sample = n < context.sampleIndices.count ? context.sampleIndices[n] : n
            let base = CounterRandom.bits(
                seed: context.seed, purpose: .dropout, epoch, step, UInt64(truncatingIfNeeded: sample), key)
            let row = scales + n * units
            for e in 0..<units {
                let bits = CounterRandom.mix(base &+ UInt64(e)) >> 32
                row[e] = bits >= threshold ? keep : 0
            }
        }
        let count = batch * inputShape.count
        let out = output.reserve(count)
        apply(scales, to: input, into: out, count: count, perUnit: perUnit)
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        guard maskedLast else { return UnsafeMutablePointer(mutating: outputGradient) }
        let count = batch * inputShape.count
        let dInput = inputGradient.reserve(count)
        apply(mask.pointer, to: outputGradient, into: dInput, count: count, perUnit: valuesPerUnit)
        return dInput
    }

    /// destination = source * (the scale of each value's unit).
    private func apply(
        _ scales: UnsafePointer<Float>, to source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>,
        count: Int, perUnit: Int
    ) {
        if perUnit == 1 {
            for i in 0..<count { destination[i] = source[i] * scales[i] }
        } else {
            for unit in 0..<(count / perUnit) {
                let scale = scales[unit]
                let x = source + unit * perUnit, y = destination + unit * perUnit
                for i in 0..<perUnit { y[i] = x[i] * scale }
            }
        }
    }
}

