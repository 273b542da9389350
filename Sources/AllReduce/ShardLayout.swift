/// How the `sharded` strategy cuts the flat vector of a model into slices, and who owns them.
///
/// Parameter gradients are cut into slices of whole norm blocks (so that an owner can compute the
/// block sums of the global norm for clipping on its own), at most `maximumSlices` of them; the
/// state observations (batch norm's batch statistics) form one slice of their own, because they
/// are applied layer by layer, not element by element. The cut depends only on the model, never on
/// the workers: ownership moves whole slices when workers join or leave. Every update is element
/// by element along the one fixed tree, so the bits depend on neither the cut nor the owners.
public struct ShardLayout: Equatable, Sendable {
    public let parameterCount: Int
    public let stateCount: Int
    /// The slices, in order, covering parameters then state exactly once.
    public let slices: [Range<Int>]

    public init(parameterCount: Int, stateCount: Int, block: Int, maximumSlices: Int = 64) {
        precondition(block > 0 && maximumSlices > 0, "a shard layout needs a block and at least one slice")
        self.parameterCount = parameterCount
        self.stateCount = stateCount
        let blocks = (parameterCount + block - 1) / block
        let blocksPerSlice = max(1, (blocks + maximumSlices - 1) / maximumSlices)
        var slices: [Range<Int>] = []
        var start = 0
        while start < parameterCount {
            let end = min(start + blocksPerSlice * block, parameterCount)
            slices.append(start..<end)
            start = end
        }
        if stateCount > 0 { slices.append(parameterCount..<(parameterCount + stateCount)) }
        self.slices = slices
    }

    /// Whether slice `index` holds state observations rather than parameter gradients.
    public func isStateSlice(_ index: Int) -> Bool {
        slices[index].lowerBound >= parameterCount
    }

    /// Ownership for a step with these workers: slice i goes to the (i mod N)-th worker by id, and
    /// its replica to the next one, so that each worker owns and mirrors about S/N slices and a
    /// replica is never its own owner (with one worker there is none to mirror it).
    public func plan(workers: [UInt32]) -> ReductionPlan {
        let ids = workers.sorted()
        precondition(!ids.isEmpty, "a sharded plan needs at least one worker")
        return ReductionPlan(slices: slices.indices.map { i in
            let owner = ids[i % ids.count]
            let replica = ids.count > 1 ? ids[(i + 1) % ids.count] : nil
            return ReductionSlice(range: slices[i], owner: .worker(owner), replica: replica.map { .worker($0) })
        })
    }
}
