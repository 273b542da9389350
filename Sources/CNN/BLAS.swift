import COneDNN
import COpenBLAS

#if canImport(Glibc)
import Glibc
#endif

/// The one door to the matrix-multiply libraries. Everything that multiplies matrices goes
/// through here, so the library can be swapped behind it after a benchmark says so.
///
/// The GEMM runs single-threaded: parallelism comes from computing whole micro-batches on
/// separate threads, which keeps every result independent of the thread count (DESIGN.md,
/// "Engine").
public enum BLAS {
    /// A library that multiplies matrices.
    public enum Library: String, CaseIterable, Sendable {
        /// oneDNN's `dnnl_sgemm`: kernels generated at run time for the widest vectors the CPU
        /// has (AVX-512 where present), whatever OPENBLAS_CORETYPE says, hence the default: faster
        /// than OpenBLAS's preset Haswell kernel (`cnn bench` against `CNN_GEMM=openblas cnn bench`).
        case oneDNN = "onednn"
        /// OpenBLAS's `cblas_sgemm`, with the kernel OPENBLAS_CORETYPE names or OpenBLAS detects.
        case openBLAS = "openblas"
    }

    /// The environment variable that picks the library for a process: `onednn` or `openblas`.
    public static let libraryVariable = "CNN_GEMM"

    /// The library used when CNN_GEMM is not set.
    public static let defaultLibrary = Library.oneDNN

    /// The library CNN_GEMM names, the default when it is unset or empty.
    /// - Throws: `BLASError.unknownLibrary` for any other value.
    public static func library(environment: [String: String]) throws -> Library {
        guard let value = environment[libraryVariable], !value.isEmpty else { return defaultLibrary }
        guard let library = Library(rawValue: value.lowercased()) else {
            throw BLASError.unknownLibrary(value)
        }
        return library
    }

    /// The library every `gemm` call uses in this process, fixed when first read. Executables
    /// check CNN_GEMM at start-up (`ProcessSetup.prepare`) and refuse a value they do not know
    /// before anything multiplies; here such a value falls back to the default.
    public static let library: Library = {
        var environment: [String: String] = [:]
        if let value = getenv(libraryVariable) { environment[libraryVariable] = String(cString: value) }
        return (try? BLAS.library(environment: environment)) ?? defaultLibrary
    }()

    /// Row-major C = alpha * op(A) * op(B) + beta * C, with op(A) m x k and op(B) k x n, through
    /// `library`.
    @inline(__always)
    public static func gemm(
        transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        gemm(
            library: library, transposeA: transposeA, transposeB: transposeB, m: m, n: n, k: k,
            alpha: alpha, a: a, lda: lda, b: b, ldb: ldb, beta: beta, c: c, ldc: ldc)
    }

    /// `gemm` through a given library (benchmarks and tests compare the two).
    public static func gemm(
        library: Library, transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
        alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        switch library {
        case .oneDNN:
            // OpenMP's thread count is per calling thread, and a thread OpenMP did not start
            // begins with one per core: set it on every call, since any thread may call here.
            // (It only writes a field once the thread has its OpenMP state.)
            omp_set_num_threads(1)
            let status = dnnl_sgemm(
                transposeA ? 84 : 78, transposeB ? 84 : 78,  // "T" or "N"
                Int64(m), Int64(n), Int64(k), alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
            // oneDNN checks only the arguments, which the layers derive from validated shapes:
            // a refusal is a bug in the caller, not bad input.
            precondition(status == dnnl_success, "dnnl_sgemm refused m \(m) n \(n) k \(k) lda \(lda) ldb \(ldb) ldc \(ldc)")
        case .openBLAS:
            cblas_sgemm(
                CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        }
    }

    /// y += alpha * x over `count` floats, with OpenBLAS's vector kernel (AVX2 or wider where
    /// the CPU has it, which this module's Swift loops cannot assume). With alpha 1 each sum is
    /// exactly x + y: the product is exact, so a fused multiply-add rounds once, as an add does.
    @inline(__always)
    public static func axpy(count: Int, alpha: Float = 1, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>) {
        cblas_saxpy(Int32(count), alpha, x, 1, y, 1)
    }

    /// The kernel OpenBLAS chose for this CPU ("Haswell", "SkylakeX", or "Prescott" when it fell back).
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The instruction set oneDNN generates its kernels for on this CPU.
    public static var oneDNNInstructionSet: String {
        switch dnnl_get_effective_cpu_isa() {
        case dnnl_cpu_isa_sse41: "SSE4.1"
        case dnnl_cpu_isa_avx: "AVX"
        case dnnl_cpu_isa_avx2: "AVX2"
        case dnnl_cpu_isa_avx2_vnni: "AVX2-VNNI"
        case dnnl_cpu_isa_avx512_core: "AVX-512"
        case dnnl_cpu_isa_avx512_core_vnni: "AVX-512-VNNI"
        case dnnl_cpu_isa_avx512_core_bf16: "AVX-512-BF16"
        case dnnl_cpu_isa_avx512_core_amx: "AVX-512-AMX"
        default: "baseline"
        }
    }

    /// Which library multiplies and with which kernel, for logs and the workers' hello:
    /// "oneDNN AVX-512" or "OpenBLAS Haswell". Workers whose kernels differ can give different
    /// bits for the same micro-batch, so the coordinator shows each worker's.
    public static var kernelName: String {
        switch library {
        case .oneDNN: "oneDNN \(oneDNNInstructionSet)"
        case .openBLAS: "OpenBLAS \(coreName)"
        }
    }

    /// Makes every BLAS call single-threaded; call once at start-up, before any work.
    public static func useSingleThread() {
        openblas_set_num_threads(1)
    }
}

/// A matrix-multiply library setting that cannot be used.
public enum BLASError: Error, CustomStringConvertible, Equatable {
    /// CNN_GEMM names no library this build has.
    case unknownLibrary(String)

    public var description: String {
        switch self {
        case .unknownLibrary(let value):
            "\(BLAS.libraryVariable)=\(value) names no matrix-multiply library; use "
                + BLAS.Library.allCases.map(\.rawValue).joined(separator: " or ")
                + " (or unset it for \(BLAS.defaultLibrary.rawValue))"
        }
    }
}

/// The element-wise loops around the GEMMs (copies, bias, ReLU, sums), written with explicit
/// 16-float vectors and unaligned loads so they vectorise on any x86-64 or ARM build, whatever the
/// auto-vectoriser makes of the pointer aliasing. Sums keep sixteen partial sums and add them in a
/// fixed order: the result depends only on the count, never on alignment or threads.
enum VectorKernels {
    typealias Lanes = SIMD16<Float>
    static let width = 16

    @inline(__always)
    static func load(_ pointer: UnsafePointer<Float>) -> Lanes {
        UnsafeRawPointer(pointer).loadUnaligned(as: Lanes.self)
    }

    @inline(__always)
    static func store(_ value: Lanes, _ pointer: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Lanes.self)
    }

    @inline(__always)
    static func load<Vector: SIMD>(_ pointer: UnsafePointer<Float>, as: Vector.Type) -> Vector where Vector.Scalar == Float {
        UnsafeRawPointer(pointer).loadUnaligned(as: Vector.self)
    }

    @inline(__always)
    static func store<Vector: SIMD>(_ value: Vector, _ pointer: UnsafeMutablePointer<Float>) where Vector.Scalar == Float {
        UnsafeMutableRawPointer(pointer).storeBytes(of: value, as: Vector.self)
    }

    /// destination[i] = 0.
    @inline(__always)
    static func zero(_ destination: UnsafeMutablePointer<Float>, count: Int) {
        if count < 4 {
            for i in 0..<count { destination[i] = 0 }
            return
        }
        var i = 0
        while i + width <= count {
            store(Lanes(), destination + i)
            i += width
        }
        // The tail as one or two short vectors that may overlap what is already written.
        if i < count {
            if count >= width {
                store(Lanes(), destination + count - width)
            } else if count >= 8 {
                store(SIMD8<Float>(), destination)
                store(SIMD8<Float>(), destination + count - 8)
            } else {
                store(SIMD4<Float>(), destination)
                store(SIMD4<Float>(), destination + count - 4)
            }
        }
    }

    /// destination[i] = source[i]; the two ranges must not overlap.
    @inline(__always)
    static func copy(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        if count < 4 {
            for i in 0..<count { destination[i] = source[i] }
            return
        }
        var i = 0
        while i + width <= count {
            store(load(source + i), destination + i)
            i += width
        }
        // The tail as one or two short vectors that may overlap what is already copied.
        if i < count {
            if count >= width {
                store(load(source + count - width), destination + count - width)
            } else if count >= 8 {
                store(load(source, as: SIMD8<Float>.self), destination)
                store(load(source + count - 8, as: SIMD8<Float>.self), destination + count - 8)
            } else {
                store(load(source, as: SIMD4<Float>.self), destination)
                store(load(source + count - 4, as: SIMD4<Float>.self), destination + count - 4)
            }
        }
    }

    /// Copies `rows` rows of `count` floats, `sourceStride` and `destinationStride` apart (the
    /// rows of a tap in im2col): the vector width is chosen once for all rows.
    @inline(__always)
    static func copyRows(
        _ source: UnsafePointer<Float>, sourceStride: Int, to destination: UnsafeMutablePointer<Float>, destinationStride: Int,
        rows: Int, count: Int
    ) {
        var from = source, to = destination
        if count >= width {
            for _ in 0..<rows {
                var i = 0
                while i + width <= count {
                    store(load(from + i), to + i)
                    i += width
                }
                if i < count { store(load(from + count - width), to + count - width) }
                from += sourceStride
                to += destinationStride
            }
        } else if count >= 8 {
            for _ in 0..<rows {
                store(load(from, as: SIMD8<Float>.self), to)
                store(load(from + count - 8, as: SIMD8<Float>.self), to + count - 8)
                from += sourceStride
                to += destinationStride
            }
        } else if count >= 4 {
            for _ in 0..<rows {
                store(load(from, as: SIMD4<Float>.self), to)
                store(load(from + count - 4, as: SIMD4<Float>.self), to + count - 4)
                from += sourceStride
                to += destinationStride
            }
        } else {
            for _ in 0..<rows {
                for i in 0..<count { to[i] = from[i] }
                from += sourceStride
                to += destinationStride
            }
        }
    }

    /// destination[i] = source[2 i] for `count` >= 8 floats, eight at a time (the last eight may
    /// overlap); reads up to source[2 count - 1].
    @inline(__always)
    static func copyEven(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            let start = min(i, count - 8)
            store(load(source + 2 * start).evenHalf, destination + start)
            i += 8
        }
    }

    /// destination[2 i] = source[i] and destination[2 i + 1] = 0 for `count` >= 8 values, eight
    /// at a time (the last eight may overlap); writes destination[0 ..< 2 count].
    @inline(__always)
    static func spreadToEven(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i < count {
            let start = min(i, count - 8)
            let v = load(source + start, as: SIMD8<Float>.self)
            store(Lanes(v[0], 0, v[1], 0, v[2], 0, v[3], 0, v[4], 0, v[5], 0, v[6], 0, v[7], 0), destination + 2 * start)
            i += 8
        }
    }

    /// destination[2 i] += source[i], eight at a time, then one by one.
    @inline(__always)
    static func addToEven(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let values = load(source + i, as: SIMD8<Float>.self)
            // Interleave the eight values with zeros: lanes 0, 2, ..., 14 carry them.
            let spread = SIMD16<Float>(
                values[0], 0, values[1], 0, values[2], 0, values[3], 0, values[4], 0, values[5], 0, values[6], 0, values[7], 0)
            // Lane 15 is a zero: adding it to destination[2 i + 15] changes nothing, but that float
            // must exist; it does while 2 i + 15 < 2 count - 1, that is i + 8 <= count.
            store(load(destination + 2 * i) + spread, destination + 2 * i)
            i += 8
        }
        while i < count {
            destination[2 * i] += source[i]
            i += 1
        }
    }

    /// Adds `rows` rows of `count` floats onto rows `destinationStride` apart (col2im's rows).
    @inline(__always)
    static func addRows(
        _ source: UnsafePointer<Float>, sourceStride: Int, to destination: UnsafeMutablePointer<Float>, destinationStride: Int,
        rows: Int, count: Int
    ) {
        var from = source, to = destination
        for _ in 0..<rows {
            add(from, to: to, count: count)
            from += sourceStride
            to += destinationStride
        }
    }

    /// destination[i] = source[i] + addend.
    @inline(__always)
    static func copy(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int, adding addend: Float) {
        if addend == 0 {
            copy(source, to: destination, count: count)
            return
        }
        let lanes = Lanes(repeating: addend)
        var i = 0
        while i + width <= count {
            store(load(source + i) + lanes, destination + i)
            i += width
        }
        while i < count {
            destination[i] = source[i] + addend
            i += 1
        }
    }

    /// destination[i] += value.
    @inline(__always)
    static func add(_ value: Float, to destination: UnsafeMutablePointer<Float>, count: Int) {
        let lanes = Lanes(repeating: value)
        var i = 0
        while i + width <= count {
            store(load(destination + i) + lanes, destination + i)
            i += width
        }
        while i < count {
            destination[i] += value
            i += 1
        }
    }

    /// destination[i] += source[i].
    @inline(__always)
    static func add(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + width <= count {
            store(load(destination + i) + load(source + i), destination + i)
            i += width
        }
        if i + 8 <= count {
            store(load(destination + i, as: SIMD8<Float>.self) + load(source + i, as: SIMD8<Float>.self), destination + i)
            i += 8
        }
        if i + 4 <= count {
            store(load(destination + i, as: SIMD4<Float>.self) + load(source + i, as: SIMD4<Float>.self), destination + i)
            i += 4
        }
        if i + 2 <= count {
            store(load(destination + i, as: SIMD2<Float>.self) + load(source + i, as: SIMD2<Float>.self), destination + i)
            i += 2
        }
        if i < count { destination[i] += source[i] }
    }

    /// Copies `count` floats and returns their sum, added exactly as `sum` adds them.
    @inline(__always)
    static func copySum(_ source: UnsafePointer<Float>, to destination: UnsafeMutablePointer<Float>, count: Int) -> Float {
        var lanes = Lanes()
        var i = 0
        while i + width <= count {
            let values = load(source + i)
            store(values, destination + i)
            lanes += values
            i += width
        }
        var total: Float = 0
        for lane in 0..<width { total += lanes[lane] }
        while i < count {
            destination[i] = source[i]
            total += source[i]
            i += 1
        }
        return total
    }

    /// destination[i] = a[i] + b[i], or max(0, a[i] + b[i]) when `rectified`.
    @inline(__always)
    static func sum(
        _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int,
        rectified: Bool
    ) {
        let zero = Lanes()
        var i = 0
        if rectified {
            while i + width <= count {
                let total = load(a + i) + load(b + i)
                store(zero.replacing(with: total, where: total .> zero), destination + i)
                i += width
            }
            while i < count {
                let total = a[i] + b[i]
                destination[i] = total > 0 ? total : 0
                i += 1
            }
        } else {
            while i + width <= count {
                store(load(a + i) + load(b + i), destination + i)
                i += width
            }
            while i < count {
                destination[i] = a[i] + b[i]
                i += 1
            }
        }
    }

    /// destination[i] = source[i] * scale + shift.
    @inline(__always)
    static func affine(
        _ source: UnsafePointer<Float>, scale: Float, shift: Float, into destination: UnsafeMutablePointer<Float>, count: Int
    ) {
        let scaleLanes = Lanes(repeating: scale), shiftLanes = Lanes(repeating: shift)
        var i = 0
        while i + width <= count {
            store(load(source + i) * scaleLanes + shiftLanes, destination + i)
            i += width
        }
        while i < count {
            destination[i] = source[i] * scale + shift
            i += 1
        }
    }

    /// destination[i] = a[i] * b[i].
    @inline(__always)
    static func multiply(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + width <= count {
            store(load(a + i) * load(b + i), destination + i)
            i += width
        }
        while i < count {
            destination[i] = a[i] * b[i]
            i += 1
        }
    }

    /// destination[i] = gradient[i] where output[i] > 0, else 0: the backward pass of a ReLU
    /// through its output.
    @inline(__always)
    static func mask(
        _ gradient: UnsafePointer<Float>, where output: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>,
        count: Int
    ) {
        let zero = Lanes()
        var i = 0
        while i + width <= count {
            store(zero.replacing(with: load(gradient + i), where: load(output + i) .> zero), destination + i)
            i += width
        }
        while i < count {
            destination[i] = output[i] > 0 ? gradient[i] : 0
            i += 1
        }
    }

    /// The sum of `count` floats: sixteen running lanes, then the lanes in order, then the tail.
    static func sum(_ values: UnsafePointer<Float>, count: Int) -> Float {
        var lanes = Lanes()
        var i = 0
        while i + width <= count {
            lanes += load(values + i)
            i += width
        }
        var total: Float = 0
        for lane in 0..<width { total += lanes[lane] }
        while i < count {
            total += values[i]
            i += 1
        }
        return total
    }
}
