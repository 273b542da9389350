import CNN
import Foundation

#if canImport(Glibc)
import CMalloc
import Glibc
#endif

/// Start-up work every executable does before anything else.
public enum ProcessSetup {
    /// Checks the GEMM library CNN_GEMM names, makes sure OpenBLAS runs a kernel that fits this
    /// CPU, then makes BLAS single-threaded.
    ///
    /// OpenBLAS 0.3.21 does not recognise recent CPUs and silently falls back to its SSE3 kernel,
    /// 5-8x slower (shared/FACTS.md). The kernel is chosen when the library loads, so the only fix
    /// from inside is to set OPENBLAS_CORETYPE and execute ourselves again. A value already in the
    /// environment is respected: the operator (or the machine) knows best. (OpenBLAS still does
    /// the vector additions, and every GEMM when CNN_GEMM=openblas.)
    /// - Throws: `BLASError.unknownLibrary` when CNN_GEMM names no library.
    public static func prepare() throws {
        let environment = ProcessInfo.processInfo.environment
        _ = try BLAS.library(environment: environment)
        if environment["OPENBLAS_CORETYPE"] == nil, environment["CNN_BLAS_REEXEC"] == nil,
           let wanted = suitableCoreType(), BLAS.coreName.lowercased() != wanted.lowercased() {
            setenv("OPENBLAS_CORETYPE", wanted, 1)
            setenv("CNN_BLAS_REEXEC", "1", 1)
            let arguments = CommandLine.arguments
            var cArguments = arguments.map { strdup($0) } + [nil]
            execv("/proc/self/exe", &cArguments)
            // execv returns only on failure: carry on with the slow kernel rather than not at all.
            cArguments.forEach { free($0) }
        }
        BLAS.useSingleThread()
        keepFreedMemory()
    }

    /// Makes glibc keep freed memory for the next allocation instead of handing it back to the
    /// kernel. A worker receives megabytes of messages every step (ZeroMQ allocates each on its
    /// I/O thread); glibc gave each thread's arena back to the kernel as the step freed it, and
    /// the next step faulted in the same amount of freshly zeroed pages. One arena, blocks up to
    /// 32 MiB from the heap, and no trimming keep the pages in use from step to step. A
    /// `MALLOC_*` variable in the environment means the operator decided: then nothing changes.
    static func keepFreedMemory() {
        #if canImport(Glibc)
        let environment = ProcessInfo.processInfo.environment
        guard !environment.keys.contains(where: { $0.hasPrefix("MALLOC_") }) else { return }
        _ = mallopt(M_ARENA_MAX, 1)
        _ = mallopt(M_MMAP_THRESHOLD, 32 << 20)
        _ = mallopt(M_TRIM_THRESHOLD, Int32.max)
        #endif
    }

    /// The OpenBLAS kernel for this CPU's vector extensions, from /proc/cpuinfo.
    static func suitableCoreType() -> String? {
        guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return nil }
        let flags = Set(flagsLine.split(separator: " ").map(String.init))
        if ["avx512f", "avx512vl", "avx512bw", "avx512dq"].allSatisfy(flags.contains) { return "SkylakeX" }
        if ["avx2", "fma"].allSatisfy(flags.contains) { return "Haswell" }
        return nil
    }

    /// One line for logs: which library and kernel multiply matrices, and why.
    public static var kernelDescription: String {
        let loops = EngineBuild.isCPUSpecific ? "engine loops built for this CPU (CNN_TARGET_CPU)" : "portable engine loops"
        switch BLAS.library {
        case .oneDNN:
            return "GEMM by oneDNN, \(BLAS.oneDNNInstructionSet) kernels (\(BLAS.libraryVariable)=openblas for OpenBLAS); \(loops)"
        case .openBLAS:
            return "GEMM by \(openBLASDescription) (\(BLAS.libraryVariable)=openblas); \(loops)"
        }
    }

    /// A warning when OpenBLAS multiplies and OPENBLAS_CORETYPE names another kernel than the one
    /// this CPU's vector extensions suit (a preset `Haswell` on an AVX-512 machine halves the GEMM
    /// rate), else nil.
    public static var kernelAdvice: String? {
        guard BLAS.library == .openBLAS, let preset = ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"],
              ProcessInfo.processInfo.environment["CNN_BLAS_REEXEC"] == nil,
              let suitable = suitableCoreType(), suitable.lowercased() != preset.lowercased() else { return nil }
        return "OPENBLAS_CORETYPE=\(preset) is set in the environment; this CPU suits \(suitable), "
            + "whose GEMM may be faster (run with OPENBLAS_CORETYPE=\(suitable) to compare)"
    }

    /// Which OpenBLAS kernel runs and why.
    static var openBLASDescription: String {
        let environment = ProcessInfo.processInfo.environment
        let source: String
        if environment["CNN_BLAS_REEXEC"] != nil { source = "chosen for this CPU" }
        else if let set = environment["OPENBLAS_CORETYPE"] { source = "OPENBLAS_CORETYPE=\(set)" }
        else { source = "OpenBLAS's own choice" }
        return "OpenBLAS kernel \(BLAS.coreName) (\(source))"
    }
}
