import ArgumentParser

/// `--input-size H W`: ArgumentParser reads an option's values up to the next option, so words
/// after H and W (the config, the images) land in it too; they are handed back as arguments.
struct InputSizeOption {
    let size: (height: Int, width: Int)?
    let following: [String]

    init(_ values: [String]) throws {
        guard !values.isEmpty else {
            size = nil
            following = []
            return
        }
        guard values.count >= 2, let height = Int(values[0]), let width = Int(values[1]), height > 0, width > 0 else {
            throw ValidationError("--input-size takes two positive numbers, H W, got \(values.prefix(2).joined(separator: " "))")
        }
        size = (height, width)
        following = Array(values.dropFirst(2))
    }
}
