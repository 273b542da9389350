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
        // Every result a worker sends or an owner reduces is scanned: the common case, all
        // finite, is one branch-free pass, and only a hit pays for the search below.
        guard containsNonFinite(values) else { return nil }
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

    /// Whether any value is infinite or NaN. A float is non-finite exactly when its exponent
    /// bits are all ones; adding one to that exponent field then carries into the sign bit, so
    /// OR-ing those sums over the values is a reduction the compiler vectorises (a loop over
    /// `isFinite` with a branch per value is not).
    public static func containsNonFinite(_ values: UnsafeBufferPointer<Float>) -> Bool {
        guard let base = values.baseAddress else { return false }
        return base.withMemoryRebound(to: UInt32.self, capacity: values.count) { bits in
            var flags: UInt32 = 0
            for index in 0..<values.count { flags |= (bits[index] & 0x7F80_0000) &+ 0x0080_0000 }
            return flags & 0x8000_0000 != 0
        }
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

/// Applies the `NonFinitePolicy` over a task: remembers which workers got non-finite results
/// for which micro-batches (so that the scheduler gives them to others), and says when to stop.
public final class NonFiniteGuard {
    /// What to do after a non-finite gradient.
    public enum Decision: Equatable, Sendable {
        /// Give the micro-batches to other workers; the text is the warning to log.
        case recompute(String)
        /// Stop the run; the text is the report.
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

    /// Records that `workerLabel` (id `workerID`) sent a non-finite result for `microBatches`
    /// of `step`, `finding` saying where (a `NonFiniteFinding`, or that the loss is not finite),
    /// and decides. `aliveWorkerIDs` are the workers alive now, this one included.
    public func record(step: Int, microBatches: [Int], workerID: UInt32, workerLabel: String, finding: String,
                       aliveWorkerIDs: Set<UInt32>) -> Decision {
        if step != self.step { reset(step: step) }
        let batches = microBatches.sorted()
        let what = "step \(step): worker \(workerLabel) sent a gradient with NaN or infinity for micro-batches \(listed(batches)): \(finding)"
        if policy == .stop {
            return .stop("\(what) (distributed.nonfinite_gradients: stop). The weights of step \(step) were not updated. "
                + "If the run diverged, lower train.optimizer.lr or add a warmup schedule; to recompute such micro-batches on "
                + "other workers instead, set distributed.nonfinite_gradients: recompute")
        }
        var exhausted: [Int] = []
        for batch in batches {
            failed[batch, default: []].insert(workerID)
            failedLabels[batch, default: []].append(workerLabel)
            if aliveWorkerIDs.union([workerID]).isSubset(of: failed[batch]!) { exhausted.append(batch) }
        }
        if let batch = exhausted.first {
            let workers = failedLabels[batch]!.joined(separator: ", ")
            return .stop("step \(step): micro-batch \(batch) gave a gradient with NaN or infinity on every live worker that "
                + "computed it (\(workers)); the last had \(finding). Computation is deterministic, so training diverged: "
                + "start again with a lower train.optimizer.lr or a warmup schedule (or --init from the last checkpoint's model.safetensors)")
        }
        return .recompute("\(what); recomputing them on another worker (distributed.nonfinite_gradients: recompute)")
    }

    /// Workers that must not be given `microBatch` of `step` again.
    public func excludedWorkers(step: Int, microBatch: Int) -> Set<UInt32> {
        guard step == self.step else { return [] }
        return failed[microBatch] ?? []
    }

    /// Forgets everything recorded before; `step` is the task now running.
    public func reset(step: Int) {
        self.step = step
        failed.removeAll()
        failedLabels.removeAll()
    }

    private func listed(_ values: [Int]) -> String {
        values.count <= 8 ? "\(values)" : "[\(values.prefix(8).map(String.init).joined(separator: ", ")), … +\(values.count - 8)]"
    }
}
