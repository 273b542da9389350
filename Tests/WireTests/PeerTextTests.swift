import Wire
import XCTest

final class PeerTextTests: XCTestCase {
    func testNewlinesAndTerminalEscapesBecomeVisibleEscapesOnOneLine() {
        let hostile = "w1\n[coord] info: fake line\u{1b}[2J\u{1b}]0;title\u{07}\r"
        let shown = PeerText.printable(hostile)
        XCTAssertFalse(shown.contains("\n") || shown.contains("\r") || shown.contains("\u{1b}") || shown.contains("\u{07}"), shown)
        XCTAssertEqual(shown, #"w1\u{a}[coord] info: fake line\u{1b}[2J\u{1b}]0;title\u{7}\u{d}"#)
    }

    func testBidirectionalOverridesAndZeroWidthFormatCharactersAreEscaped() {
        XCTAssertEqual(PeerText.printable("ab\u{202E}cd\u{200B}"), #"ab\u{202e}cd\u{200b}"#)
    }

    func testOrdinaryTextIncludingAccentsAndCJKIsKeptAsItIs() {
        XCTAssertEqual(PeerText.printable("nœud-7 計算機 host.example"), "nœud-7 計算機 host.example")
    }

    func testAMegabyteNameIsCutWithItsSize() {
        let name = String(repeating: "x", count: 1 << 20)
        let shown = PeerText.printable(name, limit: 40)
        XCTAssertEqual(shown, String(repeating: "x", count: 40) + "… (1048576 bytes)")
    }
}
