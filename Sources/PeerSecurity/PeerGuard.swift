import Wire

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
        if record.bannedUntil == nil, record.strikeTimes.count >= config.maxStrikes {
            record.bannedUntil = now + config.banSeconds
            record.strikeTimes.removeAll()
            return StrikeOutcome(
                verdict: .evict(reason: "sent \(config.maxStrikes) bad messages within \(Int(Self.strikeWindow)) s (max_strikes), "
                    + "the last: \(reason); its messages are ignored for \(Int(config.banSeconds)) s"),
                shouldLog: true, shouldReply: false, offences: record.offences)
        }
        return Self.outcome(of: record)
    }

    /// Records a message an honest worker sends in the normal course of a fault: one of an
    /// earlier run (its coordinator restarted), or from a connection the coordinator does not
    /// know (the worker reconnected after being given up on). It is answered and logged like an
    /// offence, only the first few times, but never counts towards eviction: a worker can send
    /// dozens of them before it reads the answer, and banned it could not join again for
    /// `banSeconds`. The message rate limit still bounds a peer that sends nothing else.
    public func misdirected(_ peer: PeerID, now: Double) -> StrikeOutcome {
        var record = lookup(peer, now: now)
        defer { records[peer] = record }
        record.lastSeen = now
        record.offences += 1
        return Self.outcome(of: record)
    }

    /// Accept unless banned; log the first few offences and then every 100th, answer the first few.
    private static func outcome(of record: Record) -> StrikeOutcome {
        StrikeOutcome(verdict: record.bannedUntil == nil ? .accept : .ignore,
                      shouldLog: record.offences <= loudOffences || record.offences % 100 == 0,
                      shouldReply: record.offences <= loudOffences, offences: record.offences)
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
