import CZMQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed libzmq call: which operation, on which endpoint, the errno and libzmq's own words,
/// plus a hint on how to fix the common cases.
public struct ZMQError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What was being done, for example `bind` or `setsockopt ZMQ_LINGER`.
    public var operation: String
    /// The endpoint involved, when there is one.
    public var endpoint: String?
    /// The errno value libzmq reported.
    public var code: Int32
    /// `zmq_strerror(code)`, or a sentence of ours for failures that are not libzmq's.
    public var message: String
    /// How to fix it, when we know.
    public var hint: String?

    /// An error with explicit parts; `message` defaults to `zmq_strerror(code)`.
    public init(operation: String, endpoint: String? = nil, code: Int32, message: String? = nil, hint: String? = nil) {
        self.operation = operation
        self.endpoint = endpoint
        self.code = code
        self.message = message ?? String(cString: zmq_strerror(code))
        self.hint = hint ?? ZMQError.defaultHint(code: code, operation: operation)
    }

    /// The error of the libzmq call that just failed on this thread (reads `zmq_errno`).
    static func last(_ operation: String, endpoint: String? = nil) -> ZMQError {
        ZMQError(operation: operation, endpoint: endpoint, code: zmq_errno())
    }

    /// True when the operation would have blocked: a receive or send timeout ran out, or a
    /// non-blocking send found the peer's queue full.
    public var isWouldBlock: Bool { code == EAGAIN }

    /// True when a ROUTER socket with `setRouterMandatory(true)` was asked to send to a peer it
    /// does not know (never connected, or disconnected since).
    public var isPeerUnreachable: Bool { code == EHOSTUNREACH }

    /// True when the socket or its context was closed or terminated under the call.
    public var isTerminated: Bool { code == ETERM || code == ENOTSOCK }

    public var description: String {
        var text = "zmq \(operation)"
        if let endpoint { text += " \(endpoint)" }
        text += ": \(message) (errno \(code))"
        if let hint { text += "; \(hint)" }
        return text
    }

    private static func defaultHint(code: Int32, operation: String) -> String? {
        switch code {
        case EADDRINUSE:
            return "another process already listens there: choose another port (or port 0 / '*' for any free one) or stop that process"
        case EADDRNOTAVAIL:
            return "that address is not on any interface of this host: bind to 0.0.0.0, 127.0.0.1 or one of this host's addresses"
        case EPROTONOSUPPORT:
            return "supported transports are tcp://HOST:PORT, ipc://PATH and inproc://NAME"
        case EINVAL where operation == "bind" || operation == "connect":
            return "an endpoint looks like tcp://HOST:PORT, ipc://PATH or inproc://NAME"
        case ENODEV:
            return "the network interface named in the endpoint does not exist"
        case EMSGSIZE:
            return "the message exceeds the socket's maximum message size"
        default:
            return nil
        }
    }
}
