import CNN
import TestSupport
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// The optimisers' vectorised loops against the rules written element by element: every bit
/// equal, for every option, on lengths that leave vector tails, with frozen gaps untouched.
final class NetworkOptimizerBitsTests: XCTestCase {
    private let count = 1_037
    private let ranges = [0..<5, 9..<700, 701..<1_037]

    private func inputs(seed: UInt64) -> (parameters: [Float], gradients: [[Float]]) {
        (TestArrays.normal(count: count, seed: seed),
         (1...3).map { TestArrays.normal(count: count, seed: seed, stream: UInt64($0), scale: 0.3) })
    }

    private func run(_ optimizer: Optimizer, _ parameters: [Float], _ gradients: [[Float]], learningRate: Float) -> [UInt32] {
        var values = parameters
        for gradient in gradients {
            values.withUnsafeMutableBufferPointer { p in
                gradient.withUnsafeBufferPointer { g in
                    optimizer.step(parameters: p.baseAddress!, gradients: g.baseAddress!, count: count,
                                   learningRate: learningRate, ranges: ranges)
                }
            }
        }
        return values.map(\.bitPattern)
    }

    private func trained(_ index: Int) -> Bool { ranges.contains { $0.contains(index) } }

    func testSGDMatchesTheElementwiseRuleBitForBit() {
        let (start, gradients) = inputs(seed: 21)
        let learningRate: Float = 0.07
        for momentum: Float in [0, 0.9] {
            for nesterov in [false, true] where momentum != 0 || !nesterov {
                for weightDecay: Float in [0, 0.003] {
                    var p = start
                    var v = [Float](repeating: 0, count: count)
                    for gradient in gradients {
                        for i in 0..<count where trained(i) {
                            var g = gradient[i]
                            if weightDecay != 0 { g += weightDecay * p[i] }
                            if momentum != 0 {
                                v[i] = momentum * v[i] + g
                                g = nesterov ? g + momentum * v[i] : v[i]
                            }
                            p[i] -= learningRate * g
                        }
                    }
                    let optimizer = SGD(parameterCount: count, momentum: momentum, nesterov: nesterov, weightDecay: weightDecay)
                    let got = run(optimizer, start, gradients, learningRate: learningRate)
                    let label = "momentum \(momentum), nesterov \(nesterov), weight decay \(weightDecay)"
                    XCTAssertEqual(got, p.map(\.bitPattern), label)
                    XCTAssertEqual(optimizer.stateTensors[0].values.map(\.bitPattern), v.map(\.bitPattern), label)
                }
            }
        }
    }

    func testAdamMatchesTheElementwiseRuleBitForBit() {
        let (start, gradients) = inputs(seed: 22)
        let learningRate: Float = 0.01, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8
        for (weightDecay, decoupled): (Float, Bool) in [(0, false), (0.01, false), (0.01, true)] {
            var p = start
            var m = [Float](repeating: 0, count: count), v = m
            for (step, gradient) in gradients.enumerated() {
                let correction1 = 1 - powf(beta1, Float(step + 1))
                let correction2 = 1 - powf(beta2, Float(step + 1))
                let stepSize = learningRate / correction1
                let root2 = correction2.squareRoot()
                for i in 0..<count where trained(i) {
                    var g = gradient[i]
                    if weightDecay != 0 {
                        if decoupled { p[i] *= 1 - learningRate * weightDecay } else { g += weightDecay * p[i] }
                    }
                    m[i] = beta1 * m[i] + (1 - beta1) * g
                    v[i] = beta2 * v[i] + (1 - beta2) * g * g
                    let denominator = v[i].squareRoot() / root2 + epsilon
                    p[i] -= stepSize * m[i] / denominator
                }
            }
            let optimizer = Adam(parameterCount: count, beta1: beta1, beta2: beta2, epsilon: epsilon,
                                 weightDecay: weightDecay, decoupled: decoupled)
            let label = "weight decay \(weightDecay), decoupled \(decoupled)"
            XCTAssertEqual(run(optimizer, start, gradients, learningRate: learningRate), p.map(\.bitPattern), label)
            let state = Dictionary(uniqueKeysWithValues: optimizer.stateTensors.map { ($0.name, $0.values) })
            XCTAssertEqual(state["exp_avg"]?.map(\.bitPattern), m.map(\.bitPattern), label)
            XCTAssertEqual(state["exp_avg_sq"]?.map(\.bitPattern), v.map(\.bitPattern), label)
        }
    }
}
