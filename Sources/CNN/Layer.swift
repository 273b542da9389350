/// Whether a pass trains (batch statistics, dropout) or evaluates (running statistics, no dropout).
/// Passed into every forward call, never kept as global state.
public enum Mode: Sendable {
    case training
    case inference
}

/// What a forward pass needs besides its input. Every random choice a layer makes is keyed by
/// (seed, epoch, step, sample index, layer), so it does not matter which worker runs which sample.
public struct PassContext: Sendable {
    public var mode: Mode
    public var seed: UInt64
    public var epoch: Int
    public var step: Int
    /// The data-set index of each sample in the batch, in batch order.
    public var sampleIndices: [Int]

    public init(mode: Mode, seed: UInt64 = 0, epoch: Int = 0, step: Int = 0, sampleIndices: [Int] = []) {
        self.mode = mode
        self.seed = seed
        self.epoch = epoch
        self.step = step
        self.sampleIndices = sampleIndices
    }

    public static let inference = PassContext(mode: .inference)
}

/// How a parameter tensor is filled before training.
public enum Initialiser: Sendable, Equatable {
    case zeros
    case ones
    /// He/Kaiming normal: N(0, 2 / fanIn), for layers followed by ReLU.
    case heNormal(fanIn: Int)
    /// He/Kaiming uniform: U(-b, b) with b = sqrt(6 / fanIn).
    case heUniform(fanIn: Int)
    /// Xavier/Glorot uniform: U(-b, b) with b = sqrt(6 / (fanIn + fanOut)).
    case xavierUniform(fanIn: Int, fanOut: Int)
    /// Xavier/Glorot normal: N(0, 2 / (fanIn + fanOut)), for layers followed by tanh or sigmoid.
    case xavierNormal(fanIn: Int, fanOut: Int)
    case constant(Float)
}

/// One named tensor a layer owns, in PyTorch's layout and naming (`weight` OIHW, `bias`).
public struct ParameterSpec: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var initialiser: Initialiser

    public init(name: String, shape: [Int], initialiser: Initialiser) {
        self.name = name
        self.shape = shape
        self.initialiser = initialiser
    }

    public var count: Int { shape.reduce(1, *) }
}

/// A layer: owns its parameters (as views into the network's flat buffers) and whatever its
/// backward pass needs from the forward pass.
///
/// `forward` returns a pointer to a buffer the layer owns, valid until its next forward call;
/// the input pointer must stay valid until `backward` (the network guarantees this).
/// `backward` adds into the parameter gradients and returns the input gradient.
public protocol Layer: AnyObject {
    /// A short name for summaries and errors: "Conv2D(32, 3x3, s1, p1)".
    var summary: String { get }
    var inputShape: FeatureShape { get }
    var outputShape: FeatureShape { get }
    /// Trainable tensors, in order; the network lays them out contiguously in this order.
    var parameterSpecs: [ParameterSpec] { get }
    /// Non-trainable state saved with the model (BatchNorm running statistics), in order.
    var stateSpecs: [ParameterSpec] { get }
    /// Multiply-adds counted as 2 FLOPs, for one sample's forward pass.
    var forwardFLOPs: Int { get }
    /// Floats per sample this layer keeps for its backward pass (for memory estimates).
    var savedFloatsPerSample: Int { get }

    /// Points the layer at its slice of the network's flat parameter and gradient buffers. By
    /// default a layer hands its sublayers their consecutive slices of it.
    func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>)
    /// Points the layer at its slice of the network's flat state buffer and of the observation
    /// buffer (same layout) where a training forward pass records what it saw (BatchNorm's batch
    /// mean and variance). Workers send observations with gradients; the coordinator averages
    /// them along the same tree and calls `applyObservations`, so running statistics evolve
    /// identically however the micro-batches were spread. By default, slices to the sublayers.
    func bind(state: UnsafeMutablePointer<Float>, observations: UnsafeMutablePointer<Float>)
    /// The layers inside this one, in the order their tensors are laid out (a block's path and
    /// projection, a chain's children, a concatenation's branches); empty for a plain layer.
    var sublayers: [Layer] { get }
    /// Hands the layer (and the layers inside it) the scratch memory it shares with the other
    /// layers of its network for the duration of one call (see `LayerWorkspace`). Until then a
    /// layer that needs scratch uses its own. By default a layer passes it to its sublayers: they
    /// run one after another, so they share it too.
    func bind(workspace: LayerWorkspace)
    /// Hands the layer the buffer its following `backward` calls write the input gradient into,
    /// instead of one of its own: a network passes gradients between its layers through two
    /// buffers in turn (see `Network.backward`), so it holds two, as large as the largest input
    /// gradient, rather than one per layer. The network binds before each call, never to the
    /// buffer holding that call's output gradient. A layer may ignore it and keep its own.
    func bind(inputGradient buffer: FloatBuffer)
    /// Updates the state from the mean of one step's observations (`stateCount` values each). By
    /// default the sublayers update theirs from their slices.
    func applyObservations(_ observed: UnsafePointer<Float>, to state: UnsafeMutablePointer<Float>)

    func forward(_ input: UnsafePointer<Float>, batch: Int, context: PassContext) -> UnsafeMutablePointer<Float>
    func backward(_ outputGradient: UnsafePointer<Float>, batch: Int) -> UnsafeMutablePointer<Float>
}

extension Layer {
    public var parameterSpecs: [ParameterSpec] { [] }
    public var stateSpecs: [ParameterSpec] { [] }
    public var forwardFLOPs: Int { 0 }
    public var savedFloatsPerSample: Int { outputShape.count }
    public var sublayers: [Layer] { [] }

    public func bind(parameters: UnsafeMutablePointer<Float>, gradients: UnsafeMutablePointer<Float>) {
        var cursor = 0
        for layer in sublayers {
            layer.bind(parameters: parameters + cursor, gradients: gradients + cursor)
            cursor += layer.parameterCount
        }
    }

    public func bind(state: UnsafeMutablePointer<Float>, observations: UnsafeMutablePointer<Float>) {
        var cursor = 0
        for layer in sublayers {
            layer.bind(state: state + cursor, observations: observations + cursor)
            cursor += layer.stateCount
        }
    }

    public func applyObservations(_ observed: UnsafePointer<Float>, to state: UnsafeMutablePointer<Float>) {
        var cursor = 0
        for layer in sublayers {
            layer.applyObservations(observed + cursor, to: state + cursor)
            cursor += layer.stateCount
        }
    }

    public func bind(workspace: LayerWorkspace) {
        for layer in sublayers { layer.bind(workspace: workspace) }
    }

    public func bind(inputGradient buffer: FloatBuffer) {}
    public var parameterCount: Int { parameterSpecs.reduce(0) { $0 + $1.count } }
    public var stateCount: Int { stateSpecs.reduce(0) { $0 + $1.count } }
}
