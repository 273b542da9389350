import AllReduce
import Wire
import Testing

/// Properties of the reduction tree over every micro-batch count a config is likely to use.
@Suite("Reduction tree properties")
struct TreePropertyTests {
    @Test("maximal nodes of any held set cover exactly that set, without overlap", arguments: 1...33)
    func maximalNodesPartitionTheHeldSet(leafCount: Int) {
        let tree = ReductionTree(leafCount: leafCount)
        // A few structured held sets: everything, evens, a prefix, a suffix, a middle run.
        let sets: [Set<Int>] = [
            Set(0..<leafCount), Set(stride(from: 0, to: leafCount, by: 2)), Set(0..<(leafCount + 1) / 2),
            Set((leafCount / 2)..<leafCount), Set((leafCount / 3)..<max(leafCount / 3, 2 * leafCount / 3)),
        ]
        for held in sets {
            var covered: [Int] = []
            for node in tree.maximalNodes(covering: held) {
                #expect(tree.contains(node))
                covered += Array(tree.leaves(of: node))
            }
            #expect(covered.sorted() == held.sorted())
            #expect(Set(covered).count == covered.count)
        }
    }

    @Test("the root covers every micro-batch and the height is the ceiling of log2", arguments: [1, 2, 3, 4, 5, 8, 9, 16, 100, 1024])
    func rootCoversEverything(leafCount: Int) {
        let tree = ReductionTree(leafCount: leafCount)
        #expect(tree.leaves(of: tree.root) == 0..<leafCount)
        #expect((1 << tree.height) >= leafCount)
        #expect(tree.height == 0 || (1 << (tree.height - 1)) < leafCount)
    }

    /// What a worker holds after computing some micro-batches twice (a node, then a leaf of it
    /// again as a backup copy): the groups must hold every node once, keep their order, and never
    /// put two overlapping nodes in one message.
    @Test("disjoint groups hold every node once and no two overlapping ones together")
    func disjointGroupsSeparateOverlappingNodes() {
        let held = [TreeNode(level: 1, index: 1), TreeNode(level: 0, index: 3), TreeNode(level: 0, index: 0),
                    TreeNode(level: 2, index: 0), TreeNode(level: 0, index: 2), TreeNode(level: 1, index: 2)]
        let groups = TreeNode.disjointGroups(held, node: { $0 })
        #expect(groups.flatMap { $0 }.sorted() == held.sorted())
        for group in groups {
            for (i, a) in group.enumerated() {
                for b in group[(i + 1)...] { #expect(!a.overlaps(b), "\(a) and \(b) in one group") }
            }
        }
        #expect(groups.count == 3)
        #expect(groups[0] == [TreeNode(level: 1, index: 1), TreeNode(level: 0, index: 0), TreeNode(level: 1, index: 2)])
        #expect(TreeNode.disjointGroups([TreeNode(level: 0, index: 0), TreeNode(level: 0, index: 1)], node: { $0 }).count == 1)
    }
}
