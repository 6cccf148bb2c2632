/// A problem at a place in a policy file: `policies/shell.toml:12:3: unknown syscall set "@netwrok"`.
public struct PolicyDiagnostic: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public var description: String { "\(file):\(line):\(column): \(message)" }
}

/// The error of the policy module: bad policy files (with every diagnostic found), an
/// unknown tool, or arguments that do not fit a tool's command.
public struct PolicyError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable {
        let raw: String
        /// One or more policy files are wrong; see `diagnostics`.
        public static let invalidPolicy = Code(raw: "invalid-policy")
        /// No tool of that name.
        public static let unknownTool = Code(raw: "unknown-tool")
        /// The arguments do not fit the tool (missing placeholder, wrong type).
        public static let invalidArguments = Code(raw: "invalid-arguments")
    }

    public var code: Code
    public var message: String
    public var diagnostics: [PolicyDiagnostic]

    public init(message: String, code: Code, diagnostics: [PolicyDiagnostic] = []) {
        self.message = message
        self.code = code
        self.diagnostics = diagnostics
    }

    public var description: String {
        diagnostics.isEmpty ? message : diagnostics.map(\.description).joined(separator: "\n")
    }
}
