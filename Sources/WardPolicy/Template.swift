/// `{name}` placeholders in command elements, paths and environment values.
///
/// A placeholder is `{` + a name of letters, digits, `_` or `-` + `}`; `{{` and `}}` stand
/// for literal braces (a shell's `${{HOME}}` or `{{ a; b; }}`); any other `{` is an error. Substitution happens
/// inside one argv element and never splits or joins elements, and nothing is ever handed
/// to a shell by ward: `["/bin/sh", "-c", "{command}"]` runs exactly the agent's string.
public enum Template {
    /// The run's workspace directory.
    public static let workspace = "workspace"

    /// The placeholder names in `text`, in order.
    public static func placeholders(in text: String) -> [String] {
        var names: [String] = []
        forEachToken(in: text) { token in
            if case .placeholder(let name) = token { names.append(name) }
        }
        return names
    }

    /// A `{`…`}` that is not a well-formed placeholder, for `ward policy check`.
    public static func malformedBrace(in text: String) -> String? {
        var bad: String?
        forEachToken(in: text) { token in
            if case .malformed(let s) = token, bad == nil { bad = s }
        }
        return bad
    }

    /// Replaces every placeholder with its value; a name without a value is reported.
    public static func expand(_ text: String, values: [String: String]) throws(PolicyError) -> String {
        var out = ""
        var missing: String?
        forEachToken(in: text) { token in
            switch token {
            case .literal(let s), .malformed(let s): out += s
            case .placeholder(let name):
                if let v = values[name] { out += v } else if missing == nil { missing = name }
            }
        }
        if let missing {
            throw PolicyError(message: "missing argument \"\(missing)\" (the command uses {\(missing)})", code: .invalidArguments)
        }
        return out
    }

    private enum Token {
        case literal(String)
        case placeholder(String)
        case malformed(String)
    }

    private static func isNameCharacter(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "_" || c == "-")
    }

    private static func forEachToken(in text: String, _ body: (Token) -> Void) {
        var rest = Substring(text)
        while let open = rest.firstIndex(where: { $0 == "{" || $0 == "}" }) {
            if open > rest.startIndex { body(.literal(String(rest[..<open]))) }
            let afterOpen = rest.index(after: open)
            // `{{` and `}}`: one literal brace.
            if afterOpen < rest.endIndex, rest[afterOpen] == rest[open] {
                body(.literal(String(rest[open])))
                rest = rest[rest.index(after: afterOpen)...]
                continue
            }
            if rest[open] == "}" {
                body(.malformed("}"))
                rest = rest[afterOpen...]
                continue
            }
            if let close = rest[afterOpen...].firstIndex(of: "}") {
                let name = rest[afterOpen..<close]
                if !name.isEmpty, name.allSatisfy(isNameCharacter) {
                    body(.placeholder(String(name)))
                } else {
                    body(.malformed(String(rest[open...close])))
                }
                rest = rest[rest.index(after: close)...]
            } else {
                body(.malformed(String(rest[open...])))
                rest = rest[rest.endIndex...]
            }
        }
        if !rest.isEmpty { body(.literal(String(rest))) }
    }
}
