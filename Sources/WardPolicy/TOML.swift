/// A TOML 1.0 reader for policy files, with the position of every key and of every string in
/// an array, so a problem of meaning (an unknown key, a bad syscall name) is reported at its
/// file:line:column.
///
/// ward reads policies with this instead of a library because the one available (TOMLKit,
/// over toml++) aborts the whole process on some malformed input (`[` then a newline,
/// `x=[}`: its assertions are compiled in, and without them those paths are undefined
/// behaviour), leaks every string it returns, and gives no positions outside syntax errors.
/// Policy files are small and read once, so this favours plain code over speed.

/// A TOML value.
indirect enum Node: Sendable {
    case string(String)
    case integer(Int)
    case double(Double)
    case bool(Bool)
    case array([Node])
    case table([String: Node])
    /// A date or time: valid TOML, never a meaningful policy value.
    case dateTime(String)

    var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .double: "float"
        case .bool: "boolean"
        case .array: "array"
        case .table: "table"
        case .dateTime: "date-time"
        }
    }
}

/// Where each key, and each string element of an array, stands in a file.
struct SourceMap: Sendable {
    struct Position: Hashable, Sendable {
        var line: Int
        var column: Int
    }

    fileprivate(set) var keys: [[String]: Position] = [:]
    fileprivate(set) var strings: [[String]: [(String, Position)]] = [:]

    /// Records where `path` is defined; its implicit parents (`tools` of `[tools.a]`) are
    /// placed there too unless already known.
    fileprivate mutating func record(_ path: [String], at position: Position) {
        for n in 1..<path.count where keys[Array(path[..<n])] == nil { keys[Array(path[..<n])] = position }
        keys[path] = position
    }

    /// The position of a key path, or of its nearest known ancestor, or 1:1.
    func position(of path: [String]) -> Position {
        var p = path
        while !p.isEmpty {
            if let pos = keys[p] { return pos }
            p.removeLast()
        }
        return Position(line: 1, column: 1)
    }

    /// The position of a string element (`"ptrace"`) of the array at `path`; the key's
    /// position when there is no such element.
    func position(ofString element: String, in path: [String]) -> Position {
        strings[path]?.first { $0.0 == element }?.1 ?? position(of: path)
    }
}

struct TOMLSyntaxError: Error {
    let position: SourceMap.Position
    let message: String
}

struct TOMLReader {
    /// Tables under construction: what defined them decides what may extend them.
    private final class Table {
        enum Origin { case implicit, header, dotted }
        var origin: Origin
        var entries: [String: Entry] = [:]
        init(_ origin: Origin) { self.origin = origin }

        var node: Node {
            .table(entries.mapValues { entry in
                switch entry {
                case .value(let v): v
                case .table(let t): t.node
                case .tables(let ts): .array(ts.map(\.node))
                }
            })
        }
    }

    private enum Entry {
        case value(Node)  // includes inline tables and arrays written as values: never extended
        case table(Table)
        case tables([Table])  // an array of tables ([[name]])
    }

    private let s: [Unicode.Scalar]
    private var i = 0
    private var line = 1
    private var lineStart = 0
    private(set) var map = SourceMap()

    /// Parses a whole document.
    static func parse(_ text: String) throws(TOMLSyntaxError) -> (root: [String: Node], map: SourceMap) {
        var reader = TOMLReader(s: Array(text.unicodeScalars))
        let root = try reader.document()
        guard case .table(let members) = root.node else { preconditionFailure("the root is a table") }
        return (members, reader.map)
    }

    private init(s: [Unicode.Scalar]) { self.s = s }

    // MARK: Characters

    private var position: SourceMap.Position { .init(line: line, column: i - lineStart + 1) }
    private var atEnd: Bool { i >= s.count }
    private var current: Unicode.Scalar? { i < s.count ? s[i] : nil }
    private func peek(_ offset: Int) -> Unicode.Scalar? { i + offset < s.count ? s[i + offset] : nil }

    private func fail(_ message: String) -> TOMLSyntaxError { TOMLSyntaxError(position: position, message: message) }
    private func fail(_ message: String, at position: SourceMap.Position) -> TOMLSyntaxError {
        TOMLSyntaxError(position: position, message: message)
    }

    private mutating func advance() {
        if s[i] == "\n" { line += 1; lineStart = i + 1 }
        i += 1
    }

    private mutating func skipBlanks() {
        while let c = current, c == " " || c == "\t" { i += 1 }
    }

    /// At a newline (LF or CRLF): consumes it.
    private mutating func newline() throws(TOMLSyntaxError) -> Bool {
        if current == "\n" { advance(); return true }
        if current == "\r" {
            guard peek(1) == "\n" else { throw fail("a carriage return must be followed by a line feed") }
            i += 1; advance(); return true
        }
        return false
    }

    private mutating func skipComment() throws(TOMLSyntaxError) {
        guard current == "#" else { return }
        while let c = current, c != "\n" {
            if c == "\r" && peek(1) == "\n" { return }
            if isControl(c) { throw fail("control character U+\(hex(c)) in a comment") }
            i += 1
        }
    }

    /// Blanks, comments and newlines (between array elements).
    private mutating func skipBlanksCommentsNewlines() throws(TOMLSyntaxError) {
        while true {
            skipBlanks()
            try skipComment()
            if try !newline() { return }
        }
    }

    /// Blanks and an optional comment, then a newline or the end.
    private mutating func endOfLine(after what: String) throws(TOMLSyntaxError) {
        skipBlanks()
        try skipComment()
        if atEnd { return }
        guard try newline() else { throw fail("expected a new line after \(what)") }
    }

    private func isControl(_ c: Unicode.Scalar) -> Bool {
        (c.value < 0x20 && c != "\t") || c.value == 0x7F
    }

    private func hex(_ c: Unicode.Scalar) -> String {
        let h = String(c.value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 4 - h.count)) + h
    }

    private static func isBare(_ c: Unicode.Scalar) -> Bool {
        switch c {
        case "A"..."Z", "a"..."z", "0"..."9", "_", "-": true
        default: false
        }
    }

    // MARK: Document

    private mutating func document() throws(TOMLSyntaxError) -> Table {
        let root = Table(.header)
        var table = root
        var tablePath: [String] = []
        while true {
            try skipBlanksCommentsNewlines()
            guard let c = current else { return root }
            if c == "[" {
                let start = position
                let isArray = peek(1) == "["
                i += isArray ? 2 : 1
                skipBlanks()
                let path = try key()
                skipBlanks()
                guard current == "]", !isArray || peek(1) == "]" else { throw fail(isArray ? "expected ']]' to close the header" : "expected ']' to close the header") }
                i += isArray ? 2 : 1
                try endOfLine(after: "a table header")
                table = try isArray ? appendTable(root, path, at: start) : defineTable(root, path, at: start)
                tablePath = path
                map.record(path, at: start)
            } else {
                try keyValue(into: table, path: tablePath)
                try endOfLine(after: "a value")
            }
        }
    }

    /// `[a.b.c]`: creates or completes the table at `path`.
    private mutating func defineTable(_ root: Table, _ path: [String], at start: SourceMap.Position) throws(TOMLSyntaxError) -> Table {
        let parent = try descend(root, Array(path.dropLast()), at: start, dotted: false)
        let name = path[path.count - 1]
        switch parent.entries[name] {
        case nil:
            let t = Table(.header)
            parent.entries[name] = .table(t)
            return t
        case .table(let t) where t.origin == .implicit:
            t.origin = .header
            return t
        default:
            throw fail("[\(path.joined(separator: "."))] is already defined", at: start)
        }
    }

    /// `[[a.b.c]]`: appends a table to the array of tables at `path`.
    private mutating func appendTable(_ root: Table, _ path: [String], at start: SourceMap.Position) throws(TOMLSyntaxError) -> Table {
        let parent = try descend(root, Array(path.dropLast()), at: start, dotted: false)
        let name = path[path.count - 1]
        let t = Table(.header)
        switch parent.entries[name] {
        case nil: parent.entries[name] = .tables([t])
        case .tables(let ts): parent.entries[name] = .tables(ts + [t])
        default: throw fail("\(path.joined(separator: ".")) is already defined and is not an array of tables", at: start)
        }
        return t
    }

    /// Walks `path` from `table`, creating implicit tables; through an array of tables it
    /// goes into the last one.
    private mutating func descend(_ table: Table, _ path: [String], at start: SourceMap.Position, dotted: Bool) throws(TOMLSyntaxError) -> Table {
        var t = table
        for (n, name) in path.enumerated() {
            switch t.entries[name] {
            case nil:
                let child = Table(dotted ? .dotted : .implicit)
                t.entries[name] = .table(child)
                t = child
            case .table(let child) where !(dotted && child.origin == .header):
                // (Dotted keys may not reach into a table that a header defined.)
                t = child
            case .tables(let ts) where !dotted:
                t = ts[ts.count - 1]
            default:
                throw fail("\(path[...n].joined(separator: ".")) is already defined as a value", at: start)
            }
        }
        return t
    }

    /// `a.b = value` into `table`.
    private mutating func keyValue(into table: Table, path tablePath: [String]) throws(TOMLSyntaxError) {
        let start = position
        let key = try self.key()
        skipBlanks()
        guard current == "=" else { throw fail("expected '=' after the key") }
        i += 1
        skipBlanks()
        let full = tablePath + key
        let value = try self.value(path: full)
        let parent = try descend(table, Array(key.dropLast()), at: start, dotted: true)
        let name = key[key.count - 1]
        guard parent.entries[name] == nil else { throw fail("\(full.joined(separator: ".")) is defined twice", at: start) }
        parent.entries[name] = .value(value)
        map.record(full, at: start)
    }

    // MARK: Keys

    /// A dotted key: `a`, `a.b`, `"quoted key".c`.
    private mutating func key() throws(TOMLSyntaxError) -> [String] {
        var parts: [String] = []
        while true {
            skipBlanks()
            switch current {
            case "\"":
                guard peek(1) != "\"" || peek(2) != "\"" else { throw fail("a key cannot be a multi-line string") }
                parts.append(try basicString())
            case "'":
                guard peek(1) != "'" || peek(2) != "'" else { throw fail("a key cannot be a multi-line string") }
                parts.append(try literalString())
            case let c? where TOMLReader.isBare(c):
                var name = ""
                while let c = current, TOMLReader.isBare(c) { name.unicodeScalars.append(c); i += 1 }
                parts.append(name)
            default:
                throw fail("expected a key")
            }
            skipBlanks()
            guard current == "." else { return parts }
            i += 1
        }
    }

    // MARK: Values

    private mutating func value(path: [String]) throws(TOMLSyntaxError) -> Node {
        guard let c = current else { throw fail("expected a value") }
        switch c {
        case "\"":
            return .string(peek(1) == "\"" && peek(2) == "\"" ? try multiLineString(basic: true) : try basicString())
        case "'":
            return .string(peek(1) == "'" && peek(2) == "'" ? try multiLineString(basic: false) : try literalString())
        case "[":
            return try array(path: path)
        case "{":
            return try inlineTable(path: path)
        default:
            return try scalar()
        }
    }

    private mutating func array(path: [String]) throws(TOMLSyntaxError) -> Node {
        let opened = position
        i += 1
        var elements: [Node] = []
        while true {
            try skipBlanksCommentsNewlines()
            if atEnd { throw fail("the array opened at \(opened.line):\(opened.column) is not closed") }
            if current == "]" { i += 1; return .array(elements) }
            let start = position
            let element = try value(path: path)
            if case .string(let text) = element { map.strings[path, default: []].append((text, start)) }
            elements.append(element)
            try skipBlanksCommentsNewlines()
            switch current {
            case ",": i += 1
            case "]": i += 1; return .array(elements)
            case nil: throw fail("the array opened at \(opened.line):\(opened.column) is not closed")
            default: throw fail("expected ',' or ']' in the array")
            }
        }
    }

    private mutating func inlineTable(path: [String]) throws(TOMLSyntaxError) -> Node {
        i += 1
        let table = Table(.header)
        skipBlanks()
        if current == "}" { i += 1; return table.node }
        while true {
            skipBlanks()
            try keyValue(into: table, path: path)
            skipBlanks()
            switch current {
            case ",": i += 1
            case "}": i += 1; return table.node
            default: throw fail("expected ',' or '}' in the inline table (it must fit on one line)")
            }
        }
    }

    private mutating func basicString() throws(TOMLSyntaxError) -> String {
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard let c = current, c != "\n", !(c == "\r" && peek(1) == "\n") else { throw fail("the string is not closed on its line") }
            i += 1
            switch c {
            case "\"": return String(out)
            case "\\": out.append(try escape())
            case _ where isControl(c): i -= 1; throw fail("control character U+\(hex(c)) in a string")
            default: out.append(c)
            }
        }
    }

    private mutating func literalString() throws(TOMLSyntaxError) -> String {
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard let c = current, c != "\n", !(c == "\r" && peek(1) == "\n") else { throw fail("the string is not closed on its line") }
            if c == "'" { i += 1; return String(out) }
            if isControl(c) { throw fail("control character U+\(hex(c)) in a string") }
            out.append(c)
            i += 1
        }
    }

    /// `"""…"""` (with escapes and line-ending backslashes) or `'''…'''`.
    private mutating func multiLineString(basic: Bool) throws(TOMLSyntaxError) -> String {
        let quote: Unicode.Scalar = basic ? "\"" : "'"
        i += 3
        _ = try newline()  // a newline right after the opening quotes is not part of the string
        var out = String.UnicodeScalarView()
        while true {
            guard let c = current else { throw fail("the multi-line string is not closed") }
            if c == quote {
                var run = 0
                while current == quote { run += 1; i += 1 }
                if run >= 3 {
                    guard run <= 5 else { throw fail("too many quotes closing the string") }
                    for _ in 0..<(run - 3) { out.append(quote) }
                    return String(out)
                }
                for _ in 0..<run { out.append(quote) }
                continue
            }
            if try newline() { out.append("\n"); continue }
            if basic && c == "\\" {
                // A backslash ending a line trims the newline and the blanks that follow.
                var j = i + 1
                while j < s.count, s[j] == " " || s[j] == "\t" { j += 1 }
                if j < s.count, s[j] == "\n" || (s[j] == "\r" && j + 1 < s.count && s[j + 1] == "\n") {
                    i = j
                    while true {
                        skipBlanks()
                        if try !newline() { break }
                    }
                    continue
                }
                i += 1
                out.append(try escape())
                continue
            }
            if isControl(c) { throw fail("control character U+\(hex(c)) in a string") }
            out.append(c)
            i += 1
        }
    }

    /// After a backslash. Errors point at the backslash.
    private mutating func escape() throws(TOMLSyntaxError) -> Unicode.Scalar {
        let backslash = SourceMap.Position(line: line, column: i - lineStart)
        guard let c = current else { throw fail("the string is not closed") }
        i += 1
        switch c {
        case "b": return "\u{08}"
        case "t": return "\t"
        case "n": return "\n"
        case "f": return "\u{0C}"
        case "r": return "\r"
        case "e": return "\u{1B}"
        case "\"": return "\""
        case "\\": return "\\"
        case "u", "U":
            let count = c == "u" ? 4 : 8
            let digits = String(String.UnicodeScalarView(s[i..<min(i + count, s.count)]))
            guard digits.count == count, digits.allSatisfy(\.isHexDigit), let v = UInt32(digits, radix: 16), let scalar = Unicode.Scalar(v) else {
                throw fail("\\\(c)\(digits) is not a Unicode scalar value (\(count) hex digits)", at: backslash)
            }
            i += count
            return scalar
        default:
            throw fail("unknown escape \\\(c)", at: backslash)
        }
    }

    /// A boolean, number or date-time: one bare token.
    private mutating func scalar() throws(TOMLSyntaxError) -> Node {
        let start = position
        let begin = i
        while let c = current, TOMLReader.isBare(c) || c == "+" || c == "." || c == ":" { i += 1 }
        // A date and a time may be separated by one space.
        if i - begin == 10, current == " ", let d = peek(1), let e = peek(2), let f = peek(3),
           ("0"..."9").contains(d), ("0"..."9").contains(e), f == ":" {
            i += 1
            while let c = current, TOMLReader.isBare(c) || c == "+" || c == "." || c == ":" { i += 1 }
        }
        let token = String(String.UnicodeScalarView(s[begin..<i]))
        guard !token.isEmpty else { throw fail("expected a value") }
        if let node = TOMLReader.scalar(token) { return node }
        if TOMLReader.integer(token, wide: true) != nil {
            throw fail("integer \(token) does not fit in 64 bits (TOML integers are -9223372036854775808 to 9223372036854775807)", at: start)
        }
        throw fail("invalid value \(token)", at: start)
    }

    static func scalar(_ token: String) -> Node? {
        switch token {
        case "true": return .bool(true)
        case "false": return .bool(false)
        case "inf", "+inf": return .double(.infinity)
        case "-inf": return .double(-.infinity)
        case "nan", "+nan", "-nan": return .double(.nan)
        default: break
        }
        if isDateTime(token) { return .dateTime(token) }
        if let n = integer(token) { return .integer(n) }
        if let d = float(token) { return .double(d) }
        return nil
    }

    /// Digits with single underscores between them.
    private static func digits(_ text: Substring, _ isDigit: (Character) -> Bool) -> String? {
        guard let first = text.first, let last = text.last, isDigit(first), isDigit(last), !text.contains("__") else { return nil }
        guard text.allSatisfy({ isDigit($0) || $0 == "_" }) else { return nil }
        return text.replacingOccurrences("_", "")
    }

    private static func decimal(_ text: Substring) -> String? {
        guard let d = digits(text, { $0.isASCII && $0.isNumber }) else { return nil }
        return d.count > 1 && d.hasPrefix("0") ? nil : d  // no leading zeros
    }

    /// The integer `token` spells, or nil. With `wide`, any well-formed integer gives 0
    /// (rather than nil when it does not fit in an Int), so the caller can tell "too large"
    /// from "not a number".
    static func integer(_ token: String, wide: Bool = false) -> Int? {
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where token.hasPrefix(prefix) {
            let isDigit: (Character) -> Bool = { $0.isASCII && $0.isHexDigit && Int(String($0), radix: radix) != nil }
            guard let d = digits(token.dropFirst(2), isDigit) else { return nil }
            return Int(d, radix: radix) ?? (wide ? 0 : nil)
        }
        var body = Substring(token)
        var sign = ""
        if let f = body.first, f == "+" || f == "-" { sign = f == "-" ? "-" : ""; body = body.dropFirst() }
        guard let d = decimal(body) else { return nil }
        return Int(sign + d) ?? (wide ? 0 : nil)
    }

    static func float(_ token: String) -> Double? {
        var body = Substring(token)
        var text = ""
        if let f = body.first, f == "+" || f == "-" { text = f == "-" ? "-" : ""; body = body.dropFirst() }
        let exponentAt = body.firstIndex { $0 == "e" || $0 == "E" }
        let mantissa = body[..<(exponentAt ?? body.endIndex)]
        let parts = mantissa.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count <= 2, let whole = decimal(parts[0]) else { return nil }
        text += whole
        if parts.count == 2 {
            guard let fraction = digits(parts[1], { $0.isASCII && $0.isNumber }) else { return nil }
            text += "." + fraction
        }
        if let e = exponentAt {
            var exp = body[body.index(after: e)...]
            var expSign = ""
            if let f = exp.first, f == "+" || f == "-" { expSign = String(f); exp = exp.dropFirst() }
            guard let d = digits(exp, { $0.isASCII && $0.isNumber }) else { return nil }
            text += "e" + expSign + d
        } else if parts.count == 1 {
            return nil  // an integer, not a float
        }
        return Double(text)
    }

    /// RFC 3339 dates and times as TOML allows them (checked for shape only).
    static func isDateTime(_ token: String) -> Bool {
        let c = Array(token.utf8)
        func digits(_ range: Range<Int>) -> Bool { range.upperBound <= c.count && range.allSatisfy { c[$0] >= 0x30 && c[$0] <= 0x39 } }
        func time(_ at: Int) -> Int? {  // HH:MM:SS[.fraction], returns the index after it
            guard digits(at..<(at + 2)), c.count > at + 2, c[at + 2] == UInt8(ascii: ":"), digits((at + 3)..<(at + 5)),
                  c.count > at + 5, c[at + 5] == UInt8(ascii: ":"), digits((at + 6)..<(at + 8)) else { return nil }
            var j = at + 8
            if j < c.count && c[j] == UInt8(ascii: ".") {
                j += 1
                let f = j
                while j < c.count && c[j] >= 0x30 && c[j] <= 0x39 { j += 1 }
                if j == f { return nil }
            }
            return j
        }
        if let end = time(0) { return end == c.count }
        guard digits(0..<4), c.count >= 10, c[4] == UInt8(ascii: "-"), digits(5..<7), c[7] == UInt8(ascii: "-"), digits(8..<10) else { return false }
        if c.count == 10 { return true }
        guard [UInt8(ascii: "T"), UInt8(ascii: "t"), UInt8(ascii: " ")].contains(c[10]), var j = time(11) else { return false }
        if j == c.count { return true }
        if c[j] == UInt8(ascii: "Z") || c[j] == UInt8(ascii: "z") { return j + 1 == c.count }
        guard c[j] == UInt8(ascii: "+") || c[j] == UInt8(ascii: "-"), digits((j + 1)..<(j + 3)), c.count == j + 6,
              c[j + 3] == UInt8(ascii: ":"), digits((j + 4)..<(j + 6)) else { return false }
        j += 6
        return j == c.count
    }
}

extension Substring {
    fileprivate func replacingOccurrences(_ target: Character, _ replacement: String) -> String {
        var out = ""
        for ch in self { if ch == target { out += replacement } else { out.append(ch) } }
        return out
    }
}
