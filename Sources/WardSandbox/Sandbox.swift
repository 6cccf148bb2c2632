import CWardOS
import CWardSpawn
import Logging
import Synchronization
import WardCore
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// How the whole process tree of a call is killed when it ends.
public enum TreeKill: String, Sendable {
    /// A cgroup per call: `cgroup.kill` (v2) or pids.max=0 + SIGKILL (v1).
    case cgroup
    /// The tool is pid 1 of its own PID namespace: when it dies, the kernel kills the rest.
    case pidNamespace = "pid-namespace"
    /// Degraded: the tool's process group only (setsid daemons escape).
    case processGroup = "process-group"
}

/// Runs tools of a policy set in their sandboxes.
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
    public let treeKill: TreeKill
    /// Who tools run as when ward is root (nil: ward is not, and tools keep its uid).
    public let toolIdentity: ToolIdentity?
    /// Whether `limits.processes` holds here: a cgroup's pids.max, or RLIMIT_NPROC for an
    /// unprivileged ward. A root ward's tools share one identity, whose processes the kernel
    /// counts together for RLIMIT_NPROC (every call's, and the zygotes): a per-call bound
    /// cannot be had from it, so without a pids cgroup there is none (the tree still dies
    /// with the call).
    public var enforcesProcessLimit: Bool { cgroups?.limitsProcesses ?? !features.privileged }
    /// Every call's tool is pid 1 of a PID namespace of its own: without cgroups, to kill
    /// its tree; below Landlock ABI 6, also because signals are not scoped there, and a
    /// namespace is what hides ward, its zygotes and other calls from a tool's kill(2).
    public let pidNamespacePerCall: Bool
    let logger: Logger
    let cgroups: CgroupPool?
    let useZygotes: Bool
    private let prepared = Lock<[String: PreparedTool]>([:])
    /// Calls running now: their tool's pid and cgroup, for `terminateAll`.
    private let active = Lock<[pid_t: CgroupSlot?]>([:])
    /// How calls are waited for (nil: always by sleeping in poll).
    let idleSpin: IdleSpin?

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
    ///   - idleSpin: false never waits for a call without sleeping (`IdleSpin`; the bench
    ///     measures what the spin is worth).
    public init(policies: PolicySet, workspace: String, logger: Logger = Logger(label: "ward.sandbox"),
                useCgroups: Bool = true, cgroupLayout: CgroupLayout? = nil, useZygotes: Bool = true,
                toolUser: String? = nil, maxLandlockABI: Int? = nil, idleSpin: Bool = true) throws(SandboxError) {
        self.useZygotes = useZygotes
        self.idleSpin = idleSpin ? IdleSpin.available : nil
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
        if features.privileged && geteuid() == 0 {
            let identity = try ToolIdentity.resolve(toolUser ?? policies.toolUser)
            try Sandbox.prepareWorkspace(self.workspace, for: identity)
            toolIdentity = identity
        } else if let user = toolUser ?? policies.toolUser {
            throw SandboxError(.policyDenied, "tool user \(user): only a root ward chooses who tools run as (this one runs as uid \(geteuid()), and so do its tools, in a user namespace of their own)")
        } else {
            toolIdentity = nil
        }
        // A root ward is non-dumpable (the flag belongs to its memory, so its zygotes and a
        // call's child until execve share it): ptrace, process_vm_readv/writev and
        // pidfd_getfd of it then need CAP_SYS_PTRACE, which no tool has, whatever its policy
        // allows and whatever Landlock this kernel offers. Not when unprivileged: its /proc
        // files would become root's, so it could no longer write its calls' user-namespace
        // maps nor their OOM score (measured: EACCES); there a Landlock domain or a user
        // namespace per call keeps tools out instead (`KernelFeatures.isolation`).
        if features.privileged { _ = ward_prctl(4 /* PR_SET_DUMPABLE */, 0, 0, 0, 0) }
        let pool = useCgroups ? CgroupPool(layout: cgroupLayout ?? features.cgroups) : nil
        self.cgroups = pool
        // Orphaned descendants of a tool come to ward, not to an init that may never reap them.
        if pool != nil { _ = ward_prctl(36 /* PR_SET_CHILD_SUBREAPER */, 1, 0, 0, 0) }
        if pool != nil {
            treeKill = .cgroup
        } else if features.privileged || features.userNamespaces {
            treeKill = .pidNamespace
        } else {
            treeKill = .processGroup
        }
        pidNamespacePerCall = treeKill == .pidNamespace
            || (features.landlockABI < 6 && (features.privileged || features.userNamespaces))
        Sandbox.warnOnce(features: features, treeKill: treeKill, processLimit: enforcesProcessLimit, logger: logger)
    }

    deinit {
        cgroups?.removeAll()
        prepared.withLock { tools in for tool in tools.values where tool.landlockFD >= 0 { close(tool.landlockFD) } }
    }

    private static let warned = Atomic<Bool>(false)

    /// Every missing layer is said loudly, once per process: ward never degrades silently.
    static func warnOnce(features: KernelFeatures, treeKill: TreeKill, processLimit: Bool, logger: Logger) {
        guard !warned.exchange(true, ordering: .relaxed) else { return }
        if features.landlockABI == 0 {
            logger.warning("Landlock is unavailable on this kernel: tools are NOT confined to their read/write roots")
        } else if features.landlockABI < 6 {
            logger.warning("Landlock ABI \(features.landlockABI) < 6: abstract Unix sockets and signals are not scoped; calls start without zygotes, each in a PID namespace of its own")
        }
        if !features.seccomp { logger.warning("seccomp is unavailable: tools are NOT syscall-filtered") }
        if treeKill == .processGroup {
            logger.warning("no writable cgroup and no user namespaces: a daemonizing tool can outlive its call")
        }
        if !processLimit {
            logger.warning("running as root without a writable pids cgroup: limits.processes cannot be enforced (the kernel exempts uid 0 from RLIMIT_NPROC); a fork bomb is only stopped by the timeout")
        }
    }

    // MARK: - Preparation (once per tool)

    /// Everything about a tool that does not depend on one call's arguments.
    struct PreparedTool: @unchecked Sendable {
        // @unchecked: immutable after creation; the fd is owned by the cache and closed in deinit.
        let policy: ToolPolicy
        let executable: String
        let bpf: SeccompProgram
        let landlockFD: Int32
        let newNetNamespace: Bool
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
        let bpf = try Sandbox.compileFilter(for: policy, ownPIDNamespace: pidNamespacePerCall)
        var landlockFD: Int32 = -1
        if features.landlockABI > 0 {
            landlockFD = try Sandbox.landlockRuleset(for: policy, workspace: workspace, abi: features.landlockABI)
        }
        // A zygote only where its calls can be kept from it and from each other: a Landlock
        // domain per call (ptrace and the like) with signals scoped (ABI 6). Below that, calls
        // start directly, each in a PID namespace of its own.
        let zygoteEligible = useZygotes && treeKill == .cgroup && !pidNamespacePerCall && features.landlockABI >= 6
            && policy.network != .loopback && features.seccomp && Zygote.required.isSubset(of: policy.syscalls)
        var zygote: Zygote?
        if zygoteEligible {
            let zygoteFD = try Sandbox.landlockRuleset(for: policy, workspace: workspace, abi: features.landlockABI, zygote: true)
            zygote = Zygote(bpf: bpf, landlockFD: zygoteFD, callLandlockFD: landlockFD, features: features, identity: toolIdentity)
        }
        let tool = PreparedTool(policy: policy, executable: executable, bpf: bpf, landlockFD: landlockFD,
                                newNetNamespace: policy.network == .loopback, zygote: zygote)
        let winner = prepared.withLock { cache -> PreparedTool in
            if let existing = cache[name] { return existing }
            cache[name] = tool
            return tool
        }
        if winner.landlockFD != tool.landlockFD, tool.landlockFD >= 0 { close(tool.landlockFD) }
        return winner
    }

    /// Compiles a tool's seccomp program (what `prepare` caches), for benchmarks and tests.
    /// `ownPIDNamespace`: each call runs in a PID namespace of its own (see
    /// `pidNamespacePerCall`), which lets the filter allow pids other than the caller's.
    public static func compileFilter(for policy: ToolPolicy, ownPIDNamespace: Bool = false) throws(SandboxError) -> SeccompProgram {
        try Seccomp.compile(syscalls: policy.syscalls, network: policy.network, ownPIDNamespace: ownPIDNamespace)
    }

    /// Builds a tool's whole confinement as `prepare` does, without keeping it or starting
    /// a zygote: its seccomp program and, on a kernel with Landlock ABI `landlockABI` > 0, its
    /// Landlock ruleset (built, then closed). For checking policies (the fuzzer loads every
    /// policy file it makes and then compiles its tools).
    public static func compileConfinement(for policy: ToolPolicy, workspace: String, landlockABI: Int) throws(SandboxError) -> SeccompProgram {
        let bpf = try compileFilter(for: policy)
        guard landlockABI > 0 else { return bpf }
        close(try landlockRuleset(for: policy, workspace: workspace, abi: landlockABI))
        return bpf
    }

    /// The Landlock ruleset fd of a tool's read and write roots (`?` optional paths,
    /// `{workspace}` expanded).
    static func landlockRuleset(for policy: ToolPolicy, workspace: String, abi: Int, zygote: Bool = false) throws(SandboxError) -> Int32 {
        let expand = { (paths: [String]) -> [String] in
            paths.map { p in
                let body = p.hasPrefix("?") ? String(p.dropFirst()) : p
                return (try? Template.expand(body, values: [Template.workspace: workspace])) ?? body
            }
        }
        return try Landlock.makeRuleset(read: expand(policy.read), write: expand(policy.write), network: policy.network, abi: abi, zygote: zygote)
    }

    /// Refuses what `run` would refuse before anything starts (unknown tool, missing program,
    /// bad arguments) and returns the program's absolute path: the supervisor checks a call
    /// before recording it.
    public func check(tool name: String, arguments: JSONValue) throws(SandboxError) -> String {
        let tool = try prepare(name)
        try Sandbox.checkDeclared(tool.policy, arguments)
        _ = try Sandbox.expandCommand(tool.policy.command, arguments: arguments, workspace: workspace)
        return tool.executable
    }

    /// A tool that declares its arguments gets no other: a misspelt or smuggled name is
    /// refused instead of reaching the tool's stdin unnoticed.
    static func checkDeclared(_ policy: ToolPolicy, _ arguments: JSONValue) throws(SandboxError) {
        guard let declared = policy.arguments, let members = arguments.objectValue else { return }
        if let extra = members.keys.sorted().first(where: { !declared.contains($0) }) {
            let names = declared.isEmpty ? "none" : declared.map { "\"\($0)\"" }.joined(separator: ", ")
            throw SandboxError(.invalidArguments, "tool \(policy.name) has no argument \"\(extra)\" (its arguments: \(names))")
        }
    }

    static func expandCommand(_ command: [String], arguments: JSONValue, workspace: String) throws(SandboxError) -> [String] {
        guard let members = arguments.objectValue else {
            throw SandboxError(.invalidArguments, "arguments must be a JSON object, not \(arguments.typeName)")
        }
        var values: [String: String] = [Template.workspace: workspace]
        for (key, value) in members where key != Template.workspace {
            switch value {
            case .string(let s): values[key] = s
            case .number(let d): values[key] = JSONValue.format(number: d)
            case .bool(let b): values[key] = b ? "true" : "false"
            default: continue  // only scalars can fill a placeholder; checked below if used
            }
        }
        var argv: [String] = []
        for element in command {
            for name in Template.placeholders(in: element) where name != Template.workspace {
                if let v = members[name], values[name] == nil {
                    throw SandboxError(.invalidArguments, "argument \"\(name)\" must be a string, number or boolean, not \(v.typeName)")
                }
                if let s = values[name], s.utf8.contains(0) {
                    throw SandboxError(.invalidArguments, "argument \"\(name)\" contains a NUL byte")
                }
            }
            do { argv.append(try Template.expand(element, values: values)) } catch {
                throw SandboxError(.invalidArguments, error.message)
            }
        }
        return argv
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
            try Sandbox.checkDeclared(policy, arguments)
        }
        let argv = try Sandbox.expandCommand(command, arguments: arguments, workspace: workspace)

        var env: [String] = []
        for entry in policy.environment {
            switch entry {
            // The agent's credential never reaches a tool, whatever the policy asks: ward
            // may itself run under an agent (of another ward) that holds one.
            case .inherit(let key) where key == AgentCredential.environmentVariable: continue
            case .inherit(let key):
                if let v = getenv(key) { env.append("\(key)=\(String(cString: v))") }
            case .set(let key, let value):
                env.append("\(key)=\((try? Template.expand(value, values: [Template.workspace: workspace])) ?? value)")
            }
        }
        for (key, value) in extra { env.append("\(key)=\(value)") }
        return try SandboxCall(sandbox: self, name: name, tool: tool, executable: executable, argv: argv, environment: env, arguments: arguments)
    }

    /// Records a running call; returns how many calls of this sandbox run now.
    func register(_ pid: pid_t, _ slot: CgroupSlot?) -> Int {
        active.withLock { active in
            active[pid] = slot
            return active.count
        }
    }
    func unregister(_ pid: pid_t) { active.withLock { _ = $0.removeValue(forKey: pid) } }

    /// The pids of this sandbox's running zygotes (for `ward doctor`-style inspection and tests).
    public func zygoteProcessIDs() -> [pid_t] {
        prepared.withLock { tools in tools.values.compactMap { $0.zygote?.pid } }
    }

    /// Kills every running call's whole tree (shutdown): each ends `killed`.
    public func terminateAll() {
        for (pid, slot) in active.withLock({ $0 }) {
            if let slot { _ = slot.killAll(sparing: pid) }
            kill(pid, SIGKILL)
        }
    }

    func killTree(pid: pid_t, slot: CgroupSlot?) {
        switch treeKill {
        case .cgroup:
            guard let slot, !slot.members().isEmpty else { return }
            var leftovers = slot.killAll(sparing: pid)
            leftovers.remove(pid)
            Sandbox.reap(leftovers)
        case .pidNamespace:
            kill(pid, SIGKILL)  // pid 1 of the namespace: the kernel kills the rest
        case .processGroup:
            kill(-pid, SIGKILL)
        }
    }

    /// Linux resource numbers (the same on every architecture ward supports).
    enum Resource: Int32 {
        case cpu = 0, fileSize = 1, core = 4, processes = 6, openFiles = 7, addressSpace = 9
    }

    /// ward's own hard limits (finite ones), read once: ward never changes them, and a call
    /// would otherwise ask the kernel for each of them every time.
    static let hardLimits: [Resource: UInt64] = {
        var found: [Resource: UInt64] = [:]
        for resource in [Resource.cpu, .fileSize, .core, .processes, .openFiles, .addressSpace] {
            var current = rlimit()
            if getrlimit(__rlimit_resource_t(resource.rawValue), &current) == 0, current.rlim_max != rlim_t.max {
                found[resource] = UInt64(current.rlim_max)
            }
        }
        return found
    }()

    static func rlimits(_ limits: Limits, cgroupProcesses: Bool, cgroupMemory: Bool) -> [ward_rlimit] {
        var out: [ward_rlimit] = []
        func add(_ resource: Resource, _ value: UInt64?, headroom: UInt64 = 0) {
            guard let value else { return }
            // Without CAP_SYS_RESOURCE a hard limit can only be lowered: clamp to ours.
            let ceiling = hardLimits[resource] ?? .max
            out.append(ward_rlimit(resource: resource.rawValue, soft: min(value, ceiling), hard: min(value + headroom, ceiling)))
        }
        add(.core, 0)  // no core files carrying memory contents into the workspace
        add(.cpu, limits.cpuSeconds, headroom: 1)  // SIGXCPU at the limit, SIGKILL a second later
        add(.fileSize, limits.fileSize)
        add(.openFiles, limits.openFiles)
        if !cgroupProcesses { add(.processes, limits.processes) }
        if !cgroupMemory { add(.addressSpace, limits.memory) }
        return out
    }

    /// ward is a child subreaper (set in init): the descendants of a tool that outlived it
    /// were reparented to ward when their parents died. Reap exactly those pids (never
    /// anything else of this process's), so no zombie is left behind.
    static func reap(_ pids: Set<pid_t>) {
        var pending = pids
        for _ in 0..<200 where !pending.isEmpty {
            for pid in pending {
                var status: Int32 = 0
                let r = waitpid(pid, &status, WNOHANG | Int32(bitPattern: 0x4000_0000) /* __WALL */)
                if r == pid || (r < 0 && errno == ECHILD) { pending.remove(pid) }
            }
            if !pending.isEmpty { usleep(500) }
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 { if errno == EINTR { continue }; return false }
            offset += n
        }
        return true
    }

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

/// Drains a tool's stdout and stderr, keeping at most `limit` bytes of each, and copying
/// what it keeps to `capture` (an `OutputCapture` file) when there is one.
struct OutputCollector {
    var fds: [Int32]
    var buffers: [[UInt8]] = [[], []]
    var truncated = false
    /// Per stream: the limit was reached.
    private var full = [false, false]
    let limit: Int
    let capture: Int32
    private var scratch = [UInt8](repeating: 0, count: 65536)

    init(fds: [Int32], limit: Int, capture: Int32 = -1) {
        self.fds = fds
        self.limit = limit
        self.capture = capture
    }

    /// Appends one frame to the capture file. A failed write loses evidence, never the call.
    func record(_ kind: OutputCapture.Kind, _ bytes: ArraySlice<UInt8>) {
        guard capture >= 0, !bytes.isEmpty else { return }
        var header = OutputCapture.frameHeader(kind, length: bytes.count)
        header.withUnsafeMutableBytes { h in
            bytes.withUnsafeBytes { b in
                var iov = [iovec(iov_base: h.baseAddress, iov_len: h.count),
                           iovec(iov_base: UnsafeMutableRawPointer(mutating: b.baseAddress), iov_len: b.count)]
                _ = writev(capture, &iov, 2)
            }
        }
    }

    /// Waits for output or for `extra` (the pidfd) to become readable; true when it did.
    /// Until `spinUntil` it polls without sleeping, at SCHED_IDLE (see `IdleSpin`).
    mutating func pollOnce(extra: Int32, until deadline: UInt64, spinUntil: UInt64 = 0) -> Bool {
        var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        pfds.append(pollfd(fd: extra, events: Int16(POLLIN), revents: 0))
        var n: Int32 = 0
        var now = Sandbox.monotonicNanoseconds()
        if now < min(spinUntil, deadline), ward_thread_idle(1) == 0 {
            repeat {
                n = poll(&pfds, nfds_t(pfds.count), 0)
                now = Sandbox.monotonicNanoseconds()
            } while n == 0 && now < min(spinUntil, deadline)
            // Back to normal before any sleep: a thread woken at SCHED_IDLE on a busy
            // machine could wait long for its turn.
            _ = ward_thread_idle(0)
        }
        if n == 0 {
            let timeout = now < deadline ? Int32(min((deadline - now) / 1_000_000 + 1, 60_000)) : 0
            n = poll(&pfds, nfds_t(pfds.count), timeout)
        }
        if n <= 0 { return false }
        for i in 0..<fds.count where fds[i] >= 0 && pfds[i].revents != 0 { readAvailable(i) }
        return pfds.last!.revents != 0
    }

    /// After the tree is dead: read both pipes to EOF (bounded in time for the degraded mode).
    mutating func drain(until deadline: UInt64) {
        while fds.contains(where: { $0 >= 0 }) {
            var pfds = fds.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let now = Sandbox.monotonicNanoseconds()
            guard now < deadline else { break }
            if poll(&pfds, nfds_t(pfds.count), Int32((deadline - now) / 1_000_000 + 1)) <= 0 { break }
            for i in 0..<fds.count where fds[i] >= 0 && pfds[i].revents != 0 { readAvailable(i) }
        }
    }

    private mutating func readAvailable(_ i: Int) {
        let n = scratch.withUnsafeMutableBytes { read(fds[i], $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR || errno == EAGAIN { return }
        }
        if n <= 0 {
            close(fds[i])
            fds[i] = -1
            return
        }
        if full[i] { return }  // past the limit: drained and dropped
        let room = limit - buffers[i].count
        let kept = min(room, n)
        if kept > 0 {
            buffers[i] += scratch[0..<kept]
            record(i == 0 ? .stdout : .stderr, scratch[0..<kept])
        }
        if room < n {
            truncated = true
            full[i] = true
            // A cut inside a UTF-8 character would turn the whole stream into base64 for
            // the agent: the cut is moved back to the character's start.
            buffers[i].removeLast(OutputCollector.partialUTF8Suffix(buffers[i]))
        }
    }

    /// How many bytes at the end of `bytes` start a UTF-8 character that is not complete.
    static func partialUTF8Suffix(_ bytes: [UInt8]) -> Int {
        var back = 1
        while back <= min(3, bytes.count) {
            let b = bytes[bytes.count - back]
            if b & 0xC0 != 0x80 {  // not a continuation byte: the character starts here
                let width = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1
                return width > back ? back : 0
            }
            back += 1
        }
        return 0
    }
}
