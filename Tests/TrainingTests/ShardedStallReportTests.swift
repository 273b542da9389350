@testable import Training
import XCTest

/// When the coordinator says a sharded step makes no progress: after 5 s, or three times the last
/// step where steps take longer (VGG-16 on two cores takes about 10 s a step, every one of which
/// was reported as a stall). The report itself is shown by a real stalled run in
/// `ShardedTrainingTests.testAStepThatMakesNoProgressForSecondsSaysWhatItWaitsFor`.
final class ShardedStallReportTests: XCTestCase {
    func testAStepIsReportedAfterFiveSecondsOrThreeTimesTheLastStep() {
        let sharding = ShardedReduction(parameterCount: 1_000, stateCount: 0)
        XCTAssertEqual(sharding.stallThreshold(minimum: 5), 5, "before any step")
        sharding.lastStepSeconds = 0.02
        XCTAssertEqual(sharding.stallThreshold(minimum: 5), 5, "after a step of a small model")
        sharding.lastStepSeconds = 10
        XCTAssertEqual(sharding.stallThreshold(minimum: 5), 30, "after a step of a large model")
        sharding.lastStepSeconds = 1
        XCTAssertEqual(sharding.stallThreshold(minimum: 5), 5, "the last step counts, not the longest")
    }
}
