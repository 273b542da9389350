import Foundation
import Logging
import Wire
import XCTest
@testable import Training

/// One worker's part in the sharded reduction, driven message by message: `ShardRole`s on an
/// in-memory peer hub, with plans, partial sums and covers given by the test.
final class ShardRoleTests: XCTestCase {
    /// Workers 0, 1, ... of the sharded test config on one in-memory hub, and the messages the
    /// tests hand them.
    private struct Roles {
        let workers: [ShardRole]
        let transports: [PeerTransport]
        let engine: MicroBatchEngine
        /// What each worker told the coordinator, in order.
        let told = Told()

        final class Told: @unchecked Sendable {
            private let lock = NSLock()
            private var messages: [(worker: UInt32, message: Message)] = []
            func append(_ message: Message, from worker: UInt32) { lock.withLock { messages.append((worker, message)) } }
            var all: [(worker: UInt32, message: Message)] { lock.withLock { messages } }
        }

        init(count: Int, yaml: String = ShardedTrainingTests.yaml()) throws {
            let config = try InMemoryRun(yaml: yaml, steps: 1).config
            let data = try DataSource.load(config)
            let hub = InMemoryPeerHub()
            engine = try MicroBatchEngine(config: config, data: data, threads: 1)
            let transports = try (0..<UInt32(count)).map { try hub.transport(workerID: $0) }
            self.transports = transports
            let told = told
            workers = try (0..<UInt32(count)).map { id in
                try ShardRole(config: config, engine: MicroBatchEngine(config: config, data: data, threads: 1), selfID: id,
                              mesh: transports[Int(id)], logger: Logger(label: "w\(id)") { _ in SwiftLogNoOpLogHandler() },
                              isComputing: { false }, tellCoordinator: { message, _ in told.append(message, from: id) })
            }
        }

        /// Every slice owned by `owner`, mirrored by `replica`, over all the workers.
        func plan(_ version: UInt64, owner: UInt32, replica: UInt32?) -> ShardPlan {
            ShardPlan(version: version,
                      members: workers.map { ShardMember(workerID: $0.selfID, endpoint: "inmemory://w\($0.selfID)", publicKey: "") },
                      slices: workers[0].layout.slices.indices.map { _ in SliceAssignment(owner: owner, replica: replica) },
                      newMembers: [])
        }

        /// Every worker in `step`, from the coordinator's weights, under `plan` in force.
        func startEveryWorker(step: Int, plan: ShardPlan) throws {
            for worker in workers {
                try worker.receiveWholeWeights(weights, step: step)
                try worker.adopt(plan, step: step)
                try worker.planInForce(plan.version)
            }
        }

        /// Whole weights, parameters then state.
        var weights: FloatPayload { FloatPayload(copying: [Float](repeating: 0.25, count: engine.parameterCount + engine.stateCount)) }

        /// A computation's result: micro-batch `index`'s leaf, of values that differ along it.
        func partialSums(_ index: Int) -> Gradients {
            Gradients(epoch: 0, results: [], nodes: [TreeNode(level: 0, index: index)],
                      tensors: [FloatPayload(copying: (0..<engine.leafLength).map { Float(($0 * 7 + index * 3) % 23 - 11) / 16 })])
        }

        /// The cover of a step of two micro-batches, worker 0 computing the first and worker 1 the second.
        var coverOfTwoLeaves: ReduceCover {
            ReduceCover(version: 1, totalMicroBatches: 2, learningRate: 0.05,
                        nodes: [CoverNode(node: TreeNode(level: 0, index: 0), worker: 0), CoverNode(node: TreeNode(level: 0, index: 1), worker: 1)])
        }
    }

    /// A slice's owner dropped the partial sums it had received when a newer plan gave the slice
    /// to another worker; senders, who deliver under the plan in force, did not send them again
    /// when a still newer plan gave the slice back before the other one was in force. The owner
    /// then waited for ever (the soak's seed 1236: "slice 1's partial sums [...] from w2" on w2
    /// itself). Partial sums of a node are the same bits whoever holds them, so they are kept.
    func testPartialSumsSurviveOwnershipLeavingAndComingBackBeforeAPlanIsInForce() throws {
        let roles = try Roles(count: 2)
        let workers = roles.workers

        // Plan 1, in force: worker 0 owns every slice and receives both workers' partial sums.
        for worker in workers { try worker.adopt(roles.plan(1, owner: 0, replica: 1), step: 0) }
        for worker in workers { try worker.planInForce(1) }
        _ = try workers[0].computed(roles.partialSums(0), step: 0)
        _ = try workers[1].computed(roles.partialSums(1), step: 0)
        try workers[0].poll(timeoutMilliseconds: 200)

        // Plan 2 gives every slice to worker 1 and never comes in force; plan 3 gives them back.
        for worker in workers { try worker.adopt(roles.plan(2, owner: 1, replica: 0), step: 0) }
        for worker in workers { try worker.adopt(roles.plan(3, owner: 0, replica: 1), step: 0) }
        for worker in workers { try worker.planInForce(3) }
        try workers[1].poll(timeoutMilliseconds: 0)
        try workers[0].poll(timeoutMilliseconds: 200)

        try workers[0].receiveCover(roles.coverOfTwoLeaves, step: 0)
        let lacks = workers[0].whatTheStepLacks()
        XCTAssertFalse(lacks.contains { $0.contains("partial sums") }, lacks.joined(separator: "; "))
    }

    /// After a rewind to a checkpoint, a peer that heard of it first sent its partial sums of the
    /// earlier step while the owner was still in the later one. The owner dropped them as stale;
    /// the sender, having delivered them under the plan in force, did not send them again, and the
    /// step waited for ever (the soak's seed 1250: "slice 0's partial sums ["[1,2) from w4", ...]"
    /// on the owner, after "going back to ... step-00021325"). They are kept for the step.
    func testPartialSumsOfARewoundStepThatArriveBeforeTheRewindAreKept() throws {
        let roles = try Roles(count: 2)
        let workers = roles.workers

        // Both in step 7 under plan 1.
        try roles.startEveryWorker(step: 7, plan: roles.plan(1, owner: 0, replica: 1))
        // The run goes back to step 5. Worker 0 takes the new plan but is slow to take the
        // coordinator's weights; worker 1 takes both, computes and sends its part of step 5.
        try workers[1].receiveWholeWeights(roles.weights, step: 5)
        for worker in workers { try worker.adopt(roles.plan(2, owner: 0, replica: 1), step: 5) }
        for worker in workers { try worker.planInForce(2) }
        _ = try workers[1].computed(roles.partialSums(1), step: 5)
        try workers[0].poll(timeoutMilliseconds: 200)
        // Now worker 0 takes the weights of step 5, computes its own part and hears the cover.
        try workers[0].receiveWholeWeights(roles.weights, step: 5)
        _ = try workers[0].computed(roles.partialSums(0), step: 5)
        try workers[0].receiveCover(roles.coverOfTwoLeaves, step: 5)
        let lacks = workers[0].whatTheStepLacks()
        XCTAssertFalse(lacks.contains { $0.contains("partial sums") }, lacks.joined(separator: "; "))
    }

    /// A member cannot fill a worker's memory with messages of a step the worker has not reached
    /// (kept until it gets there): what one peer leaves waiting is bounded by what an honest peer
    /// can send ahead.
    func testAPeerFloodingPartialSumsOfALaterStepIsHeldToItsBound() throws {
        let roles = try Roles(count: 2)
        let workers = roles.workers
        try roles.startEveryWorker(step: 7, plan: roles.plan(1, owner: 0, replica: 1))
        let length = workers[0].layout.slices[0].count
        let nodes = (0..<4).map { TreeNode(level: 0, index: $0) }
        let flood = SlicePartials(slice: 0, nodes: nodes, tensors: nodes.map { _ in FloatPayload(copying: [Float](repeating: 1, count: length)) })
        let messageBytes = 4 * length * MemoryLayout<Float>.size
        let bound = DeferredPeerMessages.bound(leafLength: roles.engine.leafLength,
                                               microBatchesPerStep: workers[0].config.train.microBatchesPerStep)
        XCTAssertEqual(workers[0].deferred.bytesPerPeer, bound)
        for _ in 0..<(3 * bound / messageBytes) {
            try roles.transports[1].send(Envelope(runID: 0, step: 9, message: .slicePartials(flood)), to: 0)
        }
        try workers[0].poll(timeoutMilliseconds: 200)
        let kept = workers[0].deferred.bytes[1] ?? 0
        XCTAssertLessThanOrEqual(kept, bound)
        XCTAssertGreaterThan(kept, bound - messageBytes, "everything up to the bound is kept")
        XCTAssertEqual(workers[0].deferred.messages.count, kept / messageBytes)
    }

    /// A slice's replica is sent the gradient its owner's optimiser took, not the new weights and
    /// state, and runs the same update on its own copy: the owner's bits, also when clipping
    /// scales the gradient (the replica must not clip it again) and when the replica's committed
    /// state arrives after the gradient. Its owner then sends no more than one slice's worth of
    /// values per slice it owns.
    func testAReplicaRunsItsOwnersUpdateFromTheGradientAloneToTheSameBits() throws {
        let clippedAdamW = ShardedTrainingTests.yaml(optimizer: "{name: adamw, lr: 0.001, weight_decay: 0.01}", clip: 0.5)
        for (yaml, norm) in [(ShardedTrainingTests.yaml(), nil as Double?), (clippedAdamW, 10.0)] {
            let roles = try Roles(count: 2, yaml: yaml)
            let (owner, replica) = (roles.workers[0], roles.workers[1])
            let layout = owner.layout
            let parameterSlices = layout.slices.indices.filter { !layout.isStateSlice($0) }
            let stateLate = norm != nil
            for worker in roles.workers {
                try worker.receiveWholeWeights(roles.weights, step: 0)
                try worker.adopt(roles.plan(1, owner: 0, replica: 1), step: 0)
                for index in parameterSlices where worker === owner || !stateLate {
                    try worker.receiveState(SliceState(slice: UInt32(index), names: [], weights: nil, tensors: []), step: 0, from: nil)
                }
                try worker.planInForce(1)
            }
            _ = try owner.computed(roles.partialSums(0), step: 0)
            _ = try replica.computed(roles.partialSums(1), step: 0)
            try owner.poll(timeoutMilliseconds: 200)
            let sentBefore = roles.transports[0].bytesSent
            for worker in roles.workers { try worker.receiveCover(roles.coverOfTwoLeaves, step: 0) }
            if let norm { try owner.receiveNorm(norm, step: 0) }
            XCTAssertTrue(owner.next.isComplete)
            try replica.poll(timeoutMilliseconds: 200)
            if stateLate {
                XCTAssertTrue(replica.whatTheStepLacks().contains { $0.contains("optimiser state (from w?) to mirror") }, replica.whatTheStepLacks().joined(separator: "; "))
                for index in parameterSlices {
                    try replica.receiveState(SliceState(slice: UInt32(index), names: [], weights: nil, tensors: []), step: 0, from: nil)
                }
            }
            XCTAssertTrue(replica.next.isComplete, replica.whatTheStepLacks().joined(separator: "; "))
            XCTAssertEqual(Array(UnsafeBufferPointer(start: replica.next.pointer, count: replica.next.count)),
                           Array(UnsafeBufferPointer(start: owner.next.pointer, count: owner.next.count)))
            XCTAssertNotEqual(Array(UnsafeBufferPointer(start: owner.next.pointer, count: owner.next.count)), roles.weights.toArray(),
                              "the update changed the weights")
            for index in parameterSlices {
                let ownerState = try XCTUnwrap(owner.holdings[index]?.pending)
                let replicaState = try XCTUnwrap(replica.holdings[index]?.pending)
                XCTAssertEqual(ownerState.map(\.name), replicaState.map(\.name))
                XCTAssertEqual(ownerState.map(\.values), replicaState.map(\.values), "slice \(index)")
                XCTAssertFalse(ownerState.isEmpty)
            }
            let values = roles.engine.parameterCount + roles.engine.stateCount
            let sent = roles.transports[0].bytesSent - sentBefore
            XCTAssertGreaterThanOrEqual(sent, 4 * values)
            XCTAssertLessThan(sent, 4 * values + 200 * layout.slices.count, "the replica was sent more than the gradient its owner took")
        }
    }

    /// Slices of the partial sums that backward has made final go to their owner while the
    /// computation still runs; its results then send only the slices not sent yet, and the owner
    /// holds every slice once, with the bits of the computed values.
    func testSlicesStreamedDuringBackwardGoAtOnceAndTheResultsSendOnlyTheRest() throws {
        let roles = try Roles(count: 2)
        let (computing, owner) = (roles.workers[0], roles.workers[1])
        let slices = computing.layout.slices
        XCTAssertGreaterThanOrEqual(slices.count, 3)
        for worker in roles.workers {
            try worker.adopt(roles.plan(1, owner: 1, replica: 0), step: 0)
            try worker.planInForce(1)
        }
        let result = roles.partialSums(0)
        let buffer = GradientBuffer(count: roles.engine.leafLength)
        result.tensors[0].withUnsafeBufferPointer { buffer.pointer.update(from: $0.baseAddress!, count: $0.count) }
        let node = TreeNode(level: 0, index: 0)
        let late = 0..<(slices.count - 2)
        let early = late.upperBound..<slices.count

        let beforeStreaming = roles.transports[0].bytesSent
        XCTAssertTrue(computing.streamed([node: buffer], slices: early, step: 0))
        let streamedBytes = roles.transports[0].bytesSent - beforeStreaming
        let earlyFloats = early.reduce(0) { $0 + slices[$1].count }
        XCTAssertGreaterThanOrEqual(streamedBytes, 4 * earlyFloats)
        try owner.poll(timeoutMilliseconds: 200)
        XCTAssertEqual(Set(owner.received.keys), Set(early), "the streamed slices reached the owner before the results")

        let beforeResults = roles.transports[0].bytesSent
        let viewed = Gradients(epoch: 0, results: [], nodes: [node],
                               tensors: [FloatPayload(viewing: buffer.pointer, count: buffer.count, owner: buffer)])
        _ = try computing.computed(viewed, step: 0)
        let resultBytes = roles.transports[0].bytesSent - beforeResults
        let lateFloats = late.reduce(0) { $0 + slices[$1].count }
        XCTAssertGreaterThanOrEqual(resultBytes, 4 * lateFloats)
        XCTAssertLessThan(resultBytes, 4 * lateFloats + 200 * slices.count, "the results sent streamed slices again")
        try owner.poll(timeoutMilliseconds: 200)
        let expected = result.tensors[0].toArray()
        for index in slices.indices {
            let held = try XCTUnwrap(owner.received[index]?[CoverNode(node: node, worker: 0)], "slice \(index)")
            XCTAssertEqual(held.toArray().map(\.bitPattern), expected[slices[index]].map(\.bitPattern), "slice \(index)")
        }
    }

    /// A worker says how long before its results its first slice went, and the coordinator
    /// refuses a figure above the computation's own time as malformed. A slice sent for a
    /// computation whose results were never delivered (the worker had rejoined) once counted for
    /// the next one: its results were refused and the step stalled (the soak's seed 1263).
    func testTheTimeSlicesWentNeverReachesBeforeTheAssignment() {
        XCTAssertEqual(Worker.streamedSeconds(firstSliceSentAt: 10.5, receivedAt: 10, now: 11), 0.5)
        XCTAssertEqual(Worker.streamedSeconds(firstSliceSentAt: 3, receivedAt: 10, now: 11), 1, "a slice of an earlier computation")
        XCTAssertEqual(Worker.streamedSeconds(firstSliceSentAt: nil, receivedAt: 10, now: 11), 0)
    }

    /// The coordinator names the step's expected cover as it hands the micro-batches out, and
    /// owners complete each slice as soon as its partial sums are in. A non-finite mean under an
    /// expected cover waits for the final one (the coordinator may refuse the results it names
    /// and have them computed again); under the final cover it stops the step, as before.
    func testAnExpectedCoverCompletesSlicesAtOnceButLeavesANonFiniteMeanToTheFinalCover() throws {
        let roles = try Roles(count: 2)
        let (owner, other) = (roles.workers[0], roles.workers[1])
        let layout = owner.layout
        for worker in roles.workers {
            try worker.receiveWholeWeights(roles.weights, step: 0)
            try worker.adopt(roles.plan(1, owner: 0, replica: nil), step: 0)
            for index in layout.slices.indices where !layout.isStateSlice(index) {
                try worker.receiveState(SliceState(slice: UInt32(index), names: [], weights: nil, tensors: []), step: 0, from: nil)
            }
            try worker.planInForce(1)
        }
        var poisoned = roles.partialSums(1)
        var values = poisoned.tensors[0].toArray()
        values[layout.slices[0].lowerBound] = .nan
        poisoned.tensors = [FloatPayload(copying: values)]
        _ = try owner.computed(roles.partialSums(0), step: 0)
        _ = try other.computed(poisoned, step: 0)
        try owner.poll(timeoutMilliseconds: 200)

        var expected = roles.coverOfTwoLeaves
        expected.isFinal = false
        try owner.receiveCover(expected, step: 0)
        for index in layout.slices.indices.dropFirst() { XCTAssertTrue(owner.next.has(index), "slice \(index) waited for the final cover") }
        XCTAssertFalse(owner.next.has(0))
        func stopped() -> Bool {
            roles.told.all.contains { if case .error(let failure) = $0.message { return failure.code == 470 } else { return false } }
        }
        XCTAssertFalse(stopped(), "an expected cover stopped the step")

        var final = roles.coverOfTwoLeaves
        final.version = 2
        try owner.receiveCover(final, step: 0)
        XCTAssertTrue(stopped(), "the final cover's non-finite mean did not stop the step")
    }

    /// A worker whose assignment waits for its weights says which slices it lacks, under which
    /// plan; and that it is in another step when it is.
    func testAWorkerWithoutItsWeightsNamesTheSlicesItLacks() throws {
        let roles = try Roles(count: 1)
        let role = roles.workers[0]
        XCTAssertEqual(role.whyNoWeights(forStep: 0), "this worker has no plan or weights yet")
        let slices = role.layout.slices.count
        try role.adopt(roles.plan(1, owner: 0, replica: nil), step: 0)
        XCTAssertNil(try role.weights(forStep: 0))
        XCTAssertEqual(role.whyNoWeights(forStep: 0), "its weights of step 0 lack slices \(Array(0..<slices)) (plan 1, in force none)")
        XCTAssertEqual(role.whyNoWeights(forStep: 1), "it is in step 0, not 1 (plan 1, in force none)")
        try role.receiveWholeWeights(roles.weights, step: 0)
        XCTAssertNotNil(try role.weights(forStep: 0))
    }
}
