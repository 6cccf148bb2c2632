/// A JSON value as ward reads it from agents: strict RFC 8259 input, and a canonical
/// RFC 8785 (JCS) serialization so that equal arguments hash equally wherever they came from.
///
/// ```swift
/// let args = try JSONValue.parse(#"{"b": 1.0, "a": "x"}"#)
/// args.canonical   // {"a":"x","b":1}
/// ```
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// The members of an object, or nil.
    public var objectValue: [String: JSONValue]? {
        if case .object(let members) = self { return members }
        return nil
    }

    /// The items of an array, or nil.
    public var arrayValue: [JSONValue]? {
        if case .array(let items) = self { return items }
        return nil
    }

    /// The string, or nil.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The number as a `T` when it is exactly one (integral and in range), else nil: a
    /// peer's `1e300` or `1.5` never traps a conversion.
    public func integer<T: FixedWidthInteger>(_: T.Type = Int.self) -> T? {
        if case .number(let d) = self { return T(exactly: d) }
        return nil
    }

    /// Whether it is, or holds, an integral number past 2^53 in magnitude: one that a
    /// double may not have held exactly as it was sent.
    public var holdsIntegerPastExactRange: Bool {
        switch self {
        case .number(let d): d == d.rounded() && abs(d) >= 9_007_199_254_740_992
        case .array(let items): items.contains { $0.holdsIntegerPastExactRange }
        case .object(let members): members.values.contains { $0.holdsIntegerPastExactRange }
        default: false
        }
    }

    /// The JSON type's name, for error messages ("expected an object, got array").
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "boolean"
        case .number: "number"
        case .string: "string"
        case .array: "array"
        case .object: "object"
        }
    }
}

// MARK: - Serialization

extension JSONValue {
    /// The RFC 8785 canonical form: object keys sorted by UTF-16 code units, no whitespace,
    /// numbers in ECMAScript's shortest form, minimal string escapes.
    public var canonical: String { String(decoding: canonicalBytes, as: UTF8.self) }

    /// The canonical form as UTF-8 bytes (written as bytes: every request, response and
    /// ledger event goes through here).
    public var canonicalBytes: [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        write(into: &out)
        return out
    }

    private func write(into out: inout [UInt8]) {
        switch self {
        case .null: out += "null".utf8
        case .bool(let b): out += (b ? "true" : "false").utf8
        case .number(let d): JSONValue.writeNumber(d, into: &out)
        case .string(let s): JSONValue.writeString(s, into: &out)
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(into: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, key) in members.keys.sorted(by: JSONValue.utf16Precedes).enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(key, into: &out)
                out.append(UInt8(ascii: ":"))
                members[key]!.write(into: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    /// RFC 8785 orders keys by UTF-16 code units. UTF-8 bytes order code points, which is
    /// the same order except between U+E000–U+FFFF and supplementary characters (surrogates
    /// in UTF-16): only a difference at such lead bytes (0xEE and up) needs UTF-16.
    static func utf16Precedes(_ a: String, _ b: String) -> Bool {
        var i = a.utf8.makeIterator(), j = b.utf8.makeIterator()
        while true {
            switch (i.next(), j.next()) {
            case (nil, nil): return false
            case (nil, _): return true
            case (_, nil): return false
            case let (x?, y?) where x != y:
                if x >= 0xEE && y >= 0xEE { return a.utf16.lexicographicallyPrecedes(b.utf16) }
                return x < y
            default: continue
            }
        }
    }

    static func writeString(_ s: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += #"\""#.utf8
            case UInt8(ascii: "\\"): out += #"\\"#.utf8
            case 0x08: out += #"\b"#.utf8
            case 0x0C: out += #"\f"#.utf8
            case 0x0A: out += #"\n"#.utf8
            case 0x0D: out += #"\r"#.utf8
            case 0x09: out += #"\t"#.utf8
            case ..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out += #"\u00"#.utf8
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 15)])
            default:
                out.append(byte)  // UTF-8 multi-byte sequences pass through whole
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    static func writeNumber(_ d: Double, into out: inout [UInt8]) {
        guard d == d.rounded(), abs(d) < 9.007199254740992e15 else {
            out += format(number: d).utf8
            return
        }
        // Integers, the common case (ids, counts, exit codes), without a String.
        var v = Int64(d)
        if v == 0 { out.append(UInt8(ascii: "0")); return }
        if v < 0 { out.append(UInt8(ascii: "-")); v = -v }
        let start = out.count
        while v > 0 {
            out.append(UInt8(ascii: "0") + UInt8(v % 10))
            v /= 10
        }
        out[start...].reverse()
    }

    /// ECMAScript Number::toString, as RFC 8785 requires: integers without a fraction,
    /// exponent form from 1e21 and below 1e-6, shortest round-trip digits otherwise.
    public static func format(number d: Double) -> String {
        if d == 0 { return "0" }
        if d == d.rounded(), abs(d) < 1e21 {
            if abs(d) < 9.007199254740992e15 { return String(Int64(d)) }
        }
        // Swift's description is the shortest round-trip form; re-shape it to ECMAScript's.
        let (digits, exponent) = shortestDigits(abs(d))
        let sign = d < 0 ? "-" : ""
        let k = digits.count
        let n = exponent  // value = 0.digits × 10^n
        if k <= n && n <= 21 {
            return sign + digits + String(repeating: "0", count: n - k)
        }
        if 0 < n && n <= 21 {
            let i = digits.index(digits.startIndex, offsetBy: n)
            return sign + digits[..<i] + "." + digits[i...]
        }
        if -6 < n && n <= 0 {
            return sign + "0." + String(repeating: "0", count: -n) + digits
        }
        let e = n - 1
        let expPart = e < 0 ? "e-\(-e)" : "e+\(e)"
        if k == 1 { return sign + digits + expPart }
        return sign + String(digits.first!) + "." + digits.dropFirst() + expPart
    }

    /// Decimal digits (no leading/trailing zeros) and n such that value = 0.d1d2… × 10^n.
    private static func shortestDigits(_ d: Double) -> (String, Int) {
        let text = "\(d)"  // e.g. "1.5e-07", "123.25", "1e+22"
        var mantissa = Substring(text)
        var exp = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            mantissa = text[..<e]
            exp = Int(text[text.index(after: e)...]) ?? 0
        }
        var intPart = mantissa
        var fracPart: Substring = ""
        if let dot = mantissa.firstIndex(of: ".") {
            intPart = mantissa[..<dot]
            fracPart = mantissa[mantissa.index(after: dot)...]
        }
        var digits = String(intPart) + fracPart
        var n = intPart.count + exp
        while digits.first == "0" && digits.count > 1 {
            digits.removeFirst()
            n -= 1
        }
        while digits.last == "0" && digits.count > 1 { digits.removeLast() }
        return (digits, n)
    }
}

// MARK: - Parsing

/// Why a JSON text was refused, with the byte offset where the parser stopped.
public struct JSONParseError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public let offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

extension JSONValue {
    /// The deepest nesting accepted: deep enough for real arguments, shallow enough that a
    /// hostile request cannot exhaust the stack.
    public static let maximumDepth = 256

    /// Parses one JSON text (RFC 8259; invalid UTF-8, lone surrogates, duplicate keys and
    /// trailing bytes are refused).
    public static func parse(_ text: String) throws(JSONParseError) -> JSONValue {
        try parse(Array(text.utf8))
    }

    /// Parses one JSON text from UTF-8 bytes.
    public static func parse(_ bytes: [UInt8]) throws(JSONParseError) -> JSONValue {
        var inexact: String?
        return try parse(bytes, inexactInteger: &inexact)
    }

    /// Parses one JSON text, and sets `inexactInteger` to the first integer literal past
    /// 2^53 in magnitude that would not come back as it was sent (`9007199254740993` reads
    /// as `9007199254740992`; `4611686018427387904` is written `4611686018427388000`). The value is still returned; a caller that records what it was
    /// sent refuses such a text rather than store, hash or echo a number it was not sent.
    public static func parse(_ bytes: [UInt8], inexactInteger: inout String?) throws(JSONParseError) -> JSONValue {
        var parser = Parser(bytes: bytes)
        parser.skipWhitespace()
        let value = try parser.value(depth: 0)
        parser.skipWhitespace()
        if parser.pos != bytes.count { throw parser.error("unexpected data after the JSON value") }
        inexactInteger = parser.inexactInteger
        return value
    }
}

private struct Parser {
    let bytes: [UInt8]
    var pos = 0
    /// The first integer literal that reads as a different number.
    var inexactInteger: String?

    func error(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: pos) }

    mutating func skipWhitespace() {
        while pos < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[pos]) { pos += 1 }
    }

    mutating func value(depth: Int) throws(JSONParseError) -> JSONValue {
        guard depth < JSONValue.maximumDepth else { throw error("nesting deeper than \(JSONValue.maximumDepth)") }
        guard pos < bytes.count else { throw error("unexpected end of input") }
        switch bytes[pos] {
        case UInt8(ascii: "{"): return try object(depth: depth)
        case UInt8(ascii: "["): return try array(depth: depth)
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default: return .number(try number())
        }
    }

    mutating func literal(_ word: String) throws(JSONParseError) {
        for b in word.utf8 {
            guard pos < bytes.count, bytes[pos] == b else { throw error("invalid literal") }
            pos += 1
        }
    }

    mutating func object(depth: Int) throws(JSONParseError) -> JSONValue {
        pos += 1
        var members: [String: JSONValue] = [:]
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
        while true {
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw error("expected a string key") }
            let key = try string()
            skipWhitespace()
            guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw error("expected ':'") }
            pos += 1
            skipWhitespace()
            let v = try value(depth: depth + 1)
            guard members.updateValue(v, forKey: key) == nil else { throw error("duplicate key \"\(key)\"") }
            skipWhitespace()
            guard pos < bytes.count else { throw error("unexpected end of input") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(members) }
            throw error("expected ',' or '}'")
        }
    }

    mutating func array(depth: Int) throws(JSONParseError) -> JSONValue {
        pos += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
        while true {
            skipWhitespace()
            items.append(try value(depth: depth + 1))
            skipWhitespace()
            guard pos < bytes.count else { throw error("unexpected end of input") }
            if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
            if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(items) }
            throw error("expected ',' or ']'")
        }
    }

    mutating func hex4() throws(JSONParseError) -> UInt32 {
        guard pos + 4 <= bytes.count else { throw error("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[pos]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw error("bad \\u escape")
            }
            v = v * 16 + d
            pos += 1
        }
        return v
    }

    mutating func string() throws(JSONParseError) -> String {
        pos += 1
        // UTF-8 bytes, made a String once at the end: appending to a String's scalars copies
        // the whole string at each escape, quadratic in a large output full of newlines.
        var utf8: [UInt8] = []
        var runStart = pos
        func flush(_ p: inout Parser, upTo end: Int, into s: inout [UInt8]) throws(JSONParseError) {
            guard runStart < end else { return }
            let run = p.bytes[runStart..<end]
            guard String(validating: run, as: UTF8.self) != nil else { throw p.error("invalid UTF-8 in string") }
            s.append(contentsOf: run)
        }
        while true {
            guard pos < bytes.count else { throw error("unterminated string") }
            let c = bytes[pos]
            if c == UInt8(ascii: "\"") {
                try flush(&self, upTo: pos, into: &utf8)
                pos += 1
                return String(decoding: utf8, as: UTF8.self)
            }
            if c < 0x20 { throw error("control character in string") }
            if c != UInt8(ascii: "\\") { pos += 1; continue }
            try flush(&self, upTo: pos, into: &utf8)
            pos += 1
            guard pos < bytes.count else { throw error("unterminated escape") }
            let e = bytes[pos]
            pos += 1
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(e)
            case UInt8(ascii: "b"): utf8.append(0x08)
            case UInt8(ascii: "f"): utf8.append(0x0C)
            case UInt8(ascii: "n"): utf8.append(0x0A)
            case UInt8(ascii: "r"): utf8.append(0x0D)
            case UInt8(ascii: "t"): utf8.append(0x09)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if (0xD800...0xDBFF).contains(code) {
                    guard pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") else {
                        throw error("lone surrogate in string")
                    }
                    pos += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw error("lone surrogate in string") }
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(code) {
                    throw error("lone surrogate in string")
                }
                utf8.append(contentsOf: Unicode.Scalar(code)!.utf8)
            default: throw error("bad escape")
            }
            runStart = pos
        }
    }

    mutating func number() throws(JSONParseError) -> Double {
        let start = pos
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "-") { pos += 1 }
        guard pos < bytes.count, (0x30...0x39).contains(bytes[pos]) else { throw error("unexpected character") }
        if bytes[pos] == 0x30 {
            pos += 1
        } else {
            while pos < bytes.count, (0x30...0x39).contains(bytes[pos]) { pos += 1 }
        }
        var integral = true
        if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
            integral = false
            pos += 1
            guard pos < bytes.count, (0x30...0x39).contains(bytes[pos]) else { throw error("digit expected after '.'") }
            while pos < bytes.count, (0x30...0x39).contains(bytes[pos]) { pos += 1 }
        }
        if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
            integral = false
            pos += 1
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            guard pos < bytes.count, (0x30...0x39).contains(bytes[pos]) else { throw error("digit expected in exponent") }
            while pos < bytes.count, (0x30...0x39).contains(bytes[pos]) { pos += 1 }
        }
        let text = String(decoding: bytes[start..<pos], as: UTF8.self)
        guard let d = Double(text), d.isFinite else { throw error("number out of range") }
        // Past 2^53 an integer is kept only if its canonical form (RFC 8785, as ward hashes,
        // stores and echoes it) is the literal itself: 2^62 is a double, but it would come
        // back as 4611686018427388000.
        if inexactInteger == nil, integral, abs(d) >= 9_007_199_254_740_992, JSONValue.format(number: d) != text {
            inexactInteger = text
        }
        return d
    }
}
