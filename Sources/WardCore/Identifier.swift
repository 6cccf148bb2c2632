/// The rules for the names an agent or a user chooses: call IDs, journal keys, checkpoint
/// labels, tool names, run IDs.
///
/// An identifier is stored, hashed, verified, listed and exported; each layer must see the
/// same identifier. C strings end at NUL and terminals act on control characters, so a call
/// ID `x\u{0}a` would be listed as `x` (aliased to another call) and an `ESC ]` sequence
/// would retitle the operator's terminal. Rather than trust every layer to carry such bytes,
/// ward refuses them at the edge: an identifier is non-empty, at most `maximumBytes` UTF-8
/// bytes, and holds no control character (Unicode category Cc: U+0000–U+001F,
/// U+007F–U+009F). Any other Unicode text round-trips byte for byte; two identifiers are the
/// same exactly when their UTF-8 bytes are (see `ExactString`).
///
/// ```swift
/// Identifier.problem(in: "step-7")           // nil: fine
/// Identifier.problem(in: "x\u{0}a")          // "holds a control character (U+0000) at byte 1"
/// ```
public enum Identifier {
    /// The longest identifier, in UTF-8 bytes.
    public static let maximumBytes = 1024
    /// The longest run ID: a run ID also names the run's socket file, whose whole path must
    /// fit `sockaddr_un` (107 bytes).
    public static let maximumRunIDBytes = 64

    /// What is wrong with `text` as an identifier, or nil when it is fine.
    public static func problem(in text: String, maximumBytes: Int = Identifier.maximumBytes) -> String? {
        let count = text.utf8.count
        if count == 0 { return "is empty" }
        if count > maximumBytes { return "is \(count) bytes long (at most \(maximumBytes))" }
        var offset = 0
        for scalar in text.unicodeScalars {
            if isControl(scalar) { return "holds a control character (\(scalar.codeName)) at byte \(offset)" }
            offset += UTF8.width(scalar)
        }
        return nil
    }

    /// What is wrong with `text` as a run ID, or nil. A run ID names files (its socket), so
    /// it is narrower than other identifiers: letters, digits and `._-:@+`, not starting
    /// with `.` (never `.` or `..`), at most `maximumRunIDBytes`.
    public static func runIDProblem(in text: String) -> String? {
        if let problem = problem(in: text, maximumBytes: maximumRunIDBytes) { return problem }
        if text.hasPrefix(".") { return "starts with \".\"" }
        for (offset, byte) in text.utf8.enumerated() {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): continue
            case UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: ":"), UInt8(ascii: "@"), UInt8(ascii: "+"): continue
            default:
                let what = byte < 0x80 ? "\"\(Character(Unicode.Scalar(byte)))\"" : "a non-ASCII character"
                return "holds \(what) at byte \(offset) (run IDs are letters, digits and ._-:@+)"
            }
        }
        return nil
    }

    /// Unicode's Cc category: C0 controls, DEL and C1 controls.
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }
}

extension Unicode.Scalar {
    /// `U+001B`: how a character is named in an error message without printing it.
    var codeName: String {
        let hex = String(value, radix: 16, uppercase: true)
        return "U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
    }
}

/// A string compared and hashed by its UTF-8 bytes.
///
/// Swift's `String ==` is canonical equivalence: `"é"` (U+00E9) equals `"e\u{301}"`, and
/// `"\u{212A}"` (Kelvin sign) equals `"K"`. SQLite compares bytes, so two such call IDs
/// are two calls in the ledger; a Swift dictionary keyed by `String` would fold them into
/// one and, say, `ledger verify` would call one of them inserted. Key by this instead.
public struct ExactString: Hashable, Sendable, CustomStringConvertible {
    public let value: String
    public init(_ value: String) { self.value = value }

    public static func == (a: ExactString, b: ExactString) -> Bool { a.value.utf8.elementsEqual(b.value.utf8) }
    public func hash(into hasher: inout Hasher) {
        var copy = value
        copy.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
    public var description: String { value }
}
