import Foundation
import Logging
import Wire
import XCTest
@testable import Training

/// One worker's part in the sharded reduction, driven message by message: two `ShardRole`s on
/// an in-memory peer hub, with plans, partial sums and covers given by the test.
final class ShardRoleTests: XCTestCase {
    /// A slice's owner dropped the partial sums it had received when a newer plan gave the slice
    /// to another worker; senders, who deliver under the plan in force, did not send them again
    /// when a still newer plan gave the slice back before the other one was in force. The owner
    /// then waited for ever (the soak's seed 1236: "slice 1's partial sums [...] from w2" on w2
    /// itself). Partial sums of a node are the same bits whoever holds them, so they are kept.
    func testPartialSumsSurviveOwnershipLeavingAndComingBackBeforeAPlanIsInForce() throws {
        let config = try InMemoryRun(yaml: ShardedTrainingTests.yaml(), steps: 1).config
        let data = try DataSource.load(config)
        let hub = InMemoryPeerHub()
        func role(_ id: UInt32) throws -> ShardRole {
            let engine = try MicroBatchEngine(config: config, data: data, threads: 1)
            return try ShardRole(config: config, engine: engine, selfID: id, mesh: hub.transport(workerID: id),
                                 logger: Logger(label: "w\(id)") { _ in SwiftLogNoOpLogHandler() },
                                 isComputing: { false }, tellCoordinator: { _, _ in })
        }
        let workers = [try role(0), try role(1)]
        let sliceCount = workers[0].layout.slices.count
        let members = [0, 1].map { ShardMember(workerID: UInt32($0), endpoint: "inmemory://w\($0)", publicKey: "") }
        func plan(_ version: UInt64, owner: UInt32) -> ShardPlan {
            ShardPlan(version: version, members: members,
                      slices: (0..<sliceCount).map { _ in SliceAssignment(owner: owner, replica: 1 - owner) }, newMembers: [])
        }
        func partialSums(_ node: TreeNode) -> Gradients {
            let length = workers[0].layout.slices.last!.upperBound
            return Gradients(epoch: 0, results: [], nodes: [node], tensors: [FloatPayload(copying: [Float](repeating: 0.5, count: length))])
        }

        // Plan 1, in force: worker 0 owns every slice and receives both workers' partial sums.
        for worker in workers { try worker.adopt(plan(1, owner: 0), step: 0) }
        for worker in workers { try worker.planInForce(1) }
        _ = try workers[0].computed(partialSums(TreeNode(level: 0, index: 0)), step: 0)
        _ = try workers[1].computed(partialSums(TreeNode(level: 0, index: 1)), step: 0)
        try workers[0].poll(timeoutMilliseconds: 200)

        // Plan 2 gives every slice to worker 1 and never comes in force; plan 3 gives them back.
        for worker in workers { try worker.adopt(plan(2, owner: 1), step: 0) }
        for worker in workers { try worker.adopt(plan(3, owner: 0), step: 0) }
        for worker in workers { try worker.planInForce(3) }
        try workers[1].poll(timeoutMilliseconds: 0)
        try workers[0].poll(timeoutMilliseconds: 200)

        let cover = ReduceCover(version: 1, totalMicroBatches: 2, learningRate: 0.05,
                                nodes: [CoverNode(node: TreeNode(level: 0, index: 0), worker: 0), CoverNode(node: TreeNode(level: 0, index: 1), worker: 1)])
        try workers[0].receiveCover(cover, step: 0)
        let lacks = workers[0].whatTheStepLacks()
        XCTAssertFalse(lacks.contains { $0.contains("partial sums") }, lacks.joined(separator: "; "))
    }

    /// After a rewind to a checkpoint, a peer that heard of it first sent its partial sums of the
    /// earlier step while the owner was still in the later one. The owner dropped them as stale;
    /// the sender, having delivered them under the plan in force, did not send them again, and the
    /// step waited for ever (the soak's seed 1250: "slice 0's partial sums ["[1,2) from w4", ...]"
    /// on the owner, after "going back to ... step-00021325"). They are kept for the step.
    func testPartialSumsOfARewoundStepThatArriveBeforeTheRewindAreKept() throws {
        let config = try InMemoryRun(yaml: ShardedTrainingTests.yaml(), steps: 1).config
        let data = try DataSource.load(config)
        let hub = InMemoryPeerHub()
        let engine = try MicroBatchEngine(config: config, data: data, threads: 1)
        func role(_ id: UInt32) throws -> ShardRole {
            try ShardRole(config: config, engine: try MicroBatchEngine(config: config, data: data, threads: 1), selfID: id,
                          mesh: hub.transport(workerID: id), logger: Logger(label: "w\(id)") { _ in SwiftLogNoOpLogHandler() },
                          isComputing: { false }, tellCoordinator: { _, _ in })
        }
        let workers = [try role(0), try role(1)]
        let sliceCount = workers[0].layout.slices.count
        let members = [0, 1].map { ShardMember(workerID: UInt32($0), endpoint: "inmemory://w\($0)", publicKey: "") }
        let plan = { (version: UInt64) in
            ShardPlan(version: version, members: members,
                      slices: (0..<sliceCount).map { _ in SliceAssignment(owner: 0, replica: 1) }, newMembers: [])
        }
        let weights = FloatPayload(copying: [Float](repeating: 0.25, count: engine.parameterCount + engine.stateCount))
        func partialSums(_ index: Int) -> Gradients {
            Gradients(epoch: 0, results: [], nodes: [TreeNode(level: 0, index: index)],
                      tensors: [FloatPayload(copying: [Float](repeating: 0.5, count: engine.leafLength))])
        }

        // Both in step 7 under plan 1.
        for worker in workers {
            try worker.receiveWholeWeights(weights, step: 7)
            try worker.adopt(plan(1), step: 7)
            try worker.planInForce(1)
        }
        // The run goes back to step 5. Worker 0 takes the new plan but is slow to take the
        // coordinator's weights; worker 1 takes both, computes and sends its part of step 5.
        try workers[1].receiveWholeWeights(weights, step: 5)
        for worker in workers { try worker.adopt(plan(2), step: 5) }
        for worker in workers { try worker.planInForce(2) }
        _ = try workers[1].computed(partialSums(1), step: 5)
        try workers[0].poll(timeoutMilliseconds: 200)
        // Now worker 0 takes the weights of step 5, computes its own part and hears the cover.
        try workers[0].receiveWholeWeights(weights, step: 5)
        _ = try workers[0].computed(partialSums(0), step: 5)
        let cover = ReduceCover(version: 1, totalMicroBatches: 2, learningRate: 0.05,
                                nodes: [CoverNode(node: TreeNode(level: 0, index: 0), worker: 0), CoverNode(node: TreeNode(level: 0, index: 1), worker: 1)])
        try workers[0].receiveCover(cover, step: 5)
        let lacks = workers[0].whatTheStepLacks()
        XCTAssertFalse(lacks.contains { $0.contains("partial sums") }, lacks.joined(separator: "; "))
    }

    /// A worker whose assignment waits for its weights says which slices it lacks, under which
    /// plan; and that it is in another step when it is.
    func testAWorkerWithoutItsWeightsNamesTheSlicesItLacks() throws {
        let config = try InMemoryRun(yaml: ShardedTrainingTests.yaml(), steps: 1).config
        let engine = try MicroBatchEngine(config: config, data: DataSource.load(config), threads: 1)
        let role = try ShardRole(config: config, engine: engine, selfID: 0, mesh: InMemoryPeerHub().transport(workerID: 0),
                                 logger: Logger(label: "w0") { _ in SwiftLogNoOpLogHandler() },
                                 isComputing: { false }, tellCoordinator: { _, _ in })
        XCTAssertEqual(role.whyNoWeights(forStep: 0), "this worker has no plan or weights yet")
        let slices = role.layout.slices.count
        let plan = ShardPlan(version: 1, members: [ShardMember(workerID: 0, endpoint: "inmemory://w0", publicKey: "")],
                             slices: (0..<slices).map { _ in SliceAssignment(owner: 0, replica: nil) }, newMembers: [])
        try role.adopt(plan, step: 0)
        XCTAssertNil(try role.weights(forStep: 0))
        XCTAssertEqual(role.whyNoWeights(forStep: 0), "its weights of step 0 lack slices \(Array(0..<slices)) (plan 1, in force none)")
        XCTAssertEqual(role.whyNoWeights(forStep: 1), "it is in step 0, not 1 (plan 1, in force none)")
        try role.receiveWholeWeights(FloatPayload(copying: [Float](repeating: 0, count: engine.parameterCount + engine.stateCount)), step: 0)
        XCTAssertNotNil(try role.weights(forStep: 0))
    }
}
