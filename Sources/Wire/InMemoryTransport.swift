import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Endpoints of one process that exchange messages through memory: each message is encoded to
/// its wire frames and decoded, with the receiver's limits, on the way, so everything above the
/// transport meets exactly what a socket would deliver (including rejected messages).
public final class InMemoryNetwork: @unchecked Sendable {
    // Sendable: every field is read and written under `condition`'s lock.
    private let condition = NSCondition()
    private var queues: [PeerID: [(from: PeerID, frames: [[UInt8]])]] = [:]

    public init() {}

    /// An endpoint named `identity`. With `connectedTo`, it behaves like a connected (DEALER)
    /// socket: it sends to that peer and receives without a sender. Without, it routes (ROUTER):
    /// sends need a peer, and received messages say who sent them.
    public func endpoint(_ identity: PeerID, connectedTo peer: PeerID? = nil, limits: DecodeLimits = .default) -> InMemoryTransport {
        condition.lock()
        defer { condition.unlock() }
        queues[identity] = queues[identity] ?? []
        return InMemoryTransport(network: self, identity: identity, connectedPeer: peer, limits: limits)
    }

    /// Removes an endpoint: messages to it fail as to a peer that disconnected.
    public func close(_ identity: PeerID) {
        condition.lock()
        queues[identity] = nil
        condition.unlock()
    }

    fileprivate func deliver(_ frames: [[UInt8]], from sender: PeerID, to receiver: PeerID) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard queues[receiver] != nil else { return false }
        queues[receiver]!.append((sender, frames))
        condition.broadcast()
        return true
    }

    fileprivate func take(for receiver: PeerID, timeoutMilliseconds: Int) -> (from: PeerID, frames: [[UInt8]])? {
        let deadline = Date(timeIntervalSinceNow: Double(max(timeoutMilliseconds, 0)) / 1000)
        condition.lock()
        defer { condition.unlock() }
        while queues[receiver]?.isEmpty ?? true {
            if timeoutMilliseconds == 0 { return nil }
            if timeoutMilliseconds < 0 {
                condition.wait()
            } else if !condition.wait(until: deadline) {
                break
            }
        }
        guard let queue = queues[receiver], !queue.isEmpty else { return nil }
        return queues[receiver]!.removeFirst()
    }
}

/// One endpoint of an `InMemoryNetwork`.
public final class InMemoryTransport: MessageTransport {
    public let identity: PeerID
    private let network: InMemoryNetwork
    private let connectedPeer: PeerID?
    private let limits: DecodeLimits
    public private(set) var bytesSent = 0
    public private(set) var bytesReceived = 0

    fileprivate init(network: InMemoryNetwork, identity: PeerID, connectedPeer: PeerID?, limits: DecodeLimits) {
        self.network = network
        self.identity = identity
        self.connectedPeer = connectedPeer
        self.limits = limits
    }

    public func send(_ envelope: Envelope, to peer: PeerID?) throws {
        guard let destination = peer ?? connectedPeer else {
            throw ZMQError(operation: "send \(envelope.message.typeName)", code: EINVAL, message: "a routing endpoint needs a peer to send to")
        }
        let frames = WireCodec.encodeToBytes(envelope)
        guard network.deliver(frames, from: identity, to: destination) else {
            throw ZMQError(operation: "send \(envelope.message.typeName)", code: EHOSTUNREACH, message: "\(destination) is not connected")
        }
        bytesSent += frames.reduce(0) { $0 + $1.count }
    }

    public func receive(timeoutMilliseconds: Int) throws -> Incoming? {
        guard let (sender, frames) = network.take(for: identity, timeoutMilliseconds: timeoutMilliseconds) else { return nil }
        bytesReceived += frames.reduce(0) { $0 + $1.count }
        let peer = connectedPeer == nil ? sender : nil
        do {
            return Incoming(peer: peer, result: .success(try WireCodec.decode(bytes: frames, limits: limits)))
        } catch {
            return Incoming(peer: peer, result: .failure(error))
        }
    }
}
