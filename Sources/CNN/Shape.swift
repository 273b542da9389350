/// The shape of one sample as it flows between layers: channels, then one, two or three spatial
/// axes. Images are [C, H, W] (`spatialRank` 2); sequences [C, L] are stored as height 1 and
/// width L (`spatialRank` 1); volumes [C, D, H, W] add a depth (`spatialRank` 3). Every layout is
/// the contiguous row-major one, so a sequence is exactly an image of one row and a volume is D
/// images one after another per channel. Dense outputs are `C x 1 x 1`, so one type serves every
/// layer.
public struct FeatureShape: Hashable, Sendable, CustomStringConvertible {
    public var channels: Int
    /// 1 unless `spatialRank` is 3.
    public var depth: Int
    /// 1 when `spatialRank` is 1.
    public var height: Int
    public var width: Int
    /// How many spatial axes the shape has: 1 (sequence), 2 (image) or 3 (volume).
    public var spatialRank: Int

    /// An image [C, H, W].
    public init(channels: Int, height: Int, width: Int) {
        self.channels = channels
        self.depth = 1
        self.height = height
        self.width = width
        self.spatialRank = 2
    }

    /// A sequence [C, L].
    public init(channels: Int, length: Int) {
        self.channels = channels
        self.depth = 1
        self.height = 1
        self.width = length
        self.spatialRank = 1
    }

    /// A volume [C, D, H, W].
    public init(channels: Int, depth: Int, height: Int, width: Int) {
        self.channels = channels
        self.depth = depth
        self.height = height
        self.width = width
        self.spatialRank = 3
    }

    /// The shape from its dimensions, channels first: [C, L], [C, H, W] or [C, D, H, W]; nil for
    /// any other count.
    public init?(dimensions: [Int]) {
        switch dimensions.count {
        case 2: self.init(channels: dimensions[0], length: dimensions[1])
        case 3: self.init(channels: dimensions[0], height: dimensions[1], width: dimensions[2])
        case 4: self.init(channels: dimensions[0], depth: dimensions[1], height: dimensions[2], width: dimensions[3])
        default: return nil
        }
    }

    /// A flat vector of `count` features.
    public static func vector(_ count: Int) -> FeatureShape {
        FeatureShape(channels: count, height: 1, width: 1)
    }

    /// The spatial sizes, outermost first: [L], [H, W] or [D, H, W].
    public var spatial: [Int] {
        switch spatialRank {
        case 1: return [width]
        case 3: return [depth, height, width]
        default: return [height, width]
        }
    }

    /// Channels, then the spatial sizes: PyTorch's shape of one sample.
    public var dimensions: [Int] { [channels] + spatial }

    /// Values per channel.
    public var spatialCount: Int { depth * height * width }

    /// Elements per sample.
    public var count: Int { channels * spatialCount }

    public var description: String { dimensions.map(String.init).joined(separator: "x") }
}

/// A model that cannot be built as written: says which layer, the formula, the numbers and a fix.
public struct ModelError: Error, CustomStringConvertible, Equatable {
    public var layer: String
    public var message: String

    public init(layer: String, message: String) {
        self.layer = layer
        self.message = message
    }

    public var description: String { "\(layer): \(message)" }
}

/// The output size of a sliding window along one axis, floor((W - F_eff + 2P) / S) + 1 with
/// F_eff = D(F - 1) + 1, as PyTorch computes it.
///
/// When the division is not exact the last window position is dropped. If that remainder is only
/// padding (ResNet's 7x7/2 on 224 gives 112.5), this is harmless; if real input rows or columns are
/// never seen by any window (AlexNet's 11x11/4 on 224 gives 54.25), the model is almost surely
/// wrong, and with `strict` that is an error citing the numbers and a fix.
public func slidingOutputSize(
    input: Int, kernel: Int, stride: Int, padding: Int, dilation: Int = 1, axis: String, layer: String,
    strict: Bool = true
) throws -> Int {
    let effective = dilation * (kernel - 1) + 1
    let span = input - effective + 2 * padding
    let shownKernel = dilation == 1 ? "\(kernel)" : "\(effective)"
    let formula = "(\(input) - \(shownKernel) + 2*\(padding)) / \(stride) + 1"
    if span < 0 {
        throw ModelError(
            layer: layer,
            message: "the window of \(effective) does not fit the input \(axis) of \(input) with padding \(padding): "
                + "\(formula) < 1; use a smaller kernel, more padding, or a larger input")
    }
    let size = span / stride + 1
    let lastCovered = (size - 1) * stride - padding + effective - 1
    if strict && span % stride != 0 && lastCovered < input - 1 {
        let exact = format2(Double(span) / Double(stride) + 1)
        let unseen = input - 1 - lastCovered
        let remainder = span % stride
        var fix = "use an input \(axis) of \(input - remainder) or \(input - remainder + stride)"
        var widerPadding = padding + 1
        while widerPadding <= padding + stride {
            let widerSize = (input - effective + 2 * widerPadding) / stride + 1
            if (widerSize - 1) * stride - widerPadding + effective - 1 >= input - 1 { break }
            widerPadding += 1
        }
        fix += ", or padding \(widerPadding)"
        throw ModelError(
            layer: layer,
            message: "output \(axis) \(formula) = \(exact) is not an integer: the last \(unseen) "
                + "\(axis == "width" ? "column" : "row")\(unseen == 1 ? "" : "s") of the input would never be seen; \(fix)")
    }
    return size
}

/// Two decimals without Foundation's formatter: 54.25, 13.5, 7.0.
func format2(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let whole = hundredths / 100
    let fraction = abs(hundredths % 100)
    if fraction == 0 { return "\(whole).0" }
    if fraction % 10 == 0 { return "\(whole).\(fraction / 10)" }
    return "\(whole).\(fraction < 10 ? "0" : "")\(fraction)"
}

/// The output shape of F x F pooling windows moved by `stride` over `padding` zeros (PyTorch's
/// rules: sizes are floored, and padding may be at most half the window), or a `ModelError`
/// naming the value that is wrong.
public func pooledShape(input: FeatureShape, size: Int, stride: Int, padding: Int, layer: String) throws -> FeatureShape {
    guard size > 0 else { throw ModelError(layer: layer, message: "pool size must be at least 1, found \(size)") }
    guard stride > 0 else { throw ModelError(layer: layer, message: "pool stride must be at least 1, found \(stride)") }
    guard padding >= 0 else { throw ModelError(layer: layer, message: "pool padding must not be negative, found \(padding)") }
    guard padding * 2 <= size else {
        throw ModelError(layer: layer, message: "padding \(padding) must be at most half the pool size \(size), as in PyTorch")
    }
    // Pooling floors like PyTorch: dropping a last odd row is the common, intended case.
    let height = try slidingOutputSize(
        input: input.height, kernel: size, stride: stride, padding: padding, axis: "height", layer: layer, strict: false)
    let width = try slidingOutputSize(
        input: input.width, kernel: size, stride: stride, padding: padding, axis: "width", layer: layer, strict: false)
    return FeatureShape(channels: input.channels, height: height, width: width)
}
