import AllReduce
import CNN
import Foundation
import Logging
import Wire

/// A worker's part in the `sharded` reduction (docs/scaling.md): it sends each slice of its
/// partial sums to the slice's owner, completes the tree of the slices it owns once the
/// coordinator names the step's cover, runs their optimiser (ZeRO stage 1) and sends the updated
/// weights to every member but the slice's replica. The replica is sent the gradient the
/// optimiser took instead, and runs the same update on its own copy of the state: the owner's
/// bits, and no state on the wire each step. The worker assembles the next step's weights from
/// every owner's slices and its own mirrored updates.
///
/// Nothing is thrown away before the coordinator starts the next step (the commit): the weights
/// the step started from, the committed optimiser state and the partial sums, so that when a
/// member dies mid-step the new owners can redo its slices from them, to the same bits.
final class ShardRole {
    let layout: ShardLayout
    let selfID: UInt32
    let mesh: PeerTransport
    let peers: PeerSender
    let config: TrainingConfig
    private let engine: MicroBatchEngine
    let logger: Logger
    private let trainableRanges: [Range<Int>]
    /// Sends to the coordinator (message, step).
    let tellCoordinator: (Message, Int) -> Void

    private(set) var plan: ShardPlan?
    /// The step `current` starts; `next` is being assembled for the step after it.
    private(set) var step: Int?
    private(set) var current: SliceBuffer
    private(set) var next: SliceBuffer
    /// This worker's partial sums of the step (whole leaves), until the commit.
    private var partials: [(node: TreeNode, values: FloatPayload)] = []
    /// Partial sums received for slices this worker owns or owned during the step:
    /// slice -> (node, sender) -> values.
    private(set) var received: [Int: [CoverNode: FloatPayload]] = [:]
    private(set) var cover: ReduceCover?
    /// When the step's cover arrived, and whether this worker said why the step has not finished
    /// here (once a step, `stallReportAfter` seconds after the cover).
    private(set) var coverArrivedAt: Double?
    var stallReported = false
    private var norm: Double?
    private var blockSumsSent: Set<Int> = []
    /// Optimiser state of the slices this worker owns or mirrors.
    private(set) var holdings: [Int: SliceHolding] = [:]
    /// Optimisers of the owned and mirrored slices; their state is the committed one until the
    /// slice is applied (owned) or has pending state (mirrored).
    private var updaters: [Int: ParameterSliceUpdate] = [:]
    private(set) var doneSent: UInt64?
    /// The last plan adopted, until it is in force.
    private var handover: ShardPlan?
    /// The last plan in force: whom this worker's messages of the step go to (every member of it
    /// knows this worker). The adopted plan may be newer.
    private(set) var inForce: ShardPlan?
    /// Who has this step's messages of each slice from this worker: its partial sums (an owner,
    /// and which nodes), the gradient its optimiser took (a replica), its new weights (members).
    /// A plan in force that names someone else gets them sent again; a send that failed is tried
    /// again.
    private var partialsSentTo: [Int: (owner: UInt32, nodes: Set<TreeNode>)] = [:]
    private var gradientSentTo: [Int: UInt32] = [:]
    private var weightsSentTo: [Int: Set<UInt32>] = [:]
    /// What this worker, as a slice's source under the plan in force, still owes: committed
    /// state to a new owner or replica, current weights to a new member.
    var handoversDue: [Handover] = []
    /// A checkpoint's request for the owned slices, and which were sent.
    private var gatherWanted: UInt64?
    private var gatherSent: Set<Int> = []
    /// Peers' messages this worker cannot take yet: weight slices and state the current plan does
    /// not let them send (the coordinator's plan can reach this worker after a peer acted on it),
    /// and partial sums of another step. Replayed at the next plan or step.
    private(set) var deferred: DeferredPeerMessages
    /// The gradient each owned slice's optimiser took this step, for its replica.
    private var taken: [Int: SliceGradient] = [:]
    /// Where each owned slice's mean gradient is built, reused step after step once no send holds
    /// it: a fresh buffer each time cost the kernel a zeroed page per 4 KB.
    private var meanBuffers: [Int: FloatBuffer] = [:]
    /// Owners' gradients of the slices this worker mirrors, until it has run their update.
    private var toMirror: [Int: SliceGradient] = [:]
    /// Whether a computation may still read `current` (then a commit does not reuse it).
    private let isComputing: () -> Bool

    struct SliceHolding {
        var committed: [(name: String, values: [Float])]?
        var pending: [(name: String, values: [Float])]?
        var applied = false
    }

    init(config: TrainingConfig, engine: MicroBatchEngine, selfID: UInt32, mesh: PeerTransport, logger: Logger,
         isComputing: @escaping () -> Bool, tellCoordinator: @escaping (Message, Int) -> Void) throws {
        self.isComputing = isComputing
        self.config = config
        self.engine = engine
        self.selfID = selfID
        self.mesh = mesh
        peers = PeerSender(mesh: mesh, logger: logger)
        self.logger = logger
        self.tellCoordinator = tellCoordinator
        layout = ShardLayout(parameterCount: engine.parameterCount, stateCount: engine.stateCount, block: GradientClipping.normBlock)
        trainableRanges = try ModelState.trainableRanges(of: engine.layoutNetwork, freezing: config.train.freeze)
        current = SliceBuffer(count: engine.leafLength, slices: layout.slices.count)
        next = SliceBuffer(count: engine.leafLength, slices: layout.slices.count)
        deferred = DeferredPeerMessages(leafLength: engine.leafLength, microBatchesPerStep: config.train.microBatchesPerStep)
    }

    // MARK: Weights

    /// The weights step `step` starts from, when this worker holds all of them.
    func weights(forStep wanted: Int) throws -> FloatPayload? {
        try commitIfDue(wanted)
        guard step == wanted, current.isComplete else { return nil }
        return current.payload
    }

    /// The coordinator's whole weights for `step` (the start of a run, or after a gather).
    func receiveWholeWeights(_ values: FloatPayload, step: Int) throws {
        try commitIfDue(step)
        if self.step != step { try startStep(step) }
        values.withUnsafeBufferPointer { current.pointer.update(from: $0.baseAddress!, count: min($0.count, current.count)) }
        current.markAll()
    }

    private func startStep(_ step: Int) throws {
        current.clear()
        try enter(step)
    }

    /// Makes `newStep` the step in progress, keeping nothing of the last one but its weights and
    /// optimiser state. Peers' messages kept for another step are handled again when they are of
    /// `newStep` or later, and dropped otherwise: a peer that began this step before this worker
    /// heard of it sent its part already (after a rewind, while this worker was still in a later
    /// step), and will not send it again.
    private func enter(_ newStep: Int) throws {
        step = newStep
        let kept = deferred.take()
        next.clear()
        partials.removeAll()
        received.removeAll()
        partialsSentTo.removeAll()
        gradientSentTo.removeAll()
        taken.removeAll()
        toMirror.removeAll()
        weightsSentTo.removeAll()
        handoversDue.removeAll()
        cover = nil
        coverArrivedAt = nil
        stallReported = false
        norm = nil
        blockSumsSent.removeAll()
        doneSent = nil
        for index in holdings.keys { holdings[index]!.pending = nil; holdings[index]!.applied = false }
        for held in kept where Int(held.envelope.step) >= newStep { try handlePeer(held.envelope, from: held.sender) }
    }

    /// Moves to `step` when it is the one after the current and the current one is done: the
    /// assembled weights become current, pending optimiser state becomes committed.
    private func commitIfDue(_ newStep: Int) throws {
        guard let step, newStep == step + 1 else { return }
        guard next.isComplete else {
            let missing = layout.slices.indices.filter { !next.has($0) }
            throw ShardOutOfStep(description: "step \(newStep) began before this worker held every weight of it (slices \(missing) missing)")
        }
        for index in holdings.keys where holdings[index]!.pending != nil {
            holdings[index]!.committed = holdings[index]!.pending
        }
        // State kept as a source of the settled plan is no longer needed: a step completed
        // under the current plan, whose holders now hold it.
        if let plan {
            for index in plan.slices.indices where plan.slices[index].owner != selfID && plan.slices[index].replica != selfID {
                holdings[index] = nil
                updaters[index] = nil
            }
        }
        // A computation of the old step may still read the old weights: give them up rather than overwrite them.
        let old = current
        current = next
        next = isComputing() ? SliceBuffer(count: old.count, slices: layout.slices.count) : old
        try enter(newStep)
    }

    // MARK: Messages from the coordinator

    /// Follows `newPlan` from now on: knows its members (and accepts their messages), takes up
    /// the slices it now owns or mirrors, and says so to the coordinator. What moves to others
    /// waits for `planInForce`, when every member follows the plan too.
    func adopt(_ newPlan: ShardPlan, step: Int) throws {
        guard newPlan.slices.count == layout.slices.count else {
            throw WorkerError(description: "the coordinator's plan has \(newPlan.slices.count) slices; this model has \(layout.slices.count)")
        }
        try commitIfDue(step)
        if self.step == nil { try startStep(step) }
        let old = plan
        plan = newPlan
        try mesh.setPeers(newPlan.members.filter { $0.workerID != selfID }.map(\.peerAddress))
        doneSent = nil
        for (index, slice) in newPlan.slices.enumerated() {
            let wasOwner = old?.slices[index].owner == selfID
            let isOwner = slice.owner == selfID
            let isReplica = slice.replica == selfID
            if isOwner && !wasOwner {
                // Redone from the committed state, whatever a previous owner may have sent.
                updaters[index] = nil
                holdings[index, default: SliceHolding()].pending = nil
                holdings[index]!.applied = false
            }
            // Received partial sums stay until the step ends: senders deliver under the plan in
            // force, so if a later plan gives the slice back before this one is in force, nobody
            // sends them again. A node's sums are the same bits whoever holds them.
            if !isOwner && !isReplica { updaters[index] = nil }
            if isOwner || isReplica, holdings[index] == nil { holdings[index] = SliceHolding() }
            if layout.isStateSlice(index) && (isOwner || isReplica) && holdings[index]!.committed == nil { holdings[index]!.committed = [] }
        }
        handover = newPlan
        tellCoordinator(.planAdopted(PlanAdopted(planVersion: newPlan.version)), self.step!)
        let replay = deferred.take()
        for held in replay { try handlePeer(held.envelope, from: held.sender) }
        try progress()
    }

    /// Every member follows the plan: as a slice's source, send its state and weights where
    /// they lack; send this worker's partial sums to slices' new owners, and an owned slice's
    /// gradient to its new replica.
    func planInForce(_ version: UInt64) throws {
        guard let newPlan = handover, newPlan.version == version, plan?.version == version else { return }
        handover = nil
        inForce = newPlan
        handoversDue = newPlan.slices.indices.filter { newPlan.slices[$0].source == selfID }.flatMap {
            handovers(of: $0, newPlan.slices[$0], newMembers: newPlan.newMembers)
        }
        deliverHandovers()
        deliverToPlanInForce()
        try progress()
    }

    /// Sends what the plan in force's owners, replicas and members lack of this worker's part
    /// of the step: each slice's partial sums, and for slices it has updated, their weights (to
    /// the replica, the gradient its update took).
    private func deliverToPlanInForce() {
        guard let inForce, let step else { return }
        for (index, slice) in inForce.slices.enumerated() {
            deliver(partials, of: index, to: slice.owner)
            guard slice.owner == selfID, holdings[index]?.applied == true, next.has(index) else { continue }
            let replica = layout.isStateSlice(index) ? nil : slice.replica
            if let replica, gradientSentTo[index] != replica, let gradient = taken[index],
               peers.send(.sliceGradient(gradient), to: replica, step: step + 1) {
                gradientSentTo[index] = replica
            }
            let range = layout.slices[index]
            let values = FloatPayload(viewing: next.pointer + range.lowerBound, count: range.count, owner: next)
            for member in inForce.members where member.workerID != selfID && member.workerID != replica
                && !weightsSentTo[index, default: []].contains(member.workerID) {
                if peers.send(.weightSlice(WeightSlice(slice: UInt32(index), values: values)), to: member.workerID, step: step + 1) {
                    weightsSentTo[index, default: []].insert(member.workerID)
                }
            }
        }
    }

    /// The partial sums of slice `index` among `held` that its owner lacks, sent to it in
    /// messages of disjoint nodes (a worker that computed a micro-batch twice, in a node and
    /// again alone, holds both); whether anything was sent.
    @discardableResult
    private func deliver(_ held: [(node: TreeNode, values: FloatPayload)], of index: Int, to owner: UInt32) -> Bool {
        guard !held.isEmpty else { return false }
        if partialsSentTo[index]?.owner != owner { partialsSentTo[index] = (owner, []) }
        let missing = held.filter { !partialsSentTo[index]!.nodes.contains($0.node) }
        var sent = false
        for group in TreeNode.disjointGroups(missing, node: \.node) where sendPartials(group, of: index, to: owner) {
            partialsSentTo[index]!.nodes.formUnion(group.map(\.node))
            sent = true
        }
        return sent
    }

    func receiveCover(_ newCover: ReduceCover, step: Int) throws {
        // A member given no micro-batches of this step hears of it first here.
        try commitIfDue(step)
        guard step == self.step else { return }
        if let cover, cover.version >= newCover.version { return }
        cover = newCover
        // An expected cover comes with the work: the step is not late until the final one.
        if coverArrivedAt == nil && newCover.isFinal { coverArrivedAt = monotonicSeconds() }
        try progress()
    }

    func receiveNorm(_ value: Double, step: Int) throws {
        try commitIfDue(step)
        guard step == self.step else { return }
        norm = value
        try progress()
    }

    /// A slice's committed optimiser state as of the envelope's step: from the coordinator at the
    /// start of a run, or from the slice's source after a plan change. A source already in the
    /// next step hands over that step's state: it waits for this worker to get there.
    func receiveState(_ message: SliceState, step messageStep: Int, from sender: UInt32?) throws {
        let index = Int(message.slice)
        guard index < layout.slices.count, let plan, let step else { return }
        let slice = plan.slices[index]
        if messageStep > step, let sender {
            deferOrDrop(Envelope(runID: 0, step: UInt64(messageStep), message: .sliceState(message)), from: sender)
        } else if messageStep == step {
            guard sender == nil || sender == slice.source, slice.owner == selfID || slice.replica == selfID else { return }
            holdings[index, default: SliceHolding()].committed = zip(message.names, message.tensors).map { (name: $0, values: $1.toArray()) }
            updaters[index] = nil
        }
        try progress()
    }

    /// Sends the weights and optimiser state of every owned slice to the coordinator, as soon as
    /// this worker holds them (a new owner may still wait for its source).
    func gather(planVersion: UInt64, step: Int) throws {
        try commitIfDue(step)
        guard plan?.version == planVersion else { return }
        gatherWanted = planVersion
        gatherSent = []
        sendGathered()
    }

    private func sendGathered() {
        guard let plan, let step = self.step, gatherWanted == plan.version else { return }
        for (index, slice) in plan.slices.enumerated() where slice.owner == selfID && !gatherSent.contains(index) {
            guard let state = holdings[index]?.committed, current.has(index) else { continue }
            sendState(index, state, weights: true, to: nil, step: step)
            gatherSent.insert(index)
        }
    }

    // MARK: Results of the worker's own computation

    /// Keeps the partial sums of a training computation for `step`, sends each slice to its
    /// owner, and returns what to tell the coordinator.
    func computed(_ gradients: Gradients, step: Int) throws -> Computed {
        var finding = ""
        for (node, values) in zip(gradients.nodes, gradients.tensors) {
            if finding.isEmpty, let found = values.withUnsafeBufferPointer({ NonFiniteFinding.locate(in: $0, network: engine.layoutNetwork) }) {
                finding = found.description
            }
            if step == self.step, !partials.contains(where: { $0.node == node }) { partials.append((node, values)) }
        }
        if step == self.step { deliverToPlanInForce() }
        try progress()
        return Computed(epoch: gradients.epoch, results: gradients.results, nodes: gradients.nodes, timings: gradients.timings, nonFinite: finding)
    }

    /// Sends slices `ready` of the partial sums a computation of `step` is still producing (they
    /// are final; the rest is being written) to their owners under the plan in force, so they
    /// travel while backward goes on through the earlier layers. What the plan in force does not
    /// name yet goes with the computation's results (`computed`). Whether anything was sent.
    func streamed(_ values: [TreeNode: GradientBuffer], slices ready: Range<Int>, step: Int) -> Bool {
        guard step == self.step, let inForce else { return false }
        let held = values.sorted { $0.key < $1.key }.map { node, buffer in
            (node: node, values: FloatPayload(viewing: buffer.pointer, count: buffer.count, owner: buffer))
        }
        var sent = false
        for index in ready.reversed() where deliver(held, of: index, to: inForce.slices[index].owner) { sent = true }
        return sent
    }

    /// Sends slice `index` of disjoint partial sums to its owner; whether it was sent.
    private func sendPartials(_ chosen: [(node: TreeNode, values: FloatPayload)], of index: Int, to owner: UInt32) -> Bool {
        guard let step, !chosen.isEmpty else { return false }
        let range = layout.slices[index]
        let tensors = chosen.map { held in
            held.values.withUnsafeBufferPointer { FloatPayload(viewing: $0.baseAddress! + range.lowerBound, count: range.count, owner: held.values) }
        }
        if owner == selfID {
            for (held, tensor) in zip(chosen, tensors) { received[index, default: [:]][CoverNode(node: held.node, worker: selfID)] = tensor }
            return true
        }
        return peers.send(.slicePartials(SlicePartials(slice: UInt32(index), nodes: chosen.map(\.node), tensors: tensors,
                                                 encoding: sliceRounding(index).tensorEncoding)), to: owner, step: step)
    }

    // MARK: Messages from peers

    /// The socket peers' messages arrive on, when it is a ZeroMQ one: the worker waits on it
    /// and on its coordinator's socket at once.
    var peerSocket: ZMQSocket? { (mesh as? PeerMesh)?.listener }

    /// Reads what peers sent, for up to `timeoutMilliseconds` for the first message.
    func poll(timeoutMilliseconds: Int) throws {
        if let sockets = mesh as? PeerMesh {
            for refusal in sockets.newRefusals() { logger.warning("peer listener: \(refusal)") }
            for failure in (try? sockets.handshakeFailures()) ?? [] { logger.warning("\(failure)") }
        }
        var timeout = timeoutMilliseconds
        while let incoming = try mesh.receive(timeoutMilliseconds: timeout) {
            timeout = 0
            switch incoming.result {
            case .failure(let error):
                logger.warning("dropped a malformed message from worker w\(incoming.sender): \(error)")
            case .success(let envelope):
                try handlePeer(envelope, from: incoming.sender)
            }
        }
        if peers.takeFailure() {
            deliverHandovers()
            deliverToPlanInForce()
        }
        reportStall()
    }

    private func handlePeer(_ envelope: Envelope, from sender: UInt32) throws {
        guard let plan, let step, let messageStep = Int(exactly: envelope.step) else { return }
        switch envelope.message {
        case .slicePartials(let message):
            // Kept whoever owns the slice now: a sender may act on a plan that has not reached
            // this worker yet. Only the nodes the cover names from their senders are used.
            let index = Int(message.slice)
            guard index < layout.slices.count else { return }
            guard messageStep == step else {
                // A peer already in the next step: its part waits for this worker to get there.
                // So does a peer in an earlier step: the run may have gone back to a checkpoint
                // that this worker has not heard of yet, and the sender will not send it again.
                // (A late part of a finished step goes at the next commit.)
                deferOrDrop(envelope, from: sender)
                return
            }
            let length = layout.slices[index].count
            guard message.encoding == sliceRounding(index).tensorEncoding else {
                logger.warning("dropped slice \(index)'s partial sums from worker w\(sender): sent as \(message.encoding), this run sends them as \(sliceRounding(index).tensorEncoding)")
                return
            }
            for (node, tensor) in zip(message.nodes, message.tensors) where tensor.count == length {
                received[index, default: [:]][CoverNode(node: node, worker: sender)] = tensor
            }
        case .weightSlice(let message):
            let index = Int(message.slice)
            guard index < layout.slices.count, message.values.count == layout.slices[index].count else { return }
            let slice = plan.slices[index]
            // Only the owner writes a slice's next weights; only the source a new member's current ones.
            if messageStep == step + 1 && sender == slice.owner {
                if !next.has(index) { next.write(message.values, at: layout.slices[index], slice: index) }
            } else if messageStep == step && sender == slice.source {
                if !current.has(index) { current.write(message.values, at: layout.slices[index], slice: index) }
            } else if messageStep >= step {
                deferOrDrop(envelope, from: sender)
            }
        case .sliceState(let message):
            guard Int(message.slice) < layout.slices.count else { return }
            try receiveState(message, step: messageStep, from: sender)
        case .sliceGradient(let message):
            let index = Int(message.slice)
            guard index < layout.slices.count, !layout.isStateSlice(index), message.values.count == layout.slices[index].count else { return }
            let slice = plan.slices[index]
            // Only the owner's optimiser writes a slice's next weights; its replica reruns it.
            if messageStep == step + 1 && sender == slice.owner && slice.replica == selfID {
                if holdings[index]?.pending == nil { toMirror[index] = message }
            } else if messageStep >= step {
                deferOrDrop(envelope, from: sender)
            }
        default:
            logger.warning("unexpected \(envelope.message.typeName) from worker w\(sender); ignored")
        }
        try progress()
    }

    /// Keeps a message for the next plan or step (`DeferredPeerMessages` bounds what one peer
    /// may leave waiting); the number of messages stays far below a slice's weights and state
    /// from each member.
    private func deferOrDrop(_ envelope: Envelope, from sender: UInt32) {
        let limit = 4 * layout.slices.count + 4 * (plan?.members.count ?? 0) + 64
        guard !deferred.keep(envelope, from: sender, messageLimit: limit) else { return }
        let waiting = deferred.bytes[sender, default: 0]
        logger.warning("dropped a \(envelope.message.typeName) from worker w\(sender) that no plan of this worker allows (\(waiting) bytes of its tensors already wait)")
    }

    // MARK: Completing slices

    /// Completes whatever can be completed now, and says so to the coordinator when all is done.
    func progress() throws {
        sendGathered()
        guard let plan, let step else { return }
        for index in toMirror.keys.sorted() { try mirror(index, plan: plan) }
        guard let cover else { return }
        for (index, slice) in plan.slices.enumerated() where slice.owner == selfID && holdings[index]?.applied != true {
            try complete(index, cover: cover, step: step)
        }
        let ownedDone = plan.slices.indices.allSatisfy { plan.slices[$0].owner != selfID || holdings[$0]?.applied == true }
        let mirroredDone = plan.slices.indices.allSatisfy {
            plan.slices[$0].replica != selfID || layout.isStateSlice($0) || holdings[$0]?.pending != nil
        }
        if ownedDone && mirroredDone && next.isComplete && doneSent != plan.version {
            doneSent = plan.version
            tellCoordinator(.stepDone(StepDone(planVersion: plan.version)), step)
        }
    }

    private func complete(_ index: Int, cover: ReduceCover, step: Int) throws {
        guard let committed = holdings[index]?.committed, current.isComplete else { return }
        let range = layout.slices[index]
        var parts: [(TreeNode, FloatPayload)] = []
        for entry in cover.nodes {
            guard let values = received[index]?[entry] else { return }
            parts.append((entry.node, values))
        }
        let reduction = TreeReduction(rounding: sliceRounding(index))
        reduction.begin(microBatches: Int(cover.totalMicroBatches), length: range.count)
        defer { reduction.end() }
        for (node, values) in parts {
            _ = try values.withUnsafeBufferPointer { try reduction.offer(node, values: $0.baseAddress!, owner: values) }
        }
        let mean = meanBuffer(for: index)
        mean.reserve(range.count)
        try reduction.mean(into: mean.pointer)
        if let finding = NonFiniteFinding.locate(in: UnsafeBufferPointer(start: mean.pointer, count: range.count), network: engine.layoutNetwork) {
            // The coordinator may yet refuse the results an expected cover names: its final cover decides.
            guard cover.isFinal else { return }
            tellCoordinator(.error(WireFailure(code: 470, text: "slice \(index) of step \(step): the mean gradient is not finite (\(finding))")), step)
            holdings[index]!.applied = true
            return
        }
        let output = next.pointer + range.lowerBound
        if layout.isStateSlice(index) {
            let state = output
            state.update(from: current.pointer + range.lowerBound, count: range.count)
            var cursor = 0
            for layer in engine.layoutNetwork.layers {
                layer.applyObservations(mean.pointer + cursor, to: state + cursor)
                cursor += layer.stateCount
            }
            holdings[index]!.pending = []
        } else {
            let updater = try updater(for: index, committed: committed)
            var globalNorm: Double?
            if updater.clips {
                if !blockSumsSent.contains(index) {
                    let sums = updater.blockSums(ofMeanGradient: mean.pointer)
                    tellCoordinator(.blockSums(BlockSums(slice: UInt32(index), sums: sums)), step)
                    blockSumsSent.insert(index)
                }
                guard let norm else { return }
                globalNorm = norm
            }
            updater.apply(gradient: mean.pointer, norm: globalNorm, learningRate: cover.learningRate,
                          from: current.pointer + range.lowerBound, into: output)
            holdings[index]!.pending = updater.stateTensors
            taken[index] = SliceGradient(slice: UInt32(index), learningRate: cover.learningRate,
                                         values: FloatPayload(viewing: mean.pointer, count: range.count, owner: mean))
        }
        next.mark(index)
        holdings[index]!.applied = true
        deliverToPlanInForce()
    }

    /// Runs the update of slice `index`, which this worker mirrors, from the gradient its owner's
    /// optimiser took: on its own copy of the committed state and this step's weights, to the
    /// owner's bits (the same element-wise optimiser on the same values).
    private func mirror(_ index: Int, plan: ShardPlan) throws {
        guard let gradient = toMirror[index], plan.slices[index].replica == selfID, let committed = holdings[index]?.committed,
              holdings[index]?.pending == nil, current.has(index) else { return }
        toMirror[index] = nil
        let range = layout.slices[index]
        let updater = try updater(for: index, committed: committed)
        gradient.values.withUnsafeBufferPointer {
            updater.step(clippedGradient: $0.baseAddress!, learningRate: gradient.learningRate,
                         from: current.pointer + range.lowerBound, into: next.pointer + range.lowerBound)
        }
        holdings[index]!.pending = updater.stateTensors
        next.mark(index)
    }

    /// Slice `index`'s mean-gradient buffer: last step's, unless a send still holds it.
    private func meanBuffer(for index: Int) -> FloatBuffer {
        if var buffer = meanBuffers.removeValue(forKey: index), isKnownUniquelyReferenced(&buffer) {
            meanBuffers[index] = buffer
            return buffer
        }
        let buffer = FloatBuffer()
        meanBuffers[index] = buffer
        return buffer
    }

    private func updater(for index: Int, committed: [(name: String, values: [Float])]) throws -> ParameterSliceUpdate {
        if let existing = updaters[index] { return existing }
        let updater = ParameterSliceUpdate(config: config, range: layout.slices[index], trainableRanges: trainableRanges)
        if !committed.isEmpty { try updater.restore(part: committed) }
        updaters[index] = updater
        return updater
    }

    /// How slice `index`'s nodes are rounded (`distributed.wire_precision`): all of a parameter
    /// slice's, none of the state slice's. Its partial sums travel as `.tensorEncoding` says.
    private func sliceRounding(_ index: Int) -> NodeRounding { engine.rounding.restricted(to: layout.slices[index]) }
}
