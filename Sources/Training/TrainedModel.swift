import CNN
import Checkpoint
import ConfigReading
import Foundation
import UsageErrors

/// A trained model named on a command line (`cnn predict`, `cnn export`): a checkpoint directory,
/// whose run's `config.yaml` says what the model is unless `--config` does, or a plain safetensors
/// file of weights (torchvision's `state_dict`, `cnn export --safetensors`) with `--config`.
public struct TrainedModel {
    public var config: TrainingConfig
    /// The model with the weights and running statistics loaded.
    public var state: ModelState
    /// The step of the checkpoint, nil for a plain weights file.
    public var step: Int?
    /// The class names the checkpoint records (a folder data set's), nil where it records none.
    public var classNames: [String]?

    public var network: Network { state.network }

    /// Loads `path` (a checkpoint directory or a `.safetensors` file) with `configPath` or, for a
    /// checkpoint, the config of its run. A file must name every parameter of the model with its
    /// shape (unless the config sets `train.init_skip_mismatched`); running statistics it lacks keep
    /// their initial values, tensors the model does not use (torchvision GoogLeNet's auxiliary
    /// heads) are ignored.
    /// `adjust` may change the config before the model is built (`cnn predict --input-size`).
    public static func load(
        _ path: String, configPath: String?, adjust: (inout TrainingConfig) throws -> Void = { _ in }
    ) throws -> TrainedModel {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw UsageError("\(path): no such checkpoint directory or safetensors file")
        }
        if isDirectory.boolValue {
            let loaded = try CheckpointStore.load(directory: path)
            let configFile = configPath ?? URL(fileURLWithPath: path).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("config.yaml").path
            guard FileManager.default.fileExists(atPath: configFile) else {
                throw UsageError("\(configFile): no config beside the checkpoint; pass the run's config with --config")
            }
            var config = try TrainingConfig.load(path: configFile)
            try adjust(&config)
            let state = try ModelState(config: config)
            try state.loadWeights(loaded.model, source: path)
            return TrainedModel(config: config, state: state, step: loaded.state.step, classNames: loaded.state.classNames)
        }
        guard let configPath else {
            throw UsageError("\(path) is a weights file, which does not say what the model is; "
                + "pass the model's config with --config (for torchvision's weights, a config with model: {zoo: resnet18} or the like)")
        }
        var config = try TrainingConfig.load(path: configPath)
        try adjust(&config)
        let state = try ModelState(config: config)
        // As `--init` would start a run of this config: with `train.init_skip_mismatched`, a head of
        // another shape keeps its fresh initialisation (the model before fine-tuning).
        _ = try state.loadInitialWeights(from: path, skipMismatched: config.train.initSkipMismatched)
        return TrainedModel(config: config, state: state, step: nil, classNames: nil)
    }
}
