import UsageErrors

/// A problem with a folder of images (torchvision's `ImageFolder` layout) or one of its files.
/// Every message names the folder or file and says how to fix it; all of them are bad input
/// (exit code 2), nothing the program could retry.
public struct ImageFolderError: UsageFailure, Equatable, Sendable {
    /// The folder or file at fault.
    public let path: String
    /// What is wrong with it and the fix.
    public let problem: String

    public init(path: String, problem: String) {
        self.path = path
        self.problem = problem
    }

    public var description: String { "\(path): \(problem)" }

    /// A file that cannot be decoded (empty, truncated, corrupt, not an image).
    static func badImage(path: String, reason: String) -> ImageFolderError {
        ImageFolderError(
            path: path,
            problem: "cannot decode the image (\(reason)); replace or delete the file, or set "
                + "data.skip_bad_files: true to leave such files out with a warning")
    }
}
