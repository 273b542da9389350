import CZMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A libzmq context: the I/O threads behind every socket made from it.
///
/// Why it is `Sendable`: libzmq contexts are thread-safe, and the one piece of Swift state here
/// (the handle, cleared by `close`) is guarded by a mutex.
public final class ZMQContext: @unchecked Sendable {
    private let lock = Mutex()
    private var handle: UnsafeMutableRawPointer?

    /// A new context with `ioThreads` background I/O threads (one moves several GB/s on loopback).
    public init(ioThreads: Int = 1) throws {
        guard let handle = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        if ioThreads != 1, zmq_ctx_set(handle, ZMQ_IO_THREADS, Int32(clamping: ioThreads)) != 0 {
            let error = ZMQError.last("zmq_ctx_set ZMQ_IO_THREADS=\(ioThreads)")
            zmq_ctx_term(handle)
            throw error
        }
        self.handle = handle
    }

    /// Terminates the context. Blocks until every socket made from it is closed and each has sent
    /// what it still holds or its linger time ran out, so close sockets first. Safe to call twice.
    public func close() {
        let handle = lock.withLock { () -> UnsafeMutableRawPointer? in
            defer { self.handle = nil }
            return self.handle
        }
        guard let handle else { return }
        while zmq_ctx_term(handle) != 0 && zmq_errno() == EINTR {}
    }

    func liveHandle(_ operation: String) throws -> UnsafeMutableRawPointer {
        guard let handle = lock.withLock({ self.handle }) else {
            throw ZMQError(operation: operation, code: ETERM, message: "the ZeroMQ context is already closed",
                           hint: "create sockets before closing their context")
        }
        return handle
    }

    deinit { close() }
}

/// The ZeroMQ socket patterns the trainer uses (plus REP for a ZAP authentication handler).
public enum SocketKind: Sendable, CustomStringConvertible {
    case router, dealer, pair, pub, sub, rep

    var rawType: Int32 {
        switch self {
        case .router: return ZMQ_ROUTER
        case .dealer: return ZMQ_DEALER
        case .pair: return ZMQ_PAIR
        case .pub: return ZMQ_PUB
        case .sub: return ZMQ_SUB
        case .rep: return ZMQ_REP
        }
    }

    public var description: String {
        switch self {
        case .router: return "ROUTER"
        case .dealer: return "DEALER"
        case .pair: return "PAIR"
        case .pub: return "PUB"
        case .sub: return "SUB"
        case .rep: return "REP"
        }
    }
}

/// One libzmq socket. Not thread-safe, as libzmq sockets are not: create it on the thread that
/// uses it (the context is `Sendable` and may be handed over).
///
/// New sockets get a linger of 1000 ms instead of libzmq's "forever", so closing the context at
/// exit cannot hang on a vanished peer while normal final messages still go out.
public final class ZMQSocket {
    /// The socket's pattern.
    public let kind: SocketKind
    /// The context the socket was made from; kept alive while the socket is.
    public let context: ZMQContext
    private var handle: UnsafeMutableRawPointer?
    private var endpoints: [String] = []

    /// A new socket of `kind` in `context`.
    public init(context: ZMQContext, kind: SocketKind) throws {
        let contextHandle = try context.liveHandle("zmq_socket \(kind)")
        guard let handle = zmq_socket(contextHandle, kind.rawType) else {
            throw ZMQError.last("zmq_socket \(kind)")
        }
        self.kind = kind
        self.context = context
        self.handle = handle
        try setLinger(milliseconds: 1000)
    }

    deinit { close() }

    /// Closes the socket; pending outgoing messages are still sent for up to the linger time
    /// (by the context's I/O thread, not this one). Safe to call twice.
    public func close() {
        guard let handle else { return }
        zmq_close(handle)
        self.handle = nil
    }

    /// True until `close` is called.
    public var isOpen: Bool { handle != nil }

    /// The endpoints this socket was bound or connected to, for messages.
    public var endpointList: [String] { endpoints }

    func liveHandle(_ operation: String, endpoint: String? = nil) throws -> UnsafeMutableRawPointer {
        guard let handle else {
            throw ZMQError(operation: operation, endpoint: endpoint, code: ENOTSOCK,
                           message: "the \(kind) socket is already closed", hint: "do not use a socket after close()")
        }
        return handle
    }

    // MARK: Endpoints

    /// Binds to `endpoint` and returns the endpoint actually bound (`ZMQ_LAST_ENDPOINT`), so a
    /// wildcard port (`tcp://127.0.0.1:*` or `:0`) comes back as the real one.
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        let handle = try liveHandle("bind", endpoint: endpoint)
        // libzmq spells "any port" as '*'; port 0 is the usual spelling elsewhere, so accept both.
        var target = endpoint
        if target.hasPrefix("tcp://"), target.hasSuffix(":0") {
            target = String(target.dropLast()) + "*"
        }
        guard zmq_bind(handle, target) == 0 else { throw ZMQError.last("bind", endpoint: endpoint) }
        let bound = try stringOption(ZMQ_LAST_ENDPOINT, name: "ZMQ_LAST_ENDPOINT")
        endpoints.append(bound)
        return bound
    }

    /// Connects to `endpoint`. libzmq connects in the background and reconnects on its own, so
    /// this succeeds even when nothing listens there yet.
    public func connect(_ endpoint: String) throws {
        let handle = try liveHandle("connect", endpoint: endpoint)
        guard zmq_connect(handle, endpoint) == 0 else { throw ZMQError.last("connect", endpoint: endpoint) }
        endpoints.append(endpoint)
    }

    /// Stops listening on an endpoint returned by `bind`.
    public func unbind(_ endpoint: String) throws {
        let handle = try liveHandle("unbind", endpoint: endpoint)
        guard zmq_unbind(handle, endpoint) == 0 else { throw ZMQError.last("unbind", endpoint: endpoint) }
        endpoints.removeAll { $0 == endpoint }
    }

    /// Drops a connection made with `connect`.
    public func disconnect(_ endpoint: String) throws {
        let handle = try liveHandle("disconnect", endpoint: endpoint)
        guard zmq_disconnect(handle, endpoint) == 0 else { throw ZMQError.last("disconnect", endpoint: endpoint) }
        endpoints.removeAll { $0 == endpoint }
    }

    // MARK: Options

    /// How long `close` keeps trying to deliver queued messages (0 drops them at once, which can
    /// lose a message sent just before; -1 waits forever).
    public func setLinger(milliseconds: Int) throws {
        try setOption(ZMQ_LINGER, "ZMQ_LINGER", int: milliseconds)
    }

    /// ZMTP heartbeats: a PING every `interval` ms; the connection is dropped when nothing arrives
    /// for `timeout` ms; `ttl` (ms, at most 6553599) tells the peer when to give up on us.
    public func setHeartbeat(interval: Int, timeout: Int, ttl: Int) throws {
        try setOption(ZMQ_HEARTBEAT_IVL, "ZMQ_HEARTBEAT_IVL", int: interval)
        try setOption(ZMQ_HEARTBEAT_TIMEOUT, "ZMQ_HEARTBEAT_TIMEOUT", int: timeout)
        try setOption(ZMQ_HEARTBEAT_TTL, "ZMQ_HEARTBEAT_TTL", int: ttl)
    }

    /// The largest single frame accepted from a peer; a peer sending more is disconnected.
    /// -1 means no limit.
    public func setMaxMessageSize(bytes: Int) throws {
        let handle = try liveHandle("setsockopt ZMQ_MAXMSGSIZE")
        var value = Int64(bytes)
        guard zmq_setsockopt(handle, ZMQ_MAXMSGSIZE, &value, MemoryLayout<Int64>.size) == 0 else {
            throw ZMQError.last("setsockopt ZMQ_MAXMSGSIZE=\(bytes)")
        }
    }

    /// The identity a DEALER presents to a ROUTER (1 to 255 bytes, first byte not zero); set before
    /// `connect`. Without it the ROUTER makes up a 5-byte one.
    public func setRoutingID(_ bytes: [UInt8]) throws {
        guard (1...255).contains(bytes.count), bytes[0] != 0 else {
            throw ZMQError(operation: "setsockopt ZMQ_ROUTING_ID", code: EINVAL,
                           message: "a routing id must be 1 to 255 bytes and must not start with a zero byte (got \(bytes.count) bytes)",
                           hint: "use a short name such as the worker's host name and process id")
        }
        try setOption(ZMQ_ROUTING_ID, "ZMQ_ROUTING_ID", bytes: bytes)
    }

    /// On a ROUTER: sending to an unknown peer throws (`isPeerUnreachable`) instead of silently
    /// dropping the message.
    public func setRouterMandatory(_ on: Bool) throws {
        try setOption(ZMQ_ROUTER_MANDATORY, "ZMQ_ROUTER_MANDATORY", int: on ? 1 : 0)
    }

    /// On a ROUTER: a new connection with an identity already in use takes it over (a restarted
    /// worker with a fixed routing id) instead of being refused.
    public func setRouterHandover(_ on: Bool) throws {
        try setOption(ZMQ_ROUTER_HANDOVER, "ZMQ_ROUTER_HANDOVER", int: on ? 1 : 0)
    }

    /// How many whole messages may wait to be received per peer (0 = unlimited).
    public func setReceiveHighWaterMark(_ messages: Int) throws {
        try setOption(ZMQ_RCVHWM, "ZMQ_RCVHWM", int: messages)
    }

    /// How many whole messages may wait to be sent per peer (0 = unlimited).
    public func setSendHighWaterMark(_ messages: Int) throws {
        try setOption(ZMQ_SNDHWM, "ZMQ_SNDHWM", int: messages)
    }

    /// How long a blocked `send` waits before throwing an error with `isWouldBlock` (-1 = forever).
    public func setSendTimeout(milliseconds: Int) throws {
        try setOption(ZMQ_SNDTIMEO, "ZMQ_SNDTIMEO", int: milliseconds)
    }

    /// Reconnection back-off: first retry after `milliseconds`, doubling up to `max` (0 = no back-off).
    public func setReconnectInterval(milliseconds: Int, max: Int) throws {
        try setOption(ZMQ_RECONNECT_IVL, "ZMQ_RECONNECT_IVL", int: milliseconds)
        try setOption(ZMQ_RECONNECT_IVL_MAX, "ZMQ_RECONNECT_IVL_MAX", int: max)
    }

    /// Queue messages only to completed connections, so a send to a peer that is not there yet
    /// blocks (or times out) instead of piling up.
    public func setImmediate(_ on: Bool) throws {
        try setOption(ZMQ_IMMEDIATE, "ZMQ_IMMEDIATE", int: on ? 1 : 0)
    }

    /// Accept IPv6 addresses as well as IPv4 in endpoints.
    public func setIPv6(_ on: Bool) throws {
        try setOption(ZMQ_IPV6, "ZMQ_IPV6", int: on ? 1 : 0)
    }

    /// TCP keepalive probes on this socket's connections (notices dead hosts behind NAT or firewalls).
    public func setTCPKeepalive(_ on: Bool) throws {
        try setOption(ZMQ_TCP_KEEPALIVE, "ZMQ_TCP_KEEPALIVE", int: on ? 1 : 0)
    }

    /// On a SUB socket: receive messages whose first frame starts with `prefix` (empty = all).
    public func subscribe(_ prefix: [UInt8] = []) throws {
        try setOption(ZMQ_SUBSCRIBE, "ZMQ_SUBSCRIBE", bytes: prefix)
    }

    /// Makes this socket a CURVE server with its Z85 secret key (40 characters); set before `bind`.
    /// Clients must then know the matching public key. Client keys are checked only when a ZAP
    /// handler runs in the context (see `CurveAuthenticator`).
    public func enableCurveServer(secretKey: String) throws {
        try CurveKeys.validate(secretKey, role: "server secret key")
        try setOption(ZMQ_CURVE_SERVER, "ZMQ_CURVE_SERVER", int: 1)
        try setOption(ZMQ_CURVE_SECRETKEY, "ZMQ_CURVE_SECRETKEY", bytes: Array(secretKey.utf8))
    }

    /// Makes this socket a CURVE client of a server with public key `serverPublicKey`, using its
    /// own key pair; all keys Z85 (40 characters); set before `connect`.
    public func enableCurveClient(serverPublicKey: String, publicKey: String, secretKey: String) throws {
        try CurveKeys.validate(serverPublicKey, role: "server public key")
        try CurveKeys.validate(publicKey, role: "client public key")
        try CurveKeys.validate(secretKey, role: "client secret key")
        try setOption(ZMQ_CURVE_SERVERKEY, "ZMQ_CURVE_SERVERKEY", bytes: Array(serverPublicKey.utf8))
        try setOption(ZMQ_CURVE_PUBLICKEY, "ZMQ_CURVE_PUBLICKEY", bytes: Array(publicKey.utf8))
        try setOption(ZMQ_CURVE_SECRETKEY, "ZMQ_CURVE_SECRETKEY", bytes: Array(secretKey.utf8))
    }

    /// The ZAP domain sent to the authentication handler (lets one handler serve several sockets).
    public func setZAPDomain(_ domain: String) throws {
        try setOption(ZMQ_ZAP_DOMAIN, "ZMQ_ZAP_DOMAIN", bytes: Array(domain.utf8))
    }

    private func setOption(_ option: Int32, _ name: String, int value: Int) throws {
        let handle = try liveHandle("setsockopt \(name)")
        guard let narrow = Int32(exactly: value) else {
            throw ZMQError(operation: "setsockopt \(name)=\(value)", code: EINVAL,
                           message: "value out of range (\(Int32.min)...\(Int32.max))")
        }
        var option32 = narrow
        guard zmq_setsockopt(handle, option, &option32, MemoryLayout<Int32>.size) == 0 else {
            throw ZMQError.last("setsockopt \(name)=\(value)")
        }
    }

    private func setOption(_ option: Int32, _ name: String, bytes: [UInt8]) throws {
        let handle = try liveHandle("setsockopt \(name)")
        let result = bytes.withUnsafeBytes { zmq_setsockopt(handle, option, $0.baseAddress, $0.count) }
        guard result == 0 else { throw ZMQError.last("setsockopt \(name)") }
    }

    private func stringOption(_ option: Int32, name: String) throws -> String {
        let handle = try liveHandle("getsockopt \(name)")
        var buffer = [CChar](repeating: 0, count: 1024)
        var size = buffer.count
        guard zmq_getsockopt(handle, option, &buffer, &size) == 0 else { throw ZMQError.last("getsockopt \(name)") }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    // MARK: Sending and receiving

    /// Sends one multipart message (`ZMQ_SNDMORE` on all frames but the last). Byte frames are
    /// copied into libzmq; payload frames are handed over without a copy: libzmq holds a reference
    /// to the `FloatPayload` and drops it when the data has left (possibly on its I/O thread).
    /// Sending the same payload to several peers shares its one buffer.
    ///
    /// Blocks while the peer's queue is full unless a send timeout is set. libzmq checks the queue
    /// at the first frame only, so a message is either queued whole or not at all.
    public func send(_ frames: [OutgoingFrame]) throws {
        let handle = try liveHandle("send")
        guard !frames.isEmpty else {
            throw ZMQError(operation: "send", code: EINVAL, message: "a message needs at least one frame")
        }
        // A zmq_msg_t must never be copied as a value (it would be closed twice), so it lives on the heap.
        let message = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
        defer { message.deallocate() }
        for (position, frame) in frames.enumerated() {
            try Self.initialise(message, with: frame)
            let flags = position == frames.count - 1 ? Int32(0) : ZMQ_SNDMORE
            while zmq_msg_send(message, handle, flags) < 0 {
                let code = zmq_errno()
                if code == EINTR { continue }
                // On failure the message still owns its content (and a payload retain): release it.
                zmq_msg_close(message)
                throw ZMQError(operation: "send (frame \(position + 1) of \(frames.count))", endpoint: endpoints.first, code: code)
            }
            // A sent message is left empty: closing it is a no-op that keeps the pairing obvious.
            zmq_msg_close(message)
        }
    }

    private static func initialise(_ message: UnsafeMutablePointer<zmq_msg_t>, with frame: OutgoingFrame) throws {
        switch frame {
        case .bytes(let bytes):
            guard zmq_msg_init_size(message, bytes.count) == 0 else { throw ZMQError.last("zmq_msg_init_size \(bytes.count)") }
            if !bytes.isEmpty {
                bytes.withUnsafeBytes { source in
                    zmq_msg_data(message).copyMemory(from: source.baseAddress!, byteCount: source.count)
                }
            }
        case .payload(let payload):
            let hint = Unmanaged.passRetained(payload).toOpaque()
            let data = payload.withUnsafeBufferPointer { UnsafeMutableRawPointer(mutating: $0.baseAddress!) }
            // The free callback cannot capture anything: the payload travels as the hint.
            let result = zmq_msg_init_data(message, data, payload.count * MemoryLayout<Float>.size, { _, hint in
                guard let hint else { return }
                Unmanaged<FloatPayload>.fromOpaque(hint).release()
            }, hint)
            guard result == 0 else {
                Unmanaged<FloatPayload>.fromOpaque(hint).release()
                throw ZMQError.last("zmq_msg_init_data \(payload.count) floats")
            }
        case .packed(let packed):
            // As a payload: libzmq sends the packed bytes in place and releases them when out.
            let hint = Unmanaged.passRetained(packed).toOpaque()
            let result = zmq_msg_init_data(message, packed.bytes, packed.byteCount, { _, hint in
                guard let hint else { return }
                Unmanaged<PackedTensor>.fromOpaque(hint).release()
            }, hint)
            guard result == 0 else {
                Unmanaged<PackedTensor>.fromOpaque(hint).release()
                throw ZMQError.last("zmq_msg_init_data \(packed.byteCount) packed bytes")
            }
        }
    }

    /// Receives one whole multipart message, waiting up to `timeoutMilliseconds` for it
    /// (0 = do not wait, -1 = wait forever). Nil on timeout.
    public func receive(timeoutMilliseconds: Int) throws -> [ReceivedFrame]? {
        try receive(timeoutMilliseconds: timeoutMilliseconds, keepingAtMost: Int.max)?.frames
    }

    /// Like `receive(timeoutMilliseconds:)`, but keeps only the first `maxFrames` frames of the
    /// message and releases the rest as they arrive, so a peer sending a message of a million
    /// frames cannot make us hold them. `totalFrames` says how many there were.
    public func receive(timeoutMilliseconds: Int, keepingAtMost maxFrames: Int) throws -> (frames: [ReceivedFrame], totalFrames: Int)? {
        try receive(timeoutMilliseconds: timeoutMilliseconds, keepingAtMost: maxFrames, readingProperty: nil)
            .map { ($0.frames, $0.totalFrames) }
    }

    /// Like `receive(timeoutMilliseconds:keepingAtMost:)`, and also reads the message's metadata
    /// `property` (`zmq_msg_gets`), such as "User-Id" (the authenticated CURVE client key when a
    /// `CurveAuthenticator` admitted the connection) or "Peer-Address"; nil when the message has
    /// no such property.
    public func receive(timeoutMilliseconds: Int, keepingAtMost maxFrames: Int, readingProperty property: String?) throws
        -> (frames: [ReceivedFrame], totalFrames: Int, property: String?)? {
        let handle = try liveHandle("receive")
        var propertyValue: String?
        let clock = ContinuousClock()
        let deadline = timeoutMilliseconds < 0 ? nil : clock.now.advanced(by: .milliseconds(timeoutMilliseconds))
        var first: ReceivedFrame?
        while first == nil {
            let message = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
            zmq_msg_init(message)
            if zmq_msg_recv(message, handle, ZMQ_DONTWAIT) >= 0 {
                if let property, let value = zmq_msg_gets(message, property) { propertyValue = String(cString: value) }
                first = ReceivedFrame(takingMessage: message)
                break
            }
            let code = zmq_errno()
            zmq_msg_close(message)
            message.deallocate()
            if code == EINTR { continue }
            guard code == EAGAIN else { throw ZMQError(operation: "receive", endpoint: endpoints.first, code: code) }
            var wait = -1
            if let deadline {
                let remaining = deadline - clock.now
                if remaining <= .zero { return nil }
                let (seconds, attoseconds) = remaining.components
                // Round up so a short remaining time is not turned into a busy "poll for 0 ms" loop.
                wait = Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            }
            var item = zmq_pollitem_t(socket: handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
            if zmq_poll(&item, 1, wait) < 0 {
                let code = zmq_errno()
                if code != EINTR { throw ZMQError(operation: "poll", endpoint: endpoints.first, code: code) }
            }
        }
        var frames = [first!]
        var total = 1
        var more = frames[0].hasMore
        // libzmq delivers the parts of a multipart message together: once the first part is here
        // the rest is too, so these receives do not wait.
        while more {
            let message = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
            zmq_msg_init(message)
            while zmq_msg_recv(message, handle, 0) < 0 {
                let code = zmq_errno()
                if code == EINTR { continue }
                zmq_msg_close(message)
                message.deallocate()
                throw ZMQError(operation: "receive (frame \(total + 1))", endpoint: endpoints.first, code: code)
            }
            more = zmq_msg_more(message) != 0
            // A ROUTER's routing id frame may come without the connection's metadata (the first
            // message of a connection does), so the property is looked for in the later frames too.
            if let property, propertyValue == nil, let value = zmq_msg_gets(message, property) {
                propertyValue = String(cString: value)
            }
            total += 1
            if frames.count < maxFrames {
                frames.append(ReceivedFrame(takingMessage: message))
            } else {
                zmq_msg_close(message)
                message.deallocate()
            }
        }
        if frames.count > maxFrames { frames.removeLast(frames.count - maxFrames) }
        return (frames, total, propertyValue)
    }
}

/// Waits until at least one of `sockets` has a message to receive, one of the plain file
/// `descriptors` is readable, or the timeout passes (0 = check only, -1 = forever). Returns, per
/// socket and then per descriptor, whether it is readable.
public func zmqPoll(_ sockets: [ZMQSocket], descriptors: [Int32] = [], timeoutMilliseconds: Int) throws -> [Bool] {
    var items = try sockets.map {
        zmq_pollitem_t(socket: try $0.liveHandle("poll"), fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
    }
    items += descriptors.map { zmq_pollitem_t(socket: nil, fd: $0, events: Int16(ZMQ_POLLIN), revents: 0) }
    let result = zmq_poll(&items, Int32(items.count), timeoutMilliseconds)
    if result < 0 {
        let code = zmq_errno()
        // An interrupted wait is reported as "nothing ready": callers poll in a loop anyway.
        if code == EINTR { return Array(repeating: false, count: items.count) }
        throw ZMQError(operation: "poll", code: code)
    }
    return items.map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
}

/// A pthread mutex on the heap (a `pthread_mutex_t` must not move once in use).
final class Mutex: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func withLock<R>(_ body: () throws -> R) rethrows -> R {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}
