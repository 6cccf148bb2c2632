import CWardOS
import CWardSpawn
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// What keeps a tool's processes from everything its policy does not grant: who they run
/// as and the capabilities they lose, the Landlock ruleset of their read and write roots,
/// and the seccomp allowlist. The sandbox-wide part is settled here once (the tool
/// identity, the workspace handed to it, ward made non-dumpable); each tool's filter and
/// ruleset are built by `tool(_:ownPIDNamespace:)`, once per tool (`Sandbox` keeps them),
/// and written into each spawn's config by `configureCall` or, for a zygote,
/// `configureZygote`.
struct Confinement: Sendable {
    let features: KernelFeatures
    /// Absolute, symlink-free path of the workspace.
    let workspace: String
    /// Who tools run as: a root ward's tool user, or an unprivileged ward's subordinate ids
    /// (nil: ward is unprivileged without them, and tools keep its uid).
    let identity: ToolIdentity?
    /// An unprivileged ward's tools' user namespace, where `identity` is theirs.
    let namespace: ToolNamespace?
    /// Why an unprivileged ward's tools keep its uid (no subordinate ids), for its warning.
    let sharedUIDReason: String?

    /// - Parameter toolUser: who tools run as when ward is root (`ToolIdentity.resolve`);
    ///   nil: the default. Refused when ward is not root.
    init(features: KernelFeatures, workspace: String, toolUser: String?) throws(SandboxError) {
        self.features = features
        self.workspace = workspace
        if features.privileged && geteuid() == 0 {
            let identity = try ToolIdentity.resolve(toolUser)
            try identity.prepareWorkspace(workspace)
            self.identity = identity
            namespace = nil
            sharedUIDReason = nil
        } else if let user = toolUser {
            throw SandboxError(.policyDenied, "tool user \(user): only a root ward chooses who tools run as (this one runs as uid \(geteuid()); its tools run as a subordinate uid of its user where /etc/subuid gives it some, else as its own uid in a user namespace of their own)")
        } else {
            switch features.userNamespaces ? ToolNamespace.make() : .failure(.init("this kernel gives no unprivileged user namespaces")) {
            case .success(let namespace):
                try namespace.identity.prepareWorkspace(workspace, namespace: namespace)
                self.namespace = namespace
                identity = namespace.identity
                sharedUIDReason = nil
            case .failure(let why):
                namespace = nil
                identity = nil
                sharedUIDReason = why.description
            }
        }
        // A root ward is non-dumpable (the flag belongs to its memory, so its zygotes and a
        // call's child until execve share it): ptrace, process_vm_readv/writev and
        // pidfd_getfd of it then need CAP_SYS_PTRACE, which no tool has, whatever its policy
        // allows and whatever Landlock this kernel offers. Not when unprivileged: its /proc
        // files would become root's, so it could no longer write its calls' user-namespace
        // maps nor their OOM score (measured: EACCES); there a Landlock domain or a user
        // namespace per call keeps tools out instead (`KernelFeatures.isolation`).
        if features.privileged { _ = ward_prctl(4 /* PR_SET_DUMPABLE */, 0, 0, 0, 0) }
    }

    // MARK: - Per tool

    /// One tool's seccomp program and Landlock ruleset. `ownPIDNamespace`: each call runs
    /// in a PID namespace of its own (`Sandbox.pidNamespacePerCall`), which lets the filter
    /// allow pids other than the caller's.
    /// `traced`: its calls' effects are traced (the kernel can, and the policy says so).
    func tool(_ policy: ToolPolicy, ownPIDNamespace: Bool, traced: Bool = false) throws(SandboxError) -> ToolConfinement {
        let traced = traced && features.effectTrace && features.seccomp
        let bpf = try Seccomp.compile(syscalls: policy.syscalls, network: policy.network, ownPIDNamespace: ownPIDNamespace, traced: traced)
        var landlockFD: Int32 = -1
        if features.landlockABI > 0 {
            landlockFD = try Confinement.landlockRuleset(for: policy, workspace: workspace, abi: features.landlockABI)
        }
        return ToolConfinement(bpf: bpf, landlockFD: landlockFD, newNetNamespace: policy.network == .loopback,
                               trace: traced ? try Confinement.traceFilter.get() : nil)
    }

    /// The Landlock ruleset of a tool's zygote (`Landlock.makeRuleset`, `zygote`); the
    /// caller owns the fd.
    func zygoteRuleset(for policy: ToolPolicy) throws(SandboxError) -> Int32 {
        try Confinement.landlockRuleset(for: policy, workspace: workspace, abi: features.landlockABI, zygote: true)
    }

    /// The filter of every traced call (`Seccomp.compileTrace`), compiled once.
    static let traceFilter: Result<TraceFilter, SandboxError> = {
        do throws(SandboxError) { return .success(try Seccomp.compileTrace()) } catch { return .failure(error) }
    }()

    static func compileFilter(for policy: ToolPolicy, ownPIDNamespace: Bool) throws(SandboxError) -> SeccompProgram {
        try Seccomp.compile(syscalls: policy.syscalls, network: policy.network, ownPIDNamespace: ownPIDNamespace)
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

    // MARK: - Per spawn

    /// The confinement steps of a call's child (a direct spawn, or a child of the tool's
    /// zygote, which inherits the zygote's filter instead): user namespace, capabilities,
    /// identity, Landlock, seccomp. `tool` must outlive the spawn (the config points at its
    /// filter).
    func configureCall(_ config: inout ward_spawn_config, tool: ToolConfinement, newPIDNamespace: Bool) {
        // Unprivileged: a user namespace of the call's own wherever the kernel offers one,
        // not only where a PID or network namespace needs it (see `ward_step_user_namespace`).
        configure(&config, tool: tool, newUserNamespace: !features.privileged
                  && (features.userNamespaces || newPIDNamespace || tool.newNetNamespace))
        if let identity {
            // The tool drops to it (a root ward's tools never run as uid 0; an unprivileged
            // ward's, with subordinate ids, not as its uid): in the tools' user namespace
            // first, whose ids the call's own one then maps (`enter_main`).
            config.set_identity = 1
            config.tool_uid = identity.uid
            config.tool_gid = identity.gid
            if namespace != nil {
                config.outer_uid = identity.uid
                config.outer_gid = identity.gid
            }
        }
        config.landlock_ruleset_fd = tool.landlockFD
    }

    /// The confinement a tool's zygote applies once for all its calls: the tool's filter,
    /// the zygote's own Landlock ruleset (`zygoteRuleset`), capabilities dropped but, when
    /// tools take an identity of their own, the two each call's child needs for that.
    func configureZygote(_ config: inout ward_spawn_config, tool: ToolConfinement, rulesetFD: Int32) {
        // Unprivileged: the zygote and its calls in a user namespace of their own (see
        // `ward_step_user_namespace`), where the kernel offers one; or in the tools' user
        // namespace, as its uid 0.
        configure(&config, tool: tool, newUserNamespace: namespace == nil && !features.privileged && features.userNamespaces)
        if namespace != nil { config.drop_bounding_set = 1 }
        // Each call's child takes the tool identity itself, after the steps that need root
        // (its OOM score): the zygote keeps only CAP_SETUID and CAP_SETGID for that.
        if identity != nil { config.keep_setid_caps = 1 }
        config.landlock_ruleset_fd = rulesetFD
    }

    /// Whether calls' tools are counted together for RLIMIT_NPROC (the kernel counts the
    /// processes of a uid per user namespace): a root ward's all share its tool user; an
    /// unprivileged ward's with subordinate ids share it when they start from a zygote,
    /// which is in the tools' user namespace, and not when each call makes its own.
    func callsShareProcessCount(zygote: Bool) -> Bool {
        identity != nil && (namespace == nil || zygote)
    }

    /// What a call and a zygote set alike: the user namespace, the capabilities dropped, the filter.
    private func configure(_ config: inout ward_spawn_config, tool: ToolConfinement, newUserNamespace: Bool) {
        config.user_namespace_fd = namespace?.fd ?? -1
        config.new_user_namespace = newUserNamespace ? 1 : 0
        config.outer_uid = geteuid()
        config.outer_gid = getegid()
        config.drop_bounding_set = (features.privileged || newUserNamespace) ? 1 : 0
        config.cap_last = Int32(features.capLast)
        config.bpf = features.seccomp ? UnsafeRawPointer(tool.bpf.aligned.baseAddress) : nil
        config.bpf_len = UInt16(tool.bpf.instructionCount)
    }
}

/// One tool's filter and Landlock ruleset, built once in the parent (`Confinement.tool`):
/// every call's spawn, and the tool's zygote, point at them.
final class ToolConfinement: Sendable {
    let bpf: SeccompProgram
    /// The Landlock ruleset (owned: closed with this), -1 when Landlock is unavailable.
    let landlockFD: Int32
    /// `network = "loopback"`: each call in a network namespace of its own.
    let newNetNamespace: Bool
    /// The effect-trace filter each call adds (`Tracer`); nil: calls are not traced.
    let trace: TraceFilter?

    init(bpf: SeccompProgram, landlockFD: Int32, newNetNamespace: Bool, trace: TraceFilter? = nil) {
        self.bpf = bpf
        self.landlockFD = landlockFD
        self.newNetNamespace = newNetNamespace
        self.trace = trace
    }

    deinit { if landlockFD >= 0 { close(landlockFD) } }
}
