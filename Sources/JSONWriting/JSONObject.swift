import Foundation

/// How a `JSONObject` writes a Double. Non-finite values are written as null in every style:
/// JSON has no number for them.
public enum JSONNumberStyle: Sendable {
    /// The shortest text that reads back as the same Double: `0.1`, `1234.0` (`cnn bench --json`).
    case shortest
    /// Six significant digits, as C's `%.6g`: `0.123457`, `1234`, `1.23457e+06` (metrics.jsonl).
    case sixSignificantDigits
    /// Whole numbers below 10^15 as integers, others as `%.6g` (Chrome traces).
    case wholeOrSixSignificantDigits
}

/// A JSON object written field by field, keys in the order given: one line of metrics.jsonl, of
/// `cnn bench --json` or of a Chrome trace. The project's one writer of JSON text; its string
/// escaping and number styles are the ones every file it writes uses.
public struct JSONObject: Sendable {
    /// Whether separators carry a space: `{"a":1,"b":2}` or `{"a": 1, "b": 2}`.
    public enum Layout: Sendable {
        case compact
        case spaced
    }

    private var fields: [String] = []
    private let layout: Layout
    private let numbers: JSONNumberStyle

    /// An empty object that writes with `layout` and its Doubles in `numbers`.
    public init(layout: Layout = .compact, numbers: JSONNumberStyle = .shortest) {
        self.layout = layout
        self.numbers = numbers
    }

    public func string(_ key: String, _ value: String) -> JSONObject { raw(key, Self.quoted(value)) }
    public func int(_ key: String, _ value: Int) -> JSONObject { raw(key, "\(value)") }
    public func bool(_ key: String, _ value: Bool) -> JSONObject { raw(key, value ? "true" : "false") }
    public func double(_ key: String, _ value: Double) -> JSONObject { raw(key, Self.number(value, numbers)) }
    /// A nested object, written with its own layout and number style.
    public func object(_ key: String, _ value: JSONObject) -> JSONObject { raw(key, value.text) }

    /// A field whose value is already JSON text (an array, a preformatted number).
    public func raw(_ key: String, _ json: String) -> JSONObject {
        var copy = self
        copy.fields.append(Self.quoted(key) + (layout == .spaced ? ": " : ":") + json)
        return copy
    }

    /// The object as one line of JSON (no newline).
    public var text: String { "{" + fields.joined(separator: layout == .spaced ? ", " : ",") + "}" }

    /// `text` as a JSON string literal: quotes and backslashes escaped, newline, carriage return
    /// and tab as `\n`, `\r`, `\t`, other control characters as `\u00XX`.
    public static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// `value` as a JSON number in `style`; null when it is not finite.
    public static func number(_ value: Double, _ style: JSONNumberStyle) -> String {
        guard value.isFinite else { return "null" }
        switch style {
        case .shortest:
            return "\(value)"
        case .sixSignificantDigits:
            return String(format: "%.6g", value)
        case .wholeOrSixSignificantDigits:
            if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
            return String(format: "%.6g", value)
        }
    }
}
