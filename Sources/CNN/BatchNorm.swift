// Legend: n sample, c channel, HW the plane of one channel, m = N * HW values per channel.

/// Batch normalisation (Ioffe & Szegedy 2015) with PyTorch's semantics: `BatchNorm2d` over
/// (N, H, W) per channel for convolution outputs, `BatchNorm1d` over N per feature for C x 1 x 1.
///
/// Training normalises with the batch's mean and biased variance. It never changes the running
/// statistics itself: it writes what it saw into its observation slice (batch mean where
/// `running_mean` lives, unbiased batch variance where `running_var` lives, 1 where
/// `num_batches_tracked` lives), and `applyObservations` folds the step's averaged observations
/// into the state, so every worker and the coordinator evolve identical statistics. Inference
/// normalises with the running statistics.
///
/// Parameters `weight` [C] (ones) and `bias` [C] (zeros) when affine; state `running_mean` [C]
/// (zeros), `running_var` [C] (ones), `num_batches_tracked` [] (zero).
public final class BatchNorm: Layer {
    public let inputShape: FeatureShape
    public var outputShape: FeatureShape { inputShape }
    public let epsilon: Float
    /// Weight of the newest observation in the running averages; nil for an equal-weight average.
    public let momentum: Float?
    public let affine: Bool

    private var weight: UnsafeMutablePointer<Float>?
    private var weightGradient: UnsafeMutablePointer<Float>?
    private var bias: UnsafeMutablePointer<Float>?
    private var biasGradient: UnsafeMutablePointer<Float>?
    private var runningMean: UnsafeMutablePointer<Float>!
    private var runningVariance: UnsafeMutablePointer<Float>!
    private var observedMean: UnsafeMutablePointer<Float>!
    private var observedVariance: UnsafeMutablePointer<Float>!
    private var observedBatches: UnsafeMutablePointer<Float>!

    private var savedInput: UnsafePointer<Float>!   // [N, C, H, W], valid until backward
    private var trainedLast = false
    private let output = FloatBuffer()              // [N, C, H, W]
    private var inputGradient = FloatBuffer()       // [N, C, H, W]
    private let mean: FloatBuffer                   // [C]: batch mean (training) or running mean (inference)
    private let inverseDeviation: FloatBuffer       // [C]: 1 / sqrt(variance + epsilon) of the statistics used

    /// Normalises the channels of samples of shape `input`; throws a `ModelError` naming `name`
    /// for a non-positive epsilon or a momentum outside [0, 1].
    public init(input: FeatureShape, spec: BatchNormSpec = BatchNormSpec(), name: String = "BatchNorm") throws {
        guard spec.epsilon > 0, spec.epsilon.isFinite else {
            throw ModelError(layer: name, message: "epsilon must be positive, found \(spec.epsilon)")
        }
        if let momentum = spec.momentum, !(momentum >= 0 && momentum <= 1) {
            throw ModelError(layer: name, message: "momentum must be between 0 and 1, found \(momentum)")
        }
        self.inputShape = input
        self.epsilon = Float(spec.epsilon)
        self.momentum = spec.momentum.map(Float.init)
        self.affine = spec.affine
        mean = FloatBuffer(count: input.channels)
        inverseDeviation = FloatBuffer(count: input.channels)
    }

    private var channels: Int { inputShape.channels }
    private var plane: Int { inputShape.spatialCount }

    public var summary: String {
        let kind = plane == 1 || inputShape.spatialRank == 1 ? "BatchNorm1d" : inputShape.spatialRank == 3 ? "BatchNorm3d" : "BatchNorm2d"
        return kind + "(\(channels))"
    }

    public var parameterSpecs: [ParameterSpec] {
        guard affine else { return [] }
        return [ParameterSpec(name: "weight", shape: [channels], initialiser: .ones),
                ParameterSpec(name: "bias", shape: [channels], initialiser: .zeros)]
    }

    public var stateSpecs: [ParameterSpec] {
        [ParameterSpec(name: "running_mean", shape: [channels], initialiser: .zeros),
         ParameterSpec(name: "running_var", shape: [channels], initialiser: .ones),
         ParameterSpec(name: "num_batches_tracked", shape: [], initialiser: .zeros)]
    }

    public var forwardFLOPs: Int { 4 * inputShape.count }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        guard affine else { return }
        weight = parameters
        bias = parameters + channels
        weightGradient = gradients
        biasGradient = gradients + channels
    }

    public func bind(state: UnsafeMutablePointer<Float>, observations: UnsafeMutablePointer<Float>) {
        runningMean = state
        runningVariance = state + channels
        observedMean = observations
        observedVariance = observations + channels
        observedBatches = observations + 2 * channels
    }

    /// running = (1 - momentum) * running + momentum * observed, and one more batch tracked.
    /// A slice whose batch count is zero saw no training pass and leaves the state unchanged.
    public func applyObservations(_ observed: UnsafePointer<Float>, to state: UnsafeMutablePointer<Float>) {
        let batches = state + 2 * channels
        guard observed[2 * channels] > 0 else { return }
        batches.pointee += 1
        let factor = momentum ?? 1 / batches.pointee
        for c in 0..<(2 * channels) {
            state[c] = (1 - factor) * state[c] + factor * observed[c]
        }
    }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        savedInput = input
        trainedLast = context.mode == .training
        let count = batch * inputShape.count
        let out = output.reserve(count)
        let means = mean.pointer, inverse = inverseDeviation.pointer
        let m = batch * plane
        if trainedLast {
            for c in 0..<channels {
                var sum = 0.0
                for n in 0..<batch { sum += Reduction.sum(input + (n * channels + c) * plane, count: plane) }
                let mu = Float(sum / Double(m))
                var squares = 0.0
                for n in 0..<batch {
                    squares += Reduction.squaredDeviations(input + (n * channels + c) * plane, count: plane, mean: mu)
                }
                let variance = squares / Double(m)
                means[c] = mu
                inverse[c] = Float(1 / (variance + Double(epsilon)).squareRoot())
                observedMean[c] = mu
                // PyTorch tracks the unbiased variance; one value per channel has none, so record 0.
                observedVariance[c] = m > 1 ? Float(squares / Double(m - 1)) : 0
            }
            observedBatches.pointee = 1
        } else {
            for c in 0..<channels {
                means[c] = runningMean[c]
                inverse[c] = 1 / (runningVariance[c] + epsilon).squareRoot()
            }
        }
        // y = (x - mean) * inverse * weight + bias = x * scale + shift
        for n in 0..<batch {
            for c in 0..<channels {
                let scale = inverse[c] * (weight?[c] ?? 1)
                let shift = (bias?[c] ?? 0) - means[c] * scale
                let x = input + (n * channels + c) * plane
                let y = out + (n * channels + c) * plane
                VectorKernels.affine(x, scale: scale, shift: shift, into: y, count: plane)
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let dInput = inputGradient.reserve(batch * inputShape.count)
        let means = mean.pointer, inverse = inverseDeviation.pointer
        let m = Float(batch * plane)
        for c in 0..<channels {
            // Sums over the channel's m values: dy and dy * (x - mean).
            var sumDy = 0.0, sumDyCentred = 0.0
            for n in 0..<batch {
                let offset = (n * channels + c) * plane
                let sums = Reduction.sumAndCentredDot(outputGradient + offset, savedInput + offset, count: plane, mean: means[c])
                sumDy += sums.sum
                sumDyCentred += sums.centredDot
            }
            let gamma = weight?[c] ?? 1
            let invStd = inverse[c]
            // d(weight) = sum dy * xhat, with xhat = (x - mean) * invStd; d(bias) = sum dy.
            weightGradient?[c] += Float(sumDyCentred) * invStd
            biasGradient?[c] += Float(sumDy)
            if trainedLast {
                // Through the batch statistics: dx = gamma * invStd / m * (m dy - sum dy - xhat sum(dy xhat)).
                let meanDy = Float(sumDy) / m
                let meanDyXhat = Float(sumDyCentred) * invStd / m
                let scale = gamma * invStd
                let mu = means[c]
                for n in 0..<batch {
                    let offset = (n * channels + c) * plane
                    let dy = outputGradient + offset, x = savedInput + offset, dx = dInput + offset
                    typealias Lanes = VectorKernels.Lanes
                    let muLanes = Lanes(repeating: mu), invStdLanes = Lanes(repeating: invStd)
                    let meanDyLanes = Lanes(repeating: meanDy), meanDyXhatLanes = Lanes(repeating: meanDyXhat)
                    let scaleLanes = Lanes(repeating: scale)
                    var i = 0
                    while i + VectorKernels.width <= plane {
                        let xhat = (VectorKernels.load(x + i) - muLanes) * invStdLanes
                        let value = scaleLanes * (VectorKernels.load(dy + i) - meanDyLanes - xhat * meanDyXhatLanes)
                        VectorKernels.store(value, dx + i)
                        i += VectorKernels.width
                    }
                    while i < plane {
                        let xhat = (x[i] - mu) * invStd
                        dx[i] = scale * (dy[i] - meanDy - xhat * meanDyXhat)
                        i += 1
                    }
                }
            } else {
                // The running statistics are constants: the layer is an affine map per channel.
                let scale = gamma * invStd
                for n in 0..<batch {
                    let offset = (n * channels + c) * plane
                    VectorKernels.affine(outputGradient + offset, scale: scale, shift: 0, into: dInput + offset, count: plane)
                }
            }
        }
        return dInput
    }
}
