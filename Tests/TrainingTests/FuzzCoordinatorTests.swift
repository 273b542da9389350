import Checkpoint
import Foundation
import TestSupport
import Training
import Wire
import XCTest

/// A live coordinator training with real workers while a rogue on the same socket fires tens of
/// thousands of malformed, mutated and misleading messages at it: the run must finish with the
/// very weights it reaches without the rogue, and the coordinator's memory must stay bounded.
final class FuzzCoordinatorTests: XCTestCase {
    /// A small synthetic model: fast steps, many micro-batches per step.
    private let config = """
        model:
          input: [1, 12, 12]
          layers:
            - conv: {filters: 4, kernel: 3, padding: 1}
            - relu
            - maxpool: 2
            - flatten
            - dense: 10
        data:
          dataset: synthetic
          synthetic_train: 6144
          synthetic_test: 128
        train:
          epochs: 1
          batch: 32
          micro_batch: 4
          seed: 11
          optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
          eval_batch: 128
          log_every: 5
        distributed:
          worker_timeout: 1
          heartbeat_interval: 0.2
          join_timeout: 30
          # The rogue sends its gradients to the coordinator: the central strategy's part.
          reduction: central
        """

    /// With `assignmentDelay`, long enough for the rogue's flood to pass 20,000 messages while
    /// the run lasts.
    private let steps = 192
    /// Seconds each of the attacked run's assignments takes at least.
    private static let assignmentDelay = 0.004

    /// The bytes of the newest checkpoint's model file in `run`.
    static func finalModel(_ run: String) throws -> [UInt8] {
        let newest = try XCTUnwrap(CheckpointStore(runDirectory: run, keep: 3).list().last, "no checkpoint in \(run)")
        return Array(try Data(contentsOf: URL(fileURLWithPath: newest + "/model.safetensors")))
    }

    /// The endpoint from RUN_DIR/worker-command.txt (`cnn-worker --connect ENDPOINT ...`).
    static func endpoint(fromRunDirectory run: String, coordinator: LocalCluster.Child, seconds: Double = 60) throws -> String {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let text = try? String(contentsOfFile: run + "/worker-command.txt", encoding: .utf8) {
                let words = text.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
                if let flag = words.firstIndex(of: "--connect"), flag + 1 < words.count { return words[flag + 1] }
            }
            guard coordinator.process.isRunning else { break }
            usleep(20_000)
        }
        throw EndpointMissing(description: "the coordinator never wrote \(run)/worker-command.txt:\n\(coordinator.error)")
    }

    private static func residentBytes(of pid: Int32) -> Int {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return fields.count > 1 ? (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE))) : 0
    }

    func testARogueFloodingTheCoordinatorChangesNothingInTheWeights() throws {
        let folder = try LocalCluster.temporaryDirectory("rogue")
        let configPath = try LocalCluster.write(config, to: "config.yaml", in: folder)

        let reference = folder + "/reference"
        let plain = try LocalCluster.Child(
            "cnn-coord", ["--config", configPath, "--spawn-workers", "2", "--steps", "\(steps)", "--run-dir", reference, "--quiet"])
        var referencePeak = 0
        while plain.process.isRunning { referencePeak = max(referencePeak, Self.residentBytes(of: plain.process.processIdentifier)); usleep(20_000) }
        let referenceOutcome = plain.wait(seconds: 120)
        XCTAssertEqual(referenceOutcome.status, 0, referenceOutcome.combined)

        let run = folder + "/attacked"
        let coordinator = try LocalCluster.Child(
            "cnn-coord", ["--config", configPath, "--workers", "2", "--steps", "\(steps)", "--run-dir", run,
                          "--bind", "tcp://127.0.0.1:0", "--quiet"])
        let endpoint = try Self.endpoint(fromRunDirectory: run, coordinator: coordinator)
        // Each assignment takes its workers at least `assignmentDelay`, so that the run lasts long
        // enough for a flood whatever the speed of a step of this tiny model (a fraction of a
        // millisecond once workers stopped polling for their results).
        let workers = try (0..<2).map { index in
            try LocalCluster.Child("cnn-worker", ["--connect", endpoint, "--name", "w\(index)",
                                                  "--compute-delay", "\(Self.assignmentDelay)"])
        }
        defer { workers.forEach { $0.signal(SIGKILL) } }
        // The rogue comes in once the run's own workers train: joining first, its Byzantine
        // workers could be all the coordinator has (they count towards --spawn-workers' wait),
        // and NaN from every live worker rightly stops a run as diverged.
        let trainingBy = Date().addingTimeInterval(60)
        while Date() < trainingBy, coordinator.process.isRunning,
              !((try? String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8)) ?? "").contains("\"loss\"") {
            usleep(10_000)
        }
        var rogue = try Rogue(endpoint: endpoint)
        var peak = 0
        let started = Date()
        // Fire until the run is over (or a generous deadline passes: then the outcome says why).
        while coordinator.process.isRunning && Date().timeIntervalSince(started) < 60 {
            // Bursts with pauses: the rogue shares this machine's two cores with the run it attacks.
            rogue.fire(for: 0.02)
            usleep(20_000)
            peak = max(peak, Self.residentBytes(of: coordinator.process.processIdentifier))
        }
        rogue.close()
        let outcome = coordinator.wait(seconds: 10)
        let counts = rogue.counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        print("rogue sent \(rogue.sent) messages (\(counts)) in \(String(format: "%.1f", Date().timeIntervalSince(started))) s; "
            + "coordinator resident peak \(peak >> 20) MiB (\(referencePeak >> 20) MiB without the rogue)")
        XCTAssertFalse(outcome.timedOut, "the attacked run did not finish:\n\(outcome.combined.suffix(4000))")
        XCTAssertEqual(outcome.status, 0, String(outcome.combined.suffix(4000)))
        XCTAssertFalse(outcome.combined.contains("Fatal error"), String(outcome.combined.suffix(4000)))
        // A flood, in every kind: the run it attacks lasts a second or two here, so the count is a
        // matter of rate (tens of thousands of messages a second), not of a fixed total.
        XCTAssertGreaterThan(rogue.sent, 20_000, "the rogue must actually have fired a flood (\(counts))")
        for kind in ["bad-header", "mutated", "random", "hello", "other-run", "stale-step", "future-step"] {
            XCTAssertGreaterThan(rogue.counts[kind, default: 0], 100, "the rogue sent few '\(kind)' messages (\(counts))")
        }
        XCTAssertGreaterThan(rogue.counts["nan-gradients", default: 0], 0, "the rogue never got work to answer with NaN (\(counts))")
        XCTAssertEqual(rogue.counts["million-frames"], 1, "the rogue never sent its million-frame message (\(counts))")
        XCTAssertEqual(try Self.finalModel(run), try Self.finalModel(reference), "the rogue changed the weights")
        XCTAssertLessThan(peak, referencePeak + (256 << 20), "the coordinator's memory grew under the flood")
    }
}

/// The attacker: several connections to the coordinator's socket.
/// - `flood` never reads and sends random and mutated frames as fast as the socket takes them;
/// - `hellos` never reads and says hello over and over (so it is given work it never does);
/// - `byzantine` joins politely and answers every assignment with NaN gradients (or, for an
///   evaluation, with more correct answers than samples), after results of the other kind;
/// - `impostor` does the same, and also sends gradients for other runs, steps and micro-batches.
struct Rogue {
    private let context: ZMQContext
    private let flood: ZMQSocket
    /// Sends one message of a million empty frames.
    private let frames: ZMQSocket
    private var sentMillionFrames = false
    private let hellos: ZMQSocket
    private let impostor: ZMQSocket
    private let byzantine: ZMQSocket
    private var random = SplitMix(state: 0xBAD_C0FFEE)
    private var runID: UInt64 = 0
    private var step: UInt64 = 0
    private var parameterCount = 0
    private var joined: Set<String> = []
    /// Micro-batches of a step the impostor answered with NaN: the coordinator gives them to others
    /// and never back to it, so a later answer from it for them is certainly for work not given.
    /// (Any other index could be in an assignment still on its way to the impostor; a finite
    /// answer for work it was given is a Byzantine worker, which nothing here claims to stop.)
    private var spentByImpostor: (step: UInt64, indices: [Int]) = (0, [])
    private var seeds: [[[UInt8]]] = []
    private(set) var sent = 0
    private(set) var counts: [String: Int] = [:]

    init(endpoint: String) throws {
        let context = try ZMQContext()
        self.context = context
        func connect(_ id: String) throws -> ZMQSocket {
            let socket = try ZMQSocket(context: context, kind: .dealer)
            try socket.setLinger(milliseconds: 0)
            // Never block the test: a full queue just means the message is not sent.
            try socket.setSendTimeout(milliseconds: 0)
            try socket.setRoutingID(Array(id.utf8))
            try socket.connect(endpoint)
            return socket
        }
        flood = try connect("rogue-flood")
        frames = try connect("rogue-frames")
        hellos = try connect("rogue-hellos")
        impostor = try connect("rogue-impostor")
        byzantine = try connect("rogue-byzantine")
        seeds = Self.validMessages(runID: 1, step: 0, parameterCount: 10)
    }

    mutating func close() {
        flood.close()
        frames.close()
        hellos.close()
        impostor.close()
        byzantine.close()
        context.close()
    }

    private static func hello(_ name: String) -> Envelope {
        Envelope(runID: 0, step: 0, message: .hello(Hello(name: name, threads: 4, processID: 1, hostName: "rogue", coreType: "none")))
    }

    /// One valid message of every kind a worker may send, plus coordinator-only kinds.
    private static func validMessages(runID: UInt64, step: UInt64, parameterCount: Int) -> [[[UInt8]]] {
        let nan = FloatPayload(count: max(parameterCount, 1)) { $0.update(repeating: .nan) }
        let messages: [Message] = [
            .hello(Hello(name: "x", threads: 1, processID: 2, hostName: "h", coreType: "c")),
            .heartbeat(Heartbeat(sentAtMilliseconds: 5, busy: false)),
            .gradients(Gradients(epoch: 0, results: [MicroBatchResult(index: 0, lossSum: 1, correct: 1, samples: 4)],
                                 nodes: [TreeNode(level: 0, index: 0)], tensors: [nan])),
            .evaluation(Evaluation(epoch: 0, results: [MicroBatchResult(index: 0, lossSum: .nan, correct: 9, samples: 1)])),
            .weights(Weights(values: FloatPayload(copying: [1, 2, 3]))),
            .assign(Assignment(kind: .train, epoch: 0, totalMicroBatches: 8, microBatches: [MicroBatch(index: 1, samples: [1, 2])])),
            .welcome(Welcome(workerID: 1, configText: "model: x", parameterCount: 3, heartbeatIntervalMilliseconds: 1, workerTimeoutMilliseconds: 1)),
            .bye(Bye(reason: "x")),
            .error(WireFailure(code: 1, text: "x")),
        ]
        return messages.map { WireCodec.encodeToBytes(Envelope(runID: runID, step: step, message: $0)) }
    }

    /// Whether the message was sent.
    @discardableResult
    private mutating func send(_ socket: ZMQSocket, _ frames: [[UInt8]], _ kind: String) -> Bool {
        guard !frames.isEmpty else { return false }
        do {
            try socket.send(frames.map { OutgoingFrame.bytes($0) })
            sent += 1
            counts[kind, default: 0] += 1
            return true
        } catch {
            // A full queue: the coordinator is not reading fast enough, which is its right.
            return false
        }
    }

    @discardableResult
    private mutating func send(_ socket: ZMQSocket, _ envelope: Envelope, _ kind: String) -> Bool {
        send(socket, WireCodec.encodeToBytes(envelope), kind)
    }

    private mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }

    /// Sends as much as fits in `seconds`.
    mutating func fire(for seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        var round = 0
        if !sentMillionFrames {
            // libzmq hands a message over only whole and limits the size of each frame, not their
            // number: the coordinator holds all of it until it reads (and drops) the frames.
            sentMillionFrames = send(frames, [[UInt8]](repeating: [], count: 1_000_000), "million-frames")
        }
        while Date() < deadline {
            round += 1
            listen(impostor, "impostor")
            listen(byzantine, "byzantine")
            send(flood, mutated(seeds[int(0...(seeds.count - 1))]), "mutated")
            send(flood, (0..<int(0...4)).map { _ in (0..<int(0...60)).map { _ in UInt8.random(in: 0...255, using: &random) } }, "random")
            send(flood, damagedHeader(seeds[int(0...(seeds.count - 1))]), "bad-header")
            if round % 4 == 0 { send(hellos, Self.hello("hello-flood"), "hello") }
            if round % 8 == 0 { impersonate() }
        }
    }

    /// Reads what the coordinator tells `socket`; answers assignments with NaN.
    private mutating func listen(_ socket: ZMQSocket, _ name: String) {
        if !joined.contains(name) {
            joined.insert(name)
            send(socket, Self.hello(name), "hello")
        }
        var assignments: [(step: UInt64, assignment: Assignment)] = []
        while let frames = try? socket.receive(timeoutMilliseconds: 0) {
            guard let envelope = try? WireCodec.decode(frames) else { continue }
            switch envelope.message {
            case .welcome(let welcome):
                runID = envelope.runID
                parameterCount = welcome.parameterCount
                seeds = Self.validMessages(runID: runID, step: envelope.step, parameterCount: parameterCount)
            case .assign(let assignment) where envelope.runID == runID:
                step = envelope.step
                assignments.append((envelope.step, assignment))
            case .weights:
                step = envelope.step
            case .bye, .error:
                // Evicted or told off: try again under the same name.
                send(socket, Self.hello(name), "hello")
            default:
                break
            }
        }
        for (assignedStep, assignment) in assignments {
            let batches = assignment.microBatches
            let results = batches.map { MicroBatchResult(index: UInt32($0.index), lossSum: 0.5, correct: 0, samples: UInt32($0.samples.count)) }
            // Well-formed results of the other kind than the task's: to be ignored as late. Taken,
            // an evaluation would leave the step's gradients incomplete, and the run would stop.
            let nodes = batches.map { TreeNode(level: 0, index: $0.index) }
            let otherKind: Message = assignment.kind == .train
                ? .evaluation(Evaluation(epoch: assignment.epoch, results: results))
                : .gradients(Gradients(epoch: assignment.epoch, results: results, nodes: nodes,
                                       tensors: batches.map { _ in FloatPayload(count: parameterCount) { $0.update(repeating: 1) } }))
            send(socket, Envelope(runID: runID, step: assignedStep, message: otherKind), "other-kind")
            if assignment.kind == .train {
                let tensors = batches.map { _ in FloatPayload(count: parameterCount) { $0.update(repeating: .nan) } }
                let delivered = send(socket, Envelope(runID: runID, step: assignedStep, message: .gradients(Gradients(
                    epoch: assignment.epoch, results: results, nodes: nodes, tensors: tensors))), "nan-gradients")
                if name == "impostor" && delivered {
                    if spentByImpostor.step != assignedStep { spentByImpostor = (assignedStep, []) }
                    spentByImpostor.indices += batches.map(\.index)
                }
            } else {
                // Evaluation results that claim more correct answers than samples.
                let lies = results.map { MicroBatchResult(index: $0.index, lossSum: 0, correct: $0.samples + 1, samples: $0.samples) }
                send(socket, Envelope(runID: runID, step: assignedStep, message: .evaluation(Evaluation(
                    epoch: assignment.epoch, results: lies))), "false-scores")
            }
        }
    }

    /// Plausible messages that must be refused: hello, then gradients for another run, a stale
    /// or future step, and micro-batches never assigned; heartbeats for another run.
    private mutating func impersonate() {
        guard runID != 0 else { return }
        let finite = FloatPayload(count: parameterCount) { $0.update(repeating: 1) }
        let gradient = Message.gradients(Gradients(epoch: 0, results: [MicroBatchResult(index: 3, lossSum: 1, correct: 1, samples: 4)],
                                                   nodes: [TreeNode(level: 0, index: 3)], tensors: [finite]))
        send(impostor, Envelope(runID: runID &+ 1, step: step, message: gradient), "other-run")
        send(impostor, Envelope(runID: runID, step: step &+ UInt64(int(1...3)), message: gradient), "future-step")
        send(impostor, Envelope(runID: runID, step: step &- UInt64(int(1...3)), message: gradient), "stale-step")
        if spentByImpostor.step == step, let spent = spentByImpostor.indices.first {
            let retry = Message.gradients(Gradients(
                epoch: 0, results: [MicroBatchResult(index: UInt32(spent), lossSum: 1, correct: 1, samples: 4)],
                nodes: [TreeNode(level: 0, index: spent)], tensors: [finite]))
            send(impostor, Envelope(runID: runID, step: step, message: retry), "unassigned")
        }
        send(impostor, Envelope(runID: runID ^ 0xFFFF, step: step, message: .heartbeat(Heartbeat(sentAtMilliseconds: 1, busy: true))), "other-run")
        if int(0...9) == 0 { send(impostor, Self.hello("impostor"), "hello") }
    }

    /// A valid message with a few bytes changed (and sometimes resealed, so the change reaches
    /// the field checks rather than failing the checksum).
    private mutating func mutated(_ original: [[UInt8]]) -> [[UInt8]] {
        var frames = original
        for _ in 0..<int(1...4) {
            let which = int(0...(frames.count - 1))
            switch int(0...3) {
            case 0 where !frames[which].isEmpty:
                frames[which][int(0...(frames[which].count - 1))] ^= UInt8(1) << UInt8(int(0...7))
            case 1 where !frames[which].isEmpty:
                frames[which].removeLast(int(1...frames[which].count))
            case 2 where frames[which].count >= 4:
                let offset = int(0...(frames[which].count - 4))
                frames[which].replaceSubrange(offset..<offset + 4, with: [0xFF, 0xFF, 0xFF, 0x7F])
            default:
                frames.append(frames[which])
            }
        }
        if frames.count >= 2, frames[0].count == 40, int(0...1) == 0 {
            let meta = frames[1]
            withUnsafeBytes(of: UInt32(truncatingIfNeeded: meta.count).littleEndian) { frames[0].replaceSubrange(24..<28, with: $0) }
            withUnsafeBytes(of: WireCodec.checksum(meta).littleEndian) { frames[0].replaceSubrange(32..<40, with: $0) }
        }
        return frames
    }

    /// Wrong versions, magic, types, announced lengths and counts.
    private mutating func damagedHeader(_ original: [[UInt8]]) -> [[UInt8]] {
        var frames = original
        switch int(0...4) {
        case 0: frames[0][4] = UInt8(int(2...255))
        case 1: frames[0][0] ^= 0x20
        case 2: frames[0][6] = UInt8(int(9...255))
        case 3: frames[0].replaceSubrange(24..<28, with: [0xFF, 0xFF, 0xFF, 0xFF])
        default: frames[0].replaceSubrange(28..<32, with: [0xFF, 0xFF, 0, 0])
        }
        return frames
    }
}

/// The coordinator did not say where it listens.
struct EndpointMissing: Error, CustomStringConvertible {
    var description: String
}

/// SplitMix64, so a failing flood can be replayed.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
