import CNN
import Wire

/// What the coordinator does with a gradient that holds NaN or an infinity.
public enum NonFinitePolicy: String, Sendable, CaseIterable, Equatable {
    /// Refuse it and compute its micro-batches again on another worker; stop only when every
    /// live worker got a non-finite result for the same micro-batch (then the model diverged).
    case recompute
    /// Refuse it and stop the run with a report naming the worker, the step and the layer.
    case stop
}

/// Where the first non-finite value of a flat gradient (parameters, then state observations)
/// lies: which named tensor, which element, and how many such values there are in all.
public struct NonFiniteFinding: Sendable, Equatable, CustomStringConvertible {
    /// The tensor's name as in checkpoints (`3.weight`, `1.running_mean`).
    public var tensorName: String
    /// True when it is a state observation (BatchNorm statistics), not a parameter gradient.
    public var isState: Bool
    /// The tensor's shape.
    public var shape: [Int]
    /// The element's position within the tensor (row-major).
    public var index: Int
    /// Its position in the flat gradient.
    public var flatIndex: Int
    /// The value found (NaN, +Inf or -Inf).
    public var value: Float
    /// Non-finite values in the whole gradient.
    public var count: Int

    /// A finding with every field given.
    public init(tensorName: String, isState: Bool, shape: [Int], index: Int, flatIndex: Int, value: Float, count: Int) {
        self.tensorName = tensorName
        self.isState = isState
        self.shape = shape
        self.index = index
        self.flatIndex = flatIndex
        self.value = value
        self.count = count
    }

    /// The element as `name[i, j, ...]`.
    public var location: String {
        var remainder = index
        var coordinates = [Int](repeating: 0, count: shape.count)
        for axis in shape.indices.reversed() where shape[axis] > 0 {
            coordinates[axis] = remainder % shape[axis]
            remainder /= shape[axis]
        }
        return "\(tensorName)[\(coordinates.map(String.init).joined(separator: ", "))]"
    }

    /// Like `NaN at 0.weight[3, 0, 1, 2] (12 non-finite values in all)`.
    public var description: String {
        let what = value.isNaN ? "NaN" : (value > 0 ? "+Inf" : "-Inf")
        let kind = isState ? " (a batch statistic)" : ""
        return "\(what) at \(location)\(kind) (\(count) non-finite value\(count == 1 ? "" : "s") in all)"
    }

    /// The first non-finite value of `values`, laid out as `parameterSlots` then `stateSlots`
    /// (whose offsets count from `parameterCount`); nil when every value is finite. A value past
    /// every slot is reported under the name "(beyond the model)".
    public static func locate(in values: UnsafeBufferPointer<Float>, parameterSlots: [TensorSlot], stateSlots: [TensorSlot],
                              parameterCount: Int) -> NonFiniteFinding? {
        var first: Int?
        var count = 0
        for (position, value) in values.enumerated() where !value.isFinite {
            if first == nil { first = position }
            count += 1
        }
        guard let flat = first else { return nil }
        for slot in parameterSlots where (slot.offset..<slot.offset + slot.count).contains(flat) {
            return NonFiniteFinding(tensorName: slot.name, isState: false, shape: slot.shape, index: flat - slot.offset,
                                    flatIndex: flat, value: values[flat], count: count)
        }
        for slot in stateSlots where (parameterCount + slot.offset..<parameterCount + slot.offset + slot.count).contains(flat) {
            return NonFiniteFinding(tensorName: slot.name, isState: true, shape: slot.shape, index: flat - parameterCount - slot.offset,
                                    flatIndex: flat, value: values[flat], count: count)
        }
        return NonFiniteFinding(tensorName: "(beyond the model)", isState: false, shape: [values.count], index: flat,
                                flatIndex: flat, value: values[flat], count: count)
    }

    /// The first non-finite value of a gradient of `network` (its leaf layout).
    public static func locate(in values: UnsafeBufferPointer<Float>, network: Network) -> NonFiniteFinding? {
        locate(in: values, parameterSlots: network.parameterSlots, stateSlots: network.stateSlots, parameterCount: network.parameterCount)
    }
}

/// A run stopped because of non-finite gradients: the report names the worker(s), the step and
/// the layer. A runtime failure (exit code 1), not a usage error.
public struct NonFiniteGradientError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// Applies the `NonFinitePolicy` over a step: remembers which workers got non-finite results
/// for which micro-batches, keeps those micro-batches away from them, and says when to stop.
public final class NonFiniteGuard {
    /// What to do after a non-finite gradient.
    public enum Decision: Equatable, Sendable {
        /// Give the micro-batches to other workers; the text is the warning to log.
        case recompute(String)
        /// Stop the run; the text is the report (throw it as `NonFiniteGradientError`).
        case stop(String)
    }

    /// The policy applied.
    public let policy: NonFinitePolicy
    private var step = -1
    /// Per micro-batch of `step`: the workers whose results for it were non-finite.
    private var failed: [Int: Set<UInt32>] = [:]
    private var failedLabels: [Int: [String]] = [:]

    /// A guard applying `policy`.
    public init(policy: NonFinitePolicy) {
        self.policy = policy
    }

    /// Records that `workerLabel` (id `workerID`) sent a non-finite gradient for `microBatches`
    /// of `step`, and decides. `aliveWorkerIDs` are the workers alive now (with this one, if it
    /// is still in the pool).
    public func record(step: Int, microBatches: [Int], workerID: UInt32, workerLabel: String, finding: NonFiniteFinding,
                       aliveWorkerIDs: Set<UInt32>) -> Decision {
        if step != self.step { reset(step: step) }
        let batches = microBatches.sorted()
        let what = "step \(step): worker \(workerLabel) sent a gradient with \(finding) for micro-batches \(listed(batches))"
        if policy == .stop {
            return .stop("\(what); stopping because distributed.nonfinite_gradients is 'stop'. The weights of step \(step) were not updated. "
                + "If the run diverged, lower train.optimizer.lr or add a warmup schedule; to recompute such micro-batches on "
                + "other workers instead, set distributed.nonfinite_gradients: recompute")
        }
        var exhausted: [Int] = []
        for batch in batches {
            failed[batch, default: []].insert(workerID)
            failedLabels[batch, default: []].append(workerLabel)
            if aliveWorkerIDs.isSubset(of: failed[batch]!) { exhausted.append(batch) }
        }
        if let batch = exhausted.first {
            let workers = failedLabels[batch]!.joined(separator: ", ")
            return .stop("step \(step): micro-batch \(batch) gave a non-finite gradient on every worker that computed it "
                + "(\(workers)); the last had \(finding). Computation is deterministic, so the model itself diverged: start again "
                + "with a lower train.optimizer.lr or a warmup schedule (or --init from the last checkpoint's model.safetensors)")
        }
        return .recompute("\(what); refused, and those micro-batches go to other workers (distributed.nonfinite_gradients: recompute)")
    }

    /// Workers that must not be given `microBatch` of `step` again.
    public func excludedWorkers(step: Int, microBatch: Int) -> Set<UInt32> {
        guard step == self.step else { return [] }
        return failed[microBatch] ?? []
    }

    /// Forgets everything recorded for steps before `step`.
    public func reset(step: Int) {
        self.step = step
        failed.removeAll()
        failedLabels.removeAll()
    }

    /// How `split(_:among:step:)` would cut `microBatches` among workers given as ids and thread
    /// counts (the coordinator's own records stay internal).
    public func split(_ microBatches: [Int], amongWorkers workers: [(id: UInt32, threads: Int)], step: Int) -> [(id: UInt32, microBatches: [Int])] {
        let records = workers.map { WorkerRecord(id: $0.id, peer: PeerID(bytes: [1]), name: "", threads: $0.threads, now: 0) }
        return split(microBatches, among: records, step: step).map { ($0.0.id, $0.1) }
    }

    /// `WorkerPool.split`, except that no worker gets a micro-batch it already failed in this
    /// step; such micro-batches go to the least-loaded worker that may take them, or stay
    /// unassigned (for a worker yet to join) when none may.
    func split(_ microBatches: [Int], among workers: [WorkerRecord], step: Int) -> [(WorkerRecord, [Int])] {
        guard step == self.step, !failed.isEmpty else { return WorkerPool.split(microBatches, among: workers) }
        var pieces = WorkerPool.split(microBatches, among: workers)
        var leftover: [Int] = []
        for position in pieces.indices {
            let id = pieces[position].0.id
            let (kept, excluded) = pieces[position].1.reduce(into: ([Int](), [Int]())) { parts, batch in
                if failed[batch]?.contains(id) == true { parts.1.append(batch) } else { parts.0.append(batch) }
            }
            leftover += excluded
            pieces[position].1 = kept
        }
        for batch in leftover.sorted() {
            let eligible = workers.filter { failed[batch]?.contains($0.id) != true }
            guard let target = eligible.min(by: { load(of: $0, in: pieces) < load(of: $1, in: pieces) }) else { continue }
            if let position = pieces.firstIndex(where: { $0.0 === target }) {
                pieces[position].1.append(batch)
                pieces[position].1.sort()
            } else {
                pieces.append((target, [batch]))
            }
        }
        return pieces.filter { !$0.1.isEmpty }
    }

    private func load(of worker: WorkerRecord, in pieces: [(WorkerRecord, [Int])]) -> Double {
        Double(pieces.first { $0.0 === worker }?.1.count ?? 0) / Double(worker.threads)
    }

    private func listed(_ values: [Int]) -> String {
        values.count <= 8 ? "\(values)" : "[\(values.prefix(8).map(String.init).joined(separator: ", ")), … +\(values.count - 8)]"
    }
}
