import COneDNN

/// The few pieces of oneDNN's primitive API that the bf16 convolutions use
/// (`OneDNNConvolution`): its CPU engine, memory descriptors, primitives and reorders.
///
/// Every primitive here is made with a user-managed scratchpad: Debian's oneDNN is built with
/// concurrent execution on, where a primitive's own scratchpad belongs to the primitive, and its
/// primitive cache hands the same primitive to every replica that asks for the same shapes, so
/// two replicas on two threads would share that scratch. With the scratchpad passed in from each
/// replica's workspace a primitive holds no state while it runs.
///
/// Threads: oneDNN runs its primitives on OpenMP (libgomp), whose thread count is a setting of
/// the calling thread; every creation and execution here sets it to one first, so a primitive
/// sees one thread when its work is split (its loop order, hence its sums' order, is then fixed
/// by the shapes) and runs on the engine thread that calls it, as everything else does.
enum OneDNN {
    /// The CPU engine: one per process. (`nonisolated(unsafe)`: oneDNN's engines are safe to use
    /// from every thread, and this one is never changed.)
    nonisolated(unsafe) static let engine: dnnl_engine_t = {
        var engine: dnnl_engine_t?
        check(dnnl_engine_create(&engine, dnnl_cpu, 0), "creating the CPU engine")
        return engine!
    }()

    /// Failures here mean a bug (shapes are checked when layers are built), not bad input.
    static func check(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
        precondition(status == dnnl_success, "oneDNN refused \(what()) (status \(status.rawValue))")
    }

    /// A plain memory descriptor: `dimensions` of `type` laid out as `tag` (`dnnl_format_tag_any`
    /// lets a primitive choose).
    static func descriptor(_ dimensions: [Int], _ type: dnnl_data_type_t, _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t {
        var descriptor = dnnl_memory_desc_t()
        let dims = dimensions.map { Int64($0) }
        check(dnnl_memory_desc_init_by_tag(&descriptor, Int32(dims.count), dims, type, tag), "the memory descriptor \(dimensions)")
        return descriptor
    }

    static func bytes(_ descriptor: dnnl_memory_desc_t) -> Int {
        var descriptor = descriptor
        return dnnl_memory_desc_get_size(&descriptor)
    }

    static func equal(_ a: dnnl_memory_desc_t, _ b: dnnl_memory_desc_t) -> Bool {
        var a = a, b = b
        return dnnl_memory_desc_equal(&a, &b) != 0
    }

    /// Primitive attributes asking for a user-managed scratchpad (see above).
    /// (`nonisolated(unsafe)`: attributes are only read once made.)
    nonisolated(unsafe) static let userScratchpad: OpaquePointer = {
        var attributes: dnnl_primitive_attr_t?
        check(dnnl_primitive_attr_create(&attributes), "creating primitive attributes")
        check(dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user), "a user scratchpad")
        return attributes!
    }()
}

/// A oneDNN memory object without memory of its own: `bind` points it at a buffer before each
/// use, so that the buffers stay the engine's (`FloatBuffer`s of the layer or its workspace).
final class OneDNNMemory {
    let descriptor: dnnl_memory_desc_t
    let handle: dnnl_memory_t
    /// Bytes of the buffer this memory needs.
    let bytes: Int

    init(_ descriptor: dnnl_memory_desc_t) {
        var copy = descriptor
        var handle: dnnl_memory_t?
        OneDNN.check(dnnl_memory_create(&handle, &copy, OneDNN.engine, nil), "creating a memory object")
        self.descriptor = descriptor
        self.handle = handle!
        bytes = OneDNN.bytes(descriptor)
    }

    deinit { dnnl_memory_destroy(handle) }

    /// Points this memory at `pointer` (at least `bytes` long) and returns it for an argument list.
    func bind(_ pointer: UnsafeRawPointer) -> dnnl_memory_t {
        OneDNN.check(dnnl_memory_set_data_handle(handle, UnsafeMutableRawPointer(mutating: pointer)), "binding a buffer")
        return handle
    }
}

/// One primitive and its descriptor, executed single-threaded with a scratchpad it is given.
final class OneDNNPrimitive {
    let descriptor: dnnl_primitive_desc_t
    let primitive: dnnl_primitive_t
    private let scratchpad: OneDNNMemory

    /// The primitive for `descriptor`, which it then owns.
    init(owning descriptor: dnnl_primitive_desc_t) {
        omp_set_num_threads(1)
        var primitive: dnnl_primitive_t?
        OneDNN.check(dnnl_primitive_create(&primitive, descriptor), "creating a primitive")
        self.descriptor = descriptor
        self.primitive = primitive!
        scratchpad = OneDNNMemory(Self.memoryDescriptor(descriptor, dnnl_query_scratchpad_md))
    }

    /// A reorder from memory laid out as `source` to memory laid out as `destination`; for
    /// Float32 to bf16, each value rounded to nearest even.
    convenience init(reorderFrom source: dnnl_memory_desc_t, to destination: dnnl_memory_desc_t) {
        omp_set_num_threads(1)
        var source = source, destination = destination
        var descriptor: dnnl_primitive_desc_t?
        OneDNN.check(
            dnnl_reorder_primitive_desc_create(&descriptor, &source, OneDNN.engine, &destination, OneDNN.engine, OneDNN.userScratchpad),
            "a reorder")
        self.init(owning: descriptor!)
    }

    deinit {
        dnnl_primitive_destroy(primitive)
        dnnl_primitive_desc_destroy(descriptor)
    }

    /// The memory descriptor the primitive chose for `query` (its source, weights, ...).
    func memoryDescriptor(_ query: dnnl_query_t) -> dnnl_memory_desc_t { Self.memoryDescriptor(descriptor, query) }

    private static func memoryDescriptor(_ descriptor: dnnl_primitive_desc_t, _ query: dnnl_query_t) -> dnnl_memory_desc_t {
        dnnl_primitive_desc_query_md(descriptor, query, 0).pointee
    }

    /// The implementation oneDNN picked, such as "jit_bf16:avx512_core_bf16".
    var implementation: String {
        var name: UnsafePointer<CChar>?
        guard dnnl_primitive_desc_query(descriptor, dnnl_query_impl_info_str, 0, &name) == dnnl_success, let name else { return "unknown" }
        return String(cString: name)
    }

    /// Bytes of scratch the primitive needs while it runs.
    var scratchpadBytes: Int { scratchpad.bytes }

    /// Runs the primitive on this thread with `arguments` (DNNL_ARG_* and memory) and the
    /// scratchpad at `scratch` (at least `scratchpadBytes` long).
    func execute(on stream: dnnl_stream_t, _ arguments: [(Int32, dnnl_memory_t)], scratch: UnsafeMutableRawPointer) {
        omp_set_num_threads(1)
        var list = arguments.map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1) }
        if scratchpad.bytes > 0 { list.append(dnnl_exec_arg_t(arg: DNNL_ARG_SCRATCHPAD, memory: scratchpad.bind(scratch))) }
        OneDNN.check(dnnl_primitive_execute(primitive, stream, Int32(list.count), list), "executing \(implementation)")
    }
}

/// A oneDNN stream on the CPU engine: one per object that executes primitives, used by one thread at a time.
final class OneDNNStream {
    let stream: dnnl_stream_t

    init() {
        var stream: dnnl_stream_t?
        OneDNN.check(dnnl_stream_create(&stream, OneDNN.engine, dnnl_stream_default_flags.rawValue), "creating a stream")
        self.stream = stream!
    }

    deinit { dnnl_stream_destroy(stream) }
}
