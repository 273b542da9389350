#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Worker-to-worker messaging over ZeroMQ: one ROUTER listening for the other workers, and one
/// DEALER per peer connected to that peer's ROUTER. A DEALER presents this worker's id as its
/// routing id, so the receiving ROUTER knows the sender without a hello; with CURVE the ROUTER
/// also checks that the key which authenticated the connection is the key of that worker, so an
/// admitted peer cannot speak for another.
///
/// The mesh has its own ZeroMQ context, because a ZAP handler (the allow-list of peer keys) serves
/// one context. Not thread-safe, like the sockets in it: create and use it on one thread.
///
/// Without CURVE anything that reaches the listener may claim any worker id; bind it only where
/// the run's bind policy allows (`bindAddress(reaching:)` gives the address this host uses to
/// reach the coordinator).
public final class PeerMesh: PeerTransport {
    /// This worker's id; its DEALERs announce it.
    public let selfID: UInt32
    /// Where this worker's ROUTER listens (the port resolved).
    public let endpoint: String
    /// Where the same ROUTER also listens for workers on this host: a Linux abstract socket
    /// (`ipc://@NAME`), which exists only in this network namespace and is gone with the
    /// process. Nil where there is none (not Linux, or the bind failed).
    public let localEndpoint: String?
    /// This host, as `HostIdentity` names it; peers with the same one connect to `localEndpoint`.
    public let host: String?
    /// What an endpoint of a local listener starts with.
    public static let localEndpointPrefix = "ipc://@"
    /// What received messages may announce before the decoder rejects them.
    public let limits: DecodeLimits
    /// Bytes of the messages handed to the DEALERs, all frames included.
    public private(set) var bytesSent = 0
    /// Bytes of the messages taken from the ROUTER (routing id frames not counted).
    public private(set) var bytesReceived = 0
    /// Messages dropped unread: from a routing id that is not a current peer, or (with CURVE) sent
    /// over a connection whose key is not that peer's key.
    public private(set) var droppedMessages = 0
    /// How long `send` waits for a ready connection to the peer (or room in its queue) before
    /// it throws.
    public static let sendTimeoutMilliseconds = 250
    /// One wait of a DEALER's send, between checks for refused connections.
    static let sendAttemptMilliseconds = 25
    /// How many waiting messages `receive` still looks at once its timeout has passed.
    static let droppedMessagesPastDeadline = 64

    private let context: ZMQContext
    private let router: ZMQSocket
    private let authenticator: CurveAuthenticator?
    private let security: PeerMeshSecurity?
    private let maxMessageBytes: Int
    private var peerTable: [UInt32: PeerAddress] = [:]
    private var links: [UInt32: PeerLink] = [:]
    private var reportedRefusals: Set<String> = []
    private var unreportedFailures: [PeerHandshakeFailure] = []
    private var closed = false

    /// Binds this worker's listener at `bind` (`tcp://10.77.0.3:0` picks a free port; a wildcard
    /// address such as 0.0.0.0 would be reported as such and peers could not connect to it).
    /// With `security` the listener is a CURVE server that admits only the peers' keys (none until
    /// `setPeers`) and the DEALERs are CURVE clients; `maxMessageBytes` bounds one incoming frame
    /// (-1: no bound), `limits` what the decoder accepts. With `sameHostLinks` the listener also
    /// binds a local socket for the workers on this host (CURVE and the allow-list apply there
    /// as on `bind`).
    public init(selfID: UInt32, bind: String, security: PeerMeshSecurity?, limits: DecodeLimits = .default, maxMessageBytes: Int = -1,
                sameHostLinks: Bool = true) throws {
        let context = try ZMQContext()
        var authenticator: CurveAuthenticator?
        var router: ZMQSocket?
        var localEndpoint: String?
        do {
            // The handler must be in place before the CURVE server binds, or early clients pass unchecked.
            if security != nil { authenticator = try CurveAuthenticator(context: context, allowedClientKeys: []) }
            let socket = try ZMQSocket(context: context, kind: .router)
            router = socket
            // The ROUTER only receives, so nothing of value waits in it at close.
            try socket.setLinger(milliseconds: 0)
            try socket.setMaxMessageSize(bytes: maxMessageBytes)
            try Self.configureConnections(socket, endpoint: bind)
            if let security { try socket.enableCurveServer(secretKey: security.secretKey) }
            endpoint = try socket.bind(bind)
            if sameHostLinks, HostIdentity.current != nil {
                // Not being reachable locally only costs speed: peers then use `bind`.
                let name = Self.localEndpointPrefix + "cnn-peer-" + String(UInt64.random(in: .min ... .max), radix: 16)
                localEndpoint = try? socket.bind(name)
            }
        } catch {
            router?.close()
            authenticator?.stop()
            context.close()
            throw error
        }
        self.selfID = selfID
        self.localEndpoint = localEndpoint
        host = localEndpoint == nil ? nil : HostIdentity.current
        self.limits = limits
        self.security = security
        self.maxMessageBytes = maxMessageBytes
        self.context = context
        self.router = router!
        self.authenticator = authenticator
    }

    deinit { close() }

    /// The current peers, by worker id.
    public var peers: [PeerAddress] { peerTable.keys.sorted().map { peerTable[$0]! } }

    /// The endpoint this worker's link to peer `worker` connects to, nil for no such peer.
    public func linkEndpoint(to worker: UInt32) -> String? { links[worker]?.endpoint }

    public func setPeers(_ peers: [PeerAddress]) throws {
        let operation = "peer mesh set peers"
        try checkOpen(operation)
        let wanted = try validatedPeers(peers, selfID: selfID, keysRequired: security != nil, operation: operation)
        // Open every new link first, so a bad endpoint leaves the mesh as it was.
        var opened: [UInt32: PeerLink] = [:]
        do {
            for (id, peer) in wanted where links[id]?.address != peer {
                opened[id] = try PeerLink(context: context, selfID: selfID, peer: peer, endpoint: peer.endpoint(seenFrom: host), security: security)
            }
            try authenticator?.setAllowedClientKeys(wanted.values.compactMap(\.publicKey))
        } catch {
            for link in opened.values { link.close(dropQueued: true) }
            throw error
        }
        for (id, link) in links where wanted[id] == nil || opened[id] != nil {
            link.close(dropQueued: true)
            links[id] = nil
        }
        links.merge(opened) { _, new in new }
        peerTable = wanted
    }

    public func send(_ envelope: Envelope, to worker: UInt32) throws {
        let operation = "send \(envelope.message.typeName) to worker \(worker)"
        try checkOpen(operation)
        guard let link = links[worker] else {
            throw ZMQError(operation: operation, code: EHOSTUNREACH,
                           message: "worker \(worker) is not a peer of worker \(selfID)"
                               + (worker == selfID ? " (it is this worker)" : ""),
                           hint: "send only to the workers of the last setPeers")
        }
        let frames = WireCodec.encode(envelope)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .milliseconds(Self.sendTimeoutMilliseconds))
        var target = link
        while true {
            do {
                try target.socket.send(frames)
                break
            } catch let error as ZMQError where error.isWouldBlock {
                // No ready connection (or a full queue): a connection refused meanwhile is made
                // afresh, since libzmq does not retry after a refused key by itself.
                try renewRefusedLinks()
                guard clock.now < deadline, let renewed = links[worker] else {
                    throw ZMQError(operation: operation, endpoint: link.endpoint, code: EAGAIN,
                                   message: "no connection to it was ready to take the message within \(Self.sendTimeoutMilliseconds) ms",
                                   hint: "the peer is not listening yet, refused this worker (see handshakeFailures()), is gone, or does not read")
                }
                target = renewed
            }
        }
        bytesSent += frames.reduce(0) { $0 + $1.byteCount }
    }

    /// Reads the links' handshake failures (kept for `handshakeFailures()`) and replaces every
    /// link whose connection was refused or failed the protocol handshake: libzmq ends such a
    /// connection for good, and a refusal is often only a race (this worker was admitted by the
    /// peer's `setPeers` a moment after it first connected).
    private func renewRefusedLinks() throws {
        for id in links.keys.sorted() {
            let link = links[id]!
            let events = try link.monitor.poll()
            for event in events {
                let failure = PeerHandshakeFailure(peer: link.address, endpoint: link.endpoint, event: event, selfUsesCurve: security != nil)
                if !unreportedFailures.contains(failure) { unreportedFailures.append(failure) }
            }
            if events.contains(where: { $0.kind == .handshakeFailedAuth || $0.kind == .handshakeFailedProtocol }) {
                link.close(dropQueued: true)
                links[id] = nil
                links[id] = try PeerLink(context: context, selfID: selfID, peer: link.address, endpoint: link.endpoint, security: security)
            }
        }
    }

    public func receive(timeoutMilliseconds: Int) throws -> PeerIncoming? {
        try checkOpen("receive from peers")
        let clock = ContinuousClock()
        let deadline = timeoutMilliseconds < 0 ? nil : clock.now.advanced(by: .milliseconds(timeoutMilliseconds))
        // Routing id, header, meta, tensors, and one frame more so "too many" stays visible.
        let keep = 1 + 2 + limits.maxTensorFrames + 1
        var overtime = 0
        while true {
            var wait = -1
            if let deadline {
                let remaining = deadline - clock.now
                if remaining <= .zero {
                    // Past the deadline only a few messages that are already here, so a flood of
                    // dropped messages cannot hold the caller.
                    overtime += 1
                    if overtime > Self.droppedMessagesPastDeadline { return nil }
                }
                wait = remaining <= .zero ? 0 : Int((remaining / .milliseconds(1)).rounded(.up))
            }
            guard let (frames, total, userID) = try router.receive(
                timeoutMilliseconds: wait, keepingAtMost: keep, readingProperty: security == nil ? nil : "User-Id") else {
                return nil
            }
            bytesReceived += frames.dropFirst().reduce(0) { $0 + $1.count }
            guard let sender = admittedSender(routingID: frames[0].bytes, userID: userID) else {
                droppedMessages += 1
                continue
            }
            if total > frames.count {
                return PeerIncoming(sender: sender, result: .failure(.tooManyTensorFrames(count: total - 3, limit: limits.maxTensorFrames)))
            }
            do {
                return PeerIncoming(sender: sender, result: .success(try WireCodec.decode(Array(frames.dropFirst()), limits: limits)))
            } catch {
                return PeerIncoming(sender: sender, result: .failure(error))
            }
        }
    }

    /// The worker a message is from, or nil when it must be dropped.
    private func admittedSender(routingID: [UInt8], userID: String?) -> UInt32? {
        guard let id = Self.workerID(routingID: routingID), let peer = peerTable[id] else { return nil }
        if security != nil {
            // The ZAP handler sets User-Id to the key that passed the handshake; the routing id
            // is only what that client claims.
            guard let userID, userID == peer.publicKey else { return nil }
        }
        return id
    }

    /// Clients the ZAP handler refused (a key not on the peer list), each key and address
    /// reported once; always empty without CURVE.
    public func newRefusals() -> [CurveRefusal] {
        guard let authenticator else { return [] }
        var fresh: [CurveRefusal] = []
        for refusal in authenticator.refusals {
            let identity = refusal.publicKey + " " + refusal.address
            // Bounded like CurveGate's memory, so a stream of random keys cannot grow it.
            guard !reportedRefusals.contains(identity), reportedRefusals.count < 1000 else { continue }
            reportedRefusals.insert(identity)
            fresh.append(refusal)
        }
        return fresh
    }

    /// Failed handshakes of this worker's connections to its peers since the last call (its key
    /// refused, CURVE on one side only, a wrong peer key), each kind once per peer, with the cause
    /// and the fix. Refused connections are opened afresh (here and while `send` waits).
    public func handshakeFailures() throws -> [PeerHandshakeFailure] {
        try renewRefusedLinks()
        defer { unreportedFailures = [] }
        return unreportedFailures
    }

    /// The listener's socket, for waiting on it together with other sockets (`zmqPoll`); read
    /// its messages through `receive(timeoutMilliseconds:)`, which checks who sent them.
    public var listener: ZMQSocket { router }

    /// Closes the connections, the listener, the ZAP handler and the context. Messages already
    /// queued to peers still go out for up to a second. Safe to call twice.
    public func close() {
        guard !closed else { return }
        closed = true
        for link in links.values { link.close(dropQueued: false) }
        links = [:]
        router.close()
        authenticator?.stop()
        context.close()
    }

    private func checkOpen(_ operation: String) throws {
        guard closed else { return }
        throw ZMQError(operation: operation, code: ENOTSOCK, message: "the peer mesh of worker \(selfID) is closed",
                       hint: "do not use a PeerMesh after close()")
    }

    // MARK: Routing ids

    /// The first byte of a peer routing id. libzmq reserves routing ids that start with a zero
    /// byte (its own generated ones), which a little-endian worker id often does, so the id
    /// follows this marker.
    public static let routingMarker: UInt8 = 0x70  // "p"

    /// The routing id a DEALER of worker `id` presents: the marker, then the id little-endian.
    public static func routingID(workerID id: UInt32) -> [UInt8] {
        [routingMarker] + withUnsafeBytes(of: id.littleEndian) { Array($0) }
    }

    /// The worker id of a routing id made by `routingID(workerID:)`, nil for any other.
    public static func workerID(routingID bytes: [UInt8]) -> UInt32? {
        guard bytes.count == 5, bytes[0] == routingMarker else { return nil }
        return bytes[1...].reversed().reduce(0) { $0 << 8 | UInt32($1) }
    }

    /// Options every mesh socket gets: ZMTP heartbeats, so a vanished peer's connection is
    /// dropped (and a restarted one can take its routing id), and IPv6 for bracketed addresses.
    static func configureConnections(_ socket: ZMQSocket, endpoint: String) throws {
        try socket.setHeartbeat(interval: 1000, timeout: 10_000, ttl: 10_000)
        if endpoint.contains("[") { try socket.setIPv6(true) }
    }
}

/// One peer's outgoing connection: a DEALER and a monitor of its failed handshakes.
private final class PeerLink {
    let address: PeerAddress
    /// The peer's endpoint this link connects to: its local one or its network one.
    let endpoint: String
    let socket: ZMQSocket
    let monitor: SocketMonitor

    init(context: ZMQContext, selfID: UInt32, peer: PeerAddress, endpoint: String, security: PeerMeshSecurity?) throws {
        let socket = try ZMQSocket(context: context, kind: .dealer)
        do {
            try socket.setRoutingID(PeerMesh.routingID(workerID: selfID))
            try socket.setSendTimeout(milliseconds: PeerMesh.sendAttemptMilliseconds)
            // Messages wait only on connections that completed their handshake: libzmq discards
            // what was queued for a connection that is then refused, and a send that cannot go
            // should say so rather than vanish.
            try socket.setImmediate(true)
            try PeerMesh.configureConnections(socket, endpoint: endpoint)
            if let security, let serverKey = peer.publicKey {
                try socket.enableCurveClient(serverPublicKey: serverKey, publicKey: security.publicKey, secretKey: security.secretKey)
            }
            // Watching before connecting, so the first failed handshake is seen.
            monitor = try SocketMonitor(watching: socket, events: SocketMonitor.handshakeFailures)
            try socket.connect(endpoint)
        } catch {
            socket.close()
            throw error
        }
        self.address = peer
        self.endpoint = endpoint
        self.socket = socket
    }

    /// Closes the connection; `dropQueued` discards what still waits to go (a departed peer).
    func close(dropQueued: Bool) {
        monitor.close()
        if dropQueued { try? socket.setLinger(milliseconds: 0) }
        socket.close()
    }
}

/// A failed handshake of this worker's connection to a peer, with what it means.
public struct PeerHandshakeFailure: Sendable, Equatable, CustomStringConvertible {
    /// The peer the connection goes to.
    public var peer: PeerAddress
    /// The peer's endpoint the connection goes to: its local one or its network one.
    public var endpoint: String
    /// libzmq's event.
    public var event: SocketEvent
    /// Whether this worker's mesh uses CURVE (it decides what a mechanism mismatch means).
    public var selfUsesCurve: Bool

    /// A failure from its parts; `endpoint` defaults to the peer's network endpoint.
    public init(peer: PeerAddress, endpoint: String? = nil, event: SocketEvent, selfUsesCurve: Bool) {
        self.peer = peer
        self.endpoint = endpoint ?? peer.endpoint
        self.event = event
        self.selfUsesCurve = selfUsesCurve
    }

    public var description: String {
        let prefix = "worker \(peer.workerID) at \(endpoint)"
        switch event.kind {
        case .handshakeFailedAuth:
            return "\(prefix) refused this worker's CURVE key (ZAP status \(event.value)): this worker is not on its peer list; "
                + "both workers must be given each other by the coordinator (setPeers) with the keys they really use"
        case .handshakeFailedProtocol where event.value == ProtocolError.mechanismMismatch:
            return "\(prefix) " + (selfUsesCurve ? "does not use CURVE, but this worker does" : "uses CURVE, but this worker does not")
                + " (security mechanism mismatch): every worker of a run must have keys, or none"
        case .handshakeFailedProtocol:
            return "\(prefix): handshake failed (\(ProtocolError.name(event.value))); "
                + "the public key announced for that worker is probably not the one it uses"
        default:
            let reason = String(cString: strerror(Int32(bitPattern: event.value)))
            // The peer closed the connection without saying why: it died or restarted (the
            // coordinator then gives it up), or it refuses this worker's mechanism or key.
            return "\(prefix) closed the connection during the handshake (\(reason)): it stopped or restarted, or "
                + (selfUsesCurve ? "the public key announced for that worker is not its own"
                                 : "it uses CURVE and this worker does not (every worker of a run must have keys, or none)")
        }
    }
}
