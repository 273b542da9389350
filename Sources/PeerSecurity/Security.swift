import Foundation
import Logging
import UsageErrors
import Wire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The coordinator's side of CURVE: its own key pair and the workers it lets in.
///
/// With it, all traffic on the coordinator's socket is encrypted and authenticated (CurveZMQ),
/// and a ZAP handler admits only clients whose public key is in the authorised-keys folder.
public struct CoordinatorSecurity: Sendable {
    /// The coordinator's key pair (from `--curve-secret-key`).
    public var keyPair: CurveKeyPair
    /// Where the key pair came from.
    public var secretKeyFile: String
    /// The folder the authorised keys came from.
    public var authorizedKeysDirectory: String
    /// Workers allowed to join.
    public var authorizedKeys: [AuthorizedKey]
    /// Things worth a warning in the log (a secret key in the authorised folder).
    public var warnings: [String]

    /// Loads and checks the coordinator's secret key file and its folder of authorised worker
    /// public keys; throws `SecurityError` naming the file and the fix.
    public static func load(secretKeyFile: String, authorizedKeysDirectory: String) throws -> CoordinatorSecurity {
        let pair = try KeyFiles.readKeyPair(path: secretKeyFile)
        let (keys, warnings) = try KeyFiles.readAuthorizedKeys(directory: authorizedKeysDirectory)
        return CoordinatorSecurity(keyPair: pair, secretKeyFile: secretKeyFile, authorizedKeysDirectory: authorizedKeysDirectory,
                                   authorizedKeys: keys, warnings: warnings)
    }

    /// The command-line form: both options or neither (nil: no CURVE).
    public static func load(secretKeyFile: String?, authorizedKeysDirectory: String?) throws -> CoordinatorSecurity? {
        switch (secretKeyFile, authorizedKeysDirectory) {
        case (nil, nil):
            return nil
        case (let file?, let directory?):
            return try load(secretKeyFile: file, authorizedKeysDirectory: directory)
        case (_?, nil):
            throw SecurityError("--curve-secret-key", "needs --authorized-keys DIR as well: the folder of the public keys of the workers "
                + "allowed to join (copy each worker's NAME.key there)")
        case (nil, _?):
            throw SecurityError("--authorized-keys", "needs --curve-secret-key FILE as well: the coordinator's own NAME.key_secret, "
                + "made with `cnn keygen --out DIR --name NAME`")
        }
    }

    /// One line for the start-up log.
    public var summary: String {
        let names = authorizedKeys.prefix(8).map(\.name).joined(separator: ", ")
        let more = authorizedKeys.count > 8 ? ", … +\(authorizedKeys.count - 8)" : ""
        return "CURVE on: traffic is encrypted; the coordinator's public key is \(keyPair.publicKey); "
            + "\(authorizedKeys.count) worker key\(authorizedKeys.count == 1 ? "" : "s") authorised from \(authorizedKeysDirectory) (\(names)\(more))"
    }

    /// Makes `socket` a CURVE server and starts the ZAP handler that admits only the authorised
    /// keys. Call before `bind`; keep the returned gate for as long as the socket serves, and
    /// `stop()` it before closing the context (closing the context waits for the handler's socket).
    public func apply(to socket: ZMQSocket, context: ZMQContext) throws -> CurveGate {
        let authenticator = try CurveAuthenticator(context: context, allowedClientKeys: authorizedKeys.map(\.publicKey))
        do {
            try socket.enableCurveServer(secretKey: keyPair.secretKey)
        } catch {
            authenticator.stop()
            throw error
        }
        return CurveGate(authenticator: authenticator, authorizedKeysDirectory: authorizedKeysDirectory)
    }

    /// A copy that also authorises a fresh key pair for workers this coordinator starts itself
    /// (`--spawn-workers`), with the files those workers need. The keys live in a private
    /// temporary folder that `LocalWorkerCredentials.remove()` deletes at the end of the run.
    public func addingLocalWorkerCredentials() throws -> (CoordinatorSecurity, LocalWorkerCredentials) {
        let credentials = try LocalWorkerCredentials(serverPublicKey: keyPair.publicKey)
        var copy = self
        copy.authorizedKeys.append(AuthorizedKey(name: "local-worker", path: credentials.secretKeyFile, publicKey: credentials.publicKey))
        return (copy, credentials)
    }
}

/// Key files for the workers a coordinator spawns on its own host: a fresh pair, authorised only
/// for this run, and the coordinator's public key, in a folder only this user can read.
public final class LocalWorkerCredentials: Sendable {
    /// The private folder holding the files.
    public let directory: String
    /// The workers' secret key file (`--curve-key`).
    public let secretKeyFile: String
    /// The coordinator's public key file (`--server-public-key`).
    public let serverPublicKeyFile: String
    /// The workers' public key.
    public let publicKey: String

    init(serverPublicKey: String) throws {
        var template = Array((NSTemporaryDirectory() + "/cnn-local-keys-XXXXXX").utf8CString)
        let created = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        guard created != nil else {
            throw SecurityError(NSTemporaryDirectory(), "cannot create a private folder for the spawned workers' keys: "
                + "\(String(cString: strerror(errno))); set TMPDIR to a writable folder")
        }
        directory = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let files = try KeyFiles.generate(directory: directory, name: "local-worker")
        secretKeyFile = files.secretKeyPath
        publicKey = files.publicKey
        serverPublicKeyFile = directory + "/coordinator" + KeyFiles.publicSuffix
        try KeyFiles.writeNew(path: serverPublicKeyFile, text: "curve\n    public-key = \"\(serverPublicKey)\"\n", mode: 0o644)
    }

    /// The `cnn-worker` options that use these files.
    public var workerArguments: [String] {
        ["--curve-key", secretKeyFile, "--server-public-key", serverPublicKeyFile]
    }

    /// Deletes the folder and its keys. Safe to call twice.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// The running CURVE server side: the ZAP handler, and the refusals not yet logged.
public final class CurveGate {
    /// The ZAP handler admitting the authorised keys.
    public let authenticator: CurveAuthenticator
    private let authorizedKeysDirectory: String
    private var reported: Set<String> = []
    private var saturated = false
    /// Distinct refused clients logged before the gate stops naming new ones (bounds memory and
    /// the log when someone tries many keys).
    public static let reportLimit = 1000

    init(authenticator: CurveAuthenticator, authorizedKeysDirectory: String) {
        self.authenticator = authenticator
        self.authorizedKeysDirectory = authorizedKeysDirectory
    }

    /// Refusals of clients (public key and address) not reported before. A refused client
    /// retries every ~100 ms, so each is reported once, not on every retry.
    public func newRefusals() -> [CurveRefusal] {
        var fresh: [CurveRefusal] = []
        for refusal in authenticator.refusals {
            let identity = refusal.publicKey + " " + refusal.address
            guard !reported.contains(identity), reported.count < Self.reportLimit else { continue }
            reported.insert(identity)
            fresh.append(refusal)
        }
        return fresh
    }

    /// Logs each new refusal as a warning saying who was refused and how to let them in; call it
    /// from the coordinator's receive loop.
    public func logNewRefusals(_ logger: Logger) {
        for refusal in newRefusals() {
            logger.warning("\(Self.describe(refusal, authorizedKeysDirectory: authorizedKeysDirectory))")
        }
        if reported.count >= Self.reportLimit && !saturated {
            saturated = true
            logger.warning("more than \(Self.reportLimit) different clients were refused; further refusals are not logged")
        }
    }

    /// The log line for one refusal.
    public static func describe(_ refusal: CurveRefusal, authorizedKeysDirectory: String) -> String {
        if refusal.publicKey.hasPrefix("(mechanism ") {
            return "refused a connection from \(refusal.address): it does not use CURVE \(refusal.publicKey); "
                + "start the worker with --curve-key and --server-public-key"
        }
        return "refused a worker connecting from \(refusal.address): its public key \(refusal.publicKey) is not authorised; "
            + "if the worker is yours, copy its NAME.key into \(authorizedKeysDirectory) and restart the coordinator"
    }

    /// Stops the ZAP handler; call before closing the socket's context. Safe to call twice.
    public func stop() {
        authenticator.stop()
    }
}

/// The worker's side of CURVE: its key pair and the coordinator's public key.
public struct WorkerSecurity: Sendable {
    /// The worker's key pair (from `--curve-key`).
    public var keyPair: CurveKeyPair
    /// The coordinator's public key (from `--server-public-key`).
    public var serverPublicKey: String
    /// Where they came from, for messages.
    public var keyFile: String
    public var serverPublicKeyFile: String

    /// Loads and checks the worker's secret key file and the coordinator's public key file.
    public static func load(keyFile: String, serverPublicKeyFile: String) throws -> WorkerSecurity {
        let pair = try KeyFiles.readKeyPair(path: keyFile)
        let server = try KeyFiles.readPublicKey(path: serverPublicKeyFile)
        if server == pair.publicKey {
            throw SecurityError(serverPublicKeyFile, "holds this worker's own public key, not the coordinator's; pass the coordinator's "
                + "NAME.key as --server-public-key")
        }
        return WorkerSecurity(keyPair: pair, serverPublicKey: server, keyFile: keyFile, serverPublicKeyFile: serverPublicKeyFile)
    }

    /// The command-line form: both options or neither (nil: no CURVE).
    public static func load(keyFile: String?, serverPublicKeyFile: String?) throws -> WorkerSecurity? {
        switch (keyFile, serverPublicKeyFile) {
        case (nil, nil):
            return nil
        case (let key?, let server?):
            return try load(keyFile: key, serverPublicKeyFile: server)
        case (_?, nil):
            throw SecurityError("--curve-key", "needs --server-public-key FILE as well: the coordinator's public NAME.key")
        case (nil, _?):
            throw SecurityError("--server-public-key", "needs --curve-key FILE as well: this worker's NAME.key_secret, made with "
                + "`cnn keygen --out DIR --name NAME` (its NAME.key goes into the coordinator's --authorized-keys folder)")
        }
    }

    /// Makes `socket` a CURVE client of the coordinator; call before `connect`.
    public func apply(to socket: ZMQSocket) throws {
        try socket.enableCurveClient(serverPublicKey: serverPublicKey, publicKey: keyPair.publicKey, secretKey: keyPair.secretKey)
    }

    /// What to add to "no coordinator answered": with CURVE a refused worker hears nothing back
    /// (libzmq just retries), so the likely causes are named here.
    public var joinHint: String {
        "with CURVE a refused worker gets no answer: check that \(serverPublicKeyFile) holds the coordinator's public key and that "
            + "this worker's public key \(keyPair.publicKey) (its .key file next to \(keyFile)) is in the coordinator's --authorized-keys "
            + "folder; the coordinator logs every key it refuses"
    }
}

/// What the coordinator says about where it listens, once it is allowed to.
public struct BindDecision: Sendable, Equatable {
    /// True when the operator should notice (listening beyond this host without keys).
    public var isWarning: Bool
    /// The line to log at start.
    public var message: String
}

/// Where a coordinator may listen: without CURVE keys only on this host (loopback, ipc, inproc)
/// unless the operator says `--insecure-bind`; and endpoints that are well formed.
public enum BindPolicy {
    /// Decides whether `endpoint` may be bound and returns the line to log at start; throws
    /// `SecurityError` for a malformed endpoint, or for one reachable from other hosts without
    /// keys and without `insecureBind`.
    public static func check(endpoint: String, secured: Bool, insecureBind: Bool) throws -> BindDecision {
        try validate(endpoint: endpoint, option: "--bind", forBinding: true)
        if secured {
            return BindDecision(isWarning: false, message: "listening on \(endpoint) with CURVE: only authorised workers can join")
        }
        if isLocal(endpoint) {
            return BindDecision(isWarning: false, message: "no CURVE keys: listening on \(endpoint) on this host only, unencrypted; any "
                + "program on this host can join. For workers on other hosts, make keys with `cnn keygen` and pass "
                + "--curve-secret-key and --authorized-keys")
        }
        if insecureBind {
            return BindDecision(isWarning: true, message: "--insecure-bind: listening on \(endpoint) without encryption or "
                + "authentication; anyone who can reach this address can join as a worker, read the model and send it gradients")
        }
        throw SecurityError("--bind \(endpoint)", "refusing to listen beyond this host without CURVE keys: anyone who can reach the "
            + "address could join the run, read the model and send it gradients. Make keys with `cnn keygen --out keys --name "
            + "coordinator` (and a pair per worker) and pass --curve-secret-key keys/coordinator.key_secret --authorized-keys DIR; "
            + "or bind tcp://127.0.0.1:PORT; or, on a network you trust, add --insecure-bind")
    }

    /// True for endpoints only this host can reach: tcp on a loopback address (127.0.0.0/8,
    /// ::1, localhost, the `lo` interface), ipc and inproc.
    public static func isLocal(_ endpoint: String) -> Bool {
        guard let (scheme, rest) = split(endpoint) else { return false }
        switch scheme {
        case "ipc", "inproc":
            return true
        case "tcp":
            guard let (host, _) = hostAndPort(rest) else { return false }
            return isLoopbackHost(host)
        default:
            return false
        }
    }

    /// Throws `SecurityError` naming `option` unless `endpoint` is `tcp://HOST:PORT`,
    /// `ipc://PATH` or `inproc://NAME` (for binding, HOST may be `*` and PORT `*` or 0).
    public static func validate(endpoint: String, option: String, forBinding: Bool) throws {
        let example = forBinding ? "tcp://127.0.0.1:5555 (port 0 picks a free one), tcp://0.0.0.0:5555, ipc:///tmp/cnn.sock"
            : "tcp://HOST:5555 as printed by cnn-coord"
        func fail(_ why: String) -> SecurityError {
            SecurityError("\(option) '\(endpoint)'", "\(why); an address looks like \(example)")
        }
        guard let (scheme, rest) = split(endpoint) else { throw fail("not a ZeroMQ address (no scheme://)") }
        switch scheme {
        case "tcp":
            // libzmq's "source;destination" form for connect: check the destination.
            let target = forBinding ? rest : String(rest.split(separator: ";", omittingEmptySubsequences: false).last ?? "")
            guard let (host, port) = hostAndPort(target), !host.isEmpty else { throw fail("a tcp address needs HOST:PORT") }
            if port == "*" || port == "0" {
                guard forBinding else { throw fail("a worker must connect to the coordinator's real port, not \(port)") }
            } else {
                guard let number = Int(port), (1...65535).contains(number) else {
                    throw fail("port '\(port)' is not a number from 1 to 65535")
                }
            }
            if host == "*" && !forBinding { throw fail("a worker needs the coordinator's host name or address, not '*'") }
        case "ipc", "inproc":
            guard !rest.isEmpty else { throw fail("\(scheme):// needs a \(scheme == "ipc" ? "path" : "name")") }
        default:
            throw fail("transport '\(scheme)' is not supported (use tcp, ipc or inproc)")
        }
    }

    /// A bind that failed, as a usage error (exit code 2) that says why and what to do.
    public static func bindFailure(endpoint: String, error: Error) -> UsageError {
        let code = (error as? ZMQError)?.code
        switch code {
        case EADDRINUSE?:
            return UsageError("cannot listen on \(endpoint): the port is already in use (another coordinator?); choose another port "
                + "with --bind tcp://HOST:PORT, or port 0 for any free one, or stop the process that holds it")
        case EADDRNOTAVAIL?, ENODEV?:
            return UsageError("cannot listen on \(endpoint): that address is not on any interface of this host; bind one of this "
                + "host's addresses, 127.0.0.1, or 0.0.0.0 for all (which needs CURVE keys or --insecure-bind)")
        case EACCES?:
            return UsageError("cannot listen on \(endpoint): permission denied (ports below 1024 need privileges, ipc paths a "
                + "writable folder); choose a port above 1024 or another path")
        default:
            return UsageError("cannot listen on \(endpoint): \(error); check the --bind address")
        }
    }

    private static func split(_ endpoint: String) -> (scheme: String, rest: String)? {
        guard let range = endpoint.range(of: "://") else { return nil }
        let scheme = String(endpoint[..<range.lowerBound]).lowercased()
        guard !scheme.isEmpty else { return nil }
        return (scheme, String(endpoint[range.upperBound...]))
    }

    /// "HOST:PORT" or "[V6]:PORT".
    private static func hostAndPort(_ text: String) -> (host: String, port: String)? {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let after = text[text.index(after: close)...]
            guard after.hasPrefix(":") else { return nil }
            return (host, String(after.dropFirst()))
        }
        guard let colon = text.lastIndex(of: ":") else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    private static func isLoopbackHost(_ rawHost: String) -> Bool {
        let host = rawHost.lowercased()
        if host == "localhost" || host == "lo" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let v4 = host.hasPrefix("::ffff:") ? String(host.dropFirst(7)) : host
        let parts = v4.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts.allSatisfy({ part in UInt8(part) != nil }) else { return false }
        return parts[0] == "127"
    }
}
