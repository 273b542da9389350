import AllReduce
import Wire
import XCTest

final class TreeReductionTests: XCTestCase {
    /// Leaf r holds the value r + 1 in every element, so the sum over n leaves is n(n+1)/2.
    private func leafValues(_ count: Int, length: Int) -> [[Float]] {
        (0..<count).map { [Float](repeating: Float($0 + 1), count: length) }
    }

    func testMaximalNodesOfAlignedRangesAreSingleNodes() {
        let tree = ReductionTree(leafCount: 8)
        XCTAssertEqual(tree.maximalNodes(covering: Set(0..<8)), [TreeNode(level: 3, index: 0)])
        XCTAssertEqual(tree.maximalNodes(covering: Set(4..<8)), [TreeNode(level: 2, index: 1)])
        XCTAssertEqual(
            tree.maximalNodes(covering: Set([1, 2, 3, 6])),
            [TreeNode(level: 0, index: 1), TreeNode(level: 1, index: 1), TreeNode(level: 0, index: 6)])
    }

    func testUnevenLeafCountsCutTheLastNode() {
        let tree = ReductionTree(leafCount: 5)
        XCTAssertEqual(tree.height, 3)
        XCTAssertEqual(tree.leaves(of: TreeNode(level: 2, index: 1)), 4..<5)
        XCTAssertEqual(tree.maximalNodes(covering: Set(0..<5)), [tree.root])
        XCTAssertFalse(tree.contains(TreeNode(level: 0, index: 5)))
        XCTAssertFalse(tree.contains(TreeNode(level: 1, index: 3)))
    }

    func testSumOverParticipantsIsTriangularNumberForEveryCount() throws {
        for participants in 1...9 {
            let length = 37
            let leaves = leafValues(participants, length: length)
            let reduction = TreeReduction()
            reduction.begin(microBatches: participants, length: length)
            let pointers = leaves.map { $0.withUnsafeBufferPointer { UnsafePointer($0.baseAddress!) } }
            for r in 0..<participants {
                withExtendedLifetime(leaves) {
                    XCTAssertEqual(try? reduction.offer(TreeNode(level: 0, index: r), values: pointers[r], owner: self), .accepted)
                }
            }
            XCTAssertTrue(reduction.isComplete)
            var mean = [Float](repeating: 0, count: length)
            try withExtendedLifetime(leaves) { try mean.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) } }
            let expected = Float(participants * (participants + 1) / 2) / Float(participants)
            XCTAssertEqual(mean, [Float](repeating: expected, count: length), "n = \(participants)")
        }
    }

    /// Values whose float sum depends on order (1e8 + 1 - 1e8): every split of the work must
    /// still give the bits of the canonical tree.
    func testEverySplitGivesBitIdenticalResult() throws {
        let count = 7, length = 5
        let leaves: [[Float]] = (0..<count).map { i in
            (0..<length).map { j in Float(i % 2 == 0 ? 1e8 : 1) * (j % 2 == 0 ? 1 : -1) + Float(i) * 0.1 + Float(j) * 1e-3 }
        }
        let tree = ReductionTree(leafCount: count)
        func node(_ id: TreeNode) -> [Float] {
            var out = [Float](repeating: 0, count: length)
            withExtendedLifetime(leaves) {
                try! out.withUnsafeMutableBufferPointer { o in
                    try tree.evaluate(id, length: length, into: o.baseAddress!) { n in
                        n.level == 0 ? leaves[n.index].withUnsafeBufferPointer { UnsafePointer($0.baseAddress!) } : nil
                    }
                }
            }
            return out
        }
        let reference = node(tree.root)
        // Splits of 0..<7 among workers, each worker sending its maximal nodes.
        let splits: [[Set<Int>]] = [[Set(0..<7)], [Set(0..<3), Set(3..<7)], [[0, 2, 4, 6], [1, 3, 5]], [[0], [1, 2], [3, 4, 5, 6]]]
        for split in splits {
            let reduction = TreeReduction()
            reduction.begin(microBatches: count, length: length)
            var kept: [[Float]] = []
            for held in split {
                for id in tree.maximalNodes(covering: held) { kept.append(node(id)) }
            }
            var k = 0
            for held in split {
                for id in tree.maximalNodes(covering: held) {
                    _ = try kept[k].withUnsafeBufferPointer { try reduction.offer(id, values: $0.baseAddress!, owner: self) }
                    k += 1
                }
            }
            var sum = [Float](repeating: 0, count: length)
            try withExtendedLifetime(kept) {
                try sum.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
            }
            let expected = reference.map { $0 / Float(count) }
            XCTAssertEqual(sum.map(\.bitPattern), expected.map(\.bitPattern), "split \(split)")
        }
    }

    func testBackupCopiesAreDuplicatesAndLargerNodesReplaceTheirParts() throws {
        let values = [Float](repeating: 1, count: 4)
        try values.withUnsafeBufferPointer { p in
            let reduction = TreeReduction()
            reduction.begin(microBatches: 4, length: 4)
            XCTAssertEqual(try reduction.offer(TreeNode(level: 0, index: 2), values: p.baseAddress!, owner: self), .accepted)
            XCTAssertEqual(try reduction.offer(TreeNode(level: 0, index: 2), values: p.baseAddress!, owner: self), .duplicate)
            XCTAssertEqual(reduction.missingMicroBatches, [0, 1, 3])
            // A straggler's node over 2..<4 arrives: it replaces the single leaf.
            XCTAssertEqual(try reduction.offer(TreeNode(level: 1, index: 1), values: p.baseAddress!, owner: self), .accepted)
            XCTAssertEqual(reduction.missingMicroBatches, [0, 1])
            XCTAssertEqual(try reduction.offer(TreeNode(level: 0, index: 3), values: p.baseAddress!, owner: self), .duplicate)
            XCTAssertThrowsError(try reduction.offer(TreeNode(level: 0, index: 4), values: p.baseAddress!, owner: self))
            XCTAssertFalse(reduction.isComplete)
            var out = [Float](repeating: 0, count: 4)
            XCTAssertThrowsError(try out.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) })
        }
    }
}
