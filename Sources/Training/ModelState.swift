import CNN
import Checkpoint
import ConfigReading

/// The coordinator's authoritative state: master weights, optimiser, and how far the run got.
/// The single-process reference uses the same type, so both apply updates identically.
public final class ModelState {
    public let config: TrainingConfig
    public let network: Network
    public let optimizer: Optimizer
    /// Optimiser steps completed.
    public private(set) var step = 0
    /// The epoch the next step belongs to, and how many of its steps are done.
    public private(set) var epoch = 0
    public private(set) var stepInEpoch = 0

    /// The parameter ranges the optimiser updates: everything but frozen layers.
    public let trainableRanges: [Range<Int>]

    /// The state at the start of `config`'s run. Without `initialise`, the weights are left for
    /// `restore` to write, which sets every one of them or throws: drawing VGG-16's initial
    /// weights only to overwrite them cost a resume seconds.
    public init(config: TrainingConfig, initialise: Bool = true) throws {
        self.config = config
        network = try Network(config.model)
        if initialise { network.initialise(seed: config.train.seed) }
        trainableRanges = try ModelState.trainableRanges(of: network, freezing: config.train.freeze)
        optimizer = ModelState.makeOptimizer(config.train.optimizer, parameterCount: network.parameterCount)
    }

    /// The parameter ranges of `network` outside the layers named in `frozen`.
    static func trainableRanges(of network: Network, freezing frozen: [String]) throws -> [Range<Int>] {
        var trainable: [Range<Int>] = []
        var start = 0
        for range in try network.frozenParameterRanges(frozen) {
            if range.lowerBound > start { trainable.append(start..<range.lowerBound) }
            start = range.upperBound
        }
        if start < network.parameterCount { trainable.append(start..<network.parameterCount) }
        return trainable
    }

    /// The configured rule over `parameterCount` parameters (all of them, or one slice's).
    static func makeOptimizer(_ o: OptimizerConfig, parameterCount: Int) -> Optimizer {
        switch o.name {
        case "adam", "adamw":
            return Adam(
                parameterCount: parameterCount, beta1: Float(o.beta1), beta2: Float(o.beta2),
                epsilon: Float(o.epsilon), weightDecay: Float(o.weightDecay), decoupled: o.name == "adamw")
        default:
            return SGD(
                parameterCount: parameterCount, momentum: Float(o.momentum), nesterov: o.nesterov,
                weightDecay: Float(o.weightDecay))
        }
    }

    public var parameterCount: Int { network.parameterCount }
    /// Floats in a weights message: parameters, then state.
    public var weightsCount: Int { network.parameterCount + network.stateCount }

    /// Writes parameters then state into `buffer` (`weightsCount` floats).
    public func copyWeights(into buffer: UnsafeMutablePointer<Float>) {
        buffer.update(from: network.parameters.pointer, count: network.parameterCount)
        (buffer + network.parameterCount).update(from: network.state.pointer, count: network.stateCount)
    }

    /// The rate of the next step. Schedules span the configured epochs; `train.steps` only stops a
    /// run early and never changes the rate, so a run stopped and resumed with more steps matches
    /// one that ran straight through.
    public func learningRate(stepsPerEpoch: Int) -> Float {
        // Saturates: an open-ended run (the benchmark's Int.max steps per epoch) has no last step.
        let (product, overflow) = config.train.epochs.multipliedReportingOverflow(by: stepsPerEpoch)
        let total = overflow ? Int.max : product
        return Float(config.train.schedule.learningRate(
            base: config.train.optimizer.learningRate, step: step, epoch: epoch, totalSteps: total))
    }

    /// Floats in a gradient leaf or partial sum: parameter gradients, then state observations.
    public var leafLength: Int { network.parameterCount + network.stateCount }

    /// Applies one step's mean leaf (`leafLength` floats: the gradient, then the mean state
    /// observations) and advances the counters.
    public func apply(meanGradient: UnsafeMutablePointer<Float>, stepsPerEpoch: Int) {
        if config.train.clipGradientNorm > 0 {
            // Clipping sees only what trains: frozen layers' gradients are zeroed first.
            var cursor = 0
            for range in trainableRanges {
                if range.lowerBound > cursor { (meanGradient + cursor).update(repeating: 0, count: range.lowerBound - cursor) }
                cursor = range.upperBound
            }
            if cursor < network.parameterCount { (meanGradient + cursor).update(repeating: 0, count: network.parameterCount - cursor) }
            _ = GradientClipping.clipGlobalNorm(meanGradient, count: network.parameterCount, maxNorm: Float(config.train.clipGradientNorm))
        }
        optimizer.step(
            parameters: network.parameters.pointer, gradients: meanGradient, count: network.parameterCount,
            learningRate: learningRate(stepsPerEpoch: stepsPerEpoch), ranges: trainableRanges)
        network.applyObservations(meanGradient + network.parameterCount)
        advance(stepsPerEpoch: stepsPerEpoch)
    }

    /// Counts a step applied elsewhere (by the slice owners of the sharded reduction).
    public func advance(stepsPerEpoch: Int) {
        step += 1
        stepInEpoch += 1
        if stepInEpoch == stepsPerEpoch {
            epoch += 1
            stepInEpoch = 0
        }
    }

    /// Whether the run has done all it was asked to.
    public func isFinished(stepsPerEpoch: Int) -> Bool {
        if config.train.maxSteps > 0 && step >= config.train.maxSteps { return true }
        return epoch >= config.train.epochs
    }

    // MARK: Checkpoints

    /// Model tensors named as PyTorch names them.
    public func modelTensors() -> [NamedTensor] {
        let p = network.parameters.pointer, s = network.state.pointer
        return network.parameterSlots.map { slot in
            NamedTensor(name: slot.name, shape: slot.shape, dtype: .float32,
                        values: Array(UnsafeBufferPointer(start: p + slot.offset, count: slot.count)))
        } + network.stateSlots.map { slot in
            NamedTensor(name: slot.name, shape: slot.shape, dtype: slot.name.hasSuffix("num_batches_tracked") ? .int64 : .float32,
                        values: Array(UnsafeBufferPointer(start: s + slot.offset, count: slot.count)))
        }
    }

    /// Optimiser state cut per parameter: "0.weight.momentum_buffer" and so on.
    public func optimizerTensors() -> [NamedTensor] {
        var tensors: [NamedTensor] = []
        for (name, values) in optimizer.stateTensors {
            if values.count == network.parameterCount {
                for slot in network.parameterSlots {
                    tensors.append(NamedTensor(name: "\(slot.name).\(name)", shape: slot.shape, dtype: .float32,
                                               values: Array(values[slot.offset..<(slot.offset + slot.count)])))
                }
            } else {
                tensors.append(NamedTensor(name: name, shape: [values.count], dtype: .float32, values: values))
            }
        }
        return tensors
    }

    /// Restores weights, optimiser state and counters from a checkpoint.
    public func restore(from checkpoint: LoadedCheckpoint) throws {
        for slot in network.parameterSlots {
            let values = try tensor(checkpoint.model, slot.name, count: slot.count, path: checkpoint.path)
            (network.parameters.pointer + slot.offset).update(from: values, count: slot.count)
        }
        for slot in network.stateSlots {
            let values = try tensor(checkpoint.model, slot.name, count: slot.count, path: checkpoint.path)
            (network.state.pointer + slot.offset).update(from: values, count: slot.count)
        }
        var state: [String: [Float]] = [:]
        for (name, values) in optimizer.stateTensors {
            if values.count == network.parameterCount {
                var whole = [Float](repeating: 0, count: values.count)
                for slot in network.parameterSlots {
                    let part = try tensor(checkpoint.optimizer, "\(slot.name).\(name)", count: slot.count, path: checkpoint.path)
                    whole.replaceSubrange(slot.offset..<(slot.offset + slot.count), with: part)
                }
                state[name] = whole
            } else {
                state[name] = try tensor(checkpoint.optimizer, name, count: values.count, path: checkpoint.path)
            }
        }
        try optimizer.restore(state)
        step = checkpoint.state.step
        epoch = checkpoint.state.epoch
        stepInEpoch = checkpoint.state.positionInEpoch / config.train.batch
    }

    /// Loads only weights (for `--init`), by name, ignoring optimiser state.
    public func loadWeights(_ file: SafeTensorsFile, source: String) throws {
        for slot in network.parameterSlots {
            let values = try tensor(file, slot.name, count: slot.count, path: source)
            (network.parameters.pointer + slot.offset).update(from: values, count: slot.count)
        }
        for slot in network.stateSlots {
            if let values = try? tensor(file, slot.name, count: slot.count, path: source) {
                (network.state.pointer + slot.offset).update(from: values, count: slot.count)
            }
        }
    }

    private func tensor(_ file: SafeTensorsFile, _ name: String, count: Int, path: String) throws -> [Float] {
        guard let tensor = file[name] else {
            throw ConfigError(file: path, line: nil,
                              message: "has no tensor '\(name)' that this model needs; was it written for another model?")
        }
        guard tensor.values.count == count else {
            throw ConfigError(file: path, line: nil,
                              message: "tensor '\(name)' has \(tensor.values.count) values, the model needs \(count) (shape \(tensor.shape))")
        }
        return tensor.values
    }
}
