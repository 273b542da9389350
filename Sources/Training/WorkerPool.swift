import Wire

/// What the coordinator knows of one worker.
final class WorkerRecord {
    let id: UInt32
    let peer: PeerID
    let name: String
    let threads: Int
    var lastHeard: Double
    var lastSent: Double = 0
    /// The step whose weights the worker holds, if any.
    var weightsVersion: Int?
    /// Micro-batches of the current task given to it and not yet received from anyone.
    var outstanding: Set<Int> = []
    /// Every micro-batch of the current task it was ever given (what it may send).
    var assignedThisTask: Set<Int> = []
    var microBatchesDone = 0
    private var windowStart = 0.0
    private var messagesInWindow = 0

    /// Counts a message; returns how many arrived in the current one-second window.
    func countMessage(now: Double) -> Int {
        if now - windowStart >= 1 {
            windowStart = now
            messagesInWindow = 0
        }
        messagesInWindow += 1
        return messagesInWindow
    }

    init(id: UInt32, peer: PeerID, name: String, threads: Int, now: Double) {
        self.id = id
        self.peer = peer
        self.name = name
        self.threads = threads
        lastHeard = now
    }

    var label: String { "w\(id) (\(name))" }
}

/// The live workers, and how a task's micro-batches are cut among them.
struct WorkerPool {
    private(set) var workers: [PeerID: WorkerRecord] = [:]
    private var nextID: UInt32 = 0

    var count: Int { workers.count }
    var all: [WorkerRecord] { workers.values.sorted { $0.id < $1.id } }

    subscript(peer: PeerID) -> WorkerRecord? { workers[peer] }

    mutating func add(peer: PeerID, name: String, threads: Int, now: Double) -> WorkerRecord {
        let record = WorkerRecord(id: nextID, peer: peer, name: name, threads: max(1, threads), now: now)
        nextID += 1
        workers[peer] = record
        return record
    }

    @discardableResult
    mutating func remove(_ peer: PeerID) -> WorkerRecord? {
        workers.removeValue(forKey: peer)
    }

    /// Cuts `microBatches` (in order) into contiguous runs, one per worker, sized by threads.
    /// Contiguous runs line up with the reduction tree, so workers send few, large partial sums.
    static func split(_ microBatches: [Int], among workers: [WorkerRecord]) -> [(WorkerRecord, [Int])] {
        guard !workers.isEmpty, !microBatches.isEmpty else { return [] }
        let totalThreads = workers.reduce(0) { $0 + $1.threads }
        var result: [(WorkerRecord, [Int])] = []
        var start = 0
        var threadsSoFar = 0
        for worker in workers {
            threadsSoFar += worker.threads
            let end = microBatches.count * threadsSoFar / totalThreads
            if end > start { result.append((worker, Array(microBatches[start..<end]))) }
            start = end
        }
        return result
    }
}
