/// One request's params, read member by member. Every problem is an `invalid-arguments`
/// error that names the method, the member (also in `data.field`) and what is wrong with it,
/// and nothing an agent sends can trap: numbers become integers only when they are integral
/// and in range, strings become identifiers only under `Identifier`'s rules.
///
/// ```swift
/// let p = try Params(method: "checkpoint.load", params, known: ["seq"])
/// let seq = try p.integer("seq", in: 1...Params.maximumInteger)   // nil when absent or null
/// ```
public struct Params: Sendable {
    public let method: String
    public let members: [String: JSONValue]

    /// The largest integer a JSON number carries exactly (2^53 − 1): agents' JSON libraries
    /// read numbers as doubles, so a larger sequence number could not be sent back unchanged.
    public static let maximumInteger = 9_007_199_254_740_991

    /// Refuses params that are not an object, or that hold a member not in `known` (a
    /// misspelt `seqq` must not silently mean "the latest checkpoint").
    public init(method: String, _ params: JSONValue, known: Set<String>) throws(RPCError) {
        self.method = method
        guard let members = params.objectValue else {
            throw RPCError(.invalidArguments, "\(method): params must be an object, not \(params.typeName)", field: "params")
        }
        if let unknown = members.keys.filter({ !known.contains($0) }).min(by: JSONValue.utf16Precedes) {
            let expected = known.isEmpty ? "it takes none" : "it takes \(known.sorted().joined(separator: ", "))"
            throw RPCError(.invalidArguments, "\(method): unknown param \(Params.quote(unknown)) (\(expected))", field: unknown)
        }
        self.members = members
    }

    /// The member's value; nil when it is absent (an explicit null is a value).
    public func value(_ name: String) -> JSONValue? { members[name] }

    /// An `Identifier`: nil when absent or null and not `required`.
    public func identifier(_ name: String, required: Bool) throws(RPCError) -> String? {
        guard let value = members[name], value != .null else {
            if required { throw error(name, "is required (a string)") }
            return nil
        }
        guard let text = value.stringValue else { throw error(name, "must be a string, not \(value.typeName)") }
        if let problem = Identifier.problem(in: text) { throw error(name, problem) }
        return text
    }

    /// An integer in `range`: nil when absent or null. `1.5`, `1e300`, `-1` or `"3"` are
    /// refused, not rounded, clamped or converted.
    public func integer(_ name: String, in range: ClosedRange<Int>) throws(RPCError) -> Int? {
        guard let value = members[name], value != .null else { return nil }
        let bounds = "an integer from \(range.lowerBound) to \(range.upperBound)"
        guard case .number(let d) = value else { throw error(name, "must be \(bounds), not \(value.typeName)") }
        guard let n = Int(exactly: d), range.contains(n) else { throw error(name, "must be \(bounds), not \(JSONValue.format(number: d))") }
        return n
    }

    /// A duration in seconds, 0 to `limit` (fractions allowed): nil when absent or null.
    public func seconds(_ name: String, upTo limit: Double) throws(RPCError) -> Double? {
        guard let value = members[name], value != .null else { return nil }
        let bounds = "a number of seconds from 0 to \(JSONValue.format(number: limit))"
        guard case .number(let d) = value else { throw error(name, "must be \(bounds), not \(value.typeName)") }
        guard d >= 0, d <= limit else { throw error(name, "must be \(bounds), not \(JSONValue.format(number: d))") }
        return d
    }

    /// A JSON object: nil when absent.
    public func object(_ name: String) throws(RPCError) -> [String: JSONValue]? {
        guard let value = members[name] else { return nil }
        guard let object = value.objectValue else { throw error(name, "must be an object, not \(value.typeName)") }
        return object
    }

    /// `tool.call: callId is empty`.
    public func error(_ name: String, _ problem: String) -> RPCError {
        RPCError(.invalidArguments, "\(method): \(name) \(problem)", field: name)
    }

    /// A member name as an error message shows it: JSON-quoted (control characters
    /// escaped), and cut at 64 bytes.
    public static func quote(_ name: String) -> String {
        var cut = ""
        for character in name {
            if cut.utf8.count + character.utf8.count > 64 { cut += "…"; break }
            cut.append(character)
        }
        return JSONValue.string(cut).canonical
    }
}
