import CNN
import ConfigReading

// Resolving parsed arrow notation (ArrowNotation.swift) into layers: repetitions expanded,
// variables substituted, optional items kept or dropped, arguments checked, shapes tracked.

extension ArrowModel {
    /// Resolves the notation into a model: repetitions expanded, variables substituted, optional
    /// items kept or dropped, a `FLATTEN` inserted before the first `FC` that follows spatial layers
    /// (as a PyTorch `nn.Sequential` needs `nn.Flatten()` there), and every layer's shape checked.
    ///
    /// - Parameters:
    ///   - input: the input shape when `INPUT` has no arguments; if both are given they must agree.
    ///   - variables: values of the names used as counts or arguments (`N`, `M`, `F`, ...).
    public func resolve(input: FeatureShape? = nil, variables: [String: Double] = [:],
                        optional: OptionalLayers = .include) throws -> ModelSpec {
        let start = ArrowPosition(line: 1, column: 1)
        let shape: FeatureShape
        switch (self.input, input) {
        case let (written?, given?) where written != given:
            throw error(at: start, "INPUT(\(written.dimensions.map(String.init).joined(separator: ","))) disagrees with model.input "
                + "[\(given.dimensions.map(String.init).joined(separator: ", "))]; give the shape in one place only")
        case let (written?, _): shape = written
        case let (nil, given?): shape = given
        case (nil, nil):
            throw error(at: start, "INPUT has no shape; write INPUT(channels,height,width), e.g. INPUT(1,28,28), or give model.input")
        }
        let resolver = ArrowResolver(model: self, variables: variables, optional: optional)
        let layers: [LayerSpec]
        do {
            layers = try resolver.resolveTopLevel(items, input: shape)
        } catch let failure as ArrowShapeFailure {
            throw failure.error
        }
        guard !layers.isEmpty else { throw error(at: start, "the model has no layers after INPUT; add some, e.g. INPUT => FC(10)") }
        return ModelSpec(input: shape, layers: layers)
    }
}

/// The layer names of the notation and what they build.
enum ArrowVocabulary {
    /// Layers written with bracketed branches: RES[...], CONCAT[a | b].
    static let blockNames: Set<String> = ["RES", "RESIDUAL", "CONCAT", "INCEPTION"]

    /// Every name with its aliases, for messages and suggestions.
    static let names = [
        "CONV", "CONV2D", "SEPCONV", "CONVT", "DECONV", "POOL", "MAXPOOL", "AVGPOOL", "L2POOL", "GAP", "GLOBALAVGPOOL",
        "RELU", "LRELU", "LEAKYRELU", "PRELU", "ELU", "SIGMOID", "TANH", "FLATTEN", "FC", "DENSE", "LINEAR",
        "BN", "BATCHNORM", "DO", "DROPOUT", "DO2D", "DROPOUT2D", "LRN", "BASIC", "BASICBLOCK", "BOTTLENECK",
        "RES", "RESIDUAL", "CONCAT", "INCEPTION", "SOFTMAX",
        "CONV1D", "CONV3D", "POOL1D", "POOL3D", "MAXPOOL1D", "MAXPOOL3D", "AVGPOOL1D", "AVGPOOL3D", "LC", "LOCAL",
    ]
}

/// Reads a layer's arguments by position or label, checking types and ranges.
private struct ArgumentReader {
    let layer: ArrowLayer
    let model: ArrowModel
    let variables: [String: Double]
    /// Parameter names in positional order, each with its accepted labels.
    let parameters: [(name: String, labels: [String])]
    private var values: [String: ArrowArgument] = [:]

    init(layer: ArrowLayer, model: ArrowModel, variables: [String: Double], parameters: [(String, [String])]) throws {
        self.layer = layer
        self.model = model
        self.variables = variables
        self.parameters = parameters.map { (name: $0.0, labels: [$0.0] + $0.1) }
        var positional = 0
        var seenLabel = false
        for argument in layer.arguments {
            let name: String
            if let label = argument.label {
                seenLabel = true
                guard let match = self.parameters.first(where: { $0.labels.contains(label) }) else {
                    let all = self.parameters.flatMap(\.labels)
                    var message = "\(layer.name) has no argument '\(label)'"
                    if let guess = closest(label, among: all) { message += " (did you mean '\(guess)'?)" }
                    else { message += all.isEmpty ? "; it takes no arguments" : "; it takes \(all.joined(separator: ", "))" }
                    throw model.error(at: argument.position, message)
                }
                name = match.name
            } else {
                guard !seenLabel else {
                    throw model.error(at: argument.position, "a positional argument cannot follow a labelled one (such as p=1)")
                }
                guard positional < self.parameters.count else {
                    let expected = self.parameters.isEmpty ? "no arguments"
                        : "at most \(self.parameters.count) (\(self.parameters.map(\.name).joined(separator: ", ")))"
                    throw model.error(at: argument.position, "\(layer.name) takes \(expected)")
                }
                name = self.parameters[positional].name
                positional += 1
            }
            guard values[name] == nil else {
                throw model.error(at: argument.position, "\(layer.name) is given '\(name)' twice")
            }
            values[name] = argument
        }
    }

    func has(_ name: String) -> Bool { values[name] != nil }

    /// The numeric value of an argument, substituting variables.
    private func number(_ argument: ArrowArgument, _ name: String) throws -> Double {
        switch argument.value {
        case .number(let value): return value
        case .word(let word):
            if let value = variables[word] { return value }
            throw model.error(at: argument.position, "\(layer.name)'s \(name) is '\(word)', which is not defined; "
                + "give it a value under model.vars, e.g. vars: {\(word): ...}")
        }
    }

    func int(_ name: String, minimum: Int, default fallback: Int? = nil, example: String? = nil) throws -> Int {
        guard let argument = values[name] else {
            if let fallback { return fallback }
            throw model.error(at: layer.position, "\(layer.name) needs its \(name)" + (example.map { ", e.g. \($0)" } ?? ""))
        }
        let value = try number(argument, name)
        guard value == value.rounded(), value >= Double(minimum), value < 1e9 else {
            throw model.error(at: argument.position, "\(layer.name)'s \(name) must be a whole number of at least \(minimum), found \(shown(value))")
        }
        return Int(value)
    }

    func double(_ name: String, default fallback: Double, minimum: Double, maximum: Double = .infinity,
                exclusiveMaximum: Bool = false, exclusiveMinimum: Bool = false) throws -> Double {
        guard let argument = values[name] else { return fallback }
        let value = try number(argument, name)
        let low = exclusiveMinimum ? value <= minimum : value < minimum
        let high = exclusiveMaximum ? value >= maximum : value > maximum
        guard !low, !high, value.isFinite else {
            let lower = exclusiveMinimum ? "above \(shown(minimum))" : "at least \(shown(minimum))"
            let upper = maximum.isFinite ? (exclusiveMaximum ? " and below \(shown(maximum))" : " and at most \(shown(maximum))") : ""
            throw model.error(at: argument.position, "\(layer.name)'s \(name) must be \(lower)\(upper), found \(shown(value))")
        }
        return value
    }

    func bool(_ name: String, default fallback: Bool) throws -> Bool {
        guard let argument = values[name] else { return fallback }
        switch argument.value {
        case .word(let word) where ["true", "yes"].contains(word.lowercased()): return true
        case .word(let word) where ["false", "no"].contains(word.lowercased()): return false
        case .number(let value) where value == 0 || value == 1: return value == 1
        default:
            throw model.error(at: argument.position, "\(layer.name)'s \(name) must be true or false")
        }
    }

    func padding(default fallback: Padding) throws -> Padding {
        guard let argument = values["padding"] else { return fallback }
        if case .word(let word) = argument.value {
            switch word.lowercased() {
            case "same": return .same
            case "valid": return .valid
            default: break
            }
        }
        return .explicit(try int("padding", minimum: 0))
    }

    func projection() throws -> Projection {
        guard let argument = values["projection"] else { return .auto }
        switch argument.value {
        case .word(let word):
            switch word.lowercased() {
            case "auto": return .auto
            case "always", "true": return .always
            case "never", "false": return .never
            default: break
            }
        case .number: break
        }
        throw model.error(at: argument.position, "\(layer.name)'s projection must be auto, always or never")
    }

    private func shown(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? "\(Int(value))" : "\(value)"
    }
}

/// A layer that cannot be built on the shape reaching it: the one kind of error that makes
/// `optional: fit` leave an item out instead of failing.
private struct ArrowShapeFailure: Error {
    var error: ArrowNotationError
}

/// Expands an `ArrowModel` into layers, tracking shapes so that errors can cite the notation.
private struct ArrowResolver {
    let model: ArrowModel
    let variables: [String: Double]
    let optional: OptionalLayers

    init(model: ArrowModel, variables: [String: Double], optional: OptionalLayers) {
        self.model = model
        self.variables = variables
        self.optional = optional
    }

    /// One resolved layer with where it was written.
    struct Placed {
        var spec: LayerSpec
        var position: ArrowPosition
        var written: String
    }

    /// The state of a chain being resolved.
    struct Chain {
        var placed: [Placed] = []
        var shape: FeatureShape
        /// Whether the features are already a flat vector (after FC or FLATTEN).
        var flat = false
        /// The path errors and random keys use for this chain's layers ("model.layers").
        var path: String
    }

    func resolveTopLevel(_ items: [ArrowItem], input: FeatureShape) throws -> [LayerSpec] {
        var chain = Chain(shape: input, path: "model.layers")
        try resolve(items, into: &chain, isLast: true)
        return chain.placed.map(\.spec)
    }

    /// `isLast`: whether these items end the whole model (where SOFTMAX may stand).
    func resolve(_ items: [ArrowItem], into chain: inout Chain, isLast: Bool) throws {
        for (offset, item) in items.enumerated() {
            try resolve(item, into: &chain, isLast: isLast && offset == items.count - 1)
        }
    }

    func resolve(_ item: ArrowItem, into chain: inout Chain, isLast: Bool) throws {
        switch item {
        case .layer(let layer):
            if layer.name == "SOFTMAX" {
                // The loss applies softmax to the logits; a trailing SOFTMAX only documents that.
                guard isLast else {
                    throw model.error(at: layer.position, "SOFTMAX may only end the model (the loss applies it to the logits); remove it here")
                }
                return
            }
            if ["FC", "DENSE", "LINEAR"].contains(layer.name) && !chain.flat {
                try place(.flatten, at: layer.position, written: "FLATTEN (before \(layer.name))", into: &chain)
            }
            let spec = try makeSpec(layer, input: chain.shape, path: "\(chain.path)[\(chain.placed.count)]")
            try place(spec, at: layer.position, written: layer.name, into: &chain)
            switch spec {
            case .flatten, .dense: chain.flat = true
            case .convolution, .transposedConvolution, .separableConvolution, .maxPool, .averagePool, .l2Pool,
                 .globalAveragePool, .residual, .basicBlock, .bottleneck, .concat, .volumeConvolution, .volumePool,
                 .locallyConnected:
                chain.flat = false
            default: break
            }
        case .group(let items, _):
            try resolve(items, into: &chain, isLast: isLast)
        case .repeated(let inner, let count, let position):
            let times = try repetitions(count, at: position)
            for _ in 0..<times { try resolve(inner, into: &chain, isLast: isLast) }
        case .optional(let inner, _):
            switch optional {
            case .include:
                try resolve(inner, into: &chain, isLast: isLast)
            case .omit:
                return
            case .fit:
                var trial = chain
                do {
                    try resolve(inner, into: &trial, isLast: isLast)
                    chain = trial
                } catch is ArrowShapeFailure {
                    // Left out: it cannot be built on the shape that reaches it.
                }
            }
        }
    }

    func repetitions(_ count: ArrowValue, at position: ArrowPosition) throws -> Int {
        switch count {
        case .number(let value): return Int(value)
        case .word(let name):
            guard let value = variables[name] else {
                throw model.error(at: position, "the repetition count '\(name)' is not defined; give it a value under model.vars, "
                    + "e.g. vars: {\(name): 2}")
            }
            guard value == value.rounded(), value >= 0, value < 10_000 else {
                throw model.error(at: position, "the repetition count \(name) = \(value) must be a whole number from 0 to 9999")
            }
            return Int(value)
        }
    }

    /// Appends a layer after checking it can be built on the current shape.
    func place(_ spec: LayerSpec, at position: ArrowPosition, written: String, into chain: inout Chain) throws {
        let name = "\(chain.path)[\(chain.placed.count)]"
        do {
            let layer = try spec.makeLayer(input: chain.shape, name: name)
            chain.shape = layer.outputShape
        } catch let error as ModelError {
            throw ArrowShapeFailure(error: model.error(at: position, "\(written) (\(error.layer)) on input \(chain.shape): \(error.message)"))
        }
        chain.placed.append(Placed(spec: spec, position: position, written: written))
    }

    /// Resolves the branches of a block layer into their own layer lists.
    func branch(_ items: [ArrowItem], input: FeatureShape, path: String) throws -> [LayerSpec] {
        var chain = Chain(shape: input, path: path)
        try resolve(items, into: &chain, isLast: false)
        return chain.placed.map(\.spec)
    }

    func makeSpec(_ layer: ArrowLayer, input: FeatureShape, path: String) throws -> LayerSpec {
        func reader(_ parameters: [(String, [String])]) throws -> ArgumentReader {
            try ArgumentReader(layer: layer, model: model, variables: variables, parameters: parameters)
        }
        if layer.branches == nil && ArrowVocabulary.blockNames.contains(layer.name) {
            let example = layer.name.hasPrefix("RES") ? "RES[CONV(16,3,p=1) => BN => RELU => CONV(16,3,p=1) => BN]"
                : "CONCAT[CONV(16,1) | CONV(16,3,p=1)]"
            throw model.error(at: layer.position, "\(layer.name) needs its layers in brackets, e.g. \(example)")
        }
        switch layer.name {
        case "CONV", "CONV2D":
            let a = try reader([("filters", ["f"]), ("kernel", ["k"]), ("stride", ["s"]), ("padding", ["p"]),
                                ("dilation", ["d"]), ("groups", ["g"]), ("bias", [])])
            var spec = ConvolutionSpec(
                filters: try a.int("filters", minimum: 1, example: "\(layer.name)(32,3) for 32 filters of 3x3"),
                kernel: try a.int("kernel", minimum: 1, example: "\(layer.name)(32,3) for 32 filters of 3x3"))
            spec.stride = try a.int("stride", minimum: 1, default: 1)
            spec.padding = try a.padding(default: .explicit(0))
            spec.dilation = try a.int("dilation", minimum: 1, default: 1)
            spec.groups = try a.int("groups", minimum: 1, default: 1)
            spec.bias = try a.bool("bias", default: true)
            return .convolution(spec)
        case "SEPCONV":
            let a = try reader([("filters", ["f"]), ("kernel", ["k"]), ("stride", ["s"]), ("padding", ["p"]),
                                ("dilation", ["d"]), ("depth_multiplier", ["m"]), ("bias", [])])
            var spec = SeparableConvolutionSpec(
                filters: try a.int("filters", minimum: 1, example: "SEPCONV(64,3)"), kernel: try a.int("kernel", minimum: 1, example: "SEPCONV(64,3)"))
            spec.stride = try a.int("stride", minimum: 1, default: 1)
            spec.padding = try a.padding(default: .explicit(0))
            spec.dilation = try a.int("dilation", minimum: 1, default: 1)
            spec.depthMultiplier = try a.int("depth_multiplier", minimum: 1, default: 1)
            spec.bias = try a.bool("bias", default: true)
            return .separableConvolution(spec)
        case "CONVT", "DECONV":
            let a = try reader([("filters", ["f"]), ("kernel", ["k"]), ("stride", ["s"]), ("padding", ["p"]),
                                ("output_padding", ["op"]), ("dilation", ["d"]), ("groups", ["g"]), ("bias", [])])
            var spec = TransposedConvolutionSpec(
                filters: try a.int("filters", minimum: 1, example: "CONVT(16,2,s=2)"), kernel: try a.int("kernel", minimum: 1, example: "CONVT(16,2,s=2)"))
            spec.stride = try a.int("stride", minimum: 1, default: 1)
            spec.padding = try a.int("padding", minimum: 0, default: 0)
            spec.outputPadding = try a.int("output_padding", minimum: 0, default: 0)
            spec.dilation = try a.int("dilation", minimum: 1, default: 1)
            spec.groups = try a.int("groups", minimum: 1, default: 1)
            spec.bias = try a.bool("bias", default: true)
            return .transposedConvolution(spec)
        case "POOL", "MAXPOOL", "AVGPOOL":
            let a = try reader([("size", ["k", "kernel"]), ("stride", ["s"]), ("padding", ["p"])])
            let size = try a.int("size", minimum: 1, default: 2)
            let stride = a.has("stride") ? try a.int("stride", minimum: 1) : nil
            let padding = try a.int("padding", minimum: 0, default: 0)
            return layer.name == "AVGPOOL" ? .averagePool(size: size, stride: stride, padding: padding)
                : .maxPool(size: size, stride: stride, padding: padding)
        case "CONV1D", "CONV3D":
            let a = try reader([("filters", ["f"]), ("kernel", ["k"]), ("stride", ["s"]), ("padding", ["p"]),
                                ("dilation", ["d"]), ("groups", ["g"]), ("bias", [])])
            let example = "\(layer.name)(32,3) for 32 filters of size 3"
            var spec = VolumeConvolutionSpec(
                rank: layer.name == "CONV1D" ? 1 : 3, filters: try a.int("filters", minimum: 1, example: example),
                kernel: [try a.int("kernel", minimum: 1, example: example)])
            spec.stride = try a.int("stride", minimum: 1, default: 1)
            spec.padding = try a.padding(default: .explicit(0))
            spec.dilation = try a.int("dilation", minimum: 1, default: 1)
            spec.groups = try a.int("groups", minimum: 1, default: 1)
            spec.bias = try a.bool("bias", default: true)
            return .volumeConvolution(spec)
        case "POOL1D", "POOL3D", "MAXPOOL1D", "MAXPOOL3D", "AVGPOOL1D", "AVGPOOL3D":
            let a = try reader([("size", ["k", "kernel"]), ("stride", ["s"]), ("padding", ["p"])])
            return .volumePool(
                rank: layer.name.hasSuffix("1D") ? 1 : 3, kind: layer.name.hasPrefix("AVG") ? .average : .max,
                size: try a.int("size", minimum: 1, default: 2), stride: a.has("stride") ? try a.int("stride", minimum: 1) : nil,
                padding: try a.int("padding", minimum: 0, default: 0))
        case "LC", "LOCAL":
            let a = try reader([("filters", ["f"]), ("kernel", ["k"]), ("stride", ["s"]), ("padding", ["p"]), ("dilation", ["d"]), ("bias", [])])
            var spec = LocallyConnectedSpec(
                filters: try a.int("filters", minimum: 1, example: "LC(32,3)"), kernel: [try a.int("kernel", minimum: 1, example: "LC(32,3)")])
            spec.stride = try a.int("stride", minimum: 1, default: 1)
            spec.padding = try a.padding(default: .explicit(0))
            spec.dilation = try a.int("dilation", minimum: 1, default: 1)
            spec.bias = try a.bool("bias", default: true)
            return .locallyConnected(spec)
        case "L2POOL":
            let a = try reader([("size", ["k", "kernel"]), ("stride", ["s"])])
            return .l2Pool(size: try a.int("size", minimum: 1, default: 2), stride: a.has("stride") ? try a.int("stride", minimum: 1) : nil)
        case "GAP", "GLOBALAVGPOOL":
            _ = try reader([])
            return .globalAveragePool
        case "RELU":
            _ = try reader([])
            return .relu
        case "LRELU", "LEAKYRELU":
            let a = try reader([("slope", ["negative_slope"])])
            return .leakyReLU(slope: try a.double("slope", default: 0.01, minimum: 0))
        case "PRELU":
            let a = try reader([("init", ["initial"]), ("per_channel", [])])
            return .prelu(perChannel: try a.bool("per_channel", default: false), initial: try a.double("init", default: 0.25, minimum: -1e9))
        case "ELU":
            let a = try reader([("alpha", [])])
            return .elu(alpha: try a.double("alpha", default: 1, minimum: 0))
        case "SIGMOID":
            _ = try reader([])
            return .sigmoid
        case "TANH":
            _ = try reader([])
            return .tanh
        case "FLATTEN":
            _ = try reader([])
            return .flatten
        case "FC", "DENSE", "LINEAR":
            let a = try reader([("units", ["n", "out"]), ("bias", [])])
            return .dense(units: try a.int("units", minimum: 1, example: "FC(128) for 128 outputs"), bias: try a.bool("bias", default: true))
        case "BN", "BATCHNORM":
            let a = try reader([("eps", ["epsilon"]), ("momentum", []), ("affine", [])])
            return .batchNorm(BatchNormSpec(
                epsilon: try a.double("eps", default: 1e-5, minimum: 0, exclusiveMinimum: true),
                momentum: try a.double("momentum", default: 0.1, minimum: 0, maximum: 1),
                affine: try a.bool("affine", default: true)))
        case "DO", "DROPOUT", "DO2D", "DROPOUT2D":
            let a = try reader([("p", ["probability", "rate"])])
            let p = try a.double("p", default: 0.5, minimum: 0, maximum: 1, exclusiveMaximum: true)
            return layer.name.hasSuffix("2D") ? .spatialDropout(probability: p) : .dropout(probability: p)
        case "LRN":
            let a = try reader([("size", ["n"]), ("alpha", []), ("beta", []), ("k", [])])
            return .localResponseNorm(LocalResponseNormSpec(
                size: try a.int("size", minimum: 1, default: 5), alpha: try a.double("alpha", default: 1e-4, minimum: 0),
                beta: try a.double("beta", default: 0.75, minimum: 0), k: try a.double("k", default: 1, minimum: 0)))
        case "BASIC", "BASICBLOCK":
            let a = try reader([("filters", ["f"]), ("stride", ["s"]), ("projection", [])])
            return .basicBlock(
                filters: try a.int("filters", minimum: 1, example: "BASIC(64) or BASIC(128,2)"),
                stride: try a.int("stride", minimum: 1, default: 1), projection: try a.projection())
        case "BOTTLENECK":
            let a = try reader([("filters", ["f"]), ("stride", ["s"]), ("expansion", ["e"]), ("projection", [])])
            return .bottleneck(
                filters: try a.int("filters", minimum: 1, example: "BOTTLENECK(64) or BOTTLENECK(128,2)"),
                stride: try a.int("stride", minimum: 1, default: 1), expansion: try a.int("expansion", minimum: 1, default: 4),
                projection: try a.projection())
        case "RES", "RESIDUAL":
            let a = try reader([("relu", []), ("projection", [])])
            let branches = layer.branches ?? []
            guard branches.count == 1 else {
                throw model.error(at: layer.position, "\(layer.name)[...] takes one chain of layers, not \(branches.count) separated by '|'")
            }
            let layers = try branch(branches[0], input: input, path: path + ".layers")
            return .residual(ResidualSpec(layers: layers, projection: try a.projection(), reluAfterSum: try a.bool("relu", default: false)))
        case "CONCAT", "INCEPTION":
            _ = try reader([])
            let branches = try (layer.branches ?? []).enumerated().map { b, items in
                try branch(items, input: input, path: "\(path).branches[\(b)]")
            }
            return .concat(branches: branches)
        default:
            var message = "unknown layer '\(layer.name)'"
            if let guess = closest(layer.name, among: ArrowVocabulary.names) { message += " (did you mean '\(guess)'?)" }
            else { message += "; known layers: \(ArrowVocabulary.names.joined(separator: ", "))" }
            throw model.error(at: layer.position, message)
        }
    }
}
