import Checkpoint
import Foundation

/// Class names travel in a checkpoint's `state.json` (`extra.class_names`, a JSON list), so that
/// `cnn predict` and `cnn eval` can name classes of a folder data set without the folder.
extension CheckpointState {
    static let classNamesKey = "class_names"

    /// The class names the checkpoint was trained with, if it records them.
    public var classNames: [String]? {
        guard let text = extra[Self.classNamesKey], let data = text.data(using: .utf8) else { return nil }
        return try? JSONDecoder().decode([String].self, from: data)
    }

    /// `extra` with `names` recorded.
    static func extra(_ extra: [String: String], classNames names: [String]?) -> [String: String] {
        guard let names, let data = try? JSONEncoder().encode(names), let text = String(data: data, encoding: .utf8) else { return extra }
        var extra = extra
        extra[classNamesKey] = text
        return extra
    }
}
