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
        let momentum = self.momentum, weightDecay = self.weightDecay, nesterov = self.nesterov
        // PyTorch starts the buffer as the first gradient rather than momentum * 0 + g; the two are equal.
        velocity.withUnsafeMutableBufferPointer { v in
            for range in ranges {
                for i in range {
                    var g = gradients[i]
                    if weightDecay != 0 { g += weightDecay * parameters[i] }
                    if momentum != 0 {
                        v[i] = momentum * v[i] + g
                        g = nesterov ? g + momentum * v[i] : v[i]
                    }
                    parameters[i] -= learningRate * g
                }
            }
        }
        steps += 1
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
        let weightDecay = self.weightDecay, decoupled = self.decoupled
        let correction1 = 1 - powf(beta1, Float(steps))
        let correction2 = 1 - powf(beta2, Float(steps))
        let stepSize = learningRate / correction1
        let root2 = correction2.squareRoot()
        firstMoment.withUnsafeMutableBufferPointer { m in
            secondMoment.withUnsafeMutableBufferPointer { v in
                for range in ranges {
                    for i in range {
                        var g = gradients[i]
                        if weightDecay != 0 {
                            if decoupled { parameters[i] *= 1 - learningRate * weightDecay } else { g += weightDecay * parameters[i] }
                        }
                        m[i] = beta1 * m[i] + (1 - beta1) * g
                        v[i] = beta2 * v[i] + (1 - beta2) * g * g
                        let denominator = v[i].squareRoot() / root2 + epsilon
                        parameters[i] -= stepSize * m[i] / denominator
                    }
                }
            }
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
