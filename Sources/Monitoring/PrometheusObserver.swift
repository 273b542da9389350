import CNN
import CoreMetrics
import Foundation
import Metrics
import Prometheus
import Training

/// Publishes a run's progress as Prometheus metrics: the coordinator's state through swift-metrics
/// (gauges, counters, a step-time histogram), stored in a swift-prometheus registry that
/// `MetricsHTTPServer` serves at `/metrics`.
///
/// Each observer has its own registry and hands its own factory to every metric, so nothing
/// depends on the process-wide `MetricsSystem` (several runs in one test process stay apart).
public final class PrometheusObserver: RunObserver {
    /// The registry holding every metric of this run; `registry.emitToString()` is the exposition.
    public let registry: PrometheusCollectorRegistry
    private let factory: DescribedPrometheusFactory

    private let step: CoreMetrics.Gauge
    private let epoch: CoreMetrics.Gauge
    private let totalSteps: CoreMetrics.Gauge
    private let loss: CoreMetrics.Gauge
    private let accuracy: CoreMetrics.Gauge
    // Created at the first evaluation: a test accuracy of 0 before any test would be a lie.
    private var testLoss: CoreMetrics.Gauge?
    private var testAccuracy: CoreMetrics.Gauge?
    private let imagesPerSecond: CoreMetrics.Gauge
    private let learningRate: CoreMetrics.Gauge
    private let workersAlive: CoreMetrics.Gauge
    private let bytesSent: CoreMetrics.Counter
    private let bytesReceived: CoreMetrics.Counter
    private let images: CoreMetrics.Counter
    private let stepTime: CoreMetrics.Timer
    private var phaseSeconds: [String: CoreMetrics.FloatingPointCounter] = [:]
    private var workerGauges: [UInt32: (alive: CoreMetrics.Gauge, microBatches: CoreMetrics.Gauge, lastStep: CoreMetrics.Gauge)] = [:]
    private var recent = RecentSteps(capacity: 20)

    /// The metric names and help texts this observer publishes.
    public static let descriptions: [String: String] = [
        "cnn_step": "Optimiser steps completed.",
        "cnn_epoch": "Epoch (1-based) of the last step.",
        "cnn_total_steps": "Optimiser steps the run is configured to take.",
        "cnn_loss": "Mean training loss of the last step.",
        "cnn_accuracy": "Training accuracy (0-1) of the last step.",
        "cnn_test_loss": "Mean test loss of the last evaluation.",
        "cnn_test_accuracy": "Test accuracy (0-1) of the last evaluation.",
        "cnn_images_per_second": "Training images per second over the last 20 steps.",
        "cnn_learning_rate": "Learning rate of the last step.",
        "cnn_workers_alive": "Workers alive at the coordinator.",
        "cnn_bytes_sent_total": "Bytes the coordinator sent to workers during steps.",
        "cnn_bytes_received_total": "Bytes the coordinator received from workers during steps.",
        "cnn_images_total": "Training images processed.",
        "cnn_step_seconds": "Wall time of each optimiser step at the coordinator.",
        "cnn_phase_seconds_total": "Seconds spent in each phase (compute, its parts forward/backward/pack/send/other, broadcast and evaluate summed over workers; evaluate and checkpoint are outside steps).",
        "cnn_worker_alive": "1 while a worker is alive, 0 once it is gone.",
        "cnn_worker_micro_batches": "Micro-batches a worker has computed.",
        "cnn_worker_last_step_seconds": "Seconds from a worker's first assignment to its last result in its last step.",
    ]

    /// Upper bounds of the step-time histogram's buckets.
    public static let stepSecondsBuckets: [Duration] = [
        .milliseconds(1), .microseconds(2500), .milliseconds(5), .milliseconds(10), .milliseconds(25),
        .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
        .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        let factory = DescribedPrometheusFactory(
            registry: registry, descriptions: PrometheusObserver.descriptions,
            durationBuckets: PrometheusObserver.stepSecondsBuckets)
        self.factory = factory
        step = CoreMetrics.Gauge(label: "cnn_step", factory: factory)
        epoch = CoreMetrics.Gauge(label: "cnn_epoch", factory: factory)
        totalSteps = CoreMetrics.Gauge(label: "cnn_total_steps", factory: factory)
        loss = CoreMetrics.Gauge(label: "cnn_loss", factory: factory)
        accuracy = CoreMetrics.Gauge(label: "cnn_accuracy", factory: factory)
        imagesPerSecond = CoreMetrics.Gauge(label: "cnn_images_per_second", factory: factory)
        learningRate = CoreMetrics.Gauge(label: "cnn_learning_rate", factory: factory)
        workersAlive = CoreMetrics.Gauge(label: "cnn_workers_alive", factory: factory)
        bytesSent = CoreMetrics.Counter(label: "cnn_bytes_sent_total", factory: factory)
        bytesReceived = CoreMetrics.Counter(label: "cnn_bytes_received_total", factory: factory)
        images = CoreMetrics.Counter(label: "cnn_images_total", factory: factory)
        stepTime = CoreMetrics.Timer(label: "cnn_step_seconds", factory: factory)
    }

    /// The metrics in Prometheus's text exposition format.
    public func exposition() -> String {
        registry.emitToString()
    }

    public func runStarted(_ start: RunStart) {
        step.record(start.firstStep)
        totalSteps.record(start.totalSteps)
    }

    public func workerJoined(_ worker: WorkerStatus) {
        update(worker)
        workersAlive.record(workerAlive.values.count { $0 })
    }

    public func workerLeft(_ worker: WorkerStatus, reason: String) {
        var gone = worker
        gone.alive = false
        update(gone)
        workersAlive.record(workerAlive.values.count { $0 })
    }

    public func stepFinished(_ report: StepReport) {
        step.record(report.step)
        epoch.record(report.epoch + 1)
        loss.record(report.score.meanLoss)
        accuracy.record(report.score.accuracy)
        learningRate.record(report.learningRate)
        bytesSent.increment(by: report.bytesSent)
        bytesReceived.increment(by: report.bytesReceived)
        images.increment(by: report.score.samples)
        stepTime.record(report.seconds)
        recent.add(end: report.start + report.seconds, seconds: report.seconds, samples: report.score.samples)
        if let rate = recent.imagesPerSecond { imagesPerSecond.record(rate) }
        for phase in report.phases {
            phaseCounter(phase.name).increment(by: phase.duration)
        }
        for worker in report.workers { update(worker) }
        workersAlive.record(report.workers.count { $0.alive })
    }

    public func phasesFinished(_ phases: [PhaseTiming], step: Int) {
        for phase in phases {
            phaseCounter(phase.name).increment(by: phase.duration)
        }
    }

    public func evaluationFinished(step: Int, epoch: Int, score: BatchScore) {
        if testLoss == nil {
            testLoss = CoreMetrics.Gauge(label: "cnn_test_loss", factory: factory)
            testAccuracy = CoreMetrics.Gauge(label: "cnn_test_accuracy", factory: factory)
        }
        testLoss?.record(score.meanLoss)
        testAccuracy?.record(score.accuracy)
    }

    private var workerAlive: [UInt32: Bool] = [:]

    private func update(_ worker: WorkerStatus) {
        let gauges: (alive: CoreMetrics.Gauge, microBatches: CoreMetrics.Gauge, lastStep: CoreMetrics.Gauge)
        if let existing = workerGauges[worker.id] {
            gauges = existing
        } else {
            let labels = [("worker", "w\(worker.id)"), ("name", worker.name), ("host", worker.host)]
            gauges = (CoreMetrics.Gauge(label: "cnn_worker_alive", dimensions: labels, factory: factory),
                      CoreMetrics.Gauge(label: "cnn_worker_micro_batches", dimensions: labels, factory: factory),
                      CoreMetrics.Gauge(label: "cnn_worker_last_step_seconds", dimensions: labels, factory: factory))
            workerGauges[worker.id] = gauges
        }
        workerAlive[worker.id] = worker.alive
        gauges.alive.record(worker.alive ? 1 : 0)
        gauges.microBatches.record(worker.microBatchesDone)
        if let seconds = worker.lastStepSeconds { gauges.lastStep.record(seconds) }
    }

    private func phaseCounter(_ name: String) -> CoreMetrics.FloatingPointCounter {
        if let counter = phaseSeconds[name] { return counter }
        let counter = CoreMetrics.FloatingPointCounter(label: "cnn_phase_seconds_total", dimensions: [("phase", name)], factory: factory)
        phaseSeconds[name] = counter
        return counter
    }
}

/// swift-metrics' factory protocol over a swift-prometheus registry, as `PrometheusMetricsFactory`
/// is, but giving each metric its help text (which that factory leaves empty).
struct DescribedPrometheusFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    let descriptions: [String: String]
    let durationBuckets: [Duration]
    private let plain: PrometheusMetricsFactory

    init(registry: PrometheusCollectorRegistry, descriptions: [String: String], durationBuckets: [Duration]) {
        self.registry = registry
        self.descriptions = descriptions
        self.durationBuckets = durationBuckets
        var plain = PrometheusMetricsFactory(registry: registry)
        plain.defaultDurationHistogramBuckets = durationBuckets
        self.plain = plain
    }

    private func descriptor(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: descriptions[label] ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> CounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> FloatingPointCounterHandler {
        registry.makeCounter(descriptor: descriptor(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: descriptor(label), labels: dimensions) }
        return plain.makeRecorder(label: label, dimensions: dimensions, aggregate: aggregate)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> MeterHandler {
        registry.makeGauge(descriptor: descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> TimerHandler {
        registry.makeDurationHistogram(descriptor: descriptor(label), labels: dimensions, buckets: durationBuckets)
    }

    func destroyCounter(_ handler: CounterHandler) { plain.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: FloatingPointCounterHandler) { plain.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: RecorderHandler) { plain.destroyRecorder(handler) }
    func destroyMeter(_ handler: MeterHandler) { plain.destroyMeter(handler) }
    func destroyTimer(_ handler: TimerHandler) { plain.destroyTimer(handler) }
}
