import CZMQ

/// One frame to send: a few bytes (copied into libzmq, fine for headers) or a Float32 tensor
/// (handed to libzmq without a copy).
public enum OutgoingFrame: Sendable {
    /// Bytes copied into libzmq.
    case bytes([UInt8])
    /// A tensor libzmq sends from the payload's own buffer, holding a reference until it is out.
    case payload(FloatPayload)
    /// A tensor packed in another `TensorEncoding` (bf16), sent the same way.
    case packed(PackedTensor)

    /// The frame's length on the wire.
    public var byteCount: Int {
        switch self {
        case .bytes(let bytes): return bytes.count
        case .payload(let payload): return payload.byteCount
        case .packed(let packed): return packed.byteCount
        }
    }

    /// The frame's bytes as they go on the wire (a copy; for tests, fuzzers and logs).
    public func copyBytes() -> [UInt8] {
        switch self {
        case .bytes(let bytes):
            return bytes
        case .payload(let payload):
            return payload.withUnsafeBufferPointer { Array(UnsafeRawBufferPointer($0)) }
        case .packed(let packed):
            return packed.copyBytes()
        }
    }
}

/// One received frame. Owns the libzmq message it came in (closed when the frame goes away), so
/// its bytes can be read in place; or, for tests and fuzzers, a copy of given bytes.
///
/// Why it is `Sendable`: it never changes after `init`, and closing a zmq message needs neither
/// its socket nor any particular thread.
public final class ReceivedFrame: @unchecked Sendable {
    /// The frame's length in bytes.
    public let count: Int
    /// True when the sender marked more frames of the same message after this one.
    public let hasMore: Bool
    private let message: UnsafeMutablePointer<zmq_msg_t>?
    private let allocation: UnsafeMutableRawPointer?
    private let base: UnsafeRawPointer?

    /// Takes over a received message: the frame closes and frees it.
    init(takingMessage message: UnsafeMutablePointer<zmq_msg_t>) {
        self.message = message
        allocation = nil
        count = zmq_msg_size(message)
        hasMore = zmq_msg_more(message) != 0
        base = UnsafeRawPointer(zmq_msg_data(message))
    }

    /// A frame holding a copy of `bytes`, for decoding without a socket. The copy starts
    /// `misalignedBy` bytes past a 16-byte boundary, so tests can reproduce what a transport with
    /// poorly aligned buffers delivers.
    public init(bytes: [UInt8], misalignedBy offset: Int = 0) {
        let shift = max(0, offset) % 16
        let allocation = UnsafeMutableRawPointer.allocate(byteCount: bytes.count + shift, alignment: 16)
        bytes.withUnsafeBytes { source in
            if let start = source.baseAddress {
                (allocation + shift).copyMemory(from: start, byteCount: source.count)
            }
        }
        self.allocation = allocation
        message = nil
        count = bytes.count
        hasMore = false
        base = UnsafeRawPointer(allocation + shift)
    }

    deinit {
        if let message {
            zmq_msg_close(message)
            message.deallocate()
        }
        allocation?.deallocate()
    }

    /// Calls `body` with the frame's bytes, in place. The pointer is valid only inside `body`.
    public func withUnsafeBytes<R, Failure: Error>(_ body: (UnsafeRawBufferPointer) throws(Failure) -> R) throws(Failure) -> R {
        try body(UnsafeRawBufferPointer(start: count == 0 ? nil : base, count: count))
    }

    /// A copy of the frame's bytes.
    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The start of the bytes; valid while the frame lives (used by payloads that read in place).
    var baseAddress: UnsafeRawPointer? { count == 0 ? nil : base }
}
