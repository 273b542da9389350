import Foundation
import UsageErrors
import Wire

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A key file, key folder, endpoint or security setting that cannot be used: what is wrong, with
/// which file or option, and the fix. Executables exit with code 2 on it (bad usage or config).
public struct SecurityError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The file, folder or option concerned.
    public var subject: String
    /// What is wrong and how to fix it.
    public var message: String

    /// An error about `subject`.
    public init(_ subject: String, _ message: String) {
        self.subject = subject
        self.message = message
    }

    public var description: String { "\(subject): \(message)" }
}

extension SecurityError: UsageFailure {}

/// A CURVE key pair in Z85 text (40 characters each), as libzmq takes them.
public struct CurveKeyPair: Sendable, Equatable {
    /// The half others may know: it names this party.
    public var publicKey: String
    /// The half that must never leave its owner.
    public var secretKey: String

    /// A pair from its two halves (not checked here; the loaders check what they read).
    public init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }
}

/// One authorised worker key read from the coordinator's `--authorized-keys` folder.
public struct AuthorizedKey: Sendable, Equatable {
    /// The file name without `.key`: the name the key was generated with.
    public var name: String
    /// The file it came from.
    public var path: String
    /// The worker's public key (Z85).
    public var publicKey: String

    /// A key with every field given.
    public init(name: String, path: String, publicKey: String) {
        self.name = name
        self.path = path
        self.publicKey = publicKey
    }
}

/// The files written by `cnn keygen`.
public struct GeneratedKeyFiles: Sendable, Equatable {
    /// `DIR/NAME.key`, mode 0644: give it to the other side.
    public var publicKeyPath: String
    /// `DIR/NAME.key_secret`, mode 0600: keep it where it is.
    public var secretKeyPath: String
    /// The public key written.
    public var publicKey: String
}

/// CURVE key files, in the text format of ZeroMQ's certificates (CZMQ `zcert`), so the same files
/// work with other ZeroMQ tools:
///
/// ```
/// #   ZeroMQ CURVE Public Certificate
/// metadata
///     name = "worker-1"
/// curve
///     public-key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
/// ```
///
/// `NAME.key` holds the public key (mode 0644); `NAME.key_secret` holds both keys (mode 0600).
/// A file holding nothing but one 40-character key on a line is read as well.
///
/// Rules the loaders enforce, each with an error that names the file and the fix: a secret key
/// file must not be readable or writable by group or others (`chmod 600`); a public key file and
/// the authorised-keys folder must not be writable by group or others (anyone who can write there
/// can let themselves in); every key must be valid Z85 for 32 bytes; a secret file's public key
/// must belong to its secret key; a file meant to hold a public key must not hold a secret one.
public enum KeyFiles {
    /// Ending of public key files: the files an authorised-keys folder holds.
    public static let publicSuffix = ".key"
    /// Ending of secret key files.
    public static let secretSuffix = ".key_secret"
    /// Key files are a few hundred bytes; anything this large is the wrong file.
    static let maximumFileBytes = 64 * 1024
    /// An authorised-keys folder with more key files than this is a mistake (or an attack on memory).
    static let maximumAuthorizedKeys = 100_000

    /// Checks a key name: letters, digits, '.', '_' and '-', 1 to 64 characters, not starting with '.'.
    public static func validate(name: String) throws {
        let allowed = name.utf8.allSatisfy { byte in
            (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
        }
        guard !name.isEmpty, name.utf8.count <= 64, allowed, !name.hasPrefix(".") else {
            throw SecurityError("--name '\(name)'", "a key name is 1 to 64 letters, digits, '.', '_' or '-' and does not start with '.'; "
                + "use the host or worker name, for example --name worker-1")
        }
    }

    /// Makes a fresh key pair and writes `DIR/NAME.key` (0644) and `DIR/NAME.key_secret` (0600),
    /// creating `DIR` (0700) when missing. Never overwrites: a new pair silently replacing an old
    /// one would lock out everyone who trusts the old public key.
    public static func generate(directory: String, name: String) throws -> GeneratedKeyFiles {
        try validate(name: name)
        try makeDirectory(directory)
        let publicPath = directory + "/" + name + publicSuffix
        let secretPath = directory + "/" + name + secretSuffix
        for path in [publicPath, secretPath] where pathExists(path) {
            throw SecurityError(path, "already exists; keygen never overwrites keys (a new pair would lock out whoever trusts the old one): "
                + "choose another --name, or delete both \(name)\(publicSuffix) and \(name)\(secretSuffix) first")
        }
        let pair = try CurveKeys.generatePair()
        let stamp = ISO8601DateFormatter().string(from: Date())
        let publicText = """
            #   ****  Generated on \(stamp) by cnn keygen  ****
            #   ZeroMQ CURVE Public Certificate
            #   Give this file to the other side: a coordinator lists its workers' public keys in its
            #   --authorized-keys folder; a worker names its coordinator's with --server-public-key.

            metadata
                name = "\(name)"
            curve
                public-key = "\(pair.publicKey)"

            """
        let secretText = """
            #   ****  Generated on \(stamp) by cnn keygen  ****
            #   ZeroMQ CURVE **Secret** Certificate
            #   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions (it must stay 0600).

            metadata
                name = "\(name)"
            curve
                public-key = "\(pair.publicKey)"
                secret-key = "\(pair.secretKey)"

            """
        // The secret first: if anything fails after it, no public key exists for a pair nobody holds.
        try writeNew(path: secretPath, text: secretText, mode: 0o600)
        do {
            try writeNew(path: publicPath, text: publicText, mode: 0o644)
        } catch {
            unlink(secretPath)
            throw error
        }
        return GeneratedKeyFiles(publicKeyPath: publicPath, secretKeyPath: secretPath, publicKey: pair.publicKey)
    }

    /// Reads a key pair from a secret key file (`NAME.key_secret`), refusing one that group or
    /// others may read.
    public static func readKeyPair(path: String) throws -> CurveKeyPair {
        let info = try fileInfo(path, what: "secret key file")
        // Read before judging the mode, so a public key file given by mistake is called that
        // rather than "too open".
        let contents = try parse(path: path)
        guard let secret = contents.secretKey ?? contents.bareKey else {
            if contents.publicKey != nil {
                throw SecurityError(path, "holds only a public key, but a secret key is needed here; pass the "
                    + "\(secretSuffix) file that `cnn keygen` wrote next to it")
            }
            throw SecurityError(path, "no `secret-key = \"...\"` line; pass a \(secretSuffix) file written by `cnn keygen --out DIR`")
        }
        if info.mode & 0o077 != 0 {
            throw SecurityError(path, "this CURVE secret key file has mode \(octal(info.mode & 0o777)), so other users of this machine "
                + "may read or change it; a secret key must be private to its owner: run `chmod 600 \(path)`")
        }
        try checkZ85(secret, field: "secret-key", path: path)
        let derived: String
        do {
            derived = try CurveKeys.publicKey(forSecretKey: secret)
        } catch {
            throw SecurityError(path, "libzmq cannot derive a public key from its secret-key (\(error)); generate a new pair with `cnn keygen`")
        }
        if let stated = contents.publicKey {
            try checkZ85(stated, field: "public-key", path: path)
            guard stated == derived else {
                throw SecurityError(path, "its public-key does not belong to its secret-key (the file was edited or pieced together "
                    + "from two pairs); generate a new pair with `cnn keygen`")
            }
        }
        return CurveKeyPair(publicKey: derived, secretKey: secret)
    }

    /// Reads a public key from `NAME.key`. Refuses a file that holds a secret key (secrets stay
    /// with their owner) and one that group or others may change.
    public static func readPublicKey(path: String) throws -> String {
        let info = try fileInfo(path, what: "public key file")
        if info.mode & 0o022 != 0 {
            throw SecurityError(path, "this public key file has mode \(octal(info.mode & 0o777)), so other users could swap in their own key; "
                + "run `chmod go-w \(path)`")
        }
        let contents = try parse(path: path)
        if contents.secretKey != nil {
            throw SecurityError(path, "holds a secret key; give the public \(publicSuffix) file instead "
                + "(a secret key must stay on the machine that owns it)")
        }
        guard let key = contents.publicKey ?? contents.bareKey else {
            throw SecurityError(path, "no `public-key = \"...\"` line; pass a \(publicSuffix) file written by `cnn keygen --out DIR`")
        }
        try checkZ85(key, field: "public-key", path: path)
        return key
    }

    /// Reads every `*.key` file of an authorised-keys folder (not its subfolders). Fails when the
    /// folder is missing, writable by group or others, holds no key, or holds a file that is not a
    /// valid public key. Secret key files found there are reported in `warnings` and not used.
    public static func readAuthorizedKeys(directory: String) throws -> (keys: [AuthorizedKey], warnings: [String]) {
        let info = try fileInfo(directory, what: "authorised-keys folder", wantDirectory: true)
        if info.mode & 0o022 != 0 {
            throw SecurityError(directory, "this authorised-keys folder has mode \(octal(info.mode & 0o777)), so other users could add "
                + "their own keys to it; run `chmod go-w \(directory)`")
        }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory).sorted()
        } catch {
            throw SecurityError(directory, "cannot list the authorised-keys folder (\(error.localizedDescription)); check its permissions")
        }
        var keys: [AuthorizedKey] = []
        var warnings: [String] = []
        for name in names where !name.hasPrefix(".") {
            let path = directory + "/" + name
            if name.hasSuffix(secretSuffix) {
                warnings.append("\(path) is a secret key file in the authorised-keys folder; it is ignored. Only public \(publicSuffix) "
                    + "files belong there: move the secret back to the worker it belongs to, or delete it")
                continue
            }
            guard name.hasSuffix(publicSuffix) else { continue }
            guard keys.count < maximumAuthorizedKeys else {
                throw SecurityError(directory, "holds more than \(maximumAuthorizedKeys) key files; authorise fewer workers")
            }
            keys.append(AuthorizedKey(name: String(name.dropLast(publicSuffix.count)), path: path, publicKey: try readPublicKey(path: path)))
        }
        guard !keys.isEmpty else {
            throw SecurityError(directory, "holds no worker public keys (\(publicSuffix) files), so no worker could join; make a pair per "
                + "worker with `cnn keygen --out DIR --name NAME` and copy each NAME\(publicSuffix) into this folder")
        }
        return (keys, warnings)
    }

    // MARK: Parsing

    /// What a key file says: the values of its `public-key` and `secret-key` lines, or a bare key.
    struct Contents {
        var publicKey: String?
        var secretKey: String?
        var bareKey: String?
    }

    /// Reads and parses a key file. Unknown lines (`metadata`, `name = ...`) are allowed, as in
    /// CZMQ certificates; comment lines start with '#' (a key itself may contain '#', so only
    /// whole lines are comments).
    static func parse(path: String) throws -> Contents {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SecurityError(path, "cannot read the key file; check that it exists and that this user may read it")
        }
        guard data.count <= maximumFileBytes else {
            throw SecurityError(path, "is \(data.count) bytes, far larger than a key file (a few hundred bytes); check the path")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw SecurityError(path, "is not text; pass a key file written by `cnn keygen`")
        }
        return try parse(text: text, path: path)
    }

    static func parse(text: String, path: String) throws -> Contents {
        var contents = Contents()
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.utf8.count == 40, !line.contains(" ") {
                guard contents.bareKey == nil else {
                    throw SecurityError("\(path):\(number + 1)", "a second bare key; a key file holds one key per kind")
                }
                contents.bareKey = line
                continue
            }
            guard let equals = line.firstIndex(of: "=") else { continue }
            let field = line[..<equals].trimmingCharacters(in: .whitespaces)
            guard field == "public-key" || field == "secret-key" else { continue }
            var value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            let slot = field == "public-key" ? \Contents.publicKey : \Contents.secretKey
            guard contents[keyPath: slot] == nil else {
                throw SecurityError("\(path):\(number + 1)", "a second \(field) line; a key file holds one key per kind")
            }
            contents[keyPath: slot] = value
        }
        return contents
    }

    private static func checkZ85(_ key: String, field: String, path: String) throws {
        do {
            try CurveKeys.validate(key, role: field)
        } catch {
            throw SecurityError(path, "its \(field) is not a CURVE key (40 Z85 characters encoding 32 bytes; got \(key.utf8.count) "
                + "characters); the file is damaged or not a key file: generate a new pair with `cnn keygen`")
        }
    }

    // MARK: Files

    struct FileInfo {
        var mode: UInt32
    }

    static func fileInfo(_ path: String, what: String, wantDirectory: Bool = false) throws -> FileInfo {
        var status = stat()
        guard stat(path, &status) == 0 else {
            let code = errno
            let reason = String(cString: strerror(code))
            var fix = "check the path"
            if code == ENOENT, what == "secret key file" {
                fix += ", or make a key pair with `cnn keygen --out DIR --name NAME` (it writes NAME.key_secret, the secret this side keeps, "
                    + "and NAME.key, the public key the other side needs)"
            } else if code == ENOENT, what == "public key file" {
                fix += "; a public key file is the NAME.key that `cnn keygen --out DIR --name NAME` wrote next to NAME.key_secret"
            }
            throw SecurityError(path, "cannot use this \(what): \(reason); \(fix)")
        }
        let type = UInt32(status.st_mode) & UInt32(S_IFMT)
        if wantDirectory {
            guard type == UInt32(S_IFDIR) else { throw SecurityError(path, "is not a folder; pass the folder that holds the workers' \(publicSuffix) files") }
        } else {
            guard type == UInt32(S_IFREG) else { throw SecurityError(path, "is not a regular file; pass the \(what) itself") }
        }
        return FileInfo(mode: UInt32(status.st_mode) & 0o7777)
    }

    private static func pathExists(_ path: String) -> Bool {
        var status = stat()
        return lstat(path, &status) == 0
    }

    private static func makeDirectory(_ directory: String) throws {
        var status = stat()
        if stat(directory, &status) == 0 {
            guard UInt32(status.st_mode) & UInt32(S_IFMT) == UInt32(S_IFDIR) else {
                throw SecurityError(directory, "exists and is not a folder; choose another --out")
            }
            return
        }
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw SecurityError(directory, "cannot create the key folder (\(error.localizedDescription)); choose another --out")
        }
    }

    /// Creates `path` exclusively (never following or replacing anything there) with exactly
    /// `mode`, whatever the umask, and flushes it to disk.
    static func writeNew(path: String, text: String, mode: mode_t) throws {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode)
        guard descriptor >= 0 else {
            let reason = String(cString: strerror(errno))
            throw SecurityError(path, "cannot create the key file: \(reason); check that the folder is writable")
        }
        defer { close(descriptor) }
        guard fchmod(descriptor, mode) == 0 else {
            unlink(path)
            throw SecurityError(path, "cannot set the key file's mode to \(octal(UInt32(mode))): \(String(cString: strerror(errno)))")
        }
        let bytes = Array(text.utf8)
        var written = 0
        while written < bytes.count {
            let result = bytes[written...].withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if result < 0 {
                if errno == EINTR { continue }
                let reason = String(cString: strerror(errno))
                unlink(path)
                throw SecurityError(path, "cannot write the key file: \(reason)")
            }
            written += result
        }
        guard fsync(descriptor) == 0 else {
            unlink(path)
            throw SecurityError(path, "cannot flush the key file to disk: \(String(cString: strerror(errno)))")
        }
    }

    static func octal(_ mode: UInt32) -> String {
        let digits = String(mode, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
