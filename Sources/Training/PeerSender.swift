import CNN
import Foundation
import Logging
import Wire

/// Sends a sharded worker's messages to its peers. A peer that did not take one (not listening
/// yet, paused before the connection to it was made, or gone) is left alone for
/// `retryInterval`: the worker's loop (its heartbeats) is not held up by one peer's send timeout
/// after another, and the worker sends what that peer lacks again later, never dropping it.
final class PeerSender {
    private let mesh: PeerTransport
    private let logger: Logger
    /// Peers a send failed to, and when to try them again.
    private var unreadyUntil: [UInt32: Double] = [:]
    private var failed = false

    init(mesh: PeerTransport, logger: Logger) {
        self.mesh = mesh
        self.logger = logger
    }

    /// Sends to a peer; whether it took the message.
    func send(_ message: Message, to member: UInt32, step: Int) -> Bool {
        if let until = unreadyUntil[member], monotonicSeconds() < until {
            failed = true
            return false
        }
        do {
            try mesh.send(Envelope(runID: 0, step: UInt64(step), message: message), to: member)
            if unreadyUntil.removeValue(forKey: member) != nil { logger.info("step \(step): worker w\(member) takes messages again") }
            return true
        } catch {
            if unreadyUntil[member] == nil {
                logger.warning("step \(step): could not send \(message.typeName) to worker w\(member): \(error); trying again while it is a member")
            }
            unreadyUntil[member] = monotonicSeconds() + Self.retryInterval
            failed = true
            return false
        }
    }

    /// Whether a send failed since the last call: then it is time to send what peers lack again.
    func takeFailure() -> Bool {
        defer { failed = false }
        return failed
    }

    /// Seconds between tries to a peer that did not take a message.
    static let retryInterval = 0.3
}
