/// What the coordinator and its workers need of a network, and nothing more (ps-lite's "van"):
/// send an envelope to a peer, receive the next message with who sent it, count the bytes. The
/// ZeroMQ implementation is `MessageSocket`; `InMemoryTransport` carries the same encoded frames
/// between objects of one process, for tests of the logic above the network.
public protocol MessageTransport: AnyObject {
    /// Sends `envelope` to `peer` (a routing transport needs one; a connected one sends to its
    /// only peer and takes nil).
    func send(_ envelope: Envelope, to peer: PeerID?) throws
    /// The next message, waiting up to `timeoutMilliseconds` (0 = do not wait); nil on timeout.
    /// A malformed message comes back as a failed `result`, never as a throw.
    func receive(timeoutMilliseconds: Int) throws -> Incoming?
    /// Bytes sent and received so far, all frames included.
    var bytesSent: Int { get }
    var bytesReceived: Int { get }
}

extension MessageSocket: MessageTransport {}
