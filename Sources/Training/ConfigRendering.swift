import CNN
import ModelDescription

extension TrainingConfig {
    /// The resolved config as YAML that `parse` reads back to an equal config: written to the run
    /// directory and sent to every worker.
    public var yaml: String {
        var lines: [String] = []
        let input = model.input
        lines.append("model:")
        lines.append("  input: [" + input.dimensions.map(String.init).joined(separator: ", ") + "]")
        lines.append("  layers:")
        for layer in model.layers { lines.append("    - \(ModelConfig.render(layer))") }
        lines.append("data:")
        lines.append("  dataset: \(data.dataset)")
        lines.append("  path: \"\(data.path)\"")
        lines.append("  shuffle: \(data.shuffle)")
        let a = data.augmentation
        if a.isIdentity {
            lines.append("  augment: none")
        } else {
            lines.append("  augment: {crop_padding: \(a.cropPadding), horizontal_flip: \(a.horizontalFlip), "
                + "vertical_flip: \(a.verticalFlip), max_translation: \(a.maxTranslation), "
                + "brightness: \(a.brightness), contrast: \(a.contrast)}")
        }
        lines.append("  synthetic_train: \(data.syntheticTrain)")
        lines.append("  synthetic_test: \(data.syntheticTest)")
        // Only when set, so the rendering (and hash) of every earlier config stays as it was.
        if let mean = data.mean { lines.append("  mean: \(mean)") }
        if let deviation = data.standardDeviation { lines.append("  std: \(deviation)") }
        if data.skipBadFiles { lines.append("  skip_bad_files: true") }
        if data.prefetch != DataConfig().prefetch { lines.append("  prefetch: \(data.prefetch)") }
        if let transforms = data.transforms { lines.append("  transforms: \(Self.renderTransforms(transforms))") }
        let o = train.optimizer
        lines.append("train:")
        lines.append("  epochs: \(train.epochs)")
        lines.append("  batch: \(train.batch)")
        lines.append("  micro_batch: \(train.microBatch)")
        lines.append("  seed: \(train.seed)")
        lines.append("  optimizer: {name: \(o.name), lr: \(o.learningRate), momentum: \(o.momentum), nesterov: \(o.nesterov), "
            + "weight_decay: \(o.weightDecay), beta1: \(o.beta1), beta2: \(o.beta2), epsilon: \(o.epsilon)}")
        lines.append("  schedule: \(train.schedule.yaml)")
        lines.append("  log_every: \(train.logEvery)")
        lines.append("  eval_batch: \(train.evalBatch)")
        lines.append("  steps: \(train.maxSteps)")
        lines.append("  clip_grad_norm: \(train.clipGradientNorm)")
        lines.append("  init_skip_mismatched: \(train.initSkipMismatched)")
        lines.append("  freeze: [\(train.freeze.map { "\"\($0)\"" }.joined(separator: ", "))]")
        // Only when set, so the rendering (and hash) of every earlier config stays as it was.
        if train.precision != .fp32 { lines.append("  precision: \(train.precision.rawValue)") }
        lines.append("distributed:")
        lines.append("  worker_timeout: \(distributed.workerTimeout)")
        lines.append("  heartbeat_interval: \(distributed.heartbeatInterval)")
        lines.append("  join_timeout: \(distributed.joinTimeout)")
        lines.append("  nonfinite_gradients: \(distributed.nonFinite.rawValue)")
        lines.append("  max_workers: \(distributed.maxWorkers)")
        lines.append("  max_messages_per_second: \(distributed.maxMessagesPerSecond)")
        // Only when not the default, so that the rendering (and the config's hash) of a run
        // that names neither strategy stays as it was.
        if distributed.reduction != DistributedConfig().reduction { lines.append("  reduction: \(distributed.reduction.rawValue)") }
        if distributed.wirePrecision != .fp32 { lines.append("  wire_precision: \(distributed.wirePrecision.rawValue)") }
        lines.append("checkpoint:")
        lines.append("  every: \(checkpoint.every)")
        lines.append("  keep: \(checkpoint.keep)")
        return lines.joined(separator: "\n") + "\n"
    }
}
