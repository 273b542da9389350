import CNN
import Checkpoint
import ConfigReading
import Foundation

// Transfer learning: start from weights trained elsewhere (`--init`, a safetensors file or a
// checkpoint directory) and give the model a new head. With `skipMismatched` (config key
// `train.init_skip_mismatched`), a tensor whose shape in the file differs from the model's (a
// classifier for another number of classes) keeps its fresh initialisation instead of stopping
// the run; `train.freeze` keeps the loaded layers fixed.

/// What `--init` did: which tensors came from the file and which kept their fresh values.
public struct InitialWeightsReport: Sendable, Equatable {
    /// A model tensor left at its initialisation because the file's differs in shape.
    public struct Skipped: Sendable, Equatable {
        public var name: String
        public var fileShape: [Int]
        public var modelShape: [Int]
    }

    /// The file that was read (a checkpoint directory resolves to its `model.safetensors`).
    public var source: String
    public var loaded: [String] = []
    public var skipped: [Skipped] = []
    /// Running statistics the file does not have; they keep their initial values.
    public var missingState: [String] = []
    /// Tensors of the file that the model has no use for.
    public var unused: [String] = []

    /// Log lines: one summary and one per skipped tensor.
    public var lines: [String] {
        var lines = ["initial weights from \(source): \(loaded.count) tensors loaded, \(skipped.count) kept fresh"
            + (unused.isEmpty ? "" : ", \(unused.count) in the file unused")]
        for s in skipped {
            lines.append("  \(s.name): the file has shape \(s.fileShape), the model \(s.modelShape); kept its fresh initialisation")
        }
        return lines
    }
}

extension ModelState {
    /// Loads starting weights by name for `--init` from a safetensors file or a checkpoint
    /// directory (its `model.safetensors`). Tensors whose shapes differ are skipped (and
    /// reported) with `skipMismatched`, else they are an error naming the tensor and the config
    /// key; a parameter the file lacks is always an error. Nothing changes unless all is well.
    public func loadInitialWeights(from path: String, skipMismatched: Bool) throws -> InitialWeightsReport {
        var isDirectory: ObjCBool = false
        var file = path
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            file = (path as NSString).appendingPathComponent("model.safetensors")
            guard FileManager.default.fileExists(atPath: file) else {
                throw ConfigError(file: path, line: nil,
                                  message: "is a directory without model.safetensors; give a checkpoint directory "
                                      + "(runs/NAME/checkpoints/step-...) or a .safetensors file")
            }
        }
        return try loadInitialWeights(try SafeTensors.read(path: file), source: file, skipMismatched: skipMismatched)
    }

    /// Loads starting weights from an already read file; see `loadInitialWeights(from:skipMismatched:)`.
    public func loadInitialWeights(_ file: SafeTensorsFile, source: String, skipMismatched: Bool) throws -> InitialWeightsReport {
        var report = InitialWeightsReport(source: source)
        let hint = "; to start a new head (another number of classes) from its fresh initialisation, "
            + "set train.init_skip_mismatched: true"
        var updates: [(pointer: UnsafeMutablePointer<Float>, values: [Float])] = []
        let groups: [(slots: [TensorSlot], buffer: UnsafeMutablePointer<Float>, isState: Bool)] = [
            (network.parameterSlots, network.parameters.pointer, false), (network.stateSlots, network.state.pointer, true),
        ]
        for group in groups {
            for slot in group.slots {
                guard let tensor = file[slot.name] else {
                    if group.isState {
                        report.missingState.append(slot.name)
                        continue
                    }
                    throw ConfigError(file: source, line: nil,
                                      message: "has no tensor '\(slot.name)' (shape \(slot.shape)) that this model needs; "
                                          + "was it written for another model?")
                }
                guard tensor.values.count == slot.count, tensor.shape.reduce(1, *) == slot.count else {
                    guard skipMismatched else {
                        throw ConfigError(file: source, line: nil,
                                          message: "tensor '\(slot.name)' has shape \(tensor.shape), the model needs \(slot.shape) (\(tensor.values.count) values in the file, \(slot.count) in the model)\(hint)")
                    }
                    report.skipped.append(.init(name: slot.name, fileShape: tensor.shape, modelShape: slot.shape))
                    continue
                }
                updates.append((group.buffer + slot.offset, tensor.values))
                report.loaded.append(slot.name)
            }
        }
        guard !report.loaded.isEmpty || (network.parameterSlots.isEmpty && network.stateSlots.isEmpty) else {
            throw ConfigError(file: source, line: nil, message: "no tensor of the file fits this model; was it written for another model?")
        }
        // Nothing is written until every tensor is known to fit, so a refused file leaves the model as it was.
        for update in updates { update.pointer.update(from: update.values, count: update.values.count) }
        let used = Set(report.loaded + report.skipped.map(\.name))
        report.unused = file.tensors.map(\.name).filter { !used.contains($0) }
        return report
    }
}
