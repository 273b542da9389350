import CNN
import Foundation
import Monitoring
import Training
import XCTest

final class PrometheusTests: XCTestCase {
    private func observedRun() -> PrometheusObserver {
        let observer = PrometheusObserver()
        observer.runStarted(Reports.start(epochs: 1, stepsPerEpoch: 50))
        observer.workerJoined(Reports.worker(0))
        observer.workerJoined(Reports.worker(1))
        observer.stepFinished(Reports.step(1, start: 10.0, seconds: 0.020, workers: [Reports.worker(0, done: 4, last: 0.018), Reports.worker(1, done: 4, last: 0.019)],
                                           phases: [Reports.phase("compute", 0, 10.001, 0.018), Reports.phase("compute", 1, 10.001, 0.019),
                                                    Reports.phase("reduce", nil, 10.0195, 0.0003)]))
        observer.stepFinished(Reports.step(2, start: 10.5, seconds: 0.300, workers: [Reports.worker(0, done: 8, last: 0.29), Reports.worker(1, done: 8, last: 0.28)],
                                           phases: [Reports.phase("compute", 0, 10.501, 0.29), Reports.phase("compute", 1, 10.501, 0.28)]))
        observer.evaluationFinished(step: 2, epoch: 0, score: BatchScore(lossSum: 70, correct: 812, samples: 1000))
        observer.workerLeft(Reports.worker(1, done: 8), reason: "it said goodbye")
        return observer
    }

    func testExpositionHoldsStepLossAccuracyRateWorkersBytesAndStepHistogram() throws {
        let observer = observedRun()
        let text = observer.exposition()
        let metrics = try Exposition(text)
        XCTAssertEqual(metrics.value("cnn_step"), 2)
        XCTAssertEqual(metrics.value("cnn_total_steps"), 50)
        XCTAssertEqual(metrics.value("cnn_epoch"), 1)
        XCTAssertEqual(metrics.value("cnn_loss"), 0.5)
        XCTAssertEqual(metrics.value("cnn_accuracy"), 0.75)
        XCTAssertEqual(metrics.value("cnn_test_accuracy"), 0.812)
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_test_loss")), 0.07, accuracy: 1e-12)
        // Two steps 0.5 s apart (end to end), 64 images after the first: 64 / 0.78 s.
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_images_per_second")), 64 / 0.78, accuracy: 1e-9)
        XCTAssertEqual(metrics.value("cnn_workers_alive"), 1)
        XCTAssertEqual(metrics.value("cnn_bytes_sent_total"), 2000)
        XCTAssertEqual(metrics.value("cnn_bytes_received_total"), 4000)
        XCTAssertEqual(metrics.value("cnn_images_total"), 128)
        XCTAssertEqual(metrics.types["cnn_step_seconds"], "histogram")
        XCTAssertEqual(metrics.value("cnn_step_seconds_count"), 2)
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_step_seconds_sum")), 0.32, accuracy: 1e-9)
        XCTAssertEqual(metrics.value("cnn_step_seconds_bucket", ["le": "0.025"]), 1)
        XCTAssertEqual(metrics.value("cnn_step_seconds_bucket", ["le": "0.25"]), 1)
        XCTAssertEqual(metrics.value("cnn_step_seconds_bucket", ["le": "0.5"]), 2)
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_phase_seconds_total", ["phase": "compute"])), 0.018 + 0.019 + 0.29 + 0.28, accuracy: 1e-12)
        let w1 = ["worker": "w1", "name": "node1-101", "host": "node1"]
        XCTAssertEqual(metrics.value("cnn_worker_alive", w1), 0)
        XCTAssertEqual(metrics.value("cnn_worker_micro_batches", w1), 8)
        XCTAssertEqual(metrics.value("cnn_worker_last_step_seconds", ["worker": "w0", "name": "node0-100", "host": "node0"]), 0.29)
        XCTAssertEqual(metrics.types["cnn_bytes_sent_total"], "counter")
        XCTAssertEqual(metrics.help["cnn_workers_alive"], "Workers alive at the coordinator.")
        for name in PrometheusObserver.descriptions.keys {
            XCTAssertNotNil(metrics.types[name], "\(name) is described but not published")
        }
    }

    func testWorkOutsideStepsAddsToThePhaseCounters() throws {
        let observer = observedRun()
        observer.phasesFinished([Reports.phase("evaluate", 0, 11, 0.25), Reports.phase("evaluate", 1, 11, 0.125)], step: 2)
        observer.phasesFinished([Reports.phase("checkpoint", nil, 11.3, 0.0625)], step: 2)
        let metrics = try Exposition(observer.exposition())
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_phase_seconds_total", ["phase": "evaluate"])), 0.375, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_phase_seconds_total", ["phase": "checkpoint"])), 0.0625, accuracy: 1e-12)
    }

    func testTestMetricsAppearOnlyAfterTheFirstEvaluation() throws {
        let observer = PrometheusObserver()
        observer.runStarted(Reports.start())
        observer.stepFinished(Reports.step(1, start: 1, seconds: 0.1))
        let before = try Exposition(observer.exposition())
        XCTAssertEqual(before.value("cnn_step"), 1)
        XCTAssertNil(before.value("cnn_test_accuracy"), "no test accuracy before any test")
        observer.evaluationFinished(step: 1, epoch: 0, score: BatchScore(lossSum: 5, correct: 3, samples: 10))
        XCTAssertEqual(try Exposition(observer.exposition()).value("cnn_test_accuracy"), 0.3)
    }

    func testServerAnswersScrapesOverARealSocketAndRefusesEverythingElse() throws {
        let observer = observedRun()
        let registry = observer.registry
        let server = try MetricsHTTPServer(host: "127.0.0.1", port: 0) { registry.emitToBuffer() }
        defer { server.stop() }
        XCTAssertGreaterThan(server.port, 0)
        XCTAssertEqual(server.url, "http://127.0.0.1:\(server.port)/metrics")

        let scrape = try HTTP.get(port: server.port, path: "/metrics")
        XCTAssertEqual(scrape.status, 200)
        XCTAssertEqual(scrape.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        XCTAssertEqual(scrape.headers["connection"], "close")
        XCTAssertEqual(scrape.headers["content-length"], "\(scrape.body.utf8.count)")
        XCTAssertEqual(try Exposition(scrape.body).value("cnn_step"), 2)
        // A scrape sees the registry as it is now.
        observer.stepFinished(Reports.step(3, start: 11, seconds: 0.01))
        XCTAssertEqual(try Exposition(try HTTP.get(port: server.port, path: "/metrics?x=1").body).value("cnn_step"), 3)

        XCTAssertEqual(try HTTP.get(port: server.port, path: "/nothing").status, 404)
        XCTAssertEqual(try HTTP.request(port: server.port, "POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n").status, 405)
        XCTAssertEqual(try HTTP.request(port: server.port, "GARBAGE\r\n\r\n").status, 400)
        let huge = "GET /metrics HTTP/1.1\r\nX-Filler: " + String(repeating: "a", count: 20_000) + "\r\n\r\n"
        XCTAssertEqual(try HTTP.request(port: server.port, huge).status, 431)
        let head = try HTTP.request(port: server.port, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        XCTAssertEqual(head.status, 200)
        XCTAssertEqual(head.body, "")

        server.stop()
        XCTAssertThrowsError(try HTTP.get(port: server.port, path: "/metrics"), "the port must be closed after stop()")
    }

    func testAPortInUseIsRefusedNamingTheAddressAndTheFix() throws {
        let first = try MetricsHTTPServer(port: 0) { [] }
        defer { first.stop() }
        XCTAssertThrowsError(try MetricsHTTPServer(port: first.port) { [] }) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("127.0.0.1:\(first.port)"), text)
            XCTAssertTrue(text.contains("in use") && text.contains("--metrics-port"), text)
        }
        XCTAssertThrowsError(try MetricsHTTPServer(host: "not-an-address", port: 0) { [] }) { error in
            XCTAssertTrue("\(error)".contains("0.0.0.0"), "\(error)")
        }
    }
}
