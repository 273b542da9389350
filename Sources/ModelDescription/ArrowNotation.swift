import CNN

// The arrow notation of the literature (CS231n, many papers) as a model description:
//
//   INPUT(1,28,28) => [CONV(32,3,p=1) => RELU => POOL(2)] * 2 => FC(128) => RELU => DO(0.5) => FC(10)
//   INPUT => [[CONV(F,3,p=1) => RELU]*N => POOL?]*M => [FC(H) => RELU]*K => FC(10)
//
// Grammar (names are case-insensitive; `->`, `→` and `⇒` also separate layers):
//   model    := chain
//   chain    := term ('=>' term)*
//   term     := primary ('*' count | '?')*
//   primary  := '[' chain ']' | NAME ['(' args ')'] ['[' chain ('|' chain)* ']']
//   count    := INTEGER | NAME            (a variable from model.vars)
//   args     := arg (',' arg)*
//   arg      := [NAME '='] (NUMBER | NAME)
// The bracketed chains after a NAME are the branches of a block layer (RES[...], CONCAT[a | b]).

/// A syntax or meaning error in arrow notation, pointing at the column (1-based, in characters)
/// of the text where it was found.
public struct ArrowNotationError: Error, CustomStringConvertible, Equatable {
    public var text: String
    /// 1-based line within `text` (only above 1 when the notation spans lines).
    public var line: Int
    /// 1-based column within that line.
    public var column: Int
    public var message: String

    public init(text: String, line: Int, column: Int, message: String) {
        self.text = text
        self.line = line
        self.column = column
        self.message = message
    }

    /// "column 23: expected '=>' ..." followed by the offending line and a caret under the column.
    public var description: String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let shown = line - 1 < lines.count ? String(lines[line - 1]) : ""
        let place = lines.count > 1 ? "line \(line), column \(column)" : "column \(column)"
        return "\(place): \(message)\n    \(shown)\n    \(String(repeating: " ", count: max(column - 1, 0)))^"
    }
}

/// A value written as a layer argument or repetition count: a number or a word (a variable from
/// `model.vars`, or a keyword such as `same`, `true`, `auto`).
public enum ArrowValue: Sendable, Equatable {
    case number(Double)
    case word(String)
}

/// One argument of a layer: `32`, `p=1`, `s=stride`.
public struct ArrowArgument: Sendable, Equatable {
    public var label: String?
    public var value: ArrowValue
    public var position: ArrowPosition
}

/// Where something was written: 1-based line and column of the arrow text.
public struct ArrowPosition: Sendable, Equatable {
    public var line: Int
    public var column: Int
}

/// A layer as written: its name, arguments and (for block layers) bracketed branches.
public struct ArrowLayer: Sendable, Equatable {
    public var name: String
    public var arguments: [ArrowArgument]
    /// nil for ordinary layers; the chains in `NAME[a | b | ...]` for block layers.
    public var branches: [[ArrowItem]]?
    public var position: ArrowPosition
}

/// One element of a chain.
public indirect enum ArrowItem: Sendable, Equatable {
    case layer(ArrowLayer)
    /// `[a => b => c]`
    case group([ArrowItem], ArrowPosition)
    /// `item * count`
    case repeated(ArrowItem, count: ArrowValue, ArrowPosition)
    /// `item?`: kept or left out as `model.optional` says.
    case optional(ArrowItem, ArrowPosition)
}

/// What happens to items marked `?`.
public enum OptionalLayers: String, Sendable, Equatable, CaseIterable {
    /// Every optional item is part of the model.
    case include
    /// No optional item is.
    case omit
    /// An optional item is kept where it can be built on the shape that reaches it (a pooling
    /// layer is dropped once the feature map is smaller than its window).
    case fit
}

/// A model in arrow notation, parsed but not yet resolved into layers.
public struct ArrowModel: Sendable, Equatable {
    /// The text it was parsed from, for error messages.
    public var text: String
    /// `INPUT(c,h,w)`'s shape, or nil for a bare `INPUT`.
    public var input: FeatureShape?
    /// Everything after `INPUT`.
    public var items: [ArrowItem]

    /// Parses `text`, which must start with `INPUT` or `INPUT(channels, height, width)`.
    public static func parse(_ text: String) throws -> ArrowModel {
        var parser = try ArrowParser(text: text)
        return try parser.parseModel()
    }

    func error(at position: ArrowPosition, _ message: String) -> ArrowNotationError {
        ArrowNotationError(text: text, line: position.line, column: position.column, message: message)
    }
}

// MARK: - Tokens

private enum TokenKind: Equatable {
    case word(String)
    case number(Double, String)
    case arrow, openParenthesis, closeParenthesis, openBracket, closeBracket, comma, equals, star, question, bar
    case end

    var shown: String {
        switch self {
        case .word(let w): return "'\(w)'"
        case .number(_, let text): return "'\(text)'"
        case .arrow: return "'=>'"
        case .openParenthesis: return "'('"
        case .closeParenthesis: return "')'"
        case .openBracket: return "'['"
        case .closeBracket: return "']'"
        case .comma: return "','"
        case .equals: return "'='"
        case .star: return "'*'"
        case .question: return "'?'"
        case .bar: return "'|'"
        case .end: return "the end"
        }
    }
}

private struct Token {
    var kind: TokenKind
    var position: ArrowPosition
}

private func tokenize(_ text: String) throws -> [Token] {
    let characters = Array(text)
    var tokens: [Token] = []
    var index = 0
    var line = 1
    var lineStart = 0
    func position(_ at: Int) -> ArrowPosition { ArrowPosition(line: line, column: at - lineStart + 1) }
    func fail(_ at: Int, _ message: String) -> ArrowNotationError {
        let p = position(at)
        return ArrowNotationError(text: text, line: p.line, column: p.column, message: message)
    }
    while index < characters.count {
        let c = characters[index]
        let start = index
        if c == "\n" {
            index += 1
            line += 1
            lineStart = index
            continue
        }
        if c.isWhitespace { index += 1; continue }
        let next: Character? = index + 1 < characters.count ? characters[index + 1] : nil
        var kind: TokenKind
        switch c {
        case "=" where next == ">", "-" where next == ">":
            kind = .arrow
            index += 2
        case "→", "⇒":
            kind = .arrow
            index += 1
        case "(": kind = .openParenthesis; index += 1
        case ")": kind = .closeParenthesis; index += 1
        case "[": kind = .openBracket; index += 1
        case "]": kind = .closeBracket; index += 1
        case ",": kind = .comma; index += 1
        case "=": kind = .equals; index += 1
        case "*", "×": kind = .star; index += 1
        case "?": kind = .question; index += 1
        case "|": kind = .bar; index += 1
        default:
            if c.isLetter || c == "_" {
                while index < characters.count, characters[index].isLetter || characters[index].isNumber || characters[index] == "_" {
                    index += 1
                }
                kind = .word(String(characters[start..<index]))
            } else if c.isNumber || ((c == "-" || c == "." || c == "+") && (next?.isNumber ?? false)) {
                index += 1
                while index < characters.count {
                    let d = characters[index]
                    if d.isNumber || d == "." {
                        index += 1
                    } else if (d == "e" || d == "E"), index + 1 < characters.count,
                              characters[index + 1].isNumber || ((characters[index + 1] == "-" || characters[index + 1] == "+")
                                  && index + 2 < characters.count && characters[index + 2].isNumber) {
                        index += 2
                    } else {
                        break
                    }
                }
                let written = String(characters[start..<index])
                guard let value = Double(written) else { throw fail(start, "'\(written)' is not a number") }
                kind = .number(value, written)
            } else {
                throw fail(start, "unexpected character '\(c)'; layers are separated by '=>', grouped with [...], "
                    + "repeated with '* N' and marked optional with '?'")
            }
        }
        tokens.append(Token(kind: kind, position: position(start)))
    }
    tokens.append(Token(kind: .end, position: position(index)))
    return tokens
}

// MARK: - Parser

private struct ArrowParser {
    let text: String
    let tokens: [Token]
    var index = 0

    init(text: String) throws {
        self.text = text
        tokens = try tokenize(text)
    }

    var current: Token { tokens[index] }

    func fail(_ token: Token, _ message: String) -> ArrowNotationError {
        ArrowNotationError(text: text, line: token.position.line, column: token.position.column, message: message)
    }

    mutating func advance() -> Token {
        let token = tokens[index]
        if index < tokens.count - 1 { index += 1 }
        return token
    }

    mutating func parseModel() throws -> ArrowModel {
        guard case .word(let first) = current.kind, first.uppercased() == "INPUT" else {
            throw fail(current, "the notation must start with INPUT or INPUT(channels,height,width), found \(current.kind.shown)")
        }
        let inputToken = advance()
        var input: FeatureShape?
        if current.kind == .openParenthesis {
            let arguments = try parseArguments()
            let numbers = try arguments.map { argument -> Int in
                guard argument.label == nil, case .number(let value) = argument.value, value == value.rounded(), value >= 1 else {
                    throw ArrowNotationError(
                        text: text, line: argument.position.line, column: argument.position.column,
                        message: "INPUT takes positive whole numbers: INPUT(channels,height,width), INPUT(channels,length) "
                            + "or INPUT(channels,depth,height,width)")
                }
                return Int(value)
            }
            guard let shape = FeatureShape(dimensions: numbers) else {
                throw fail(inputToken, "INPUT takes three numbers, INPUT(channels,height,width), two for a sequence, "
                    + "INPUT(channels,length), or four for a volume, INPUT(channels,depth,height,width); found \(numbers.count)")
            }
            input = shape
        }
        var items: [ArrowItem] = []
        if current.kind == .arrow {
            _ = advance()
            items = try parseChain()
        }
        guard current.kind == .end else { throw unexpected(after: "a layer") }
        return ArrowModel(text: text, input: input, items: items)
    }

    /// The error for a token that cannot continue what came before.
    func unexpected(after what: String) -> ArrowNotationError {
        switch current.kind {
        case .word, .openBracket:
            return fail(current, "expected '=>' between layers, found \(current.kind.shown)")
        case .closeBracket:
            return fail(current, "']' without a matching '['")
        case .closeParenthesis:
            return fail(current, "')' without a matching '('")
        default:
            return fail(current, "unexpected \(current.kind.shown) after \(what)")
        }
    }

    mutating func parseChain() throws -> [ArrowItem] {
        var items = [try parseTerm()]
        while current.kind == .arrow {
            _ = advance()
            items.append(try parseTerm())
        }
        return items
    }

    mutating func parseTerm() throws -> ArrowItem {
        var item = try parsePrimary()
        while true {
            switch current.kind {
            case .star:
                let star = advance()
                switch current.kind {
                case .number(let value, let written):
                    guard value == value.rounded(), value >= 0 else {
                        throw fail(current, "a repetition count must be a whole number of at least 0, found \(written)")
                    }
                    _ = advance()
                    item = .repeated(item, count: .number(value), star.position)
                case .word(let name):
                    _ = advance()
                    item = .repeated(item, count: .word(name), star.position)
                default:
                    throw fail(current, "expected a count after '*' (a number such as 2, or a variable such as N), found \(current.kind.shown)")
                }
            case .question:
                let mark = advance()
                item = .optional(item, mark.position)
            default:
                return item
            }
        }
    }

    mutating func parsePrimary() throws -> ArrowItem {
        let token = current
        switch token.kind {
        case .openBracket:
            _ = advance()
            if current.kind == .closeBracket { throw fail(current, "empty group '[]'; put layers inside or remove it") }
            let chain = try parseChain()
            guard current.kind == .closeBracket else {
                if current.kind == .end {
                    throw fail(token, "'[' is never closed; add ']' after its last layer")
                }
                throw unexpected(after: "a layer inside '['")
            }
            _ = advance()
            return .group(chain, token.position)
        case .word(let name):
            _ = advance()
            var arguments: [ArrowArgument] = []
            if current.kind == .openParenthesis { arguments = try parseArguments() }
            var branches: [[ArrowItem]]?
            if current.kind == .openBracket, ArrowVocabulary.blockNames.contains(name.uppercased()) {
                let open = advance()
                var chains: [[ArrowItem]] = [try parseChain()]
                while current.kind == .bar {
                    _ = advance()
                    chains.append(try parseChain())
                }
                guard current.kind == .closeBracket else {
                    if current.kind == .end { throw fail(open, "'[' of \(name.uppercased()) is never closed; add ']'") }
                    throw unexpected(after: "a layer inside \(name.uppercased())[...]")
                }
                _ = advance()
                branches = chains
            }
            return .layer(ArrowLayer(name: name.uppercased(), arguments: arguments, branches: branches, position: token.position))
        case .end:
            throw fail(token, "expected a layer (such as CONV(32,3) or RELU) or '[', but the notation ends here")
        default:
            throw fail(token, "expected a layer (such as CONV(32,3) or RELU) or '[', found \(token.kind.shown)")
        }
    }

    mutating func parseArguments() throws -> [ArrowArgument] {
        let open = advance()
        var arguments: [ArrowArgument] = []
        if current.kind == .closeParenthesis {
            _ = advance()
            return arguments
        }
        while true {
            let start = current
            var label: String?
            if case .word(let word) = current.kind, tokens[index + 1].kind == .equals {
                label = word.lowercased()
                _ = advance()
                _ = advance()
            }
            let valueToken = current
            let value: ArrowValue
            switch valueToken.kind {
            case .number(let number, _): value = .number(number)
            case .word(let word): value = .word(word)
            case .end: throw fail(open, "'(' is never closed; add ')'")
            default:
                throw fail(valueToken, "expected a number or a name as an argument, found \(valueToken.kind.shown)")
            }
            _ = advance()
            arguments.append(ArrowArgument(label: label, value: value, position: start.position))
            switch current.kind {
            case .comma:
                _ = advance()
            case .closeParenthesis:
                _ = advance()
                return arguments
            case .end:
                throw fail(open, "'(' is never closed; add ')'")
            default:
                throw fail(current, "expected ',' or ')' after an argument, found \(current.kind.shown)")
            }
        }
    }
}
