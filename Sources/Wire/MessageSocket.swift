#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The identity a ROUTER socket gives a connected peer (its routing id).
public struct PeerID: Hashable, Sendable, CustomStringConvertible {
    /// The routing id as libzmq reports it.
    public let bytes: [UInt8]

    /// A peer id from its bytes.
    public init(bytes: [UInt8]) { self.bytes = bytes }

    /// Printable ids (a name set with `setRoutingID`) as text, generated ones as hex.
    public var description: String {
        if !bytes.isEmpty, bytes.allSatisfy({ (0x21...0x7E).contains($0) }) {
            return "peer:" + String(decoding: bytes, as: UTF8.self)
        }
        return "peer:0x" + bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}

/// One received message: who sent it (ROUTER sockets only) and either the decoded envelope or why
/// it was rejected. A rejected message is reported, not thrown, so one bad peer cannot stop a
/// receive loop; the caller logs it and may answer with an `error` message.
public struct Incoming: Sendable {
    /// The sender on a ROUTER socket; nil on other kinds.
    public let peer: PeerID?
    /// The message, or why it was rejected.
    public let result: Result<Envelope, DecodeError>

    /// An incoming message (for tests and fakes of the socket).
    public init(peer: PeerID?, result: Result<Envelope, DecodeError>) {
        self.peer = peer
        self.result = result
    }
}

/// A socket that sends and receives `Envelope`s: encodes, frames (adding or removing the routing
/// id on ROUTER sockets), decodes and validates, and counts bytes. Single-threaded, like its socket.
public final class MessageSocket {
    /// The underlying socket, for options and polling.
    public let socket: ZMQSocket
    /// What received messages may announce before they are rejected.
    public let limits: DecodeLimits
    /// Bytes handed to the socket, all frames included.
    public private(set) var bytesSent = 0
    /// Bytes received, all frames included (also those of rejected messages; frames past the
    /// limit of an oversized message are dropped unread and uncounted).
    public private(set) var bytesReceived = 0

    /// Wraps `socket`, which keeps its options (set them before or after).
    public init(socket: ZMQSocket, limits: DecodeLimits = .default) {
        self.socket = socket
        self.limits = limits
    }

    /// Sends `envelope`; on a ROUTER socket to `peer` (required there, refused elsewhere).
    /// Tensors go without a copy, and the same payload may go to many peers.
    public func send(_ envelope: Envelope, to peer: PeerID? = nil) throws {
        var frames = WireCodec.encode(envelope)
        switch (socket.kind, peer) {
        case (.router, let peer?):
            frames.insert(.bytes(peer.bytes), at: 0)
        case (.router, nil):
            throw ZMQError(operation: "send \(envelope.message.typeName)", code: EINVAL,
                           message: "a ROUTER socket needs a peer to send to",
                           hint: "pass the peer of the message being answered (Incoming.peer)")
        case (_, let peer?):
            throw ZMQError(operation: "send \(envelope.message.typeName)", code: EINVAL,
                           message: "a \(socket.kind) socket cannot address \(peer); only ROUTER sockets route by peer",
                           hint: "send without a peer")
        case (_, nil):
            break
        }
        try socket.send(frames)
        bytesSent += frames.reduce(0) { $0 + $1.byteCount }
    }

    /// Receives one message, waiting up to `timeoutMilliseconds` (0 = do not wait, -1 = forever);
    /// nil on timeout. A malformed message comes back as a failed `result`.
    public func receive(timeoutMilliseconds: Int) throws -> Incoming? {
        let routed = socket.kind == .router
        let leading = routed ? 1 : 0
        // Keep one frame beyond the most a valid message has, so "too many" is still visible.
        let keep = leading + 2 + limits.maxTensorFrames + 1
        guard let (frames, total) = try socket.receive(timeoutMilliseconds: timeoutMilliseconds, keepingAtMost: keep) else {
            return nil
        }
        bytesReceived += frames.reduce(0) { $0 + $1.count }
        let peer = routed ? PeerID(bytes: frames[0].bytes) : nil
        if total > frames.count {
            return Incoming(peer: peer, result: .failure(.tooManyTensorFrames(count: total - leading - 2, limit: limits.maxTensorFrames)))
        }
        let body = Array(frames.dropFirst(leading))
        do {
            return Incoming(peer: peer, result: .success(try WireCodec.decode(body, limits: limits)))
        } catch {
            return Incoming(peer: peer, result: .failure(error))
        }
    }
}
