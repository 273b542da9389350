/// Updates parameters from their (already averaged) gradients. One implementation per rule;
/// state is exposed as named tensors so checkpoints can save and restore it exactly.
public protocol Optimizer: AnyObject {
    /// One update of the parameters in `ranges` (of `count` in all) with the given learning rate;
    /// parameters outside them (frozen layers) and their state are left exactly as they are.
    func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float,
              ranges: [Range<Int>])
    /// The optimiser's state, as (name, values) pairs in a fixed order.
    var stateTensors: [(name: String, values: [Float])] { get }
    /// Restores state saved by `stateTensors`; throws if a name or length does not match.
    func restore(_ tensors: [String: [Float]]) throws
}

extension Optimizer {
    /// One update of all `count` parameters.
    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float) {
        step(parameters: parameters, gradients: gradients, count: count, learningRate: learningRate, ranges: [0..<count])
    }
}

public struct OptimizerStateError: Error, CustomStringConvertible {
    public var description: String
}

/// Stochastic gradient descent with PyTorch's semantics: weight decay is added to the gradient,
/// then v = momentum * v + g, and the step is g + momentum * v with Nesterov, v without.
public final class SGD: Optimizer {
    public let momentum: Float
    public let nesterov: Bool
    public let weightDecay: Float
    private var velocity: [Float]
    private var steps = 0

    public init(parameterCount: Int, momentum: Float = 0, nesterov: Bool = false, weightDecay: Float = 0) {
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        velocity = [Float](repeating: 0, count: parameterCount)
    }

    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float,
                     ranges: [Range<Int>]) {
        precondition(count == velocity.count, "SGD built for \(velocity.count) parameters, stepped with \(count)")
        // PyTorch starts the buffer as the first gradient rather than momentum * 0 + g; the two are equal.
        velocity.withUnsafeMutableBufferPointer { v in
            for range in ranges where !range.isEmpty {
                SGD.update(parameters + range.lowerBound, gradients + range.lowerBound, v.baseAddress! + range.lowerBound,
                           count: range.count, learningRate: learningRate, momentum: momentum, nesterov: nesterov,
                           weightDecay: weightDecay)
            }
        }
        steps += 1
    }

    /// One update of `count` consecutive parameters. Each case is its own branch-free loop, so the
    /// compiler vectorises it; every element still sees exactly the operations of the rule above,
    /// in the same order, so the bits do not depend on the vector width.
    private static func update(
        _ p: UnsafeMutablePointer<Float>, _ gradient: UnsafePointer<Float>, _ v: UnsafeMutablePointer<Float>, count: Int,
        learningRate: Float, momentum: Float, nesterov: Bool, weightDecay: Float
    ) {
        switch (weightDecay != 0, momentum != 0, nesterov) {
        case (false, false, _):
            for i in 0..<count { p[i] -= learningRate * gradient[i] }
        case (true, false, _):
            for i in 0..<count {
                let g = gradient[i] + weightDecay * p[i]
                p[i] -= learningRate * g
            }
        case (false, true, false):
            for i in 0..<count {
                v[i] = momentum * v[i] + gradient[i]
                p[i] -= learningRate * v[i]
            }
        case (true, true, false):
            for i in 0..<count {
                let g = gradient[i] + weightDecay * p[i]
                v[i] = momentum * v[i] + g
                p[i] -= learningRate * v[i]
            }
        case (false, true, true):
            for i in 0..<count {
                let g = gradient[i]
                v[i] = momentum * v[i] + g
                p[i] -= learningRate * (g + momentum * v[i])
            }
        case (true, true, true):
            for i in 0..<count {
                let g = gradient[i] + weightDecay * p[i]
                v[i] = momentum * v[i] + g
                p[i] -= learningRate * (g + momentum * v[i])
            }
        }
    }

    public var stateTensors: [(name: String, values: [Float])] {
        [(name: "momentum_buffer", values: velocity)]
    }

    public func restore(_ tensors: [String: [Float]]) throws {
        guard let saved = tensors["momentum_buffer"], saved.count == velocity.count else {
            throw OptimizerStateError(description: "optimizer state has no momentum_buffer of \(velocity.count) values")
        }
        velocity = saved
    }
}

/// Adam (Kingma & Ba) with PyTorch's defaults; `decoupled` gives AdamW (weight decay applied to the
/// weights directly instead of through the gradient).
public final class Adam: Optimizer {
    public let beta1: Float
    public let beta2: Float
    public let epsilon: Float
    public let weightDecay: Float
    public let decoupled: Bool
    private var firstMoment: [Float]
    private var secondMoment: [Float]
    private var steps: Int = 0

    public init(parameterCount: Int, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8,
                weightDecay: Float = 0, decoupled: Bool = false) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.decoupled = decoupled
        firstMoment = [Float](repeating: 0, count: parameterCount)
        secondMoment = [Float](repeating: 0, count: parameterCount)
    }

    public func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float,
                     ranges: [Range<Int>]) {
        precondition(count == firstMoment.count, "Adam built for \(firstMoment.count) parameters, stepped with \(count)")
        steps += 1
        let beta1 = self.beta1, beta2 = self.beta2, epsilon = self.epsilon
        let weightDecay = self.weightDecay
        let correction1 = 1 - powf(beta1, Float(steps))
        let correction2 = 1 - powf(beta2, Float(steps))
        let stepSize = learningRate / correction1
        let root2 = correction2.squareRoot()
        // Decay is off, applied to the weights (AdamW), or added to the gradient (Adam).
        let decay: Float? = weightDecay != 0 && decoupled ? 1 - learningRate * weightDecay : nil
        let coupledDecay: Float? = weightDecay != 0 && !decoupled ? weightDecay : nil
        firstMoment.withUnsafeMutableBufferPointer { m in
            secondMoment.withUnsafeMutableBufferPointer { v in
                for range in ranges where !range.isEmpty {
                    let start = range.lowerBound
                    Adam.update(parameters + start, gradients + start, m.baseAddress! + start, v.baseAddress! + start,
                                count: range.count, beta1: beta1, beta2: beta2, epsilon: epsilon, stepSize: stepSize,
                                root2: root2, decay: decay, coupledDecay: coupledDecay)
                }
            }
        }
    }

    /// One update of `count` consecutive parameters, one branch-free loop per kind of decay (so
    /// it vectorises), with exactly the per-element operations of PyTorch's rule.
    private static func update(
        _ p: UnsafeMutablePointer<Float>, _ gradient: UnsafePointer<Float>, _ m: UnsafeMutablePointer<Float>,
        _ v: UnsafeMutablePointer<Float>, count: Int, beta1: Float, beta2: Float, epsilon: Float, stepSize: Float,
        root2: Float, decay: Float?, coupledDecay: Float?
    ) {
        @inline(__always)
        func moments(_ i: Int, _ g: Float) {
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            let denominator = v[i].squareRoot() / root2 + epsilon
            p[i] -= stepSize * m[i] / denominator
        }
        if let decay {
            for i in 0..<count {
                p[i] *= decay
                moments(i, gradient[i])
            }
        } else if let coupledDecay {
            for i in 0..<count { moments(i, gradient[i] + coupledDecay * p[i]) }
        } else {
            for i in 0..<count { moments(i, gradient[i]) }
        }
    }

    public var stateTensors: [(name: String, values: [Float])] {
        [(name: "exp_avg", values: firstMoment), (name: "exp_avg_sq", values: secondMoment),
         (name: "step", values: [Float(steps)])]
    }

    public func restore(_ tensors: [String: [Float]]) throws {
        guard let m = tensors["exp_avg"], let v = tensors["exp_avg_sq"], let s = tensors["step"],
              m.count == firstMoment.count, v.count == secondMoment.count, s.count == 1 else {
            throw OptimizerStateError(description: "optimizer state needs exp_avg and exp_avg_sq of \(firstMoment.count) values and a step")
        }
        // A corrupt checkpoint must be an error, not a trap in Int(_:) or a nonsense bias correction.
        guard s[0] >= 0, s[0] < 16_777_216, s[0].rounded(.towardZero) == s[0] else {
            throw OptimizerStateError(description: "optimizer state 'step' must be a whole number from 0 to 2^24, found \(s[0])")
        }
        firstMoment = m
        secondMoment = v
        steps = Int(s[0])
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
