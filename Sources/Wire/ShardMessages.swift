/// The messages of the `sharded` reduction (docs/scaling.md). Workers send each slice's partial
/// sums to the slice's owner, owners send updated weight slices to every worker and their
/// optimiser state to the slice's replica; the coordinator sends only control messages (the plan,
/// the cover of a step, the global norm) and gathers weights and state for checkpoints.

/// Worker -> coordinator: where this worker listens for its peers (sent after the welcome of a
/// sharded run).
public struct Listening: Equatable, Sendable, CustomStringConvertible {
    /// A ZeroMQ endpoint such as `tcp://10.0.0.3:41234`.
    public var endpoint: String
    /// The worker's CURVE public key (Z85), empty on a plain run.
    public var publicKey: String
    /// Where it also listens for workers on its own host (`ipc://@NAME`), and that host
    /// (`HostIdentity`); both empty when it has no local listener.
    public var localEndpoint: String
    public var host: String

    public init(endpoint: String, publicKey: String, localEndpoint: String = "", host: String = "") {
        self.endpoint = endpoint
        self.publicKey = publicKey
        self.localEndpoint = localEndpoint
        self.host = host
    }

    public var description: String {
        "listening endpoint=\(quoted(endpoint)) key=\(publicKey.isEmpty ? "none" : quoted(publicKey))"
            + (localEndpoint.isEmpty ? "" : " local=\(quoted(localEndpoint)) host=\(quoted(host))")
    }
}

/// A worker of a plan: its id, where it listens, its CURVE public key (empty on a plain run), and
/// its local listener and host (empty when it has none).
public struct ShardMember: Equatable, Sendable {
    public var workerID: UInt32
    public var endpoint: String
    public var publicKey: String
    public var localEndpoint: String
    public var host: String

    public init(workerID: UInt32, endpoint: String, publicKey: String, localEndpoint: String = "", host: String = "") {
        self.workerID = workerID
        self.endpoint = endpoint
        self.publicKey = publicKey
        self.localEndpoint = localEndpoint
        self.host = host
    }

    /// The member as its peers connect to it.
    public var peerAddress: PeerAddress {
        PeerAddress(workerID: workerID, endpoint: endpoint, publicKey: publicKey.isEmpty ? nil : publicKey,
                    localEndpoint: localEndpoint.isEmpty ? nil : localEndpoint, host: host.isEmpty ? nil : host)
    }
}

/// Who holds one slice under a plan, and who hands it over when the plan changed.
public struct SliceAssignment: Equatable, Sendable {
    /// Completes the slice's tree, runs its optimiser and sends its weights to every member.
    public var owner: UInt32
    /// Keeps a copy of the slice's optimiser state (nil with a single worker).
    public var replica: UInt32?
    /// Sends the slice's committed optimiser state to the owner and the replica where they lack
    /// it, and the slice's committed weights to new members; nil when nothing moves.
    public var source: UInt32?
    /// Whether the owner, resp. the replica, must receive the committed state from `source`.
    public var ownerNeedsState: Bool
    public var replicaNeedsState: Bool

    public init(owner: UInt32, replica: UInt32?, source: UInt32? = nil, ownerNeedsState: Bool = false, replicaNeedsState: Bool = false) {
        self.owner = owner
        self.replica = replica
        self.source = source
        self.ownerNeedsState = ownerNeedsState
        self.replicaNeedsState = replicaNeedsState
    }
}

/// Coordinator -> worker: the members and the slices' owners from now on. Sent to every member
/// whenever membership changes (a join at a step boundary, a death at any moment).
public struct ShardPlan: Equatable, Sendable, CustomStringConvertible {
    /// Increases with every plan of the run; messages about a plan carry it.
    public var version: UInt64
    public var members: [ShardMember]
    /// One per slice of the model's `ShardLayout`, in order.
    public var slices: [SliceAssignment]
    /// Members that joined with this plan and need every slice's committed weights.
    public var newMembers: [UInt32]

    public init(version: UInt64, members: [ShardMember], slices: [SliceAssignment], newMembers: [UInt32]) {
        self.version = version
        self.members = members
        self.slices = slices
        self.newMembers = newMembers
    }

    public var description: String {
        "plan version=\(version) members=\(listPrefix(members.map(\.workerID))) slices=\(slices.count) new=\(listPrefix(newMembers))"
    }
}

/// Worker -> coordinator: a training assignment's results under the sharded reduction: the
/// scores and the tree nodes whose partial sums the worker holds (they go to the slices' owners).
public struct Computed: Equatable, Sendable, CustomStringConvertible {
    public var epoch: UInt32
    public var results: [MicroBatchResult]
    public var nodes: [TreeNode]
    public var timings: WorkerTimings
    /// Where the worker found NaN or infinity in its partial sums; empty when finite.
    public var nonFinite: String
    /// Seconds from its first slice of partial sums going to an owner, while backward still ran,
    /// to these results (0 when nothing went before them): how far sending overlapped backward.
    public var streamedSeconds: Double

    public init(epoch: UInt32, results: [MicroBatchResult], nodes: [TreeNode], timings: WorkerTimings = .zero, nonFinite: String = "",
                streamedSeconds: Double = 0) {
        self.epoch = epoch
        self.results = results
        self.nodes = nodes
        self.timings = timings
        self.nonFinite = nonFinite
        self.streamedSeconds = streamedSeconds
    }

    public var description: String {
        "computed epoch=\(epoch) results=\(results.count) \(listPrefix(results.map { $0.index })) nodes=\(listPrefix(nodes))"
            + (nonFinite.isEmpty ? "" : " non-finite=\(quoted(nonFinite))") + " \(timings)"
            + (streamedSeconds > 0 ? " streamed=\(streamedSeconds)s" : "")
    }
}

/// Worker -> owner: one slice of the worker's partial sums, one tensor per tree node.
public struct SlicePartials: Equatable, Sendable, CustomStringConvertible {
    public var slice: UInt32
    public var nodes: [TreeNode]
    public var tensors: [FloatPayload]
    /// How the tensors travel (`distributed.wire_precision`); decoded, they are Float32 again.
    public var encoding: TensorEncoding

    public init(slice: UInt32, nodes: [TreeNode], tensors: [FloatPayload], encoding: TensorEncoding = .float32) {
        self.slice = slice
        self.nodes = nodes
        self.tensors = tensors
        self.encoding = encoding
    }

    public var description: String {
        "slice-partials slice=\(slice) nodes=\(listPrefix(nodes)) floats=\(tensors.first?.count ?? 0)\(encoding.isFloat32 ? "" : " sent as \(encoding)")"
    }
}

/// A tree node and the worker whose copy of it counts.
public struct CoverNode: Hashable, Sendable {
    public var node: TreeNode
    public var worker: UInt32

    public init(node: TreeNode, worker: UInt32) {
        self.node = node
        self.worker = worker
    }
}

/// Coordinator -> worker: these nodes (from these workers) cover every micro-batch of the step
/// exactly once, and owners complete their slices from exactly them. A later cover of the same
/// step replaces an earlier one. The final cover comes once every micro-batch has an accepted
/// result; an expected one (`isFinal` false) as soon as the micro-batches are handed out, naming
/// the nodes each worker was given, so that owners reduce each slice as its partial sums arrive.
/// Any cover gives the same bits (a node's value does not depend on who computed it); only a
/// final one may call a non-finite mean the step's (an expected one may name a worker whose
/// results the coordinator will refuse).
public struct ReduceCover: Equatable, Sendable, CustomStringConvertible {
    public var version: UInt32
    public var totalMicroBatches: UInt32
    /// The step's learning rate, as the coordinator's schedule gives it.
    public var learningRate: Float
    public var nodes: [CoverNode]
    /// Whether every micro-batch had an accepted result when the cover was made.
    public var isFinal: Bool

    public init(version: UInt32, totalMicroBatches: UInt32, learningRate: Float, nodes: [CoverNode], isFinal: Bool = true) {
        self.version = version
        self.totalMicroBatches = totalMicroBatches
        self.learningRate = learningRate
        self.nodes = nodes
        self.isFinal = isFinal
    }

    public var description: String {
        "reduce version=\(version) micro-batches=\(totalMicroBatches) lr=\(learningRate)\(isFinal ? "" : " expected") nodes=\(listPrefix(nodes.map { "\($0.node)@w\($0.worker)" }))"
    }
}

/// Owner -> coordinator: a slice's sums of squares per norm block, for global-norm clipping.
public struct BlockSums: Equatable, Sendable, CustomStringConvertible {
    public var slice: UInt32
    public var sums: [Double]

    public init(slice: UInt32, sums: [Double]) {
        self.slice = slice
        self.sums = sums
    }

    public var description: String { "block-sums slice=\(slice) blocks=\(sums.count)" }
}

/// Coordinator -> worker: the step's global gradient norm, from every slice's block sums.
public struct GlobalNorm: Equatable, Sendable, CustomStringConvertible {
    public var value: Double

    public init(value: Double) { self.value = value }

    public var description: String { "norm \(value)" }
}

/// Owner -> every member: a slice of the weights the envelope's step starts from.
public struct WeightSlice: Equatable, Sendable, CustomStringConvertible {
    public var slice: UInt32
    public var values: FloatPayload

    public init(slice: UInt32, values: FloatPayload) {
        self.slice = slice
        self.values = values
    }

    public var description: String { "weight-slice slice=\(slice) \(values)" }
}

/// A slice's optimiser state as of the envelope's step (named as the optimiser names its
/// tensors), and with `weights` the slice's weights too: source -> new owner or replica at a
/// plan change, owner -> coordinator for a checkpoint, coordinator -> owner and replica on
/// resume.
public struct SliceState: Equatable, Sendable, CustomStringConvertible {
    public var slice: UInt32
    /// One name per tensor of `tensors` after the weights.
    public var names: [String]
    /// The slice's weights, when the message carries them.
    public var weights: FloatPayload?
    public var tensors: [FloatPayload]

    public init(slice: UInt32, names: [String], weights: FloatPayload?, tensors: [FloatPayload]) {
        self.slice = slice
        self.names = names
        self.weights = weights
        self.tensors = tensors
    }

    public var description: String {
        "slice-state slice=\(slice) weights=\(weights.map { "\($0.count)" } ?? "no") tensors=\(listPrefix(names))"
    }
}

/// Owner -> replica: what slice `slice`'s optimiser took this step, so that the replica runs the
/// same update on its copy of the state and weights instead of being sent both: the mean
/// gradient over the step's cover as the optimiser saw it (frozen parts zeroed and clipped when
/// clipping is on) and the step's learning rate. The envelope's step is the one the update's
/// weights start.
public struct SliceGradient: Equatable, Sendable, CustomStringConvertible {
    public var slice: UInt32
    public var learningRate: Float
    public var values: FloatPayload

    public init(slice: UInt32, learningRate: Float, values: FloatPayload) {
        self.slice = slice
        self.learningRate = learningRate
        self.values = values
    }

    public var description: String { "slice-gradient slice=\(slice) lr=\(learningRate) \(values)" }
}

/// Worker -> coordinator: under plan `planVersion`, this worker holds every weight of the step
/// after the envelope's step, has applied the slices it owns and holds the state of those it
/// mirrors.
public struct StepDone: Equatable, Sendable, CustomStringConvertible {
    public var planVersion: UInt64

    public init(planVersion: UInt64) { self.planVersion = planVersion }

    public var description: String { "step-done plan=\(planVersion)" }
}

/// Worker -> coordinator: this worker follows plan `planVersion` now (it knows the members and
/// accepts their messages).
public struct PlanAdopted: Equatable, Sendable, CustomStringConvertible {
    public var planVersion: UInt64

    public init(planVersion: UInt64) { self.planVersion = planVersion }

    public var description: String { "plan-adopted plan=\(planVersion)" }
}

/// Coordinator -> worker: every member follows plan `planVersion`: hand over what moves.
public struct PlanInForce: Equatable, Sendable, CustomStringConvertible {
    public var planVersion: UInt64

    public init(planVersion: UInt64) { self.planVersion = planVersion }

    public var description: String { "plan-in-force plan=\(planVersion)" }
}

/// Coordinator -> worker: send the weights and optimiser state of every slice you own under
/// plan `planVersion` (a checkpoint is due).
public struct Gather: Equatable, Sendable, CustomStringConvertible {
    public var planVersion: UInt64

    public init(planVersion: UInt64) { self.planVersion = planVersion }

    public var description: String { "gather plan=\(planVersion)" }
}
