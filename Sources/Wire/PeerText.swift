/// Text a peer sent (a worker's name, host and GEMM kernel, the reason of a `bye`, the text of an
/// `error`), made safe to print: control and format characters (newlines, terminal escape codes,
/// bidirectional overrides) are shown as `\u{...}` escapes, so one message stays one log line and
/// cannot move the cursor or recolour the terminal; long texts are cut.
public enum PeerText {
    /// At most `limit` characters of `text`, every unprintable one escaped; a cut text ends
    /// with `…` and the size of the whole.
    public static func printable(_ text: String, limit: Int = 120) -> String {
        var result = ""
        var shown = 0
        for scalar in text.unicodeScalars {
            guard shown < limit else {
                return result + "… (\(text.utf8.count) bytes)"
            }
            if isUnprintable(scalar) {
                result += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                result.unicodeScalars.append(scalar)
            }
            shown += 1
        }
        return result
    }

    private static func isUnprintable(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .control, .format, .lineSeparator, .paragraphSeparator, .surrogate, .privateUse, .unassigned: return true
        default: return false
        }
    }
}
