import CNN
import Foundation

/// The figures `cnn summary` prints for one top-level layer.
public struct LayerSummary: Sendable, Equatable {
    public var index: Int
    /// The layer's description: "Conv2D(32, 3x3, s1, p1)", "BasicBlock(64)".
    public var name: String
    public var outputShape: FeatureShape
    public var parameters: Int
    /// Non-trainable values (BatchNorm running statistics).
    public var state: Int
    /// Multiply-adds count as 2 FLOPs; one sample, forward only.
    public var forwardFLOPs: Int
    /// Floats per sample kept from the forward pass for the backward pass.
    public var savedFloatsPerSample: Int
}

/// A model's layers, shapes, parameters, FLOPs and the memory training needs: activations kept for
/// backward (per sample, and for the configured batch), parameters, gradients and optimiser state.
///
/// The layers are built without allocating their parameters, so summarising VGG-16 costs
/// nothing like its 553 MB of weights.
public struct ModelSummary: Sendable {
    public var input: FeatureShape
    public var layers: [LayerSummary]
    public var parameters: Int
    public var state: Int
    /// The configured global batch (`train.batch`).
    public var batch: Int
    /// The configured micro-batch (`train.micro_batch`): what one worker thread holds at once.
    public var microBatch: Int
    /// Floats of optimiser state per parameter (SGD with momentum: 1, Adam: 2, plain SGD: 0).
    public var optimizerStatePerParameter: Int
    public var optimizerName: String

    /// Summarises `model` trained in batches of `batch` samples cut into micro-batches of
    /// `microBatch`, by an optimiser named `optimizerName` that keeps `optimizerStatePerParameter`
    /// floats per parameter. (Training builds one from a whole config: `ModelSummary(config:)`.)
    public init(model: ModelSpec, batch: Int, microBatch: Int, optimizerName: String, optimizerStatePerParameter: Int) throws {
        input = model.input
        var shape = model.input
        var summaries: [LayerSummary] = []
        for (index, spec) in model.layers.enumerated() {
            let layer = try spec.makeLayer(input: shape, name: "model.layers[\(index)]")
            summaries.append(LayerSummary(
                index: index, name: layer.summary, outputShape: layer.outputShape, parameters: layer.parameterCount,
                state: layer.stateCount, forwardFLOPs: layer.forwardFLOPs, savedFloatsPerSample: layer.savedFloatsPerSample))
            shape = layer.outputShape
        }
        layers = summaries
        parameters = summaries.reduce(0) { $0 + $1.parameters }
        state = summaries.reduce(0) { $0 + $1.state }
        self.batch = batch
        self.microBatch = microBatch
        self.optimizerName = optimizerName
        self.optimizerStatePerParameter = optimizerStatePerParameter
    }

    private static let floatBytes = MemoryLayout<Float>.stride

    public var forwardFLOPsPerSample: Int { layers.reduce(0) { $0 + $1.forwardFLOPs } }
    /// Activations kept for backward, including the input the first layer reads again.
    public var activationBytesPerSample: Int { Self.floatBytes * layers.reduce(input.count) { $0 + $1.savedFloatsPerSample } }
    public var activationBytesPerBatch: Int { batch * activationBytesPerSample }
    public var parameterBytes: Int { Self.floatBytes * parameters }
    public var gradientBytes: Int { Self.floatBytes * parameters }
    public var optimizerBytes: Int { Self.floatBytes * parameters * optimizerStatePerParameter }
    public var stateBytes: Int { Self.floatBytes * state }
    /// Parameters, gradients, optimiser state and running statistics: independent of the batch.
    public var fixedTrainingBytes: Int { parameterBytes + gradientBytes + optimizerBytes + stateBytes }
    /// What training one sample at a time needs.
    public var trainingBytesPerSample: Int { fixedTrainingBytes + activationBytesPerSample }
    /// What training the whole configured batch in one pass needs.
    public var trainingBytes: Int { fixedTrainingBytes + activationBytesPerBatch }

    /// The table `cnn summary` prints.
    public var table: String {
        let header = ["#", "layer", "output (CxHxW)", "parameters", "forward FLOPs", "activations/sample",
                      "activations/batch", "weights+grads+opt"]
        var rows: [[String]] = [header]
        rows.append(["", "input", input.description, "", "", bytes(Self.floatBytes * input.count),
                     bytes(batch * Self.floatBytes * input.count), ""])
        for layer in layers {
            let saved = Self.floatBytes * layer.savedFloatsPerSample
            rows.append(["\(layer.index)", layer.name, layer.outputShape.description, grouped(layer.parameters),
                         grouped(layer.forwardFLOPs), bytes(saved), bytes(batch * saved), bytes(fixedBytes(of: layer))])
        }
        rows.append(["", "total", "", grouped(parameters), grouped(forwardFLOPsPerSample), bytes(activationBytesPerSample),
                     bytes(activationBytesPerBatch), bytes(fixedTrainingBytes)])
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = rows.map { row in
            row.enumerated().map { column, text in
                let gap = String(repeating: " ", count: widths[column] - text.count)
                return column >= 3 ? gap + text : text + gap
            }.joined(separator: "  ")
        }
        let rule = String(repeating: "-", count: lines[0].count)
        lines.insert(rule, at: 1)
        lines.insert(rule, at: lines.count - 1)
        let optimizer = optimizerStatePerParameter == 0 ? "none" : "\(optimizerStatePerParameter) per parameter (\(optimizerName))"
        lines += [
            "",
            "total parameters: \(grouped(parameters))" + (state > 0 ? " (+ \(grouped(state)) running-statistics values)" : ""),
            "forward FLOPs per sample: \(grouped(forwardFLOPsPerSample)) (a training step is about 3x that)",
            "training memory:",
            "  parameters \(bytes(parameterBytes)), gradients \(bytes(gradientBytes)), optimizer state \(bytes(optimizerBytes)) "
                + "[\(optimizer)]" + (state > 0 ? ", running statistics \(bytes(stateBytes))" : ""),
            "  activations kept for backward: \(bytes(activationBytesPerSample)) per sample, "
                + "\(bytes(microBatch * activationBytesPerSample)) per micro-batch of \(microBatch), "
                + "\(bytes(activationBytesPerBatch)) per batch of \(batch)",
            "  total: \(bytes(trainingBytesPerSample)) for one sample, \(bytes(trainingBytes)) for the batch of \(batch)",
        ]
        return lines.joined(separator: "\n")
    }

    private func fixedBytes(of layer: LayerSummary) -> Int {
        Self.floatBytes * (layer.parameters * (2 + optimizerStatePerParameter) + layer.state)
    }

    /// The same figures as JSON (`cnn summary --json`): sizes in bytes, shapes as [C, H, W] ([C, L], [C, D, H, W] for sequences, volumes).
    public var json: String {
        let document = SummaryDocument(
            input: input.dimensions,
            batch: batch,
            microBatch: microBatch,
            optimizer: optimizerName,
            optimizerStatePerParameter: optimizerStatePerParameter,
            layers: layers.map { layer in
                let saved = Self.floatBytes * layer.savedFloatsPerSample
                return SummaryDocument.Layer(
                    index: layer.index, layer: layer.name,
                    output: layer.outputShape.dimensions,
                    parameters: layer.parameters, state: layer.state, forwardFLOPs: layer.forwardFLOPs,
                    activationBytesPerSample: saved, activationBytesPerBatch: batch * saved,
                    parameterBytes: Self.floatBytes * layer.parameters, gradientBytes: Self.floatBytes * layer.parameters,
                    optimizerBytes: Self.floatBytes * layer.parameters * optimizerStatePerParameter,
                    stateBytes: Self.floatBytes * layer.state)
            },
            totals: SummaryDocument.Totals(
                parameters: parameters, state: state, forwardFLOPsPerSample: forwardFLOPsPerSample,
                activationBytesPerSample: activationBytesPerSample, activationBytesPerBatch: activationBytesPerBatch,
                parameterBytes: parameterBytes, gradientBytes: gradientBytes, optimizerBytes: optimizerBytes, stateBytes: stateBytes,
                trainingBytesPerSample: trainingBytesPerSample, trainingBytesPerBatch: trainingBytes))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        // Encoding plain integers and strings cannot fail.
        let data = (try? encoder.encode(document)) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}

/// The JSON form of a summary, with snake_case keys.
private struct SummaryDocument: Encodable {
    struct Layer: Encodable {
        var index: Int
        var layer: String
        var output: [Int]
        var parameters: Int
        var state: Int
        var forwardFLOPs: Int
        var activationBytesPerSample: Int
        var activationBytesPerBatch: Int
        var parameterBytes: Int
        var gradientBytes: Int
        var optimizerBytes: Int
        var stateBytes: Int

        enum CodingKeys: String, CodingKey {
            case index, layer, output, parameters, state
            case forwardFLOPs = "forward_flops"
            case activationBytesPerSample = "activation_bytes_per_sample"
            case activationBytesPerBatch = "activation_bytes_per_batch"
            case parameterBytes = "parameter_bytes"
            case gradientBytes = "gradient_bytes"
            case optimizerBytes = "optimizer_bytes"
            case stateBytes = "state_bytes"
        }
    }

    struct Totals: Encodable {
        var parameters: Int
        var state: Int
        var forwardFLOPsPerSample: Int
        var activationBytesPerSample: Int
        var activationBytesPerBatch: Int
        var parameterBytes: Int
        var gradientBytes: Int
        var optimizerBytes: Int
        var stateBytes: Int
        var trainingBytesPerSample: Int
        var trainingBytesPerBatch: Int

        enum CodingKeys: String, CodingKey {
            case parameters, state
            case forwardFLOPsPerSample = "forward_flops_per_sample"
            case activationBytesPerSample = "activation_bytes_per_sample"
            case activationBytesPerBatch = "activation_bytes_per_batch"
            case parameterBytes = "parameter_bytes"
            case gradientBytes = "gradient_bytes"
            case optimizerBytes = "optimizer_bytes"
            case stateBytes = "state_bytes"
            case trainingBytesPerSample = "training_bytes_per_sample"
            case trainingBytesPerBatch = "training_bytes_per_batch"
        }
    }

    var input: [Int]
    var batch: Int
    var microBatch: Int
    var optimizer: String
    var optimizerStatePerParameter: Int
    var layers: [Layer]
    var totals: Totals

    enum CodingKeys: String, CodingKey {
        case input, batch, optimizer, layers, totals
        case microBatch = "micro_batch"
        case optimizerStatePerParameter = "optimizer_state_per_parameter"
    }
}

/// 62378344 -> "62,378,344".
public func grouped(_ value: Int) -> String {
    let digits = String(value.magnitude)
    var result = ""
    for (i, ch) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { result += "," }
        result.append(ch)
    }
    return (value < 0 ? "-" : "") + result
}

/// A byte count in B, KiB, MiB or GiB with three significant digits.
func bytes(_ count: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(count)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(count) B" }
    let text = value >= 100 ? String(format: "%.0f", value) : value >= 10 ? String(format: "%.1f", value) : String(format: "%.2f", value)
    return "\(text) \(units[unit])"
}
