import CNN
import Wire

/// What a worker's part in the sharded reduction lacks, for the log lines of a stalled step.
extension ShardRole {
    /// Seconds after the cover before a step not finished here is explained in the log.
    static let stallReportAfter = 2.0

    /// Says once a step what this worker still lacks to finish it, when the cover came more
    /// than `stallReportAfter` seconds ago: a stalled step then names the message that never came.
    func reportStall() {
        guard !stallReported, let plan, let step, let arrived = coverArrivedAt, doneSent != plan.version,
              monotonicSeconds() - arrived > Self.stallReportAfter else { return }
        stallReported = true
        logger.warning("step \(step): not finished here \(Int(Self.stallReportAfter)) s after the cover: \(whatTheStepLacks().joined(separator: "; "))")
    }

    /// Why the weights of step `wanted` are not here yet, for a log line.
    func whyNoWeights(forStep wanted: Int) -> String {
        guard let step else { return "this worker has no plan or weights yet" }
        if wanted == step {
            return "its weights of step \(step) lack slices \(missingWeights) (\(planText))"
        }
        return "it is in step \(step), not \(wanted) (\(planText))"
    }

    /// What this worker lacks to finish the step: for each slice it owns, the committed state,
    /// the step's weights or partial sums the cover names; for each it mirrors, the gradient its
    /// owner's optimiser took (or the committed state to run it on); the next step's weights of
    /// other owners' slices.
    func whatTheStepLacks() -> [String] {
        guard let plan, let cover else { return ["no cover yet"] }
        var lacks: [String] = []
        if !current.isComplete { lacks.append("this step's weights of slices \(missingWeights)") }
        for (index, slice) in plan.slices.enumerated() where slice.owner == selfID && holdings[index]?.applied != true {
            if holdings[index]?.committed == nil { lacks.append("slice \(index)'s optimiser state (from w\(slice.source.map(String.init) ?? "?"))") }
            let missing = cover.nodes.filter { received[index]?[$0] == nil }.map { "\($0.node) from w\($0.worker)" }
            if !missing.isEmpty { lacks.append("slice \(index)'s partial sums \(missing)") }
            if missing.isEmpty && holdings[index]?.committed != nil && current.isComplete {
                lacks.append(config.train.clipGradientNorm > 0 ? "slice \(index)'s global norm" : "slice \(index) is not updated though nothing it needs is missing")
            }
        }
        for (index, slice) in plan.slices.enumerated() where slice.replica == selfID && !layout.isStateSlice(index) && holdings[index]?.pending == nil {
            lacks.append(holdings[index]?.committed == nil
                ? "slice \(index)'s optimiser state (from w\(slice.source.map(String.init) ?? "?")) to mirror its owner's update"
                : "slice \(index)'s gradient from its owner w\(slice.owner)")
        }
        let weights = layout.slices.indices.filter { !next.has($0) && plan.slices[$0].owner != selfID }
        if !weights.isEmpty { lacks.append("next step's weights of slices \(weights.map { "\($0) from w\(plan.slices[$0].owner)" })") }
        return (lacks.isEmpty ? ["nothing (step-done not sent yet)"] : lacks) + [planText]
    }

    /// Slices of this step's weights not here yet.
    private var missingWeights: [Int] { layout.slices.indices.filter { !current.has($0) } }

    /// The plan this worker follows and the one in force, as log lines name them.
    private var planText: String {
        "plan \(plan.map { String($0.version) } ?? "none"), in force \(inForce.map { String($0.version) } ?? "none")"
    }
}
