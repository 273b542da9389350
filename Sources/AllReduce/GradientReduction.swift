/// How the gradients of one step's micro-batches become the step's mean gradient. Strategies
/// (today the deterministic tree at the coordinator; later a ring between workers or sharded
/// coordinators) sit behind this protocol and must keep its promise: the result depends only on
/// the micro-batch gradients, never on which participant computed or sent what.
public protocol GradientReduction: AnyObject {
    /// Starts a step over `microBatches` gradients of `length` floats each.
    func begin(microBatches: Int, length: Int)
    /// Offers a partial result covering the micro-batches of `node`. `owner` keeps the memory
    /// behind `values` alive until the step ends (a received message, for example).
    func offer(_ node: TreeNodeID, values: UnsafePointer<Float>, owner: AnyObject) throws -> OfferOutcome
    /// Whether every micro-batch is covered.
    var isComplete: Bool { get }
    /// Micro-batches not yet covered, in order.
    var missingMicroBatches: [Int] { get }
    /// Writes the mean gradient (sum over the tree divided by the number of micro-batches).
    /// `output` may be the memory offered for the node that covers micro-batch 0 (whose holder
    /// no longer needs it): the mean then replaces it in place, sparing a buffer and a copy.
    func mean(into output: UnsafeMutablePointer<Float>) throws
}

public enum OfferOutcome: Equatable, Sendable {
    /// Taken: it covered micro-batches nobody had sent.
    case accepted
    /// Exactly this node had already arrived (a backup copy): ignored, and harmless because
    /// every copy has the same bits.
    case duplicate
}

/// The deterministic tree of DESIGN.md, completed at the coordinator.
public final class TreeReduction: GradientReduction {
    public private(set) var tree = ReductionTree(leafCount: 1)
    private var length = 0
    private var received: [TreeNodeID: (values: UnsafePointer<Float>, owner: AnyObject)] = [:]
    private var covered: [Bool] = []
    private let scratch = ReductionScratch()

    public init() {}

    public func begin(microBatches: Int, length: Int) {
        tree = ReductionTree(leafCount: microBatches)
        self.length = length
        received.removeAll(keepingCapacity: true)
        covered = [Bool](repeating: false, count: microBatches)
    }

    public func offer(_ node: TreeNodeID, values: UnsafePointer<Float>, owner: AnyObject) throws -> OfferOutcome {
        guard tree.contains(node) else {
            throw ReductionError(description: "\(node) is outside the tree of \(tree.leafCount) micro-batches")
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
        try tree.evaluate(tree.root, length: length, into: output, scratch: scratch, dividingBy: divisor) { received[$0]?.values }
    }

    /// Drops the references to received buffers once the step is applied.
    public func end() {
        received.removeAll(keepingCapacity: true)
    }
}
