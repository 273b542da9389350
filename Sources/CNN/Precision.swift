import COneDNN

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The arithmetic of the matrix products of convolutions and dense layers.
public enum Precision: String, Sendable, CaseIterable {
    /// Float32 operands and sums: the engine's own arithmetic.
    case fp32
    /// Operands rounded to bf16 (round to nearest even), products summed in Float32 by oneDNN's
    /// bf16 convolutions (`OneDNNConvolution`) or its bf16 GEMM. Everything else (weights, gradients' sums across
    /// micro-batches, batch norm, softmax, the loss, the optimiser) stays Float32.
    case bf16
}

/// Whether this CPU computes bf16 products in hardware, as oneDNN sees it.
public enum BFloat16Support {
    /// Set to 1 to make this process behave as on a CPU without bf16 products (a test hook: the
    /// refusal of `train.precision: bf16` and the fall-back of `bf16-if-available` can be tried
    /// on any machine).
    public static let pretendMissingVariable = "CNN_PRETEND_NO_BF16"

    /// Whether the instruction set oneDNN generates its kernels for has bf16 dot products:
    /// AVX-512-BF16 (`vdpbf16ps`) or AMX. Elsewhere oneDNN emulates them several times slower
    /// than its fp32 GEMM, so bf16 counts as missing. oneDNN's ISA masks nest, so a wider set
    /// holds all of AVX-512-BF16's bits; `ONEDNN_MAX_CPU_ISA` below it turns bf16 off too.
    public static func hasBFloat16Products(instructionSet: dnnl_cpu_isa_t) -> Bool {
        let bf16 = dnnl_cpu_isa_avx512_core_bf16.rawValue
        return instructionSet.rawValue & bf16 == bf16
    }

    /// Whether bf16 products run in hardware in this process: checked once, from oneDNN's
    /// effective instruction set and `CNN_PRETEND_NO_BF16`.
    public static let isAvailable: Bool = {
        if let value = getenv(pretendMissingVariable), String(cString: value) == "1" { return false }
        return hasBFloat16Products(instructionSet: dnnl_get_effective_cpu_isa())
    }()

    /// Why bf16 is missing here, for refusals: the instruction set oneDNN found, or the test hook.
    public static var missingReason: String {
        if let value = getenv(pretendMissingVariable), String(cString: value) == "1" {
            return "\(pretendMissingVariable)=1 pretends this CPU has no bf16 products"
        }
        return "oneDNN finds \(BLAS.oneDNNInstructionSet) on this CPU, which has neither AVX-512-BF16 nor AMX"
    }

    /// The kernels bf16 products run on here, for logs: "oneDNN bf16 convolutions
    /// (jit_bf16:avx512_core_bf16) and bf16 GEMM on AVX-512-BF16".
    public static var kernelName: String {
        guard isAvailable else { return "none (\(missingReason))" }
        return "oneDNN bf16 convolutions (\(convolutionImplementation)) and bf16 GEMM on \(BLAS.oneDNNInstructionSet)"
    }

    /// The implementation oneDNN picks for a typical bf16 convolution here (3x3, 16 channels;
    /// each layer reports its own in `Conv2D.kernelDescription`).
    static let convolutionImplementation: String = {
        let shape = FeatureShape(channels: 16, height: 8, width: 8)
        let geometry = ConvolutionGeometry(
            inputShape: shape, outputShape: shape, kernelHeight: 3, kernelWidth: 3, stride: 1, padding: 1, dilation: 1, groups: 1)
        return (try? OneDNNConvolution.Plan(geometry: geometry, batch: 1, bias: false))?.forward.implementation ?? "none"
    }()
}

/// Where bf16 products keep their rounded operands: a network's workspace holds one, as its
/// layers multiply one after another on one thread (see `LayerWorkspace`).
public final class BFloat16Operands: @unchecked Sendable {
    // Sendable for LayerWorkspace's reason: it moves between threads whole with its replica.
    let a = BFloat16Buffer()
    let b = BFloat16Buffer()
    /// A layer's weights, rounded once for all the products of one call (blocks, groups, passes).
    let weights = BFloat16Buffer()
    /// A block's output gradient, rounded once for the weight-gradient and input-gradient products.
    let gradient = BFloat16Buffer()

    public init() {}

    /// In bf16, `count` values rounded into `buffer`, for products that read them several times
    /// (`BLAS.gemm(precision:)`'s `roundedA` and `roundedB`); nil in fp32.
    func rounded(
        _ values: UnsafePointer<Float>, count: Int, into buffer: KeyPath<BFloat16Operands, BFloat16Buffer>, precision: Precision
    ) -> UnsafePointer<UInt16>? {
        guard precision == .bf16 else { return nil }
        let destination = self[keyPath: buffer].reserve(count)
        BFloat16.round(values, into: destination, count: count)
        return UnsafePointer(destination)
    }
}

extension BLAS {
    /// Row-major C = alpha op(A) op(B) + beta C in `precision`: fp32 through `gemm`, exactly as
    /// before; bf16 by rounding op(A)'s and op(B)'s stored matrices into `operands` and
    /// multiplying those with `gemmBFloat16`, accumulating into the Float32 C. `roundedA` or
    /// `roundedB`, when given in bf16, is that stored matrix already rounded and packed (rows
    /// as long as the stored matrix's), so an operand read by several products is rounded once.
    @inline(__always)
    static func gemm(
        precision: Precision, operands: BFloat16Operands, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int, roundedA: UnsafePointer<UInt16>? = nil,
        b: UnsafePointer<Float>, ldb: Int, roundedB: UnsafePointer<UInt16>? = nil,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        switch precision {
        case .fp32:
            gemm(transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: a, lda: lda,
                 b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
        case .bf16:
            // The stored matrices: A is m x k, or k x m when transposed; B is k x n, or n x k.
            let aRows = transposeA ? k : m, aColumns = transposeA ? m : k
            let bRows = transposeB ? n : k, bColumns = transposeB ? k : n
            let roundedA = roundedA ?? {
                let destination = operands.a.reserve(aRows * aColumns)
                BFloat16.round(a, rows: aRows, columns: aColumns, stride: lda, into: destination)
                return UnsafePointer(destination)
            }()
            let roundedB = roundedB ?? {
                let destination = operands.b.reserve(bRows * bColumns)
                BFloat16.round(b, rows: bRows, columns: bColumns, stride: ldb, into: destination)
                return UnsafePointer(destination)
            }()
            gemmBFloat16(
                transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k, alpha: alpha, a: roundedA, lda: aColumns,
                b: roundedB, ldb: bColumns, beta: beta, c: c, ldc: ldc)
        }
    }

    /// Row-major C = alpha op(A) op(B) + beta C with bf16 A and B (their bits) and Float32 C,
    /// through oneDNN's `dnnl_gemm_bf16bf16f32`, single-threaded like `gemm`. Its sums are
    /// Float32 in an order fixed by the shape, so results depend only on the operands.
    public static func gemmBFloat16(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int, alpha: Float = 1,
        a: UnsafePointer<UInt16>, lda: Int, b: UnsafePointer<UInt16>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        // As in `gemm`: OpenMP's thread count is per calling thread.
        omp_set_num_threads(1)
        let status = dnnl_gemm_bf16bf16f32(
            transposeA ? 84 : 78, transposeB ? 84 : 78,  // "T" or "N"
            Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
        precondition(
            status == dnnl_success, "dnnl_gemm_bf16bf16f32 refused m \(m) n \(n) k \(k) lda \(lda) ldb \(ldb) ldc \(ldc) (status \(status.rawValue))")
    }
}
