import Foundation
import Wire

/// Why a coordinator's handshake turned a worker away, read from the worker's socket monitor
/// and the worker's own settings: what happened and how to fix it, as one sentence for the log
/// and the final error. libzmq sends a refused client no message, only monitor events, so this
/// is the only place the worker can learn it was refused.
public struct HandshakeRefusal: Sendable, Equatable, CustomStringConvertible {
    /// What happened and the fix.
    public var description: String

    /// The socket events `explain` understands, for `SocketMonitor(watching:events:)`.
    public static let monitoredEvents = SocketMonitor.handshakeFailures

    /// Explains `event` for a worker connecting to `coordinator` with `security` (nil: without
    /// keys); nil when the event is not a failed handshake.
    public static func explain(_ event: SocketEvent, coordinator: String, security: WorkerSecurity?) -> HandshakeRefusal? {
        switch event.kind {
        case .handshakeFailedAuth:
            return HandshakeRefusal(description: authFailure(status: event.value, coordinator: coordinator, security: security))
        case .handshakeFailedProtocol:
            return HandshakeRefusal(description: protocolFailure(code: event.value, coordinator: coordinator, security: security))
        case .handshakeFailedNoDetail:
            let reason = String(cString: strerror(Int32(bitPattern: event.value)))
            guard let security else {
                return HandshakeRefusal(description: "the handshake with the coordinator at \(coordinator) failed (\(reason)); "
                    + "check that the address is a cnn-coord's, as it prints it")
            }
            // The coordinator drops a client whose HELLO it cannot open without saying why: the
            // worker sees only the connection closing. Other causes are possible, so say "usual".
            return HandshakeRefusal(description: "the coordinator at \(coordinator) closed the connection during the CURVE handshake "
                + "(\(reason)); the usual cause is a --server-public-key that is not the coordinator's: check that "
                + "\(security.serverPublicKeyFile) is the .key written next to the coordinator's --curve-secret-key")
        default:
            return nil
        }
    }

    private static func authFailure(status: UInt32, coordinator: String, security: WorkerSecurity?) -> String {
        guard let security else {
            return "the coordinator at \(coordinator) refused this worker (authentication failed, ZAP status \(status))"
        }
        switch status {
        case 400:
            return "the coordinator at \(coordinator) refused this worker's key \(security.keyPair.publicKey) (CURVE authentication "
                + "failed): add \(security.publicKeyFileHint) to the coordinator's --authorized-keys folder and restart the "
                + "coordinator, or start the worker with a key pair whose .key is there"
        case 300:
            return "the coordinator at \(coordinator) could not check this worker's key (ZAP status 300: a temporary failure)"
        default:
            return "the coordinator at \(coordinator) refused this worker's key \(security.keyPair.publicKey) (CURVE authentication "
                + "failed, ZAP status \(status)); the coordinator's log says which keys it refuses"
        }
    }

    private static func protocolFailure(code: UInt32, coordinator: String, security: WorkerSecurity?) -> String {
        if code == ProtocolError.mechanismMismatch {
            // A mismatch says only that the two ends differ; this worker's own settings say which way.
            if let security {
                return "the coordinator at \(coordinator) does not use CURVE, but this worker does (security mechanism mismatch): "
                    + "start the worker without --curve-key \(security.keyFile) and --server-public-key, or restart the "
                    + "coordinator with --curve-secret-key and --authorized-keys"
            }
            return "the coordinator at \(coordinator) requires keys and this worker has none (security mechanism mismatch; a "
                + "cnn-coord started with --curve-secret-key uses CURVE): start the worker with --curve-key NAME.key_secret "
                + "--server-public-key COORDINATOR.key (make the pair with `cnn keygen --out DIR --name NAME` and put NAME.key "
                + "in the coordinator's --authorized-keys folder)"
        }
        if code == ProtocolError.cryptographic, let security {
            return "the CURVE handshake with the coordinator at \(coordinator) failed (cryptographic error: the keys do not fit): "
                + "check that \(security.serverPublicKeyFile) is the coordinator's public key"
        }
        return "the handshake with the coordinator at \(coordinator) failed (ZMTP protocol error: \(ProtocolError.name(code))); "
            + "check that the address is a cnn-coord's and that both run the same version"
    }
}

extension WorkerSecurity {
    /// The worker's public key file as `cnn keygen` names it next to the secret one, or the key
    /// itself when the secret file is not named NAME.key_secret.
    var publicKeyFileHint: String {
        let suffix = KeyFiles.secretSuffix
        guard keyFile.hasSuffix(suffix) else { return "this worker's public key (\(keyPair.publicKey))" }
        return String(keyFile.dropLast(suffix.count)) + KeyFiles.publicSuffix
    }
}

/// Turns the monitor's handshake events into the causes worth telling the user, each once.
///
/// A "no detail" failure (the connection closed mid-handshake) is vague and also comes just
/// before a precise one: a worker without keys at a keyed coordinator first sees the connection
/// close, then, on the next attempt, the mechanism mismatch. So a vague cause is told only when
/// nothing precise followed it for `vagueDelay` seconds, and never after a precise one.
public struct HandshakeRefusalLog {
    public let coordinator: String
    public let security: WorkerSecurity?
    public let vagueDelay: Double
    private var precise: HandshakeRefusal?
    private var vague: (refusal: HandshakeRefusal, since: Double)?
    private var told: Set<String> = []

    public init(coordinator: String, security: WorkerSecurity?, vagueDelay: Double = 5) {
        self.coordinator = coordinator
        self.security = security
        self.vagueDelay = vagueDelay
    }

    /// The best cause known so far, for the final error; nil when no handshake failed.
    public var cause: HandshakeRefusal? { precise ?? vague?.refusal }

    /// Whether a failure said exactly why (not only that the connection closed).
    public var knowsThePreciseCause: Bool { precise != nil }

    /// Takes the events read at `now` (seconds, any monotonic clock) and returns the causes to
    /// tell now: each cause once, however often it recurs.
    public mutating func record(_ events: [SocketEvent], at now: Double) -> [HandshakeRefusal] {
        var tell: [HandshakeRefusal] = []
        for event in events {
            guard let refusal = HandshakeRefusal.explain(event, coordinator: coordinator, security: security) else { continue }
            if event.kind == .handshakeFailedNoDetail {
                if vague == nil { vague = (refusal, now) }
                continue
            }
            precise = refusal
            if told.insert(refusal.description).inserted { tell.append(refusal) }
        }
        if precise == nil, let vague, now - vague.since >= vagueDelay, told.insert(vague.refusal.description).inserted {
            tell.append(vague.refusal)
        }
        return tell
    }
}
