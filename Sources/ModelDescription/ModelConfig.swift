import CNN
import ConfigReading

/// How the `model` section of a config reads. A model is one of
/// - a zoo name: `model: lenet5`, or with options `model: {zoo: resnet20, classes: 10, input: [3, 32, 32]}`;
/// - arrow notation: `model: "INPUT(1,28,28) => CONV(32,3,p=1) => RELU => ..."`, or
///   `model: {arrow: "INPUT => [CONV(F,3,p=1) => RELU]*N => FC(10)", input: [1, 28, 28], vars: {F: 32, N: 2}, optional: include}`;
/// - a list of layers: `model: {input: [1, 28, 28], layers: [conv: {filters: 32, kernel: 3}, relu, ...]}`.
/// Every form resolves to the same thing, a `ModelSpec`, whose shapes are checked here.
/// (`LayerConfig.swift` reads and writes the entries of a layer list.)
public enum ModelConfig {
    /// Reads a config's `model` section; errors name the file and line of the offending entry.
    package static func parseModel(_ node: ConfigNode) throws -> ModelSpec {
        let spec: ModelSpec
        var layerNodes: [ConfigNode] = []
        if node.isScalar {
            let text = try node.string()
            if isArrowNotation(text) {
                spec = try parseArrow(text, node: node, input: nil, variables: [:], optional: .include)
            } else {
                spec = try zooModel(text, options: ZooOptions(), node: node)
            }
        } else {
            let keys = try node.entries().map(\.key)
            let forms = ["zoo", "arrow", "layers"].filter(keys.contains)
            guard forms.count <= 1 else {
                throw node.error("model takes one of 'zoo', 'arrow' or 'layers', found both '\(forms[0])' and '\(forms[1])'")
            }
            switch forms.first {
            case "zoo": spec = try parseZooModel(node)
            case "arrow": spec = try parseArrowModel(node)
            default: (spec, layerNodes) = try parseLayerList(node)
            }
        }
        try checkShapes(spec, node: node, layerNodes: layerNodes)
        return spec
    }

    /// Whether a model given as one string is arrow notation (else a zoo name).
    static func isArrowNotation(_ text: String) -> Bool {
        let trimmed = text.drop { $0.isWhitespace }
        return trimmed.prefix(5).uppercased() == "INPUT"
    }

    private static func parseLayerList(_ node: ConfigNode) throws -> (ModelSpec, [ConfigNode]) {
        try node.expectKeys(["input", "layers"])
        guard let inputNode = try node.child("input") else {
            throw node.error("model needs 'input: [channels, height, width]', for example [1, 28, 28], "
                + "or one of 'zoo: NAME' (\(ModelZoo.names.joined(separator: ", "))) or 'arrow: \"INPUT(1,28,28) => ...\"'")
        }
        let input = try parseInput(inputNode)
        guard let layersNode = try node.child("layers") else {
            throw node.error("model needs 'layers', a list such as [conv: {filters: 32, kernel: 3}, relu, ...]")
        }
        let items = try layersNode.items()
        let layers = try items.map(parseLayer)
        guard !layers.isEmpty else { throw layersNode.error("model.layers is empty") }
        return (ModelSpec(input: input, layers: layers), items)
    }

    private static func parseInput(_ node: ConfigNode) throws -> FeatureShape {
        let dims = try node.ints()
        guard dims.allSatisfy({ $0 > 0 }), let shape = FeatureShape(dimensions: dims) else {
            throw node.error("\(node.path) must be positive numbers [channels, height, width] for images, [channels, length] "
                + "for sequences or [channels, depth, height, width] for volumes, found \(dims)")
        }
        return shape
    }

    // MARK: Zoo

    private static func parseZooModel(_ node: ConfigNode) throws -> ModelSpec {
        let entries = try node.entries()
        guard let nameNode = entries.first(where: { $0.key == "zoo" })?.value else { throw node.error("model needs 'zoo'") }
        let name = try nameNode.string()
        guard let entry = ModelZoo.entry(named: name) else {
            return try zooModel(name, options: ZooOptions(), node: nameNode)
        }
        try node.expectKeys(["zoo", "classes", "input"] + entry.optionKeys)
        var options = ZooOptions()
        if let n = try node.child("classes") { options.classes = try n.int(minimum: 1) }
        if let n = try node.child("input") { options.input = try parseInput(n) }
        for key in entry.optionKeys {
            guard let n = try node.child(key) else { continue }
            switch key {
            case "batch_norm": options.batchNorm = try n.bool()
            case "dropout": options.dropout = try n.double(minimum: 0, maximum: 0.999)
            case "activation": options.activation = try n.oneOf(["relu", "tanh"])
            case "pooling": options.pooling = try n.oneOf(["max", "average"])
            case "first_padding": options.firstPadding = try n.int(minimum: 0)
            case "depth":
                let depth = try n.int(minimum: 8)
                guard (depth - 2) % 6 == 0 else {
                    throw n.error("model.depth must be 6n + 2 (20, 32, 44, 56, 110), found \(depth)")
                }
                options.depth = depth
            case "lrn": options.localResponseNorm = try n.bool()
            default: preconditionFailure("zoo option \(key) has no reader")
            }
        }
        return try zooModel(name, options: options, node: node)
    }

    private static func zooModel(_ name: String, options: ZooOptions, node: ConfigNode) throws -> ModelSpec {
        do {
            return try ModelZoo.model(name, options: options)
        } catch let error as ModelError {
            throw node.error(error.description)
        }
    }

    // MARK: Arrow notation

    private static func parseArrowModel(_ node: ConfigNode) throws -> ModelSpec {
        try node.expectKeys(["arrow", "input", "vars", "optional"])
        guard let textNode = try node.child("arrow") else { throw node.error("model needs 'arrow'") }
        let text = try textNode.string()
        let input = try node.child("input").map(parseInput)
        var variables: [String: Double] = [:]
        if let varsNode = try node.child("vars") {
            for (name, value) in try varsNode.entries() {
                guard name.first?.isLetter == true || name.first == "_",
                      name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                    throw value.error("model.vars: '\(name)' is not a name the notation can use (letters, digits and '_', starting with a letter)")
                }
                variables[name] = try value.double()
            }
        }
        var optional = OptionalLayers.include
        if let n = try node.child("optional") {
            if let flag = n.node.bool {
                optional = flag ? .include : .omit
            } else {
                optional = OptionalLayers(rawValue: try n.oneOf(OptionalLayers.allCases.map(\.rawValue)))!
            }
        }
        return try parseArrow(text, node: textNode, input: input, variables: variables, optional: optional)
    }

    private static func parseArrow(_ text: String, node: ConfigNode, input: FeatureShape?, variables: [String: Double],
                                   optional: OptionalLayers) throws -> ModelSpec {
        do {
            return try ArrowModel.parse(text).resolve(input: input, variables: variables, optional: optional)
        } catch let error as ArrowNotationError {
            throw node.error("\(node.path.isEmpty ? "model" : node.path) (arrow notation), \(error.description)")
        }
    }

    // MARK: Shapes

    /// Builds every layer on the shape that reaches it (without allocating parameters), so an
    /// impossible layer is reported with its formula and numbers, at its own line when the layers
    /// were listed (`layerNodes`), else at the model's.
    static func checkShapes(_ spec: ModelSpec, node: ConfigNode, layerNodes: [ConfigNode] = []) throws {
        var shape = spec.input
        for (index, layer) in spec.layers.enumerated() {
            do {
                shape = try layer.makeLayer(input: shape, name: "model.layers[\(index)]").outputShape
            } catch let error as ModelError {
                let at = index < layerNodes.count ? layerNodes[index] : node
                throw at.error("\(error.description) (input \(shape))")
            }
        }
    }
}
