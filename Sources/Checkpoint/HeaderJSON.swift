/// A small strict JSON reader for safetensors headers (they are written with JSONWriting).
///
/// Foundation's JSONSerialization silently keeps one of two repeated keys and reads integers through
/// Double; the format needs both repeated tensor names rejected and byte offsets read exactly, so the
/// header gets its own parser. Objects keep their members in file order, repeats included.
indirect enum HeaderJSONValue {
    case object([HeaderJSONMember])
    case array([HeaderJSONValue])
    case string(String)
    /// The number's text exactly as written, so integers beyond 2^53 stay exact.
    case number(String)
    case boolean(Bool)
    case null

    /// What kind of value this is, for messages.
    var kindName: String {
        switch self {
        case .object: return "an object"
        case .array: return "an array"
        case .string: return "a string"
        case .number: return "a number"
        case .boolean: return "a boolean"
        case .null: return "null"
        }
    }

    /// The value as a non-negative integer written without sign, fraction or exponent, if it is one.
    var nonNegativeInteger: Int? {
        guard case .number(let text) = self, !text.isEmpty,
              text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") })
        else { return nil }
        return Int(text)
    }
}

/// One `"key": value` pair of a JSON object.
struct HeaderJSONMember {
    var key: String
    var value: HeaderJSONValue
}

/// Where and why a header is not JSON.
struct HeaderJSONSyntaxError: Error {
    /// Byte offset within the header.
    var offset: Int
    var detail: String
}

struct HeaderJSONParser {
    /// Nesting deeper than any real header needs; the limit keeps a hostile file from exhausting the stack.
    static let maximumDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private var position = 0
    private var depth = 0

    private init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    /// Parses one JSON value filling all of `bytes`, whitespace around it allowed (writers pad
    /// headers with trailing spaces). `bytes` must already be known to be valid UTF-8.
    static func parse(_ bytes: UnsafeRawBufferPointer) throws(HeaderJSONSyntaxError) -> HeaderJSONValue {
        var parser = HeaderJSONParser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.position == bytes.count else {
            throw parser.failure("unexpected \(parser.describeNext()) after the end of the JSON value")
        }
        return value
    }

    private static let quote = UInt8(ascii: "\"")
    private static let backslash = UInt8(ascii: "\\")

    private func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    private func failure(_ detail: String) -> HeaderJSONSyntaxError {
        HeaderJSONSyntaxError(offset: position, detail: detail)
    }

    private func describeNext() -> String {
        guard let byte = peek() else { return "end of header" }
        if byte >= 0x21 && byte < 0x7F { return "character '\(Character(Unicode.Scalar(byte)))'" }
        return "byte 0x\(String(byte, radix: 16))"
    }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x09 || byte == 0x0A || byte == 0x0D {
            position += 1
        }
    }

    private mutating func parseValue() throws(HeaderJSONSyntaxError) -> HeaderJSONValue {
        guard let byte = peek() else { throw failure("unexpected end of header where a value was expected") }
        switch byte {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case Self.quote: return .string(try parseString())
        case UInt8(ascii: "t"): try expectLiteral("true"); return .boolean(true)
        case UInt8(ascii: "f"): try expectLiteral("false"); return .boolean(false)
        case UInt8(ascii: "n"): try expectLiteral("null"); return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
        default: throw failure("unexpected \(describeNext()) where a value was expected")
        }
    }

    private mutating func enterContainer() throws(HeaderJSONSyntaxError) {
        depth += 1
        guard depth <= Self.maximumDepth else {
            throw failure("nesting deeper than \(Self.maximumDepth) levels")
        }
        position += 1
    }

    private mutating func parseObject() throws(HeaderJSONSyntaxError) -> HeaderJSONValue {
        try enterContainer()
        defer { depth -= 1 }
        var members: [HeaderJSONMember] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            position += 1
            return .object(members)
        }
        while true {
            skipWhitespace()
            guard peek() == Self.quote else { throw failure("expected a quoted key but found \(describeNext())") }
            let key = try parseString()
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else {
                throw failure("expected ':' after key \"\(key)\" but found \(describeNext())")
            }
            position += 1
            skipWhitespace()
            members.append(HeaderJSONMember(key: key, value: try parseValue()))
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "}"): position += 1; return .object(members)
            default: throw failure("expected ',' or '}' in an object but found \(describeNext())")
            }
        }
    }

    private mutating func parseArray() throws(HeaderJSONSyntaxError) -> HeaderJSONValue {
        try enterContainer()
        defer { depth -= 1 }
        var elements: [HeaderJSONValue] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            position += 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            elements.append(try parseValue())
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): position += 1
            case UInt8(ascii: "]"): position += 1; return .array(elements)
            default: throw failure("expected ',' or ']' in an array but found \(describeNext())")
            }
        }
    }

    private mutating func expectLiteral(_ literal: String) throws(HeaderJSONSyntaxError) {
        for expected in literal.utf8 {
            guard peek() == expected else { throw failure("invalid literal (expected '\(literal)')") }
            position += 1
        }
    }

    private mutating func parseNumber() throws(HeaderJSONSyntaxError) -> HeaderJSONValue {
        let start = position
        func isDigit(_ byte: UInt8?) -> Bool {
            guard let byte else { return false }
            return byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
        }
        if peek() == UInt8(ascii: "-") { position += 1 }
        if peek() == UInt8(ascii: "0") {
            position += 1
        } else if isDigit(peek()) {
            while isDigit(peek()) { position += 1 }
        } else {
            throw failure("a number needs digits after '-'")
        }
        if peek() == UInt8(ascii: ".") {
            position += 1
            guard isDigit(peek()) else { throw failure("a number needs digits after '.'") }
            while isDigit(peek()) { position += 1 }
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            position += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
            guard isDigit(peek()) else { throw failure("a number needs digits in its exponent") }
            while isDigit(peek()) { position += 1 }
        }
        let text = UnsafeRawBufferPointer(rebasing: bytes[start..<position])
        return .number(String(decoding: text, as: UTF8.self))
    }

    private mutating func parseHexQuad() throws(HeaderJSONSyntaxError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = peek() else { throw failure("unterminated \\u escape") }
            let digit: UInt32
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(byte - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(byte - UInt8(ascii: "a") + 10)
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(byte - UInt8(ascii: "A") + 10)
            default: throw failure("\\u must be followed by four hexadecimal digits")
            }
            value = value << 4 | digit
            position += 1
        }
        return value
    }

    private mutating func parseString() throws(HeaderJSONSyntaxError) -> String {
        position += 1
        var utf8: [UInt8] = []
        while true {
            guard let byte = peek() else { throw failure("unterminated string") }
            if byte == Self.quote {
                position += 1
                return String(decoding: utf8, as: UTF8.self)
            }
            if byte < 0x20 {
                throw failure("raw control character 0x\(String(byte, radix: 16)) in a string (JSON requires it escaped)")
            }
            position += 1
            guard byte == Self.backslash else {
                utf8.append(byte)
                continue
            }
            guard let escape = peek() else { throw failure("unterminated string") }
            position += 1
            switch escape {
            case Self.quote: utf8.append(Self.quote)
            case Self.backslash: utf8.append(Self.backslash)
            case UInt8(ascii: "/"): utf8.append(UInt8(ascii: "/"))
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var code = try parseHexQuad()
                if (0xD800..<0xDC00).contains(code) {
                    // A high surrogate must be followed by an escaped low one; together they name one scalar.
                    guard peek() == Self.backslash,
                          position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u")
                    else { throw failure("unpaired UTF-16 surrogate in a \\u escape") }
                    position += 2
                    let low = try parseHexQuad()
                    guard (0xDC00..<0xE000).contains(low) else { throw failure("unpaired UTF-16 surrogate in a \\u escape") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(code) {
                    throw failure("unpaired UTF-16 surrogate in a \\u escape")
                }
                guard let scalar = Unicode.Scalar(code) else { throw failure("invalid \\u escape") }
                utf8.append(contentsOf: String(Character(scalar)).utf8)
            default:
                throw failure("invalid escape '\\\(Character(Unicode.Scalar(escape)))' in a string")
            }
        }
    }
}
