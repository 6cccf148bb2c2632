/// Shell words: commands that ward prints for an operator to paste must run as printed,
/// whatever the run ID, call ID or path holds.
public enum Shell {
    /// `text` as one POSIX shell word: unchanged when it holds only characters no shell
    /// treats specially, else single-quoted (a `'` inside becomes `'\''`).
    ///
    /// ```swift
    /// Shell.quote("step-5")       // step-5
    /// Shell.quote("it's here")    // 'it'\''s here'
    /// ```
    public static func quote(_ text: String) -> String {
        let plain = !text.isEmpty && text.utf8.allSatisfy { b in
            switch b {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
            case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: ":"), UInt8(ascii: "@"),
                 UInt8(ascii: "+"), UInt8(ascii: "="), UInt8(ascii: ","): true
            default: false
            }
        }
        if plain && !text.hasPrefix("-") { return text }
        return "'" + text.split(separator: "'", omittingEmptySubsequences: false).joined(separator: #"'\''"#) + "'"
    }
}
