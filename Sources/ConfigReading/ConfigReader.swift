import Yams

/// A config that cannot be used: where (file:line), what (key and problem) and the fix.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var file: String
    public var line: Int?
    public var message: String

    public init(file: String, line: Int?, message: String) {
        self.file = file
        self.line = line
        self.message = message
    }

    public var description: String {
        if let line { return "\(file):\(line): \(message)" }
        return "\(file): \(message)"
    }
}

/// A YAML node with the key path that led to it, so every error can say where it is.
/// Reading a mapping records which keys were used; `finish()` rejects the rest as unknown.
package final class ConfigNode {
    package let node: Node
    package let path: String
    package let file: String
    private var allowed: [String] = []

    package init(node: Node, path: String, file: String) {
        self.node = node
        self.path = path
        self.file = file
    }

    package var line: Int? { node.mark?.line }

    package func error(_ message: String) -> ConfigError {
        ConfigError(file: file, line: line, message: message)
    }

    package var isMapping: Bool { if case .mapping = node { return true } else { return false } }
    package var isSequence: Bool { if case .sequence = node { return true } else { return false } }
    package var isScalar: Bool { if case .scalar = node { return true } else { return false } }

    /// The keys of a mapping, in file order, with their nodes.
    package func entries() throws -> [(key: String, value: ConfigNode)] {
        guard case .mapping(let mapping) = node else {
            throw error("\(path) must be a mapping of keys to values, found \(kindName)")
        }
        return mapping.map { pair in
            let key = pair.key.string ?? "?"
            return (key, ConfigNode(node: pair.value, path: path.isEmpty ? key : "\(path).\(key)", file: file))
        }
    }

    /// Declares the keys this mapping may hold; unknown ones are errors naming the closest known key.
    package func expectKeys(_ keys: [String]) throws {
        allowed = keys
        for (key, value) in try entries() where !keys.contains(key) {
            var message = "unknown key '\(key)' in \(path.isEmpty ? "the top level" : path)"
            if let guess = closest(key, among: keys) { message += " (did you mean '\(guess)'?)" }
            else { message += "; allowed keys: \(keys.joined(separator: ", "))" }
            throw ConfigError(file: file, line: value.line ?? line, message: message)
        }
    }

    package func child(_ key: String) throws -> ConfigNode? {
        precondition(allowed.isEmpty || allowed.contains(key), "reading undeclared key \(key)")
        return try entries().first { $0.key == key }?.value
    }

    package var kindName: String {
        switch node {
        case .scalar(let scalar): return "'\(scalar.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    package func string() throws -> String {
        guard case .scalar(let scalar) = node else { throw error("\(path) must be a single value, found \(kindName)") }
        return scalar.string
    }

    package func int(minimum: Int? = nil, maximum: Int? = nil) throws -> Int {
        guard let value = node.int else { throw error("\(path) must be a whole number, found \(kindName)") }
        if let minimum, value < minimum { throw error("\(path) must be at least \(minimum), found \(value)") }
        if let maximum, value > maximum { throw error("\(path) must be at most \(maximum), found \(value)") }
        return value
    }

    package func double(minimum: Double? = nil, maximum: Double? = nil, exclusiveMinimum: Bool = false) throws -> Double {
        guard let value = node.float, value.isFinite else { throw error("\(path) must be a number, found \(kindName)") }
        if let minimum {
            if exclusiveMinimum ? value <= minimum : value < minimum {
                throw error("\(path) must be \(exclusiveMinimum ? "greater than" : "at least") \(minimum), found \(value)")
            }
        }
        if let maximum, value > maximum { throw error("\(path) must be at most \(maximum), found \(value)") }
        return value
    }

    package func bool() throws -> Bool {
        guard let value = node.bool else { throw error("\(path) must be true or false, found \(kindName)") }
        return value
    }

    package func items() throws -> [ConfigNode] {
        guard case .sequence(let sequence) = node else { throw error("\(path) must be a list, found \(kindName)") }
        return sequence.enumerated().map { ConfigNode(node: $1, path: "\(path)[\($0)]", file: file) }
    }

    package func ints() throws -> [Int] {
        try items().map { try $0.int() }
    }

    package func oneOf(_ choices: [String]) throws -> String {
        let value = try string()
        guard choices.contains(value) else {
            var message = "\(path) must be one of \(choices.joined(separator: ", ")), found '\(value)'"
            if let guess = closest(value, among: choices) { message += " (did you mean '\(guess)'?)" }
            throw error(message)
        }
        return value
    }
}

/// The candidate within edit distance 2 (or a third of the word) of `word`, if any.
package func closest(_ word: String, among candidates: [String]) -> String? {
    let limit = max(2, word.count / 3)
    let scored = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }
    guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= limit else { return nil }
    return best.0
}

package func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var previous = Array(0...b.count)
    var current = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        current[0] = i
        for j in 1...b.count {
            let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
            current[j] = min(substitution, previous[j] + 1, current[j - 1] + 1)
        }
        swap(&previous, &current)
    }
    return previous[b.count]
}
