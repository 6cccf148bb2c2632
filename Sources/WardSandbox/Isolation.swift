/// How this kernel keeps a tool from ward, its zygotes and other calls (ptrace,
/// process_vm_*, pidfd_getfd, kcmp, signals), and which path ward takes for it. Facts only:
/// `ward doctor` and `ward policy explain` put them into words.
///
/// ```swift
/// let isolation = KernelFeatures.probe().isolation
/// if !isolation.holds { print("a tool can signal ward here") }
/// ```
public struct Isolation: Sendable, Equatable {
    /// What keeps ptrace, process_vm_*, pidfd_getfd and kcmp to a call's own processes.
    public enum Tracing: Sendable, Equatable {
        /// A Landlock domain per call (any ABI).
        case landlockDomain
        /// No Landlock: a PID namespace per call hides ward and other calls.
        case pidNamespace
        /// Neither: a tool reaches every process of ward's uid.
        case notSeparated
    }

    /// What keeps a tool's signals and abstract Unix sockets from ward and other calls.
    public enum Signals: Sendable, Equatable {
        /// Landlock scopes them (ABI 6): tools start from per-tool zygotes.
        case scoped
        /// Below ABI 6: no zygotes, and each call in a PID namespace of its own.
        case pidNamespace
        /// Neither: a tool can signal ward and other calls of its uid.
        case notSeparated
    }

    /// What keeps a tool from tracing ward itself.
    public enum Ward: Sendable, Equatable {
        /// ward runs as root and is non-dumpable: tracing it needs CAP_SYS_PTRACE.
        case nonDumpable
        /// Unprivileged: tools live in a user namespace of their own and hold no capability
        /// in ward's.
        case userNamespace
        /// Unprivileged without user namespaces: ward stays dumpable, its tools share its
        /// user namespace.
        case dumpable
    }

    public var tracing: Tracing
    public var signals: Signals
    public var ward: Ward

    /// False when some of it is not separated here: signals reach ward and other calls.
    public var holds: Bool { signals != .notSeparated }
}

extension KernelFeatures {
    /// The isolation this kernel gives (the same rules `Sandbox` follows: zygotes from
    /// Landlock ABI 6, else a PID namespace per call where one can be made).
    public var isolation: Isolation {
        let pidNamespace = privileged || userNamespaces
        return Isolation(
            tracing: landlockABI >= 1 ? .landlockDomain : pidNamespace ? .pidNamespace : .notSeparated,
            signals: landlockABI >= 6 ? .scoped : pidNamespace ? .pidNamespace : .notSeparated,
            ward: privileged ? .nonDumpable : userNamespaces ? .userNamespace : .dumpable)
    }
}
