/// A peer worker: its id (the coordinator's numbering), where it listens, and its CURVE public key (Z85) or nil on a plain run.
public struct PeerAddress: Equatable, Sendable {
    public var workerID: UInt32
    public var endpoint: String
    public var publicKey: String?

    public init(workerID: UInt32, endpoint: String, publicKey: String?) {
        self.workerID = workerID
        self.endpoint = endpoint
        self.publicKey = publicKey
    }
}

/// A message from a peer, with the sender's worker id: authenticated by its CURVE key when keys are on, as claimed otherwise.
public struct PeerIncoming: Sendable {
    public let sender: UInt32
    public let result: Result<Envelope, DecodeError>

    public init(sender: UInt32, result: Result<Envelope, DecodeError>) {
        self.sender = sender
        self.result = result
    }
}

/// Worker-to-worker messaging for the sharded reduction.
public protocol PeerTransport: AnyObject {
    var endpoint: String { get }
    var bytesSent: Int { get }
    var bytesReceived: Int { get }
    func setPeers(_ peers: [PeerAddress]) throws
    func send(_ envelope: Envelope, to worker: UInt32) throws
    func receive(timeoutMilliseconds: Int) throws -> PeerIncoming?
    func close()
}
