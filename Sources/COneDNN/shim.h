#include <dnnl.h>
#include <stdint.h>

// Debian's oneDNN runs its GEMM on OpenMP (libgomp). omp.h is on gcc's include path, not
// clang's, so the one function the engine needs is declared here.
void omp_set_num_threads(int count);

// oneDNN exports its bf16 GEMM (row-major, like dnnl_sgemm; C = alpha op(A) op(B) + beta C with
// bf16 A and B and fp32 C, accumulated in fp32) but its public headers do not declare it; this is
// the declaration of oneDNN's own src/common/gemm.cpp, with bf16 values as their 16 bits.
dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K, float alpha,
                                    const uint16_t *A, dnnl_dim_t lda, const uint16_t *B, dnnl_dim_t ldb, float beta,
                                    float *C, dnnl_dim_t ldc);

#if defined(__x86_64__)
#include <immintrin.h>

// Whether this CPU has AVX-512F, which cnn_round_to_bf16_avx512 needs.
static inline int cnn_has_avx512f(void) { return __builtin_cpu_supports("avx512f"); }

// destination[i] = source[i] rounded to bf16, to nearest, ties to even, for i < count - count % 16
// (the caller rounds the tail): the bit arithmetic of CNN's BFloat16.round, sixteen values at a
// time. NaN becomes the quiet NaN of its top bits; subnormals round like any bit pattern. Plain
// integer arithmetic, so the same bits as the scalar rounding on any CPU that runs it; AVX-512F
// only (cnn_has_avx512f), which every CPU with bf16 products has.
__attribute__((target("avx512f")))
static inline void cnn_round_to_bf16_avx512(const float *source, uint16_t *destination, long count) {
    const __m512i roundingBias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF), infinity = _mm512_set1_epi32(0x7F800000);
    const __m512i quietBit = _mm512_set1_epi32(0x0040);
    for (long i = 0; i + 16 <= count; i += 16) {
        __m512i bits = _mm512_loadu_si512((const void *)(source + i));
        __m512i upper = _mm512_srli_epi32(bits, 16);
        __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, roundingBias), _mm512_and_si512(upper, one)), 16);
        __mmask16 isNaN = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, magnitude), infinity);
        rounded = _mm512_mask_mov_epi32(rounded, isNaN, _mm512_or_si512(upper, quietBit));
        _mm256_storeu_si256((__m256i *)(destination + i), _mm512_cvtepi32_epi16(rounded));
    }
}
#endif
