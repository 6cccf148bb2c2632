/// The error of the ledger module, with a code the supervisor maps to JSON-RPC `data.kind`
/// and the CLI to an exit code.
public struct LedgerError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        /// Same call ID, different tool or arguments.
        public static let conflict = Code(description: "conflict")
        /// The call is running elsewhere and did not finish within the wait.
        public static let inProgress = Code(description: "in-progress")
        /// A non-idempotent call was caught mid-flight by a crash; an operator or the tool's
        /// reconcile command must settle it.
        public static let inDoubt = Code(description: "in-doubt")
        /// The database could not be read or written (full disk, locked, I/O error).
        public static let storage = Code(description: "storage")
        /// The file is not a ward ledger, or is damaged.
        public static let corrupt = Code(description: "corrupt")
        /// No such run, call or checkpoint.
        public static let notFound = Code(description: "not-found")
        /// The request does not make sense (resolving a call that is not in doubt, …).
        public static let invalid = Code(description: "invalid")
        /// This process's execution of a call was taken over by another decision (its owner
        /// was judged dead); nothing was recorded over that decision.
        public static let fenced = Code(description: "fenced")
        /// The run is served by another supervisor (on this host or another).
        public static let busy = Code(description: "busy")
        /// The call's tool is gated: it is recorded and waits for `ward approve` or `ward deny`.
        public static let awaitingApproval = Code(description: "awaiting-approval")
    }

    public let code: Code
    public let message: String
    public let underlying: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, underlying: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.underlying = underlying
    }

    public var description: String { message }
}
