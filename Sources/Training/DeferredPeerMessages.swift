import Wire

/// Peers' messages a sharded worker cannot take yet (a plan or step it has not reached), kept to
/// be handled again later, within bounds that honest peers stay below, so that a peer cannot fill
/// the worker's memory: a number of messages, and a number of tensor bytes from any one peer.
struct DeferredPeerMessages {
    private(set) var messages: [(envelope: Envelope, sender: UInt32)] = []
    /// Tensor bytes of the kept messages, by sender.
    private(set) var bytes: [UInt32: Int] = [:]
    /// The most tensor bytes kept from one peer.
    let bytesPerPeer: Int

    /// Messages of peers training a model of `leafLength` values (parameters and state) in
    /// `microBatchesPerStep` micro-batches a step, each peer held to `bound(...)`.
    init(leafLength: Int, microBatchesPerStep: Int) {
        bytesPerPeer = Self.bound(leafLength: leafLength, microBatchesPerStep: microBatchesPerStep)
    }

    /// The bound on one peer's bytes for a model of `leafLength` values (parameters and state)
    /// trained in `microBatchesPerStep` micro-batches a step. An honest peer is at most one step
    /// ahead of this worker, and has sent it no more than: its partial sums of that step (one
    /// node per micro-batch, and each micro-batch again as a backup copy, each at most the whole
    /// vector), the weights and optimiser state of the slices it hands over, and its owned
    /// slices' gradients (the vector again). The bound is twice that.
    static func bound(leafLength: Int, microBatchesPerStep: Int) -> Int {
        let vectors = 2 * microBatchesPerStep + 1 + mostOptimizerStateTensors + 1
        return 2 * vectors * leafLength * MemoryLayout<Float>.size
    }

    /// The most state tensors any optimiser keeps per parameter (Adam's two moments, and one spare).
    static let mostOptimizerStateTensors = 3

    /// Keeps `envelope` unless that would pass `messageLimit` messages, or this sender's byte
    /// bound; whether it was kept.
    mutating func keep(_ envelope: Envelope, from sender: UInt32, messageLimit: Int) -> Bool {
        let size = WireCodec.tensors(of: envelope.message).reduce(0) { $0 + $1.byteCount }
        guard messages.count < messageLimit, bytes[sender, default: 0] + size <= bytesPerPeer else { return false }
        messages.append((envelope, sender))
        bytes[sender, default: 0] += size
        return true
    }

    /// The kept messages, in the order they came, which are then no longer kept.
    mutating func take() -> [(envelope: Envelope, sender: UInt32)] {
        defer {
            messages.removeAll()
            bytes.removeAll()
        }
        return messages
    }
}
