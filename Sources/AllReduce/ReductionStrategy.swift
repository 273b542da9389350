import Wire

/// Where a part of a step's reduction happens: at the coordinator, or at one worker.
public enum ReductionSite: Hashable, Sendable, CustomStringConvertible {
    case coordinator
    case worker(UInt32)

    public var description: String {
        switch self {
        case .coordinator: return "the coordinator"
        case .worker(let id): return "worker w\(id)"
        }
    }
}

/// A run of the flat gradient vector (parameter gradients, then state observations) and the site
/// that owns it: partial sums of the slice go there, the owner completes the slice's tree, runs
/// the optimiser on the slice's weights and sends the updated weights to every worker. A replica,
/// where there is one, keeps a copy of the slice's optimiser state, so that the slice survives
/// its owner.
public struct ReductionSlice: Equatable, Sendable {
    /// Element offsets into the flat gradient vector.
    public var range: Range<Int>
    public var owner: ReductionSite
    public var replica: ReductionSite?

    public init(range: Range<Int>, owner: ReductionSite, replica: ReductionSite? = nil) {
        self.range = range
        self.owner = owner
        self.replica = replica
    }
}

/// What a strategy decided for one step: the slices of the flat gradient vector, in order and
/// covering it exactly once, each with its owner.
public struct ReductionPlan: Equatable, Sendable {
    public var slices: [ReductionSlice]

    public init(slices: [ReductionSlice]) {
        self.slices = slices
    }

    /// Elements of the flat vector whose partial sums go to `site`.
    public func length(ownedBy site: ReductionSite) -> Int {
        slices.filter { $0.owner == site }.reduce(0) { $0 + $1.range.count }
    }

    /// Every site that owns a slice.
    public var owners: Set<ReductionSite> { Set(slices.map(\.owner)) }
}

/// How the gradients of one step's micro-batches become the step's mean gradient, and where that
/// happens. Strategies (today `TreeReduction`, the tree completed at the coordinator; next a
/// sharded one whose slices are owned by workers) sit behind this protocol and keep its promise:
/// every addition is `TreeAddition` along the one fixed tree, so the result depends only on the
/// micro-batch gradients, never on which participant computed or sent what, nor on the strategy.
public protocol ReductionStrategy: AnyObject {
    /// The config's name for the strategy (`distributed.reduction`).
    var name: String { get }
    /// Who owns which slice of a flat gradient of `length` elements when `workers` take part.
    func plan(length: Int, workers: [UInt32]) -> ReductionPlan
    /// Starts a step over `microBatches` gradients of `length` floats each (the part of the flat
    /// vector this site owns).
    func begin(microBatches: Int, length: Int)
    /// Offers a partial result covering the micro-batches of `node`. `owner` keeps the memory
    /// behind `values` alive until `end()` (a received message, for example).
    func offer(_ node: TreeNode, values: UnsafePointer<Float>, owner: AnyObject) throws -> OfferOutcome
    /// Whether every micro-batch is covered.
    var isComplete: Bool { get }
    /// Micro-batches not yet covered, in order.
    var missingMicroBatches: [Int] { get }
    /// Writes the mean gradient (sum over the tree divided by the number of micro-batches).
    /// `output` may be the memory offered for the node that covers micro-batch 0 (whose holder
    /// no longer needs it): the mean then replaces it in place, sparing a buffer and a copy.
    func mean(into output: UnsafeMutablePointer<Float>) throws
    /// Ends the step: drops every reference to offered memory.
    func end()
}

public enum OfferOutcome: Equatable, Sendable {
    /// Taken: it covered micro-batches nobody had sent.
    case accepted
    /// Exactly this node had already arrived (a backup copy): ignored, and harmless because
    /// every copy has the same bits.
    case duplicate
}

/// The `central` strategy: the coordinator owns the whole vector, completes the tree, applies
/// the optimiser and sends the weights to every worker. Its traffic grows as N x W per step, fine
/// on one host for small models.
public final class TreeReduction: ReductionStrategy {
    public private(set) var tree = ReductionTree(leafCount: 1)
    private var length = 0
    private var received: [TreeNode: (values: UnsafePointer<Float>, owner: AnyObject)] = [:]
    private var covered: [Bool] = []
    private let scratch = ReductionScratch()
    /// How the tree's nodes are rounded (`distributed.wire_precision`); the offered nodes
    /// already are, where they were made.
    public var rounding: NodeRounding

    public init(rounding: NodeRounding = .none) {
        self.rounding = rounding
    }

    public var name: String { "central" }

    public func plan(length: Int, workers: [UInt32]) -> ReductionPlan {
        ReductionPlan(slices: [ReductionSlice(range: 0..<length, owner: .coordinator)])
    }

    public func begin(microBatches: Int, length: Int) {
        tree = ReductionTree(leafCount: microBatches)
        self.length = length
        received.removeAll(keepingCapacity: true)
        covered = [Bool](repeating: false, count: microBatches)
    }

    public func offer(_ node: TreeNode, values: UnsafePointer<Float>, owner: AnyObject) throws -> OfferOutcome {
        guard tree.contains(node) else {
            throw ReductionError(description: "tree node \(node) is outside the tree of \(tree.leafCount) micro-batches")
        }
        if received[node] != nil { return .duplicate }
        let range = tree.leaves(of: node)
        if range.contains(where: { covered[$0] }) {
            // Tree nodes are nested or disjoint. Inside a node already held: a backup copy of part
            // of it, nothing new. Holding only parts of this node: take the larger node instead,
            // whose value is by definition the same sum of those parts in the same order.
            if received.keys.contains(where: { $0.level > node.level && tree.leaves(of: $0).contains(range.lowerBound) }) {
                return .duplicate
            }
            for inner in received.keys where inner.level < node.level && range.contains(inner.firstLeaf) {
                received[inner] = nil
            }
        }
        for leaf in range { covered[leaf] = true }
        received[node] = (values, owner)
        return .accepted
    }

    public var isComplete: Bool { !covered.contains(false) }

    public var missingMicroBatches: [Int] { covered.indices.filter { !covered[$0] } }

    public func mean(into output: UnsafeMutablePointer<Float>) throws {
        // One micro-batch's gradient already is the mean; otherwise the division rides along
        // with the root's addition.
        let divisor = tree.leafCount > 1 ? Float(tree.leafCount) : nil
        try tree.evaluate(tree.root, length: length, into: output, scratch: scratch, rounding: rounding, dividingBy: divisor) { received[$0]?.values }
    }

    public func end() {
        received.removeAll(keepingCapacity: true)
    }
}
