import Wire

/// A slice whose optimiser state no living worker holds: its owner and its replica died before
/// the state reached anyone else.
public struct SliceLost: Error, CustomStringConvertible {
    public var slice: Int
    public var owner: UInt32
    public var replica: UInt32?

    public var description: String {
        "slice \(slice) is lost: its owner w\(owner)" + (replica.map { " and its replica w\($0) both" } ?? " (it had no replica)") + " left before another worker held its optimiser state"
    }
}

/// The ownership of a sharded run's slices as workers come and go (the coordinator's side).
///
/// Every plan is `ShardLayout.plan` over the members, so ownership is spread evenly whatever
/// happened before. What a change costs is the state that moves: each slice's committed state
/// is held by its owner and its replica, and when the new owner or replica is neither, the
/// surviving holder (the source) sends it; new members get every slice's weights from the
/// sources too. Nothing here touches numbers: any owner computes the same bits.
public struct ShardPlanner {
    public let layout: ShardLayout
    /// The current plan's slices (nil before the first plan).
    public private(set) var slices: [SliceAssignment]?

    public init(layout: ShardLayout) {
        self.layout = layout
    }

    /// The plan for `members` after the current one; `newMembers` are those that hold no weights
    /// yet. The first plan moves nothing (the coordinator sends weights and state itself).
    /// Throws `SliceLost` when a slice has no living holder left among `members`.
    public mutating func replan(members: [UInt32], newMembers: Set<UInt32>) throws -> [SliceAssignment] {
        let base = layout.plan(workers: members).slices
        let alive = Set(members)
        var next: [SliceAssignment] = []
        for (index, slice) in base.enumerated() {
            guard case .worker(let owner) = slice.owner else { preconditionFailure("a sharded plan gives every slice to a worker") }
            let replica: UInt32? = slice.replica.map { if case .worker(let id) = $0 { return id } else { preconditionFailure() } }
            guard let previous = slices?[index] else {
                next.append(SliceAssignment(owner: owner, replica: replica))
                continue
            }
            // Holders that are new members hold nothing yet (a worker that left and came back).
            let holders = [previous.owner, previous.replica].compactMap { $0 }.filter { alive.contains($0) && !newMembers.contains($0) }
            guard let source = holders.first else { throw SliceLost(slice: index, owner: previous.owner, replica: previous.replica) }
            let ownerNeeds = !holders.contains(owner)
            let replicaNeeds = replica.map { !holders.contains($0) } ?? false
            let moves = ownerNeeds || replicaNeeds || !newMembers.isEmpty
            next.append(SliceAssignment(owner: owner, replica: replica, source: moves ? source : nil,
                                        ownerNeedsState: ownerNeeds, replicaNeedsState: replicaNeeds))
        }
        slices = next
        return next
    }

    /// Forgets the plan (the coordinator holds every slice again, after a gather or on resume).
    public mutating func reset() {
        slices = nil
    }
}

/// The tree nodes of one step that count, chosen from every node offered by live workers: the
/// largest first, so that a worker's node over a range counts rather than the smaller nodes of
/// backups inside it. Any choice gives the same bits (a node's value is its part of the fixed
/// tree), so this only has to cover every micro-batch exactly once.
public struct CoverSelection {
    public let microBatches: Int
    private var offered: [UInt32: [TreeNode]] = [:]

    public init(microBatches: Int) {
        self.microBatches = microBatches
    }

    /// Records that `worker` holds the partial sums of `nodes`.
    public mutating func offer(_ nodes: [TreeNode], from worker: UInt32) {
        offered[worker, default: []] += nodes
    }

    /// Forgets every node of `worker` (it died: its partial sums may not have reached the owners).
    public mutating func forget(_ worker: UInt32) {
        offered[worker] = nil
    }

    /// Nodes covering every micro-batch once, largest first, ties to the lower worker id.
    public var cover: [CoverNode] {
        var covered = [Bool](repeating: false, count: microBatches)
        var chosen: [CoverNode] = []
        let candidates = offered.flatMap { worker, nodes in nodes.map { CoverNode(node: $0, worker: worker) } }
            .sorted { ($1.node.level, $0.worker, $0.node.index) < ($0.node.level, $1.worker, $1.node.index) }
        for candidate in candidates {
            let range = candidate.node.microBatches.clamped(to: 0..<microBatches)
            guard !range.isEmpty, !range.contains(where: { covered[$0] }) else { continue }
            for index in range { covered[index] = true }
            chosen.append(candidate)
        }
        return chosen.sorted { $0.node.microBatches.lowerBound < $1.node.microBatches.lowerBound }
    }

    /// Micro-batches no live worker's node covers.
    public var uncovered: [Int] {
        var covered = [Bool](repeating: false, count: microBatches)
        for nodes in offered.values {
            for node in nodes {
                for index in node.microBatches.clamped(to: 0..<microBatches) { covered[index] = true }
            }
        }
        return covered.indices.filter { !covered[$0] }
    }
}
