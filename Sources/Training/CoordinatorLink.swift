import Foundation
import Logging
import PeerSecurity
import Wire

/// The coordinator's side of the network: a transport, the address it listens on, and what the
/// ZeroMQ transport brings with it (the context, the CURVE handler, keys made for spawned
/// workers), released together.
final class CoordinatorLink {
    let transport: MessageTransport
    let endpoint: String
    /// Arguments spawned workers need to pass this link's security (their keys).
    let localWorkerArguments: [String]
    /// The public key of the spawned workers' keys, if any (they are on the allow-list).
    var localWorkerPublicKey: String? { localCredentials?.publicKey }
    private let context: ZMQContext?
    private let socket: ZMQSocket?
    private let gate: CurveGate?
    private let localCredentials: LocalWorkerCredentials?

    /// A link over `transport` that needs no set-up (in-memory, for tests).
    init(transport: MessageTransport, endpoint: String) {
        self.transport = transport
        self.endpoint = endpoint
        localWorkerArguments = []
        context = nil
        socket = nil
        gate = nil
        localCredentials = nil
    }

    /// Binds a ROUTER socket where `options.bind` says (`bindDecision` is what the bind policy said of it), with CURVE
    /// when keys are given. `maxMessageBytes` and `limits` bound what peers may send.
    init(options: CoordinatorOptions, bindDecision: BindDecision, maxMessageBytes: Int, limits: DecodeLimits, logger: Logger) throws {
        let context = try ZMQContext()
        let router = try ZMQSocket(context: context, kind: .router)
        try router.setLinger(milliseconds: 2000)
        try router.setRouterMandatory(true)
        // A peer that does not read its socket must not block the coordinator: a send to a full
        // queue fails after this long and the peer is treated as gone.
        try router.setSendTimeout(milliseconds: 250)
        var security = options.security
        var credentials: LocalWorkerCredentials?
        if let base = security, options.spawnWorkers > 0 { (security, credentials) = try base.addingLocalWorkerCredentials() }
        let gate = try security?.apply(to: router, context: context)
        // libzmq drops anything larger before it is buffered.
        try router.setMaxMessageSize(bytes: maxMessageBytes)
        do {
            endpoint = try router.bind(options.bind)
        } catch {
            // The ZAP handler's socket lives in the context, which cannot close while it runs.
            gate?.stop()
            credentials?.remove()
            router.close()
            context.close()
            throw BindPolicy.bindFailure(endpoint: options.bind, error: error)
        }
        transport = MessageSocket(socket: router, limits: limits)
        self.context = context
        socket = router
        self.gate = gate
        localCredentials = credentials
        localWorkerArguments = credentials?.workerArguments ?? []
        if bindDecision.isWarning { logger.warning("\(bindDecision.message)") } else { logger.info("\(bindDecision.message)") }
        if let security {
            logger.info("\(security.summary)")
            for warning in security.warnings { logger.warning("\(warning)") }
        }
    }

    deinit {
        socket?.close()
        gate?.stop()
        localCredentials?.remove()
        context?.close()
    }

    /// Logs workers the CURVE handler turned away since the last call.
    func logNewRefusals(_ logger: Logger) {
        gate?.logNewRefusals(logger)
    }
}
