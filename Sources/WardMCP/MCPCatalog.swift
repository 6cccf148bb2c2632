import WardCore
import WardPolicy

/// A policy tool as MCP hosts see it (`tools/list`): a name they accept, its schemas, and
/// annotations that say what ward enforces rather than what a tool author hopes.
public struct MCPTool: Sendable {
    /// The name hosts call it by: the policy name with anything outside `[A-Za-z0-9_-]`
    /// made `_`, cut so that a host's `mcp__ward__NAME` stays within 64 characters.
    public let name: String
    public let policy: ToolPolicy
    /// The `Tool` object of `tools/list`.
    public let json: JSONValue
}

/// The tools of a policy set, in name order.
public enum MCPCatalog {
    /// Hosts prefix a server's tools (Claude Code: `mcp__SERVER__`) and refuse names over
    /// 64 characters; `mcp__ward__` leaves 53.
    static let maximumNameLength = 53

    /// - Parameter only: the policy names to publish (`--tools`); nil for all.
    /// - Throws: a message naming the tools `only` asks for that the policies do not have.
    public static func tools(_ policies: PolicySet, only: [String]? = nil) throws(MCPError) -> [MCPTool] {
        if let only, let missing = only.first(where: { policies.tools[$0] == nil }) {
            throw MCPError("--tools: no tool \(Params.quote(missing)) in \(policies.directory) (tools: \(policies.tools.keys.sorted().joined(separator: ", ")))")
        }
        var taken = Set<String>()
        var tools: [MCPTool] = []
        for name in policies.tools.keys.sorted() where only?.contains(name) ?? true {
            let policy = policies.tools[name]!
            let published = publishedName(name, taken: &taken)
            tools.append(MCPTool(name: published, policy: policy, json: descriptor(published, policy)))
        }
        return tools
    }

    /// A name hosts accept for `name`: anything outside `[A-Za-z0-9_-]` made `_`, cut to
    /// `maximumNameLength`, and numbered past the names already `taken` (which it joins).
    static func publishedName(_ name: String, taken: inout Set<String>) -> String {
        var published = String(String.UnicodeScalarView(name.unicodeScalars.map { scalar in
            scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar) || scalar == "_" || scalar == "-") ? scalar : "_"
        }).prefix(maximumNameLength))
        // Two names that read the same once cleaned get distinct suffixes.
        var n = 2
        while taken.contains(published) {
            let suffix = "_\(n)"
            published = String(published.prefix(maximumNameLength - suffix.count)) + suffix
            n += 1
        }
        taken.insert(published)
        return published
    }

    static func descriptor(_ name: String, _ policy: ToolPolicy) -> JSONValue {
        var members: [String: JSONValue] = [
            "name": .string(name),
            "description": .string(description(policy)),
            "inputSchema": policy.inputSchema.map(json) ?? inputSchema(policy),
            "outputSchema": outputSchema,
            "annotations": annotations(policy),
        ]
        if name != policy.name { members["title"] = .string(policy.name) }
        return .object(members)
    }

    /// The policy's description, and what a model must know to use the tool well: whether
    /// a repeat runs it again, and whether a person must approve each call first.
    static func description(_ policy: ToolPolicy) -> String {
        (policy.description.map { $0 + " " } ?? "") + effectSentence(policy.effect)
            + (policy.approve ? " Each call waits for a person's approval before it runs." : "")
    }

    /// What a model must know of a tool's effect: whether a repeat runs it again.
    static func effectSentence(_ effect: Effect) -> String {
        switch effect {
        case .readOnly: "Read-only."
        case .idempotent: "Idempotent: running it again with the same arguments changes nothing more."
        case .nonIdempotent: "Not idempotent: ward runs each call once; a repeated request gets the recorded result."
        }
    }

    /// What ward enforces, in MCP's words: read-only and idempotent follow the policy's
    /// effect (a read-only tool's sandbox writes nothing: `policy check` refuses write roots
    /// on one), open world follows its network.
    static func annotations(_ policy: ToolPolicy) -> JSONValue {
        annotations(effect: policy.effect, destructive: policy.destructive ?? (policy.effect == .nonIdempotent), network: policy.network)
    }

    static func annotations(effect: Effect, destructive: Bool, network: NetworkAccess) -> JSONValue {
        .object([
            "readOnlyHint": .bool(effect == .readOnly),
            "idempotentHint": .bool(effect != .nonIdempotent),
            "destructiveHint": .bool(effect != .readOnly && destructive),
            "openWorldHint": .bool(network == .any),
        ])
    }

    /// From the declared arguments, else the placeholders: a placeholder takes a string,
    /// number or boolean; a declared argument the command does not name is read from stdin
    /// as JSON, so it may be any value. Placeholders are required; a tool that declares its
    /// arguments takes no others.
    static func inputSchema(_ policy: ToolPolicy) -> JSONValue {
        let placeholders = policy.placeholders
        var properties: [String: JSONValue] = [:]
        for name in policy.arguments ?? placeholders {
            properties[name] = placeholders.contains(name)
                ? .object(["type": .array([.string("string"), .string("number"), .string("boolean")])])
                : .object([:])
        }
        var schema: [String: JSONValue] = [
            "type": .string("object"),
            "properties": .object(properties),
            "required": .array(placeholders.map { .string($0) }),
        ]
        if policy.arguments != nil { schema["additionalProperties"] = .bool(false) }
        return .object(schema)
    }

    /// The protocol's CallResult (docs/design.md, *Methods*), as `structuredContent`.
    static let outputSchema: JSONValue = {
        let nullableInteger = JSONValue.object(["type": .array([.string("integer"), .string("null")])])
        let string = JSONValue.object(["type": .string("string")])
        return .object([
            "type": .string("object"),
            "properties": .object([
                "callId": string, "tool": string,
                "status": .object(["type": .string("string"), "enum": .array(CallStatus.allCases.map { .string($0.rawValue) })]),
                "exitCode": nullableInteger, "signal": nullableInteger,
                "stdout": string, "stderr": string, "stdoutBase64": string, "stderrBase64": string,
                "truncated": .object(["type": .string("boolean")]),
                "durationMs": .object(["type": .string("number")]),
                "replayed": .object(["type": .string("boolean")]),
                "attempt": .object(["type": .string("integer")]),
                "resolution": .object(["type": .string("object")]),
            ]),
            "required": .array(["callId", "tool", "status", "replayed"].map { .string($0) }),
        ])
    }()

    static func json(_ value: PolicyValue) -> JSONValue {
        switch value {
        case .string(let s): .string(s)
        case .integer(let i): .number(Double(i))
        case .double(let d): .number(d)
        case .bool(let b): .bool(b)
        case .array(let items): .array(items.map(json))
        case .table(let members): .object(members.mapValues(json))
        }
    }
}

/// A problem that stops `ward mcp` before it serves (a bad `--tools`).
public struct MCPError: Error, Sendable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
