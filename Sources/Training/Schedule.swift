import ConfigReading
import Foundation

/// The learning rate as a pure function of the step, so a resumed run continues exactly.
public enum Schedule: Sendable, Equatable {
    case constant
    /// Multiply by `gamma` every `everyEpochs` epochs (PyTorch StepLR stepped per epoch).
    case step(everyEpochs: Int, gamma: Double)
    /// Multiply by `gamma` at each listed epoch (MultiStepLR).
    case multiStep(milestones: [Int], gamma: Double)
    /// Cosine from the base rate down to `minimum` over the whole run, per step.
    case cosine(minimum: Double)
    /// Linear warm-up over the first `steps` steps, then `after`.
    indirect case warmup(steps: Int, after: Schedule)

    /// The rate for 0-based global `step`, given the epoch it is in and the run's total steps.
    public func learningRate(base: Double, step: Int, epoch: Int, totalSteps: Int) -> Double {
        switch self {
        case .constant:
            return base
        case .step(let every, let gamma):
            return base * pow(gamma, Double(epoch / every))
        case .multiStep(let milestones, let gamma):
            return base * pow(gamma, Double(milestones.filter { epoch >= $0 }.count))
        case .cosine(let minimum):
            let progress = totalSteps > 1 ? Double(step) / Double(totalSteps - 1) : 0
            return minimum + (base - minimum) * 0.5 * (1 + cos(Double.pi * min(progress, 1)))
        case .warmup(let steps, let after):
            let rate = after.learningRate(base: base, step: step, epoch: epoch, totalSteps: totalSteps)
            return step < steps ? rate * Double(step + 1) / Double(steps) : rate
        }
    }

    static func parse(_ node: ConfigNode) throws -> Schedule {
        if node.isScalar {
            switch try node.oneOf(["constant", "cosine"]) {
            case "cosine": return .cosine(minimum: 0)
            default: return .constant
            }
        }
        try node.expectKeys(["name", "every", "gamma", "milestones", "minimum", "warmup_steps"])
        let name = try node.child("name")?.oneOf(["constant", "step", "multistep", "cosine"]) ?? "constant"
        let gamma = try node.child("gamma")?.double(minimum: 0, exclusiveMinimum: true) ?? 0.1
        var schedule: Schedule
        switch name {
        case "step":
            guard let every = try node.child("every") else { throw node.error("a step schedule needs 'every' (epochs)") }
            schedule = .step(everyEpochs: try every.int(minimum: 1), gamma: gamma)
        case "multistep":
            guard let milestones = try node.child("milestones") else { throw node.error("a multistep schedule needs 'milestones' (epochs)") }
            schedule = .multiStep(milestones: try milestones.ints(), gamma: gamma)
        case "cosine":
            schedule = .cosine(minimum: try node.child("minimum")?.double(minimum: 0) ?? 0)
        default:
            schedule = .constant
        }
        if let warmup = try node.child("warmup_steps") {
            let steps = try warmup.int(minimum: 0)
            if steps > 0 { schedule = .warmup(steps: steps, after: schedule) }
        }
        return schedule
    }

    /// The YAML form `parse` reads back.
    var yaml: String {
        switch self {
        case .constant: return "{name: constant}"
        case .step(let every, let gamma): return "{name: step, every: \(every), gamma: \(gamma)}"
        case .multiStep(let milestones, let gamma):
            return "{name: multistep, milestones: [\(milestones.map(String.init).joined(separator: ", "))], gamma: \(gamma)}"
        case .cosine(let minimum): return "{name: cosine, minimum: \(minimum)}"
        case .warmup(let steps, let after):
            let inner = after.yaml.dropFirst().dropLast()
            return "{\(inner), warmup_steps: \(steps)}"
        }
    }
}
