import CNN
import ConfigReading

/// `train.precision`: the arithmetic of the convolutions' and dense layers' matrix products.
public enum PrecisionSetting: String, Sendable, CaseIterable {
    /// Float32 products (the default).
    case fp32
    /// bf16 products with Float32 sums (`Precision.bf16`); refused where the CPU has no bf16 products.
    case bf16
    /// bf16 where the CPU has bf16 products, else fp32: decided once, by the coordinator.
    case bf16IfAvailable = "bf16-if-available"

    /// The precision layers compute in on a machine that has (or lacks) bf16 products, nil when
    /// `bf16` is asked for where it is missing.
    public func resolved(bf16Available: Bool) -> Precision? {
        switch self {
        case .fp32: .fp32
        case .bf16: bf16Available ? .bf16 : nil
        case .bf16IfAvailable: bf16Available ? .bf16 : .fp32
        }
    }
}

extension TrainingConfig {
    /// The precision this config computes in here.
    /// - Throws: `ConfigError` when it asks for bf16 on a machine without bf16 products.
    public func precision(bf16Available: Bool = BFloat16Support.isAvailable) throws -> Precision {
        guard let precision = train.precision.resolved(bf16Available: bf16Available) else {
            throw ConfigError(
                file: source, line: nil,
                message: "train.precision: bf16 needs bf16 matrix products, and this machine has none (\(BFloat16Support.missingReason)); "
                    + "use 'precision: bf16-if-available' to fall back to fp32 here, or 'precision: fp32'")
        }
        return precision
    }

    /// The config with `train.precision` decided for this machine (`bf16-if-available` becomes
    /// bf16 or fp32): what a coordinator sends its workers, so that all of them compute the same
    /// way whatever their own CPUs have.
    /// - Throws: `ConfigError` when it asks for bf16 on a machine without bf16 products.
    public func resolvingPrecision(bf16Available: Bool = BFloat16Support.isAvailable) throws -> TrainingConfig {
        var resolved = self
        resolved.train.precision = try precision(bf16Available: bf16Available) == .bf16 ? .bf16 : .fp32
        return resolved
    }
}
