#if canImport(Glibc)
import Glibc
#endif

/// The error of the sandbox module: a tool that could not be started, and why.
public struct SandboxError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public let description: String
        /// The policy refused to start it (unknown tool, bad arguments, missing command).
        public static let policyDenied = Code(description: "policy-denied")
        /// The arguments do not fit the tool.
        public static let invalidArguments = Code(description: "invalid-arguments")
        /// No tool of that name.
        public static let unknownTool = Code(description: "unknown-tool")
        /// The kernel or the child refused a sandbox step.
        public static let spawnFailed = Code(description: "spawn-failed")
        /// The process starting the tool died mid-start: the tool may have begun, and
        /// whatever of it could be found was killed. Not to be started again blindly.
        public static let startUnknown = Code(description: "start-unknown")
        /// Anything else that should not happen.
        public static let internalError = Code(description: "internal")
    }

    public let code: Code
    public let message: String
    /// The errno behind the failure, when there is one.
    public let errno: Int32?

    public init(_ code: Code, _ message: String, errno: Int32? = nil) {
        self.code = code
        self.message = message
        self.errno = errno
    }

    public var description: String { message }
}

/// `EINVAL`, `EPERM`, … for messages such as "landlock_restrict_self failed: EINVAL".
public func errnoName(_ code: Int32) -> String {
    let names: [Int32: String] = [
        EPERM: "EPERM", ENOENT: "ENOENT", ESRCH: "ESRCH", EINTR: "EINTR", EIO: "EIO", E2BIG: "E2BIG",
        ENOEXEC: "ENOEXEC", EBADF: "EBADF", ECHILD: "ECHILD", EAGAIN: "EAGAIN", ENOMEM: "ENOMEM",
        EACCES: "EACCES", EFAULT: "EFAULT", EBUSY: "EBUSY", EEXIST: "EEXIST", EXDEV: "EXDEV",
        ENOTDIR: "ENOTDIR", EISDIR: "EISDIR", EINVAL: "EINVAL", EMFILE: "EMFILE", ENOSPC: "ENOSPC",
        EROFS: "EROFS", ENOSYS: "ENOSYS", ELOOP: "ELOOP", ENAMETOOLONG: "ENAMETOOLONG",
        EAFNOSUPPORT: "EAFNOSUPPORT", ECONNREFUSED: "ECONNREFUSED", ENETUNREACH: "ENETUNREACH",
        EOPNOTSUPP: "EOPNOTSUPP", ETXTBSY: "ETXTBSY", EFBIG: "EFBIG",
    ]
    return names[code] ?? "errno \(code)"
}
