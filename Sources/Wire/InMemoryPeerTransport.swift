import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Workers of one process that exchange peer messages through memory, for tests of the logic
/// above `PeerTransport`: each message is encoded to its wire frames and decoded with the
/// receiver's limits on the way (checksums and limits apply, a malformed message arrives as a
/// failed result), and the sender's id is the one it registered with, as a CURVE key would prove.
/// Transports of one hub may be used from different threads, each transport from one.
public final class InMemoryPeerHub: @unchecked Sendable {
    // Sendable: every field is read and written under `condition`'s lock.
    private let condition = NSCondition()
    private var queues: [UInt32: [(sender: UInt32, frames: [[UInt8]])]] = [:]

    public init() {}

    /// Registers worker `workerID` and returns its transport. Throws when that id is already
    /// registered (close the old transport first).
    public func transport(workerID: UInt32, limits: DecodeLimits = .default) throws -> InMemoryPeerTransport {
        condition.lock()
        defer { condition.unlock() }
        guard queues[workerID] == nil else {
            throw ZMQError(operation: "in-memory peer hub register", code: EADDRINUSE,
                           message: "worker \(workerID) is already registered", hint: "close its transport first")
        }
        queues[workerID] = []
        return InMemoryPeerTransport(hub: self, workerID: workerID, limits: limits)
    }

    fileprivate func unregister(_ workerID: UInt32) {
        condition.lock()
        queues[workerID] = nil
        condition.unlock()
    }

    fileprivate func deliver(_ frames: [[UInt8]], from sender: UInt32, to receiver: UInt32) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard queues[receiver] != nil else { return false }
        queues[receiver]!.append((sender, frames))
        condition.broadcast()
        return true
    }

    fileprivate func take(for receiver: UInt32, deadline: Date?) -> (sender: UInt32, frames: [[UInt8]])? {
        condition.lock()
        defer { condition.unlock() }
        while queues[receiver]?.isEmpty ?? false {
            if let deadline {
                if !condition.wait(until: deadline) { break }
            } else {
                condition.wait()
            }
        }
        guard let queue = queues[receiver], !queue.isEmpty else { return nil }
        return queues[receiver]!.removeFirst()
    }
}

/// One worker's side of an `InMemoryPeerHub`. `setPeers` decides, as on a `PeerMesh`, whom it
/// may send to and whose messages it takes (others are dropped and counted); endpoints and keys
/// of the peers are not used.
public final class InMemoryPeerTransport: PeerTransport {
    /// The worker this transport speaks for.
    public let workerID: UInt32
    /// What received messages may announce before the decoder rejects them.
    public let limits: DecodeLimits
    public private(set) var bytesSent = 0
    public private(set) var bytesReceived = 0
    /// Messages dropped because their sender is not a current peer.
    public private(set) var droppedMessages = 0
    /// The current peers, by worker id.
    public private(set) var peers: [PeerAddress] = []
    private let hub: InMemoryPeerHub
    private var peerIDs: Set<UInt32> = []
    private var closed = false

    fileprivate init(hub: InMemoryPeerHub, workerID: UInt32, limits: DecodeLimits) {
        self.hub = hub
        self.workerID = workerID
        self.limits = limits
    }

    deinit { close() }

    /// A name for logs; in-memory transports listen nowhere.
    public var endpoint: String { "inmemory://worker-\(workerID)" }

    public func setPeers(_ peers: [PeerAddress]) throws {
        try checkOpen("set peers")
        // Keys may be given or not: there is no handshake to check them against.
        let table = try validatedPeers(peers.map { PeerAddress(workerID: $0.workerID, endpoint: $0.endpoint) },
                                       selfID: workerID, keysRequired: false, operation: "in-memory set peers")
        peerIDs = Set(table.keys)
        self.peers = peers.filter { $0.workerID != workerID }.sorted { $0.workerID < $1.workerID }
    }

    public func send(_ envelope: Envelope, to worker: UInt32) throws {
        let operation = "send \(envelope.message.typeName) to worker \(worker)"
        try checkOpen(operation)
        guard peerIDs.contains(worker) else {
            throw ZMQError(operation: operation, code: EHOSTUNREACH, message: "worker \(worker) is not a peer of worker \(workerID)",
                           hint: "send only to the workers of the last setPeers")
        }
        let frames = WireCodec.encodeToBytes(envelope)
        guard hub.deliver(frames, from: workerID, to: worker) else {
            throw ZMQError(operation: operation, code: EHOSTUNREACH, message: "worker \(worker) is not connected to the hub")
        }
        bytesSent += frames.reduce(0) { $0 + $1.count }
    }

    public func receive(timeoutMilliseconds: Int) throws -> PeerIncoming? {
        try checkOpen("receive from peers")
        let deadline = timeoutMilliseconds < 0 ? nil : Date(timeIntervalSinceNow: Double(timeoutMilliseconds) / 1000)
        while let (sender, frames) = hub.take(for: workerID, deadline: deadline) {
            bytesReceived += frames.reduce(0) { $0 + $1.count }
            guard peerIDs.contains(sender) else {
                droppedMessages += 1
                continue
            }
            do {
                return PeerIncoming(sender: sender, result: .success(try WireCodec.decode(bytes: frames, limits: limits)))
            } catch {
                return PeerIncoming(sender: sender, result: .failure(error))
            }
        }
        return nil
    }

    /// Leaves the hub: messages to this worker then fail as to a vanished peer. Safe to call twice.
    public func close() {
        guard !closed else { return }
        closed = true
        hub.unregister(workerID)
    }

    private func checkOpen(_ operation: String) throws {
        guard closed else { return }
        throw ZMQError(operation: operation, code: ENOTSOCK, message: "the in-memory transport of worker \(workerID) is closed")
    }
}
