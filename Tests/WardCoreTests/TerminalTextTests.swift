import Testing
import WardCore

@Suite("Terminal text: what an agent chose cannot act on the operator's terminal")
struct TerminalTextTests {
    @Test func controlsBidiAndBackslashAreShownAsEscapes() {
        #expect(TerminalText.escape("a\u{1b}]0;title\u{07}b") == #"a\x1b]0;title\x07b"#)
        #expect(TerminalText.escape("\u{0}\u{7f}\u{9b}31m") == #"\x00\x7f\u{9b}31m"#)
        #expect(TerminalText.escape("evil\u{202e}gpj.sh\u{2066}\u{200f}\u{61c}\u{2029}") == #"evil\u{202e}gpj.sh\u{2066}\u{200f}\u{61c}\u{2029}"#)
        #expect(TerminalText.escape(#"C:\x1b"#) == #"C:\\x1b"#)
        #expect(TerminalText.escape("ünïcødé 日本 ok") == "ünïcødé 日本 ok")
    }

    @Test func lineBreaksAreEscapedInFieldsAndKeptInBlocks() {
        #expect(TerminalText.escape("a\nb\tc\rd") == #"a\x0ab\x09c\x0dd"#)
        #expect(TerminalText.escape("a\nb\tc\rd", keepingLineBreaks: true) == "a\nb\tc\\x0dd")
    }

    @Test func bytesThatAreNotUTF8AreShownAsHexAndDifferFromC1Controls() {
        // 0xC2 0x9B is U+009B (a C1 CSI); a lone 0x9B is not UTF-8: they must print differently.
        #expect(TerminalText.escape(bytes: [0xC2, 0x9B]) == #"\u{9b}"#)
        #expect(TerminalText.escape(bytes: [0x9B]) == #"\x9b"#)
        // Overlong "/" (C0 AF), a surrogate (ED A0 80), past U+10FFFF (F4 90 80 80), truncated (E2 80).
        #expect(TerminalText.escape(bytes: [0xC0, 0xAF]) == #"\xc0\xaf"#)
        #expect(TerminalText.escape(bytes: [0xED, 0xA0, 0x80]) == #"\xed\xa0\x80"#)
        #expect(TerminalText.escape(bytes: [0xF4, 0x90, 0x80, 0x80]) == #"\xf4\x90\x80\x80"#)
        #expect(TerminalText.escape(bytes: Array("ok \u{1F600}".utf8) + [0xE2, 0x80]) == "ok \u{1F600}\\xe2\\x80")
        #expect(TerminalText.escape(bytes: Array("a\u{1b}b\n".utf8), keepingLineBreaks: true) == "a\\x1bb\n")
    }

    /// Distinct values never print the same, and nothing that acts on a terminal remains.
    @Test func escapingIsOneToOneAndLeavesNoControls() {
        let pieces: [[UInt8]] = [[0x5C], [0x78], [0x31], [0x62], [0x1B], [0x0A], [0x09], [0xC2, 0x9B], [0x9B], [0xE2, 0x80, 0xAE],
                                 [0x75], [0x7B], [0x7D], [0x7F], [0xC3, 0xA9], [0xFF]]
        var seen: [String: [UInt8]] = [:]
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<5000 {
            let bytes = (0..<Int.random(in: 0...6, using: &rng)).flatMap { _ in pieces.randomElement(using: &rng)! }
            for keep in [false, true] {
                let shown = TerminalText.escape(bytes: bytes, keepingLineBreaks: keep)
                if let other = seen["\(keep)" + shown] { #expect(other == bytes, "\(other) and \(bytes) both print as \(shown)") }
                seen["\(keep)" + shown] = bytes
                #expect(!shown.unicodeScalars.contains { TerminalText.needsEscape($0) && !(keep && ($0 == "\n" || $0 == "\t")) }, "\(bytes)")
            }
        }
    }
}
