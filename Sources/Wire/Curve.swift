import CZMQ
import Foundation

/// CURVE key pairs in Z85 text (40 characters each), as libzmq reads them.
public enum CurveKeys {
    /// A fresh key pair from libzmq's CSPRNG.
    public static func generatePair() throws -> (publicKey: String, secretKey: String) {
        var publicKey = [CChar](repeating: 0, count: 41)
        var secretKey = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&publicKey, &secretKey) == 0 else {
            throw ZMQError.last("zmq_curve_keypair")
        }
        return (string(publicKey), string(secretKey))
    }

    /// The public key belonging to a secret key, so a key file need hold only the secret.
    public static func publicKey(forSecretKey secretKey: String) throws -> String {
        try validate(secretKey, role: "secret key")
        var publicKey = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&publicKey, secretKey) == 0 else {
            throw ZMQError.last("zmq_curve_public")
        }
        return string(publicKey)
    }

    /// Throws unless `key` is 40 Z85 characters that decode to 32 bytes.
    public static func validate(_ key: String, role: String) throws {
        guard key.utf8.count == 40, decode(key) != nil else {
            throw ZMQError(operation: "CURVE \(role)", code: EINVAL,
                           message: "a CURVE key is 40 Z85 characters, got \(key.utf8.count) characters that are not a valid Z85 key",
                           hint: "generate a key pair with `cnn keygen` and pass the text from its key files")
        }
    }

    /// The 32 key bytes of a Z85 key, nil if it is not one.
    static func decode(_ key: String) -> [UInt8]? {
        guard key.utf8.count == 40 else { return nil }
        var bytes = [UInt8](repeating: 0, count: 32)
        return zmq_z85_decode(&bytes, key) == nil ? nil : bytes
    }

    /// The Z85 text of 32 key bytes.
    static func encode(_ bytes: [UInt8]) -> String? {
        guard bytes.count == 32 else { return nil }
        var text = [CChar](repeating: 0, count: 41)
        return zmq_z85_encode(&text, bytes, 32) == nil ? nil : string(text)
    }

    private static func string(_ characters: [CChar]) -> String {
        characters.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }
}

/// A client refused by a `CurveAuthenticator`.
public struct CurveRefusal: Sendable, Equatable, CustomStringConvertible {
    /// The peer's network address as libzmq reports it (an IP address for tcp).
    public var address: String
    /// The client's public key in Z85, or the mechanism it tried when that was not CURVE.
    public var publicKey: String

    public var description: String { "refused CURVE client \(publicKey) from \(address): its public key is not on the allow list" }
}

/// A ZAP handler (ZeroMQ RFC 27) that admits only CURVE clients whose public keys are listed.
///
/// Without a ZAP handler a CURVE server accepts every client that knows the server's public key.
/// This runs one background thread with a REP socket on `inproc://zeromq.zap.01` in the given
/// context; create it before binding the CURVE server socket and `stop()` it (or drop it) before
/// closing the context. A refused client gets no error from libzmq (it just retries), so refusals
/// are kept here for logging. An admitted client's messages carry its Z85 public key as their
/// "User-Id" property.
public final class CurveAuthenticator: Sendable {
    private let state: State
    private let finished = DispatchSemaphore(value: 0)

    /// How many refusals are remembered (the oldest are dropped).
    public static let refusalMemory = 100

    /// Starts authenticating in `context`, allowing the listed Z85 client public keys.
    public init(context: ZMQContext, allowedClientKeys: [String]) throws {
        let keys = try Self.keySet(allowedClientKeys)
        let socket = try ZMQSocket(context: context, kind: .rep)
        try socket.setLinger(milliseconds: 0)
        do {
            try socket.bind("inproc://zeromq.zap.01")
        } catch let error as ZMQError {
            throw ZMQError(operation: error.operation, endpoint: error.endpoint, code: error.code, message: error.message,
                           hint: "only one authenticator can run per context")
        }
        let state = State(allowed: keys)
        self.state = state
        // The socket moves to the handler thread here and is never touched by this one again;
        // libzmq allows that hand-over across a full memory barrier, which thread start is.
        let handOver = UncheckedBox(socket)
        let finished = self.finished
        let thread = Thread {
            state.serve(handOver.value)
            handOver.value.close()
            finished.signal()
        }
        thread.name = "zap-authenticator"
        thread.start()
    }

    /// Replaces the allowed client keys (Z85); later handshakes are checked against the new list,
    /// connections already admitted stay open. Safe to call from any thread while the handler runs.
    public func setAllowedClientKeys(_ keys: [String]) throws {
        let keys = try Self.keySet(keys)
        state.lock.withLock { state.allowed = keys }
    }

    private static func keySet(_ keys: [String]) throws -> Set<[UInt8]> {
        var set = Set<[UInt8]>()
        for (index, key) in keys.enumerated() {
            try CurveKeys.validate(key, role: "allowed client key #\(index + 1)")
            set.insert(CurveKeys.decode(key)!)
        }
        return set
    }

    /// The clients refused so far (most recent last, at most `refusalMemory`).
    public var refusals: [CurveRefusal] { state.lock.withLock { state.refused } }

    /// Stops the handler thread and waits for it. Safe to call twice.
    public func stop() {
        let alreadyStopped = state.lock.withLock { () -> Bool in
            defer { state.stopRequested = true }
            return state.stopRequested
        }
        if !alreadyStopped { finished.wait() }
    }

    deinit { stop() }

    /// What the handler thread shares with the owner. Why it is `Sendable`: every field is read
    /// and written under `lock`.
    private final class State: @unchecked Sendable {
        let lock = Mutex()
        var stopRequested = false
        var refused: [CurveRefusal] = []
        var allowed: Set<[UInt8]>

        init(allowed: Set<[UInt8]>) { self.allowed = allowed }

        func serve(_ socket: ZMQSocket) {
            while !lock.withLock({ stopRequested }) {
                guard let frames = try? socket.receive(timeoutMilliseconds: 50) else { continue }
                guard let reply = answer(frames.map { $0.bytes }) else { continue }
                try? socket.send(reply.map { OutgoingFrame.bytes($0) })
            }
        }

        private func answer(_ request: [[UInt8]]) -> [[UInt8]]? {
            // RFC 27 request: version, request id, domain, address, routing id, mechanism, credentials...
            guard request.count >= 6 else { return nil }
            let version = request[0], requestID = request[1]
            // The user id of an admitted client is its Z85 public key: libzmq attaches it to every
            // message of that connection as the "User-Id" property, so a receiver can tell which
            // key sent a message (`ZMQSocket.receive(..., readingProperty:)`).
            func reply(_ code: String, _ text: String, userID: String = "") -> [[UInt8]] {
                [version, requestID, Array(code.utf8), Array(text.utf8), Array(userID.utf8), []]
            }
            guard version == Array("1.0".utf8) else { return reply("500", "unsupported ZAP version") }
            let address = String(decoding: request[3], as: UTF8.self)
            let mechanism = String(decoding: request[5], as: UTF8.self)
            guard mechanism == "CURVE", request.count >= 7, request[6].count == 32 else {
                remember(CurveRefusal(address: address, publicKey: "(mechanism \(mechanism))"))
                return reply("400", "CURVE required")
            }
            if lock.withLock({ allowed.contains(request[6]) }) {
                return reply("200", "OK", userID: CurveKeys.encode(request[6]) ?? "")
            }
            remember(CurveRefusal(address: address, publicKey: CurveKeys.encode(request[6]) ?? "?"))
            return reply("400", "unknown client key")
        }

        private func remember(_ refusal: CurveRefusal) {
            lock.withLock {
                refused.append(refusal)
                if refused.count > CurveAuthenticator.refusalMemory {
                    refused.removeFirst(refused.count - CurveAuthenticator.refusalMemory)
                }
            }
        }
    }
}

/// Carries a non-Sendable value across a thread boundary where the code guarantees exclusive use.
private final class UncheckedBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
