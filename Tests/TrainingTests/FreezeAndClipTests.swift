import CNN
import Training
import XCTest

/// Frozen layers keep their bits while the rest learns; clipping bounds the step.
final class FreezeAndClipTests: XCTestCase {
    private func config(_ extra: String) throws -> TrainingConfig {
        var config = try TrainingConfig.parse(yaml: Fixtures.fashionConfig(extraTrain: extra), source: "fixture")
        config.train.maxSteps = 6
        return config
    }

    private func tensor(_ state: ModelState, _ name: String) throws -> [UInt32] {
        try XCTUnwrap(state.modelTensors().first { $0.name == name }).values.map(\.bitPattern)
    }

    func testFrozenLayersStayBitIdenticalWhileTheOthersLearn() throws {
        let config = try config("  freeze: [\"0\", \"3\"]")
        XCTAssertEqual(config.train.freeze, ["0", "3"])
        let initial = try ModelState(config: config)
        let trainer = try ReferenceTrainer(config: config, data: DataSource.load(config))
        try trainer.train()
        for name in ["0.weight", "0.bias", "3.weight", "3.bias"] {
            XCTAssertEqual(try tensor(trainer.state, name), try tensor(initial, name), "\(name) changed though frozen")
        }
        for name in ["7.weight", "9.weight", "9.bias"] {
            XCTAssertNotEqual(try tensor(trainer.state, name), try tensor(initial, name), "\(name) did not learn")
        }
    }

    func testFreezingAnUnknownLayerNamesTheChoices() throws {
        XCTAssertThrowsError(try config("  freeze: [\"5\"]")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("train.freeze: '5'"), text)
            XCTAssertTrue(text.contains("0, 3, 7, 9"), text)
        }
    }

    func testClippingChangesTheStepOnlyWhenTheNormExceedsTheLimit() throws {
        let free = try ReferenceTrainer(config: config(""), data: DataSource.load(config("")))
        try free.train()
        let loose = try config("  clip_grad_norm: 1.0e+9")
        let looseTrainer = try ReferenceTrainer(config: loose, data: DataSource.load(loose))
        try looseTrainer.train()
        XCTAssertEqual(try tensor(looseTrainer.state, "9.weight"), try tensor(free.state, "9.weight"))
        let tight = try config("  clip_grad_norm: 1.0e-3")
        let tightTrainer = try ReferenceTrainer(config: tight, data: DataSource.load(tight))
        try tightTrainer.train()
        XCTAssertNotEqual(try tensor(tightTrainer.state, "9.weight"), try tensor(free.state, "9.weight"))
    }
}
