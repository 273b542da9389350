import Wire
import XCTest

/// One of each message of the sharded reduction, with values that exercise every field.
func shardSampleMessages() -> [Message] {
    let key = String(repeating: "a", count: 40)
    return [
        .listening(Listening(endpoint: "tcp://10.77.0.3:41234", publicKey: key)),
        .listening(Listening(endpoint: "tcp://127.0.0.1:1", publicKey: "")),
        .listening(Listening(endpoint: "tcp://10.77.0.3:41234", publicKey: "", localEndpoint: "ipc://@cnn-peer-1f",
                             host: "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/net:4026531840")),
        .plan(ShardPlan(version: 7, members: [
            ShardMember(workerID: 1, endpoint: "tcp://10.0.0.1:5000", publicKey: key),
            ShardMember(workerID: 4, endpoint: "tcp://10.0.0.4:5000", publicKey: "", localEndpoint: "ipc://@cnn-peer-2", host: "h/net:1"),
        ], slices: [
            SliceAssignment(owner: 1, replica: 4, source: 4, ownerNeedsState: true, replicaNeedsState: false),
            SliceAssignment(owner: 4, replica: nil),
        ], newMembers: [1])),
        .computed(Computed(epoch: 2, results: [MicroBatchResult(index: 3, lossSum: 1.5, correct: 1, topFiveCorrect: 2, samples: 4)],
                           nodes: [TreeNode(level: 0, index: 3)],
                           timings: WorkerTimings(forwardSeconds: 0.5, backwardSeconds: 0.25, packSeconds: 0, totalSeconds: 1),
                           nonFinite: "3.weight[0] is NaN")),
        .computed(Computed(epoch: 0, results: [], nodes: [TreeNode(level: 1, index: 0)],
                           timings: WorkerTimings(forwardSeconds: 0.5, backwardSeconds: 0.25, packSeconds: 0, totalSeconds: 1),
                           streamedSeconds: 0.125)),
        .slicePartials(SlicePartials(slice: 3, nodes: [TreeNode(level: 1, index: 0), TreeNode(level: 0, index: 5)],
                                     tensors: [FloatPayload(copying: [1, 2, 3]), FloatPayload(copying: [-0.0, .infinity, 4])])),
        .reduce(ReduceCover(version: 2, totalMicroBatches: 6, learningRate: 0.05, nodes: [
            CoverNode(node: TreeNode(level: 2, index: 0), worker: 1), CoverNode(node: TreeNode(level: 1, index: 2), worker: 4),
        ])),
        .reduce(ReduceCover(version: 1, totalMicroBatches: 2, learningRate: 0.05, nodes: [
            CoverNode(node: TreeNode(level: 0, index: 0), worker: 0), CoverNode(node: TreeNode(level: 0, index: 1), worker: 1),
        ], isFinal: false)),
        .blockSums(BlockSums(slice: 0, sums: [0, 1.5, 1e300])),
        .norm(GlobalNorm(value: 3.25)),
        .weightSlice(WeightSlice(slice: 64, values: FloatPayload(copying: [0.5, -1]))),
        .sliceState(SliceState(slice: 2, names: ["momentum_buffer"], weights: FloatPayload(copying: [1, 2]),
                               tensors: [FloatPayload(copying: [0.25, 0.5])])),
        .sliceState(SliceState(slice: 5, names: ["exp_avg", "exp_avg_sq", "step"], weights: nil,
                               tensors: [FloatPayload(copying: [1]), FloatPayload(copying: [2]), FloatPayload(copying: [7])])),
        .stepDone(StepDone(planVersion: 3)),
        .gather(Gather(planVersion: UInt64.max)),
        .planAdopted(PlanAdopted(planVersion: 9)),
        .planInForce(PlanInForce(planVersion: 0)),
        .sliceGradient(SliceGradient(slice: 4, learningRate: 0.125, values: FloatPayload(copying: [0.5, -0.0, 3e-39]))),
    ]
}

final class ShardMessageTests: XCTestCase {
    private func decodeAfterEditing(_ message: Message, _ edit: (inout [[UInt8]]) -> Void) -> DecodeError? {
        var frames = WireCodec.encodeToBytes(Envelope(runID: 1, step: 2, message: message))
        edit(&frames)
        do {
            _ = try WireCodec.decode(bytes: resealed(frames))
            return nil
        } catch {
            return error
        }
    }

    private func plan(owner: UInt32 = 1, replica: UInt32? = 2, source: UInt32? = nil, ownerNeeds: Bool = false,
                      newMembers: [UInt32] = [], key: String = "") -> Message {
        .plan(ShardPlan(version: 1, members: [ShardMember(workerID: 1, endpoint: "tcp://a:1", publicKey: key),
                                              ShardMember(workerID: 2, endpoint: "tcp://b:1", publicKey: "")],
                        slices: [SliceAssignment(owner: owner, replica: replica, source: source, ownerNeedsState: ownerNeeds)],
                        newMembers: newMembers))
    }

    private func assertRefused(_ message: Message, mentioning field: String, file: StaticString = #filePath, line: UInt = #line) {
        let frames = WireCodec.encodeToBytes(Envelope(runID: 1, step: 2, message: message))
        XCTAssertThrowsError(try WireCodec.decode(bytes: frames), file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains(field), "\(error) should name \(field)", file: file, line: line)
        }
    }

    func testALocalListenerIsAnAbstractSocketGivenWithItsHost() {
        let host = "0b1c2d3e/net:7"
        for (local, host, field) in [("tcp://10.0.0.9:5000", host, "listening.localEndpoint"), ("ipc:///tmp/peer", host, "listening.localEndpoint"),
                                     ("ipc://@", host, "listening.localEndpoint"), ("ipc://@cnn-peer-1", "", "listening.host"),
                                     ("", host, "listening.host"),
                                     ("ipc://@cnn-peer-1", String(repeating: "h", count: HostIdentity.maximumBytes + 1), "listening.host")] {
            assertRefused(.listening(Listening(endpoint: "tcp://a:1", publicKey: "", localEndpoint: local, host: host)), mentioning: field)
        }
        let member = ShardMember(workerID: 2, endpoint: "tcp://b:1", publicKey: "", localEndpoint: "tcp://b:2", host: host)
        assertRefused(.plan(ShardPlan(version: 1, members: [member], slices: [SliceAssignment(owner: 2, replica: nil)], newMembers: [])),
                      mentioning: "plan.members[0].localEndpoint")
    }

    func testAPeerOnTheSameHostIsReachedAtItsLocalListener() {
        let peer = ShardMember(workerID: 3, endpoint: "tcp://10.0.0.3:5000", publicKey: "", localEndpoint: "ipc://@cnn-peer-3", host: "h/net:1").peerAddress
        XCTAssertEqual(peer.endpoint(seenFrom: "h/net:1"), "ipc://@cnn-peer-3")
        XCTAssertEqual(peer.endpoint(seenFrom: "h/net:2"), "tcp://10.0.0.3:5000", "another network namespace cannot see the abstract socket")
        XCTAssertEqual(peer.endpoint(seenFrom: nil), "tcp://10.0.0.3:5000")
        let remote = ShardMember(workerID: 3, endpoint: "tcp://10.0.0.3:5000", publicKey: "").peerAddress
        XCTAssertNil(remote.localEndpoint)
        XCTAssertEqual(remote.endpoint(seenFrom: "h/net:1"), "tcp://10.0.0.3:5000")
    }

    func testAPlanNamesOnlyItsMembersAndNeverMakesAnOwnerItsOwnReplica() {
        assertRefused(plan(owner: 9), mentioning: "plan.slices[0].owner")
        assertRefused(plan(replica: 1), mentioning: "plan.slices[0].replica")
        assertRefused(plan(replica: 7), mentioning: "plan.slices[0].replica")
        assertRefused(plan(source: 5, ownerNeeds: true), mentioning: "plan.slices[0].source")
        assertRefused(plan(ownerNeeds: true), mentioning: "plan.slices[0].source")
        assertRefused(plan(newMembers: [3]), mentioning: "plan.newMembers[0]")
        assertRefused(plan(key: "short"), mentioning: "plan.members[0].publicKey")
        XCTAssertNoThrow(try WireCodec.decode(bytes: WireCodec.encodeToBytes(Envelope(runID: 1, step: 2, message: plan(source: 2, ownerNeeds: true)))))
    }

    func testACoverMustCoverEveryMicroBatchExactlyOnce() {
        func cover(_ nodes: [(Int, Int)], total: UInt32 = 4) -> Message {
            .reduce(ReduceCover(version: 1, totalMicroBatches: total, learningRate: 0.1,
                                nodes: nodes.map { CoverNode(node: TreeNode(level: $0.0, index: $0.1), worker: 0) }))
        }
        XCTAssertNoThrow(try WireCodec.decode(bytes: WireCodec.encodeToBytes(Envelope(runID: 1, step: 2, message: cover([(1, 0), (0, 2), (0, 3)])))))
        // A tree of 3 micro-batches: the node [2,4) ends inside it and covers micro-batch 2 only.
        XCTAssertNoThrow(try WireCodec.decode(bytes: WireCodec.encodeToBytes(Envelope(runID: 1, step: 2, message: cover([(1, 0), (1, 1)], total: 3)))))
        assertRefused(cover([(1, 0), (0, 2)]), mentioning: "cover every micro-batch")
        assertRefused(cover([(1, 0), (0, 1), (1, 1)]), mentioning: "reduce.nodes")
        assertRefused(cover([(2, 0), (0, 4)]), mentioning: "reduce.nodes[1]")
        assertRefused(cover([]), mentioning: "cover every micro-batch")
    }

    func testSumsNormsAndLearningRatesMustBeFinite() {
        assertRefused(.norm(GlobalNorm(value: .nan)), mentioning: "norm.value")
        assertRefused(.norm(GlobalNorm(value: -1)), mentioning: "norm.value")
        assertRefused(.blockSums(BlockSums(slice: 0, sums: [1, .infinity])), mentioning: "blockSums.sums[1]")
        assertRefused(.reduce(ReduceCover(version: 1, totalMicroBatches: 1, learningRate: .nan,
                                          nodes: [CoverNode(node: TreeNode(level: 0, index: 0), worker: 0)])), mentioning: "reduce.learningRate")
        assertRefused(.sliceGradient(SliceGradient(slice: 0, learningRate: -.infinity, values: FloatPayload(copying: [1]))),
                      mentioning: "sliceGradient.learningRate")
        // Streaming began between the assignment and the results, or not at all.
        let timings = WorkerTimings(forwardSeconds: 0.5, backwardSeconds: 0.25, packSeconds: 0, totalSeconds: 1)
        for streamed in [-0.5, .nan, .infinity, 1.5] {
            assertRefused(.computed(Computed(epoch: 0, results: [], nodes: [], timings: timings, streamedSeconds: streamed)),
                          mentioning: "computed.streamedSeconds")
        }
    }

    func testSliceIndicesAndStateNamesAreChecked() {
        assertRefused(.weightSlice(WeightSlice(slice: UInt32(WireCodec.maximumSlices), values: FloatPayload(copying: [1]))),
                      mentioning: "weightSlice.slice")
        assertRefused(.sliceGradient(SliceGradient(slice: UInt32(WireCodec.maximumSlices), learningRate: 1, values: FloatPayload(copying: [1]))),
                      mentioning: "sliceGradient.slice")
        assertRefused(.sliceState(SliceState(slice: 0, names: ["m", "m"], weights: nil, tensors: [FloatPayload(copying: [1]), FloatPayload(copying: [2])])),
                      mentioning: "sliceState.names[1]")
        assertRefused(.slicePartials(SlicePartials(slice: 0, nodes: [], tensors: [])), mentioning: "slicePartials.nodes")
    }

    func testATensorCountThatDoesNotMatchTheMessageIsRefused() {
        let message = Message.sliceState(SliceState(slice: 1, names: ["m"], weights: FloatPayload(copying: [1]), tensors: [FloatPayload(copying: [2])]))
        let error = decodeAfterEditing(message) { frames in
            frames.removeLast()
            // The header's tensor count and the meta's checksum list must agree with the frames.
            frames[0][28] = 1
            frames[1].removeLast(8)
        }
        guard case .wrongTensorCount = error else { return XCTFail("expected a wrong tensor count, got \(String(describing: error))") }
    }
}
