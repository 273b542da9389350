import Wire

/// What the coordinator knows of one worker's connection; who computes what is the
/// `StepScheduler`'s to know.
final class WorkerRecord {
    let id: UInt32
    let peer: PeerID
    let name: String
    let host: String
    /// Threads as the worker claimed them (the scheduler counts at most `StepScheduler.maximumThreads`).
    let threads: Int
    var lastSent: Double = 0
    /// The step whose weights the worker holds, if any.
    var weightsVersion: Int?
    /// Micro-batches it delivered over the run (backup copies included).
    var microBatchesDone = 0
    /// Seconds from its first assignment to its last result in the last step it took part in.
    var lastStepSeconds: Double?
    /// When its hello was taken.
    var joinedAt: Double = 0
    /// Its process id on its host, as its hello said (with the host and name, one process).
    var processID: Int32 = 0
    /// When anything last came from it.
    var lastHeard: Double = 0
    /// Whether anything but hellos came from it since its welcome.
    var heardSinceWelcome = false
    /// The welcome it was sent, for hellos that were already queued behind the first.
    var welcome: Welcome?

    init(id: UInt32, peer: PeerID, name: String, host: String, threads: Int) {
        self.id = id
        self.peer = peer
        self.name = name
        self.host = host
        self.threads = threads
    }

    var label: String { "w\(id) (\(name))" }

    func status(alive: Bool) -> WorkerStatus {
        WorkerStatus(id: id, name: name, host: host, threads: threads, alive: alive, microBatchesDone: microBatchesDone,
                     lastStepSeconds: lastStepSeconds)
    }
}

/// The live workers by connection and by id.
struct WorkerPool {
    private var byPeer: [PeerID: WorkerRecord] = [:]
    private var byID: [UInt32: WorkerRecord] = [:]
    private var nextID: UInt32 = 0

    var count: Int { byID.count }
    var all: [WorkerRecord] { byID.values.sorted { $0.id < $1.id } }

    subscript(peer: PeerID) -> WorkerRecord? { byPeer[peer] }
    subscript(id: UInt32) -> WorkerRecord? { byID[id] }

    mutating func add(peer: PeerID, name: String, host: String, threads: Int) -> WorkerRecord {
        let record = WorkerRecord(id: nextID, peer: peer, name: name, host: host, threads: threads)
        nextID += 1
        byPeer[peer] = record
        byID[record.id] = record
        givenUp[peer] = nil
        return record
    }

    /// Connections whose worker this coordinator declared dead itself, and when: such a worker
    /// may well be alive (stopped for a while, cut off, slow) and keep talking until told to join
    /// again, which is no offence.
    private var givenUp: [PeerID: Double] = [:]
    /// How long a given-up connection is remembered, and how many at most (the oldest go first).
    static let givenUpMemory = 60.0
    static let givenUpLimit = 4096

    mutating func rememberGivenUp(_ peer: PeerID, at now: Double) {
        givenUp = givenUp.filter { now - $0.value < Self.givenUpMemory }
        if givenUp.count >= Self.givenUpLimit, let oldest = givenUp.min(by: { $0.value < $1.value }) {
            givenUp[oldest.key] = nil
        }
        givenUp[peer] = now
    }

    /// A connection evicted for what it sent is the peer's fault: it gets no such allowance.
    mutating func forgetGivenUp(_ peer: PeerID) {
        givenUp[peer] = nil
    }

    func wasGivenUp(_ peer: PeerID, at now: Double) -> Bool {
        guard let at = givenUp[peer] else { return false }
        return now - at < Self.givenUpMemory
    }

    @discardableResult
    func worker(id: UInt32) -> WorkerRecord? { byID[id] }

    mutating func remove(_ id: UInt32) -> WorkerRecord? {
        guard let record = byID.removeValue(forKey: id) else { return nil }
        byPeer[record.peer] = nil
        return record
    }
}
