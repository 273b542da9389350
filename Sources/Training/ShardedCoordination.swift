import AllReduce
import CNN
import Foundation
import Logging
import Wire

/// The coordinator's state under the `sharded` reduction: who is a member of the plan, who waits
/// to join at the next step boundary, and how far the step in progress got. The coordinator
/// carries control messages only (plans, assignments, the cover, the norm); weights and
/// gradients go between workers, and come to the coordinator only for a checkpoint (`gather`).
final class ShardedReduction {
    let layout: ShardLayout
    var planner: ShardPlanner
    private(set) var plan: ShardPlan?
    /// Members of the current plan, and workers that said where they listen but are not members yet.
    var members: [UInt32: ShardMember] = [:]
    var waiting: [UInt32: ShardMember] = [:]
    /// Whether the coordinator's weights and optimiser state are the run's current ones (at the
    /// start, after a resume or a gather); otherwise they live in the slice owners.
    var holdsWeights = true

    // The step in progress.
    var cover = CoverSelection(microBatches: 1)
    var coverVersion: UInt32 = 0
    var coverSent = false
    var expectedCoverSent = false
    var done: Set<UInt32> = []
    var blockSums: [Int: [Double]] = [:]
    var norm: Double?
    var needsReplan = false
    /// Members that follow the current plan, and whether it was declared in force.
    var adopted: Set<UInt32> = []
    /// When the current plan was issued: a member that has not adopted it a worker timeout later
    /// is given up (adopting takes a live worker milliseconds, and nothing moves until all have).
    var planIssuedAt = 0.0
    var inForceSent: UInt64?
    /// Slices gathered for a checkpoint.
    var gathered: [Int: SliceState] = [:]
    /// Members that have finished a step (so they hold a whole set of weights). A member that has
    /// not stays a "new member" of every plan, whose sources send it their slices' weights: its
    /// first source may have died before it did.
    var proven: Set<UInt32> = []

    init(parameterCount: Int, stateCount: Int) {
        layout = ShardLayout(parameterCount: parameterCount, stateCount: stateCount, block: GradientClipping.normBlock)
        planner = ShardPlanner(layout: layout)
    }

    /// How long the last step took, from its start to its weights complete in every member.
    var lastStepSeconds = 0.0

    /// Seconds the step in progress may go on before the coordinator says what it waits for:
    /// `minimum`, or three times the last step where steps are long (a large model on few cores
    /// takes seconds a step, and a healthy step is not a stall).
    func stallThreshold(minimum: Double) -> Double {
        max(minimum, 3 * lastStepSeconds)
    }

    /// Set by `restart` until the next plan is issued.
    var restartPending = false
    /// When the step in progress began, and whether its stall was reported (once a step).
    var stepStartedAt = 0.0
    var stallReported = false

    var readyCount: Int { members.count + waiting.count }

    /// Starts again from the coordinator's state (after a rewind to a checkpoint): the next plan
    /// is a first plan, handed out by the coordinator; members stay members.
    func restart() {
        planner.reset()
        holdsWeights = true
        needsReplan = false
        restartPending = true
        adopted = []
    }

    func beginStep(microBatches: Int, at now: Double) {
        stepStartedAt = now
        stallReported = false
        cover = CoverSelection(microBatches: microBatches)
        coverSent = false
        expectedCoverSent = false
        done = []
        blockSums = [:]
        norm = nil
    }

    /// Whether the next plan is handed out by the coordinator itself (it holds the current
    /// weights and state) rather than by the members.
    var handsOutItself: Bool { holdsWeights || planner.settled == nil }

    /// A new plan over the members and whoever waits; throws `SliceLost`.
    func replan() throws -> ShardPlan {
        if holdsWeights { planner.reset() }
        let isFirst = planner.settled == nil
        for (id, member) in waiting { members[id] = member }
        waiting = [:]
        let ids = members.keys.sorted()
        let unproven = Set(ids).subtracting(proven)
        let slices = try planner.replan(members: ids, newMembers: isFirst ? [] : unproven)
        let version = (plan?.version ?? 0) + 1
        let next = ShardPlan(version: version, members: ids.map { members[$0]! }, slices: slices,
                             newMembers: isFirst ? [] : unproven.sorted())
        plan = next
        needsReplan = false
        restartPending = false
        done = []
        adopted = []
        planIssuedAt = monotonicSeconds()
        return next
    }

    /// Members of the current plan that have not adopted it within `patience` seconds of its issue.
    func membersNotAdopting(patience: Double, now: Double) -> [UInt32] {
        guard let plan, inForceSent != plan.version, now - planIssuedAt > patience else { return [] }
        return plan.members.map(\.workerID).filter { !adopted.contains($0) && members[$0] != nil }
    }

    /// Whether every member follows the current plan and it has not been declared in force yet.
    var isReadyToEnforce: Bool {
        guard let plan else { return false }
        return inForceSent != plan.version && Set(plan.members.map(\.workerID)).isSubset(of: adopted)
    }
}

/// A slice's state is gone with its owner and replica: the run goes back to its newest
/// checkpoint and computes the steps since again, to the same bits.
struct ShardRewind: Error, CustomStringConvertible {
    var step: Int
    var lost: SliceLost

    var description: String { "step \(step): \(lost)" }
}

extension Coordinator {
    /// One optimiser step under the sharded reduction: members computed, owners reduce and
    /// update their slices, every member reports the next weights complete.
    func trainShardedStep(_ work: [MicroBatch], epoch: Int, stepsPerEpoch: Int, sharding: ShardedReduction) throws -> StepReport? {
        let stepStart = monotonicSeconds()
        let bytesBefore = (transport.bytesSent, transport.bytesReceived)
        let learningRate = state.learningRate(stepsPerEpoch: stepsPerEpoch)
        sharding.beginStep(microBatches: work.count, at: stepStart)
        try planAtStepBoundary(sharding)
        guard let scores = try runTask(.train, epoch: epoch, work: work, until: { try self.shardedStepDone(sharding, learningRate: learningRate) }) else {
            return nil
        }
        sharding.planner.settle()
        state.advance(stepsPerEpoch: stepsPerEpoch)
        sharding.holdsWeights = false
        sharding.lastStepSeconds = monotonicSeconds() - stepStart
        defer { phases.removeAll(keepingCapacity: true) }
        return StepReport(
            step: state.step, epoch: epoch, stepInEpoch: state.stepInEpoch == 0 ? stepsPerEpoch : state.stepInEpoch,
            stepsPerEpoch: stepsPerEpoch, score: scores.reduce(BatchScore(), +), learningRate: Double(learningRate), start: stepStart,
            seconds: monotonicSeconds() - stepStart, workers: pool.all.map { $0.status(alive: true) }, phases: phases,
            bytesSent: transport.bytesSent - bytesBefore.0, bytesReceived: transport.bytesReceived - bytesBefore.1)
    }

    /// Workers that joined since the last step become members. The first plan of a run comes
    /// with the coordinator's weights and each slice's optimiser state.
    private func planAtStepBoundary(_ sharding: ShardedReduction) throws {
        let deadline = monotonicSeconds() + config.distributed.joinTimeout
        while sharding.readyCount == 0 {
            if let error = stopError { stopError = nil; throw error }
            guard monotonicSeconds() < deadline else {
                throw CoordinatorError(description: "step \(state.step): no worker has been ready for \(Int(config.distributed.joinTimeout)) s; start workers with `cnn-worker --connect \(connectAddress)`")
            }
            try pump(timeout: 0.05)
            expireSilentWorkersOutsideTheScheduler()
            sendHeartbeats()
        }
        guard sharding.plan == nil || !sharding.waiting.isEmpty || sharding.restartPending else { return }
        _ = try issuePlan(sharding)
        // Nothing moves between workers before every member knows every other.
        while !sharding.isReadyToEnforce {
            if let error = stopError { stopError = nil; throw error }
            if sharding.needsReplan && sharding.readyCount > 0 { _ = try issuePlan(sharding) }
            guard monotonicSeconds() < deadline else {
                let missing = (sharding.plan?.members.map(\.workerID) ?? []).filter { !sharding.adopted.contains($0) }
                throw CoordinatorError(description: "step \(state.step): workers \(missing.map { "w\($0)" }) did not take the new plan within "
                    + "\(Int(config.distributed.joinTimeout)) s; check that they are alive and can reach each other at the addresses they announced, then --resume")
            }
            try pump(timeout: 0.05)
            apply(scheduler.handle(.tick, at: monotonicSeconds()))
            expireSilentWorkersOutsideTheScheduler()
            giveUpMembersNotAdopting(sharding)
            sendHeartbeats()
            reportStall(sharding)
        }
        enforce(sharding)
        if let plan = sharding.plan {
            logger.info("step \(state.step): sharded plan \(plan.version): \(plan.members.count) member(s), \(plan.slices.count) slices")
        }
    }

    /// A plan over the members and whoever waits, sent to every member, with the coordinator's
    /// weights and state when it hands them out itself.
    private func issuePlan(_ sharding: ShardedReduction) throws -> ShardPlan {
        let handsOut = sharding.handsOutItself
        let plan: ShardPlan
        do {
            plan = try sharding.replan()
        } catch let lost as SliceLost {
            throw ShardRewind(step: state.step, lost: lost)
        }
        broadcast(.plan(plan), to: sharding)
        if handsOut { sendWeightsAndState(plan, sharding) }
        return plan
    }

    /// Declares the plan in force, and gives work to its members the scheduler does not know yet
    /// (they joined with it): only now do the others take their messages.
    private func enforce(_ sharding: ShardedReduction) {
        guard let plan = sharding.plan else { return }
        sharding.inForceSent = plan.version
        broadcast(.planInForce(PlanInForce(planVersion: plan.version)), to: sharding)
        for member in plan.members where scheduler[member.workerID] == nil {
            guard let worker = pool.worker(id: member.workerID) else { continue }
            apply(scheduler.handle(.joined(worker: worker.id, name: worker.name, threads: worker.threads), at: monotonicSeconds()))
        }
    }

    /// The coordinator's weights to every member, and each slice's optimiser state to its owner
    /// and replica (the start of a run, or a resume).
    private func sendWeightsAndState(_ plan: ShardPlan, _ sharding: ShardedReduction) {
        let weights = currentWeights()
        let whole = state.optimizer.stateTensors
        for member in plan.members {
            guard let worker = pool.worker(id: member.workerID) else { continue }
            send(.weights(Weights(values: weights)), to: worker)
            worker.weightsVersion = state.step
        }
        for (index, slice) in plan.slices.enumerated() where !sharding.layout.isStateSlice(index) {
            let range = sharding.layout.slices[index]
            let part = whole.map { (name: $0.name, values: $0.values.count == state.parameterCount ? Array($0.values[range]) : $0.values) }
            let message = SliceState(slice: UInt32(index), names: part.map(\.name), weights: nil,
                                     tensors: part.map { FloatPayload(copying: $0.values) })
            for id in [slice.owner] + (slice.replica.map { [$0] } ?? []) {
                if let worker = pool.worker(id: id) { send(.sliceState(message), to: worker) }
            }
        }
    }

    /// Whether the step is complete; meanwhile sends the expected cover once every micro-batch
    /// is handed out, the final cover once every micro-batch has a result, the norm once every
    /// slice's block sums are in, and a new plan after a death.
    private func shardedStepDone(_ sharding: ShardedReduction, learningRate: Float) throws -> Bool {
        expireSilentWorkersOutsideTheScheduler()
        giveUpMembersNotAdopting(sharding)
        reportStall(sharding)
        if sharding.needsReplan { try replanAfterLoss(sharding) }
        if sharding.isReadyToEnforce { enforce(sharding) }
        guard let plan = sharding.plan, sharding.inForceSent == plan.version else { return false }
        if !sharding.coverSent && !sharding.expectedCoverSent, let nodes = expectedCover(sharding) {
            sharding.expectedCoverSent = true
            sendCover(nodes, isFinal: false, sharding, learningRate: learningRate)
        }
        // Block sums from either cover are the same bits.
        let parameterSlices = sharding.layout.slices.indices.filter { !sharding.layout.isStateSlice($0) }
        if config.train.clipGradientNorm > 0, sharding.norm == nil, parameterSlices.allSatisfy({ sharding.blockSums[$0] != nil }) {
            let sums = parameterSlices.flatMap { sharding.blockSums[$0]! }
            let norm = GradientClipping.norm(blockSums: sums)
            sharding.norm = norm
            broadcast(.norm(GlobalNorm(value: norm)), to: sharding)
        }
        guard scheduler.isTaskComplete else { return false }
        if !sharding.coverSent {
            // Every result is in, but a worker whose partial sums the cover would name was lost
            // without a replan computing them again (a soak once saw covers of 5 and 7 of 8
            // micro-batches, which workers refuse): compute them again rather than send it.
            let uncovered = sharding.cover.uncovered
            guard uncovered.isEmpty else {
                logger.warning("step \(state.step): micro-batches \(uncovered) have results but no live holder of their partial sums; they are computed again")
                apply(scheduler.handle(.redo(microBatches: Set(uncovered)), at: monotonicSeconds()))
                return false
            }
            sharding.coverSent = true
            sendCover(sharding.cover.cover, isFinal: true, sharding, learningRate: learningRate)
        }
        return sharding.done == Set(plan.members.map(\.workerID))
    }

    private func sendCover(_ nodes: [CoverNode], isFinal: Bool, _ sharding: ShardedReduction, learningRate: Float) {
        sharding.coverVersion += 1
        broadcast(.reduce(ReduceCover(version: sharding.coverVersion, totalMicroBatches: UInt32(sharding.cover.microBatches),
                                      learningRate: learningRate, nodes: nodes, isFinal: isFinal)), to: sharding)
    }

    /// The nodes each worker was given, when every micro-batch of the step went to exactly one:
    /// the cover the step has unless a worker dies, straggles or sends non-finite results.
    private func expectedCover(_ sharding: ShardedReduction) -> [CoverNode]? {
        let total = sharding.cover.microBatches
        var givenTo = [UInt32?](repeating: nil, count: total)
        for worker in scheduler.workers {
            for index in worker.given {
                guard index < total, givenTo[index] == nil else { return nil }
                givenTo[index] = worker.id
            }
        }
        guard !givenTo.contains(nil) else { return nil }
        let tree = ReductionTree(leafCount: total)
        return scheduler.workers.flatMap { worker in tree.maximalNodes(covering: worker.given).map { CoverNode(node: $0, worker: worker.id) } }
            .sorted { $0.node.microBatches.lowerBound < $1.node.microBatches.lowerBound }
    }

    /// Gives up members that have not adopted the current plan a worker timeout after its issue:
    /// alive or not, they hold up every other member, since nothing moves between workers before
    /// all follow the plan. One still alive is told to join again (without a strike) and comes
    /// back as a new member; one the pool no longer knows is dropped from the plan.
    private func giveUpMembersNotAdopting(_ sharding: ShardedReduction) {
        let patience = config.distributed.workerTimeout
        guard let version = sharding.plan?.version else { return }
        for id in sharding.membersNotAdopting(patience: patience, now: monotonicSeconds()) {
            guard let worker = pool.worker(id: id) else {
                logger.warning("step \(state.step): member w\(id) of sharded plan \(version) is no longer a worker of this run; planning without it")
                shardMemberLost(id)
                continue
            }
            lose(worker, reason: "it did not adopt sharded plan \(version) within \(String(format: "%.1f", patience)) s (distributed.worker_timeout)")
        }
    }

    /// Says once a step, when it has gone on for `stallThreshold(minimum:)` seconds, what it waits for:
    /// a step of a small model takes milliseconds, and one stuck with every member busy
    /// otherwise leaves no line at all (the straggler rule speaks only when a worker is idle).
    private func reportStall(_ sharding: ShardedReduction) {
        let waited = monotonicSeconds() - sharding.stepStartedAt
        guard !sharding.stallReported, waited > sharding.stallThreshold(minimum: Self.stallReportAfter) else { return }
        sharding.stallReported = true
        guard let plan = sharding.plan else {
            return logger.warning("step \(state.step): no progress for \(Int(waited)) s: no sharded plan yet, \(sharding.waiting.count) worker(s) waiting to join")
        }
        let members = plan.members.map(\.workerID)
        let notAdopted = members.filter { !sharding.adopted.contains($0) }
        let busy = scheduler.workers.filter { !$0.outstanding.isEmpty }.map { "\($0.label) holds \($0.outstanding.sorted())" }
        let notDone = members.filter { !sharding.done.contains($0) }
        var parts = ["plan \(plan.version) of \(members.map { "w\($0)" }) is \(sharding.inForceSent == plan.version ? "in force" : "not in force yet")"]
        if !notAdopted.isEmpty { parts.append("not adopted by \(notAdopted.map { "w\($0)" })") }
        if !busy.isEmpty { parts.append("micro-batches out: " + busy.joined(separator: ", ")) }
        if scheduler.isTaskComplete {
            parts.append("cover \(sharding.coverSent ? "sent" : "not sent")")
            parts.append("step not done by \(notDone.map { "w\($0)" })")
        }
        logger.warning("step \(state.step): no progress for \(Int(waited)) s: \(parts.joined(separator: "; "))")
    }

    /// Seconds any sharded step may take before the coordinator says what it waits for.
    static let stallReportAfter = 5.0

    /// After a member died: a plan over the survivors (replicas take over its slices), and its
    /// micro-batches whose partial sums may not have reached the new owners computed again.
    private func replanAfterLoss(_ sharding: ShardedReduction) throws {
        guard !sharding.members.isEmpty || !sharding.waiting.isEmpty else { return }
        let plan = try issuePlan(sharding)
        if let norm = sharding.norm { broadcast(.norm(GlobalNorm(value: norm)), to: sharding) }
        let again = sharding.cover.uncovered
        if task != nil, !again.isEmpty {
            sharding.coverSent = false
            apply(scheduler.handle(.redo(microBatches: Set(again)), at: monotonicSeconds()))
        } else if task != nil {
            // Every micro-batch is still covered, but owners changed: the same cover under the new plan.
            sharding.coverSent = false
        }
        let recomputed = again.isEmpty ? "" : "; micro-batches \(again) are computed again"
        logger.warning("step \(state.step): sharded plan \(plan.version) over \(plan.members.count) survivor(s)\(recomputed)")
    }

    /// A member or waiting worker is gone.
    func shardMemberLost(_ id: UInt32) {
        guard let sharding else { return }
        sharding.waiting[id] = nil
        sharding.proven.remove(id)
        guard sharding.members.removeValue(forKey: id) != nil else { return }
        sharding.cover.forget(id)
        sharding.needsReplan = true
    }

    func broadcast(_ message: Message, to sharding: ShardedReduction) {
        for id in sharding.members.keys.sorted() {
            guard let worker = pool.worker(id: id) else { continue }
            if !send(message, to: worker) { apply(gone(worker)) }
        }
    }

    // MARK: Messages

    /// A worker says where it listens: it becomes a member at the next step boundary.
    func receiveListening(_ listening: Listening, from worker: WorkerRecord) {
        guard let sharding else { return offence(worker.peer, "a listening message, but this run does not use the sharded reduction", code: 400) }
        if let keys = options.security?.authorizedKeys, !listening.publicKey.isEmpty,
           !keys.contains(where: { $0.publicKey == listening.publicKey }) && listening.publicKey != link.localWorkerPublicKey {
            return offence(worker.peer, "a public key for its peers that is not on the allow-list", code: 403)
        }
        if options.security != nil && listening.publicKey.isEmpty {
            return offence(worker.peer, "no public key for its peers, but this run requires CURVE", code: 403)
        }
        let member = ShardMember(workerID: worker.id, endpoint: listening.endpoint, publicKey: listening.publicKey,
                                 localEndpoint: listening.localEndpoint, host: listening.host)
        if let known = sharding.members[worker.id] {
            guard known != member else { return }
            // It listens anew: it started over and holds nothing of what it had.
            shardMemberLost(worker.id)
        }
        sharding.waiting[worker.id] = member
    }

    func receivePlanAdopted(_ adopted: PlanAdopted, from worker: WorkerRecord) {
        guard let sharding, adopted.planVersion == sharding.plan?.version else { return }
        sharding.adopted.insert(worker.id)
    }

    func receiveStepDone(_ done: StepDone, step: UInt64, from worker: WorkerRecord) {
        guard let sharding, let plan = sharding.plan, step == UInt64(state.step), done.planVersion == plan.version else { return }
        sharding.done.insert(worker.id)
        sharding.proven.insert(worker.id)
    }

    func receiveBlockSums(_ sums: BlockSums, step: UInt64, from worker: WorkerRecord) {
        guard let sharding, let plan = sharding.plan, step == UInt64(state.step) else { return }
        let index = Int(sums.slice)
        guard index < plan.slices.count, plan.slices[index].owner == worker.id, !sharding.layout.isStateSlice(index) else {
            return offence(worker.peer, "block sums of slice \(sums.slice), which it does not own", code: 403)
        }
        let range = sharding.layout.slices[index]
        let blocks = (range.count + GradientClipping.normBlock - 1) / GradientClipping.normBlock
        guard sums.sums.count == blocks else {
            return offence(worker.peer, "\(sums.sums.count) block sums for slice \(index), which has \(blocks) blocks", code: 422)
        }
        if sharding.blockSums[index] == nil { sharding.blockSums[index] = sums.sums }
    }

    func receiveGathered(_ slice: SliceState, from worker: WorkerRecord) {
        guard let sharding, let plan = sharding.plan else { return }
        let index = Int(slice.slice)
        guard index < plan.slices.count, plan.slices[index].owner == worker.id,
              slice.weights?.count == sharding.layout.slices[index].count else {
            return offence(worker.peer, "the state of slice \(slice.slice), which it does not own or does not fit", code: 403)
        }
        sharding.gathered[index] = slice
    }

    // MARK: Checkpoints

    /// Brings the weights and optimiser state from the slice owners, so that the coordinator's
    /// state is the run's current one (before a checkpoint).
    func gatherShards() throws {
        guard let sharding, !sharding.holdsWeights, sharding.plan != nil else { return }
        sharding.gathered = [:]
        var askedVersion: UInt64 = 0
        let patience = max(60, config.distributed.workerTimeout * 4)
        let deadline = monotonicSeconds() + patience
        while sharding.gathered.count < sharding.layout.slices.count {
            // A lost slice throws `ShardRewind`: the run goes back to its last checkpoint.
            if sharding.needsReplan && sharding.readyCount > 0 { _ = try issuePlan(sharding) }
            if sharding.isReadyToEnforce { enforce(sharding) }
            if let plan = sharding.plan, plan.version != askedVersion, sharding.inForceSent == plan.version {
                // Slices already gathered stay: every owner sends the same committed state.
                askedVersion = plan.version
                broadcast(.gather(Gather(planVersion: plan.version)), to: sharding)
            }
            guard monotonicSeconds() < deadline else {
                let missing = sharding.layout.slices.indices.filter { sharding.gathered[$0] == nil }
                throw CoordinatorError(description: "step \(state.step): the owners of slices \(missing) did not send their weights and state for a checkpoint within "
                    + "\(Int(patience)) s; the last checkpoint is in \(options.runDirectory)/checkpoints: continue from it with --resume")
            }
            try pump(timeout: 0.05)
            apply(scheduler.handle(.tick, at: monotonicSeconds()))
            expireSilentWorkersOutsideTheScheduler()
            giveUpMembersNotAdopting(sharding)
            sendHeartbeats()
        }
        try takeGathered(sharding)
        sharding.holdsWeights = true
    }

    private func takeGathered(_ sharding: ShardedReduction) throws {
        let parameterCount = state.parameterCount
        let parameters = state.network.parameters.pointer, stateValues = state.network.state.pointer
        for (index, range) in sharding.layout.slices.enumerated() {
            sharding.gathered[index]!.weights!.withUnsafeBufferPointer { values in
                // A slice holds parameters or state observations, never both (ShardLayout).
                if range.lowerBound < parameterCount {
                    (parameters + range.lowerBound).update(from: values.baseAddress!, count: range.count)
                } else {
                    (stateValues + range.lowerBound - parameterCount).update(from: values.baseAddress!, count: range.count)
                }
            }
        }
        // The optimiser's state, each tensor the size of the parameters put together from the
        // parameter slices in order, one copy of each; a smaller one (Adam's step count) is the
        // same in every owner: the first slice's.
        let pieces = sharding.layout.slices.indices.filter { !sharding.layout.isStateSlice($0) }.map { sharding.gathered[$0]!.tensors }
        var whole: [String: [Float]] = [:]
        for (t, tensor) in state.optimizer.stateTensors.enumerated() {
            let parts = pieces.compactMap { $0.count > t ? $0[t] : nil }
            if tensor.values.count == parameterCount {
                var values: [Float] = []
                values.reserveCapacity(parts.reduce(0) { $0 + $1.count })
                for part in parts { part.withUnsafeBufferPointer { values.append(contentsOf: $0) } }
                whole[tensor.name] = values
            } else {
                whole[tensor.name] = pieces.first.flatMap { $0.count > t ? $0[t].toArray() : nil } ?? tensor.values
            }
        }
        do {
            try state.optimizer.restore(whole)
        } catch {
            throw CoordinatorError(description: "step \(state.step): the slice owners' optimiser state does not fit this model: \(error)")
        }
    }
}
