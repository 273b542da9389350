/// Updates parameters from their (already averaged) gradients. One implementation per rule;
/// state is exposed as named tensors so checkpoints can save and restore it exactly.
public protocol Optimizer: AnyObject {
    /// One update of the parameters in `ranges` (of `count` in all) with the given learning rate;
    /// parameters outside them (frozen layers) and their state are left exactly as they are.
    func step(parameters: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>, count: Int, learningRate: Float,
              ranges: [Range<Int>])
    /// The same update out of place, to the same bits: reads the parameters at `source` and writes
    /// the updated ones to `destination` (those outside `ranges` as they are), and writes the new
    /// state into other memory than the arrays `stateTensors` last returned. Whoever keeps the
    /// state from before the step (a sharded owner, for a redo) then costs no copy of it, and the
    /// weights are not copied before they are updated.
    func step(from source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
              count: Int, learningRate: Float, ranges: [Range<Int>])
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

/// Where a rule reads and writes each element's parameter and (up to two) state values: the same
/// memory (`InPlaceLanes`) or the committed values read and the new ones written elsewhere
/// (`OutOfPlaceLanes`). Each rule is written once, generically, and specialised for both, so
/// each form is its own loop that the compiler vectorises (in place it sees one pointer per
/// array, out of place distinct ones, which its overlap checks pass).
protocol UpdateLanes {
    func parameter(_ i: Int) -> Float
    func setParameter(_ i: Int, _ value: Float)
    func first(_ i: Int) -> Float
    func setFirst(_ i: Int, _ value: Float)
    func second(_ i: Int) -> Float
    func setSecond(_ i: Int, _ value: Float)
}

struct InPlaceLanes: UpdateLanes {
    let p: UnsafeMutablePointer<Float>
    let s1: UnsafeMutablePointer<Float>
    let s2: UnsafeMutablePointer<Float>

    @inline(__always) func parameter(_ i: Int) -> Float { p[i] }
    @inline(__always) func setParameter(_ i: Int, _ value: Float) { p[i] = value }
    @inline(__always) func first(_ i: Int) -> Float { s1[i] }
    @inline(__always) func setFirst(_ i: Int, _ value: Float) { s1[i] = value }
    @inline(__always) func second(_ i: Int) -> Float { s2[i] }
    @inline(__always) func setSecond(_ i: Int, _ value: Float) { s2[i] = value }
}

struct OutOfPlaceLanes: UpdateLanes {
    let pIn: UnsafePointer<Float>, pOut: UnsafeMutablePointer<Float>
    let s1In: UnsafePointer<Float>, s1Out: UnsafeMutablePointer<Float>
    let s2In: UnsafePointer<Float>, s2Out: UnsafeMutablePointer<Float>

    @inline(__always) func parameter(_ i: Int) -> Float { pIn[i] }
    @inline(__always) func setParameter(_ i: Int, _ value: Float) { pOut[i] = value }
    @inline(__always) func first(_ i: Int) -> Float { s1In[i] }
    @inline(__always) func setFirst(_ i: Int, _ value: Float) { s1Out[i] = value }
    @inline(__always) func second(_ i: Int) -> Float { s2In[i] }
    @inline(__always) func setSecond(_ i: Int, _ value: Float) { s2Out[i] = value }
}

/// State arrays of an out-of-place step: `spare`, the state from before the last step, which its
/// holders have let go of by the next commit, is written again; the first time (or while someone
/// still holds it) it is a copy of the current state, so nothing outside the updated ranges is
/// ever stale.
enum OutOfPlaceState {
    static func take(_ spare: inout [Float], like current: [Float]) -> [Float] {
        let taken = spare
        spare = []
        return taken.count == current.count ? taken : current
    }

    /// Copies what lies outside `ranges` (frozen layers) of `count` values from `source` to `destination`.
    static func copyOutside(_ ranges: [Range<Int>], count: Int, from source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>) {
        var cursor = 0
        for range in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) where !range.isEmpty {
            if range.lowerBound > cursor { (destination + cursor).update(from: source + cursor, count: range.lowerBound - cursor) }
            cursor = max(cursor, range.upperBound)
        }
        if count > cursor { (destination + cursor).update(from: source + cursor, count: count - cursor) }
    }
}

/// Stochastic gradient descent with PyTorch's semantics: weight decay is added to the gradient,
/// then v = momentum * v + g, and the step is g + momentum * v with Nesterov, v without.
public final class SGD: Optimizer {
    public let momentum: Float
    public let nesterov: Bool
    public let weightDecay: Float
    private var velocity: [Float]
    /// The velocity before the last out-of-place step: the next one writes into it.
    private var spareVelocity: [Float] = []
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
                let start = range.lowerBound
                update(InPlaceLanes(p: parameters + start, s1: v.baseAddress! + start, s2: v.baseAddress! + start),
                       gradients + start, count: range.count, learningRate: learningRate)
            }
        }
        steps += 1
    }

    public func step(from source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
                     count: Int, learningRate: Float, ranges: [Range<Int>]) {
        precondition(count == velocity.count, "SGD built for \(velocity.count) parameters, stepped with \(count)")
        // Without momentum the rule never touches the velocity: it stays where it is, and no
        // new array is made (writing to a second reference to it would copy all of it).
        let keepsVelocity = momentum != 0
        var next = keepsVelocity ? OutOfPlaceState.take(&spareVelocity, like: velocity) : []
        velocity.withUnsafeBufferPointer { old in
            next.withUnsafeMutableBufferPointer { new in
                let old = old.baseAddress!
                let new = keepsVelocity ? new.baseAddress! : UnsafeMutablePointer(mutating: old)
                for range in ranges where !range.isEmpty {
                    let start = range.lowerBound
                    update(OutOfPlaceLanes(pIn: source + start, pOut: destination + start, s1In: old + start, s1Out: new + start,
                                           s2In: old + start, s2Out: new + start),
                           gradients + start, count: range.count, learningRate: learningRate)
                }
                if keepsVelocity { OutOfPlaceState.copyOutside(ranges, count: count, from: old, into: new) }
            }
        }
        OutOfPlaceState.copyOutside(ranges, count: count, from: source, into: destination)
        if keepsVelocity {
            spareVelocity = velocity
            velocity = next
        }
        steps += 1
    }

    /// One update of `count` consecutive parameters. Each case is its own branch-free loop, so the
    /// compiler vectorises it; every element still sees exactly the operations of the rule above,
    /// in the same order, so the bits do not depend on the vector width (nor on whether the update
    /// is in place).
    @inline(__always)
    private func update<Lanes: UpdateLanes>(_ lanes: Lanes, _ gradient: UnsafePointer<Float>, count: Int, learningRate: Float) {
        let momentum = self.momentum, weightDecay = self.weightDecay
        switch (weightDecay != 0, momentum != 0, nesterov) {
        case (false, false, _):
            for i in 0..<count { lanes.setParameter(i, lanes.parameter(i) - learningRate * gradient[i]) }
        case (true, false, _):
            for i in 0..<count {
                let p = lanes.parameter(i)
                let g = gradient[i] + weightDecay * p
                lanes.setParameter(i, p - learningRate * g)
            }
        case (false, true, false):
            for i in 0..<count {
                let v = momentum * lanes.first(i) + gradient[i]
                lanes.setFirst(i, v)
                lanes.setParameter(i, lanes.parameter(i) - learningRate * v)
            }
        case (true, true, false):
            for i in 0..<count {
                let p = lanes.parameter(i)
                let g = gradient[i] + weightDecay * p
                let v = momentum * lanes.first(i) + g
                lanes.setFirst(i, v)
                lanes.setParameter(i, p - learningRate * v)
            }
        case (false, true, true):
            for i in 0..<count {
                let g = gradient[i]
                let v = momentum * lanes.first(i) + g
                lanes.setFirst(i, v)
                lanes.setParameter(i, lanes.parameter(i) - learningRate * (g + momentum * v))
            }
        case (true, true, true):
            for i in 0..<count {
                let p = lanes.parameter(i)
                let g = gradient[i] + weightDecay * p
                let v = momentum * lanes.first(i) + g
                lanes.setFirst(i, v)
                lanes.setParameter(i, p - learningRate * (g + momentum * v))
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
        spareVelocity = []
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
    /// The moments before the last out-of-place step: the next one writes into them.
    private var spareFirstMoment: [Float] = []
    private var spareSecondMoment: [Float] = []
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
        let rule = Rule(self, learningRate: learningRate)
        firstMoment.withUnsafeMutableBufferPointer { m in
            secondMoment.withUnsafeMutableBufferPointer { v in
                for range in ranges where !range.isEmpty {
                    let start = range.lowerBound
                    rule.update(InPlaceLanes(p: parameters + start, s1: m.baseAddress! + start, s2: v.baseAddress! + start),
                                gradients + start, count: range.count)
                }
            }
        }
    }

    public func step(from source: UnsafePointer<Float>, into destination: UnsafeMutablePointer<Float>, gradients: UnsafePointer<Float>,
                     count: Int, learningRate: Float, ranges: [Range<Int>]) {
        precondition(count == firstMoment.count, "Adam built for \(firstMoment.count) parameters, stepped with \(count)")
        steps += 1
        let rule = Rule(self, learningRate: learningRate)
        var nextFirst = OutOfPlaceState.take(&spareFirstMoment, like: firstMoment)
        var nextSecond = OutOfPlaceState.take(&spareSecondMoment, like: secondMoment)
        firstMoment.withUnsafeBufferPointer { m in
            secondMoment.withUnsafeBufferPointer { v in
                nextFirst.withUnsafeMutableBufferPointer { newM in
                    nextSecond.withUnsafeMutableBufferPointer { newV in
                        let m = m.baseAddress!, v = v.baseAddress!, newM = newM.baseAddress!, newV = newV.baseAddress!
                        for range in ranges where !range.isEmpty {
                            let start = range.lowerBound
                            rule.update(OutOfPlaceLanes(pIn: source + start, pOut: destination + start, s1In: m + start,
                                                        s1Out: newM + start, s2In: v + start, s2Out: newV + start),
                                        gradients + start, count: range.count)
                        }
                        OutOfPlaceState.copyOutside(ranges, count: count, from: m, into: newM)
                        OutOfPlaceState.copyOutside(ranges, count: count, from: v, into: newV)
                    }
                }
            }
        }
        OutOfPlaceState.copyOutside(ranges, count: count, from: source, into: destination)
        spareFirstMoment = firstMoment
        spareSecondMoment = secondMoment
        firstMoment = nextFirst
        secondMoment = nextSecond
    }

    /// The rule's constants for one step (after `steps` has advanced).
    private struct Rule {
        let beta1: Float, beta2: Float, epsilon: Float, stepSize: Float, root2: Float
        /// Decay is off, applied to the weights (AdamW), or added to the gradient (Adam).
        let decay: Float?, coupledDecay: Float?

        init(_ adam: Adam, learningRate: Float) {
            beta1 = adam.beta1
            beta2 = adam.beta2
            epsilon = adam.epsilon
            let correction1 = 1 - powf(beta1, Float(adam.steps))
            let correction2 = 1 - powf(beta2, Float(adam.steps))
            stepSize = learningRate / correction1
            root2 = correction2.squareRoot()
            decay = adam.weightDecay != 0 && adam.decoupled ? 1 - learningRate * adam.weightDecay : nil
            coupledDecay = adam.weightDecay != 0 && !adam.decoupled ? adam.weightDecay : nil
        }

        /// One update of `count` consecutive parameters (moments in the lanes' first and second
        /// state), one branch-free loop per kind of decay (so it vectorises), with exactly the
        /// per-element operations of PyTorch's rule.
        @inline(__always)
        func update<Lanes: UpdateLanes>(_ lanes: Lanes, _ gradient: UnsafePointer<Float>, count: Int) {
            let beta1 = self.beta1, beta2 = self.beta2, epsilon = self.epsilon, stepSize = self.stepSize, root2 = self.root2
            @inline(__always)
            func moments(_ i: Int, _ p: Float, _ g: Float) {
                let m = beta1 * lanes.first(i) + (1 - beta1) * g
                let v = beta2 * lanes.second(i) + (1 - beta2) * g * g
                lanes.setFirst(i, m)
                lanes.setSecond(i, v)
                let denominator = v.squareRoot() / root2 + epsilon
                lanes.setParameter(i, p - stepSize * m / denominator)
            }
            if let decay {
                for i in 0..<count { moments(i, lanes.parameter(i) * decay, gradient[i]) }
            } else if let coupledDecay {
                for i in 0..<count {
                    let p = lanes.parameter(i)
                    moments(i, p, gradient[i] + coupledDecay * p)
                }
            } else {
                for i in 0..<count { moments(i, lanes.parameter(i), gradient[i]) }
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
        spareFirstMoment = []
        spareSecondMoment = []
        steps = Int(s[0])
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
