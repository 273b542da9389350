// Legend: n sample, b branch, C_b a branch's output channels, HW the output plane.

/// Parallel branches on one input whose outputs are concatenated along channels, in branch order
/// (an inception module: 1x1, 3x3, 5x5 and pooling branches side by side).
///
/// Every branch must give the same height and width. Tensors are the branches' in order, named
/// `branch1.0.weight`, `branch2.1.bias`, ... (branches count from 1 as in torchvision's inception).
/// Backward hands each branch its channels of the output gradient and sums the branches' input
/// gradients.
public final class Concatenation: Layer {
    public let branches: [Sequential]
    public let inputShape: FeatureShape
    public let outputShape: FeatureShape

    private let output = FloatBuffer()          // [N, sum C_b, H, W]
    private let branchGradient = FloatBuffer()  // [N, C_b, H, W] of the branch being back-propagated
    private let inputGradient = FloatBuffer()   // [N, C_in, H_in, W_in]

    /// Joins branches that all take `input` and give outputs of one height and width.
    public init(input: FeatureShape, branches: [Sequential], name: String) throws {
        guard let first = branches.first else {
            throw ModelError(layer: name, message: "concat needs at least one branch in 'branches'")
        }
        for (b, branch) in branches.enumerated() {
            guard branch.inputShape == input else {
                throw ModelError(layer: name, message: "branch \(b + 1) expects input \(branch.inputShape), the block receives \(input)")
            }
            let shape = branch.outputShape
            guard shape.spatial == first.outputShape.spatial, shape.spatialRank == first.outputShape.spatialRank else {
                let sizes = branches.map { $0.outputShape.spatial.map(String.init).joined(separator: "x") }.joined(separator: ", ")
                throw ModelError(
                    layer: name,
                    message: "branches must give outputs of one height and width to be concatenated along channels, "
                        + "found \(sizes); adjust padding or strides so that they agree")
            }
        }
        self.branches = branches
        self.inputShape = input
        var shape = first.outputShape
        shape.channels = branches.reduce(0) { $0 + $1.outputShape.channels }
        self.outputShape = shape
    }

    public var summary: String {
        "Concat(" + branches.map { "\($0.outputShape.channels)" }.joined(separator: " + ") + ")"
    }

    public var parameterSpecs: [ParameterSpec] { branches.flatMap(\.parameterSpecs) }
    public var stateSpecs: [ParameterSpec] { branches.flatMap(\.stateSpecs) }
    public var forwardFLOPs: Int { branches.reduce(0) { $0 + $1.forwardFLOPs } }
    public var savedFloatsPerSample: Int { branches.reduce(outputShape.count) { $0 + $1.savedFloatsPerSample } }

    public var sublayers: [Layer] { branches }

    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float> {
        let out = output.reserve(batch * outputShape.count)
        var channelOffset = 0
        for branch in branches {
            let branchOut = branch.forward(input, batch: batch, context: context)  // [N, C_b, H, W]
            let slice = branch.outputShape.count
            for n in 0..<batch {
                (out + n * outputShape.count + channelOffset).update(from: branchOut + n * slice, count: slice)
            }
            channelOffset += slice
        }
        return out
    }

    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float> {
        let inputCount = batch * inputShape.count
        let dInput = inputGradient.reserve(inputCount)
        var channelOffset = 0
        for (b, branch) in branches.enumerated() {
            let slice = branch.outputShape.count
            let dBranch = branchGradient.reserve(batch * slice)
            for n in 0..<batch {
                (dBranch + n * slice).update(from: outputGradient + n * outputShape.count + channelOffset, count: slice)
            }
            channelOffset += slice
            let dx = branch.backward(dBranch, batch: batch)  // [N, C_in, H_in, W_in]
            if b == 0 {
                dInput.update(from: dx, count: inputCount)
            } else {
                for i in 0..<inputCount { dInput[i] += dx[i] }
            }
        }
        return dInput
    }
}

extension Concatenation {
    /// Builds each branch from its layer list (an empty list is the identity branch).
    static func make(input: FeatureShape, branches specs: [[LayerSpec]], name: String) throws -> Concatenation {
        var branches: [Sequential] = []
        for (b, layers) in specs.enumerated() {
            let chain = try makeChain(layers, input: input, tensorPrefix: "branch\(b + 1).", path: "\(name).concat.branches[\(b)]")
            branches.append(try Sequential(input: input, children: chain, summary: "branch\(b + 1)", name: "\(name).concat.branches[\(b)]"))
        }
        return try Concatenation(input: input, branches: branches, name: name)
    }
}
