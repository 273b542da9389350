import Wire

/// What the reduction needs of a tree node besides the micro-batches it covers (the node itself
/// is the wire's, so that what a worker sends is what the reduction takes): where it starts, its
/// neighbours in the tree, and an order (by first micro-batch, the larger node first).
extension TreeNode: Comparable {
    public var firstLeaf: Int { index << level }
    public var leftChild: TreeNode { TreeNode(level: level - 1, index: index * 2) }
    public var rightChild: TreeNode { TreeNode(level: level - 1, index: index * 2 + 1) }
    public var parent: TreeNode { TreeNode(level: level + 1, index: index / 2) }

    public static func < (a: TreeNode, b: TreeNode) -> Bool {
        a.firstLeaf != b.firstLeaf ? a.firstLeaf < b.firstLeaf : a.level > b.level
    }

    /// Whether the two nodes share a micro-batch (one lies inside the other).
    public func overlaps(_ other: TreeNode) -> Bool {
        (firstLeaf..<(firstLeaf + (1 << level))).overlaps(other.firstLeaf..<(other.firstLeaf + (1 << other.level)))
    }

    /// `items` in groups none of which holds two overlapping nodes, in their order: one message
    /// may not carry both (its receiver would count micro-batches twice), and a worker that
    /// computed a micro-batch twice, in a node and again alone, holds both.
    public static func disjointGroups<Item>(_ items: [Item], node: (Item) -> TreeNode) -> [[Item]] {
        var groups: [[Item]] = []
        for item in items {
            if let g = groups.firstIndex(where: { group in !group.contains { node($0).overlaps(node(item)) } }) {
                groups[g].append(item)
            } else {
                groups.append([item])
            }
        }
        return groups
    }
}

public struct ReductionError: Error, CustomStringConvertible, Equatable {
    public var description: String

    public init(description: String) {
        self.description = description
    }
}

/// The fixed summation tree of DESIGN.md's step contract. The value of a node is
/// `value(left) + value(right)` (just `value(left)` when the right child lies past the last
/// micro-batch), evaluated element by element, and rounded as a `NodeRounding` says (by default
/// not at all). Because the tree depends only on the number of
/// micro-batches, any way of cutting the work among workers that sends exact tree nodes gives the
/// same bits: floating-point addition is only ever done in this one order.
public struct ReductionTree: Sendable, Equatable {
    public let leafCount: Int
    /// Levels above the leaves: ceil(log2(leafCount)).
    public let height: Int

    public init(leafCount: Int) {
        precondition(leafCount > 0, "a reduction tree needs at least one micro-batch")
        self.leafCount = leafCount
        var height = 0
        while (1 << height) < leafCount { height += 1 }
        self.height = height
    }

    public var root: TreeNode { TreeNode(level: height, index: 0) }

    /// The micro-batches a node covers.
    public func leaves(of node: TreeNode) -> Range<Int> {
        let first = node.firstLeaf
        return first..<min(first + (1 << node.level), leafCount)
    }

    /// Whether the node exists in this tree (and covers at least one micro-batch).
    public func contains(_ node: TreeNode) -> Bool {
        node.level >= 0 && node.level <= height && node.index >= 0 && node.firstLeaf < leafCount
    }

    /// The largest nodes whose micro-batches all lie in `held`: what a worker holding those
    /// micro-batches sends, so that it does as much of the sum as it can. Sorted by first leaf.
    public func maximalNodes(covering held: Set<Int>) -> [TreeNode] {
        var result: [TreeNode] = []
        func visit(_ node: TreeNode) {
            let range = leaves(of: node)
            if range.allSatisfy({ held.contains($0) }) {
                result.append(node)
            } else if node.level > 0 {
                visit(node.leftChild)
                if contains(node.rightChild) { visit(node.rightChild) }
            }
        }
        visit(root)
        return result
    }

    /// Computes `node`'s value into `output` (`length` floats). `known` gives the value of a node
    /// when it is already available (a received partial sum, or a leaf's gradient); otherwise the
    /// node is built from its children. Throws when some micro-batch under `node` has no value.
    ///
    /// `output` may be the very memory `known` gives for the node that starts `node` (the one
    /// holding its first micro-batch): the sum is then built there in place, sparing a copy. That
    /// memory is read before anything is written to it, and only once.
    /// With a `rounding`, every sum computed here is rounded right after its addition; values
    /// `known` gives are taken as they are (a leaf or a received node, rounded where it was made).
    public func evaluate(
        _ node: TreeNode, length: Int, into output: UnsafeMutablePointer<Float>, rounding: NodeRounding = .none,
        known: (TreeNode) -> UnsafePointer<Float>?
    ) throws {
        try evaluate(node, length: length, into: output, scratch: ReductionScratch(), rounding: rounding, known: known)
    }

    /// `evaluate(_:length:into:known:)` with scratch memory that outlives the call, so that a
    /// reduction run every step allocates (and faults in) its scratch only once, and optionally
    /// the value divided by `divisor`: each element is rounded as the sum is, then divided, so the
    /// bits equal a division pass after the sum, done here in the same pass as the last addition.
    /// With a `rounding` the node is rounded first and then divided, in a pass of its own.
    func evaluate(
        _ node: TreeNode, length: Int, into output: UnsafeMutablePointer<Float>, scratch: ReductionScratch,
        rounding: NodeRounding = .none, dividingBy divisor: Float? = nil, known: (TreeNode) -> UnsafePointer<Float>?
    ) throws {
        try evaluate(node, depth: 0, length: length, into: output, scratch: scratch, rounding: rounding, divisor: divisor, known: known)
    }

    private func evaluate(
        _ node: TreeNode, depth: Int, length: Int, into output: UnsafeMutablePointer<Float>,
        scratch: ReductionScratch, rounding: NodeRounding, divisor: Float? = nil, known: (TreeNode) -> UnsafePointer<Float>?
    ) throws {
        if let values = known(node) {
            if let divisor {
                TreeAddition.divide(values, into: output, count: length, by: divisor)
            } else if values != UnsafePointer(output) {
                output.update(from: values, count: length)
            }
            return
        }
        guard node.level > 0 else {
            throw ReductionError(description: "no gradient for micro-batch \(node.index)")
        }
        // A left child already known is read from where it lies too: the parent is written in
        // the addition's one pass, not copied into `output` first.
        let left: UnsafePointer<Float>
        if let values = known(node.leftChild) {
            left = values
        } else {
            try evaluate(node.leftChild, depth: depth + 1, length: length, into: output, scratch: scratch, rounding: rounding, known: known)
            left = UnsafePointer(output)
        }
        guard contains(node.rightChild) else {
            if let divisor {
                TreeAddition.divide(left, into: output, count: length, by: divisor)
            } else if left != UnsafePointer(output) {
                output.update(from: left, count: length)
            }
            return
        }
        // A right child already known is added from where it lies: the same additions, no copy.
        let right: UnsafePointer<Float>
        if let values = known(node.rightChild) {
            right = values
        } else {
            let buffer = scratch.buffer(depth: depth, length: length)
            try evaluate(node.rightChild, depth: depth + 1, length: length, into: buffer, scratch: scratch, rounding: rounding, known: known)
            right = UnsafePointer(buffer)
        }
        if rounding.rounds {
            TreeAddition.add(left, right, into: output, count: length)
            rounding.round(output, count: length)
            if let divisor { TreeAddition.divide(output, count: length, by: divisor) }
        } else if let divisor {
            TreeAddition.add(left, right, into: output, count: length, dividingBy: divisor)
        } else {
            TreeAddition.add(left, right, into: output, count: length)
        }
    }
}

/// Memory for the right children a tree evaluation builds, one buffer per depth, kept between
/// evaluations of the same length.
final class ReductionScratch {
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var length = 0

    init() {}

    deinit { buffers.forEach { $0.deallocate() } }

    func buffer(depth: Int, length: Int) -> UnsafeMutablePointer<Float> {
        if length != self.length {
            buffers.forEach { $0.deallocate() }
            buffers.removeAll()
            self.length = length
        }
        while buffers.count <= depth { buffers.append(.allocate(capacity: length)) }
        return buffers[depth]
    }
}
