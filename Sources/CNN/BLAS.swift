import COpenBLAS

/// The one door to the matrix-multiply library. Everything that multiplies matrices goes through
/// here, so the library (OpenBLAS today) can be swapped behind it after a benchmark says so.
///
/// OpenBLAS runs single-threaded: parallelism comes from computing whole micro-batches on separate
/// threads, which keeps every result independent of the thread count (DESIGN.md, "Engine").
public enum BLAS {
    /// Row-major C = alpha * op(A) * op(B) + beta * C, with op(A) m x k and op(B) k x n.
    @inline(__always)
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// The kernel OpenBLAS chose for this CPU ("Haswell", "SkylakeX", or "Prescott" when it fell back).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// Makes every BLAS call single-threaded; call once at start-up, before any work.
    public static func useSingleThread() {
        openblas_set_num_threads(1)
    }
}
