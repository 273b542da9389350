import CNN
import Foundation
import Randomness
import TestSupport
import Training
import XCTest

/// What the interoperability tests share: models from configs, raw Float32 files for Python, and
/// the comparison of two sets of logits.
enum ExportSupport {
    static let configsDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("configs")

    /// The interpreter of scripts/python-env, or an XCTSkip saying why there is none.
    static func requirePython() throws {
        if case .failure(let reason) = PythonEnvironment.interpreter() {
            throw XCTSkip("no Python with torch, torchvision and onnxruntime: \(reason)")
        }
    }

    /// A model built from a config text, with its seed's initial weights.
    static func model(_ yaml: String) throws -> ModelState {
        try ModelState(config: try TrainingConfig.parse(yaml: yaml, source: "test.yaml"))
    }

    /// Running statistics away from their initial 0 and 1 (and num_batches_tracked left alone), so
    /// an inference pass shows whether they are used: mean in [-0.5, 0.5), variance in [0.5, 1.5);
    /// biases (zero at first) in [-0.5, 0.5), so their layout shows too.
    static func randomiseRunningStatistics(_ network: Network, seed: UInt64) {
        for (t, slot) in network.parameterSlots.enumerated() where slot.name.hasSuffix("bias") {
            let values = network.parameters.pointer + slot.offset
            for e in 0..<slot.count {
                values[e] = Float(CounterRandom.uniform(seed: seed, purpose: .initialisation, UInt64(t), 8, 0, UInt64(e))) - 0.5
            }
        }
        for (t, slot) in network.stateSlots.enumerated() {
            let values = network.state.pointer + slot.offset
            for e in 0..<slot.count {
                let u = Float(CounterRandom.uniform(seed: seed, purpose: .initialisation, UInt64(t), 7, 0, UInt64(e)))
                if slot.name.hasSuffix("running_mean") { values[e] = u - 0.5 }
                if slot.name.hasSuffix("running_var") { values[e] = u + 0.5 }
            }
        }
    }

    /// `count` values in [-1, 1), a pure function of the seed.
    static func randomInput(count: Int, seed: UInt64) -> [Float] {
        (0..<count).map { Float(2 * CounterRandom.uniform(seed: seed, purpose: .initialisation, 99, 0, 0, UInt64($0)) - 1) }
    }

    /// The network's logits for `input` in inference mode, [batch, classes] row-major.
    static func logits(_ network: Network, _ input: [Float], batch: Int) -> [Float] {
        input.withUnsafeBufferPointer { buffer in
            Array(UnsafeBufferPointer(
                start: network.forward(buffer.baseAddress!, batch: batch, context: .inference), count: batch * network.outputShape.count))
        }
    }

    static func writeFloats(_ values: [Float], to path: String) throws {
        try values.withUnsafeBufferPointer { Data(buffer: $0) }.write(to: URL(fileURLWithPath: path))
    }

    static func readFloats(_ path: String) throws -> [Float] {
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
    }

    /// max |a - b| / max |b|: the error relative to the scale of the reference logits.
    static func relativeError(_ a: [Float], _ b: [Float]) -> Double {
        precondition(a.count == b.count)
        let scale = Double(b.map { abs($0) }.max() ?? 0)
        let difference = zip(a, b).map { Double(abs($0 - $1)) }.max() ?? 0
        return difference / max(scale, 1e-30)
    }
}
