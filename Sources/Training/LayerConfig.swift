import CNN

/// How one entry of `model.layers` reads: `relu`, `maxpool: 2`, `conv: {filters: 32, kernel: 3}`.
extension TrainingConfig {
    static let layerKinds = ["conv", "maxpool", "relu", "flatten", "dense"]

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
        switch kind {
        case "relu": return .relu
        case "flatten": return .flatten
        case "dense":
            guard let options else { throw node.error("\(node.path): dense needs units, e.g. 'dense: 128'") }
            if options.isScalar { return .dense(units: try options.int(minimum: 1), bias: true) }
            try options.expectKeys(["units", "bias"])
            guard let units = try options.child("units") else { throw options.error("\(options.path) needs 'units'") }
            return .dense(units: try units.int(minimum: 1), bias: try options.child("bias")?.bool() ?? true)
        case "maxpool":
            guard let options else { return .maxPool(size: 2, stride: nil, padding: 0) }
            if options.isScalar { return .maxPool(size: try options.int(minimum: 1), stride: nil, padding: 0) }
            try options.expectKeys(["size", "stride", "padding"])
            return .maxPool(
                size: try options.child("size")?.int(minimum: 1) ?? 2,
                stride: try options.child("stride")?.int(minimum: 1),
                padding: try options.child("padding")?.int(minimum: 0) ?? 0)
        default:  // conv
            guard let options, options.isMapping else {
                throw node.error("\(node.path): conv needs options, e.g. 'conv: {filters: 32, kernel: 3, padding: 1}'")
            }
            try options.expectKeys(["filters", "kernel", "stride", "padding", "dilation", "groups", "bias"])
            guard let filters = try options.child("filters") else { throw options.error("\(options.path) needs 'filters'") }
            guard let kernel = try options.child("kernel") else { throw options.error("\(options.path) needs 'kernel'") }
            var spec = ConvolutionSpec(filters: try filters.int(minimum: 1), kernel: try kernel.int(minimum: 1))
            spec.stride = try options.child("stride")?.int(minimum: 1) ?? 1
            spec.dilation = try options.child("dilation")?.int(minimum: 1) ?? 1
            spec.groups = try options.child("groups")?.int(minimum: 1) ?? 1
            spec.bias = try options.child("bias")?.bool() ?? true
            if let padding = try options.child("padding") {
                if let number = padding.node.int {
                    guard number >= 0 else { throw padding.error("\(padding.path) must not be negative, found \(number)") }
                    spec.padding = .explicit(number)
                } else {
                    switch try padding.oneOf(["same", "valid", "SAME", "VALID"]).lowercased() {
                    case "same": spec.padding = .same
                    default: spec.padding = .valid
                    }
                }
            }
            return .convolution(spec)
        }
    }

}

/// How a layer is written back into the resolved YAML that workers receive.
extension TrainingConfig {
    static func render(_ layer: LayerSpec) -> String {
        switch layer {
        case .relu: return "relu"
        case .flatten: return "flatten"
        case .dense(let units, let bias): return "dense: {units: \(units), bias: \(bias)}"
        case .maxPool(let size, let stride, let padding):
            return "maxpool: {size: \(size), stride: \(stride ?? size), padding: \(padding)}"
        case .convolution(let c):
            let padding: String
            switch c.padding {
            case .explicit(let p): padding = "\(p)"
            case .same: padding = "same"
            case .valid: padding = "valid"
            }
            precondition(c.kernelHeight == c.kernelWidth, "configs describe square kernels")
            return "conv: {filters: \(c.filters), kernel: \(c.kernelHeight), stride: \(c.stride), padding: \(padding), "
                + "dilation: \(c.dilation), groups: \(c.groups), bias: \(c.bias)}"
        }
    }
}
