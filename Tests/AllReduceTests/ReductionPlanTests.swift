import AllReduce
import XCTest

final class ReductionPlanTests: XCTestCase {
    func testTheCentralStrategyGivesTheWholeVectorToTheCoordinatorWhateverTheWorkers() {
        let strategy = TreeReduction()
        XCTAssertEqual(strategy.name, "central")
        for workers: [UInt32] in [[], [0], [0, 1, 2, 7]] {
            let plan = strategy.plan(length: 1000, workers: workers)
            XCTAssertEqual(plan.slices, [ReductionSlice(range: 0..<1000, owner: .coordinator)])
            XCTAssertEqual(plan.owners, [.coordinator])
            XCTAssertEqual(plan.length(ownedBy: .coordinator), 1000)
            XCTAssertEqual(plan.length(ownedBy: .worker(0)), 0)
        }
    }

    func testAPlanCountsTheElementsEachSiteOwns() {
        let plan = ReductionPlan(slices: [
            ReductionSlice(range: 0..<10, owner: .worker(1)), ReductionSlice(range: 10..<25, owner: .worker(2)),
            ReductionSlice(range: 25..<30, owner: .worker(1)),
        ])
        XCTAssertEqual(plan.length(ownedBy: .worker(1)), 15)
        XCTAssertEqual(plan.length(ownedBy: .worker(2)), 15)
        XCTAssertEqual(plan.length(ownedBy: .coordinator), 0)
        XCTAssertEqual(plan.owners, [.worker(1), .worker(2)])
        XCTAssertEqual(ReductionSite.worker(3).description, "worker w3")
    }
}
