// Stores that bypass the cache, which Swift cannot express: for large tensors written once and
// read much later, they save reading each cache line before writing it and keep the cache for
// the tensors read next. Clang's builtins, so the same code serves x86-64 and arm64.

typedef float cnn_float4 __attribute__((ext_vector_type(4)));

// destination[2i] = source[i] and destination[2i + 1] = 0 for i < count. count must be a
// multiple of 4 and destination 16-byte aligned; source may have any alignment.
static inline void cnn_stream_spread_to_even(const float *source, float *destination, long count) {
    for (long i = 0; i < count; i += 4) {
        cnn_float4 values;
        __builtin_memcpy(&values, source + i, sizeof values);
        cnn_float4 low = {values.x, 0, values.y, 0};
        cnn_float4 high = {values.z, 0, values.w, 0};
        __builtin_nontemporal_store(low, (cnn_float4 *)(destination + 2 * i));
        __builtin_nontemporal_store(high, (cnn_float4 *)(destination + 2 * i + 4));
    }
}

// Orders the streaming stores before every later store, as other threads see them: call once
// after a tensor's streaming stores, before handing it on.
static inline void cnn_stream_fence(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}
