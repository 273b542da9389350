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

/// Limits on what one peer of the coordinator's socket may send before it is evicted.
public struct PeerLimits: Sendable, Equatable {
    /// Messages per second one peer may send, sustained (`distributed.max_messages_per_second`).
    public var maxMessagesPerSecond: Double
    /// Malformed, misaddressed or refused messages one peer may send within a minute.
    public var maxStrikes: Int
    /// Seconds an evicted peer's messages are ignored.
    public var banSeconds: Double

    /// Limits with every bound given; the defaults suit any honest worker (a few messages per
    /// step plus heartbeats) with a wide margin.
    public init(maxMessagesPerSecond: Double = 2000, maxStrikes: Int = 20, banSeconds: Double = 60) {
        self.maxMessagesPerSecond = maxMessagesPerSecond
        self.maxStrikes = maxStrikes
        self.banSeconds = banSeconds
    }

    /// Messages one peer may send at once after a quiet spell (a worker started before its
    /// coordinator delivers its queued hellos together).
    public var messageBurst: Int { max(64, Int(maxMessagesPerSecond * 2)) }
}

/// Per-peer policing for the coordinator's socket: a message rate limit, strikes for bad
/// messages, and temporary bans for peers that exceed either. Memory is bounded: at most
/// `maximumTrackedPeers` peers are remembered (the longest silent is forgotten first).
///
/// Without CURVE a banned peer can come back under a new connection (a new routing id); with
/// CURVE only authorised keys get that far.
public final class PeerGuard {
    /// What to do with a message or an offence.
    public enum Verdict: Equatable, Sendable {
        /// Handle the message.
        case accept
        /// Drop it without a word: the peer is banned.
        case ignore
        /// Evict the peer now (declare it dead if it is a worker) and log the reason; its
        /// messages are ignored for `PeerLimits.banSeconds`.
        case evict(reason: String)
    }

    /// The result of `strike`.
    public struct StrikeOutcome: Equatable, Sendable {
        /// Evict, or carry on accepting.
        public var verdict: Verdict
        /// Log this offence (the first few per peer, then every 100th), so a flood cannot flood the log.
        public var shouldLog: Bool
        /// Answer the peer with an error message (only the first few), so a peer that does not
        /// read cannot make the coordinator fill its queue.
        public var shouldReply: Bool
        /// Offences of this peer so far.
        public var offences: Int
    }

    private struct Record {
        var tokens: Double
        var lastRefill: Double
        var lastSeen: Double
        var strikeTimes: [Double] = []
        var offences = 0
        var bannedUntil: Double?
        var ignored = 0
    }

    /// The limits in force.
    public let config: PeerLimits
    /// Most peers remembered at once.
    public let maximumTrackedPeers: Int
    private var records: [PeerID: Record] = [:]
    /// Strikes are counted over this window (seconds).
    public static let strikeWindow = 60.0
    /// Offences logged and answered in full per peer before the guard goes quiet.
    public static let loudOffences = 3

    /// A guard applying `config`.
    public init(config: PeerLimits, maximumTrackedPeers: Int = 4096) {
        self.config = config
        self.maximumTrackedPeers = max(1, maximumTrackedPeers)
    }

    /// Peers remembered now (bounded by `maximumTrackedPeers`).
    public var trackedPeers: Int { records.count }

    /// Call for every message received from `peer` (also malformed ones), before handling it.
    public func admit(_ peer: PeerID, now: Double) -> Verdict {
        var record = lookup(peer, now: now)
        defer { records[peer] = record }
        record.lastSeen = now
        if let until = record.bannedUntil {
            if now < until {
                record.ignored += 1
                return .ignore
            }
            record.bannedUntil = nil
            record.strikeTimes.removeAll()
            record.tokens = Double(config.messageBurst)
            record.lastRefill = now
        }
        record.tokens = min(Double(config.messageBurst), record.tokens + max(0, now - record.lastRefill) * config.maxMessagesPerSecond)
        record.lastRefill = now
        guard record.tokens >= 1 else {
            record.bannedUntil = now + config.banSeconds
            return .evict(reason: "sent more than \(Int(config.maxMessagesPerSecond)) messages per second "
                + "(distributed.max_messages_per_second); its messages are ignored for \(Int(config.banSeconds)) s")
        }
        record.tokens -= 1
        return .accept
    }

    /// Records an offence by `peer` (a malformed message, one for another run or step, results
    /// refused). Evicts after `maxStrikes` within a minute.
    public func strike(_ peer: PeerID, reason: String, now: Double) -> StrikeOutcome {
        var record = lookup(peer, now: now)
        defer { records[peer] = record }
        record.lastSeen = now
        record.offences += 1
        record.strikeTimes.removeAll { now - $0 > Self.strikeWindow }
        record.strikeTimes.append(now)
        let loud = record.offences <= Self.loudOffences || record.offences % 100 == 0
        if record.bannedUntil == nil, record.strikeTimes.count >= config.maxStrikes {
            record.bannedUntil = now + config.banSeconds
            record.strikeTimes.removeAll()
            return StrikeOutcome(
                verdict: .evict(reason: "sent \(config.maxStrikes) bad messages within \(Int(Self.strikeWindow)) s (max_strikes), "
                    + "the last: \(reason); its messages are ignored for \(Int(config.banSeconds)) s"),
                shouldLog: true, shouldReply: false, offences: record.offences)
        }
        return StrikeOutcome(verdict: record.bannedUntil == nil ? .accept : .ignore, shouldLog: loud,
                             shouldReply: record.offences <= Self.loudOffences, offences: record.offences)
    }

    /// Bans `peer` at once (for `banSeconds`), for what needs no second chance: a peer whose
    /// queue is full because it does not read what it is sent.
    public func ban(_ peer: PeerID, now: Double) {
        var record = lookup(peer, now: now)
        record.lastSeen = now
        record.bannedUntil = now + config.banSeconds
        records[peer] = record
    }

    /// True while `peer`'s messages are ignored.
    public func isBanned(_ peer: PeerID, now: Double) -> Bool {
        guard let until = records[peer]?.bannedUntil else { return false }
        return now < until
    }

    /// Forgets a peer that left cleanly (keeps bans: a banned peer is not forgotten early).
    public func forget(_ peer: PeerID) {
        if records[peer]?.bannedUntil == nil { records[peer] = nil }
    }

    private func lookup(_ peer: PeerID, now: Double) -> Record {
        if let record = records[peer] { return record }
        if records.count >= maximumTrackedPeers {
            // Forget the longest silent peer; a banned one is kept while another can go.
            let victim = records.min { a, b in
                let aBanned = (a.value.bannedUntil ?? 0) > now, bBanned = (b.value.bannedUntil ?? 0) > now
                if aBanned != bBanned { return !aBanned }
                return a.value.lastSeen < b.value.lastSeen
            }
            if let victim { records[victim.key] = nil }
        }
        return Record(tokens: Double(config.messageBurst), lastRefill: now, lastSeen: now)
    }
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
