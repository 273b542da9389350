// Legend: n sample, c channel, P output positions per channel, taps = window size.

/// Max or average pooling over 1-D or 3-D windows (PyTorch's `MaxPool1d`/`MaxPool3d`,
/// `AvgPool1d`/`AvgPool3d` with their defaults): the same window size, stride and padding on every
/// spatial axis, sizes floored. Max pooling never picks padding and remembers each output's first
/// maximum (as PyTorch does); average pooling counts padding as zeros (`count_include_pad`).
public final class PoolingND: Layer {
    public enum Kind: Sendable, Equatable {
        case max
        case average
    }

    public let inputShape: FeatureShape
    public let outputShape: FeatureShape
    public let kind: Kind
    public let size: Int
    public let stride: Int
    public let padding: Int

    private let geometry: VolumeGeometry
    /// For each output position and window tap, the input offset within a channel, -1 for padding.
    private let windowOffsets: [Int32]   // [P, taps]
    private let output = FloatBuffer()          // [N, C, P]
    private let switches = IndexBuffer()        // [N, C, P]: offset of the maximum within the channel
    private var inputGradient = FloatBuffer()   // [N, C, D, H, W]

    public init(input: FeatureShape, kind: Kind, size: Int, stride: Int? = nil, padding: Int = 0, name: String = "PoolingND") throws {
        let rank = input.spatialRank
        let what = (kind == .max ? "maxpool" : "avgpool") + "\(rank)d"
        guard rank == 1 || rank == 3 else {
            throw ModelError(layer: name, message: "\(kind == .max ? "maxpool" : "avgpool")1d and 3d take inputs [C, L] or [C, D, H, W], found \(input); use \(kind == .max ? "maxpool" : "avgpool") for images")
        }
        let stride = stride ?? size
        guard size > 0 else { throw ModelError(layer: name, message: "\(what) size must be at least 1, found \(size)") }
        guard stride > 0 else { throw ModelError(layer: name, message: "\(what) stride must be at least 1, found \(stride)") }
        guard padding >= 0 else { throw ModelError(layer: name, message: "\(what) padding must not be negative, found \(padding)") }
        guard padding * 2 <= size else {
            throw ModelError(layer: name, message: "padding \(padding) must be at most half the pool size \(size), as in PyTorch")
        }
        let geometry = try VolumeGeometry(
            shape: input, kernel: Array(repeating: size, count: rank), stride: Array(repeating: stride, count: rank),
            padding: Array(repeating: padding, count: rank), dilation: Array(repeating: 1, count: rank), strict: false, layer: name)
        // The unfolding of one channel, transposed: window p's taps side by side.
        let single = VolumeGeometry(channelsOf: geometry, channels: 1)
        var offsets = [Int32](repeating: -1, count: single.rows * single.columns)
        let (taps, positions) = (single.rows, single.columns)
        single.forEachEntry { entry, offset in
            let (tap, position) = entry.quotientAndRemainder(dividingBy: positions)
            offsets[position * taps + tap] = Int32(offset)
        }
        var outputShape = input
        (outputShape.depth, outputShape.height, outputShape.width) = (geometry.output[0], geometry.output[1], geometry.output[2])
        self.inputShape = input
        self.outputShape = outputShape
        self.kind = kind
        self.size = size
        self.stride = stride
        self.padding = padding
        self.geometry = geometry
        self.windowOffsets = offsets
    }

    public var summary: String {
        (kind == .max ? "MaxPool" : "AvgPool") + "\(inputShape.spatialRank)d(\(size)"
            + (stride != size ? ", s\(stride)" : "") + (padding != 0 ? ", p\(padding)" : "") + ")"
    }

    public var forwardFLOPs: Int { outputShape.count * geometry.taps }

    public func bind(inputGradient buffer: FloatBuffer) { inputGradient = buffer }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let positions = geometry.columns, taps = geometry.taps, plane = geometry.inputPlane
        let out = output.reserve(batch * outputShape.count)
        let argmax = kind == .max ? switches.reserve(batch * outputShape.count) : nil
        let scale = 1 / Float(taps)
        windowOffsets.withUnsafeBufferPointer { offsets in
            for channel in 0..<(batch * inputShape.channels) {
                let source = input + channel * plane
                for p in 0..<positions {
                    let window = offsets.baseAddress! + p * taps
                    let index = channel * positions + p
                    switch kind {
                    case .max:
                        var best = -Float.infinity
                        var at: Int32 = -1
                        for t in 0..<taps where window[t] >= 0 {
                            let value = source[Int(window[t])]
                            // PyTorch's rule: a larger value or a NaN takes over.
                            if at < 0 || value > best || value.isNaN { best = value; at = window[t] }
                        }
                        out[index] = best
                        argmax![index] = at
                    case .average:
                        var sum: Float = 0
                        for t in 0..<taps where window[t] >= 0 { sum += source[Int(window[t])] }
                        out[index] = sum * scale
                    }
                }
            }
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let positions = geometry.columns, taps = geometry.taps, plane = geometry.inputPlane
        let dInput = inputGradient.reserve(batch * inputShape.count)
        dInput.update(repeating: 0, count: batch * inputShape.count)
        let scale = 1 / Float(taps)
        windowOffsets.withUnsafeBufferPointer { offsets in
            for channel in 0..<(batch * inputShape.channels) {
                let destination = dInput + channel * plane
                for p in 0..<positions {
                    let index = channel * positions + p
                    switch kind {
                    case .max:
                        destination[Int(switches.pointer[index])] += outputGradient[index]
                    case .average:
                        let window = offsets.baseAddress! + p * taps
                        let share = outputGradient[index] * scale
                        for t in 0..<taps where window[t] >= 0 { destination[Int(window[t])] += share }
                    }
                }
            }
        }
        return dInput
    }
}

extension VolumeGeometry {
    /// The same windows over `channels` channels.
    init(channelsOf other: VolumeGeometry, channels: Int) {
        self.channels = channels
        self.input = other.input
        self.kernel = other.kernel
        self.stride = other.stride
        self.padding = other.padding
        self.dilation = other.dilation
        self.output = other.output
    }
}
