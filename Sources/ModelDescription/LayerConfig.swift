import CNN
import ConfigReading

/// How one entry of `model.layers` reads. A layer is its kind alone (`relu`), its kind with one
/// value (`dropout: 0.5`, `maxpool: 2`, `basic_block: 64`), or its kind with options
/// (`conv: {filters: 32, kernel: 3, padding: same}`). Blocks hold nested layer lists:
/// `residual: {layers: [...], projection: auto}`, `concat: {branches: [[...], [...]]}`.
extension ModelConfig {
    static let layerKinds = [
        "conv", "convtranspose", "separable", "maxpool", "avgpool", "l2pool", "globalavgpool",
        "relu", "leakyrelu", "prelu", "elu", "sigmoid", "tanh", "flatten", "dense",
        "batchnorm", "dropout", "spatial_dropout", "lrn", "residual", "basic_block", "bottleneck", "concat",
        "conv1d", "conv3d", "maxpool1d", "maxpool3d", "avgpool1d", "avgpool3d", "locally_connected",
    ]

    /// Kinds written alone, without options.
    private static let bareKinds = ["relu", "sigmoid", "tanh", "flatten", "globalavgpool"]

    static func parseLayer(_ node: ConfigNode) throws -> LayerSpec {
        let kind: String
        var options: ConfigNode?
        if node.isScalar {
            kind = try node.string()
        } else {
            let entries = try node.entries()
            guard entries.count == 1 else {
                throw node.error("\(node.path) must name one layer kind, like 'conv: {filters: 32, kernel: 3}' or 'relu'")
            }
            kind = entries[0].key
            options = entries[0].value
        }
        guard layerKinds.contains(kind) else {
            var message = "unknown layer '\(kind)' in \(node.path)"
            if let guess = closest(kind, among: layerKinds) { message += " (did you mean '\(guess)'?)" }
            else { message += "; known layers: \(layerKinds.joined(separator: ", "))" }
            throw node.error(message)
        }
        if bareKinds.contains(kind) {
            if let options {
                throw options.error("\(options.path): \(kind) takes no options; write it alone, as '- \(kind)'")
            }
            switch kind {
            case "relu": return .relu
            case "sigmoid": return .sigmoid
            case "tanh": return .tanh
            case "flatten": return .flatten
            default: return .globalAveragePool
            }
        }
        switch kind {
        case "dense": return try parseDense(node, options)
        case "maxpool", "avgpool":
            let (size, stride, padding) = try parsePool(options, kind: kind, allowsPadding: true)
            return kind == "maxpool"
                ? .maxPool(size: size, stride: stride, padding: padding)
                : .averagePool(size: size, stride: stride, padding: padding)
        case "maxpool1d", "maxpool3d", "avgpool1d", "avgpool3d":
            let (size, stride, padding) = try parsePool(options, kind: kind, allowsPadding: true)
            return .volumePool(
                rank: kind.hasSuffix("1d") ? 1 : 3, kind: kind.hasPrefix("max") ? .max : .average,
                size: size, stride: stride, padding: padding)
        case "conv1d", "conv3d": return try parseVolumeConvolution(node, options, rank: kind == "conv1d" ? 1 : 3)
        case "locally_connected": return try parseLocallyConnected(node, options)
        case "l2pool":
            let (size, stride, _) = try parsePool(options, kind: kind, allowsPadding: false)
            return .l2Pool(size: size, stride: stride)
        case "leakyrelu":
            return .leakyReLU(slope: try parseNumber(options, key: "slope", default: 0.01))
        case "elu":
            return .elu(alpha: try parseNumber(options, key: "alpha", default: 1, minimum: 0))
        case "prelu":
            guard let options else { return .prelu(perChannel: false, initial: 0.25) }
            try options.expectKeys(["per_channel", "init"])
            return .prelu(
                perChannel: try options.child("per_channel")?.bool() ?? false,
                initial: try options.child("init")?.double() ?? 0.25)
        case "dropout", "spatial_dropout":
            let probability = try parseNumber(options, key: "p", default: 0.5, minimum: 0)
            guard probability < 1 else {
                throw (options ?? node).error("\((options ?? node).path) must be below 1 (the chance of dropping a value), found \(probability)")
            }
            return kind == "dropout" ? .dropout(probability: probability) : .spatialDropout(probability: probability)
        case "batchnorm": return try parseBatchNorm(options)
        case "lrn": return try parseLocalResponseNorm(node, options)
        case "convtranspose": return try parseTransposedConvolution(node, options)
        case "separable": return try parseSeparableConvolution(node, options)
        case "residual": return try parseResidual(node, options)
        case "basic_block", "bottleneck": return try parseResidualBlock(node, options, kind: kind)
        case "concat": return try parseConcat(node, options)
        default: return try parseConvolution(node, options)
        }
    }

    // MARK: Layers with options

    private static func parseDense(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        guard let options else { throw node.error("\(node.path): dense needs units, e.g. 'dense: 128'") }
        if options.isScalar { return .dense(units: try options.int(minimum: 1), bias: true) }
        try options.expectKeys(["units", "bias"])
        guard let units = try options.child("units") else { throw options.error("\(options.path) needs 'units'") }
        return .dense(units: try units.int(minimum: 1), bias: try options.child("bias")?.bool() ?? true)
    }

    /// `kind` (size 2), `kind: F`, or `kind: {size: F, stride: S, padding: P}`.
    private static func parsePool(_ options: ConfigNode?, kind: String, allowsPadding: Bool) throws -> (Int, Int?, Int) {
        guard let options else { return (2, nil, 0) }
        if options.isScalar { return (try options.int(minimum: 1), nil, 0) }
        try options.expectKeys(allowsPadding ? ["size", "stride", "padding"] : ["size", "stride"])
        return (
            try options.child("size")?.int(minimum: 1) ?? 2,
            try options.child("stride")?.int(minimum: 1),
            allowsPadding ? try options.child("padding")?.int(minimum: 0) ?? 0 : 0)
    }

    /// `kind` (the default), `kind: x`, or `kind: {key: x}`.
    private static func parseNumber(_ options: ConfigNode?, key: String, default value: Double, minimum: Double? = nil) throws -> Double {
        guard let options else { return value }
        if options.isScalar { return try options.double(minimum: minimum) }
        try options.expectKeys([key])
        return try options.child(key)?.double(minimum: minimum) ?? value
    }

    private static func parseBatchNorm(_ options: ConfigNode?) throws -> LayerSpec {
        var spec = BatchNormSpec()
        guard let options else { return .batchNorm(spec) }
        try options.expectKeys(["epsilon", "momentum", "affine"])
        if let epsilon = try options.child("epsilon") { spec.epsilon = try epsilon.double(minimum: 0, exclusiveMinimum: true) }
        if let momentum = try options.child("momentum") {
            if momentum.node.float == nil, (try? momentum.string()) == "cumulative" {
                spec.momentum = nil
            } else {
                guard momentum.node.float != nil else {
                    throw momentum.error("\(momentum.path) must be a number from 0 to 1 or 'cumulative' (an equal-weight average), found \(momentum.kindName)")
                }
                spec.momentum = try momentum.double(minimum: 0, maximum: 1)
            }
        }
        spec.affine = try options.child("affine")?.bool() ?? true
        return .batchNorm(spec)
    }

    private static func parseLocalResponseNorm(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        guard let options else { throw node.error("\(node.path): lrn needs a size, e.g. 'lrn: {size: 5, alpha: 1e-4, beta: 0.75, k: 2}'") }
        if options.isScalar { return .localResponseNorm(LocalResponseNormSpec(size: try options.int(minimum: 1))) }
        try options.expectKeys(["size", "alpha", "beta", "k"])
        guard let size = try options.child("size") else { throw options.error("\(options.path) needs 'size'") }
        var spec = LocalResponseNormSpec(size: try size.int(minimum: 1))
        if let alpha = try options.child("alpha") { spec.alpha = try alpha.double(minimum: 0) }
        if let beta = try options.child("beta") { spec.beta = try beta.double(minimum: 0) }
        if let k = try options.child("k") { spec.k = try k.double(minimum: 0, exclusiveMinimum: true) }
        return .localResponseNorm(spec)
    }

    /// `kernel: 3` or `kernel: [kh, kw]`.
    private static func parseKernel(_ node: ConfigNode) throws -> (Int, Int) {
        if node.isSequence {
            let sizes = try node.ints()
            guard sizes.count == 2, sizes.allSatisfy({ $0 >= 1 }) else {
                throw node.error("\(node.path) must be one size or [height, width] of at least 1, found \(sizes)")
            }
            return (sizes[0], sizes[1])
        }
        let size = try node.int(minimum: 1)
        return (size, size)
    }

    /// `padding: 1`, `padding: same` or `padding: valid`.
    private static func parsePadding(_ node: ConfigNode) throws -> Padding {
        if let number = node.node.int {
            guard number >= 0 else { throw node.error("\(node.path) must not be negative, found \(number)") }
            return .explicit(number)
        }
        switch try node.oneOf(["same", "valid", "SAME", "VALID"]).lowercased() {
        case "same": return .same
        default: return .valid
        }
    }

    private static func parseConvolution(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        guard let options, options.isMapping else {
            throw node.error("\(node.path): conv needs options, e.g. 'conv: {filters: 32, kernel: 3, padding: 1}'")
        }
        try options.expectKeys(["filters", "kernel", "stride", "padding", "dilation", "groups", "bias"])
        guard let filters = try options.child("filters") else { throw options.error("\(options.path) needs 'filters'") }
        guard let kernel = try options.child("kernel") else { throw options.error("\(options.path) needs 'kernel'") }
        let (kernelHeight, kernelWidth) = try parseKernel(kernel)
        var spec = ConvolutionSpec(filters: try filters.int(minimum: 1), kernel: kernelHeight)
        spec.kernelWidth = kernelWidth
        spec.stride = try options.child("stride")?.int(minimum: 1) ?? 1
        spec.dilation = try options.child("dilation")?.int(minimum: 1) ?? 1
        spec.groups = try options.child("groups")?.int(minimum: 1) ?? 1
        spec.bias = try options.child("bias")?.bool() ?? true
        if let padding = try options.child("padding") { spec.padding = try parsePadding(padding) }
        return .convolution(spec)
    }

    /// `kernel: 3` or one size per axis, `kernel: [kd, kh, kw]`.
    private static func parseKernelSizes(_ node: ConfigNode, axes: [Int]) throws -> [Int] {
        guard node.isSequence else { return [try node.int(minimum: 1)] }
        let sizes = try node.ints()
        guard axes.contains(sizes.count), sizes.allSatisfy({ $0 >= 1 }) else {
            let counts = Array(Set(axes)).sorted().map(String.init).joined(separator: " or ")
            throw node.error("\(node.path) must be one size or a list of \(counts) sizes (one per spatial axis) of at least 1, found \(sizes)")
        }
        return sizes
    }

    private static func parseVolumeConvolution(_ node: ConfigNode, _ options: ConfigNode?, rank: Int) throws -> LayerSpec {
        guard let options, options.isMapping else {
            throw node.error("\(node.path): conv\(rank)d needs options, e.g. 'conv\(rank)d: {filters: 32, kernel: 3, padding: same}'")
        }
        try options.expectKeys(["filters", "kernel", "stride", "padding", "dilation", "groups", "bias"])
        guard let filters = try options.child("filters") else { throw options.error("\(options.path) needs 'filters'") }
        guard let kernel = try options.child("kernel") else { throw options.error("\(options.path) needs 'kernel'") }
        var spec = VolumeConvolutionSpec(
            rank: rank, filters: try filters.int(minimum: 1), kernel: try parseKernelSizes(kernel, axes: rank == 1 ? [1] : [1, rank]))
        spec.stride = try options.child("stride")?.int(minimum: 1) ?? 1
        spec.dilation = try options.child("dilation")?.int(minimum: 1) ?? 1
        spec.groups = try options.child("groups")?.int(minimum: 1) ?? 1
        spec.bias = try options.child("bias")?.bool() ?? true
        if let padding = try options.child("padding") { spec.padding = try parsePadding(padding) }
        return .volumeConvolution(spec)
    }

    private static func parseLocallyConnected(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        guard let options, options.isMapping else {
            throw node.error("\(node.path): locally_connected needs options, e.g. 'locally_connected: {filters: 16, kernel: 3}'")
        }
        try options.expectKeys(["filters", "kernel", "stride", "padding", "dilation", "bias"])
        guard let filters = try options.child("filters") else { throw options.error("\(options.path) needs 'filters'") }
        guard let kernel = try options.child("kernel") else { throw options.error("\(options.path) needs 'kernel'") }
        var spec = LocallyConnectedSpec(filters: try filters.int(minimum: 1), kernel: try parseKernelSizes(kernel, axes: [1, 2, 3]))
        spec.stride = try options.child("stride")?.int(minimum: 1) ?? 1
        spec.dilation = try options.child("dilation")?.int(minimum: 1) ?? 1
        spec.bias = try options.child("bias")?.bool() ?? true
        if let padding = try options.child("padding") { spec.padding = try parsePadding(padding) }
        return .locallyConnected(spec)
    }

    private static func parseTransposedConvolution(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        guard let options, options.isMapping else {
            throw node.error("\(node.path): convtranspose needs options, e.g. 'convtranspose: {filters: 16, kernel: 4, stride: 2, padding: 1}'")
        }
        try options.expectKeys(["filters", "kernel", "stride", "padding", "output_padding", "dilation", "groups", "bias"])
        guard let filters = try options.child("filters") else { throw options.error("\(options.path) needs 'filters'") }
        guard let kernel = try options.child("kernel") else { throw options.error("\(options.path) needs 'kernel'") }
        let (kernelHeight, kernelWidth) = try parseKernel(kernel)
        var spec = TransposedConvolutionSpec(filters: try filters.int(minimum: 1), kernel: kernelHeight)
        spec.kernelWidth = kernelWidth
        spec.stride = try options.child("stride")?.int(minimum: 1) ?? 1
        spec.padding = try options.child("padding")?.int(minimum: 0) ?? 0
        spec.outputPadding = try options.child("output_padding")?.int(minimum: 0) ?? 0
        spec.dilation = try options.child("dilation")?.int(minimum: 1) ?? 1
        spec.groups = try options.child("groups")?.int(minimum: 1) ?? 1
        spec.bias = try options.child("bias")?.bool() ?? true
        return .transposedConvolution(spec)
    }

    private static func parseSeparableConvolution(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        guard let options, options.isMapping else {
            throw node.error("\(node.path): separable needs options, e.g. 'separable: {filters: 64, kernel: 3, padding: same}'")
        }
        try options.expectKeys(["filters", "kernel", "stride", "padding", "dilation", "depth_multiplier", "bias"])
        guard let filters = try options.child("filters") else { throw options.error("\(options.path) needs 'filters'") }
        guard let kernel = try options.child("kernel") else { throw options.error("\(options.path) needs 'kernel'") }
        var spec = SeparableConvolutionSpec(filters: try filters.int(minimum: 1), kernel: try kernel.int(minimum: 1))
        spec.stride = try options.child("stride")?.int(minimum: 1) ?? 1
        spec.dilation = try options.child("dilation")?.int(minimum: 1) ?? 1
        spec.depthMultiplier = try options.child("depth_multiplier")?.int(minimum: 1) ?? 1
        spec.bias = try options.child("bias")?.bool() ?? true
        if let padding = try options.child("padding") { spec.padding = try parsePadding(padding) }
        return .separableConvolution(spec)
    }

    // MARK: Blocks

    /// `projection: auto`, `true` (always) or `false` (never).
    private static func parseProjection(_ node: ConfigNode?) throws -> Projection {
        guard let node else { return .auto }
        if let flag = node.node.bool { return flag ? .always : .never }
        _ = try node.oneOf(["auto", "true", "false"])
        return .auto
    }

    /// A non-empty list of layers inside a block.
    private static func parseLayerList(_ node: ConfigNode, example: String) throws -> [LayerSpec] {
        guard node.isSequence else { throw node.error("\(node.path) must be a list of layers, e.g. \(example)") }
        return try node.items().map(parseLayer)
    }

    private static func parseResidual(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        let example = "'residual: {layers: [conv: {filters: 64, kernel: 3, padding: 1}, batchnorm, relu], projection: auto}'"
        guard let options, options.isMapping else { throw node.error("\(node.path): residual needs options, e.g. \(example)") }
        try options.expectKeys(["layers", "projection", "relu"])
        guard let layersNode = try options.child("layers") else { throw options.error("\(options.path) needs 'layers', e.g. \(example)") }
        let layers = try parseLayerList(layersNode, example: "[conv: {filters: 64, kernel: 3, padding: 1}, relu]")
        guard !layers.isEmpty else { throw layersNode.error("\(layersNode.path) is empty; a residual block needs at least one layer") }
        return .residual(ResidualSpec(
            layers: layers, projection: try parseProjection(try options.child("projection")),
            reluAfterSum: try options.child("relu")?.bool() ?? false))
    }

    private static func parseResidualBlock(_ node: ConfigNode, _ options: ConfigNode?, kind: String) throws -> LayerSpec {
        guard let options else { throw node.error("\(node.path): \(kind) needs filters, e.g. '\(kind): 64' or '\(kind): {filters: 128, stride: 2}'") }
        var filters = 0, stride = 1, expansion = 4, projection = Projection.auto
        if options.isScalar {
            filters = try options.int(minimum: 1)
        } else {
            try options.expectKeys(kind == "bottleneck" ? ["filters", "stride", "expansion", "projection"] : ["filters", "stride", "projection"])
            guard let filtersNode = try options.child("filters") else { throw options.error("\(options.path) needs 'filters'") }
            filters = try filtersNode.int(minimum: 1)
            stride = try options.child("stride")?.int(minimum: 1) ?? 1
            if kind == "bottleneck" { expansion = try options.child("expansion")?.int(minimum: 1) ?? 4 }
            projection = try parseProjection(try options.child("projection"))
        }
        return kind == "bottleneck"
            ? .bottleneck(filters: filters, stride: stride, expansion: expansion, projection: projection)
            : .basicBlock(filters: filters, stride: stride, projection: projection)
    }

    private static func parseConcat(_ node: ConfigNode, _ options: ConfigNode?) throws -> LayerSpec {
        let example = "'concat: {branches: [[conv: {filters: 16, kernel: 1}], [maxpool: {size: 3, stride: 1, padding: 1}]]}'"
        guard let options else { throw node.error("\(node.path): concat needs branches, e.g. \(example)") }
        let branchesNode: ConfigNode
        if options.isSequence {
            branchesNode = options
        } else {
            try options.expectKeys(["branches"])
            guard let found = try options.child("branches") else { throw options.error("\(options.path) needs 'branches', e.g. \(example)") }
            branchesNode = found
        }
        guard branchesNode.isSequence else { throw branchesNode.error("\(branchesNode.path) must be a list of layer lists, e.g. \(example)") }
        let branches = try branchesNode.items().map { try parseLayerList($0, example: "[conv: {filters: 16, kernel: 1}, relu]") }
        guard !branches.isEmpty else { throw branchesNode.error("\(branchesNode.path) is empty; concat needs at least one branch") }
        return .concat(branches: branches)
    }
}

/// How a layer is written back into the resolved YAML that workers receive: every option spelled
/// out, so `parseLayer` reads back exactly the same `LayerSpec`.
extension ModelConfig {
    package static func render(_ layer: LayerSpec) -> String {
        switch layer {
        case .relu: return "relu"
        case .sigmoid: return "sigmoid"
        case .tanh: return "tanh"
        case .flatten: return "flatten"
        case .globalAveragePool: return "globalavgpool"
        case .dense(let units, let bias): return "dense: {units: \(units), bias: \(bias)}"
        case .maxPool(let size, let stride, let padding):
            return "maxpool: {size: \(size)\(strideOption(stride)), padding: \(padding)}"
        case .averagePool(let size, let stride, let padding):
            return "avgpool: {size: \(size)\(strideOption(stride)), padding: \(padding)}"
        case .l2Pool(let size, let stride):
            return "l2pool: {size: \(size)\(strideOption(stride))}"
        case .leakyReLU(let slope): return "leakyrelu: \(slope)"
        case .prelu(let perChannel, let initial): return "prelu: {per_channel: \(perChannel), init: \(initial)}"
        case .elu(let alpha): return "elu: \(alpha)"
        case .dropout(let probability): return "dropout: \(probability)"
        case .spatialDropout(let probability): return "spatial_dropout: \(probability)"
        case .batchNorm(let b):
            let momentum = b.momentum.map { "\($0)" } ?? "cumulative"
            return "batchnorm: {epsilon: \(b.epsilon), momentum: \(momentum), affine: \(b.affine)}"
        case .localResponseNorm(let l):
            return "lrn: {size: \(l.size), alpha: \(l.alpha), beta: \(l.beta), k: \(l.k)}"
        case .convolution(let c):
            return "conv: {filters: \(c.filters), kernel: \(kernel(c.kernelHeight, c.kernelWidth)), stride: \(c.stride), "
                + "padding: \(padding(c.padding)), dilation: \(c.dilation), groups: \(c.groups), bias: \(c.bias)}"
        case .transposedConvolution(let t):
            return "convtranspose: {filters: \(t.filters), kernel: \(kernel(t.kernelHeight, t.kernelWidth)), stride: \(t.stride), "
                + "padding: \(t.padding), output_padding: \(t.outputPadding), dilation: \(t.dilation), groups: \(t.groups), bias: \(t.bias)}"
        case .separableConvolution(let s):
            return "separable: {filters: \(s.filters), kernel: \(s.kernel), stride: \(s.stride), padding: \(padding(s.padding)), "
                + "dilation: \(s.dilation), depth_multiplier: \(s.depthMultiplier), bias: \(s.bias)}"
        case .residual(let r):
            return "residual: {layers: \(renderList(r.layers)), projection: \(projection(r.projection)), relu: \(r.reluAfterSum)}"
        case .basicBlock(let filters, let stride, let p):
            return "basic_block: {filters: \(filters), stride: \(stride), projection: \(projection(p))}"
        case .bottleneck(let filters, let stride, let expansion, let p):
            return "bottleneck: {filters: \(filters), stride: \(stride), expansion: \(expansion), projection: \(projection(p))}"
        case .concat(let branches):
            return "concat: {branches: [" + branches.map(renderList).joined(separator: ", ") + "]}"
        case .volumeConvolution(let c):
            return "conv\(c.rank)d: {filters: \(c.filters), kernel: \(kernelSizes(c.kernel)), stride: \(c.stride), "
                + "padding: \(padding(c.padding)), dilation: \(c.dilation), groups: \(c.groups), bias: \(c.bias)}"
        case .volumePool(let rank, let kind, let size, let stride, let padding):
            return "\(kind == .max ? "maxpool" : "avgpool")\(rank)d: {size: \(size)\(strideOption(stride)), padding: \(padding)}"
        case .locallyConnected(let l):
            return "locally_connected: {filters: \(l.filters), kernel: \(kernelSizes(l.kernel)), stride: \(l.stride), "
                + "padding: \(padding(l.padding)), dilation: \(l.dilation), bias: \(l.bias)}"
        }
    }

    /// A nested layer list in flow style: options-taking layers become one-key mappings.
    private static func renderList(_ layers: [LayerSpec]) -> String {
        "[" + layers.map { layer in
            let text = render(layer)
            return text.contains(":") ? "{\(text)}" : text
        }.joined(separator: ", ") + "]"
    }

    /// A pool's stride when written; left out when it defaults to the size, so it reads back as nil.
    private static func strideOption(_ stride: Int?) -> String {
        stride.map { ", stride: \($0)" } ?? ""
    }

    private static func kernel(_ height: Int, _ width: Int) -> String {
        height == width ? "\(height)" : "[\(height), \(width)]"
    }

    private static func kernelSizes(_ sizes: [Int]) -> String {
        sizes.count == 1 ? "\(sizes[0])" : "[" + sizes.map(String.init).joined(separator: ", ") + "]"
    }

    private static func padding(_ padding: Padding) -> String {
        switch padding {
        case .explicit(let p): return "\(p)"
        case .same: return "same"
        case .valid: return "valid"
        }
    }

    private static func projection(_ projection: Projection) -> String {
        switch projection {
        case .auto: return "auto"
        case .always: return "true"
        case .never: return "false"
        }
    }
}
