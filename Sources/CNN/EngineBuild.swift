/// How the engine's own loops were compiled, for reports that compare runs.
public enum EngineBuild {
    /// Whether they were built for the build machine's CPU (`CNN_TARGET_CPU`, see Package.swift)
    /// rather than for any CPU of the architecture.
    public static var isCPUSpecific: Bool {
        #if CNN_CPU_SPECIFIC
        return true
        #else
        return false
        #endif
    }

    /// "cpu-specific" or "portable".
    public static var name: String { isCPUSpecific ? "cpu-specific" : "portable" }
}
