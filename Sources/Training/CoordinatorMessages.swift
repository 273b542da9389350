import AllReduce
import CNN
import Logging
import PeerSecurity
import Wire

/// The coordinator's side of the conversation with its workers: what comes in is policed
/// (`PeerGuard`), checked (`ResultCheck`) and turned into scheduler events; what the scheduler
/// decides goes out as messages.
extension Coordinator {
    // MARK: Incoming

    /// Receives and handles messages for up to `timeout` seconds, or until none is waiting. A
    /// flood of messages cannot hold the loop longer: timeouts, backup copies and heartbeats come
    /// round between two calls.
    func pump(timeout: Double) throws {
        link.logNewRefusals(logger)
        let deadline = monotonicSeconds() + timeout
        var wait = Int(timeout * 1000)
        while let incoming = try transport.receive(timeoutMilliseconds: wait) {
            handle(incoming)
            guard monotonicSeconds() < deadline else { return }
            wait = 0
        }
    }

    private func handle(_ incoming: Incoming) {
        guard let peer = incoming.peer else { return }
        switch peerGuard.admit(peer, now: monotonicSeconds()) {
        case .accept: break
        case .ignore: return
        case .evict(let reason): return evict(peer, reason: reason)
        }
        let envelope: Envelope
        switch incoming.result {
        case .failure(let error):
            return offence(peer, "a malformed message: \(error)", code: 400)
        case .success(let decoded):
            envelope = decoded
        }
        if case .hello(let hello) = envelope.message {
            return admit(peer: peer, hello: hello)
        }
        guard envelope.runID == runID else {
            // Most often a worker of this coordinator's previous life (killed and resumed): told
            // so, it sends hello again.
            return misdirected(peer, "a \(envelope.message.typeName) message of run \(String(envelope.runID, radix: 16)), not of this coordinator's run \(String(runID, radix: 16)) (a coordinator restarted, or a worker of another run): send hello to join", code: 409,
                               fromRun: envelope.runID)
        }
        guard let worker = pool[peer] else {
            if pool.wasGivenUp(peer, at: monotonicSeconds()) {
                // This coordinator's own decision, not the peer's fault: no strike, so that a
                // worker stopped or cut off past the timeout several times a minute is not banned.
                return reply(peer, code: 401, text: "this coordinator gave up on this worker (silent too long, or unreachable); send hello to join again")
            }
            // Most often a worker given up on that has reconnected since: its new connection is
            // a peer this coordinator never saw.
            return misdirected(peer, "a \(envelope.message.typeName) message from an unknown worker; send hello first", code: 401)
        }
        worker.heardSinceWelcome = true
        worker.lastHeard = monotonicSeconds()
        apply(scheduler.handle(.heard(worker: worker.id), at: monotonicSeconds()))
        switch envelope.message {
        case .gradients(let gradients):
            receive(.train, epoch: gradients.epoch, timings: gradients.timings, step: envelope.step, from: worker) { task throws(ResultRefusal) in
                try ResultCheck.check(gradients, work: task.work, network: state.network,
                                      encoding: config.tensorEncoding(gradientCount: state.parameterCount))
            }
        case .evaluation(let evaluation):
            receive(.evaluate, epoch: evaluation.epoch, timings: evaluation.timings, step: envelope.step, from: worker) { task throws(ResultRefusal) in
                try ResultCheck.check(evaluation, work: task.work)
            }
        case .computed(let computed):
            receive(.train, epoch: computed.epoch, timings: computed.timings, streamedSeconds: computed.streamedSeconds, step: envelope.step, from: worker) { task throws(ResultRefusal) in
                try ResultCheck.check(computed, work: task.work)
            }
        case .listening(let listening):
            receiveListening(listening, from: worker)
        case .stepDone(let done):
            receiveStepDone(done, step: envelope.step, from: worker)
        case .planAdopted(let adopted):
            receivePlanAdopted(adopted, from: worker)
        case .blockSums(let sums):
            receiveBlockSums(sums, step: envelope.step, from: worker)
        case .sliceState(let slice):
            receiveGathered(slice, from: worker)
        case .error(let failure) where failure.code == SampleFailure.code:
            // Every worker would meet the same file: stop now, naming it, rather than lose them one by one.
            stopError = RunStopped(reason: "worker \(worker.label) could not make a sample: \(PeerText.printable(failure.text, limit: 600))")
        case .error(let failure) where failure.code == 470 && sharding != nil:
            stopError = RunStopped(reason: "worker \(worker.label): \(PeerText.printable(failure.text))")
        case .bye(let bye):
            logger.info("worker \(worker.label) left: \(PeerText.printable(bye.reason))")
            lose(worker, reason: "it said goodbye")
        case .error(let failure):
            logger.warning("worker \(worker.label) reported error \(failure.code): \(PeerText.printable(failure.text))")
            lose(worker, reason: "it reported an error")
        case .heartbeat:
            break
        default:
            logger.warning("unexpected \(envelope.message.typeName) from worker \(worker.label); ignored")
        }
    }

    /// Results of a worker for a `kind` task: ignored as late unless they answer the task in
    /// progress (training results a training task, evaluation results an evaluation), then checked
    /// (`check`) against the task and the model and handed to the scheduler, which says whether
    /// (and which of) them to take.
    private func receive(_ kind: TaskKind, epoch: UInt32, timings: WorkerTimings, streamedSeconds: Double = 0, step: UInt64, from worker: WorkerRecord,
                         check: (Task) throws(ResultRefusal) -> CheckedResults) {
        guard let task, step == UInt64(task.step), kind == task.kind, UInt64(epoch) == UInt64(task.epoch) else {
            logger.debug("ignored late \(kind) results of step \(step) from \(worker.label)")
            return
        }
        let checked: CheckedResults
        do {
            checked = try check(task)
        } catch {
            return apply([.refuse(worker: worker.id, reason: error.reason)]
                + scheduler.handle(.left(worker: worker.id, reason: "it sent invalid results"), at: monotonicSeconds()))
        }
        let now = monotonicSeconds()
        let decisions: [StepScheduler.Decision]
        if let finding = checked.nonFinite {
            // Everything in the message goes elsewhere at once, not only the bad part: the rest
            // would otherwise wait for the straggler rule or the worker's timeout.
            decisions = scheduler.handle(.nonFinite(worker: worker.id, microBatches: checked.microBatches, finding: finding), at: now)
        } else {
            decisions = scheduler.handle(.results(worker: worker.id, microBatches: checked.microBatches), at: now)
            if !decisions.contains(where: { if case .refuse = $0 { return true } else { return false } }) {
                let accepted = decisions.reduce(into: [Int]()) { if case .accept(_, let batches) = $1 { $0 += batches } }
                do {
                    try take(checked, of: accepted, from: worker, timings: timings, streamedSeconds: streamedSeconds)
                } catch {
                    stopError = CoordinatorError(description: "step \(task.step): the reduction refused checked results of \(worker.label): \(error)")
                }
            }
        }
        apply(decisions)
    }

    private func admit(peer: PeerID, hello: Hello) {
        // Everything a peer names itself is shown escaped and cut: one hello, one log line.
        let name = PeerText.printable(hello.name, limit: 64)
        let host = PeerText.printable(hello.hostName, limit: 64)
        let kernel = PeerText.printable(hello.coreType, limit: 64)
        if pool[peer] == nil && pool.count >= config.distributed.maxWorkers {
            if let heldBack = turnedAway.shouldSay(now: monotonicSeconds()) {
                let more = heldBack > 0 ? " (and \(heldBack) more hellos turned away since the last such line)" : ""
                logger.warning("turned away worker \(name) from \(host): already \(pool.count) workers (distributed.max_workers)\(more)")
            }
            reply(peer, code: 503, text: "the coordinator has its maximum of \(config.distributed.maxWorkers) workers")
            return
        }
        if let existing = pool[peer], !existing.heardSinceWelcome, let welcome = existing.welcome {
            // A hello queued behind the first (sent before this coordinator listened): the same
            // connection, nothing else said yet. One worker, one id: the same welcome again. Still
            // a strike, so that a peer doing nothing but say hello is evicted all the same.
            let outcome = peerGuard.strike(peer, reason: "hello again while already a worker", now: monotonicSeconds())
            if case .evict(let reason) = outcome.verdict { return evict(peer, reason: reason) }
            send(.welcome(welcome), to: existing)
            return
        }
        if let existing = pool[peer] {
            // The same connection saying hello again has restarted and its old work is lost; or
            // it makes the coordinator send it the weights again and again for a few bytes each
            // time. An honest worker does it only after hearing nothing for the worker timeout
            // (it thinks the coordinator gone), so once per timeout is free and more is an offence.
            if monotonicSeconds() - existing.joinedAt < config.distributed.workerTimeout {
                let outcome = peerGuard.strike(peer, reason: "hello again while already a worker", now: monotonicSeconds())
                if case .evict(let reason) = outcome.verdict { return evict(peer, reason: reason) }
            }
            lose(existing, reason: "it said hello again")
        }
        if pool[peer] == nil, let twin = pool.all.first(where: { $0.host == host && $0.name == name && $0.processID == hello.processID }) {
            // The same process on a new connection (it reconnected, and hellos queued on the old
            // one arrived as well): the old record speaks for nobody.
            lose(twin, reason: "it connected again")
        }
        let worker = pool.add(peer: peer, name: name, host: host, threads: hello.threads)
        worker.processID = hello.processID
        worker.lastHeard = monotonicSeconds()
        worker.joinedAt = monotonicSeconds()
        let welcome = Welcome(
            workerID: worker.id, configText: config.yaml, parameterCount: state.parameterCount,
            heartbeatIntervalMilliseconds: UInt32(config.distributed.heartbeatInterval * 1000),
            workerTimeoutMilliseconds: UInt32(config.distributed.workerTimeout * 1000))
        worker.welcome = welcome
        guard send(.welcome(welcome), to: worker) else {
            pool.remove(worker.id)
            logger.warning("could not welcome \(worker.label)")
            return
        }
        notify { $0.workerJoined(worker.status(alive: true)) }
        logger.info("worker \(worker.label) joined from \(host) (pid \(hello.processID), \(hello.threads) thread\(hello.threads == 1 ? "" : "s"), GEMM \(kernel)); \(pool.count) alive")
        if hello.coreType != BLAS.kernelName {
            // Another library or kernel rounds differently: the run stays correct, but its
            // results no longer match, bit for bit, a run on any other set of workers.
            logger.warning("""
                worker \(worker.label) multiplies with \(kernel), this coordinator with \(BLAS.kernelName): \
                its gradients can differ in the last bits; run every process with the same \(BLAS.libraryVariable) \
                (and OPENBLAS_CORETYPE) for bit-identical runs
                """)
        }
        // A sharded run's worker becomes a member at a step boundary, once it says where it listens.
        if sharding == nil { apply(scheduler.handle(.joined(worker: worker.id, name: worker.name, threads: hello.threads), at: monotonicSeconds())) }
    }

    /// A bad message from `peer`: logged and answered only the first few times, so a flood
    /// cannot fill the log or the peer's queue; too many evict it.
    func offence(_ peer: PeerID, _ what: String, code: UInt16) {
        let outcome = peerGuard.strike(peer, reason: what, now: monotonicSeconds())
        if case .evict(let reason) = outcome.verdict { return evict(peer, reason: reason) }
        tell(peer, what, code: code, outcome, repeats: "offence \(outcome.offences)")
    }

    /// Logs and answers `what` as `outcome` says (`repeats` counts them once there were several).
    private func tell(_ peer: PeerID, _ what: String, code: UInt16, _ outcome: PeerGuard.StrikeOutcome, repeats: String) {
        if outcome.shouldLog {
            let suffix = outcome.offences > 1 ? " (\(repeats); only some are logged)" : ""
            logger.warning("\(pool[peer]?.label ?? "unknown peer \(peer)") sent \(PeerText.printable(what, limit: 400))\(suffix)")
        }
        if outcome.shouldReply { reply(peer, code: code, text: what) }
    }

    /// A message that honest workers send after a fault (`PeerGuard.misdirected`): told to join,
    /// and logged, the first few times, but never held against the peer. Messages of an earlier
    /// run are logged once per run: after a restart every worker of the previous life sends
    /// some, and one line says it for all of them.
    private func misdirected(_ peer: PeerID, _ what: String, code: UInt16, fromRun earlier: UInt64? = nil) {
        var outcome = peerGuard.misdirected(peer, now: monotonicSeconds())
        if let earlier, outcome.shouldLog {
            let sender = pool[peer]?.label ?? "unknown peer \(peer)"
            if earlierRunsNamed.count < Self.earlierRunsNamedLimit && earlierRunsNamed.insert(earlier).inserted {
                logger.warning("\(sender) sent \(PeerText.printable(what, limit: 400)) (further messages of that run, from any worker, are logged only with --verbose)")
            } else {
                logger.debug("\(sender) sent \(PeerText.printable(what, limit: 400))")
            }
            outcome.shouldLog = false
        }
        tell(peer, what, code: code, outcome, repeats: "\(outcome.offences) such messages")
    }

    /// Earlier runs named in the log at most (a flood of made-up run ids stays quiet after these).
    static let earlierRunsNamedLimit = 64

    /// Drops a misbehaving peer: a worker is declared dead (its micro-batches go to others) and
    /// named; either way its messages are ignored for a while.
    private func evict(_ peer: PeerID, reason: String) {
        if let worker = pool[peer] {
            logger.warning("evicted worker \(worker.label) (\(peer)): \(reason)")
            reply(peer, code: 429, text: reason)
            lose(worker, reason: "evicted: \(reason)")
            pool.forgetGivenUp(peer)
        } else {
            logger.warning("ignoring \(peer): \(reason)")
        }
    }

    // MARK: Decisions

    /// Carries out the scheduler's decisions in order, and those that follow from them (a
    /// worker found unreachable while being given work is reported back as gone).
    func apply(_ decisions: [StepScheduler.Decision]) {
        var queue = decisions[...]
        while let decision = queue.popFirst() {
            queue += perform(decision)
        }
    }

    private func perform(_ decision: StepScheduler.Decision) -> [StepScheduler.Decision] {
        let step = task?.step ?? state.step
        switch decision {
        case .assign(let id, let microBatches):
            return give(microBatches, to: id)
        case .backup(let id, let microBatches, let straggler, let waited, let firstFinished):
            let slow = pool[straggler]?.label ?? "w\(straggler)"
            let message = "step \(step): worker \(slow) is slow: micro-batches \(microBatches) not back after "
                + "\(String(format: "%.1f", waited)) s (the first worker finished in \(String(format: "%.1f", firstFinished)) s); "
                + "backup copies go to \(pool[id]?.label ?? "w\(id)")"
            logger.warning("\(message)")
            return give(microBatches, to: id)
        case .accept, .complete:
            return []
        case .refuse(let id, let reason):
            guard let worker = pool[id] else { return [] }
            logger.warning("step \(step): refused results from worker \(worker.label): \(reason); its micro-batches go to others")
            reply(worker.peer, code: 422, text: "results refused: \(reason)")
        case .recompute(_, _, let report):
            logger.warning("\(report)")
        case .dead(let id, let reason, let reassigned):
            guard let worker = pool.remove(id) else { return [] }
            shardMemberLost(id)
            pool.rememberGivenUp(worker.peer, at: monotonicSeconds())
            notify { $0.workerLeft(worker.status(alive: false), reason: reason) }
            if reassigned.isEmpty {
                logger.info("worker \(worker.label) is gone (\(reason)); \(pool.count) alive")
            } else {
                let others = pool.all.map(\.label).joined(separator: ", ")
                let message = "step \(step): worker \(worker.label) is gone (\(reason)); its micro-batches \(reassigned) go to "
                    + (others.isEmpty ? "the next worker to join" : others)
                logger.warning("\(message)")
            }
        case .waitingForWorkers:
            logger.warning("step \(step): no workers alive; waiting up to \(Int(config.distributed.joinTimeout)) s for one to join")
        case .stop(.diverged(let report)):
            stopError = RunStopped(reason: report)
        case .stop(.noWorkers(let seconds)):
            stopError = CoordinatorError(
                description: "step \(step): no worker has been alive for \(Int(seconds)) s; the last checkpoint is in "
                    + "\(options.runDirectory)/checkpoints. Start workers with `cnn-worker --connect \(connectAddress)`, then resume with --resume")
        }
        return []
    }

    /// Sends the weights the worker lacks and an assignment of `microBatches` of the task.
    private func give(_ microBatches: [Int], to id: UInt32) -> [StepScheduler.Decision] {
        guard let task, let worker = pool[id] else { return [] }
        if worker.weightsVersion != state.step && sharding == nil {
            let start = monotonicSeconds()
            guard send(.weights(Weights(values: currentWeights())), to: worker) else { return gone(worker) }
            worker.weightsVersion = state.step
            phases.append(PhaseTiming(name: "broadcast", workerID: worker.id, start: start, duration: monotonicSeconds() - start))
        }
        let assignment = Assignment(
            kind: task.kind, epoch: UInt32(task.epoch), totalMicroBatches: UInt32(task.work.count),
            microBatches: microBatches.map { task.work[$0] })
        return send(.assign(assignment), to: worker) ? [] : gone(worker)
    }

    // MARK: Outgoing

    /// Sends `message`; false when the worker cannot be reached (then it must be declared gone).
    @discardableResult
    func send(_ message: Message, to worker: WorkerRecord) -> Bool {
        do {
            try transport.send(Envelope(runID: runID, step: UInt64(state.step), message: message), to: worker.peer)
            worker.lastSent = monotonicSeconds()
            return true
        } catch {
            // Unroutable: the worker's connection is gone. A full queue means it does not read
            // what it is sent: ignore it for a while too.
            if (error as? ZMQError)?.isWouldBlock == true { peerGuard.ban(worker.peer, now: monotonicSeconds()) }
            logger.warning("step \(state.step): cannot reach worker \(worker.label): \(error)")
            return false
        }
    }

    func gone(_ worker: WorkerRecord) -> [StepScheduler.Decision] {
        let reason = "its connection is gone"
        let decisions = scheduler.handle(.left(worker: worker.id, reason: reason), at: monotonicSeconds())
        return decisions.isEmpty && pool.worker(id: worker.id) != nil ? [.dead(worker: worker.id, reason: reason, reassigned: [])] : decisions
    }

    /// Declares `worker` gone now and carries out what follows (also for a worker the
    /// scheduler never had: a sharded run's worker that was not yet a member).
    func lose(_ worker: WorkerRecord, reason: String) {
        let decisions = scheduler.handle(.left(worker: worker.id, reason: reason), at: monotonicSeconds())
        apply(decisions.isEmpty && pool.worker(id: worker.id) != nil ? [.dead(worker: worker.id, reason: reason, reassigned: [])] : decisions)
    }

    private func reply(_ peer: PeerID, code: UInt16, text: String) {
        try? transport.send(Envelope(runID: runID, step: UInt64(state.step), message: .error(WireFailure(code: code, text: text))), to: peer)
    }

    /// Gives up on workers the scheduler does not watch (a sharded run's workers between their
    /// welcome and the plan in force that gives them work) once they are silent for the worker
    /// timeout: a plan waiting for such a worker to adopt it would wait for ever.
    func expireSilentWorkersOutsideTheScheduler() {
        let now = monotonicSeconds()
        for worker in pool.all where scheduler[worker.id] == nil && now - worker.lastHeard > config.distributed.workerTimeout {
            lose(worker, reason: "silent for more than distributed.worker_timeout before it had work")
        }
    }

    func sendHeartbeats() {
        let now = monotonicSeconds()
        for worker in pool.all where now - worker.lastSent > config.distributed.heartbeatInterval {
            if !send(.heartbeat(Heartbeat(sentAtMilliseconds: UInt64(now * 1000), busy: false)), to: worker) {
                apply(gone(worker))
            }
        }
    }

    func sayGoodbye(reason: String) {
        for worker in pool.all {
            send(.bye(Bye(reason: reason)), to: worker)
        }
    }
}
