/// A growable Float32 buffer at a stable, 64-byte aligned address. Layers keep their activations
/// and gradients in these so a training step allocates nothing once shapes are known.
public final class FloatBuffer: @unchecked Sendable {
    // Sendable because ownership moves between threads whole (one thread uses a replica at a time).
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public private(set) var capacity: Int

    public init(count: Int = 0) {
        capacity = max(count, 16)
        pointer = FloatBuffer.allocate(capacity)
        pointer.initialize(repeating: 0, count: capacity)
    }

    deinit { free(pointer) }

    /// Makes room for `count` floats; contents are not kept when it grows.
    @discardableResult
    public func reserve(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            free(pointer)
            capacity = count
            pointer = FloatBuffer.allocate(count)
            pointer.initialize(repeating: 0, count: count)
        }
        return pointer
    }

    public func zero(_ count: Int) {
        pointer.update(repeating: 0, count: min(count, capacity))
    }

    private static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, count * MemoryLayout<Float>.stride) == 0, let raw else {
            fatalError("out of memory allocating \(count) floats")
        }
        return raw.bindMemory(to: Float.self, capacity: count)
    }
}

/// The Int32 twin of `FloatBuffer`, for max-pooling switches and labels.
public final class IndexBuffer: @unchecked Sendable {
    public private(set) var pointer: UnsafeMutablePointer<Int32>
    public private(set) var capacity: Int

    public init(count: Int = 0) {
        capacity = max(count, 16)
        pointer = .allocate(capacity: capacity)
        pointer.initialize(repeating: 0, count: capacity)
    }

    deinit { pointer.deallocate() }

    @discardableResult
    public func reserve(_ count: Int) -> UnsafeMutablePointer<Int32> {
        if count > capacity {
            pointer.deallocate()
            capacity = count
            pointer = .allocate(capacity: count)
            pointer.initialize(repeating: 0, count: count)
        }
        return pointer
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
