import CWardOS
import CWardSpawn
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

/// What holds a call's processes together and ends them with it: a cgroup per call where
/// one can be written (with the process and memory limits only cgroups hold), else a PID
/// namespace per call, else the process group; the rlimits that stand in for missing
/// cgroup limits; and the calls running now, so a shutdown can kill them all.
final class Containment: Sendable {
    let treeKill: TreeKill
    /// Every call's tool is pid 1 of a PID namespace of its own: without cgroups, to kill
    /// its tree; below Landlock ABI 6, also because signals are not scoped there, and a
    /// namespace is what hides ward, its zygotes and other calls from a tool's kill(2).
    let pidNamespacePerCall: Bool
    /// Whether `limits.processes` holds here (see `Sandbox.enforcesProcessLimit`).
    let enforcesProcessLimit: Bool
    /// The call cgroups (nil: calls are contained by a PID namespace or process group).
    let cgroups: CgroupPool?
    /// Calls running now: their tool's pid and cgroup, for `terminateAll`.
    private let active = Lock<[pid_t: CgroupSlot?]>([:])

    /// - Parameters:
    ///   - useCgroups: false forces the PID-namespace path.
    ///   - layout: the hierarchies to use instead of the detected ones.
    init(features: KernelFeatures, useCgroups: Bool, layout: CgroupLayout?) {
        let pool = useCgroups ? CgroupPool(layout: layout ?? features.cgroups) : nil
        cgroups = pool
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
        enforcesProcessLimit = pool?.limitsProcesses ?? !features.privileged
    }

    deinit { cgroups?.removeAll() }

    // MARK: - Running calls

    /// Records a running call.
    func register(_ pid: pid_t, _ slot: CgroupSlot?) {
        active.withLock { $0[pid] = slot }
    }
    func unregister(_ pid: pid_t) { active.withLock { _ = $0.removeValue(forKey: pid) } }

    /// Kills every running call's whole tree (shutdown): each ends `killed`.
    func terminateAll() {
        for (pid, slot) in active.withLock({ $0 }) { terminate(pid: pid, slot: slot) }
    }

    /// Kills one running call's whole tree from another thread: the thread waiting for it
    /// sees its tool die and records it `killed`; whatever is left dies with `killTree` there.
    func terminate(pid: pid_t, slot: CgroupSlot?) {
        if let slot { _ = slot.killAll(sparing: pid) }
        kill(pid, SIGKILL)
    }

    func killTree(pid: pid_t, slot: CgroupSlot?) {
        switch treeKill {
        case .cgroup:
            guard let slot, !slot.members().isEmpty else { return }
            var leftovers = slot.killAll(sparing: pid)
            leftovers.remove(pid)
            Containment.reap(leftovers)
        case .pidNamespace:
            kill(pid, SIGKILL)  // pid 1 of the namespace: the kernel kills the rest
        case .processGroup:
            kill(-pid, SIGKILL)
        }
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

    // MARK: - Resource limits

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
}
