import WardCore

/// One effect of a traced call, with the call it belongs to (`ward ledger effects`).
public struct RecordedEffect: Sendable {
    public var run: String
    public var callId: String
    public var tool: String
    /// The event that holds it: the call's outcome (`call.finish`) or, for a call caught
    /// mid-flight, the evidence it was put in doubt on (`call.in-doubt`).
    public var event: String
    public var at: String
    public var effect: Trace.Effect

    public var json: JSONValue {
        .object(["run": .string(run), "callId": .string(callId), "tool": .string(tool), "event": .string(event), "at": .string(at),
                 "effect": effect.json])
    }
}

extension Ledger {
    /// The effects of traced calls, oldest first: of one run, or all; only those whose path
    /// (or, for a rename or link, its new name) matches `path`, a glob (`*`, `?`, `[…]`, as
    /// SQLite's GLOB: `*` crosses `/`).
    public func effects(run: String? = nil, path: String? = nil) throws(LedgerError) -> [RecordedEffect] {
        try read("reading effects") { db in
            let sqlite = db.dialect == .sqlite
            var sql = """
                SELECT e.run_id, e.call_id, e.kind, e.at, c.tool, j.value AS effect
                FROM events e JOIN \(sqlite ? "json_each(e.body, '$.data.trace.effects') j"
                                            : "jsonb_array_elements(e.body::jsonb #> '{data,trace,effects}') WITH ORDINALITY AS j(value, key) ON true")
                LEFT JOIN calls c ON c.run_id = e.run_id AND c.call_id = e.call_id
                WHERE e.kind IN ('call.finish', 'call.in-doubt')
                """
            var args: [SQLValue] = []
            if let run { sql += " AND e.run_id = ?"; args.append(.text(run)) }
            if let path {
                // PostgreSQL has no GLOB: the same pattern as a regular expression.
                sql += sqlite ? " AND (json_extract(j.value, '$.path') GLOB ? OR json_extract(j.value, '$.to') GLOB ?)"
                              : " AND (j.value ->> 'path' ~ ? OR j.value ->> 'to' ~ ?)"
                let pattern = sqlite ? path : Ledger.globRegex(path)
                args += [.text(pattern), .text(pattern)]
            }
            sql += " ORDER BY e.run_id, e.seq, j.key"
            return try db.rows(sql, args).compactMap { row in
                guard let json = try? JSONValue.parse(row["effect"] as String), let effect = Trace.Effect(json: json) else { return nil }
                return RecordedEffect(run: row["run_id"], callId: row["call_id"], tool: row["tool"] ?? "?", event: row["kind"], at: row["at"],
                                      effect: effect)
            }
        }
    }

    /// A glob as SQLite's GLOB reads it (`*` any text, `/` too; `?` one character; `[…]` and
    /// `[^…]` a class), as an anchored POSIX regular expression.
    static func globRegex(_ glob: String) -> String {
        var out = "^"
        var chars = Array(glob.unicodeScalars)[...]
        while let c = chars.popFirst() {
            switch c {
            case "*": out += ".*"
            case "?": out += "."
            case "[":
                // SQLite's reading, step by step: a class runs to the first `]` after its
                // first member; `-` between a member and another character is a range (which
                // also matches its first end: a backwards one only that); a `[` left unclosed
                // matches nothing, there or ever.
                var members: [Unicode.Scalar] = [], ranges: [(Unicode.Scalar, Unicode.Scalar)] = [], closed = false
                let negated = chars.first == "^"
                if negated { chars.removeFirst() }
                if chars.first == "]" { members.append("]"); chars.removeFirst() }
                var prior: Unicode.Scalar?
                while let d = chars.popFirst() {
                    if d == "]" { closed = true; break }
                    if d == "-", let low = prior, let high = chars.first, high != "]" {
                        chars.removeFirst()
                        if low <= high { ranges.append((low, high)) }
                        prior = nil
                    } else {
                        members.append(d)
                        prior = d
                    }
                }
                guard closed else { return "(?!.)." }
                // Every member escaped: PostgreSQL would read `[:`, `\\` and `^` inside a class.
                func escaped(_ c: Unicode.Scalar) -> String { c.properties.isAlphabetic || c.properties.numericType != nil ? String(c) : "\\" + String(c) }
                let body = members.map(escaped).joined() + ranges.map { escaped($0.0) + "-" + escaped($0.1) }.joined()
                out += "[" + (negated ? "^" : "") + body + "]"
            default:
                out += "\\.^$|()+{}\\".unicodeScalars.contains(c) ? "\\" + String(c) : String(c)
            }
        }
        return out + "$"
    }

    /// A call's trace: its last execution's, from its outcome, else from the evidence it
    /// was put in doubt on; nil when the call is not traced (or has not ended).
    func trace(_ db: any SQLConnection, run: String, callId: String) throws -> Trace? {
        // The last execution's end, traced or not: an untraced one must not show an earlier one's.
        guard let data = try db.text("""
            SELECT \(db.dialect.json("body", "data", "trace")) FROM events
            WHERE run_id = ? AND call_id = ? AND kind IN ('call.finish', 'call.in-doubt') ORDER BY seq DESC LIMIT 1
            """, run, callId) else { return nil }
        return (try? JSONValue.parse(data)).flatMap(Trace.init(json:))
    }
}
