#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A peer worker: its id (the coordinator's numbering), where it listens, and its CURVE public
/// key (Z85) or nil on a plain run.
public struct PeerAddress: Equatable, Sendable, CustomStringConvertible {
    /// The worker's id, as the coordinator numbers workers.
    public var workerID: UInt32
    /// Where the worker's peer listener is bound (`PeerTransport.endpoint` on that worker).
    public var endpoint: String
    /// The worker's CURVE public key in Z85 (40 characters), or nil when the run has no keys.
    public var publicKey: String?
    /// Where the worker also listens for peers on its own host (`PeerTransport.localEndpoint`),
    /// and which host that is (`HostIdentity`); nil when it has no such listener.
    public var localEndpoint: String?
    public var host: String?

    /// A peer from its parts.
    public init(workerID: UInt32, endpoint: String, publicKey: String? = nil, localEndpoint: String? = nil, host: String? = nil) {
        self.workerID = workerID
        self.endpoint = endpoint
        self.publicKey = publicKey
        self.localEndpoint = localEndpoint
        self.host = host
    }

    /// Where a worker on `ownHost` connects to this peer: its local listener when both run on
    /// the same host (no TCP stack, no loopback copies through it), else its network endpoint.
    public func endpoint(seenFrom ownHost: String?) -> String {
        if let ownHost, let host, host == ownHost, let localEndpoint { return localEndpoint }
        return endpoint
    }

    public var description: String { "worker \(workerID) at \(endpoint)" }
}

/// A message from a peer, with the sender's worker id: authenticated by its CURVE key when keys
/// are on, as claimed otherwise.
public struct PeerIncoming: Sendable {
    /// The worker that sent the message.
    public let sender: UInt32
    /// The message, or why the validating decoder rejected it.
    public let result: Result<Envelope, DecodeError>

    /// An incoming message (for fakes of the transport).
    public init(sender: UInt32, result: Result<Envelope, DecodeError>) {
        self.sender = sender
        self.result = result
    }
}

/// Worker-to-worker messaging for the sharded reduction. `PeerMesh` is the ZeroMQ implementation;
/// `InMemoryPeerTransport` carries the same encoded frames inside one process, for tests of the
/// logic above it. Like a socket, one transport is used from one thread.
public protocol PeerTransport: AnyObject {
    /// Where this worker listens (the bound address, port resolved), for the other workers.
    var endpoint: String { get }
    /// Where this worker also listens for workers on its own host, and that host
    /// (`HostIdentity`); nil when it has no such listener.
    var localEndpoint: String? { get }
    var host: String? { get }
    /// Bytes of the messages sent to peers (all frames of each message; routing ids not counted).
    var bytesSent: Int { get }
    /// Bytes of the messages received from peers (all frames, also of rejected and dropped ones).
    var bytesReceived: Int { get }
    /// Replaces the set of peers this worker talks to: connects to new ones, disconnects from
    /// departed ones; with CURVE only these peers' public keys may connect to this worker's
    /// listener (others are refused by the ZAP handler, and a connection already open from a
    /// departed peer's key has its messages dropped). An entry for this worker itself is ignored.
    func setPeers(_ peers: [PeerAddress]) throws
    /// Sends `envelope` to peer `worker` without blocking for long (a send timeout of ~250 ms;
    /// throws when the peer is unknown or its queue stays full).
    func send(_ envelope: Envelope, to worker: UInt32) throws
    /// The next message from any peer, or nil after `timeoutMilliseconds` (0 = do not wait,
    /// -1 = wait forever). A malformed message comes back as a failed `result`, never a throw.
    func receive(timeoutMilliseconds: Int) throws -> PeerIncoming?
    /// Closes the transport; later sends throw. Safe to call twice.
    func close()
}

extension PeerTransport {
    public var localEndpoint: String? { nil }
    public var host: String? { nil }
}

/// This worker's CURVE key pair (Z85), for a `PeerMesh` on a run with keys. (Wire cannot see
/// PeerSecurity's `CurveKeyPair`; PeerSecurity converts one with `PeerMeshSecurity(keyPair:)`.)
public struct PeerMeshSecurity: Sendable, Equatable {
    /// This worker's public key: the other workers admit it and connect to it.
    public var publicKey: String
    /// This worker's secret key.
    public var secretKey: String

    /// Security from this worker's key pair; throws unless both are valid Z85 keys.
    public init(publicKey: String, secretKey: String) throws {
        try CurveKeys.validate(publicKey, role: "peer mesh public key")
        try CurveKeys.validate(secretKey, role: "peer mesh secret key")
        self.publicKey = publicKey
        self.secretKey = secretKey
    }
}

/// Checks a peer list against the transport's mode: unique worker ids, keys present exactly when
/// the transport uses CURVE (and valid). Returns the peers other than `selfID`, keyed by id, with
/// keys in canonical Z85.
func validatedPeers(_ peers: [PeerAddress], selfID: UInt32, keysRequired: Bool, operation: String) throws -> [UInt32: PeerAddress] {
    var result: [UInt32: PeerAddress] = [:]
    for var peer in peers where peer.workerID != selfID {
        guard result[peer.workerID] == nil else {
            throw ZMQError(operation: operation, code: EINVAL, message: "worker \(peer.workerID) is listed twice",
                           hint: "pass each peer worker once")
        }
        switch (keysRequired, peer.publicKey) {
        case (true, nil):
            throw ZMQError(operation: operation, endpoint: peer.endpoint, code: EINVAL,
                           message: "worker \(peer.workerID) has no public key, but this worker's peer mesh uses CURVE",
                           hint: "give every peer its CURVE public key (runs with keys) or none (runs without)")
        case (false, _?):
            throw ZMQError(operation: operation, endpoint: peer.endpoint, code: EINVAL,
                           message: "worker \(peer.workerID) has a public key, but this worker's peer mesh runs without CURVE",
                           hint: "create the mesh with PeerMeshSecurity on a run with keys, or list peers without keys")
        case (true, let key?):
            try CurveKeys.validate(key, role: "public key of worker \(peer.workerID)")
            peer.publicKey = CurveKeys.encode(CurveKeys.decode(key)!)
        case (false, nil):
            break
        }
        result[peer.workerID] = peer
    }
    return result
}
