/// Everything coordinator and workers say to each other. Bulk tensors travel as separate raw
/// frames (`FloatPayload`); everything else is in the meta frame (see `WireCodec`).
public enum Message: Equatable, Sendable, CustomStringConvertible {
    /// Worker -> coordinator: who I am.
    case hello(Hello)
    /// Coordinator -> worker: your id, the run's configuration, and the timing rules.
    case welcome(Welcome)
    /// Coordinator -> worker: the weights the envelope's step starts from.
    case weights(Weights)
    /// Coordinator -> worker: micro-batches to compute.
    case assign(Assignment)
    /// Worker -> coordinator: a training assignment's per-micro-batch results and gradient
    /// partial sums.
    case gradients(Gradients)
    /// Worker -> coordinator: an evaluation assignment's per-micro-batch results (no gradients).
    case evaluation(Evaluation)
    /// Both ways: still alive.
    case heartbeat(Heartbeat)
    /// Both ways: leaving, and why.
    case bye(Bye)
    /// Both ways: something went wrong with the peer's message or state.
    case error(WireFailure)
    /// The sharded reduction's messages (`ShardMessages.swift`).
    case listening(Listening)
    case plan(ShardPlan)
    case computed(Computed)
    case slicePartials(SlicePartials)
    case reduce(ReduceCover)
    case blockSums(BlockSums)
    case norm(GlobalNorm)
    case weightSlice(WeightSlice)
    case sliceState(SliceState)
    case sliceGradient(SliceGradient)
    case stepDone(StepDone)
    case gather(Gather)
    case planAdopted(PlanAdopted)
    case planInForce(PlanInForce)

    /// A readable one-liner for logs (counts and first indices, never tensor contents).
    public var description: String {
        switch self {
        case .hello(let hello): return hello.description
        case .welcome(let welcome): return welcome.description
        case .weights(let weights): return weights.description
        case .assign(let assignment): return assignment.description
        case .gradients(let gradients): return gradients.description
        case .evaluation(let evaluation): return evaluation.description
        case .heartbeat(let heartbeat): return heartbeat.description
        case .bye(let bye): return bye.description
        case .error(let failure): return failure.description
        case .listening(let listening): return listening.description
        case .plan(let plan): return plan.description
        case .computed(let computed): return computed.description
        case .slicePartials(let partials): return partials.description
        case .reduce(let cover): return cover.description
        case .blockSums(let sums): return sums.description
        case .norm(let norm): return norm.description
        case .weightSlice(let slice): return slice.description
        case .sliceState(let state): return state.description
        case .sliceGradient(let gradient): return gradient.description
        case .stepDone(let done): return done.description
        case .gather(let gather): return gather.description
        case .planAdopted(let adopted): return adopted.description
        case .planInForce(let inForce): return inForce.description
        }
    }

    /// The message's type name as used in logs and errors ("hello", "gradients", ...).
    public var typeName: String { MessageType(self).name }
}

/// Worker -> coordinator: the first message of a worker.
public struct Hello: Equatable, Sendable, CustomStringConvertible {
    /// The worker's chosen name (`--name`), for logs.
    public var name: String
    /// How many micro-batches it computes at once (at least 1).
    public var threads: Int
    /// The worker's process id on its host, for finding it in `ps` and logs.
    public var processID: Int32
    /// The host the worker runs on.
    public var hostName: String
    /// The BLAS kernel in use (informational: results are checked, not trusted by name).
    public var coreType: String

    /// A value with every field given.
    public init(name: String, threads: Int, processID: Int32, hostName: String, coreType: String) {
        self.name = name
        self.threads = threads
        self.processID = processID
        self.hostName = hostName
        self.coreType = coreType
    }

    /// A one-line summary for logs.
    public var description: String {
        "hello name=\(quoted(name)) threads=\(threads) pid=\(processID) host=\(quoted(hostName)) core=\(quoted(coreType))"
    }
}

/// Coordinator -> worker: the answer to `Hello`.
public struct Welcome: Equatable, Sendable, CustomStringConvertible {
    /// The id the coordinator gave this worker (for logs; messages are routed by `PeerID`).
    public var workerID: UInt32
    /// The run's resolved YAML configuration.
    public var configText: String
    /// Floats in the flat parameter vector (what every `Weights` and gradient tensor holds).
    public var parameterCount: Int
    /// How often both sides send a `Heartbeat` when they have nothing else to say.
    public var heartbeatIntervalMilliseconds: UInt32
    /// Silence after which the coordinator declares the worker dead (and the worker the coordinator).
    public var workerTimeoutMilliseconds: UInt32

    /// A value with every field given.
    public init(workerID: UInt32, configText: String, parameterCount: Int, heartbeatIntervalMilliseconds: UInt32, workerTimeoutMilliseconds: UInt32) {
        self.workerID = workerID
        self.configText = configText
        self.parameterCount = parameterCount
        self.heartbeatIntervalMilliseconds = heartbeatIntervalMilliseconds
        self.workerTimeoutMilliseconds = workerTimeoutMilliseconds
    }

    /// A one-line summary for logs.
    public var description: String {
        "welcome worker=\(workerID) parameters=\(parameterCount) heartbeat=\(heartbeatIntervalMilliseconds)ms timeout=\(workerTimeoutMilliseconds)ms config=\(configText.utf8.count) bytes"
    }
}

/// Coordinator -> worker: the weights; the envelope's step says which step they start.
public struct Weights: Equatable, Sendable, CustomStringConvertible {
    /// The flat parameter vector.
    public var values: FloatPayload

    /// A value with every field given.
    public init(values: FloatPayload) { self.values = values }

    /// A one-line summary for logs.
    public var description: String { "weights \(values)" }
}

/// Whether a task trains (gradients wanted) or only evaluates (loss and accuracy only).
public enum TaskKind: UInt8, Sendable, CustomStringConvertible {
    case train = 0
    case evaluate = 1

    /// A one-line summary for logs.
    public var description: String { self == .train ? "train" : "evaluate" }
}

/// One micro-batch of a step: its index within the step and the sample indices it holds. The
/// engine computes it, the coordinator plans and assigns it, the worker receives it. On the wire
/// both are UInt32: the decoder checks what it reads, and sending a value above `UInt32.max` is a
/// programming error.
public struct MicroBatch: Equatable, Sendable {
    /// Position within the step (below `Assignment.totalMicroBatches`).
    public var index: Int
    /// Indices into the data set, in the order the micro-batch processes them.
    public var samples: [Int]

    /// A value with every field given.
    public init(index: Int, samples: [Int]) {
        self.index = index
        self.samples = samples
    }
}

/// Coordinator -> worker: compute these micro-batches of the envelope's step.
public struct Assignment: Equatable, Sendable, CustomStringConvertible {
    /// Train or evaluate.
    public var kind: TaskKind
    /// The epoch the step belongs to.
    public var epoch: UInt32
    /// Micro-batches in the whole step (every index is below it).
    public var totalMicroBatches: UInt32
    /// The micro-batches this worker is to compute (distinct indices).
    public var microBatches: [MicroBatch]

    /// A value with every field given.
    public init(kind: TaskKind, epoch: UInt32, totalMicroBatches: UInt32, microBatches: [MicroBatch]) {
        self.kind = kind
        self.epoch = epoch
        self.totalMicroBatches = totalMicroBatches
        self.microBatches = microBatches
    }

    /// A one-line summary for logs.
    public var description: String {
        let samples = microBatches.reduce(0) { $0 + $1.samples.count }
        return "assign \(kind) epoch=\(epoch) micro-batches=\(microBatches.count)/\(totalMicroBatches) \(listPrefix(microBatches.map { $0.index })) samples=\(samples)"
    }
}

/// A node of the fixed binary reduction tree over a step's micro-batch indices: it covers the
/// micro-batches `[index * 2^level, (index + 1) * 2^level)`; level 0 is one micro-batch. The
/// all-reduce adds what it needs to walk the tree (`firstLeaf`, children, parent, ordering). On
/// the wire the level is a UInt8 of at most `WireCodec.maximumTreeLevel` and the index a UInt32,
/// and a node covers no micro-batch past 2^32: the decoder checks that, and sending a node
/// outside it is a programming error.
public struct TreeNode: Hashable, Sendable, CustomStringConvertible {
    /// Height in the tree: the node covers 2^level micro-batches.
    public var level: Int
    /// Position among the nodes of its level.
    public var index: Int

    /// A value with every field given.
    public init(level: Int, index: Int) {
        self.level = level
        self.index = index
    }

    /// The micro-batch indices the node covers (a tree of fewer micro-batches ends inside it).
    public var microBatches: Range<Int> { index << level ..< (index + 1) << level }

    /// The covered range, like `[4,8)`.
    public var description: String { "[\(microBatches.lowerBound),\(microBatches.upperBound))" }
}

/// What one micro-batch produced besides its gradient.
public struct MicroBatchResult: Equatable, Sendable {
    /// The micro-batch's index within the step.
    public var index: UInt32
    /// Sum (not mean) of the per-sample losses, so results combine exactly by addition.
    public var lossSum: Double
    /// Correctly classified samples.
    public var correct: UInt32
    /// Samples whose true class is among the five highest scores.
    public var topFiveCorrect: UInt32
    /// Samples in the micro-batch.
    public var samples: UInt32

    /// A value with every field given (`topFiveCorrect` defaults to `correct`: the least it can be).
    public init(index: UInt32, lossSum: Double, correct: UInt32, topFiveCorrect: UInt32? = nil, samples: UInt32) {
        self.index = index
        self.lossSum = lossSum
        self.correct = correct
        self.topFiveCorrect = topFiveCorrect ?? correct
        self.samples = samples
    }
}

/// Where a worker's time on one assignment went, measured on the worker's own clock. Only
/// durations cross the wire, so coordinator and worker need no clock agreement: the coordinator
/// places them inside its own span from sending the assignment to receiving the results.
public struct WorkerTimings: Equatable, Sendable, CustomStringConvertible {
    /// Forward passes (layers and loss), in seconds of wall time.
    public var forwardSeconds: Double
    /// Backward passes (zeroing and back-propagating), in seconds of wall time.
    public var backwardSeconds: Double
    /// Summing leaf gradients into the partial sums that are sent, and packing the message.
    public var packSeconds: Double
    /// From receiving the assignment to sending these results; at least the three parts above.
    /// The rest of it is the worker's own overhead: queueing behind an earlier assignment,
    /// loading the weights, threads idle at the end of the micro-batches.
    public var totalSeconds: Double

    /// Nothing measured (a peer that does not time its work).
    public static let zero = WorkerTimings(forwardSeconds: 0, backwardSeconds: 0, packSeconds: 0, totalSeconds: 0)

    /// A value with every field given.
    public init(forwardSeconds: Double, backwardSeconds: Double, packSeconds: Double, totalSeconds: Double) {
        self.forwardSeconds = forwardSeconds
        self.backwardSeconds = backwardSeconds
        self.packSeconds = packSeconds
        self.totalSeconds = totalSeconds
    }

    /// Forward, backward and pack together: the part of `totalSeconds` the worker accounts for.
    public var accountedSeconds: Double { forwardSeconds + backwardSeconds + packSeconds }

    /// Field by field sums: the timings of several results of one worker in one step.
    public static func + (a: WorkerTimings, b: WorkerTimings) -> WorkerTimings {
        WorkerTimings(forwardSeconds: a.forwardSeconds + b.forwardSeconds, backwardSeconds: a.backwardSeconds + b.backwardSeconds,
                      packSeconds: a.packSeconds + b.packSeconds, totalSeconds: a.totalSeconds + b.totalSeconds)
    }

    /// A one-line summary for logs, in milliseconds.
    public var description: String {
        func ms(_ seconds: Double) -> String {
            let value = seconds * 1000
            return value.isFinite ? String(Double((value * 1000).rounded()) / 1000) : String(value)
        }
        return "forward=\(ms(forwardSeconds))ms backward=\(ms(backwardSeconds))ms pack=\(ms(packSeconds))ms total=\(ms(totalSeconds))ms"
    }
}

/// Worker -> coordinator: results of the training micro-batches of the envelope's step, and the
/// gradient partial sums of the tree nodes the worker could complete.
public struct Gradients: Equatable, Sendable, CustomStringConvertible {
    /// The epoch of the assignment answered.
    public var epoch: UInt32
    /// One per micro-batch computed (distinct indices).
    public var results: [MicroBatchResult]
    /// The tree nodes whose partial gradient sums follow, in tensor order; they never overlap.
    public var nodes: [TreeNode]
    /// One per node, same order.
    public var tensors: [FloatPayload]
    /// How the tensors travel (`distributed.wire_precision`); decoded, they are Float32 again.
    public var encoding: TensorEncoding
    /// How long the worker took, and on what (for `--trace`).
    public var timings: WorkerTimings

    /// A value with every field given (`timings` zero when the sender did not measure them).
    public init(epoch: UInt32, results: [MicroBatchResult], nodes: [TreeNode], tensors: [FloatPayload],
                encoding: TensorEncoding = .float32, timings: WorkerTimings = .zero) {
        self.epoch = epoch
        self.results = results
        self.nodes = nodes
        self.tensors = tensors
        self.encoding = encoding
        self.timings = timings
    }

    /// A one-line summary for logs.
    public var description: String {
        let floats = tensors.reduce(0) { $0 + $1.count }
        return "gradients epoch=\(epoch) results=\(results.count) \(listPrefix(results.map { $0.index })) nodes=\(nodes.count) \(listPrefix(nodes)) tensors=\(tensors.count) (\(floats) floats\(encoding.isFloat32 ? "" : " sent as \(encoding)")) \(timings)"
    }
}

/// Worker -> coordinator: results of the evaluation micro-batches of the envelope's step (scores
/// only: an evaluation computes no gradients).
public struct Evaluation: Equatable, Sendable, CustomStringConvertible {
    /// The epoch of the assignment answered.
    public var epoch: UInt32
    /// One per micro-batch computed (distinct indices).
    public var results: [MicroBatchResult]
    /// How long the worker took, and on what (for `--trace`).
    public var timings: WorkerTimings

    /// A value with every field given (`timings` zero when the sender did not measure them).
    public init(epoch: UInt32, results: [MicroBatchResult], timings: WorkerTimings = .zero) {
        self.epoch = epoch
        self.results = results
        self.timings = timings
    }

    /// A one-line summary for logs.
    public var description: String {
        "evaluation epoch=\(epoch) results=\(results.count) \(listPrefix(results.map { $0.index })) \(timings)"
    }
}

/// Both ways: proof of life between real messages.
public struct Heartbeat: Equatable, Sendable, CustomStringConvertible {
    /// The sender's clock when sent (milliseconds; only differences on one host mean anything).
    public var sentAtMilliseconds: UInt64
    /// True while the sender is computing (so silence on the data path is expected).
    public var busy: Bool

    /// A value with every field given.
    public init(sentAtMilliseconds: UInt64, busy: Bool) {
        self.sentAtMilliseconds = sentAtMilliseconds
        self.busy = busy
    }

    /// A one-line summary for logs.
    public var description: String { "heartbeat sent=\(sentAtMilliseconds)ms \(busy ? "busy" : "idle")" }
}

/// Both ways: the sender leaves.
public struct Bye: Equatable, Sendable, CustomStringConvertible {
    /// Why, in words for the other side's log.
    public var reason: String

    /// A value with every field given.
    public init(reason: String) { self.reason = reason }

    /// A one-line summary for logs.
    public var description: String { "bye \(quoted(reason))" }
}

/// Both ways: a failure report (what was wrong with the peer's message or state).
public struct WireFailure: Equatable, Sendable, CustomStringConvertible {
    /// A machine-readable reason (the trainer defines the codes).
    public var code: UInt16
    /// What was wrong and how to fix it, for the other side's log.
    public var text: String

    /// A value with every field given.
    public init(code: UInt16, text: String) {
        self.code = code
        self.text = text
    }

    /// A one-line summary for logs.
    public var description: String { "error code=\(code) \(quoted(text))" }
}

/// A message with the header fields every message carries.
public struct Envelope: Equatable, Sendable, CustomStringConvertible {
    /// Identifies the run, so a worker from another run (or a stale one) is noticed.
    public var runID: UInt64
    /// The optimiser step the message belongs to.
    public var step: UInt64
    /// The message itself.
    public var message: Message

    /// A value with every field given.
    public init(runID: UInt64, step: UInt64, message: Message) {
        self.runID = runID
        self.step = step
        self.message = message
    }

    /// A one-line summary for logs.
    public var description: String { "run=\(hex(runID)) step=\(step) \(message)" }
}

/// The message type byte of the header.
enum MessageType: UInt8 {
    case hello = 1, welcome, weights, assign, gradients, heartbeat, bye, error, evaluation
    case listening, plan, computed, slicePartials, reduce, blockSums, norm, weightSlice, sliceState, stepDone, gather, planAdopted, planInForce
    case sliceGradient

    init(_ message: Message) {
        switch message {
        case .hello: self = .hello
        case .welcome: self = .welcome
        case .weights: self = .weights
        case .assign: self = .assign
        case .gradients: self = .gradients
        case .heartbeat: self = .heartbeat
        case .bye: self = .bye
        case .error: self = .error
        case .evaluation: self = .evaluation
        case .listening: self = .listening
        case .plan: self = .plan
        case .computed: self = .computed
        case .slicePartials: self = .slicePartials
        case .reduce: self = .reduce
        case .blockSums: self = .blockSums
        case .norm: self = .norm
        case .weightSlice: self = .weightSlice
        case .sliceState: self = .sliceState
        case .sliceGradient: self = .sliceGradient
        case .stepDone: self = .stepDone
        case .gather: self = .gather
        case .planAdopted: self = .planAdopted
        case .planInForce: self = .planInForce
        }
    }

    var name: String {
        switch self {
        case .hello: return "hello"
        case .welcome: return "welcome"
        case .weights: return "weights"
        case .assign: return "assign"
        case .gradients: return "gradients"
        case .heartbeat: return "heartbeat"
        case .bye: return "bye"
        case .error: return "error"
        case .evaluation: return "evaluation"
        case .listening: return "listening"
        case .plan: return "plan"
        case .computed: return "computed"
        case .slicePartials: return "slice-partials"
        case .reduce: return "reduce"
        case .blockSums: return "block-sums"
        case .norm: return "norm"
        case .weightSlice: return "weight-slice"
        case .sliceState: return "slice-state"
        case .sliceGradient: return "slice-gradient"
        case .stepDone: return "step-done"
        case .gather: return "gather"
        case .planAdopted: return "plan-adopted"
        case .planInForce: return "plan-in-force"
        }
    }
}

/// A string in quotes, cut at 80 characters so a log line stays a line.
func quoted(_ text: String) -> String {
    "\"\(PeerText.printable(text, limit: 80))\""
}

/// The first few items of a list in brackets, with how many more there are.
func listPrefix<T: CustomStringConvertible>(_ items: [T], shown: Int = 8) -> String {
    let head = items.prefix(shown).map { $0.description }.joined(separator: ", ")
    return items.count > shown ? "[\(head), … +\(items.count - shown)]" : "[\(head)]"
}
