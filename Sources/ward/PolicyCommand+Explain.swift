import WardCore
import WardPolicy
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

extension PolicyCommand.Explain {
    /// The effective sandbox of a tool on this machine.
    static func text(_ policy: ToolPolicy, workspace: String, features: KernelFeatures) -> String {
        let ws = realpath(workspace, nil).map { p in defer { free(p) }; return String(cString: p) } ?? workspace
        func expand(_ path: String) -> String {
            let optional = path.hasPrefix("?")
            let body = optional ? String(path.dropFirst()) : path
            let expanded = (try? Template.expand(body, values: [Template.workspace: ws])) ?? body
            let missing = access(expanded, F_OK) != 0
            return expanded + (optional ? (missing ? "  (optional, absent here)" : "  (optional)") : "")
        }
        var lines: [String] = []
        func row(_ key: String, _ value: String) { lines.append(key.padding(to: 11) + value) }
        row("tool", policy.name + "  (" + policy.file + ")")
        if let d = policy.description { row("about", d) }
        // An argv on one line: a script's lines joined, an element with spaces quoted.
        func argv(_ command: [String]) -> String {
            command.map { $0.contains(" ") || $0.contains("\n") ? "'" + $0.replacingNewlines() + "'" : $0 }.joined(separator: " ")
        }
        row("command", argv(policy.command))
        row("arguments", policy.placeholders.isEmpty ? "(none)" : policy.placeholders.joined(separator: ", "))
        row("effect", policy.effect.rawValue)
        if policy.approve { row("approval", "each call waits for a person's verdict (ward approve / ward deny) before it runs") }
        let networkText: String
        switch policy.network {
        case .none: networkText = "none (socket() refused by seccomp; AF_UNIX stream/seqpacket socketpairs only\(features.landlockABI >= 4 ? "; Landlock denies TCP bind/connect" : ""))"
        case .loopback: networkText = "loopback (private network namespace per call; host loopback unreachable)"
        case .any: networkText = "any (host network; AF_INET, AF_INET6, AF_UNIX sockets only)"
        }
        row("network", networkText)
        row("timeout", describeMilliseconds(policy.timeoutMilliseconds))
        let l = policy.limits
        row("limits", [
            "memory " + (l.memory.map { describeBytes($0) + (features.cgroups.limitsMemoryPerCall ? " per call (memory cgroup)"
                : " PER PROCESS (RLIMIT_AS; no writable memory cgroup here, so a call's processes may each use this much)") } ?? "unlimited"),
            "cpu " + (l.cpuSeconds.map { "\($0) s" } ?? "unlimited"),
            "processes " + (l.processes.map(String.init) ?? "unlimited"),
            "file-size " + (l.fileSize.map(describeBytes) ?? "unlimited"),
            "open-files " + (l.openFiles.map(String.init) ?? "inherited"),
            "output " + describeBytes(l.output) + " per stream",
        ].joined(separator: ", "))
        row("env", policy.environment.map { e -> String in
            switch e {
            case .inherit(let n) where n == AgentCredential.environmentVariable: n + " (never passed: the agent's credential)"
            case .inherit(let n): n + " (inherited)"
            case .set(let n, let v): n + "=" + ((try? Template.expand(v, values: [Template.workspace: ws])) ?? v)
            }
        }.joined(separator: "\n" + "".padding(to: 11)))
        row("read", policy.read.map(expand).joined(separator: "\n" + "".padding(to: 11)))
        row("write", policy.write.isEmpty ? "(nothing)" : policy.write.map(expand).joined(separator: "\n" + "".padding(to: 11)))
        if let r = policy.reconcile { row("reconcile", argv(r)) }
        // The filter's own plan, so this says what the filter does. Explained for calls that
        // share ward's PID namespace (the stricter filter); each limit says what a call with
        // a PID namespace of its own gets instead.
        let traced = policy.traced && features.effectTrace && features.seccomp
        let plan = Seccomp.plan(syscalls: policy.syscalls, network: policy.network, ownPIDNamespace: false, traced: traced)
        let indent = "\n" + "".padding(to: 11)
        row("syscalls", "\(plan.rules.count) allowed: " + plan.rules.map(\.name).joined(separator: " "))
        row("limited", plan.rules.compactMap { r in r.limit.map { r.name + ": " + $0 } }.joined(separator: indent))
        if !plan.refused.isEmpty {
            // One line per reason, its syscalls first.
            var reasons: [String] = []
            var names: [String: [String]] = [:]
            for (name, reason) in plan.refused {
                if names[reason] == nil { reasons.append(reason) }
                names[reason, default: []].append(name)
            }
            row("refused", reasons.map { names[$0]!.joined(separator: ", ") + ": " + $0 }.joined(separator: indent))
        }
        row("always", "anything else → EPERM (unshare too, unless listed); \(Seccomp.enosys.joined(separator: ", ")) → ENOSYS; ioctl TIOCSTI/TIOCLINUX → EPERM; foreign ABIs (i386, x32) killed")
        row("landlock", features.landlockABI > 0 ? "ABI \(features.landlockABI): only the roots above\(features.landlockABI >= 6 ? "; abstract sockets and signals scoped" : "")" : "UNAVAILABLE: paths not confined")
        row("isolation", Doctor.isolation(features).effect)
        row("identity", Doctor.toolIdentity(features))
        row("privilege", "no_new_privs; all capabilities dropped\(features.privileged ? ", bounding set emptied, securebits locked" : "")")
        row("process", "new session (no controlling tty), fds ≥ 3 closed, whole tree killed at the end (\(treeKill(features)))")
        return lines.joined(separator: "\n")
    }

    static func describeBytes(_ b: UInt64) -> String {
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] as [(String, UInt64)] where b >= 1 << shift && b % (1 << shift) == 0 {
            return "\(b >> shift) \(unit)"
        }
        return "\(b) B"
    }

    static func describeMilliseconds(_ ms: UInt64) -> String { ms % 1000 == 0 ? "\(ms / 1000) s" : "\(ms) ms" }

    /// How a call's tree is killed here (`TreeKill`), as far as the features tell.
    static func treeKill(_ features: KernelFeatures) -> String {
        let c = features.cgroups
        if c.v2 != nil || c.v1Pids != nil { return "cgroup per call where writable, else PID namespace" }
        return features.privileged || features.userNamespaces ? "PID namespace" : "process group only: DEGRADED"
    }
}

extension String {
    func padding(to width: Int) -> String { count >= width ? self + " " : self + String(repeating: " ", count: width - count) }
    func replacingNewlines() -> String { split(separator: "\n", omittingEmptySubsequences: false).joined(separator: "⏎") }
}
