import Foundation
import Hashing

/// Size and xxHash64 of one file of a checkpoint, as recorded in its `state.json`.
public struct FileDigest: Codable, Sendable, Equatable {
    /// File size in bytes.
    public var bytes: Int
    /// XXH64 (seed 0) of the whole file: 16 lowercase hexadecimal digits.
    public var xxh64: String

    /// A digest as recorded.
    public init(bytes: Int, xxh64: String) {
        self.bytes = bytes
        self.xxh64 = xxh64
    }

    /// The digest of `content`.
    init(of content: UnsafeRawBufferPointer) {
        self.init(bytes: content.count, xxh64: Self.hexadecimal(XXHash64.hash(content)))
    }

    static func hexadecimal(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}

/// Everything about a checkpoint besides its tensors: where training stood, what produced it, and
/// the digests of its files. Stored as `state.json` (snake_case keys, sorted, pretty printed).
public struct CheckpointState: Codable, Sendable, Equatable {
    /// The format version this module writes and reads.
    public static let currentFormatVersion = 1

    /// Layout version of the checkpoint directory; `currentFormatVersion` when written here.
    public var formatVersion: Int
    /// Optimiser steps completed.
    public var step: Int
    /// The epoch training is in.
    public var epoch: Int
    /// Samples of this epoch already consumed.
    public var positionInEpoch: Int
    /// Hash of the resolved training configuration, computed and compared by the trainer.
    public var configHash: String
    /// Program and version that wrote the checkpoint, for example `cnn-coord 0.1.0`.
    public var createdBy: String
    /// When the checkpoint was written, ISO 8601.
    public var createdAt: String
    /// Size and digest of each tensor file by file name; filled in by `CheckpointStore.save`.
    public var files: [String: FileDigest]
    /// Anything else the trainer wants to keep (learning-rate schedule position, run id).
    public var extra: [String: String]

    /// A state as given; `createdAt` defaults to now and `files` to empty (the store fills them).
    public init(
        formatVersion: Int = CheckpointState.currentFormatVersion,
        step: Int,
        epoch: Int,
        positionInEpoch: Int,
        configHash: String,
        createdBy: String,
        createdAt: String = CheckpointState.timestampNow(),
        files: [String: FileDigest] = [:],
        extra: [String: String] = [:]
    ) {
        self.formatVersion = formatVersion
        self.step = step
        self.epoch = epoch
        self.positionInEpoch = positionInEpoch
        self.configHash = configHash
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.files = files
        self.extra = extra
    }

    /// The current time as an ISO 8601 string in UTC, for `createdAt`.
    public static func timestampNow() -> String {
        ISO8601DateFormatter().string(from: Date())
    }

    enum CodingKeys: String, CodingKey {
        case formatVersion = "format_version"
        case step
        case epoch
        case positionInEpoch = "position_in_epoch"
        case configHash = "config_hash"
        case createdBy = "created_by"
        case createdAt = "created_at"
        case files
        case extra
    }
}
