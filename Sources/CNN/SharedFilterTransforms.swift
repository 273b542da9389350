#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Winograd's transformed filters (U, a function of the weights alone), and dense layers'
/// weights rounded to bf16 (`Precision.bf16`), kept once for every model replica that reads the
/// same weights, instead of once per replica and pass.
///
/// Replicas of one model computing on different threads read one copy of the weights, so their
/// convolutions would each compute and keep the same U: AlexNet's three 13x13 layers hold 47 MiB
/// of it, per replica. Networks of one spec bound to the same `SharedFilterTransforms`
/// (`Network.share(filterTransforms:)`) keep it here instead: the first replica to reach a layer
/// computes its U, a replica arriving meanwhile waits for it (it would have computed the same),
/// and every later pass reads it until `invalidate()`.
///
/// The holder of the weights promises what makes this correct: it calls `invalidate()` whenever
/// the weights may have changed (an optimiser step, new weights loaded, the replicas pointed at
/// other memory), and never while a replica computes. `MicroBatchEngine` does so at the start of
/// every `compute`.
public final class SharedFilterTransforms: @unchecked Sendable {
    // Sendable: slots are only created and invalidated while no replica computes; during a
    // computation each slot's lock orders the one write of U before every read.

    /// One convolution's U, shared by that convolution in every replica.
    final class Slot: @unchecked Sendable {
        private let lock = PThreadMutex()
        private let transformed = FloatBuffer()
        /// The Winograd tile size U was computed for, or nil when it must be computed again.
        private var currentTile: Int?

        /// U for the tile of `outputSize`: the one already computed, or the one `transform`
        /// writes into the buffer it is given now (growing it with `reserve`).
        func transformed(tileOutputSize: Int, transform: (FloatBuffer) -> Void) -> UnsafePointer<Float> {
            lock.lock()
            defer { lock.unlock() }
            if currentTile != tileOutputSize {
                transform(transformed)
                currentTile = tileOutputSize
            }
            return UnsafePointer(transformed.pointer)
        }

        private let rounded = BFloat16Buffer()
        private var hasRounded = false

        /// `count` weights rounded to bf16: the ones already rounded, or `weights` rounded now.
        func roundedWeights(_ weights: UnsafePointer<Float>, count: Int) -> UnsafePointer<UInt16> {
            lock.lock()
            defer { lock.unlock() }
            if !hasRounded {
                BFloat16.round(weights, into: rounded.reserve(count), count: count)
                hasRounded = true
            }
            return UnsafePointer(rounded.pointer)
        }

        func invalidate() {
            lock.lock()
            currentTile = nil
            hasRounded = false
            lock.unlock()
        }

        var capacity: Int { transformed.capacity }
    }

    private var slots: [Slot] = []
    private var roundingSlots: [Slot] = []

    /// Empty: slots appear as networks are bound.
    public init() {}

    /// The slot of the `ordinal`-th Winograd-capable convolution of a network, in the order
    /// `Network.share(filterTransforms:)` visits them (the same in every network of one spec).
    func slot(_ ordinal: Int) -> Slot {
        while slots.count <= ordinal { slots.append(Slot()) }
        return slots[ordinal]
    }

    /// The slot of the `ordinal`-th dense layer of a network, for its weights rounded to bf16.
    func roundingSlot(_ ordinal: Int) -> Slot {
        while roundingSlots.count <= ordinal { roundingSlots.append(Slot()) }
        return roundingSlots[ordinal]
    }

    /// Forgets every transform and rounding, so that each is computed again from the weights on
    /// its next use. Call it whenever the weights may have changed, and never while a bound
    /// network computes.
    public func invalidate() {
        for slot in slots + roundingSlots { slot.invalidate() }
    }

    /// Floats of room the transforms hold, for memory accounting and tests.
    public var capacity: Int { slots.reduce(0) { $0 + $1.capacity } }
}

/// A pthread mutex on the heap: a `pthread_mutex_t` must not move once in use.
final class PThreadMutex: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func lock() { pthread_mutex_lock(mutex) }
    func unlock() { pthread_mutex_unlock(mutex) }
}
