import Foundation
import PeerSecurity
import TestSupport
import Training
import Wire
import XCTest

/// Key files: `cnn keygen`'s pair, the permission rules, damaged keys, the authorised folder.
final class SecurityKeysTests: XCTestCase {
    private var folder = ""

    override func setUpWithError() throws {
        folder = try LocalCluster.temporaryDirectory("keys")
    }

    override func tearDown() {
        try? FileManager.default.removeItem(atPath: folder)
    }

    private func mode(_ path: String) throws -> Int {
        try XCTUnwrap(FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int)
    }

    private func securityError(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String {
        do {
            try body()
            XCTFail("expected a SecurityError", file: file, line: line)
            return ""
        } catch let error as SecurityError {
            return error.description
        } catch {
            XCTFail("expected a SecurityError, got \(type(of: error)): \(error)", file: file, line: line)
            return ""
        }
    }

    private func assertContains(_ text: String, _ parts: [String], file: StaticString = #filePath, line: UInt = #line) {
        for part in parts { XCTAssertTrue(text.contains(part), "'\(part)' missing from: \(text)", file: file, line: line) }
    }

    func testKeygenWritesAPublicFileAndAPrivateFileThatLoadBackAsOnePair() throws {
        let directory = folder + "/new/keys"
        let files = try KeyFiles.generate(directory: directory, name: "worker-1")
        XCTAssertEqual(files.publicKeyPath, directory + "/worker-1.key")
        XCTAssertEqual(files.secretKeyPath, directory + "/worker-1.key_secret")
        XCTAssertEqual(try mode(files.publicKeyPath), 0o644)
        XCTAssertEqual(try mode(files.secretKeyPath), 0o600)
        XCTAssertEqual(try mode(directory), 0o700, "a folder keygen creates holds secrets: only its owner may enter")
        let pair = try KeyFiles.readKeyPair(path: files.secretKeyPath)
        XCTAssertEqual(pair.publicKey, files.publicKey)
        XCTAssertEqual(try KeyFiles.readPublicKey(path: files.publicKeyPath), files.publicKey)
        XCTAssertEqual(try CurveKeys.publicKey(forSecretKey: pair.secretKey), pair.publicKey)
        let publicText = try String(contentsOfFile: files.publicKeyPath, encoding: .utf8)
        XCTAssertTrue(publicText.contains("public-key = \"\(files.publicKey)\""), publicText)
        XCTAssertFalse(publicText.contains(pair.secretKey), "the public file must not hold the secret key")
        let other = try KeyFiles.generate(directory: directory, name: "worker-2")
        XCTAssertNotEqual(other.publicKey, files.publicKey)
    }

    func testKeygenNeverOverwritesAnExistingKey() throws {
        let files = try KeyFiles.generate(directory: folder, name: "coordinator")
        let before = try String(contentsOfFile: files.secretKeyPath, encoding: .utf8)
        let message = securityError { _ = try KeyFiles.generate(directory: folder, name: "coordinator") }
        assertContains(message, ["already exists", "--name"])
        XCTAssertEqual(try String(contentsOfFile: files.secretKeyPath, encoding: .utf8), before)
        // A leftover public half alone also blocks a new pair of that name.
        try FileManager.default.removeItem(atPath: files.secretKeyPath)
        assertContains(securityError { _ = try KeyFiles.generate(directory: folder, name: "coordinator") }, ["coordinator.key", "already exists"])
    }

    func testKeyNamesThatCouldEscapeTheFolderAreRefused() {
        for name in ["", "../evil", "a/b", ".hidden", "two words", String(repeating: "x", count: 65)] {
            assertContains(securityError { _ = try KeyFiles.generate(directory: folder, name: name) }, ["key name", "--name"])
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: folder), [])
    }

    func testSecretKeyFileReadableByOthersIsRefusedWithTheChmodFix() throws {
        let files = try KeyFiles.generate(directory: folder, name: "w")
        for loose in [0o644, 0o640, 0o604, 0o620] {
            try FileManager.default.setAttributes([.posixPermissions: loose], ofItemAtPath: files.secretKeyPath)
            let message = securityError { _ = try KeyFiles.readKeyPair(path: files.secretKeyPath) }
            assertContains(message, [files.secretKeyPath, "chmod 600 \(files.secretKeyPath)", String(loose, radix: 8)])
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o400], ofItemAtPath: files.secretKeyPath)
        XCTAssertNoThrow(try KeyFiles.readKeyPair(path: files.secretKeyPath), "owner-only read is private enough")
    }

    func testPublicKeyFileWritableByOthersIsRefused() throws {
        let files = try KeyFiles.generate(directory: folder, name: "w")
        try FileManager.default.setAttributes([.posixPermissions: 0o666], ofItemAtPath: files.publicKeyPath)
        assertContains(securityError { _ = try KeyFiles.readPublicKey(path: files.publicKeyPath) }, ["chmod go-w \(files.publicKeyPath)"])
    }

    func testDamagedAndMisplacedKeysAreRefusedNamingTheFile() throws {
        let good = try KeyFiles.generate(directory: folder, name: "good")
        let other = try KeyFiles.generate(directory: folder, name: "other")
        let goodPair = try KeyFiles.readKeyPair(path: good.secretKeyPath)
        let otherPair = try KeyFiles.readKeyPair(path: other.secretKeyPath)

        func secretFile(_ name: String, _ text: String) throws -> String {
            let path = folder + "/" + name
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
            return path
        }
        let short = try secretFile("short", "curve\n    secret-key = \"\(goodPair.secretKey.dropLast())\"\n")
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: short) }, [short, "secret-key is not a CURVE key", "39 characters"])
        let badAlphabet = try secretFile("alphabet", "curve\n    secret-key = \"\(String(repeating: "~", count: 40))\"\n")
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: badAlphabet) }, [badAlphabet, "not a CURVE key"])
        let mixed = try secretFile("mixed", "curve\n    public-key = \"\(otherPair.publicKey)\"\n    secret-key = \"\(goodPair.secretKey)\"\n")
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: mixed) }, [mixed, "does not belong"])
        let twice = try secretFile("twice", "secret-key = \"\(goodPair.secretKey)\"\nsecret-key = \"\(otherPair.secretKey)\"\n")
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: twice) }, ["\(twice):2", "second secret-key"])
        let empty = try secretFile("empty", "# nothing here\n")
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: empty) }, [empty, "secret-key"])

        // A public key file (mode 0644) given as a secret one is named for what it is, not as too open.
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: good.publicKeyPath) }, ["holds only a public key", ".key_secret"])
        assertContains(securityError { _ = try KeyFiles.readPublicKey(path: good.secretKeyPath) }, ["holds a secret key", "public .key"])
        assertContains(securityError { _ = try KeyFiles.readPublicKey(path: folder + "/missing.key") }, [folder + "/missing.key", "No such file"])
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: folder) }, ["not a regular file"])
        let huge = try secretFile("huge", String(repeating: "#\n", count: 40_000))
        assertContains(securityError { _ = try KeyFiles.readKeyPair(path: huge) }, ["larger than a key file"])
    }

    func testABareKeyOnItsOwnLineIsReadAsTheFilesKey() throws {
        let pair = try CurveKeys.generatePair()
        let secretPath = folder + "/bare.key_secret", publicPath = folder + "/bare.key"
        try "# a key written by hand\n\(pair.secretKey)\n".write(toFile: secretPath, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: secretPath)
        try "\(pair.publicKey)\n".write(toFile: publicPath, atomically: true, encoding: .utf8)
        XCTAssertEqual(try KeyFiles.readKeyPair(path: secretPath), CurveKeyPair(publicKey: pair.publicKey, secretKey: pair.secretKey))
        XCTAssertEqual(try KeyFiles.readPublicKey(path: publicPath), pair.publicKey)
    }

    func testAuthorisedFolderYieldsEveryPublicKeyAndWarnsAboutSecretsInIt() throws {
        let keys = folder + "/workers"
        let a = try KeyFiles.generate(directory: keys, name: "a")
        let b = try KeyFiles.generate(directory: keys, name: "b")
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: keys)
        try FileManager.default.removeItem(atPath: b.secretKeyPath)
        try "notes".write(toFile: keys + "/README", atomically: true, encoding: .utf8)
        let (authorised, warnings) = try KeyFiles.readAuthorizedKeys(directory: keys)
        XCTAssertEqual(authorised.map(\.name), ["a", "b"])
        XCTAssertEqual(authorised.map(\.publicKey), [a.publicKey, b.publicKey])
        XCTAssertEqual(warnings.count, 1)
        assertContains(warnings.first ?? "", [a.secretKeyPath, "ignored"])
    }

    func testAuthorisedFolderProblemsAreRefusedWithTheFix() throws {
        assertContains(securityError { _ = try KeyFiles.readAuthorizedKeys(directory: folder + "/none") }, [folder + "/none", "No such file"])
        let empty = folder + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: false)
        assertContains(securityError { _ = try KeyFiles.readAuthorizedKeys(directory: empty) }, ["no worker public keys", "cnn keygen"])
        let keys = folder + "/keys"
        _ = try KeyFiles.generate(directory: keys, name: "w")
        try FileManager.default.setAttributes([.posixPermissions: 0o775], ofItemAtPath: keys)
        assertContains(securityError { _ = try KeyFiles.readAuthorizedKeys(directory: keys) }, ["chmod go-w \(keys)"])
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: keys)
        try "public-key = \"not a key\"\n".write(toFile: keys + "/broken.key", atomically: true, encoding: .utf8)
        assertContains(securityError { _ = try KeyFiles.readAuthorizedKeys(directory: keys) }, [keys + "/broken.key", "not a CURVE key"])
        let notFolder = try LocalCluster.write("x", to: "file", in: folder)
        assertContains(securityError { _ = try KeyFiles.readAuthorizedKeys(directory: notFolder) }, ["is not a folder"])
    }

    func testCommandLinePairsNeedBothOptionsOrNeither() throws {
        XCTAssertNil(try CoordinatorSecurity.load(secretKeyFile: nil, authorizedKeysDirectory: nil))
        XCTAssertNil(try WorkerSecurity.load(keyFile: nil, serverPublicKeyFile: nil))
        assertContains(securityError { _ = try CoordinatorSecurity.load(secretKeyFile: "x", authorizedKeysDirectory: nil) }, ["--authorized-keys"])
        assertContains(securityError { _ = try CoordinatorSecurity.load(secretKeyFile: nil, authorizedKeysDirectory: "x") }, ["--curve-secret-key"])
        assertContains(securityError { _ = try WorkerSecurity.load(keyFile: "x", serverPublicKeyFile: nil) }, ["--server-public-key"])
        assertContains(securityError { _ = try WorkerSecurity.load(keyFile: nil, serverPublicKeyFile: "x") }, ["--curve-key"])
        let worker = try KeyFiles.generate(directory: folder, name: "w")
        assertContains(securityError { _ = try WorkerSecurity.load(keyFile: worker.secretKeyPath, serverPublicKeyFile: worker.publicKeyPath) },
                       ["this worker's own public key"])
    }

    func testCoordinatorSecurityLoadsItsPairAndItsWorkersAndSummarisesThem() throws {
        let server = try KeyFiles.generate(directory: folder + "/server", name: "coordinator")
        let workers = folder + "/workers"
        let one = try KeyFiles.generate(directory: workers, name: "one")
        try FileManager.default.removeItem(atPath: one.secretKeyPath)
        let security = try CoordinatorSecurity.load(secretKeyFile: server.secretKeyPath, authorizedKeysDirectory: workers)
        XCTAssertEqual(security.keyPair.publicKey, server.publicKey)
        XCTAssertEqual(security.authorizedKeys.map(\.publicKey), [one.publicKey])
        assertContains(security.summary, ["CURVE on", server.publicKey, "1 worker key authorised", workers, "(one)"])
    }
}
