import CNN

/// The figures `cnn summary` prints for one layer.
public struct LayerSummary: Sendable {
    public var index: Int
    public var name: String
    public var outputShape: FeatureShape
    public var parameters: Int
    public var forwardFLOPs: Int
    public var savedFloatsPerSample: Int
}

/// A model's layers, shapes, parameters, FLOPs and training memory.
public struct ModelSummary: Sendable {
    public var input: FeatureShape
    public var layers: [LayerSummary]
    public var parameters: Int
    public var state: Int
    public var batch: Int
    /// Floats of optimiser state per parameter (momentum: 1, Adam: 2, plain SGD: 0).
    public var optimizerStatePerParameter: Int

    public init(config: TrainingConfig) throws {
        let network = try Network(config.model)
        input = config.model.input
        layers = network.layers.enumerated().map { index, layer in
            LayerSummary(index: index, name: layer.summary, outputShape: layer.outputShape, parameters: layer.parameterCount,
                         forwardFLOPs: layer.forwardFLOPs, savedFloatsPerSample: layer.savedFloatsPerSample)
        }
        parameters = network.parameterCount
        state = network.stateCount
        batch = config.train.batch
        let o = config.train.optimizer
        optimizerStatePerParameter = o.name == "sgd" ? (o.momentum > 0 ? 1 : 0) : 2
    }

    public var forwardFLOPsPerSample: Int { layers.reduce(0) { $0 + $1.forwardFLOPs } }
    public var activationBytesPerSample: Int { 4 * layers.reduce(input.count) { $0 + $1.savedFloatsPerSample } }
    /// Parameters, gradients and optimiser state: independent of the batch.
    public var fixedTrainingBytes: Int { 4 * (parameters * (2 + optimizerStatePerParameter) + state) }
    public var trainingBytes: Int { fixedTrainingBytes + batch * activationBytesPerSample }

    /// The table `cnn summary` prints.
    public var table: String {
        var rows: [[String]] = [["#", "layer", "output", "parameters", "FLOPs"]]
        rows.append(["", "input", input.description, "", ""])
        for layer in layers {
            rows.append(["\(layer.index)", layer.name, layer.outputShape.description, grouped(layer.parameters), grouped(layer.forwardFLOPs)])
        }
        rows.append(["", "total", "", grouped(parameters), grouped(forwardFLOPsPerSample)])
        let widths = (0..<5).map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = rows.map { row in
            row.enumerated().map { column, text in
                column >= 3 ? String(repeating: " ", count: widths[column] - text.count) + text
                    : text + String(repeating: " ", count: widths[column] - text.count)
            }.joined(separator: "  ")
        }
        lines.insert(String(repeating: "-", count: lines[0].count), at: 1)
        lines.insert(String(repeating: "-", count: lines[0].count), at: lines.count - 1)
        lines.append("")
        lines.append("parameters: \(grouped(parameters))\(state > 0 ? " (+ \(grouped(state)) state values)" : "")")
        lines.append("forward FLOPs per sample: \(grouped(forwardFLOPsPerSample)); training ~3x that")
        lines.append("training memory: parameters + gradients + optimizer state \(megabytes(fixedTrainingBytes)), "
            + "activations \(megabytes(activationBytesPerSample)) per sample, \(megabytes(trainingBytes)) at batch \(batch)")
        return lines.joined(separator: "\n")
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

func megabytes(_ bytes: Int) -> String {
    let mib = Double(bytes) / 1_048_576
    return mib >= 100 ? "\(Int(mib.rounded())) MiB" : "\(Double(Int(mib * 10)) / 10) MiB"
}
