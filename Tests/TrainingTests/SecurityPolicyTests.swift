import CNN
import Foundation
import PeerSecurity
import Training
import Wire
import XCTest

/// Where a coordinator may listen, per-peer limits, and the non-finite gradient policy.
final class SecurityPolicyTests: XCTestCase {
    private func assertContains(_ text: String, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        for part in parts { XCTAssertTrue(text.contains(part), "'\(part)' missing from: \(text)", file: file, line: line) }
    }

    // MARK: Bind policy

    func testLoopbackIpcAndInprocAreLocalAndEverythingElseIsNot() {
        let local = ["tcp://127.0.0.1:5555", "tcp://127.8.9.10:0", "tcp://localhost:*", "tcp://LOCALHOST:5555", "tcp://[::1]:5555",
                     "tcp://lo:5555", "tcp://[::ffff:127.0.0.1]:5555", "ipc:///tmp/cnn.sock", "inproc://coordinator"]
        let remote = ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.1:5555", "tcp://eth0:5555", "tcp://node03:5555",
                      "tcp://128.0.0.1:5555", "tcp://127.0.0.1.example.com:5555", "tcp://[::]:5555", "tcp://127.0.0:5555",
                      "udp://127.0.0.1:5555", "garbage"]
        for endpoint in local { XCTAssertTrue(BindPolicy.isLocal(endpoint), endpoint) }
        for endpoint in remote { XCTAssertFalse(BindPolicy.isLocal(endpoint), endpoint) }
    }

    func testWithoutKeysOnlyLocalAddressesMayBeBoundUnlessInsecureBindIsGiven() throws {
        let local = try BindPolicy.check(endpoint: "tcp://127.0.0.1:0", secured: false, insecureBind: false)
        XCTAssertFalse(local.isWarning)
        assertContains(local.message, ["no CURVE keys", "this host only", "--curve-secret-key"])
        XCTAssertThrowsError(try BindPolicy.check(endpoint: "tcp://0.0.0.0:5555", secured: false, insecureBind: false)) { error in
            XCTAssertTrue(error is SecurityError, "\(type(of: error))")
            assertContains("\(error)", ["tcp://0.0.0.0:5555", "without CURVE keys", "cnn keygen", "--curve-secret-key",
                                        "--authorized-keys", "--insecure-bind"])
        }
        let insecure = try BindPolicy.check(endpoint: "tcp://0.0.0.0:5555", secured: false, insecureBind: true)
        XCTAssertTrue(insecure.isWarning)
        assertContains(insecure.message, ["--insecure-bind", "without encryption or authentication"])
        let secured = try BindPolicy.check(endpoint: "tcp://*:5555", secured: true, insecureBind: false)
        XCTAssertFalse(secured.isWarning)
        assertContains(secured.message, ["CURVE"])
    }

    func testMalformedEndpointsAreRefusedNamingTheOptionAndTheForm() {
        let forBinding = ["notanendpoint", "tcp://127.0.0.1", "tcp://127.0.0.1:99999", "tcp://127.0.0.1:port", "tcp://:5555",
                          "udp://127.0.0.1:5555", "ipc://", "inproc://", "://x"]
        for endpoint in forBinding {
            XCTAssertThrowsError(try BindPolicy.validate(endpoint: endpoint, option: "--bind", forBinding: true), endpoint) { error in
                assertContains("\(error)", ["--bind '\(endpoint)'", "an address looks like tcp://"])
            }
        }
        for endpoint in ["tcp://*:5555", "tcp://node03:0", "tcp://node03:*"] {
            XCTAssertNoThrow(try BindPolicy.validate(endpoint: endpoint, option: "--bind", forBinding: true), endpoint)
            XCTAssertThrowsError(try BindPolicy.validate(endpoint: endpoint, option: "--connect", forBinding: false), endpoint) { error in
                assertContains("\(error)", ["--connect '\(endpoint)'"])
            }
        }
        XCTAssertNoThrow(try BindPolicy.validate(endpoint: "tcp://10.0.0.2;node03:5555", option: "--connect", forBinding: false))
    }

    func testAPortInUseBecomesAUsageErrorNamingTheFix() throws {
        let context = try ZMQContext()
        defer { context.close() }
        let first = try ZMQSocket(context: context, kind: .router)
        defer { first.close() }
        let endpoint = try first.bind("tcp://127.0.0.1:0")
        let second = try ZMQSocket(context: context, kind: .router)
        defer { second.close() }
        XCTAssertThrowsError(try second.bind(endpoint)) { error in
            let usage = BindPolicy.bindFailure(endpoint: endpoint, error: error)
            assertContains(usage.description, [endpoint, "already in use", "--bind", "port 0"])
        }
    }

    // MARK: Per-peer limits

    private func limits(rate: Double = 100, strikes: Int = 5, ban: Double = 10) -> PeerLimits {
        PeerLimits(maxMessagesPerSecond: rate, maxStrikes: strikes, banSeconds: ban)
    }

    func testAPeerOverItsMessageRateIsEvictedThenIgnoredUntilItsBanEnds() {
        let guardian = PeerGuard(config: limits(rate: 100, ban: 10))
        let peer = PeerID(bytes: Array("rogue".utf8))
        let burst = limits(rate: 100).messageBurst
        XCTAssertEqual(burst, 200)
        for index in 0..<burst { XCTAssertEqual(guardian.admit(peer, now: 0), .accept, "message \(index)") }
        guard case .evict(let reason) = guardian.admit(peer, now: 0) else { return XCTFail("the burst is spent: expected an eviction") }
        assertContains(reason, ["more than 100 messages per second", "distributed.max_messages_per_second", "10 s"])
        XCTAssertEqual(guardian.admit(peer, now: 5), .ignore)
        XCTAssertTrue(guardian.isBanned(peer, now: 9.9))
        XCTAssertEqual(guardian.admit(peer, now: 10.5), .accept, "the ban ends")
        // Others are not affected, and a steady rate under the limit is never cut.
        let honest = PeerID(bytes: Array("honest".utf8))
        for tick in 0..<5000 { XCTAssertEqual(guardian.admit(honest, now: Double(tick) * 0.011), .accept) }
    }

    func testStrikesEvictAfterTheLimitAndOnlyTheFirstFewAreLoggedOrAnswered() {
        let guardian = PeerGuard(config: limits(strikes: 5, ban: 30))
        let peer = PeerID(bytes: [7, 7])
        var outcomes: [PeerGuard.StrikeOutcome] = []
        for index in 0..<4 { outcomes.append(guardian.strike(peer, reason: "malformed \(index)", now: Double(index))) }
        XCTAssertEqual(outcomes.map(\.verdict), Array(repeating: .accept, count: 4))
        XCTAssertEqual(outcomes.map(\.shouldLog), [true, true, true, false])
        XCTAssertEqual(outcomes.map(\.shouldReply), [true, true, true, false])
        let fifth = guardian.strike(peer, reason: "bad magic", now: 4)
        guard case .evict(let reason) = fifth.verdict else { return XCTFail("expected an eviction, got \(fifth)") }
        assertContains(reason, ["5 bad messages", "max_strikes", "bad magic"])
        XCTAssertEqual(guardian.admit(peer, now: 5), .ignore)
        // A peer that stops reading is banned without strikes.
        let deaf = PeerID(bytes: [9])
        XCTAssertEqual(guardian.admit(deaf, now: 0), .accept)
        guardian.ban(deaf, now: 1)
        XCTAssertEqual(guardian.admit(deaf, now: 2), .ignore)
        XCTAssertEqual(guardian.admit(deaf, now: 32), .accept)
        // Strikes older than the window are forgotten.
        let slow = PeerID(bytes: [8])
        for minute in 0..<20 { XCTAssertEqual(guardian.strike(slow, reason: "x", now: Double(minute) * 61).verdict, .accept) }
    }

    func testMisdirectedMessagesAreAnsweredOnlyAtFirstAndNeverEvictButStrikesStillDo() {
        let guardian = PeerGuard(config: limits(strikes: 5, ban: 30))
        let peer = PeerID(bytes: [6])
        let outcomes = (0..<250).map { guardian.misdirected(peer, now: Double($0) / 100) }
        XCTAssertTrue(outcomes.allSatisfy { $0.verdict == .accept }, "a misdirected message never evicts")
        XCTAssertEqual(outcomes.prefix(4).map(\.shouldReply), [true, true, true, false])
        XCTAssertEqual(outcomes.indices.filter { outcomes[$0].shouldLog }, [0, 1, 2, 99, 199], "the first few, then every 100th")
        XCTAssertEqual(guardian.admit(peer, now: 3), .accept)
        // They do not hide real offences: five strikes still evict.
        for index in 0..<4 { XCTAssertEqual(guardian.strike(peer, reason: "malformed", now: 3 + Double(index)).verdict, .accept) }
        guard case .evict = guardian.strike(peer, reason: "malformed", now: 8).verdict else { return XCTFail("five strikes must evict") }
        XCTAssertEqual(guardian.misdirected(peer, now: 9).verdict, .ignore, "a banned peer stays banned")
    }

    func testTheGuardRemembersABoundedNumberOfPeersAndKeepsBans() {
        let guardian = PeerGuard(config: limits(strikes: 1, ban: 1000), maximumTrackedPeers: 100)
        let banned = PeerID(bytes: Array("banned".utf8))
        guard case .evict = guardian.strike(banned, reason: "x", now: 0).verdict else { return XCTFail("one strike is the limit here") }
        for index in 0..<10_000 {
            _ = guardian.admit(PeerID(bytes: withUnsafeBytes(of: UInt32(index + 1).bigEndian) { Array($0) }), now: Double(index) * 0.001)
        }
        XCTAssertLessThanOrEqual(guardian.trackedPeers, 100)
        XCTAssertEqual(guardian.admit(banned, now: 20), .ignore, "a flood of new peers must not wash out a ban")
    }

    // MARK: Non-finite gradients

    private func network() throws -> Network {
        try Network(ModelSpec(input: FeatureShape(channels: 1, height: 6, width: 6), layers: [
            .convolution(ConvolutionSpec(filters: 2, kernel: 3)), .relu, .flatten, .dense(units: 4, bias: true),
        ]))
    }

    func testTheFirstNonFiniteValueIsLocatedByTensorNameAndCoordinates() throws {
        let network = try network()
        XCTAssertEqual(network.parameterSlots.map(\.name), ["0.weight", "0.bias", "3.weight", "3.bias"])
        var values = [Float](repeating: 0.5, count: network.parameterCount)
        XCTAssertNil(values.withUnsafeBufferPointer { NonFiniteFinding.locate(in: $0, network: network) })
        let dense = network.parameterSlots[2]
        XCTAssertEqual(dense.shape, [4, 32])
        values[dense.offset + 32 * 2 + 5] = .nan
        values[dense.offset + 40 * 2] = .infinity
        values[network.parameterCount - 1] = -.infinity
        let finding = try XCTUnwrap(values.withUnsafeBufferPointer { NonFiniteFinding.locate(in: $0, network: network) })
        XCTAssertEqual(finding.tensorName, "3.weight")
        XCTAssertEqual(finding.index, 69)
        XCTAssertEqual(finding.flatIndex, dense.offset + 69)
        XCTAssertEqual(finding.count, 3)
        XCTAssertFalse(finding.isState)
        XCTAssertEqual(finding.description, "NaN at 3.weight[2, 5] (3 non-finite values in all)")
        values[1] = -.infinity
        let first = try XCTUnwrap(values.withUnsafeBufferPointer { NonFiniteFinding.locate(in: $0, network: network) })
        XCTAssertEqual(first.description, "-Inf at 0.weight[0, 0, 0, 1] (4 non-finite values in all)")
    }

    /// The branch-free scan must agree with `isFinite` on every class of value, wherever in the
    /// buffer it lies (the vectorised loop has a body and a remainder).
    func testTheNonFiniteScanFindsEveryInfinityAndNaNAndNothingElse() {
        let finite: [Float] = [0, -0.0, 1, -1, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
                               .leastNonzeroMagnitude, -.leastNormalMagnitude, Float(bitPattern: 0x7F7F_FFFF)]
        let nonFinite: [Float] = [.infinity, -.infinity, .nan, -.nan, .signalingNaN, Float(bitPattern: 0x7FFF_FFFF),
                                  Float(bitPattern: 0xFF80_0001)]
        for count in [1, 7, 8, 16, 33, 1000] {
            var values = (0..<count).map { finite[$0 % finite.count] }
            XCTAssertFalse(values.withUnsafeBufferPointer(NonFiniteFinding.containsNonFinite), "\(count) finite values")
            for position in Set([0, count / 2, count - 1]) {
                for bad in nonFinite {
                    let kept = values[position]
                    values[position] = bad
                    XCTAssertTrue(values.withUnsafeBufferPointer(NonFiniteFinding.containsNonFinite),
                                  "\(bad) (bits \(String(bad.bitPattern, radix: 16))) at \(position) of \(count)")
                    values[position] = kept
                }
            }
        }
        XCTAssertFalse([Float]().withUnsafeBufferPointer(NonFiniteFinding.containsNonFinite))
    }

    private func finding() -> NonFiniteFinding {
        NonFiniteFinding(tensorName: "0.weight", isState: false, shape: [2, 1, 3, 3], index: 4, flatIndex: 4, value: .nan, count: 1)
    }

    func testStopPolicyReportsWorkerStepAndLayer() {
        let guardian = NonFiniteGuard(policy: .stop)
        guard case .stop(let report) = guardian.record(step: 42, microBatches: [5, 4], workerID: 1, workerLabel: "w1 (node03-77)",
                                                       finding: finding().description, aliveWorkerIDs: [0, 1]) else {
            return XCTFail("the stop policy must stop")
        }
        assertContains(report, ["step 42", "w1 (node03-77)", "NaN at 0.weight[0, 0, 1, 1]", "micro-batches [4, 5]",
                                "distributed.nonfinite_gradients", "not updated"])
    }

    func testRecomputePolicyMovesWorkAwayAndStopsOnlyWhenEveryLiveWorkerFailed() {
        let guardian = NonFiniteGuard(policy: .recompute)
        guard case .recompute(let line) = guardian.record(step: 3, microBatches: [2], workerID: 7, workerLabel: "w7 (rogue)",
                                                          finding: finding().description, aliveWorkerIDs: [0, 1, 7]) else {
            return XCTFail("one bad worker among several is recomputed, not fatal")
        }
        assertContains(line, ["step 3", "w7 (rogue)", "another worker"])
        XCTAssertEqual(guardian.excludedWorkers(step: 3, microBatch: 2), [7])
        XCTAssertEqual(guardian.excludedWorkers(step: 3, microBatch: 1), [])
        guard case .recompute = guardian.record(step: 3, microBatches: [2], workerID: 0, workerLabel: "w0", finding: finding().description,
                                                aliveWorkerIDs: [0, 1, 7]) else { return XCTFail("w1 has not tried yet") }
        guard case .stop(let report) = guardian.record(step: 3, microBatches: [2], workerID: 1, workerLabel: "w1", finding: finding().description,
                                                       aliveWorkerIDs: [0, 1, 7]) else {
            return XCTFail("every live worker failed micro-batch 2: the model diverged")
        }
        assertContains(report, ["micro-batch 2", "w7 (rogue), w0, w1", "diverged", "train.optimizer.lr"])
        // A new step starts clean.
        guardian.reset(step: 4)
        XCTAssertEqual(guardian.excludedWorkers(step: 4, microBatch: 2), [])
    }
}
