import CNN
import Wire

/// What a worker's part in the sharded reduction hands over as a slice's source after a plan
/// change, and the optimiser state it sends (to a new owner or replica, or to the coordinator
/// for a checkpoint).
extension ShardRole {
    enum Handover: Equatable {
        case state(slice: Int, to: UInt32)
        case weights(slice: Int, to: UInt32)
    }

    /// As the source of a slice after a plan change: its committed state to the owner and
    /// replica that lack it, its committed weights to new members.
    func handovers(of index: Int, _ slice: SliceAssignment, newMembers: [UInt32]) -> [Handover] {
        guard holdings[index]?.committed != nil else {
            logger.warning("plan names this worker the source of slice \(index) but it holds no committed state of it")
            return []
        }
        var due: [Handover] = []
        if slice.ownerNeedsState && slice.owner != selfID { due.append(.state(slice: index, to: slice.owner)) }
        if slice.replicaNeedsState, let replica = slice.replica, replica != selfID { due.append(.state(slice: index, to: replica)) }
        for member in newMembers where member != selfID { due.append(.weights(slice: index, to: member)) }
        return due
    }

    /// Sends what this worker owes as a source; keeps what could not be sent for the next try.
    func deliverHandovers() {
        guard let step else { return }
        handoversDue = handoversDue.filter { due in
            switch due {
            case .state(let index, let member):
                guard let state = holdings[index]?.committed else { return false }
                return !sendState(index, state, weights: false, to: member, step: step)
            case .weights(let index, let member):
                let range = layout.slices[index]
                let values = FloatPayload(wrapping: current.pointer + range.lowerBound, count: range.count, owner: current)
                return !peers.send(.weightSlice(WeightSlice(slice: UInt32(index), values: values)), to: member, step: step)
            }
        }
    }

    @discardableResult
    func sendState(_ index: Int, _ state: [(name: String, values: [Float])], weights: Bool, to member: UInt32?, step: Int) -> Bool {
        let range = layout.slices[index]
        let message = SliceState(
            slice: UInt32(index), names: state.map(\.name),
            weights: weights ? FloatPayload(copying: current.pointer + range.lowerBound, count: range.count) : nil,
            tensors: state.map { FloatPayload(copying: $0.values) })
        if let member { return peers.send(.sliceState(message), to: member, step: step) }
        tellCoordinator(.sliceState(message), step)
        return true
    }
}
