#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A growable Float32 buffer at a stable, 64-byte aligned address, zero when allocated. Layers
/// keep their activations and gradients in these so a training step allocates nothing once
/// shapes are known.
///
/// Large buffers are anonymous memory mappings: the kernel hands out zero pages as they are first
/// touched, so a buffer that is never written (a network's own gradients when its layers are bound
/// elsewhere, say) costs no resident memory, and nothing is spent zero-filling.
public final class FloatBuffer: @unchecked Sendable {
    // Sendable because ownership moves between threads whole (one thread uses a replica at a time).
    public private(set) var pointer: UnsafeMutablePointer<Float>
    public private(set) var capacity: Int

    public init(count: Int = 0) {
        capacity = max(count, 16)
        pointer = ZeroedMemory.allocate(bytes: capacity * MemoryLayout<Float>.stride).bindMemory(to: Float.self, capacity: capacity)
    }

    deinit { ZeroedMemory.free(pointer, bytes: capacity * MemoryLayout<Float>.stride) }

    /// Makes room for `count` floats; contents are not kept when it grows (new room reads as zero).
    @discardableResult
    public func reserve(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            ZeroedMemory.free(pointer, bytes: capacity * MemoryLayout<Float>.stride)
            capacity = count
            pointer = ZeroedMemory.allocate(bytes: count * MemoryLayout<Float>.stride).bindMemory(to: Float.self, capacity: count)
        }
        return pointer
    }

    public func zero(_ count: Int) {
        pointer.update(repeating: 0, count: min(count, capacity))
    }
}

/// The Int32 twin of `FloatBuffer`, for max-pooling switches and labels.
public final class IndexBuffer: @unchecked Sendable {
    public private(set) var pointer: UnsafeMutablePointer<Int32>
    public private(set) var capacity: Int

    public init(count: Int = 0) {
        capacity = max(count, 16)
        pointer = ZeroedMemory.allocate(bytes: capacity * MemoryLayout<Int32>.stride).bindMemory(to: Int32.self, capacity: capacity)
    }

    deinit { ZeroedMemory.free(pointer, bytes: capacity * MemoryLayout<Int32>.stride) }

    @discardableResult
    public func reserve(_ count: Int) -> UnsafeMutablePointer<Int32> {
        if count > capacity {
            ZeroedMemory.free(pointer, bytes: capacity * MemoryLayout<Int32>.stride)
            capacity = count
            pointer = ZeroedMemory.allocate(bytes: count * MemoryLayout<Int32>.stride).bindMemory(to: Int32.self, capacity: count)
        }
        return pointer
    }
}

/// Zero-filled, 64-byte aligned memory: small blocks from the C heap, large ones mapped.
enum ZeroedMemory {
    /// From this size on, memory is mapped. glibc maps blocks this large too, but the zero-fill
    /// the buffers promised would then touch every page at once.
    static let mappingThreshold = 1 << 20

    static func allocate(bytes: Int) -> UnsafeMutableRawPointer {
        if bytes >= mappingThreshold {
            #if canImport(Darwin)
            let flags = MAP_PRIVATE | MAP_ANON
            #else
            let flags = MAP_PRIVATE | MAP_ANONYMOUS
            #endif
            guard let raw = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0),
                  raw != UnsafeMutableRawPointer(bitPattern: -1) else {
                fatalError("out of memory mapping \(bytes) bytes")
            }
            #if os(Linux)
            // Large weight and gradient arrays are streamed whole every step: 2 MiB pages cut
            // the page faults and TLB misses (a hint; ignored where transparent huge pages are off).
            _ = madvise(raw, bytes, MADV_HUGEPAGE)
            #endif
            return raw
        }
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes")
        }
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        return raw
    }

    static func free(_ pointer: UnsafeMutableRawPointer, bytes: Int) {
        if bytes >= mappingThreshold {
            munmap(pointer, bytes)
        } else {
            #if canImport(Glibc)
            Glibc.free(pointer)
            #else
            Darwin.free(pointer)
            #endif
        }
    }
}
