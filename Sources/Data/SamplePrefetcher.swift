import Foundation

/// Background preparation of the samples a worker will copy next: `prefetch` is told the
/// micro-batches of a step ahead of time and makes their samples on a background thread, at most
/// `depth` micro-batches ahead of the ones taken; `take` hands a prepared sample over (waiting if
/// it is being made) or says it was not asked for. A sample is a pure function of (index, seed,
/// epoch), so whether it was prefetched never changes its bits; memory stays at `depth`
/// micro-batches.
final class SamplePrefetcher: @unchecked Sendable {
    // Sendable: every access to `entries` and `queued` holds `condition`'s lock.
    private struct Key: Hashable {
        let index: Int, epoch: Int, seed: UInt64
    }

    private enum Entry {
        case pending
        case ready([Float])
    }

    let depth: Int
    private let condition = NSCondition()
    private var entries: [Key: Entry] = [:]
    /// Micro-batches announced but not yet started, in order.
    private var queued: [(indices: [Int], seed: UInt64, epoch: Int)] = []
    private var running = false
    private var taken = 0

    /// How many samples are made and waiting to be taken.
    var samplesReady: Int {
        condition.lock(); defer { condition.unlock() }
        return entries.values.filter { if case .ready = $0 { return true } else { return false } }.count
    }

    /// How many samples `take` has handed over so far (for tests and reports).
    var samplesTaken: Int { condition.lock(); defer { condition.unlock() }; return taken }
    private let make: @Sendable (Int, UInt64, Int, UnsafeMutablePointer<Float>) -> Void
    private let sampleSize: Int

    /// `make(index, seed, epoch, output)` writes one sample of `sampleSize` floats.
    init(depth: Int, sampleSize: Int, make: @escaping @Sendable (Int, UInt64, Int, UnsafeMutablePointer<Float>) -> Void) {
        self.depth = depth
        self.sampleSize = sampleSize
        self.make = make
    }

    /// Announces the micro-batches that will be copied next, in the order they will be; anything
    /// announced before and not yet taken is forgotten.
    func prefetch(_ batches: [[Int]], seed: UInt64, epoch: Int) {
        guard depth > 0, !batches.isEmpty else { return }
        condition.lock()
        // Samples made for an older announcement that nobody took (work given to another worker, a
        // step cut short) are dropped; ones being made stay, as a copier may be waiting for them.
        queued = batches.map { ($0, seed, epoch) }
        entries = entries.filter { if case .pending = $0.value { return true } else { return false } }
        condition.broadcast()
        let start = !running
        running = true
        condition.unlock()
        if start { Thread.detachNewThread { [self] in work() } }
    }

    /// The prepared sample, or nil when it was never announced (the caller makes it itself).
    func take(_ index: Int, seed: UInt64, epoch: Int, into output: UnsafeMutablePointer<Float>) -> Bool {
        let key = Key(index: index, epoch: epoch, seed: seed)
        condition.lock()
        defer { condition.unlock() }
        while true {
            switch entries[key] {
            case nil:
                return false
            case .pending:
                condition.wait()
            case .ready(let values):
                values.withUnsafeBufferPointer { output.update(from: $0.baseAddress!, count: sampleSize) }
                entries[key] = nil
                taken += 1
                condition.broadcast()
                return true
            }
        }
    }

    /// The background thread: starts announced micro-batches while fewer than `depth` are made
    /// and not yet taken; stops when none are left.
    private func work() {
        while true {
            condition.lock()
            while !queued.isEmpty && entries.count >= depth * max(queued.first!.indices.count, 1) {
                condition.wait()
            }
            guard !queued.isEmpty else {
                running = false
                condition.unlock()
                return
            }
            let batch = queued.removeFirst()
            let keys = batch.indices.map { Key(index: $0, epoch: batch.epoch, seed: batch.seed) }
            var mine: [Key] = []
            for key in keys where entries[key] == nil {
                entries[key] = .pending
                mine.append(key)
            }
            condition.unlock()
            for key in mine {
                var values = [Float](repeating: 0, count: sampleSize)
                values.withUnsafeMutableBufferPointer { make(key.index, key.seed, key.epoch, $0.baseAddress!) }
                condition.lock()
                entries[key] = .ready(values)
                condition.broadcast()
                condition.unlock()
            }
        }
    }
}
