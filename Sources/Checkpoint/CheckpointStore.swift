import Foundation

/// A checkpoint loaded and fully validated: its directory, its state and both tensor files.
public struct LoadedCheckpoint: Sendable {
    /// The checkpoint directory.
    public var path: String
    /// The contents of `state.json`.
    public var state: CheckpointState
    /// Weights and BatchNorm running statistics (`model.safetensors`).
    public var model: SafeTensorsFile
    /// Optimiser state (`optimizer.safetensors`).
    public var optimizer: SafeTensorsFile

    /// A loaded checkpoint as given.
    public init(path: String, state: CheckpointState, model: SafeTensorsFile, optimizer: SafeTensorsFile) {
        self.path = path
        self.state = state
        self.model = model
        self.optimizer = optimizer
    }
}

/// The checkpoints of one run: `<run>/checkpoints/step-00000123/` directories, each holding
/// `model.safetensors`, `optimizer.safetensors` and `state.json`.
///
/// A save is crash-safe: files are written and fsynced under a temporary name, then the directory is
/// renamed into place, so a final name only ever holds a complete checkpoint. One process owns a
/// run directory; the store is not meant to be shared between threads or processes.
public final class CheckpointStore {
    /// File name of the weights.
    public static let modelFileName = "model.safetensors"
    /// File name of the optimiser state.
    public static let optimizerFileName = "optimizer.safetensors"
    /// File name of the state.
    public static let stateFileName = "state.json"
    /// Prefix of directories that are not (yet, or any longer) checkpoints.
    static let temporaryPrefix = ".tmp-"
    /// Metadata of both tensor files; "pt" tells PyTorch-side tools the layout is PyTorch's.
    static let fileMetadata = ["format": "pt"]

    /// The run directory given at creation (without trailing slashes).
    public let runDirectory: String
    /// How many checkpoints `save` keeps.
    public let keep: Int

    /// `<run>/checkpoints`.
    public var checkpointsDirectory: String {
        runDirectory == "/" ? "/checkpoints" : runDirectory + "/checkpoints"
    }

    /// A store for the run in `runDirectory` that keeps the newest `keep` checkpoints. `keep` must be
    /// at least 1; `save` reports a smaller value as `CheckpointError.invalidKeep`.
    public init(runDirectory: String, keep: Int) {
        var trimmed = runDirectory
        while trimmed.count > 1 && trimmed.hasSuffix("/") { trimmed.removeLast() }
        self.runDirectory = trimmed
        self.keep = keep
    }

    /// The directory name of the checkpoint after `step` steps: `step-` and at least 8 digits.
    public static func directoryName(step: Int) -> String {
        let digits = String(step)
        return "step-" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    /// The step a checkpoint directory name stands for, or nil when the name is not one.
    static func step(fromDirectoryName name: String) -> Int? {
        guard name.hasPrefix("step-") else { return nil }
        let digits = name.dropFirst(5)
        guard digits.count >= 8, digits.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(digits)
    }

    // MARK: Saving

    /// Saves a checkpoint after `step` optimiser steps and returns its directory.
    ///
    /// Writes into a temporary sibling directory (`.tmp-step-...`), fsyncs every file and the
    /// directory, renames it to its final name, fsyncs the parent, then removes checkpoints beyond
    /// `keep` (oldest first, never the one just saved) and leftovers of interrupted saves. A crash at
    /// any point leaves either the old set or the new complete checkpoint, never a partial one under
    /// a final name. Saving a step that already has a checkpoint replaces it; a crash in the middle
    /// of that replacement loses that step's old checkpoint but never exposes a partial one.
    ///
    /// `state.step` must equal `step`; `state.files` is filled in with the files' sizes and digests.
    @discardableResult
    public func save(step: Int, model: [NamedTensor], optimizer: [NamedTensor], state: CheckpointState) throws -> String {
        guard keep >= 1 else { throw CheckpointError.invalidKeep(keep) }
        guard step >= 0 else { throw CheckpointError.invalidStep(step) }
        guard state.step == step else { throw CheckpointError.stepMismatch(step: step, stateStep: state.step) }
        // Laid out first: a tensor the writer rejects must not leave a temporary directory behind.
        let modelFile = try SafeTensorsLayout(model, metadata: Self.fileMetadata)
        let optimizerFile = try SafeTensorsLayout(optimizer, metadata: Self.fileMetadata)

        try createCheckpointsDirectory()
        let name = Self.directoryName(step: step)
        let temporary = path(Self.temporaryPrefix + name)
        let final = path(name)
        try removeIfPresent(temporary)
        // The state file and the directory entries are small; a page each is room enough.
        let needed = modelFile.byteCount + optimizerFile.byteCount + 3 * 4096
        let available = POSIXFile.availableBytes(checkpointsDirectory)
        if let available, available < needed {
            throw CheckpointError.noSpace(directory: checkpointsDirectory, needed: needed, available: available)
        }
        do {
            try fileSystem(needing: needed) { () throws(POSIXFailure) in try POSIXFile.makeDirectory(temporary) }
            var recorded = state
            recorded.files = [
                Self.modelFileName: try writeSynced(modelFile, to: temporary + "/" + Self.modelFileName, needing: needed),
                Self.optimizerFileName: try writeSynced(optimizerFile, to: temporary + "/" + Self.optimizerFileName, needing: needed),
            ]
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            _ = try writeSynced(Array(try encoder.encode(recorded)) + [0x0A], to: temporary + "/" + Self.stateFileName, needing: needed)
            try fileSystem(needing: needed) { () throws(POSIXFailure) in try POSIXFile.syncDirectory(temporary) }
            try moveIntoPlace(temporary, final: final)
        } catch {
            try? removeIfPresent(temporary)
            throw error
        }
        try prune(keepingStep: step)
        return final
    }

    private func path(_ entry: String) -> String {
        checkpointsDirectory + "/" + entry
    }

    /// Renames the finished temporary directory to its final name and makes the rename durable.
    private func moveIntoPlace(_ temporary: String, final: String) throws {
        let directory = checkpointsDirectory
        guard POSIXFile.exists(final) else {
            try fileSystem { () throws(POSIXFailure) in
                try POSIXFile.renameItem(temporary, to: final)
                try POSIXFile.syncDirectory(directory)
            }
            return
        }
        // rename cannot replace a non-empty directory, so the old one steps aside under a temporary
        // name (ignored by readers) first.
        let displaced = path(Self.temporaryPrefix + "replaced-" + (final as NSString).lastPathComponent)
        try removeIfPresent(displaced)
        try fileSystem { () throws(POSIXFailure) in try POSIXFile.renameItem(final, to: displaced) }
        do {
            try fileSystem { () throws(POSIXFailure) in try POSIXFile.renameItem(temporary, to: final) }
        } catch {
            try? fileSystem { () throws(POSIXFailure) in try POSIXFile.renameItem(displaced, to: final) }
            throw error
        }
        try fileSystem { () throws(POSIXFailure) in try POSIXFile.syncDirectory(directory) }
        try removeIfPresent(displaced)
    }

    /// Removes the oldest checkpoints beyond `keep` (never `keepingStep`) and leftover temporary
    /// directories of interrupted saves.
    private func prune(keepingStep: Int) throws {
        let entries = directoryEntries()
        var checkpoints = entries.compactMap { entry in Self.step(fromDirectoryName: entry).map { (step: $0, name: entry) } }
            .sorted { $0.step < $1.step }
        var removable = checkpoints.filter { $0.step != keepingStep }
        while checkpoints.count > keep, let oldest = removable.first {
            removable.removeFirst()
            checkpoints.removeAll { $0.name == oldest.name }
            // Renamed aside before deletion, so an interrupted deletion leaves a temporary name, not a
            // half-deleted checkpoint under a final one.
            let aside = path(Self.temporaryPrefix + "pruned-" + oldest.name)
            try removeIfPresent(aside)
            try fileSystem { () throws(POSIXFailure) in try POSIXFile.renameItem(self.path(oldest.name), to: aside) }
            try removeIfPresent(aside)
        }
        for entry in entries where entry.hasPrefix(Self.temporaryPrefix) {
            try removeIfPresent(path(entry))
        }
    }

    private func createCheckpointsDirectory() throws {
        let directory = checkpointsDirectory
        guard !POSIXFile.isDirectory(directory) else { return }
        let run = runDirectory
        try fileSystem { () throws(POSIXFailure) in
            try POSIXFile.makeDirectories(directory)
            // The new directory's own entry must survive a crash too.
            try POSIXFile.syncDirectory(run)
        }
    }

    private func writeSynced(_ layout: SafeTensorsLayout, to path: String, needing needed: Int) throws -> FileDigest {
        try writeSynced(to: path, needing: needed) { (writer) throws(POSIXFailure) in try layout.emit(writer.append) }
    }

    private func writeSynced(_ bytes: [UInt8], to path: String, needing needed: Int) throws -> FileDigest {
        try writeSynced(to: path, needing: needed) { (writer) throws(POSIXFailure) in try withBytes(of: bytes, writer.append) }
    }

    private func writeSynced(to path: String, needing needed: Int,
                             _ produce: (StagedFileWriter) throws(POSIXFailure) -> Void) throws -> FileDigest {
        var digest: FileDigest?
        try fileSystem(needing: needed) { () throws(POSIXFailure) in digest = try POSIXFile.writeFile(to: path, sync: true, produce) }
        return digest!
    }

    private func removeIfPresent(_ path: String) throws {
        guard POSIXFile.exists(path) else { return }
        do {
            try FileManager.default.removeItem(atPath: path)
        } catch {
            throw CheckpointError.fileSystem(operation: "remove", path: path, reason: error.localizedDescription)
        }
    }

    /// Runs `body`, whose failure becomes a `CheckpointError`: `noSpace` when the file system is
    /// full (or a quota reached) while writing a checkpoint of `needed` bytes, which the free
    /// space check before it cannot rule out (another writer, a quota).
    private func fileSystem(needing needed: Int? = nil, _ body: () throws(POSIXFailure) -> Void) throws(CheckpointError) {
        do {
            try body()
        } catch {
            if let needed, error.code == ENOSPC || error.code == EDQUOT {
                throw CheckpointError.noSpace(directory: checkpointsDirectory, needed: needed,
                                              available: POSIXFile.availableBytes(checkpointsDirectory) ?? 0)
            }
            throw CheckpointError.fileSystem(operation: error.operation, path: error.path, reason: error.systemMessage)
        }
    }

    // MARK: Finding and loading

    private func directoryEntries() -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: checkpointsDirectory)) ?? []
    }

    /// Final checkpoint directories (full paths), oldest first by step.
    public func list() -> [String] {
        directoryEntries()
            .compactMap { entry in Self.step(fromDirectoryName: entry).map { (step: $0, name: entry) } }
            .filter { POSIXFile.isDirectory(path($0.name)) }
            .sorted { $0.step < $1.step }
            .map { path($0.name) }
    }

    /// The newest checkpoint that validates fully (see `load(directory:)`).
    ///
    /// When a newer one is corrupt, older ones are tried; each skip adds a warning naming the
    /// directory and what was wrong. Leftover `.tmp-*` directories of interrupted saves are ignored
    /// and reported as warnings. Throws `CheckpointError.noCheckpoints` when there is none and
    /// `CheckpointError.noValidCheckpoint`, listing each one's problem, when none is valid.
    public func newestValid() throws -> (checkpoint: LoadedCheckpoint, warnings: [String]) {
        var warnings = directoryEntries().filter { $0.hasPrefix(Self.temporaryPrefix) }.sorted().map {
            "ignored '\(path($0))': a temporary directory left by an interrupted save, not a checkpoint (the next save deletes it)"
        }
        let candidates = list()
        guard !candidates.isEmpty else { throw CheckpointError.noCheckpoints(directory: checkpointsDirectory) }
        var problems: [String] = []
        for directory in candidates.reversed() {
            do {
                return (try Self.load(directory: directory), warnings)
            } catch {
                // Every error names the file or directory it is about, so the message stands alone.
                warnings.append("skipped a corrupt checkpoint, trying an older one: \(error)")
                problems.append("\(error)")
            }
        }
        throw CheckpointError.noValidCheckpoint(directory: checkpointsDirectory, problems: problems)
    }

    /// Loads the checkpoint in `directory` and validates it fully: `state.json` parses with a known
    /// format version and a step matching the directory name (when the name is `step-N`); both
    /// tensor files are present with the sizes and xxHash64 digests it records; both parse as
    /// safetensors. A config-hash comparison is left to the caller.
    public static func load(directory: String) throws -> LoadedCheckpoint {
        let statePath = directory + "/" + stateFileName
        let state = try readState(path: statePath, directory: directory)
        if let named = step(fromDirectoryName: (directory as NSString).lastPathComponent), named != state.step {
            throw CheckpointError.directoryStepMismatch(directory: directory, stateStep: state.step)
        }
        let model = try loadTensorFile(modelFileName, directory: directory, state: state, statePath: statePath)
        let optimizer = try loadTensorFile(optimizerFileName, directory: directory, state: state, statePath: statePath)
        return LoadedCheckpoint(path: directory, state: state, model: model, optimizer: optimizer)
    }

    private static func readState(path: String, directory: String) throws -> CheckpointState {
        let bytes: [UInt8]
        do {
            bytes = try POSIXFile.readAll(path: path)
        } catch {
            if error.code == ENOENT { throw CheckpointError.missingFile(directory: directory, file: stateFileName) }
            throw CheckpointError.invalidState(path: path, detail: error.reason)
        }
        let data = Data(bytes)
        // The version is read on its own first, so a newer layout is reported as such rather than as
        // whatever field it renamed.
        struct VersionProbe: Decodable {
            var version: Int?
            enum CodingKeys: String, CodingKey { case version = "format_version" }
        }
        let probe: VersionProbe
        do {
            probe = try JSONDecoder().decode(VersionProbe.self, from: data)
        } catch {
            throw CheckpointError.invalidState(path: path, detail: describe(error))
        }
        guard let version = probe.version else {
            throw CheckpointError.invalidState(path: path, detail: "missing key 'format_version'")
        }
        guard version == CheckpointState.currentFormatVersion else {
            throw CheckpointError.unsupportedFormatVersion(path: path, version: version)
        }
        let state: CheckpointState
        do {
            state = try JSONDecoder().decode(CheckpointState.self, from: data)
        } catch {
            throw CheckpointError.invalidState(path: path, detail: describe(error))
        }
        for (key, value) in [("step", state.step), ("epoch", state.epoch), ("position_in_epoch", state.positionInEpoch)] where value < 0 {
            throw CheckpointError.invalidState(path: path, detail: "'\(key)' is \(value) but cannot be negative")
        }
        return state
    }

    private static func loadTensorFile(_ name: String, directory: String, state: CheckpointState, statePath: String) throws -> SafeTensorsFile {
        guard let recorded = state.files[name] else {
            throw CheckpointError.invalidState(path: statePath, detail: "'files' has no entry for \(name)")
        }
        let filePath = directory + "/" + name
        let bytes: [UInt8]
        do {
            bytes = try POSIXFile.readAll(path: filePath)
        } catch {
            if error.code == ENOENT { throw CheckpointError.missingFile(directory: directory, file: name) }
            throw CheckpointError.invalidTensorFile(.fileUnreadable(path: filePath, reason: error.reason))
        }
        return try bytes.withUnsafeBytes { buffer in
            guard buffer.count == recorded.bytes else {
                throw CheckpointError.sizeMismatch(directory: directory, file: name, recorded: recorded.bytes, actual: buffer.count)
            }
            let actual = FileDigest(of: buffer)
            guard actual.xxh64 == recorded.xxh64.lowercased() else {
                throw CheckpointError.digestMismatch(directory: directory, file: name, recorded: recorded.xxh64, actual: actual.xxh64)
            }
            do {
                return try SafeTensors.decode(buffer, source: filePath)
            } catch let error as SafeTensorsError {
                throw CheckpointError.invalidTensorFile(error)
            }
        }
    }

    /// A JSON decoding error as one line naming the offending key.
    private static func describe(_ error: Error) -> String {
        func location(_ path: [CodingKey]) -> String {
            path.isEmpty ? "top level" : path.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }.joined(separator: ".")
        }
        guard let decodingError = error as? DecodingError else { return "\(error)" }
        switch decodingError {
        case .keyNotFound(let key, let context):
            return "missing key '\(location(context.codingPath + [key]))'"
        case .typeMismatch(let type, let context):
            return "'\(location(context.codingPath))' is not of type \(type)"
        case .valueNotFound(let type, let context):
            return "'\(location(context.codingPath))' is null but should be \(type)"
        case .dataCorrupted(let context):
            let underlying = context.underlyingError.map { ": \($0.localizedDescription)" } ?? ""
            return "not valid JSON at \(location(context.codingPath)) (\(context.debugDescription)\(underlying))"
        @unknown default:
            return "\(decodingError)"
        }
    }
}
