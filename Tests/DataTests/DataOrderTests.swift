import Data
import XCTest

final class DataOrderTests: XCTestCase {
    func testUnshuffledOrderIsFileOrder() {
        XCTAssertEqual(DataOrder.epochOrder(count: 7, seed: 42, epoch: 3, shuffle: false), Array(0..<7))
        XCTAssertEqual(DataOrder.epochOrder(count: 0, seed: 42, epoch: 0, shuffle: true), [])
    }

    func testShuffledOrderIsAPermutationRepeatableForTheSameSeedAndEpoch() {
        let order = DataOrder.epochOrder(count: 1000, seed: 7, epoch: 2, shuffle: true)
        XCTAssertEqual(order.sorted(), Array(0..<1000))
        XCTAssertNotEqual(order, Array(0..<1000))
        XCTAssertEqual(DataOrder.epochOrder(count: 1000, seed: 7, epoch: 2, shuffle: true), order)
    }

    func testShuffledOrderDiffersAcrossEpochsAndSeeds() {
        let epoch0 = DataOrder.epochOrder(count: 1000, seed: 7, epoch: 0, shuffle: true)
        let epoch1 = DataOrder.epochOrder(count: 1000, seed: 7, epoch: 1, shuffle: true)
        let otherSeed = DataOrder.epochOrder(count: 1000, seed: 8, epoch: 0, shuffle: true)
        XCTAssertNotEqual(epoch0, epoch1)
        XCTAssertNotEqual(epoch0, otherSeed)
        // Independent orders agree in about 1 place in 1000; far more would mean correlated keys.
        XCTAssertLessThan(zip(epoch0, epoch1).filter { $0 == $1 }.count, 10)
    }
}
