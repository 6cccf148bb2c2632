import WardCore
import WardLedger
import WardSandbox

/// A JSON-RPC error with DESIGN.md's `data.kind`.
public struct RPCError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case conflict, inProgress = "in-progress", inDoubt = "in-doubt", unknownTool = "unknown-tool"
        case invalidArguments = "invalid-arguments", policyDenied = "policy-denied", tooLarge = "too-large"
        case storage, `internal`
    }

    public let code: Int
    public let kind: Kind
    public let message: String

    public init(_ kind: Kind, _ message: String, code: Int? = nil) {
        self.kind = kind
        self.message = message
        switch kind {
        case .invalidArguments: self.code = code ?? -32602
        case .internal: self.code = code ?? -32603
        case .conflict: self.code = code ?? -32001
        case .inProgress: self.code = code ?? -32002
        case .inDoubt: self.code = code ?? -32003
        case .unknownTool: self.code = code ?? -32004
        case .policyDenied: self.code = code ?? -32005
        case .tooLarge: self.code = code ?? -32006
        case .storage: self.code = code ?? -32007
        }
    }

    public var description: String { message }

    /// `{"code": …, "message": …, "data": {"kind": …}}`.
    public var json: JSONValue {
        .object(["code": .number(Double(code)), "message": .string(message), "data": .object(["kind": .string(kind.rawValue)])])
    }

    static func parse(_ message: String) -> RPCError { RPCError(.invalidArguments, message, code: -32700) }
    static func invalidRequest(_ message: String) -> RPCError { RPCError(.invalidArguments, message, code: -32600) }

    init(_ error: LedgerError) {
        switch error.code {
        case .conflict: self.init(.conflict, error.message)
        case .inProgress: self.init(.inProgress, error.message)
        case .inDoubt: self.init(.inDoubt, error.message)
        case .storage, .corrupt: self.init(.storage, error.message)
        case .notFound, .invalid: self.init(.invalidArguments, error.message)
        default: self.init(.internal, error.message)
        }
    }

    init(_ error: SandboxError) {
        switch error.code {
        case .unknownTool: self.init(.unknownTool, error.message)
        case .invalidArguments: self.init(.invalidArguments, error.message)
        case .policyDenied: self.init(.policyDenied, error.message)
        default: self.init(.internal, error.message)
        }
    }
}
