import AllReduce
import CNN
import Foundation
import Wire

/// What a worker's computation thread does with an assignment: run the engine over its
/// micro-batches, and put the results (partial sums along the fixed tree, scores, timings) into
/// the message the coordinator takes.
extension Worker {
    /// A training assignment: the scores of its micro-batches and their gradients, summed along
    /// the fixed tree into one partial sum per largest tree node this worker holds.
    static func train(_ job: Job, on engine: MicroBatchEngine, streaming: PartialSumStream? = nil) throws -> Message {
        let (output, results, packStart) = compute(job, on: engine, training: true, streaming: streaming)
        let total = Int(job.assignment.totalMicroBatches)
        var nodes: [TreeNode] = []
        var tensors: [FloatPayload] = []
        for node in MicroBatchEngine.partialSums(of: output.leafGradients, microBatchesInStep: total) {
            let payload: FloatPayload
            if let held = output.partialSums?[node] ?? output.leafGradients.nodes[node] {
                // The engine computed this node whole (or, streaming, summed it slice by slice as
                // threads finished them): its buffer is sent as it lies, and hashing it
                // is the only pass over it, made when it is sent whole (a sharded worker sends it
                // in slices, each hashed on its way). The engine reuses a buffer only once nobody
                // else holds it, so it cannot change while libzmq sends it.
                payload = FloatPayload(viewing: held.pointer, count: engine.leafLength, owner: held)
            } else {
                // The partial sum is written straight into the buffer that will be sent, 64 KB at
                // a time, each block hashed while it is still in cache.
                payload = try FloatPayload(count: engine.leafLength, fillingBlocks: { range, block in
                    try MicroBatchEngine.sum(node, of: output.leafGradients, microBatchesInStep: total,
                                             elements: range, rounding: engine.rounding, into: block.baseAddress!)
                })
            }
            nodes.append(node)
            tensors.append(payload)
        }
        let timings = timings(of: output, on: engine, job: job, packStart: packStart)
        // The nodes' gradients are bf16-exact under wire bf16 (the engine rounded every node):
        // they travel in 2 bytes a value, the state observations after them in 4.
        let encoding = engine.config.tensorEncoding(gradientCount: engine.parameterCount)
        return .gradients(Gradients(epoch: job.assignment.epoch, results: results, nodes: nodes, tensors: tensors, encoding: encoding,
                                    timings: timings))
    }

    /// An evaluation assignment: the scores of its micro-batches, nothing else.
    static func evaluate(_ job: Job, on engine: MicroBatchEngine) -> Message {
        let (output, results, packStart) = compute(job, on: engine, training: false)
        let timings = timings(of: output, on: engine, job: job, packStart: packStart)
        return .evaluation(Evaluation(epoch: job.assignment.epoch, results: results, timings: timings))
    }

    /// What training and evaluation share: the job's micro-batches computed from its weights and
    /// scored, and when the packing of the results began.
    static func compute(_ job: Job, on engine: MicroBatchEngine, training: Bool, streaming: PartialSumStream? = nil)
        -> (output: MicroBatchOutput, results: [MicroBatchResult], packStart: Double) {
        // The replicas read the received weights where they lie (no 4-bytes-per-parameter copy
        // each step); the engine keeps the payload alive until the next weights replace it.
        if let weights = job.weights { weights.withUnsafeBufferPointer { engine.shareWeights($0.baseAddress!, owner: weights) } }
        let work = job.assignment.microBatches
        let output = engine.compute(work, training: training, epoch: Int(job.assignment.epoch), step: job.step, streaming: streaming)
        let packStart = monotonicSeconds()
        let results = work.map { item -> MicroBatchResult in
            let score = output.scores[item.index]!
            return MicroBatchResult(index: UInt32(item.index), lossSum: score.lossSum, correct: UInt32(score.correct),
                                    topFiveCorrect: UInt32(score.topFiveCorrect), samples: UInt32(score.samples))
        }
        return (output, results, packStart)
    }

    /// The worker's timings of `job` up to now; the total is stamped when the results are sent.
    static func timings(of output: MicroBatchOutput, on engine: MicroBatchEngine, job: Job, packStart: Double) -> WorkerTimings {
        let pass = wallTime(of: output.timings, threads: min(engine.threads, job.assignment.microBatches.count))
        return WorkerTimings(forwardSeconds: pass.forwardSeconds, backwardSeconds: pass.backwardSeconds,
                             packSeconds: monotonicSeconds() - packStart, totalSeconds: 0)
    }

    /// Forward and backward wall time of one `compute` call on `threads` threads: the per-thread
    /// mean of the micro-batches' sums. Micro-batches run whole on one thread each, so every
    /// thread's sum is at most the call's wall time, and so is their mean; unlike the busiest
    /// thread's sum it needs no knowledge of how the engine deals micro-batches to threads. With
    /// one thread it is exactly that thread's time. Threads idle while the last ones finish show up
    /// as the worker's unaccounted time (total minus forward, backward and pack).
    static func wallTime(of timings: [Int: PassTiming], threads: Int) -> PassTiming {
        let sum = timings.values.reduce(PassTiming(), +)
        let share = 1 / Double(max(threads, 1))
        return PassTiming(forwardSeconds: sum.forwardSeconds * share, backwardSeconds: sum.backwardSeconds * share)
    }

    /// Results (gradients or evaluation) with their total time filled in at the moment of sending
    /// (the computation thread cannot know when the main thread will send them). Never less than
    /// the parts, whatever the clock's rounding, so the message always passes the coordinator's check.
    static func stampingTotal(_ message: Message, receivedAt: Double) -> Message {
        func stamped(_ timings: WorkerTimings) -> WorkerTimings {
            var timings = timings
            timings.totalSeconds = max(monotonicSeconds() - receivedAt, timings.accountedSeconds)
            return timings
        }
        switch message {
        case .gradients(var gradients):
            gradients.timings = stamped(gradients.timings)
            return .gradients(gradients)
        case .evaluation(var evaluation):
            evaluation.timings = stamped(evaluation.timings)
            return .evaluation(evaluation)
        case .computed(var computed):
            computed.timings = stamped(computed.timings)
            return .computed(computed)
        default:
            return message
        }
    }
}
