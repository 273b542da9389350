/// Why a checkpoint could not be saved or loaded. Descriptions say what was wrong, in which
/// directory or file, and what to do.
public enum CheckpointError: Error, CustomStringConvertible {
    /// The store was created with `keep` below 1.
    case invalidKeep(Int)
    /// `save` was given a negative step.
    case invalidStep(Int)
    /// `save` was given a state whose step differs from the step argument.
    case stepMismatch(step: Int, stateStep: Int)
    /// A system call failed while saving or pruning.
    case fileSystem(operation: String, path: String, reason: String)
    /// The file system of the checkpoints directory has no room for the checkpoint: nothing of it
    /// was kept. `needed` and `available` are bytes.
    case noSpace(directory: String, needed: Int, available: Int)
    /// A file the checkpoint needs is absent.
    case missingFile(directory: String, file: String)
    /// A file's size differs from the one recorded in `state.json`.
    case sizeMismatch(directory: String, file: String, recorded: Int, actual: Int)
    /// A file's xxHash64 differs from the one recorded in `state.json`.
    case digestMismatch(directory: String, file: String, recorded: String, actual: String)
    /// `state.json` cannot be read or does not hold a valid state.
    case invalidState(path: String, detail: String)
    /// `state.json` has a format version this build does not know.
    case unsupportedFormatVersion(path: String, version: Int)
    /// The directory is named for one step while its `state.json` records another.
    case directoryStepMismatch(directory: String, stateStep: Int)
    /// A tensor file passed its digest check but is not valid safetensors.
    case invalidTensorFile(SafeTensorsError)
    /// The checkpoints directory is missing or holds no checkpoint.
    case noCheckpoints(directory: String)
    /// Every checkpoint is corrupt; `problems` says what was wrong with each, newest first.
    case noValidCheckpoint(directory: String, problems: [String])

    /// What went wrong, where, and how to fix it.
    public var description: String {
        switch self {
        case .invalidKeep(let keep):
            return "checkpoint store: keep is \(keep) but must be at least 1; set the number of checkpoints to keep to 1 or more"
        case .invalidStep(let step):
            return "checkpoint store: step \(step) is negative; pass the number of optimiser steps completed"
        case .stepMismatch(let step, let stateStep):
            return "checkpoint store: asked to save step \(step) with a state recording step \(stateStep); pass the same step to both"
        case .fileSystem(let operation, let path, let reason):
            return "checkpoint store: \(operation) failed for '\(path)': \(reason); check free space and permissions of the run directory"
        case .noSpace(let directory, let needed, let available):
            // Bytes to spare and still full: out of inodes, or a quota.
            let room = available < needed ? "free at least \(megabytes(needed - available))"
                : "the file system ran out of files (inodes) or reached a quota: make room"
            return "checkpoint store: no space for a checkpoint of \(megabytes(needed)) in '\(directory)' (\(megabytes(available)) free there); "
                + "nothing of it was kept, and the newest complete checkpoint is still there: \(room) "
                + "(or move the run directory to a larger disk) and continue with --resume"
        case .missingFile(let directory, let file):
            return "checkpoint '\(directory)': \(file) is missing; the checkpoint is incomplete: resume from an older one or delete this directory"
        case .sizeMismatch(let directory, let file, let recorded, let actual):
            return "checkpoint '\(directory)': \(file) is \(actual) bytes but state.json records \(recorded); the file was truncated or altered: resume from an older checkpoint or delete this directory"
        case .digestMismatch(let directory, let file, let recorded, let actual):
            return "checkpoint '\(directory)': \(file) has xxh64 \(actual) but state.json records \(recorded); the file is corrupt: resume from an older checkpoint or delete this directory"
        case .invalidState(let path, let detail):
            return "checkpoint state '\(path)': \(detail); the checkpoint is corrupt or incomplete: resume from an older one or delete this directory"
        case .unsupportedFormatVersion(let path, let version):
            return "checkpoint state '\(path)': format_version \(version) is not known to this build (it reads version \(CheckpointState.currentFormatVersion)); use the program version that wrote it"
        case .directoryStepMismatch(let directory, let stateStep):
            return "checkpoint '\(directory)': the directory name does not match step \(stateStep) recorded in its state.json; it was renamed or mixed up: rename it to \(CheckpointStore.directoryName(step: stateStep)) or delete it"
        case .invalidTensorFile(let error):
            return "\(error)"
        case .noCheckpoints(let directory):
            return "no checkpoint in '\(directory)'; start the run without --resume, or point --run-dir at the run to continue"
        case .noValidCheckpoint(let directory, let problems):
            let list = problems.map { "\n  - \($0)" }.joined()
            return "no valid checkpoint in '\(directory)'; every one is corrupt:\(list)\nstart the run afresh without --resume, or restore a checkpoint from a backup"
        }
    }
}

/// Bytes as megabytes with one decimal ("12.5 MB"), rounded up so that "free 0.1 MB" is enough.
private func megabytes(_ bytes: Int) -> String {
    let tenths = (bytes + 99_999) / 100_000
    return "\(tenths / 10).\(tenths % 10) MB"
}
