// Legend: c channel, (d, h, w) input position, (od, oh, ow) window position, (a, i, j) kernel tap
// along depth, height and width.

/// The windows an N-d convolution or pooling slides over one sample, for any spatial rank: every
/// shape is seen as a volume [C, D, H, W], a sequence being D = H = 1 and an image D = 1, with
/// kernel size 1, stride 1, padding 0 and dilation 1 along the axes it lacks. Those axes then
/// contribute a factor of exactly 1 and a term of exactly 0, so a 1-D or 2-D sample goes through
/// the same loops and the same sums as it would with loops of its own.
///
/// `im2col` unfolds a sample into a matrix [C*kd*kh*kw, OD*OH*OW] whose column p holds the values
/// window p sees (zero in padding), in PyTorch's `unfold` order (channel-major, then the taps);
/// `col2im` is its adjoint.
struct VolumeGeometry: Sendable, Equatable {
    let channels: Int
    /// Input sizes [D, H, W].
    let input: [Int]
    /// Per axis [depth, height, width].
    let kernel: [Int]
    let stride: [Int]
    let padding: [Int]
    let dilation: [Int]
    /// Output sizes [OD, OH, OW].
    let output: [Int]

    /// Pads per-axis settings given for the last `values.count` axes to all three.
    static func volume(_ values: [Int], filler: Int) -> [Int] {
        [Int](repeating: filler, count: 3 - values.count) + values
    }

    /// The geometry of windows `kernel` (one size per spatial axis of `shape`) over `shape`,
    /// with output sizes computed as PyTorch does; errors cite the formula for the axis at fault.
    init(shape: FeatureShape, kernel: [Int], stride: [Int], padding: [Int], dilation: [Int], strict: Bool, layer: String) throws {
        let rank = shape.spatialRank
        precondition(kernel.count == rank && stride.count == rank && padding.count == rank && dilation.count == rank)
        let names = rank == 1 ? ["length"] : rank == 2 ? ["height", "width"] : ["depth", "height", "width"]
        var output: [Int] = []
        for axis in 0..<rank {
            output.append(try slidingOutputSize(
                input: shape.spatial[axis], kernel: kernel[axis], stride: stride[axis], padding: padding[axis],
                dilation: dilation[axis], axis: names[axis], layer: layer, strict: strict))
        }
        self.channels = shape.channels
        self.input = [shape.depth, shape.height, shape.width]
        self.kernel = VolumeGeometry.volume(kernel, filler: 1)
        self.stride = VolumeGeometry.volume(stride, filler: 1)
        self.padding = VolumeGeometry.volume(padding, filler: 0)
        self.dilation = VolumeGeometry.volume(dilation, filler: 1)
        self.output = VolumeGeometry.volume(output, filler: 1)
    }

    /// Taps per window and channel.
    var taps: Int { kernel[0] * kernel[1] * kernel[2] }
    /// Rows of the unfolded matrix.
    var rows: Int { channels * taps }
    /// Columns of the unfolded matrix: one per window position.
    var columns: Int { output[0] * output[1] * output[2] }
    /// Values per channel of the input.
    var inputPlane: Int { input[0] * input[1] * input[2] }

    /// Calls `body(entry, inputOffset)` for every entry of the unfolded matrix of one sample, in
    /// row-major order, with the offset of the input value it holds, or -1 for padding. Every
    /// data movement below is this one walk, so they agree on every index by construction.
    @inline(__always)
    func forEachEntry(_ body: (Int, Int) -> Void) {
        let (depth, height, width) = (input[0], input[1], input[2])
        var entry = 0
        for c in 0..<channels {
            let plane = c * inputPlane
            for a in 0..<kernel[0] {
                for i in 0..<kernel[1] {
                    for j in 0..<kernel[2] {
                        for od in 0..<output[0] {
                            let d = od * stride[0] + a * dilation[0] - padding[0]
                            let dInside = d >= 0 && d < depth
                            for oh in 0..<output[1] {
                                let h = oh * stride[1] + i * dilation[1] - padding[1]
                                let rowInside = dInside && h >= 0 && h < height
                                let rowStart = plane + (d * height + h) * width
                                for ow in 0..<output[2] {
                                    let w = ow * stride[2] + j * dilation[2] - padding[2]
                                    body(entry, rowInside && w >= 0 && w < width ? rowStart + w : -1)
                                    entry += 1
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// sample [C, D, H, W] -> columns [C*kd*kh*kw, OD*OH*OW].
    func im2col(_ sample: UnsafePointer<Float>, into columns: UnsafeMutablePointer<Float>) {
        forEachEntry { entry, offset in columns[entry] = offset >= 0 ? sample[offset] : 0 }
    }

    /// columns [C*kd*kh*kw, OD*OH*OW] -> sample [C, D, H, W]: overwrites the sample with the sum of
    /// every entry at the position it was read from, always in the same order.
    func col2im(_ columns: UnsafePointer<Float>, into sample: UnsafeMutablePointer<Float>) {
        sample.update(repeating: 0, count: channels * inputPlane)
        forEachEntry { entry, offset in
            if offset >= 0 { sample[offset] += columns[entry] }
        }
    }

    /// "3x3", "3x3x3", "5": per-axis sizes of the spatial axes of a rank.
    static func text(_ values: [Int]) -> String { values.map(String.init).joined(separator: "x") }

    /// A sliding window's options checked (one size per spatial axis of `input`, sizes at least 1,
    /// padding not negative, `filters` at least 1), its geometry, and the output shape with
    /// `filters` channels: what every layer with such windows (convolution, locally connected)
    /// builds on.
    static func window(
        input: FeatureShape, filters: Int, kernel: [Int], stride: [Int], padding: [Int], dilation: [Int], layer name: String
    ) throws -> (geometry: VolumeGeometry, output: FeatureShape) {
        let rank = input.spatialRank
        for (values, what) in [(kernel, "kernel"), (stride, "stride"), (padding, "padding"), (dilation, "dilation")]
        where values.count != rank {
            throw ModelError(layer: name, message: "\(what) needs \(rank) size\(rank == 1 ? "" : "s") (one per spatial axis of \(input)), found \(values)")
        }
        guard filters >= 1 else { throw ModelError(layer: name, message: "filters must be at least 1, found \(filters)") }
        for (values, what) in [(kernel, "kernel"), (stride, "stride"), (dilation, "dilation")] where values.contains(where: { $0 < 1 }) {
            throw ModelError(layer: name, message: "\(what) must be at least 1 on every axis, found \(values)")
        }
        guard padding.allSatisfy({ $0 >= 0 }) else {
            throw ModelError(layer: name, message: "padding must not be negative, found \(padding)")
        }
        let geometry = try VolumeGeometry(
            shape: input, kernel: kernel, stride: stride, padding: padding, dilation: dilation, strict: true, layer: name)
        var output = input
        output.channels = filters
        (output.depth, output.height, output.width) = (geometry.output[0], geometry.output[1], geometry.output[2])
        return (geometry, output)
    }

    /// A window's options for a layer's summary, those that differ from the default: ", s2, p1".
    static func optionsText(stride: [Int], padding: [Int], dilation: [Int]) -> String {
        var text = ""
        if stride.contains(where: { $0 != 1 }) { text += ", s\(Self.text(stride))" }
        if padding.contains(where: { $0 != 0 }) { text += ", p\(Self.text(padding))" }
        if dilation.contains(where: { $0 != 1 }) { text += ", d\(Self.text(dilation))" }
        return text
    }
}
