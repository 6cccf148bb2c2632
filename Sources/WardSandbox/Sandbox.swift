import Logging
import Synchronization
import WardCore
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// Runs tools of a policy set in their sandboxes: composes the `Containment` of each call's
/// processes (Containment/), the `Confinement` of each tool (Confinement/), and their
/// launch (Launch/: `SandboxCall`, `Zygote`), and keeps each tool's prepared confinement
/// and zygote for every later call.
///
/// ```swift
/// let sandbox = try Sandbox(policies: try PolicyLoader.load(directory: "policies"), workspace: "workspace")
/// let outcome = try sandbox.run(tool: "shell", arguments: .object(["command": .string("ls")]))
/// ```
public final class Sandbox: Sendable {
    public let policies: PolicySet
    /// Absolute, symlink-free path of the workspace.
    public let workspace: String
    public let features: KernelFeatures
    public var treeKill: TreeKill { containment.treeKill }
    /// Who tools run as: a root ward's tool user, or an unprivileged ward's subordinate ids
    /// (nil: ward is unprivileged without them, and tools keep its uid).
    public var toolIdentity: ToolIdentity? { confinement.identity }
    /// Why an unprivileged ward's tools keep its uid (nil: they do not).
    public var sharedUIDReason: String? { confinement.sharedUIDReason }
    /// Whether `limits.processes` holds here: a cgroup's pids.max, or RLIMIT_NPROC for an
    /// unprivileged ward. A root ward's tools share one identity, whose processes the kernel
    /// counts together for RLIMIT_NPROC (every call's, and the zygotes): a per-call bound
    /// cannot be had from it, so without a pids cgroup there is none (the tree still dies
    /// with the call).
    public var enforcesProcessLimit: Bool { containment.enforcesProcessLimit }
    /// Every call's tool is pid 1 of a PID namespace of its own: without cgroups, to kill
    /// its tree; below Landlock ABI 6, also because signals are not scoped there, and a
    /// namespace is what hides ward, its zygotes and other calls from a tool's kill(2).
    public var pidNamespacePerCall: Bool { containment.pidNamespacePerCall }
    let logger: Logger
    let confinement: Confinement
    let containment: Containment
    let useZygotes: Bool
    private let prepared = Lock<[String: PreparedTool]>([:])

    /// - Parameters:
    ///   - policies: the loaded policy directory.
    ///   - workspace: the run's workspace; created (with `.tmp` for TMPDIR) when missing.
    ///   - useCgroups: false forces the PID-namespace path (tests of the fallback).
    ///   - cgroupLayout: the hierarchies to use instead of the detected ones (tests of the
    ///     cgroup v1 path on a machine that also has v2).
    ///   - useZygotes: false starts every call directly (tests and benchmarks of that path).
    ///   - toolUser: who tools run as when ward is root (`ToolIdentity.resolve`); nil: the
    ///     policies' `[defaults] user`, else the default. Refused when ward is not root.
    ///   - maxLandlockABI: use at most this Landlock ABI, as on an older kernel (tests of
    ///     every ABI on one machine; `WARD_TEST_LANDLOCK_ABI` does the same for a process).
    public init(policies: PolicySet, workspace: String, logger: Logger = Logger(label: "ward.sandbox"),
                useCgroups: Bool = true, cgroupLayout: CgroupLayout? = nil, useZygotes: Bool = true,
                toolUser: String? = nil, maxLandlockABI: Int? = nil) throws(SandboxError) {
        self.useZygotes = useZygotes
        for dir in [workspace, workspace + "/.tmp"] where mkdir(dir, 0o755) != 0 && errno != EEXIST {
            throw SandboxError(.internalError, "cannot create workspace directory \(dir): \(errnoName(errno))", errno: errno)
        }
        guard let real = realpath(workspace, nil) else {
            throw SandboxError(.internalError, "cannot resolve workspace \(workspace): \(errnoName(errno))", errno: errno)
        }
        self.workspace = String(cString: real)
        free(real)
        self.policies = policies
        self.logger = logger
        var features = KernelFeatures.probe()
        if let cap = maxLandlockABI { features.landlockABI = min(features.landlockABI, max(0, cap)) }
        self.features = features
        // Confinement first: a refused tool user leaves no cgroup behind.
        confinement = try Confinement(features: features, workspace: self.workspace, toolUser: toolUser ?? policies.toolUser)
        containment = Containment(features: features, useCgroups: useCgroups, layout: cgroupLayout)
        Sandbox.warnOnce(features: features, treeKill: containment.treeKill, processLimit: containment.enforcesProcessLimit,
                         sharedUID: confinement.sharedUIDReason, logger: logger)
    }

    private static let warned = Atomic<Bool>(false)

    /// Every missing layer is said loudly, once per process: ward never degrades silently.
    static func warnOnce(features: KernelFeatures, treeKill: TreeKill, processLimit: Bool, sharedUID: String?, logger: Logger) {
        guard !warned.exchange(true, ordering: .relaxed) else { return }
        if let sharedUID {
            logger.warning("tools run as ward's own uid \(getuid()) (\(sharedUID)): what they write in the workspace is yours, so a core.fsmonitor or hook a tool puts in .git can run at your next git command there; give this user subordinate ids (usermod --add-subuids and --add-subgids) and install uidmap")
        }
        if features.landlockABI == 0 {
            logger.warning("Landlock is unavailable on this kernel: tools are NOT confined to their read/write roots")
        } else if features.landlockABI < 6 {
            logger.warning("Landlock ABI \(features.landlockABI) < 6: abstract Unix sockets and signals are not scoped; calls start without zygotes, each in a PID namespace of its own")
        }
        if !features.seccomp { logger.warning("seccomp is unavailable: tools are NOT syscall-filtered") }
        else if !features.effectTrace { logger.warning("seccomp user notification is unavailable (kernel 5.5+): calls' effects are NOT traced") }
        if treeKill == .processGroup {
            logger.warning("no writable cgroup and no user namespaces: a daemonizing tool can outlive its call")
        }
        if !processLimit {
            logger.warning("running as root without a writable pids cgroup: limits.processes cannot be enforced (the kernel exempts uid 0 from RLIMIT_NPROC); a fork bomb is only stopped by the timeout")
        }
    }

    // MARK: - Preparation (once per tool)

    /// Everything about a tool that does not depend on one call's arguments.
    struct PreparedTool: Sendable {
        let policy: ToolPolicy
        let executable: String
        let confinement: ToolConfinement
        /// Present when the tool can be started through a zygote (cgroup containment, no
        /// network namespace, Landlock ABI 6, and the policy allows the per-call steps).
        let zygote: Zygote?
    }

    func prepare(_ name: String) throws(SandboxError) -> PreparedTool {
        if let tool = prepared.withLock({ $0[name] }) { return tool }
        let policy: ToolPolicy
        do { policy = try policies.tool(name) } catch {
            throw SandboxError(.unknownTool, error.message)
        }
        guard let program = policy.command.first, let executable = Executable.resolve(program) else {
            throw SandboxError(.policyDenied, "tool \(name): command \(policy.command.first ?? "") does not exist or is not executable")
        }
        let confined = try confinement.tool(policy, ownPIDNamespace: containment.pidNamespacePerCall, traced: policy.traced)
        // A zygote only where its calls can be kept from it and from each other: a Landlock
        // domain per call (ptrace and the like) with signals scoped (ABI 6). Below that, calls
        // start directly, each in a PID namespace of its own.
        let zygoteEligible = useZygotes && containment.treeKill == .cgroup && !containment.pidNamespacePerCall && features.landlockABI >= 6
            && policy.network != .loopback && features.seccomp && Zygote.required.isSubset(of: policy.syscalls)
        var zygote: Zygote?
        if zygoteEligible {
            zygote = Zygote(tool: confined, rulesetFD: try confinement.zygoteRuleset(for: policy), confinement: confinement)
        }
        let tool = PreparedTool(policy: policy, executable: executable, confinement: confined, zygote: zygote)
        // Two threads may have prepared it at once: one keeps its own, the other's is
        // dropped (its ruleset closed with it).
        return prepared.withLock { cache -> PreparedTool in
            if let existing = cache[name] { return existing }
            cache[name] = tool
            return tool
        }
    }

    /// Compiles a tool's seccomp program (what `prepare` caches), for benchmarks and tests.
    /// `ownPIDNamespace`: each call runs in a PID namespace of its own (see
    /// `pidNamespacePerCall`), which lets the filter allow pids other than the caller's.
    public static func compileFilter(for policy: ToolPolicy, ownPIDNamespace: Bool = false) throws(SandboxError) -> SeccompProgram {
        try Confinement.compileFilter(for: policy, ownPIDNamespace: ownPIDNamespace)
    }

    /// Builds a tool's whole confinement as `prepare` does, without keeping it or starting
    /// a zygote: its seccomp program and, on a kernel with Landlock ABI `landlockABI` > 0, its
    /// Landlock ruleset (built, then closed). For checking policies (the fuzzer loads every
    /// policy file it makes and then compiles its tools).
    public static func compileConfinement(for policy: ToolPolicy, workspace: String, landlockABI: Int) throws(SandboxError) -> SeccompProgram {
        let bpf = try compileFilter(for: policy)
        guard landlockABI > 0 else { return bpf }
        close(try Confinement.landlockRuleset(for: policy, workspace: workspace, abi: landlockABI))
        return bpf
    }

    /// Refuses what `run` would refuse before anything starts (unknown tool, missing program,
    /// bad arguments) and returns the program's absolute path: the supervisor checks a call
    /// before recording it.
    public func check(tool name: String, arguments: JSONValue) throws(SandboxError) -> String {
        let tool = try prepare(name)
        try ToolCommand.checkDeclared(tool.policy, arguments)
        _ = try ToolCommand.argv(tool.policy.command, arguments: arguments, workspace: workspace)
        return tool.executable
    }

    // MARK: - Running

    /// Runs one call of `tool` and waits for it: the tool and everything it started are
    /// gone when this returns.
    ///
    /// - Parameters:
    ///   - arguments: a JSON object; fills `{name}` placeholders and is the tool's stdin.
    ///   - environment: extra variables (WARD_RUN_ID, WARD_CALL_ID, …) on top of the allowlist.
    ///   - reconcile: run the policy's `reconcile` command instead of its command, in the
    ///     same sandbox, with `WARD_RECONCILE=1` (to settle an in-doubt call).
    /// - Throws: `SandboxError` when the call could not start; no child ran then.
    public func run(tool name: String, arguments: JSONValue, environment extra: [(String, String)] = [],
                    reconcile: Bool = false) throws(SandboxError) -> ToolOutcome {
        try prepareCall(tool: name, arguments: arguments, environment: extra, reconcile: reconcile).run()
    }

    /// Everything one call needs, prepared in the parent (argv, environment, stdin, pipes, a
    /// cgroup); no child exists yet. Same parameters as `run`.
    public func prepareCall(tool name: String, arguments: JSONValue, environment extra: [(String, String)] = [],
                            reconcile: Bool = false) throws(SandboxError) -> SandboxCall {
        let tool = try prepare(name)
        let policy = tool.policy
        var executable = tool.executable
        var command = policy.command
        var extra = extra
        if reconcile {
            guard let reconcileCommand = policy.reconcile, let program = reconcileCommand.first, let path = Executable.resolve(program) else {
                throw SandboxError(.policyDenied, "tool \(name) has no usable reconcile command")
            }
            command = reconcileCommand
            executable = path
            extra.append(("WARD_RECONCILE", "1"))
        } else {
            // Reconcile gets the recorded arguments, which were checked when the call began.
            try ToolCommand.checkDeclared(policy, arguments)
        }
        let argv = try ToolCommand.argv(command, arguments: arguments, workspace: workspace)
        let env = ToolCommand.environment(policy, workspace: workspace, extra: extra)
        return try SandboxCall(sandbox: self, name: name, tool: tool, executable: executable, argv: argv, environment: env, arguments: arguments)
    }

    /// Starts a proxied MCP server (`[servers.NAME]`) in its sandbox and leaves it running,
    /// its stdin, stdout and stderr pipes to ward. Its confinement is a tool's (seccomp,
    /// Landlock, capabilities, identity, limits for the whole server), built afresh at each
    /// start; it is the init of a PID namespace of its own wherever one can be made, so that
    /// nothing it started outlives it, even when ward is killed.
    /// - Parameter environment: extra variables on top of its policy's.
    public func launchServer(_ server: ServerPolicy, environment extra: [(String, String)] = []) throws(SandboxError) -> SandboxedProcess {
        let policy = server.sandbox
        guard let program = policy.command.first, let executable = Executable.resolve(program) else {
            throw SandboxError(.policyDenied, "server \(server.name): command \(policy.command.first ?? "") does not exist or is not executable")
        }
        let ownPIDNamespace = features.privileged || features.userNamespaces
        let confined = try confinement.tool(policy, ownPIDNamespace: ownPIDNamespace)
        let tool = PreparedTool(policy: policy, executable: executable, confinement: confined, zygote: nil)
        let argv = try ToolCommand.argv(policy.command, arguments: .object([:]), workspace: workspace)
        let env = ToolCommand.environment(policy, workspace: workspace, extra: extra)
        return try SandboxCall(sandbox: self, name: server.name, tool: tool, executable: executable, argv: argv, environment: env,
                               arguments: nil, ownPIDNamespace: ownPIDNamespace).launch()
    }

    /// The pids of this sandbox's running zygotes (for `ward doctor`-style inspection and tests).
    public func zygoteProcessIDs() -> [pid_t] {
        prepared.withLock { tools in tools.values.compactMap { $0.zygote?.pid } }
    }

    /// Kills every running call's whole tree (shutdown): each ends `killed`.
    public func terminateAll() { containment.terminateAll() }

    // MARK: - Helpers

    static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// A NULL-terminated C array of C strings (argv, envp) for the duration of `body`.
    public static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        let array = CStringArray(strings)
        return withExtendedLifetime(array) { body(array.pointers) }
    }
}
