import CNN
import Checkpoint
import Foundation

/// Transfer learning: start from weights trained elsewhere (`--init`, a safetensors file or a
/// checkpoint directory), keep named layers fixed, and give the model a new head.
///
/// Config keys, under `train`:
/// - `freeze: ["0", "4.conv1"]`: layer names (prefixes of tensor names, as in the checkpoint) whose
///   parameters never change. Running statistics of frozen BatchNorm layers still follow the
///   data, as with PyTorch's `requires_grad = False`.
/// - `init_skip_mismatched: true`: with `--init`, a tensor whose shape in the file differs from the
///   model's (a classifier head for another number of classes) keeps its fresh initialisation
///   instead of stopping the run.
public struct TransferConfig: Sendable, Equatable {
    public var freeze: [String] = []
    public var initSkipMismatched: Bool = false

    public init(freeze: [String] = [], initSkipMismatched: Bool = false) {
        self.freeze = freeze
        self.initSkipMismatched = initSkipMismatched
    }

    /// The keys `parseTransfer` reads from the `train` section.
    public static let keys = ["freeze", "init_skip_mismatched"]

    /// Lines for the `train` section of the resolved YAML (indented by two spaces); none for the
    /// defaults, so configs without transfer learning render as before.
    public var yamlLines: [String] {
        var lines: [String] = []
        if !freeze.isEmpty {
            lines.append("  freeze: [\(freeze.map { "\"\($0)\"" }.joined(separator: ", "))]")
        }
        if initSkipMismatched { lines.append("  init_skip_mismatched: true") }
        return lines
    }
}

extension TrainingConfig {
    /// Reads `train.freeze` and `train.init_skip_mismatched` from the `train` section (whose
    /// `expectKeys` must include `TransferConfig.keys`), checking every frozen name against `model`.
    static func parseTransfer(_ node: ConfigNode, model: ModelSpec) throws -> TransferConfig {
        var transfer = TransferConfig()
        if let n = try node.child("init_skip_mismatched") { transfer.initSkipMismatched = try n.bool() }
        if let n = try node.child("freeze") {
            let items = n.isScalar ? [n] : try n.items()
            let names = try parameterNames(of: model)
            for item in items {
                let name = try item.string()
                guard names.contains(where: { $0 == name || $0.hasPrefix(name + ".") }) else {
                    var message = "\(item.path): no layer named '\(name)' owns parameters, so it cannot be frozen"
                    let layers = freezableNames(names)
                    if let guess = closest(name, among: layers) { message += " (did you mean '\(guess)'?)" }
                    message += "; names that can: \(abbreviated(layers))"
                    throw item.error(message)
                }
                transfer.freeze.append(name)
            }
        }
        return transfer
    }

    /// The parameter tensor names of `model` ("0.weight", "4.conv1.weight"), found without
    /// allocating any parameter.
    static func parameterNames(of model: ModelSpec) throws -> [String] {
        var names: [String] = []
        var shape = model.input
        for (index, spec) in model.layers.enumerated() {
            let layer = try spec.makeLayer(input: shape, name: "model.layers[\(index)]")
            names += layer.parameterSpecs.map { "\(index).\($0.name)" }
            shape = layer.outputShape
        }
        return names
    }

    /// Every layer path that owns parameters ("0", "4", "4.conv1", "4.downsample.0"), in order.
    private static func freezableNames(_ tensors: [String]) -> [String] {
        var names: [String] = []
        var seen = Set<String>()
        for tensor in tensors {
            let parts = tensor.split(separator: ".")
            for end in 1..<max(parts.count, 2) {
                let prefix = parts[..<end].joined(separator: ".")
                if seen.insert(prefix).inserted { names.append(prefix) }
            }
        }
        return names
    }

    private static func abbreviated(_ names: [String]) -> String {
        names.count <= 40 ? names.joined(separator: ", ") : names.prefix(40).joined(separator: ", ") + ", ... (\(names.count) in all)"
    }
}

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
    /// reported) when `config.train`'s transfer settings say `init_skip_mismatched`, else they
    /// are an error naming the tensor and that key; a parameter the file lacks is always an error.
    public func loadInitialWeights(from path: String, transfer: TransferConfig) throws -> InitialWeightsReport {
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
        return try loadInitialWeights(try SafeTensors.read(path: file), source: file, transfer: transfer)
    }

    /// Loads starting weights from an already read file; see `loadInitialWeights(from:transfer:)`.
    public func loadInitialWeights(_ file: SafeTensorsFile, source: String, transfer: TransferConfig) throws -> InitialWeightsReport {
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
                    guard transfer.initSkipMismatched else {
                        throw ConfigError(file: source, line: nil,
                                          message: "tensor '\(slot.name)' has shape \(tensor.shape), the model needs \(slot.shape)\(hint)")
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

/// Keeps the parameters of frozen layers bit-identical across optimiser steps, whatever the
/// optimiser does to them (momentum, weight decay, Adam's moments): the values are saved before
/// the update and written back after it.
public struct FrozenParameters: Sendable, Equatable {
    /// Sorted, merged ranges of the flat parameter vector that stay fixed.
    public let ranges: [Range<Int>]

    /// The parameters owned by the layers named in `names` (see `Network.frozenParameterRanges`).
    public init(network: Network, names: [String]) throws {
        ranges = names.isEmpty ? [] : try network.frozenParameterRanges(names)
    }

    public var isEmpty: Bool { ranges.isEmpty }
    /// How many parameters stay fixed.
    public var count: Int { ranges.reduce(0) { $0 + $1.count } }

    /// Runs `update` (an optimiser step on `parameters`), then restores the frozen values.
    public func preserving<Result>(_ parameters: UnsafeMutablePointer<Float>, during update: () throws -> Result) rethrows -> Result {
        guard !ranges.isEmpty else { return try update() }
        let saved = ranges.map { Array(UnsafeBufferPointer(start: parameters + $0.lowerBound, count: $0.count)) }
        let result = try update()
        for (range, values) in zip(ranges, saved) {
            (parameters + range.lowerBound).update(from: values, count: range.count)
        }
        return result
    }

    /// Zeroes the frozen entries of a gradient, so that a gradient norm (clipping, logging)
    /// measures only what trains.
    public func zeroFrozen(_ gradient: UnsafeMutablePointer<Float>) {
        for range in ranges { (gradient + range.lowerBound).update(repeating: 0, count: range.count) }
    }
}
