/// Text chosen by an agent or a tool (call IDs, run IDs, labels, notes, a tool's output),
/// made safe to print on an operator's terminal.
///
/// A terminal acts on what it is sent: ESC starts sequences that retitle the window, move the
/// cursor over earlier lines, or (OSC 52) write the clipboard; C1 controls do the same in
/// 8-bit form; bidi overrides make `evil.sh` display as something else. `escape` replaces
/// each of these with a visible escape, so what the operator sees is what was recorded:
///
/// | input | shown as |
/// | --- | --- |
/// | C0 controls U+0000–U+001F, DEL U+007F | `\x1b`, `\x7f`, … (`\n` and `\t` too, unless `keepingLineBreaks`) |
/// | C1 controls U+0080–U+009F | `\u{85}`, … |
/// | bidi marks, embeddings, overrides, isolates, line and paragraph separators | `\u{202e}`, … |
/// | bytes that are not UTF-8 | `\xff`, … |
/// | `\` | `\\` |
///
/// Every escape starts with a backslash and a backslash itself is doubled, so the mapping is
/// one-to-one: two different values never print the same. `--json` output needs none of
/// this (JSON escapes controls) and must stay exact, so it does not use it.
public enum TerminalText {
    /// `text` with every control, bidi and separator character shown as an escape.
    /// `keepingLineBreaks` lets `\n` and `\t` through, for multi-line blocks such as a tool's
    /// output; a single field (a table cell, an ID in a message) must keep it false, or a
    /// value could start a line that looks like another row.
    public static func escape(_ text: String, keepingLineBreaks: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars { append(scalar, to: &out, keepingLineBreaks: keepingLineBreaks) }
        return out
    }

    /// Bytes as text, escaped like `escape(_:)`; bytes that are not valid UTF-8 show as `\xNN`
    /// (distinct from C1 controls, which show as `\u{NN}`).
    public static func escape(bytes: some Collection<UInt8>, keepingLineBreaks: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if let (scalar, next) = decode(bytes, at: index) {
                append(scalar, to: &out, keepingLineBreaks: keepingLineBreaks)
                index = next
            } else {
                out += "\\x" + hex(UInt32(bytes[index]), width: 2)
                index = bytes.index(after: index)
            }
        }
        return out
    }

    /// Whether a scalar must not reach a terminal as itself.
    public static func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x00...0x1F, 0x7F, 0x80...0x9F: true
        // LRM, RLM, ALM; LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI, PDI: reorder what follows.
        case 0x200E, 0x200F, 0x061C, 0x202A...0x202E, 0x2066...0x2069: true
        // Line and paragraph separators: some terminals and viewers break the line there.
        case 0x2028, 0x2029: true
        default: false
        }
    }

    static func append(_ scalar: Unicode.Scalar, to out: inout String, keepingLineBreaks: Bool) {
        let v = scalar.value
        if v == 0x5C {
            out += "\\\\"
        } else if keepingLineBreaks && (v == 0x0A || v == 0x09) {
            out.unicodeScalars.append(scalar)
        } else if !needsEscape(scalar) {
            out.unicodeScalars.append(scalar)
        } else if v < 0x80 {
            out += "\\x" + hex(v, width: 2)
        } else {
            out += "\\u{" + hex(v, width: 1) + "}"
        }
    }

    /// One UTF-8 scalar at `index` and the index after it; nil when the bytes there are not
    /// well-formed UTF-8 (overlong forms, surrogates and values past U+10FFFF included).
    static func decode<C: Collection<UInt8>>(_ bytes: C, at index: C.Index) -> (Unicode.Scalar, C.Index)? {
        let b0 = UInt32(bytes[index])
        let (count, initial, minimum): (Int, UInt32, UInt32) =
            switch b0 {
            case 0x00...0x7F: (1, b0, 0)
            case 0xC2...0xDF: (2, b0 & 0x1F, 0x80)
            case 0xE0...0xEF: (3, b0 & 0x0F, 0x800)
            case 0xF0...0xF4: (4, b0 & 0x07, 0x10000)
            default: (0, 0, 0)
            }
        guard count > 0 else { return nil }
        var value = initial
        var i = bytes.index(after: index)
        for _ in 1..<count {
            guard i != bytes.endIndex, bytes[i] & 0xC0 == 0x80 else { return nil }
            value = value << 6 | UInt32(bytes[i] & 0x3F)
            i = bytes.index(after: i)
        }
        guard value >= minimum, let scalar = Unicode.Scalar(value) else { return nil }
        return (scalar, i)
    }

    static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
