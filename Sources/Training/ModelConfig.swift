import CNN

/// How the `model` section of a config reads.
extension TrainingConfig {
    static func parseModel(_ node: ConfigNode) throws -> ModelSpec {
        try node.expectKeys(["input", "layers"])
        guard let inputNode = try node.child("input") else {
            throw node.error("model needs 'input: [channels, height, width]', for example [1, 28, 28]")
        }
        let dims = try inputNode.ints()
        guard dims.count == 3, dims.allSatisfy({ $0 > 0 }) else {
            throw inputNode.error("model.input must be three positive numbers [channels, height, width], found \(dims)")
        }
        guard let layersNode = try node.child("layers") else {
            throw node.error("model needs 'layers', a list such as [conv: {filters: 32, kernel: 3}, relu, ...]")
        }
        let layers = try layersNode.items().map(parseLayer)
        guard !layers.isEmpty else { throw layersNode.error("model.layers is empty") }
        return ModelSpec(input: FeatureShape(channels: dims[0], height: dims[1], width: dims[2]), layers: layers)
    }
}
