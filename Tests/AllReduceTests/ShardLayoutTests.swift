import AllReduce
import XCTest

final class ShardLayoutTests: XCTestCase {
    func testParametersAreCutIntoWholeBlocksAndStateIsASliceOfItsOwn() {
        let layout = ShardLayout(parameterCount: 10 * 16 + 5, stateCount: 7, block: 16, maximumSlices: 4)
        // 11 blocks in at most 4 slices: 3 blocks each, the last one shorter; then the state.
        XCTAssertEqual(layout.slices, [0..<48, 48..<96, 96..<144, 144..<165, 165..<172])
        XCTAssertEqual(layout.slices.map { layout.isStateSlice(layout.slices.firstIndex(of: $0)!) }, [false, false, false, false, true])
        for slice in layout.slices.dropLast() { XCTAssertEqual(slice.lowerBound % 16, 0) }
    }

    func testTheCutDoesNotDependOnTheWorkersButOwnershipSpreadsOverThem() {
        let layout = ShardLayout(parameterCount: 1000, stateCount: 0, block: 10, maximumSlices: 8)
        XCTAssertEqual(layout.slices.count, 8)
        for workers in [[UInt32(1)], [4, 2], [9, 3, 5], Array(1...8), Array(1...11)] {
            let plan = layout.plan(workers: workers)
            XCTAssertEqual(plan.slices.map(\.range), layout.slices, "the cut moved with \(workers.count) workers")
            let owned = Dictionary(grouping: plan.slices, by: \.owner).mapValues(\.count)
            XCTAssertEqual(Set(owned.keys), Set(workers.prefix(8).sorted().prefix(8).map { ReductionSite.worker($0) })
                .union(workers.count > 8 ? [] : Set(workers.map { ReductionSite.worker($0) })))
            XCTAssertLessThanOrEqual((owned.values.max() ?? 0) - (owned.values.min() ?? 0), 1, "uneven ownership \(owned)")
            for slice in plan.slices {
                if workers.count == 1 {
                    XCTAssertNil(slice.replica)
                } else {
                    XCTAssertNotNil(slice.replica)
                    XCTAssertNotEqual(slice.replica, slice.owner, "a slice mirrored by its own owner")
                }
            }
        }
    }

    func testOwnershipFollowsIdsNotTheOrderWorkersAreListedIn() {
        let layout = ShardLayout(parameterCount: 64, stateCount: 3, block: 16)
        XCTAssertEqual(layout.plan(workers: [7, 3]), layout.plan(workers: [3, 7]))
        XCTAssertEqual(layout.plan(workers: [3, 7]).slices.map(\.owner), [.worker(3), .worker(7), .worker(3), .worker(7), .worker(3)])
    }
}
