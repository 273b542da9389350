/// Field groups more than one message type reads: tree nodes, per-micro-batch results and
/// worker timings, each checked as it is read.
extension WireCodec {
    /// A count-prefixed list of tree nodes (level UInt8, index UInt32), each inside the index
    /// space, none overlapping another.
    static func readNodes(_ field: String, from reader: inout ByteReader, limit: Int) throws(DecodeError) -> [TreeNode] {
        let nodeCount = try reader.count(field, elementBytes: 5, limit: limit)
        var nodes: [TreeNode] = []
        nodes.reserveCapacity(nodeCount)
        for position in 0..<nodeCount {
            nodes.append(try readNode("\(field)[\(position)]", from: &reader))
        }
        try checkDisjoint(nodes, field: field)
        return nodes
    }

    /// One tree node inside the index space.
    static func readNode(_ field: String, from reader: inout ByteReader) throws(DecodeError) -> TreeNode {
        let level = try reader.u8("\(field).level")
        guard level <= maximumTreeLevel else {
            throw .treeLevelTooHigh(field: "\(field).level", level: level, maximum: maximumTreeLevel)
        }
        let index = try reader.u32("\(field).index")
        // In 64 bits the end of a level-31 node fits: (2^32 - 1 + 1) * 2^31 = 2^63.
        guard (UInt64(index) + 1) << UInt64(level) <= UInt64(UInt32.max) + 1 else {
            throw .treeNodeOutOfRange(field: field, level: level, index: index)
        }
        return TreeNode(level: Int(level), index: Int(index))
    }

    static func checkDisjoint(_ nodes: [TreeNode], field: String) throws(DecodeError) {
        let ordered = nodes.sorted { $0.microBatches.lowerBound < $1.microBatches.lowerBound }
        for (left, right) in zip(ordered, ordered.dropFirst()) where left.microBatches.upperBound > right.microBatches.lowerBound {
            throw .overlappingTreeNodes(field: field, first: left, second: right)
        }
    }

    /// The per-micro-batch results of a gradients or evaluation message (`message` names it in
    /// errors): distinct indices, and correct answers within the top five within the samples.
    static func readResults(_ message: String, from reader: inout ByteReader, limits: DecodeLimits) throws(DecodeError) -> [MicroBatchResult] {
        let count = try reader.count("\(message).results", elementBytes: 24, limit: limits.maxMicroBatches)
        var results: [MicroBatchResult] = []
        results.reserveCapacity(count)
        var seen = Set<UInt32>(minimumCapacity: count)
        for position in 0..<count {
            let field = "\(message).results[\(position)]"
            let index = try reader.u32("\(field).index")
            guard seen.insert(index).inserted else {
                throw .duplicateMicroBatch(field: "\(field).index", index: index)
            }
            let lossSum = Double(bitPattern: try reader.u64("\(field).lossSum"))
            let correct = try reader.u32("\(field).correct")
            let topFiveCorrect = try reader.u32("\(field).topFiveCorrect")
            let samples = try reader.u32("\(field).samples")
            guard correct <= samples else {
                throw .invalidValue(field: "\(field).correct", value: String(correct),
                                    requirement: "cannot exceed the micro-batch's \(samples) samples")
            }
            // A sample right at the top is also among the top five.
            guard topFiveCorrect >= correct, topFiveCorrect <= samples else {
                throw .invalidValue(field: "\(field).topFiveCorrect", value: String(topFiveCorrect),
                                    requirement: "must lie from the \(correct) correct to the micro-batch's \(samples) samples")
            }
            results.append(MicroBatchResult(index: index, lossSum: lossSum, correct: correct, topFiveCorrect: topFiveCorrect,
                                            samples: samples))
        }
        return results
    }

    /// A duration: a finite, non-negative number of seconds.
    static func readSeconds(_ field: String, from reader: inout ByteReader) throws(DecodeError) -> Double {
        let value = Double(bitPattern: try reader.u64(field))
        guard value.isFinite, value >= 0 else {
            throw .invalidValue(field: field, value: String(value), requirement: "a duration must be a finite number of seconds, 0 or more")
        }
        return value
    }

    /// The worker timings at the end of a gradients or evaluation meta frame: each a finite,
    /// non-negative number of seconds, and forward + backward + pack no more than the total they
    /// are part of.
    static func readTimings(_ message: String, from reader: inout ByteReader) throws(DecodeError) -> WorkerTimings {
        func seconds(_ field: String) throws(DecodeError) -> Double { try readSeconds(field, from: &reader) }
        let timings = WorkerTimings(
            forwardSeconds: try seconds("\(message).timings.forwardSeconds"),
            backwardSeconds: try seconds("\(message).timings.backwardSeconds"),
            packSeconds: try seconds("\(message).timings.packSeconds"),
            totalSeconds: try seconds("\(message).timings.totalSeconds"))
        guard timings.accountedSeconds <= timings.totalSeconds + timingTolerance else {
            throw .invalidValue(
                field: "\(message).timings.totalSeconds", value: String(timings.totalSeconds),
                requirement: "forward + backward + pack (\(timings.accountedSeconds) s) must fit in the total from assignment to results")
        }
        return timings
    }
}
