import CNN

/// The optimiser step of one slice of the parameters, as its owner runs it under the sharded
/// reduction: `ModelState.apply`'s rule on that part of the vector alone, with only that part of
/// the optimiser state (ZeRO stage 1). Every rule works element by element and advances its
/// counter once per step, so the slices of all owners together give the bits of the whole-vector
/// update; clipping's global norm comes from every slice's block sums (`GradientClipping`).
public final class ParameterSliceUpdate {
    /// The slice's elements in the flat parameter vector; starts at a multiple of the norm block.
    public let range: Range<Int>
    let optimizer: Optimizer
    /// What trains within the slice, relative to its start (frozen layers are left alone).
    let trainable: [Range<Int>]
    private let clipping: Float?

    public init(config: TrainingConfig, range: Range<Int>, trainableRanges: [Range<Int>]) {
        precondition(range.lowerBound % GradientClipping.normBlock == 0, "slice \(range) does not start at a norm block")
        self.range = range
        optimizer = ModelState.makeOptimizer(config.train.optimizer, parameterCount: range.count)
        trainable = trainableRanges.compactMap { whole in
            let part = whole.clamped(to: range)
            return part.isEmpty ? nil : (part.lowerBound - range.lowerBound)..<(part.upperBound - range.lowerBound)
        }
        clipping = config.train.clipGradientNorm > 0 ? Float(config.train.clipGradientNorm) : nil
    }

    /// Whether a step needs every slice's block sums before any slice can be updated.
    public var clips: Bool { clipping != nil }

    /// With clipping on: zeroes the frozen parts of the slice's mean gradient (clipping sees only
    /// what trains) and returns the slice's sums of squares per norm block.
    public func blockSums(ofMeanGradient gradient: UnsafeMutablePointer<Float>) -> [Double] {
        var cursor = 0
        for part in trainable {
            if part.lowerBound > cursor { (gradient + cursor).update(repeating: 0, count: part.lowerBound - cursor) }
            cursor = part.upperBound
        }
        if cursor < range.count { (gradient + cursor).update(repeating: 0, count: range.count - cursor) }
        return GradientClipping.blockSumsOfSquares(gradient, offset: range.lowerBound, count: range.count)
    }

    /// Writes the slice's updated parameters to `parameters`, from the slice's current ones at
    /// `current` and its mean `gradient`. `norm` is the global norm from every slice's block sums,
    /// needed only when clipping is on. `gradient` is left as the optimiser took it (clipped),
    /// which is what a replica is sent. The optimiser writes its new state beside the committed
    /// state (`Optimizer.step(from:into:...)`), which the holder keeps for a redo without a copy.
    public func apply(gradient: UnsafeMutablePointer<Float>, norm: Double?, learningRate: Float,
                      from current: UnsafePointer<Float>, into parameters: UnsafeMutablePointer<Float>) {
        if let clipping {
            precondition(norm != nil, "a clipped step needs the global norm")
            if let coefficient = GradientClipping.coefficient(norm: norm!, maxNorm: clipping) {
                GradientClipping.scale(gradient, count: range.count, by: coefficient)
            }
        }
        step(clippedGradient: UnsafePointer(gradient), learningRate: learningRate, from: current, into: parameters)
    }

    /// The optimiser's step alone, on a gradient `apply` has already clipped: a replica's update
    /// from what its owner's optimiser took, to the owner's bits.
    public func step(clippedGradient gradient: UnsafePointer<Float>, learningRate: Float,
                     from current: UnsafePointer<Float>, into parameters: UnsafeMutablePointer<Float>) {
        optimizer.step(from: current, into: parameters, gradients: gradient, count: range.count, learningRate: learningRate,
                       ranges: trainable)
    }

    /// The slice's part of the optimiser state, named as the whole-vector optimiser names its own.
    public var stateTensors: [(name: String, values: [Float])] { optimizer.stateTensors }

    /// Takes the slice's part of a whole-vector optimiser state (`ModelState.optimizer.stateTensors`,
    /// as a checkpoint restores it): per-parameter tensors are cut to the slice, scalars kept.
    public func restore(fromWhole whole: [(name: String, values: [Float])], parameterCount: Int) throws {
        var part: [String: [Float]] = [:]
        for (name, values) in whole {
            part[name] = values.count == parameterCount ? Array(values[range]) : values
        }
        try optimizer.restore(part)
    }

    /// Takes the slice's own part of the state (as `stateTensors` gave it).
    public func restore(part: [(name: String, values: [Float])]) throws {
        try optimizer.restore(Dictionary(part.map { ($0.name, $0.values) }, uniquingKeysWith: { first, _ in first }))
    }

    /// The whole-vector optimiser state from every slice's part, slices in order: what a
    /// checkpoint writes, the same tensors the `central` strategy's optimiser holds.
    public static func wholeState(of slices: [ParameterSliceUpdate]) -> [(name: String, values: [Float])] {
        guard let first = slices.first else { return [] }
        return first.stateTensors.indices.map { t in
            let name = first.stateTensors[t].name
            if first.stateTensors[t].values.count == first.range.count {
                return (name, slices.flatMap { $0.stateTensors[t].values })
            }
            return (name, first.stateTensors[t].values)
        }
    }
}
