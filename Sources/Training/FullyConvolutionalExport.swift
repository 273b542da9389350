import CNN
import ConfigReading
import Checkpoint
import Foundation
import ModelDescription

/// `cnn convert --fully-convolutional`: a trained model with its dense layers turned into
/// convolutions (`FullyConvolutionalModel`), written as a run directory of its own: `config.yaml`
/// with the converted layers and `checkpoints/step-N/` with the same weights, reshaped and renamed.
public enum FullyConvolutionalExport {
    /// The converted config and a model state holding the checkpoint's weights.
    public static func convert(config: TrainingConfig, weights: SafeTensorsFile, source: String) throws -> (TrainingConfig, ModelState) {
        let conversion: FullyConvolutionalModel
        do {
            conversion = try FullyConvolutionalModel(converting: config.model)
        } catch let error as ModelError {
            throw ConfigError(file: source, line: nil, message: "cannot make the model fully convolutional: \(error)")
        }
        var converted = config
        converted.model = conversion.model
        let state = try ModelState(config: converted)
        try copy(weights, into: state, conversion: conversion, source: source)
        return (converted, state)
    }

    /// Fills `state`'s network from the original model's tensors: each tensor of the converted
    /// model is the original one of the same values under its original name.
    public static func copy(_ weights: SafeTensorsFile, into state: ModelState, conversion: FullyConvolutionalModel, source: String) throws {
        let network = state.network
        for (slots, buffer) in [(network.parameterSlots, network.parameters.pointer), (network.stateSlots, network.state.pointer)] {
            for slot in slots {
                let name = conversion.originalName(of: slot.name)
                guard let tensor = weights[name] else {
                    throw ConfigError(file: source, line: nil, message: "the checkpoint has no tensor \(name) (for \(slot.name) of the converted model)")
                }
                guard tensor.values.count == slot.count else {
                    throw ConfigError(
                        file: source, line: nil,
                        message: "\(name) has \(tensor.values.count) values but \(slot.name) \(slot.shape) needs \(slot.count); is this the run's config?")
                }
                (buffer + slot.offset).update(from: tensor.values, count: slot.count)
            }
        }
    }

    /// Converts the checkpoint in `checkpoint` (with `configPath`, or the run's config.yaml) and
    /// writes `out/config.yaml` and `out/checkpoints/step-N`; returns that checkpoint's path.
    public static func run(checkpoint: String, configPath: String?, out: String) throws -> String {
        let loaded = try CheckpointStore.load(directory: checkpoint)
        let configFile = configPath ?? URL(fileURLWithPath: checkpoint).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("config.yaml").path
        guard FileManager.default.fileExists(atPath: configFile) else {
            throw ConfigError(file: configFile, line: nil, message: "no config beside the checkpoint; pass the run's config with --config")
        }
        let config = try TrainingConfig.load(path: configFile)
        let (converted, state) = try convert(config: config, weights: loaded.model, source: checkpoint)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        try converted.yaml.write(toFile: out + "/config.yaml", atomically: true, encoding: .utf8)
        let written = CheckpointState(
            step: loaded.state.step, epoch: loaded.state.epoch, positionInEpoch: loaded.state.positionInEpoch,
            configHash: converted.hash, createdBy: "cnn convert \(Version.current)",
            extra: ["converted_from": checkpoint, "conversion": "fully-convolutional"])
        return try CheckpointStore(runDirectory: out, keep: 1).save(
            step: loaded.state.step, model: state.modelTensors(), optimizer: [], state: written)
    }
}
