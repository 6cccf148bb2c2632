import WardCore
import WardLedger
import WardSandbox

extension RPCError {
    public init(_ error: LedgerError) {
        switch error.code {
        case .conflict: self.init(.conflict, error.message)
        case .inProgress: self.init(.inProgress, error.message)
        case .inDoubt, .fenced: self.init(.inDoubt, error.message)
        case .storage, .corrupt: self.init(.storage, error.message)
        case .notFound, .invalid: self.init(.invalidArguments, error.message)
        case .awaitingApproval: self.init(.awaitingApproval, error.message)
        default: self.init(.internal, error.message)
        }
    }

    public init(_ error: SandboxError) {
        switch error.code {
        case .unknownTool: self.init(.unknownTool, error.message)
        case .invalidArguments: self.init(.invalidArguments, error.message)
        case .policyDenied: self.init(.policyDenied, error.message)
        default: self.init(.internal, error.message)
        }
    }
}
