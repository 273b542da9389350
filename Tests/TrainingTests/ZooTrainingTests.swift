import Training
import XCTest

final class ZooTrainingTests: XCTestCase {
    func testResNet20LearnsOnSyntheticCIFARShapedData() throws {
        let config = try TrainingConfig.parse(yaml: """
            model: {zoo: resnet20, classes: 10, input: [3, 32, 32]}
            data: {dataset: synthetic, synthetic_train: 256, synthetic_test: 64}
            train: {batch: 16, micro_batch: 8, steps: 8, optimizer: {name: sgd, lr: 0.05, momentum: 0.9, weight_decay: 0.0001}}
            """, source: "resnet20.yaml")
        let trainer = try ReferenceTrainer(config: config, data: try DataSource.load(config), threads: 2)
        let losses = try trainer.train()
        XCTAssertEqual(losses.count, 8)
        XCTAssertTrue(losses.allSatisfy(\.isFinite), "\(losses)")
        XCTAssertGreaterThan(losses[0], 2.0, "a fresh 10-class model starts near ln 10")
        XCTAssertLessThan(losses.suffix(3).reduce(0, +) / 3, 0.8 * losses[0], "the loss must fall: \(losses)")
    }
}
