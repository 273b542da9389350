import AllReduce
import Wire
import XCTest

/// The mean may be built in the memory of micro-batch 0's leaf, and a reduction reused from step
/// to step; the bits must be those of the tree's additions done into fresh memory.
final class InPlaceReductionTests: XCTestCase {
    /// Values of very different magnitudes, so that any other order of additions rounds differently.
    private func leaves(_ count: Int, length: Int, seed: UInt32) -> [[Float]] {
        var state = seed
        return (0..<count).map { _ in
            (0..<length).map { _ in
                state = state &* 1_664_525 &+ 1_013_904_223
                let scale = Float(sign: .plus, exponent: Int(state >> 27) - 16, significand: 1)
                return (Float(state >> 8 & 0xFFFF) / 65536 - 0.5) * scale
            }
        }
    }

    /// The tree's sum written out: value(node) = value(left) + value(right), each in fresh memory.
    private func treeSum(_ leaves: [[Float]], first: Int, level: Int) -> [Float] {
        if level == 0 { return leaves[first] }
        let half = 1 << (level - 1)
        let left = treeSum(leaves, first: first, level: level - 1)
        guard first + half < leaves.count else { return left }
        let right = treeSum(leaves, first: first + half, level: level - 1)
        return zip(left, right).map { $0 + $1 }
    }

    private func expectedMean(_ leaves: [[Float]]) -> [UInt32] {
        let tree = ReductionTree(leafCount: leaves.count)
        let sum = treeSum(leaves, first: 0, level: tree.height)
        return sum.map { leaves.count > 1 ? $0 / Float(leaves.count) : $0 }.map(\.bitPattern)
    }

    func testMeanBuiltInLeafZeroEqualsTheTreeSumInFreshMemoryForEveryCount() throws {
        let reduction = TreeReduction()
        for count in 1...11 {
            for length in [1, 13, 67] {
                let values = leaves(count, length: length, seed: UInt32(count * 100 + length))
                let buffers = values.map { leaf -> UnsafeMutablePointer<Float> in
                    let pointer = UnsafeMutablePointer<Float>.allocate(capacity: length)
                    pointer.initialize(from: leaf, count: length)
                    return pointer
                }
                defer { buffers.forEach { $0.deallocate() } }
                reduction.begin(microBatches: count, length: length)
                for (index, buffer) in buffers.enumerated().reversed() {
                    XCTAssertEqual(try reduction.offer(TreeNode(level: 0, index: index), values: buffer, owner: self), .accepted)
                }
                try reduction.mean(into: buffers[0])
                reduction.end()
                XCTAssertEqual(Array(UnsafeBufferPointer(start: buffers[0], count: length)).map(\.bitPattern), expectedMean(values),
                               "\(count) leaves of \(length)")
                // The other leaves are only read.
                for index in 1..<count {
                    XCTAssertEqual(Array(UnsafeBufferPointer(start: buffers[index], count: length)), values[index])
                }
            }
        }
    }

    func testInPlaceMeanOverPartialSumsMatchesAFreshBuffer() throws {
        // Seven micro-batches arriving as the nodes a worker would send: [0, 4), [4, 6) and 6.
        let values = leaves(7, length: 29, seed: 5)
        let tree = ReductionTree(leafCount: 7)
        let nodes = [TreeNode(level: 2, index: 0), TreeNode(level: 1, index: 2), TreeNode(level: 0, index: 6)]
        let sums = nodes.map { node in treeSum(values, first: node.firstLeaf, level: node.level) }
        XCTAssertEqual(nodes.map { tree.leaves(of: $0) }, [0..<4, 4..<6, 6..<7])
        let buffers = sums.map { sum -> UnsafeMutablePointer<Float> in
            let pointer = UnsafeMutablePointer<Float>.allocate(capacity: sum.count)
            pointer.initialize(from: sum, count: sum.count)
            return pointer
        }
        defer { buffers.forEach { $0.deallocate() } }
        let reduction = TreeReduction()
        var fresh = [Float](repeating: .nan, count: 29)
        for inPlace in [false, true] {
            reduction.begin(microBatches: 7, length: 29)
            for (node, buffer) in zip(nodes, buffers) { _ = try reduction.offer(node, values: buffer, owner: self) }
            if inPlace {
                try reduction.mean(into: buffers[0])
            } else {
                try fresh.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
            }
            reduction.end()
        }
        XCTAssertEqual(fresh.map(\.bitPattern), expectedMean(values))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buffers[0], count: 29)).map(\.bitPattern), expectedMean(values))
    }

    /// Children that both lie where they were received are added into fresh memory in one pass
    /// (no copy of the left one first): every split of 1-11 micro-batches into two runs of whole
    /// nodes, as two workers send them, gives the tree's bits, and the received nodes are only read.
    func testMeanOfReceivedNodesIntoFreshMemoryForEverySplit() throws {
        let reduction = TreeReduction()
        for count in 1...11 {
            let values = leaves(count, length: 67, seed: UInt32(count))
            let tree = ReductionTree(leafCount: count)
            for cut in 0...count {
                let nodes = tree.maximalNodes(covering: Set(0..<cut)) + tree.maximalNodes(covering: Set(cut..<count))
                let sums = nodes.map { treeSum(values, first: $0.firstLeaf, level: $0.level) }
                let received = sums.map { sum -> UnsafeMutablePointer<Float> in
                    let pointer = UnsafeMutablePointer<Float>.allocate(capacity: sum.count)
                    pointer.initialize(from: sum, count: sum.count)
                    return pointer
                }
                defer { received.forEach { $0.deallocate() } }
                var mean = [Float](repeating: .nan, count: 67)
                reduction.begin(microBatches: count, length: 67)
                for (node, pointer) in zip(nodes, received) { _ = try reduction.offer(node, values: pointer, owner: self) }
                try mean.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
                reduction.end()
                XCTAssertEqual(mean.map(\.bitPattern), expectedMean(values), "\(count) micro-batches cut at \(cut)")
                for (pointer, sum) in zip(received, sums) {
                    XCTAssertEqual(Array(UnsafeBufferPointer(start: pointer, count: 67)).map(\.bitPattern), sum.map(\.bitPattern))
                }
            }
        }
    }

    func testThreeOperandAdditionsEqualTheInPlaceOnes() {
        let values = leaves(2, length: 37, seed: 3)
        for divisor in [nil, Float(3)] {
            var inPlace = values[0], fused = [Float](repeating: .nan, count: 37), aliased = values[0]
            inPlace.withUnsafeMutableBufferPointer { output in
                if let divisor { TreeAddition.add(values[1], into: output.baseAddress!, count: 37, dividingBy: divisor) }
                else { TreeAddition.add(values[1], into: output.baseAddress!, count: 37) }
            }
            fused.withUnsafeMutableBufferPointer { output in
                if let divisor { TreeAddition.add(values[0], values[1], into: output.baseAddress!, count: 37, dividingBy: divisor) }
                else { TreeAddition.add(values[0], values[1], into: output.baseAddress!, count: 37) }
            }
            aliased.withUnsafeMutableBufferPointer { output in
                if let divisor { TreeAddition.add(output.baseAddress!, values[1], into: output.baseAddress!, count: 37, dividingBy: divisor) }
                else { TreeAddition.add(output.baseAddress!, values[1], into: output.baseAddress!, count: 37) }
            }
            XCTAssertEqual(fused.map(\.bitPattern), inPlace.map(\.bitPattern))
            XCTAssertEqual(aliased.map(\.bitPattern), inPlace.map(\.bitPattern))
        }
    }

    func testARootSentWholeIsOnlyDividedInPlaceOrNot() throws {
        let values = leaves(6, length: 31, seed: 9)
        let root = ReductionTree(leafCount: 6).root
        let sum = treeSum(values, first: 0, level: root.level)
        let reduction = TreeReduction()
        for inPlace in [false, true] {
            var received = sum
            var fresh = [Float](repeating: .nan, count: 31)
            try received.withUnsafeMutableBufferPointer { message in
                reduction.begin(microBatches: 6, length: 31)
                _ = try reduction.offer(root, values: message.baseAddress!, owner: self)
                if inPlace {
                    try reduction.mean(into: message.baseAddress!)
                } else {
                    try fresh.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
                }
                reduction.end()
            }
            XCTAssertEqual((inPlace ? received : fresh).map(\.bitPattern), expectedMean(values), inPlace ? "in place" : "fresh")
        }
    }

    func testAReductionReusedAcrossStepsOfOtherSizesGivesFreshResults() throws {
        let reduction = TreeReduction()
        for (step, (count, length)) in [(8, 40), (5, 40), (8, 17), (3, 64), (8, 40)].enumerated() {
            let values = leaves(count, length: length, seed: UInt32(step + 1))
            let pointers = values.map { $0.withUnsafeBufferPointer { $0.baseAddress! } }
            var mean = [Float](repeating: .nan, count: length)
            try withExtendedLifetime(values) {
                reduction.begin(microBatches: count, length: length)
                for (index, pointer) in pointers.enumerated() {
                    _ = try reduction.offer(TreeNode(level: 0, index: index), values: pointer, owner: self)
                }
                try mean.withUnsafeMutableBufferPointer { try reduction.mean(into: $0.baseAddress!) }
                reduction.end()
            }
            XCTAssertEqual(mean.map(\.bitPattern), expectedMean(values), "step \(step): \(count) leaves of \(length)")
        }
    }
}
