import CZMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One event from a socket monitor: what happened, libzmq's value for it, and on which endpoint.
public struct SocketEvent: Sendable, Equatable, CustomStringConvertible {
    /// The events the trainer looks at (stable libzmq 4.3 events only); anything else is `other`.
    public enum Kind: Sendable, Equatable {
        case connected, connectDelayed, connectRetried, closed, disconnected
        case handshakeSucceeded
        /// A system error during the handshake; the value is an errno.
        case handshakeFailedNoDetail
        /// A ZMTP protocol error, including a security mechanism mismatch; the value is a
        /// `ZMQ_PROTOCOL_ERROR_*` code (see `ProtocolError`).
        case handshakeFailedProtocol
        /// The peer's authentication handler refused; the value is the ZAP status (300, 400, 500).
        case handshakeFailedAuth
        case other(UInt16)

        init(rawValue: UInt16) {
            switch Int32(rawValue) {
            case ZMQ_EVENT_CONNECTED: self = .connected
            case ZMQ_EVENT_CONNECT_DELAYED: self = .connectDelayed
            case ZMQ_EVENT_CONNECT_RETRIED: self = .connectRetried
            case ZMQ_EVENT_CLOSED: self = .closed
            case ZMQ_EVENT_DISCONNECTED: self = .disconnected
            case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: self = .handshakeSucceeded
            case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: self = .handshakeFailedNoDetail
            case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: self = .handshakeFailedProtocol
            case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: self = .handshakeFailedAuth
            default: self = .other(rawValue)
            }
        }
    }

    public var kind: Kind
    public var value: UInt32
    public var endpoint: String

    public init(kind: Kind, value: UInt32, endpoint: String) {
        self.kind = kind
        self.value = value
        self.endpoint = endpoint
    }

    public var description: String { "\(kind) (\(value)) on \(endpoint)" }
}

/// The `ZMQ_PROTOCOL_ERROR_*` codes a `handshakeFailedProtocol` event carries.
public enum ProtocolError {
    /// The two ends use different security mechanisms (CURVE on one side only, for instance).
    public static let mechanismMismatch = UInt32(ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    /// A CURVE box could not be opened: the keys do not match.
    public static let cryptographic = UInt32(ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)

    /// libzmq's name for a protocol error code, for messages.
    public static func name(_ code: UInt32) -> String {
        let names: [Int32: String] = [
            ZMQ_PROTOCOL_ERROR_ZMTP_UNSPECIFIED: "ZMTP unspecified",
            ZMQ_PROTOCOL_ERROR_ZMTP_UNEXPECTED_COMMAND: "unexpected ZMTP command",
            ZMQ_PROTOCOL_ERROR_ZMTP_INVALID_SEQUENCE: "invalid ZMTP sequence",
            ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE: "key exchange failed",
            ZMQ_PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_UNSPECIFIED: "malformed ZMTP command",
            ZMQ_PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_MESSAGE: "malformed MESSAGE command",
            ZMQ_PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_HELLO: "malformed HELLO command",
            ZMQ_PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_INITIATE: "malformed INITIATE command",
            ZMQ_PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_ERROR: "malformed ERROR command",
            ZMQ_PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_READY: "malformed READY command",
            ZMQ_PROTOCOL_ERROR_ZMTP_MALFORMED_COMMAND_WELCOME: "malformed WELCOME command",
            ZMQ_PROTOCOL_ERROR_ZMTP_INVALID_METADATA: "invalid ZMTP metadata",
            ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: "cryptographic error",
            ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: "security mechanism mismatch",
            ZMQ_PROTOCOL_ERROR_ZAP_UNSPECIFIED: "ZAP unspecified",
            ZMQ_PROTOCOL_ERROR_ZAP_MALFORMED_REPLY: "malformed ZAP reply",
            ZMQ_PROTOCOL_ERROR_ZAP_BAD_REQUEST_ID: "bad ZAP request id",
            ZMQ_PROTOCOL_ERROR_ZAP_BAD_VERSION: "bad ZAP version",
            ZMQ_PROTOCOL_ERROR_ZAP_INVALID_STATUS_CODE: "invalid ZAP status code",
            ZMQ_PROTOCOL_ERROR_ZAP_INVALID_METADATA: "invalid ZAP metadata",
        ]
        return names[Int32(bitPattern: code)] ?? "protocol error 0x" + String(code, radix: 16)
    }
}

/// Watches a socket's connections through `zmq_socket_monitor`: libzmq publishes events on an
/// inproc PAIR endpoint, which this reads without blocking. Events wait there until read, so
/// read often or watch only rare events. Not thread-safe, like the socket it watches; use both
/// on one thread. Close it before the context (`close` or release).
public final class SocketMonitor {
    /// The mask of failed-handshake events: rare on a healthy connection, so a monitor watching
    /// only these cannot pile up unread events between the times it is read.
    public static let handshakeFailures: Int32 =
        ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH

    private let watched: ZMQSocket
    private let pair: ZMQSocket
    private let address: String
    private var stopped = false

    /// Starts monitoring `socket` for `events` (a mask of `ZMQ_EVENT_*`; all by default). Call it
    /// before `connect` so no event is missed.
    public init(watching socket: ZMQSocket, events: Int32 = ZMQ_EVENT_ALL) throws {
        // Unique among the monitors of this process, so of any context in it.
        address = "inproc://cnn-monitor-\(getpid())-\(SocketMonitor.nextSerial())"
        let handle = try socket.liveHandle("zmq_socket_monitor")
        guard zmq_socket_monitor(handle, address, events) == 0 else { throw ZMQError.last("zmq_socket_monitor", endpoint: address) }
        watched = socket
        do {
            pair = try ZMQSocket(context: socket.context, kind: .pair)
            try pair.setLinger(milliseconds: 0)
            try pair.connect(address)
        } catch {
            zmq_socket_monitor(handle, nil, 0)
            throw error
        }
    }

    deinit { close() }

    /// Every event that has arrived since the last call, oldest first; never waits.
    public func poll() throws -> [SocketEvent] {
        var events: [SocketEvent] = []
        while let frames = try pair.receive(timeoutMilliseconds: 0) {
            // Frame 1: a 16-bit event id then a 32-bit value, native byte order; frame 2: the endpoint.
            guard frames.count >= 2, frames[0].count >= 6 else { continue }
            let head = frames[0].bytes
            let id = head.withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) }
            let value = head.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 2, as: UInt32.self) }
            let endpoint = String(decoding: frames[1].bytes, as: UTF8.self)
            events.append(SocketEvent(kind: SocketEvent.Kind(rawValue: id), value: value, endpoint: endpoint))
        }
        return events
    }

    /// Stops monitoring and closes the reading socket. Safe to call twice.
    public func close() {
        guard !stopped else { return }
        stopped = true
        if watched.isOpen, let handle = try? watched.liveHandle("zmq_socket_monitor") { zmq_socket_monitor(handle, nil, 0) }
        pair.close()
    }

    private static let serialLock = Mutex()
    nonisolated(unsafe) private static var serial = 0

    private static func nextSerial() -> Int {
        serialLock.withLock {
            serial += 1
            return serial
        }
    }
}
