import Foundation
import TestSupport
import Training
import XCTest

/// Several hosts on one machine: the coordinator and two workers each in their own network
/// namespace with their own address, joined by veth pairs on a bridge, training for real.
///
/// Needs root and iproute2's `ip`; skipped with the reason where namespaces cannot be made. Every
/// address used lives only inside the namespaces this test creates, and nothing is sent to them
/// from outside: the test's own process never connects to them.
final class NamespaceTrainingTests: XCTestCase {
    private var namespaces: [String] = []
    private var processes: [Process] = []
    private var ip = ""

    private func command(_ arguments: [String], file: StaticString = #filePath, line: UInt = #line) throws {
        let result = try Shell.run(ip, arguments, seconds: 20)
        guard result.status == 0 else {
            throw Exposition.Failure("ip \(arguments.joined(separator: " ")) failed (\(result.status)): \(result.error)")
        }
    }

    override func tearDown() {
        // Clean up in every case: processes first (they hold the namespaces), then the namespaces,
        // which takes their interfaces with them.
        for process in processes where process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        for namespace in namespaces.reversed() {
            _ = try? Shell.run(ip, ["netns", "del", namespace], seconds: 20)
        }
        super.tearDown()
    }

    func testCoordinatorAndWorkersInSeparateNetworkNamespacesTrainTogether() throws {
        try Fixture.requireData()
        guard geteuid() == 0 else { throw XCTSkip("network namespaces need root; run the tests as root to include this one") }
        guard let found = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first(where: FileManager.default.isExecutableFile) else {
            throw XCTSkip("iproute2's `ip` is not installed (apt-get install iproute2)")
        }
        ip = found
        let tag = "cnt\(getpid() % 100_000)"
        let coordinatorHost = tag + "c"
        do {
            try command(["netns", "add", coordinatorHost])
        } catch {
            throw XCTSkip("cannot create network namespaces here: \(error)")
        }
        namespaces.append(coordinatorHost)

        // A bridge in the coordinator's namespace is the LAN; each worker host hangs on it by a veth pair.
        let subnet = "10.213.\(getpid() % 250)"
        let coordinatorAddress = "\(subnet).1"
        try command(["-n", coordinatorHost, "link", "set", "lo", "up"])
        try command(["-n", coordinatorHost, "link", "add", "br0", "type", "bridge"])
        try command(["-n", coordinatorHost, "addr", "add", "\(coordinatorAddress)/24", "dev", "br0"])
        try command(["-n", coordinatorHost, "link", "set", "br0", "up"])
        var workerHosts: [(namespace: String, address: String)] = []
        for (index, letter) in ["a", "b"].enumerated() {
            let host = tag + letter
            try command(["netns", "add", host])
            namespaces.append(host)
            let address = "\(subnet).\(index + 2)"
            try command(["-n", host, "link", "set", "lo", "up"])
            try command(["link", "add", "v\(letter)", "netns", coordinatorHost, "type", "veth", "peer", "name", "eth0", "netns", host])
            try command(["-n", coordinatorHost, "link", "set", "v\(letter)", "master", "br0"])
            try command(["-n", coordinatorHost, "link", "set", "v\(letter)", "up"])
            try command(["-n", host, "addr", "add", "\(address)/24", "dev", "eth0"])
            try command(["-n", host, "link", "set", "eth0", "up"])
            workerHosts.append((host, address))
        }

        let (folder, config) = try Fixture.folder("netns")
        let run = folder + "/run"
        let endpoint = "tcp://\(coordinatorAddress):5555"
        func start(_ namespace: String, _ program: String, _ arguments: [String], log: String) throws -> Process {
            let output = folder + "/\(log).out", error = folder + "/\(log).err"
            _ = FileManager.default.createFile(atPath: output, contents: nil)
            _ = FileManager.default.createFile(atPath: error, contents: nil)
            let process = try Shell.start(ip, ["netns", "exec", namespace, LocalCluster.executable(program)] + arguments,
                                          environment: LocalCluster.environment,
                                          output: try FileHandle(forWritingTo: URL(fileURLWithPath: output)),
                                          error: try FileHandle(forWritingTo: URL(fileURLWithPath: error)))
            processes.append(process)
            return process
        }
        let coordinator = try start(coordinatorHost, "cnn-coord",
                                    ["--config", config, "--bind", endpoint, "--insecure-bind", "--workers", "2", "--steps", "10", "--run-dir", run], log: "coord")
        var workers: [Process] = []
        for (index, host) in workerHosts.enumerated() {
            workers.append(try start(host.namespace, "cnn-worker", ["--connect", endpoint, "--name", "host-\(index)"], log: "worker\(index)"))
        }

        let deadline = Date().addingTimeInterval(150)
        while coordinator.isRunning && Date() < deadline { usleep(50_000) }
        let timedOut = coordinator.isRunning
        if timedOut { kill(coordinator.processIdentifier, SIGKILL) }
        coordinator.waitUntilExit()
        let log = (try? String(contentsOfFile: folder + "/coord.err", encoding: .utf8)) ?? ""
        XCTAssertFalse(timedOut, "the coordinator did not finish in time:\n\(log)")
        XCTAssertEqual(coordinator.terminationStatus, 0, log)
        XCTAssertTrue(log.contains("listening on \(endpoint)"), log)
        XCTAssertTrue(log.contains("(host-0) joined") && log.contains("(host-1) joined"), log)
        for (index, worker) in workers.enumerated() {
            let end = Date().addingTimeInterval(30)
            while worker.isRunning && Date() < end { usleep(50_000) }
            let workerLog = (try? String(contentsOfFile: folder + "/worker\(index).err", encoding: .utf8)) ?? ""
            XCTAssertFalse(worker.isRunning, "worker \(index) did not leave:\n\(workerLog)")
            if !worker.isRunning { XCTAssertEqual(worker.terminationStatus, 0, workerLog) }
        }
        let history = try MetricsHistoryFile.testAccuracy(run)
        XCTAssertGreaterThan(history, 0.3, "10 steps across the namespaces should beat chance")
    }
}

enum MetricsHistoryFile {
    /// The last test accuracy a run logged.
    static func testAccuracy(_ run: String) throws -> Double {
        let text = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)
        let values = text.split(separator: "\n").compactMap { line -> Double? in
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            return object?["test_accuracy"] as? Double
        }
        guard let last = values.last else { throw Exposition.Failure("\(run)/metrics.jsonl has no evaluation") }
        return last
    }
}
