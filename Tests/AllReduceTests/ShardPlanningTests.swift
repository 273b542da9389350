import AllReduce
import Wire
import XCTest

final class ShardPlanningTests: XCTestCase {
    /// Five parameter slices of one block and a state slice.
    private let layout = ShardLayout(parameterCount: 5 * 8, stateCount: 3, block: 8)

    func testTheFirstPlanMovesNothingAndLaterOnesSpreadSlicesEvenly() throws {
        var planner = ShardPlanner(layout: layout)
        let first = try planner.replan(members: [0, 1, 2], newMembers: [])
        XCTAssertEqual(first.map(\.owner), [0, 1, 2, 0, 1, 2])
        XCTAssertEqual(first.map(\.replica), [1, 2, 0, 1, 2, 0])
        XCTAssertTrue(first.allSatisfy { $0.source == nil && !$0.ownerNeedsState && !$0.replicaNeedsState })
    }

    func testWhenAnOwnerDiesItsReplicaHandsTheStateOver() throws {
        var planner = ShardPlanner(layout: layout)
        _ = try planner.replan(members: [0, 1, 2], newMembers: [])
        let after = try planner.replan(members: [0, 2], newMembers: [])
        // Slice 1 was owned by w1 (dead), mirrored by w2: w2 is its source.
        XCTAssertEqual(after[1].source, 2)
        for (index, slice) in after.enumerated() {
            XCTAssertNotEqual(slice.owner, 1)
            XCTAssertNotEqual(slice.replica, 1)
            // Whoever lacks the state is told to take it from a source that holds it.
            if slice.ownerNeedsState || slice.replicaNeedsState { XCTAssertNotNil(slice.source, "slice \(index)") }
        }
        // Slice 0: owner w0 and replica w1 before; w0 (alive) is the source and keeps it.
        XCTAssertEqual(after[0].owner, 0)
        XCTAssertEqual(after[0].source, 0)
        XCTAssertFalse(after[0].ownerNeedsState)
        XCTAssertTrue(after[0].replicaNeedsState, "the new replica w2 of slice 0 never held it")
    }

    func testASliceWhoseOwnerAndReplicaBothDiedIsLost() throws {
        var planner = ShardPlanner(layout: layout)
        _ = try planner.replan(members: [0, 1, 2], newMembers: [])
        XCTAssertThrowsError(try planner.replan(members: [2], newMembers: [])) { error in
            let lost = error as? SliceLost
            XCTAssertEqual(lost?.slice, 0, "slice 0 lived on w0 and w1")
            XCTAssertTrue("\(error)".contains("owner w0 and its replica w1"), "\(error)")
        }
    }

    func testANewMemberGetsWeightsFromEverySliceAndNeverCountsAsAHolder() throws {
        var planner = ShardPlanner(layout: layout)
        _ = try planner.replan(members: [0, 1], newMembers: [])
        let after = try planner.replan(members: [0, 1, 5], newMembers: [5])
        XCTAssertTrue(after.allSatisfy { $0.source != nil && $0.source != 5 }, "every slice has a source among the old members")
        for slice in after where slice.owner == 5 { XCTAssertTrue(slice.ownerNeedsState) }
        for slice in after where slice.replica == 5 { XCTAssertTrue(slice.replicaNeedsState) }
    }

    func testACoverTakesTheLargestNodesAndReportsWhatADeadWorkerLeavesUncovered() {
        var selection = CoverSelection(microBatches: 6)
        selection.offer([TreeNode(level: 0, index: 0), TreeNode(level: 0, index: 1)], from: 3)
        selection.offer([TreeNode(level: 1, index: 0), TreeNode(level: 1, index: 1)], from: 1)  // [0,2) and [2,4)
        selection.offer([TreeNode(level: 1, index: 2)], from: 2)                                // [4,6)
        XCTAssertEqual(selection.cover, [CoverNode(node: TreeNode(level: 1, index: 0), worker: 1),
                                         CoverNode(node: TreeNode(level: 1, index: 1), worker: 1),
                                         CoverNode(node: TreeNode(level: 1, index: 2), worker: 2)])
        XCTAssertEqual(selection.uncovered, [])
        selection.forget(1)
        XCTAssertEqual(selection.cover, [CoverNode(node: TreeNode(level: 0, index: 0), worker: 3),
                                         CoverNode(node: TreeNode(level: 0, index: 1), worker: 3),
                                         CoverNode(node: TreeNode(level: 1, index: 2), worker: 2)])
        XCTAssertEqual(selection.uncovered, [2, 3])
    }
}
