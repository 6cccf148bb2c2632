/// Where each key of a TOML file stands. TOMLKit reports positions for syntax errors only,
/// so errors about meaning (an unknown key, a bad size) are placed with this map: a line
/// scan that follows `[table]` headers, `key = value` lines and one level of inline tables.
struct SourceMap {
    struct Position: Hashable {
        var line: Int
        var column: Int
    }

    private var keys: [String: Position] = [:]
    private let lines: [Substring]

    init(text: String) {
        lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var table: [String] = []
        for (index, raw) in lines.enumerated() {
            let line = index + 1
            let indent = raw.prefix(while: { $0 == " " || $0 == "\t" }).count
            let body = raw.dropFirst(indent)
            if body.hasPrefix("[") {
                let isArray = body.hasPrefix("[[")
                let inner = body.dropFirst(isArray ? 2 : 1).prefix(while: { $0 != "]" })
                table = SourceMap.splitKey(inner)
                // `[tools.a.limits]` also places `tools` and `tools.a`, unless seen earlier.
                for depth in 1...max(table.count, 1) where depth <= table.count {
                    let path = table.prefix(depth).joined(separator: ".")
                    if depth == table.count || keys[path] == nil { keys[path] = Position(line: line, column: indent + 1) }
                }
                continue
            }
            guard let (key, valueStart) = SourceMap.keyAndValue(body) else { continue }
            let path = table + key
            keys[path.joined(separator: ".")] = Position(line: line, column: indent + 1)
            // One level of inline table: `limits = { memory = "1G", cpu = "10s" }`.
            let value = body[valueStart...]
            if value.hasPrefix("{") {
                var offset = body.distance(from: body.startIndex, to: valueStart) + 1
                for part in value.dropFirst().split(separator: ",", omittingEmptySubsequences: false) {
                    let lead = part.prefix(while: { $0 == " " }).count
                    if let (sub, _) = SourceMap.keyAndValue(part.dropFirst(lead)) {
                        keys[(path + sub).joined(separator: ".")] = Position(line: line, column: indent + offset + lead + 1)
                    }
                    offset += part.count + 1
                }
            }
        }
    }

    /// The position of a dotted key path, or of its nearest known ancestor, or 1:1.
    func position(of path: [String]) -> Position {
        var p = path
        while !p.isEmpty {
            if let pos = keys[p.joined(separator: ".")] { return pos }
            p.removeLast()
        }
        return Position(line: 1, column: 1)
    }

    /// The position of a string element (`"ptrace"`) of the array at `path`, searched from
    /// the key's line on; the key's position when it is not found.
    func position(ofString element: String, in path: [String]) -> Position {
        let start = position(of: path)
        for index in (start.line - 1)..<lines.count {
            let line = lines[index]
            for quote in ["\"", "'"] {
                if let range = line.range(of: quote + element + quote) {
                    return Position(line: index + 1, column: line.distance(from: line.startIndex, to: range.lowerBound) + 1)
                }
            }
            if index > start.line - 1, line.contains("=") && !line.trimmingPrefixWhitespace.hasPrefix("\"") { break }
        }
        return start
    }

    private static func splitKey(_ key: Substring) -> [String] {
        key.split(separator: ".").map { part in
            var s = part.trimmingPrefixWhitespace
            while s.last == " " { s.removeLast() }
            if (s.hasPrefix("\"") && s.hasSuffix("\"")) || (s.hasPrefix("'") && s.hasSuffix("'")), s.count >= 2 {
                s = s.dropFirst().dropLast()
            }
            return String(s)
        }
    }

    /// `key = value` → (key path, index of the value's first character).
    private static func keyAndValue(_ body: Substring) -> ([String], Substring.Index)? {
        guard let first = body.first, first.isLetter || first.isNumber || first == "\"" || first == "'" || first == "_" || first == "-" else {
            return nil
        }
        var inQuote: Character?
        var index = body.startIndex
        while index < body.endIndex {
            let c = body[index]
            if let q = inQuote {
                if c == q { inQuote = nil }
            } else if c == "\"" || c == "'" {
                inQuote = c
            } else if c == "=" {
                var valueStart = body.index(after: index)
                while valueStart < body.endIndex, body[valueStart] == " " { valueStart = body.index(after: valueStart) }
                return (splitKey(body[..<index]), valueStart)
            } else if c == "#" || c == "," {
                return nil
            }
            index = body.index(after: index)
        }
        return nil
    }
}

extension Substring {
    var trimmingPrefixWhitespace: Substring { drop(while: { $0 == " " || $0 == "\t" }) }
}
