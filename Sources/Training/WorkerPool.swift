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
        return record
    }

    @discardableResult
    mutating func remove(_ id: UInt32) -> WorkerRecord? {
        guard let record = byID.removeValue(forKey: id) else { return nil }
        byPeer[record.peer] = nil
        return record
    }
}
