import CNN
import Checkpoint
import Foundation
import Monitoring
import TestSupport
import Training
import XCTest

/// The real `cnn-coord` with its monitoring switched on: a Prometheus endpoint scraped during the
/// run, a Chrome trace, the live display on a pseudo-terminal, and finding each other.
final class LiveRunEndToEndTests: XCTestCase {
    override class func setUp() {
        BLAS.useSingleThread()
    }

    func testMetricsScrapedDuringARunAndItsTraceDescribeTheSameSteps() throws {
        let (folder, config) = try Fixture.folder("live", config: Fixture.config(synthetic: true))
        let run = folder + "/run", trace = folder + "/trace.json"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", config, "--spawn-workers", "2", "--epochs", "50", "--run-dir", run,
                          "--metrics-port", "0", "--trace", trace])
        var port: Int?
        XCTAssertTrue(Fixture.waitFor(seconds: 60) {
            guard let range = coordinator.error.range(of: #"Prometheus metrics at http://127\.0\.0\.1:[0-9]+/metrics"#, options: .regularExpression) else {
                return false
            }
            port = Int(coordinator.error[range].split(separator: ":").last!.dropLast("/metrics".count))
            return true
        }, "no metrics address in the log:\n\(coordinator.error)")
        let metricsPort = try XCTUnwrap(port)

        // Scrape while it trains, until ten steps are done.
        var scraped: Exposition?
        XCTAssertTrue(Fixture.waitFor(seconds: 90) {
            guard let response = try? HTTP.get(port: metricsPort, path: "/metrics"), response.status == 200,
                  let metrics = try? Exposition(response.body), (metrics.value("cnn_step") ?? 0) >= 10 else { return false }
            scraped = metrics
            return true
        }, "the run did not reach step 10:\n\(coordinator.error)")
        coordinator.signal(SIGTERM)
        let outcome = coordinator.wait(seconds: 60)
        XCTAssertEqual(outcome.status, 0, outcome.combined)

        let metrics = try XCTUnwrap(scraped)
        let step = try XCTUnwrap(metrics.value("cnn_step"))
        XCTAssertEqual(metrics.value("cnn_workers_alive"), 2)
        XCTAssertEqual(metrics.value("cnn_total_steps"), 50 * 32)
        // Updated by the coordinator while the scrape reads: allow one step of difference.
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_step_seconds_count")), step, accuracy: 1)
        XCTAssertEqual(try XCTUnwrap(metrics.value("cnn_images_total")), 64 * step, accuracy: 64)
        XCTAssertGreaterThan(try XCTUnwrap(metrics.value("cnn_bytes_sent_total")), 0)
        XCTAssertGreaterThan(try XCTUnwrap(metrics.value("cnn_bytes_received_total")), 0)
        XCTAssertGreaterThan(try XCTUnwrap(metrics.value("cnn_images_per_second")), 0)
        let loss = try XCTUnwrap(metrics.value("cnn_loss"))
        XCTAssertTrue(loss > 0 && loss < 5, "loss \(loss)")
        XCTAssertGreaterThan(try XCTUnwrap(metrics.value("cnn_phase_seconds_total", ["phase": "compute"])), 0)
        XCTAssertEqual(Set(metrics.samples.filter { $0.name == "cnn_worker_alive" }.compactMap { $0.labels["worker"] }), ["w0", "w1"])

        // The trace holds every step the run took, with both workers' compute on their own tracks.
        let checkpoint = try CheckpointStore.load(directory: CheckpointStore(runDirectory: run, keep: 3).list().last!)
        let events = try TraceFile.events(trace)
        try TraceFile.validate(events)
        let steps = events.filter { $0["cat"] as? String == "step" }
        XCTAssertEqual(steps.count, checkpoint.state.step)
        XCTAssertGreaterThanOrEqual(steps.count, Int(step))
        let computeTracks = Set(events.filter { $0["name"] as? String == "compute" }.compactMap { $0["tid"] as? Int })
        XCTAssertEqual(computeTracks, [1, 2])
        XCTAssertTrue(outcome.output.contains("trace summary: \(checkpoint.state.step) steps"), outcome.output)
        XCTAssertTrue(outcome.output.contains("slowest worker: w"), outcome.output)
        XCTAssertTrue(outcome.output.contains("waiting for workers' gradients"), outcome.output)
        // Without a display the spawned workers log as usual (on the coordinator's standard error).
        XCTAssertTrue(outcome.error.contains("[worker local-0] joined as w"), outcome.error)
        // Not on a terminal: plain progress lines, no escape codes.
        XCTAssertTrue(outcome.output.contains("epoch 1/50 step 5/32 (5 total)"), outcome.output)
        XCTAssertFalse(outcome.combined.contains("\u{1B}"), "no escape codes in a file:\n\(outcome.combined)")
    }

    func testATerminalGetsTheLiveDisplayInsteadOfPlainLines() throws {
        let (folder, config) = try Fixture.folder("tty", config: Fixture.config(synthetic: true))
        let terminal = try PseudoTerminalRun(
            LocalCluster.executable("cnn-coord"),
            ["--config", config, "--spawn-workers", "2", "--steps", "15", "--run-dir", folder + "/run"], columns: 150)
        let screen = terminal.wait(seconds: 120)
        XCTAssertEqual(terminal.status, 0, screen)
        XCTAssertTrue(screen.contains("\u{1B}[") && screen.contains("A\r\u{1B}[J"), "the display redraws in place:\n\(screen)")
        XCTAssertTrue(screen.contains("epoch 1/1  step 15/32"), screen)
        XCTAssertTrue(screen.contains("img/s") && screen.contains("ETA"), screen)
        XCTAssertTrue(screen.contains("workers: 2 alive"), screen)
        XCTAssertTrue(screen.contains("local-0") && screen.contains("local-1") && screen.contains("micro-batches"), screen)
        XCTAssertTrue(screen.contains("done: 15 steps"), screen)
        XCTAssertFalse(screen.contains("epoch 1/1 step 5/32 (5 total)"), "no plain progress lines on a terminal")
        XCTAssertTrue(screen.contains("checkpoint step 15 ("), "the final checkpoint shows on the display:\n\(screen)")
        // The spawned workers share the terminal: under the display they keep to warnings and errors.
        XCTAssertFalse(screen.contains("joined as w"), "a worker's info line tore the display:\n\(screen)")
        XCTAssertTrue(screen.contains("(local-0) joined from"), "the coordinator's own log lines still show:\n\(screen)")
    }

    func testSpawnedWorkersFollowTheCoordinatorsQuiet() throws {
        let (folder, config) = try Fixture.folder("quiet", config: Fixture.config(synthetic: true))
        let outcome = try LocalCluster.run(
            "cnn-coord", ["--config", config, "--spawn-workers", "1", "--steps", "2", "--run-dir", folder + "/run", "--quiet"], seconds: 60)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertFalse(outcome.combined.contains("[worker local-0]"), outcome.combined)
        XCTAssertFalse(outcome.combined.contains("joined"), "no info lines from anyone with --quiet:\n\(outcome.combined)")
    }

    func testAWorkerStartedWithTheCommandFromWorkerCommandTxtJoinsAPortZeroCoordinator() throws {
        let (folder, config) = try Fixture.folder("zeroconf", config: Fixture.config(synthetic: true))
        let run = folder + "/run"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", config, "--bind", "tcp://127.0.0.1:0", "--workers", "1", "--steps", "5", "--run-dir", run, "--quiet"])
        var command = ""
        XCTAssertTrue(Fixture.waitFor(seconds: 60) {
            command = (try? String(contentsOfFile: run + "/worker-command.txt", encoding: .utf8)) ?? ""
            return !command.isEmpty
        }, coordinator.error)
        let words = command.split(separator: "\n").first!.split(separator: " ").map(String.init)
        XCTAssertEqual(words.first, "cnn-worker")
        XCTAssertEqual(words.dropFirst().first, "--connect")
        XCTAssertFalse(words.last!.hasSuffix(":0"), "the command names the port chosen, not 0: \(command)")
        let worker = try LocalCluster.Child("cnn-worker", Array(words.dropFirst()))
        let outcome = coordinator.wait(seconds: 120)
        XCTAssertEqual(outcome.status, 0, outcome.combined)
        XCTAssertEqual(worker.wait(seconds: 30).status, 0)
    }

    func testAWorkerThatCannotReachTheCoordinatorSaysWhichAddressItTriedAndWhy() throws {
        let port = EndpointTests.freePort()
        let address = "tcp://127.0.0.1:\(port)"
        let worker = try LocalCluster.Child("cnn-worker", ["--connect", address, "--name", "lonely"])
        XCTAssertTrue(Fixture.waitFor(seconds: 20) { worker.error.contains("connection refused") }, worker.error)
        worker.signal(SIGTERM)
        let outcome = worker.wait(seconds: 30)
        XCTAssertNotEqual(outcome.status, 0)
        XCTAssertTrue(outcome.error.contains("cannot reach the coordinator at \(address) yet: 127.0.0.1:\(port): connection refused: nothing listens there"),
                      outcome.error)
        XCTAssertTrue(outcome.error.contains("tried \(address): 127.0.0.1:\(port): connection refused"), outcome.error)
    }
}

/// A child process whose standard output and error are a pseudo-terminal, as in a person's shell.
final class PseudoTerminalRun: @unchecked Sendable {
    // Sendable: `text` is guarded by `lock`; the reader thread is the only writer.
    private let process = Process()
    private let master: Int32
    private let lock = NSLock()
    private var text = ""
    private let done = DispatchSemaphore(value: 0)

    init(_ program: String, _ arguments: [String], columns: Int) throws {
        // /dev/ptmx by hand: glibc's posix_openpt family is not visible to Swift without
        // _XOPEN_SOURCE. TIOCSPTLCK unlocks the pair, TIOCGPTN names its terminal (Linux values).
        master = open("/dev/ptmx", O_RDWR | O_NOCTTY)
        var unlock: Int32 = 0
        var number: UInt32 = 0
        guard master >= 0, ioctl(master, UInt(0x4004_5431), &unlock) == 0, ioctl(master, UInt(0x8004_5430), &number) == 0 else {
            throw XCTSkip("no pseudo-terminals here: \(String(cString: strerror(errno)))")
        }
        var size = winsize(ws_row: 40, ws_col: UInt16(columns), ws_xpixel: 0, ws_ypixel: 0)
        _ = ioctl(master, UInt(TIOCSWINSZ), &size)
        let slave = open("/dev/pts/\(number)", O_RDWR | O_NOCTTY)
        guard slave >= 0 else { throw XCTSkip("cannot open the pseudo-terminal /dev/pts/\(number)") }
        let handle = FileHandle(fileDescriptor: slave, closeOnDealloc: true)
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.environment = LocalCluster.environment
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try handle.close()
        let descriptor = master
        Thread.detachNewThread { [self] in
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
                if count <= 0 { break }
                let chunk = String(decoding: buffer[0..<count], as: UTF8.self)
                lock.withLock { text += chunk }
            }
            done.signal()
        }
    }

    var status: Int32 { process.terminationStatus }

    /// Waits for the child (killing it after `seconds`) and returns everything it wrote.
    func wait(seconds: Double) -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        // The reader ends when the last holder of the terminal (a worker, too) has closed it.
        _ = done.wait(timeout: .now() + 10)
        close(master)
        return lock.withLock { text }
    }
}
