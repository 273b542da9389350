import Dispatch
import Randomness

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where one named tensor lives in a network's flat buffer.
public struct TensorSlot: Sendable, Equatable {
    /// PyTorch naming: "0.weight", "3.bias" as an `nn.Sequential` would name them, or the layer's
    /// given name ("features.0.weight", "layer1.0.conv1.weight", "fc.bias"; see `LayerSpec.named`).
    public var name: String
    public var shape: [Int]
    public var offset: Int
    public var count: Int
    public var initialiser: Initialiser
}

/// A sequential network whose parameters and gradients each live in one contiguous buffer, so the
/// optimiser, the all-reduce and the checkpoint all see the same ordered list (`parameterSlots`),
/// and a gradient is a single contiguous send.
public final class Network {
    public let spec: ModelSpec
    public let layers: [Layer]
    public let parameterSlots: [TensorSlot]
    public let stateSlots: [TensorSlot]
    public let parameterCount: Int
    public let stateCount: Int
    /// The network's own flat parameter vector, in `parameterSlots` order. The layers use it
    /// unless `bind(parameters:gradients:)` pointed them elsewhere (see `boundParameters`).
    public let parameters: FloatBuffer
    /// The network's own d(loss)/d(parameters), same layout; `backward` adds into it unless the
    /// layers are bound elsewhere (see `boundGradients`).
    public let gradients: FloatBuffer
    /// The network's own non-trainable state (BatchNorm running statistics), in `stateSlots` order.
    public let state: FloatBuffer
    /// What the last training pass observed for each state value (same layout as `state`).
    public let observations: FloatBuffer

    /// Where the layers read their parameters: `parameters.pointer` unless rebound.
    public private(set) var boundParameters: UnsafeMutablePointer<Float>
    /// Where `backward` adds the parameter gradients: `gradients.pointer` unless rebound.
    public private(set) var boundGradients: UnsafeMutablePointer<Float>
    /// Where the layers read their state: `state.pointer` unless rebound.
    public private(set) var boundState: UnsafeMutablePointer<Float>
    /// Where a training pass records its observations: `observations.pointer` unless rebound.
    public private(set) var boundObservations: UnsafeMutablePointer<Float>

    /// The scratch memory all the layers share during their calls (see `LayerWorkspace`): the
    /// network's own, never another replica's, as replicas compute on different threads.
    public let workspace = LayerWorkspace()

    private let lossGradient = FloatBuffer()
    /// The two buffers the layers' input gradients pass through in turn (see `backward`).
    private let gradientRelays = [FloatBuffer(), FloatBuffer()]

    /// Floats of room the two gradient relays have grown to, for memory accounting and tests.
    public var gradientRelayCapacity: Int { gradientRelays.reduce(0) { $0 + $1.capacity } }

    /// How long the last `computeGradients` spent in each half, for timelines (`--trace`).
    public private(set) var lastPassTiming = PassTiming()

    /// Told during `backward`, after each layer, the offset from which the parameter gradients
    /// are final (that layer's first parameter): backward runs from the last layer to the first,
    /// and each layer writes only its own gradients. A sender can pass on what is final while
    /// the earlier layers still compute.
    public var backwardProgress: ((Int) -> Void)?
    /// Where each layer's parameters begin in the flat vector; one more entry, `parameterCount`.
    private let layerParameterOffsets: [Int]

    /// The prefix of each top-level layer's tensors: its position ("3") or the name the spec
    /// gives it ("features.3", "fc").
    public var layerNames: [String] { spec.layers.enumerated().map { $0.element.tensorName ?? "\($0.offset)" } }

    public var inputShape: FeatureShape { spec.input }
    public var outputShape: FeatureShape { layers.last?.outputShape ?? spec.input }

    /// Builds every layer, inferring shapes; throws a `ModelError` naming the first impossible layer.
    public init(_ spec: ModelSpec) throws {
        self.spec = spec
        var layers: [Layer] = []
        var shape = spec.input
        for (index, layerSpec) in spec.layers.enumerated() {
            let layer = try layerSpec.makeLayer(input: shape, name: "model.layers[\(index)]")
            layers.append(layer)
            shape = layer.outputShape
        }
        self.layers = layers

        var parameterSlots: [TensorSlot] = []
        var stateSlots: [TensorSlot] = []
        var parameterOffset = 0
        var stateOffset = 0
        for (index, layer) in layers.enumerated() {
            let prefix = spec.layers[index].tensorName ?? "\(index)"
            for p in layer.parameterSpecs {
                parameterSlots.append(TensorSlot(
                    name: "\(prefix).\(p.name)", shape: p.shape, offset: parameterOffset, count: p.count,
                    initialiser: p.initialiser))
                parameterOffset += p.count
            }
            for s in layer.stateSpecs {
                stateSlots.append(TensorSlot(
                    name: "\(prefix).\(s.name)", shape: s.shape, offset: stateOffset, count: s.count,
                    initialiser: s.initialiser))
                stateOffset += s.count
            }
        }
        self.parameterSlots = parameterSlots
        self.stateSlots = stateSlots
        self.parameterCount = parameterOffset
        layerParameterOffsets = layers.reduce(into: [0]) { $0.append($0.last! + $1.parameterCount) }
        self.stateCount = stateOffset
        parameters = FloatBuffer(count: parameterOffset)
        gradients = FloatBuffer(count: parameterOffset)
        state = FloatBuffer(count: stateOffset)
        observations = FloatBuffer(count: stateOffset)

        boundParameters = parameters.pointer
        boundGradients = gradients.pointer
        boundState = state.pointer
        boundObservations = observations.pointer
        bind(parameters: parameters.pointer, gradients: gradients.pointer)
        bind(state: state.pointer, observations: observations.pointer)
        for layer in layers { layer.bind(workspace: workspace) }
        // Nothing before the first layer learns, so its input gradient would be thrown away.
        if let first = layers.first { Network.skipInputGradient(of: first) }
    }

    /// Points every layer at other memory for its parameters and parameter gradients:
    /// `parameterCount` floats each, laid out as `parameters`. The layers only read `parameters`,
    /// so several networks of one spec may share them while each computes on its own thread
    /// (model replicas); `gradients` must be each network's own. The memory must stay valid, and
    /// unchanged during a pass, for as long as the binding lasts; `bindOwnBuffers` undoes it.
    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        boundParameters = parameters
        boundGradients = gradients
        var cursor = 0
        for layer in layers {
            layer.bind(parameters: parameters + cursor, gradients: gradients + cursor)
            cursor += layer.parameterCount
        }
    }

    /// Points every layer at other memory for its state and observations (`stateCount` floats
    /// each, laid out as `state`). Forward passes only read the state; the observations must be
    /// each network's own. The same lifetime rules as `bind(parameters:gradients:)` apply.
    public func bind(state: UnsafeMutablePointer<Float>, observations: UnsafeMutablePointer<Float>) {
        boundState = state
        boundObservations = observations
        var cursor = 0
        for layer in layers {
            layer.bind(state: state + cursor, observations: observations + cursor)
            cursor += layer.stateCount
        }
    }

    /// Makes this network's convolutions keep Winograd's transformed filters in `transforms`,
    /// once for every network of the same spec bound to it, instead of each its own: model
    /// replicas that read the same weights on different threads (see `SharedFilterTransforms`
    /// for the promise the holder of the weights makes). Bind networks of one spec only.
    public func share(filterTransforms transforms: SharedFilterTransforms) {
        // Depth first through the blocks: the same order in every network of one spec.
        var ordinal = 0, denseOrdinal = 0
        func visit(_ layer: Layer) {
            if let convolution = layer as? Conv2D {
                convolution.sharedFilterTransform = transforms.slot(ordinal)
                ordinal += 1
            }
            if let dense = layer as? Dense {
                dense.sharedRoundedWeights = transforms.roundingSlot(denseOrdinal)
                denseOrdinal += 1
            }
            layer.sublayers.forEach(visit)
        }
        layers.forEach(visit)
    }

    /// Makes the convolutions (`Conv2D`, through im2col, and residual blocks' 1x1 projections)
    /// and dense layers, nested ones included, compute their matrix products in `precision` from
    /// the next pass on. Other layers, the transposed, N-d and locally connected convolutions
    /// among them, stay Float32.
    public func use(precision: Precision) {
        func visit(_ layer: Layer) {
            if let convolution = layer as? Conv2D { convolution.precision = precision }
            if let dense = layer as? Dense { dense.precision = precision }
            if let projection = layer as? PointwiseConv2D { projection.precision = precision }
            layer.sublayers.forEach(visit)
        }
        layers.forEach(visit)
        self.precision = precision
    }

    /// The precision `use(precision:)` set last (fp32 until then).
    public private(set) var precision = Precision.fp32

    /// Points the layers back at the network's own buffers.
    public func bindOwnBuffers() {
        bind(parameters: parameters.pointer, gradients: gradients.pointer)
        bind(state: state.pointer, observations: observations.pointer)
    }

    /// Turns off the input gradient of the convolutions that see the network's input (inside the
    /// blocks that pass it straight to them): it is never used, and costs a GEMM and a col2im.
    /// A block's input gradient only combines its children's, so the blocks' own results are
    /// unused too; a zero from a child does them no harm.
    private static func skipInputGradient(of layer: Layer) {
        switch layer {
        case let convolution as Conv2D:
            convolution.computesInputGradient = false
        case let sequential as Sequential:
            if let first = sequential.children.first { skipInputGradient(of: first.layer) }
        case let residual as Residual:
            skipInputGradient(of: residual.path)
            if let projection = residual.projection { skipInputGradient(of: projection) }
        case let concatenation as Concatenation:
            for branch in concatenation.branches { skipInputGradient(of: branch) }
        default:
            break
        }
    }

    /// Fills parameters and state from their initialisers. Element e of tensor t gets a value keyed
    /// by (seed, t, e): a pure function, identical on every process.
    public func initialise(seed: UInt64) {
        Network.initialise(slots: parameterSlots, into: boundParameters, seed: seed)
        Network.initialise(slots: stateSlots, into: boundState, seed: seed ^ 0x5EED)
    }

    private static func initialise(slots: [TensorSlot], into buffer: UnsafeMutablePointer<Float>, seed: UInt64) {
        for (t, slot) in slots.enumerated() {
            slot.initialiser.fill(buffer + slot.offset, count: slot.count, seed: seed, tensor: t)
        }
    }

    /// Zeroes the gradients the layers add into.
    public func zeroGradients() {
        boundGradients.update(repeating: 0, count: parameterCount)
    }

    /// Runs the layers in order; returns the logits [batch, outputs], valid until the next forward.
    ///
    /// A ReLU followed by max pooling runs as one pass (`MaxPool2D.forwardAfterReLU`): the same
    /// bits, without writing and reading back the rectified tensor, four times the pooled one.
    public func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafePointer<Float> {
        var activation = input
        var index = 0
        while index < layers.count {
            if let pool = poolAfterReLU(at: index) {
                activation = UnsafePointer(pool.forwardAfterReLU(activation, batch: batch, context: context))
                index += 2
            } else if let relu = reluInPlace(at: index) {
                activation = UnsafePointer(relu.forwardInPlace(UnsafeMutablePointer(mutating: activation), batch: batch))
                index += 1
            } else {
                activation = UnsafePointer(layers[index].forward(activation, batch: batch, context: context))
                index += 1
            }
        }
        return activation
    }

    /// Back-propagates d(loss)/d(logits) through every layer, adding into `gradients`.
    ///
    /// A layer's input gradient is read by the layer before it and by nothing after that, so
    /// the layers write them into two shared buffers in turn, each into the one not holding
    /// the gradient it reads (a layer that passes its gradient through, such as Flatten or a
    /// ReLU in place, leaves it where it is): two buffers as large as the largest input gradient
    /// instead of one per layer (AlexNet: 9 MiB instead of 19 MiB a replica). The first layer
    /// keeps its own: its input gradient is not used, and a convolution there skips computing it.
    public func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) {
        var gradient = outputGradient
        var index = layers.count - 1
        while index >= 0 {
            if index >= 1, let pool = poolAfterReLU(at: index - 1) {
                if index >= 2 { relayInputGradient(of: pool, readingFrom: gradient) }
                gradient = UnsafePointer(pool.backwardThroughReLU(gradient, batch: batch))
                index -= 2
            } else if let relu = reluInPlace(at: index) {
                gradient = UnsafePointer(relu.backwardInPlace(UnsafeMutablePointer(mutating: gradient), batch: batch))
                index -= 1
            } else {
                if index >= 1 { relayInputGradient(of: layers[index], readingFrom: gradient) }
                gradient = UnsafePointer(layers[index].backward(gradient, batch: batch))
                index -= 1
            }
            backwardProgress?(layerParameterOffsets[index + 1])
        }
    }

    /// Binds `layer`'s input gradient to the relay buffer that does not hold `gradient`.
    private func relayInputGradient(of layer: Layer, readingFrom gradient: UnsafePointer<Float>) {
        let holdsGradient = UnsafePointer(gradientRelays[0].pointer) == gradient
        layer.bind(inputGradient: gradientRelays[holdsGradient ? 1 : 0])
    }

    /// The max pooling at `index + 1` when the layer at `index` is a plain ReLU.
    private func poolAfterReLU(at index: Int) -> MaxPool2D? {
        guard index + 1 < layers.count, layers[index] is ReLU else { return nil }
        return layers[index + 1] as? MaxPool2D
    }

    /// The ReLU at `index` (not followed by max pooling) when it may work in place: after a
    /// convolution or dense layer, whose output is its own tensor, read by nothing but this
    /// ReLU, and whose backward needs only its input. The gradient it is handed backward is the
    /// next layer's input gradient (or the loss gradient), which nothing reads afterwards. Saves
    /// the two tensors a ReLU would keep (AlexNet: 19 MiB each at batch 8) and their passes.
    private func reluInPlace(at index: Int) -> ReLU? {
        guard index >= 1, let relu = layers[index] as? ReLU else { return nil }
        let previous = layers[index - 1]
        return previous is Conv2D || previous is Dense || previous is PointwiseConv2D ? relu : nil
    }

    /// One micro-batch: forward, loss, and (in training) backward. Gradients are zeroed first and
    /// hold the gradient of this micro-batch's *mean* loss afterwards.
    @discardableResult
    public func computeGradients(
        images: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int, context: PassContext,
        loss: SoftmaxCrossEntropy = SoftmaxCrossEntropy()
    ) -> BatchScore {
        let classes = outputShape.count
        let start = monotonicSeconds()
        if context.mode == .training { boundObservations.update(repeating: 0, count: stateCount) }
        let logits = forward(images, batch: batch, context: context)
        guard context.mode == .training else {
            let score = loss.evaluate(logits: logits, labels: labels, batch: batch, classes: classes, gradient: nil)
            lastPassTiming = PassTiming(forwardSeconds: monotonicSeconds() - start, backwardSeconds: 0)
            return score
        }
        let dLogits = lossGradient.reserve(batch * classes)
        let score = loss.evaluate(logits: logits, labels: labels, batch: batch, classes: classes, gradient: dLogits)
        let forwardEnd = monotonicSeconds()
        zeroGradients()
        backward(dLogits, batch: batch)
        lastPassTiming = PassTiming(forwardSeconds: forwardEnd - start, backwardSeconds: monotonicSeconds() - forwardEnd)
        return score
    }

    /// Updates the state (running statistics) from the mean observations of one step.
    public func applyObservations(_ observed: UnsafePointer<Float>) {
        var cursor = 0
        for layer in layers {
            layer.applyObservations(observed + cursor, to: boundState + cursor)
            cursor += layer.stateCount
        }
    }

    // MARK: Freezing

    /// The names that can be frozen: every layer path that owns parameters ("0", "3", "3.conv1",
    /// "3.downsample.0"), in slot order.
    public var freezableNames: [String] {
        var names: [String] = []
        var seen = Set<String>()
        for slot in parameterSlots {
            let parts = slot.name.split(separator: ".")
            for end in 1..<max(parts.count, 1) {
                let prefix = parts[..<end].joined(separator: ".")
                if seen.insert(prefix).inserted { names.append(prefix) }
            }
        }
        return names
    }

    /// The ranges of the flat parameter vector owned by the layers named in `frozen` (layer paths
    /// such as "0" or "3.conv1", or whole tensor names such as "3.conv1.weight"), sorted and merged.
    /// The coordinator leaves these parameters unchanged (transfer learning). An unknown name throws
    /// a `ModelError` listing the names that can be frozen.
    public func frozenParameterRanges(_ frozen: [String]) throws -> [Range<Int>] {
        var ranges: [Range<Int>] = []
        for name in frozen {
            let matching = parameterSlots.filter { $0.name == name || $0.name.hasPrefix(name + ".") }
            guard !matching.isEmpty else {
                throw ModelError(
                    layer: name,
                    message: "no layer of this name owns parameters, so it cannot be frozen; "
                        + "names that can: \(freezableNames.joined(separator: ", "))")
            }
            ranges += matching.map { $0.offset..<($0.offset + $0.count) }
        }
        ranges.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<Int>] = []
        for range in ranges {
            if let last = merged.last, range.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        return merged
    }

    /// One flag per parameter: true where it trains, false where a layer in `frozen` owns it
    /// (see `frozenParameterRanges`).
    public func parameterMask(frozen: [String]) throws -> [Bool] {
        var mask = [Bool](repeating: true, count: parameterCount)
        for range in try frozenParameterRanges(frozen) {
            for i in range { mask[i] = false }
        }
        return mask
    }

    /// Copies `parameterCount` values into the parameters the layers use (for example weights from
    /// the coordinator).
    public func loadParameters(from values: UnsafePointer<Float>) {
        boundParameters.update(from: values, count: parameterCount)
    }
}

/// Wall-clock seconds of one pass's forward half (layers and loss) and backward half (zeroing
/// the gradients and back-propagating).
public struct PassTiming: Sendable, Equatable {
    public var forwardSeconds: Double = 0
    public var backwardSeconds: Double = 0

    public init(forwardSeconds: Double = 0, backwardSeconds: Double = 0) {
        self.forwardSeconds = forwardSeconds
        self.backwardSeconds = backwardSeconds
    }

    public static func + (a: PassTiming, b: PassTiming) -> PassTiming {
        PassTiming(forwardSeconds: a.forwardSeconds + b.forwardSeconds, backwardSeconds: a.backwardSeconds + b.backwardSeconds)
    }
}

/// Seconds on the project's one monotonic clock, since an arbitrary fixed point; only
/// differences mean anything (pass timings here, deadlines and rates in Training and Monitoring).
public func monotonicSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) * 1e-9
}

extension Initialiser {
    /// Writes `count` initial values: element e of tensor number `tensor` is a pure function of
    /// (seed, tensor, e), so every process that initialises the same model gets the same bits.
    public func fill(_ values: UnsafeMutablePointer<Float>, count: Int, seed: UInt64, tensor: Int) {
        switch self {
        case .zeros:
            values.update(repeating: 0, count: count)
        case .ones:
            values.update(repeating: 1, count: count)
        case .constant(let c):
            values.update(repeating: c, count: count)
        case .heNormal(let fanIn):
            Initialiser.fillNormal(values, count: count, deviation: (2 / Double(fanIn)).squareRoot(), seed: seed, tensor: tensor)
        case .heUniform(let fanIn):
            Initialiser.fillUniform(values, count: count, bound: (6 / Double(fanIn)).squareRoot(), seed: seed, tensor: tensor)
        case .xavierUniform(let fanIn, let fanOut):
            Initialiser.fillUniform(values, count: count, bound: (6 / Double(fanIn + fanOut)).squareRoot(), seed: seed, tensor: tensor)
        case .xavierNormal(let fanIn, let fanOut):
            Initialiser.fillNormal(values, count: count, deviation: (2 / Double(fanIn + fanOut)).squareRoot(), seed: seed, tensor: tensor)
        }
    }

    private static func fillNormal(_ values: UnsafeMutablePointer<Float>, count: Int, deviation: Double, seed: UInt64, tensor: Int) {
        // Pieces write disjoint ranges of `values`.
        nonisolated(unsafe) let values = values
        inPieces(count: count) { range in
            let random = CounterRandom.Stream(seed: seed, purpose: .initialisation, UInt64(tensor), 0, 0)
            for e in range {
                values[e] = Float(deviation * random.normal(UInt64(e)))
            }
        }
    }

    private static func fillUniform(_ values: UnsafeMutablePointer<Float>, count: Int, bound: Double, seed: UInt64, tensor: Int) {
        nonisolated(unsafe) let values = values
        inPieces(count: count) { range in
            let random = CounterRandom.Stream(seed: seed, purpose: .initialisation, UInt64(tensor), 1, 0)
            for e in range {
                values[e] = Float((2 * random.uniform(UInt64(e)) - 1) * bound)
            }
        }
    }

    /// Elements per piece when a random initialiser fills a large tensor on every core: a few
    /// milliseconds of work each. A Gaussian value costs a logarithm and a cosine, so VGG-16's
    /// 138 M took seconds on one core before a run could start.
    static let piece = 1 << 18

    /// Calls `fill` on consecutive ranges covering `0..<count`, at once on every core when there
    /// is more than one piece. Each element is a pure function of (seed, tensor, index), so the
    /// pieces' order and threads cannot change a bit.
    static func inPieces(count: Int, _ fill: @Sendable (Range<Int>) -> Void) {
        let pieces = (count + piece - 1) / piece
        guard pieces > 1 else { return fill(0..<count) }
        DispatchQueue.concurrentPerform(iterations: pieces) { p in
            fill((p * piece)..<min((p + 1) * piece, count))
        }
    }
}
