import Randomness

/// The order in which an epoch visits the samples: a pure function of (seed, epoch), so every
/// process computes the same order and a resumed run continues it without saved state.
public enum DataOrder {
    /// The sample indices for one epoch: file order when `shuffle` is false, otherwise a
    /// permutation keyed by (seed, `.dataOrder`, epoch), different for every epoch.
    public static func epochOrder(count: Int, seed: UInt64, epoch: Int, shuffle: Bool) -> [Int] {
        guard shuffle else { return Array(0..<max(count, 0)) }
        return CounterRandom.permutation(
            count: max(count, 0), seed: seed, purpose: .dataOrder, UInt64(truncatingIfNeeded: epoch))
    }
}
