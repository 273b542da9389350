import Foundation

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Darwin)
@preconcurrency import Darwin
#endif

/// A block of status lines kept at the bottom of a terminal and redrawn in place, with ordinary
/// lines (log messages, evaluation results) printed above it. Everything that writes to the
/// terminal while the block is shown must go through here, or the block is torn.
public final class TerminalScreen: @unchecked Sendable {
    // Sendable: every mutable field is guarded by `lock`; writes happen under it too, so lines
    // from several threads never interleave mid-line.

    /// Where text goes.
    public enum Stream: Sendable {
        case output
        case error
    }

    private let lock = NSLock()
    private let write: @Sendable (Stream, String) -> Void
    private let widthProvider: @Sendable () -> Int
    private var block: [String] = []
    private var drawn = 0

    /// - Parameters:
    ///   - width: the terminal's width in columns, asked before every redraw (terminals resize).
    ///   - write: writes text to the output or error stream, unbuffered.
    public init(width: @escaping @Sendable () -> Int, write: @escaping @Sendable (Stream, String) -> Void) {
        self.widthProvider = width
        self.write = write
    }

    /// A screen on this process's standard output and standard error.
    public static func standard() -> TerminalScreen {
        TerminalScreen(width: { TerminalScreen.columns(of: 1) ?? 100 }, write: { stream, text in
            let descriptor: Int32 = stream == .output ? 1 : 2
            var bytes = Array(text.utf8)[...]
            while !bytes.isEmpty {
                let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
                if written < 0 {
                    if errno == EINTR { continue }
                    return
                }
                bytes = bytes.dropFirst(written)
            }
        })
    }

    /// Whether a file descriptor is a terminal (1 is standard output).
    public static func isTerminal(_ descriptor: Int32) -> Bool {
        isatty(descriptor) == 1
    }

    /// The width of the terminal on `descriptor`, if it is one.
    public static func columns(of descriptor: Int32) -> Int? {
        var size = winsize()
        guard ioctl(descriptor, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 else { return nil }
        return Int(size.ws_col)
    }

    /// Replaces the status block.
    public func show(_ lines: [String]) {
        lock.withLock {
            var text = eraseBlock()
            block = lines
            text += renderBlock()
            write(.output, text)
        }
    }

    /// Prints a line above the status block, on the given stream.
    public func print(_ line: String, to stream: Stream = .output) {
        lock.withLock {
            if drawn == 0 {
                write(stream, line + "\n")
                return
            }
            // The block is erased on standard output; the line then goes to its own stream, and
            // the block is drawn again below it.
            write(.output, eraseBlock())
            write(stream, line + "\n")
            write(.output, renderBlock())
        }
    }

    /// Leaves the block on the screen as it is and stops managing it: later text goes below it.
    public func release() {
        lock.withLock {
            drawn = 0
            block = []
        }
    }

    private func eraseBlock() -> String {
        guard drawn > 0 else { return "" }
        defer { drawn = 0 }
        // Up to the block's first line, column 0, then erase to the end of the screen.
        return "\u{1B}[\(drawn)A\r\u{1B}[J"
    }

    private func renderBlock() -> String {
        let width = max(widthProvider() - 1, 20)
        // Lines are cut to the width: a wrapped line would occupy two rows and the next redraw
        // would move up too few.
        let lines = block.map { TerminalScreen.truncate($0, toColumns: width) }
        drawn = lines.count
        return lines.map { $0 + "\n" }.joined()
    }

    /// Cuts `text` to `columns` visible characters, keeping ANSI escape sequences (which take no
    /// room) intact and resetting attributes if anything was cut.
    static func truncate(_ text: String, toColumns columns: Int) -> String {
        var out = ""
        var visible = 0
        var inEscape = false
        var cut = false
        for character in text {
            if inEscape {
                out.append(character)
                if character.isLetter { inEscape = false }
                continue
            }
            if character == "\u{1B}" {
                inEscape = true
                out.append(character)
                continue
            }
            if visible >= columns {
                cut = true
                continue
            }
            out.append(character)
            visible += 1
        }
        return cut ? out + "\u{1B}[0m" : out
    }
}
