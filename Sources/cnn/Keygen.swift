import ArgumentParser
import Foundation
import PeerSecurity
import Training

/// `cnn keygen --out DIR [--name NAME]`: a CURVE key pair for a coordinator or a worker.
struct Keygen: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Make a CURVE key pair: NAME.key (public, give it to the other side) and NAME.key_secret (private, mode 0600).",
        discussion: """
            A coordinator runs with its own secret key and a folder of its workers' public keys:
              cnn-coord --curve-secret-key keys/coordinator.key_secret --authorized-keys workers/ ...
            A worker runs with its own secret key and the coordinator's public key:
              cnn-worker --curve-key keys/worker-1.key_secret --server-public-key coordinator.key ...
            Existing files are never overwritten.
            """)

    @Option(help: "The folder to write the key files to (created with mode 0700 when missing).") var out: String
    @Option(help: "The key's name, used for the file names (default: this host's name).") var name: String?

    func run() throws {
        let chosen = name ?? Self.defaultName()
        let files = try KeyFiles.generate(directory: out, name: chosen)
        print("""
            public key \(files.publicKey)
            wrote \(files.publicKeyPath) (public: copy it to the other side)
            wrote \(files.secretKeyPath) (secret, mode 0600: keep it on this machine)
            """)
    }

    /// The short host name, reduced to the characters a key name allows.
    static func defaultName() -> String {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
        let cleaned = String(host.map { character -> Character in
            character.isASCII && (character.isLetter || character.isNumber || character == "-" || character == "_") ? character : "-"
        })
        return cleaned.isEmpty || cleaned.hasPrefix(".") ? "key" : String(cleaned.prefix(64))
    }
}
