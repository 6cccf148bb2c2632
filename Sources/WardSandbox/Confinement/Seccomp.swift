import CSeccomp
import CWardOS
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// A compiled seccomp program: BPF instructions ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
/// Compiled once per (syscall set, network) in the parent; the child only loads it.
public final class SeccompProgram: Sendable {
    /// The raw `struct sock_filter` array.
    public let bytes: [UInt8]
    public var instructionCount: Int { bytes.count / 8 }
    /// The same instructions, aligned, at an address that lives as long as the program: what
    /// a child's `seccomp(2)` reads, so a call or a zygote points here instead of copying.
    nonisolated(unsafe) let aligned: UnsafeMutableRawBufferPointer

    init(bytes: [UInt8]) {
        self.bytes = bytes
        aligned = .allocate(byteCount: max(bytes.count, 8), alignment: 8)
        aligned.copyBytes(from: bytes)
    }

    deinit { aligned.deallocate() }
}

/// The effect-trace filter with the path of the execve it spares left to fill in per call.
struct TraceFilter: Sendable {
    let template: [UInt8]
    /// The instructions whose constants are the spared path's high and low 32 bits.
    let high: Int, low: Int

    /// The filter of one call, whose own execve passes `path`.
    func program(sparing path: UnsafeRawPointer) -> SeccompProgram {
        var bytes = template
        let address = UInt64(UInt(bitPattern: path))
        for (i, k) in [(high, UInt32(address >> 32)), (low, UInt32(truncatingIfNeeded: address))] {
            for b in 0..<4 { bytes[i * 8 + 4 + b] = UInt8(truncatingIfNeeded: k >> (8 * UInt32(b))) }
        }
        return SeccompProgram(bytes: bytes)
    }
}

/// Seccomp filters from policies: `plan` says what a tool's filter allows, limits and
/// refuses (public, for `ward policy explain`); `compile` turns that plan into BPF.
public enum Seccomp {
    /// clone/unshare flags that create namespaces (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
    /// NEWUSER | NEWPID | NEWNET, plus CLONE_NEWTIME, which only unshare takes).
    static let namespaceFlags: UInt64 = 0x7E02_0000 | 0x80
    static let tiocsti: UInt64 = 0x5412
    static let tioclinux: UInt64 = 0x541C
    /// PER_LINUX, PER_LINUX32 (0x8), UNAME26 (0x20000), both (0x20008) and the query.
    static let allowedPersonalities: [UInt64] = [0, 0x8, 0x20000, 0x20008, 0xFFFF_FFFF]
    /// Always ENOSYS: clone3's flags live in a struct a filter cannot read, and glibc falls
    /// back to clone on ENOSYS (EPERM would break it); the new mount API likewise.
    /// openat2 too: its mode lives in a struct a filter cannot read (see `modeArgument`), and
    /// callers fall back to openat.
    public static let enosys = ["clone3", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr", "openat2"]

    /// Syscalls that set a file's mode, with the argument holding it. A tool never sets the
    /// setuid or setgid bit: a binary it leaves in the workspace would run as the tool's
    /// user for whoever starts it (no_new_privs covers only the tool's own processes).
    /// Seccomp, not `nosuid`: the workspace is the operator's file system, not a mount of
    /// ward's.
    static let modeArgument: [String: UInt32] = [
        "chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2, "creat": 1, "open": 2, "openat": 3, "mknod": 1, "mknodat": 2,
    ]

    /// The prctl options a tool may use, with why; every other option (PR_SET_MM,
    /// PR_SET_PTRACER, PR_SCHED_CORE on other processes, PR_SET_SYSCALL_USER_DISPATCH,
    /// PR_SET_SECUREBITS, PR_CAPBSET_DROP, …) is refused. Measured with strace: sh, bash,
    /// coreutils, git, perl, python3 and node call no prctl at start-up; java names its
    /// threads.
    static let prctlOptions: [(option: UInt64, name: String)] = [
        (1, "PR_SET_PDEATHSIG"), (2, "PR_GET_PDEATHSIG"),      // Go's and Python's subprocess options; ward's own call child
        (3, "PR_GET_DUMPABLE"),
        (15, "PR_SET_NAME"), (16, "PR_GET_NAME"),              // thread names (pthread_setname_np, java, libuv)
        (21, "PR_GET_SECCOMP"), (22, "PR_SET_SECCOMP"),        // a filter of its own only narrows
        (23, "PR_CAPBSET_READ"), (27, "PR_GET_SECUREBITS"),    // libcap reads (capsh, getpcaps)
        (36, "PR_SET_CHILD_SUBREAPER"), (37, "PR_GET_CHILD_SUBREAPER"),  // process runners (tini); own descendants only
        (38, "PR_SET_NO_NEW_PRIVS"), (39, "PR_GET_NO_NEW_PRIVS"),        // set already; sandboxing libraries ask again
        (0x5356_4D41, "PR_SET_VMA"),                           // glibc 2.38+ names its own mappings
    ]
    /// PR_SET_DUMPABLE to 0 (ssh and gpg-agent make themselves undumpable) or 1 (a call's
    /// child of an unprivileged ward's zygote, under this filter, sets ward's memory
    /// dumpable again once it has taken the tool identity, which made it non-dumpable; a
    /// tool's own process is dumpable after execve already), and PR_CAP_AMBIENT only for
    /// IS_SET (libcap's read).
    static let prctlWithArgument: [(option: UInt64, argument: UInt64, name: String)] = [
        (4, 0, "PR_SET_DUMPABLE 0"), (4, 1, "PR_SET_DUMPABLE 1"), (47, 1, "PR_CAP_AMBIENT_IS_SET"),
    ]

    /// Syscalls that act on another process named by pid in their first argument (0 = the
    /// caller). The kernel lets a process of the same uid (or root, for root's processes)
    /// change another's limits, affinity, scheduling or pages: a root tool set `ward serve`'s
    /// RLIMIT_NOFILE to 5. When calls share the host's PID namespace (cgroup containment,
    /// zygotes) the filter allows only pid 0; a call in a PID namespace of its own can name
    /// nothing but its own processes, so any pid is fine there.
    static let pidFirst = ["prlimit64", "sched_setaffinity", "sched_setscheduler", "sched_setparam", "sched_setattr",
                           "migrate_pages", "move_pages"]
    /// `(which, who, …)` syscalls: who 0 is the caller for every `which`, but PRIO_USER /
    /// IOPRIO_WHO_USER 0 means every process of the caller's uid. Only the process itself or
    /// its process group (which holds only the call's processes: each call leads its own
    /// session) with who 0.
    static let whichWho: [(name: String, process: UInt64, group: UInt64)] = [("setpriority", 0, 1), ("ioprio_set", 1, 2)]

    /// Under `network = "none"` and `"loopback"` a tool's only Unix sockets are its own
    /// connected stream or seqpacket pairs (`socket(AF_UNIX)` is refused). A datagram pair
    /// is refused too: an end of one can `sendto` or `connect` any pathname datagram socket
    /// of the host (/dev/log, systemd's notify socket), which Landlock does not check.
    static let pairTypes: [UInt64] = [1 /* SOCK_STREAM */, 5 /* SOCK_SEQPACKET */]
    /// Under `network = "none"`: calls that only make sense on a socket that can reach
    /// something (an address to bind, connect, listen or accept on, options to set). Kept:
    /// sendmsg, recvmsg, sendto, recvfrom and shutdown, which move bytes and descriptors over
    /// the pairs, and getsockname/getpeername, which Python's `socket.socketpair` (asyncio's
    /// event loop, multiprocessing's Pipe) calls on both ends.
    static let networkOnly: Set<String> = [
        "accept", "accept4", "bind", "connect", "getsockopt", "listen", "recvmmsg", "sendmmsg", "setsockopt",
    ]
    /// memfd_create only with MFD_NOEXEC_SEAL (0x8) and without MFD_EXEC (0x10): a memfd a
    /// tool makes can never be executed (`execve("/proc/self/fd/N")`, `execveat` with
    /// AT_EMPTY_PATH, fexecve), which Landlock's execute right does not see. Kernels before
    /// 6.3 do not know the flag (EINVAL): there, tools get no memfd at all.
    static let memfdExecFlags: UInt64 = 0x18, memfdNoExecSeal: UInt64 = 0x8

    /// One comparison of a rule: `(arg & mask) == value`. Arguments the kernel reads as a C
    /// int are compared on their low 32 bits, as the kernel sees them.
    struct Match: Equatable, Sendable {
        var arg: UInt32
        var mask: UInt64
        var value: UInt64
        static func int(_ arg: UInt32, _ value: UInt64) -> Match { Match(arg: arg, mask: 0xFFFF_FFFF, value: value) }
        static func long(_ arg: UInt32, _ value: UInt64) -> Match { Match(arg: arg, mask: .max, value: value) }
    }

    /// A syscall the filter allows: whatever its arguments (`alternatives` empty), or when
    /// every match of one alternative holds. `limit` says which, for `ward policy explain`.
    public struct Rule: Sendable {
        /// The syscall.
        public let name: String
        let alternatives: [[Match]]
        /// What its arguments are limited to, in words; nil when any are allowed.
        public let limit: String?
    }

    /// A tool's filter as data: `compile` turns it into BPF, `ward policy explain` prints it,
    /// so what explain says is what the filter does.
    public struct Plan: Sendable {
        /// What the filter allows: the policy's syscalls by name, then those every tool gets.
        public var rules: [Rule] = []
        /// Listed by the policy, refused here anyway, with why.
        public var refused: [(name: String, reason: String)] = []
    }

    /// The filter of a policy's syscall list. `ownPIDNamespace`: each call's tool is pid 1
    /// of a PID namespace of its own (no cgroup containment), so pids name only its processes.
    /// `traced`: each call adds its effect-trace filter under this one and sends its
    /// listener to ward (`ward_step_trace`).
    public static func plan(syscalls: [String], network: NetworkAccess, ownPIDNamespace: Bool, traced: Bool = false) -> Plan {
        var plan = Plan()
        func allow(_ name: String, _ alternatives: [[Match]] = [], _ limit: String? = nil) {
            plan.rules.append(Rule(name: name, alternatives: alternatives, limit: limit))
        }
        let pidLimit = "pid 0 (itself) only while calls share the host's PID namespace (cgroup containment); any pid of its own PID namespace otherwise"
        for name in Set(syscalls).sorted() where !enosys.contains(name) {
            switch name {
            case "clone", "unshare":
                allow(name, [[Match(arg: 0, mask: namespaceFlags, value: 0)]], "without namespace flags")
            case "personality":
                allow(name, allowedPersonalities.map { [.int(0, $0)] }, "PER_LINUX (also PER_LINUX32, UNAME26) and the query only")
            case "socket":
                let families: [(Int32, String)]
                switch network {
                case .none: families = []
                case .loopback: families = [(AF_INET, "AF_INET"), (AF_INET6, "AF_INET6")]
                case .any: families = [(AF_INET, "AF_INET"), (AF_INET6, "AF_INET6"), (AF_UNIX, "AF_UNIX")]
                }
                if families.isEmpty {
                    plan.refused.append((name, "network = \"none\""))
                } else {
                    allow(name, families.map { [.int(0, UInt64($0.0))] }, families.map(\.1).joined(separator: ", ") + " only")
                }
            case "socketpair":
                if network == .any {
                    allow(name, [[.int(0, UInt64(AF_UNIX))]], "AF_UNIX only")
                } else {
                    allow(name, pairTypes.map { [.int(0, UInt64(AF_UNIX)), Match(arg: 1, mask: 0xF, value: $0)] },
                          "AF_UNIX stream and seqpacket pairs only (a datagram end could sendto host sockets)")
                }
            case _ where network == .none && networkOnly.contains(name):
                plan.refused.append((name, "network = \"none\": no socket can reach anything"))
            case "prctl":
                allow(name, prctlOptions.map { [.int(0, $0.option)] } + prctlWithArgument.map { [.int(0, $0.option), .long(1, $0.argument)] },
                      "options " + (prctlOptions.map(\.name) + prctlWithArgument.map(\.name)).joined(separator: ", ") + " only")
            case "memfd_create":
                allow(name, [[Match(arg: 1, mask: memfdExecFlags, value: memfdNoExecSeal)]],
                      "MFD_NOEXEC_SEAL only: never executable (kernel 6.3+; older kernels refuse the flag, so no memfd there)")
            case "pidfd_open" where !ownPIDNamespace:
                plan.refused.append((name, "calls share the host's PID namespace: it would open any host process (allowed with a PID namespace of its own)"))
            case _ where modeArgument[name] != nil:
                allow(name, [[Match(arg: modeArgument[name]!, mask: 0o6000, value: 0)]], "no setuid or setgid bit in the mode")
            case _ where pidFirst.contains(name):
                allow(name, ownPIDNamespace ? [] : [[.int(0, 0)]], pidLimit)
            case _ where whichWho.contains { $0.name == name }:
                let w = whichWho.first { $0.name == name }!
                allow(name, ownPIDNamespace ? [] : [[.int(0, w.process), .int(1, 0)], [.int(0, w.group), .int(1, 0)]],
                      "itself or its process group (who 0) only while calls share the host's PID namespace; any of its own PID namespace otherwise")
            default:
                allow(name)
            }
        }
        // Always allowed: it can only take privileges away, and each call started by a
        // zygote uses it to nest its own Landlock scope.
        if !syscalls.contains("landlock_restrict_self") { allow("landlock_restrict_self") }
        // Likewise: each call of a root ward's zygote takes the tool identity with these,
        // under this filter. Without CAP_SETUID and CAP_SETGID (no tool has them) they only
        // move among the ids the caller already has, and capset only lowers.
        for name in ["setgroups", "setresgid", "setresuid", "capset"] where !syscalls.contains(name) { allow(name) }
        // A traced tool's call child adds the trace filter and hands its listener to ward
        // under this filter. Under no_new_privs a filter only narrows, and the tool cannot
        // take the listener's place: the kernel allows one per filter chain (EBUSY).
        if traced { for name in ["seccomp", "sendmsg"] where !syscalls.contains(name) { allow(name) } }
        return plan
    }

    /// Compiles the allowlist. Default action EPERM; foreign ABIs kill the process. Any
    /// libseccomp failure is fatal: a silently dropped rule is a hole.
    static func compile(syscalls: [String], network: NetworkAccess, ownPIDNamespace: Bool, traced: Bool = false) throws(SandboxError) -> SeccompProgram {
        guard let ctx = seccomp_init(ward_scmp_act_errno(UInt16(EPERM))) else {
            throw SandboxError(.internalError, "seccomp_init failed")
        }
        defer { seccomp_release(ctx) }
        func check(_ rc: Int32, _ what: @autoclosure () -> String) throws(SandboxError) {
            if rc != 0 { throw SandboxError(.internalError, "seccomp: \(what()) failed: \(errnoName(-rc))", errno: -rc) }
        }
        // i386 `int 0x80` and x32 (nr | 0x40000000) are not in this native-only filter:
        // they hit the bad-arch action and the process dies.
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS), "set bad-arch action")
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "leave no_new_privs to the spawn")
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2), "binary-tree layout")

        func add(_ action: UInt32, _ name: String, _ matches: [Match] = []) throws(SandboxError) {
            let n = seccomp_syscall_resolve_name(name)
            guard n != __NR_SCMP_ERROR else { throw SandboxError(.internalError, "seccomp: unknown syscall \(name)") }
            var conds = matches.map { ward_scmp_arg($0.arg, SCMP_CMP_MASKED_EQ, $0.mask, $0.value) }
            let rc = conds.withUnsafeMutableBufferPointer { buf in
                seccomp_rule_add_exact_array(ctx, action, n, UInt32(buf.count), buf.baseAddress)
            }
            try check(rc, "rule for \(name)")
        }

        for rule in plan(syscalls: syscalls, network: network, ownPIDNamespace: ownPIDNamespace, traced: traced).rules {
            if rule.alternatives.isEmpty { try add(SCMP_ACT_ALLOW, rule.name) }
            for matches in rule.alternatives { try add(SCMP_ACT_ALLOW, rule.name, matches) }
        }
        for name in enosys { try add(ward_scmp_act_errno(UInt16(ENOSYS)), name) }
        let program = try export(ctx)
        return syscalls.contains("ioctl") ? SeccompProgram(bytes: ttyInjectionGuard + program.bytes) : program
    }

    /// The syscalls a call's effect trace is told of, with the argument matches that make
    /// one worth telling (none: always). An `open` or `openat` only when it may write:
    /// read-only opens are most of a tool's syscalls and change nothing. `execve` is
    /// compiled apart (`compileTrace`).
    static let traced: [(name: String, alternatives: [[Match]])] = {
        let writing: (UInt32) -> [[Match]] = { arg in
            // O_WRONLY, O_RDWR, O_CREAT, O_TRUNC: any of them.
            [0o1, 0o2, 0o100, 0o1000].map { [Match(arg: arg, mask: $0, value: $0)] }
        }
        let always = ["creat", "truncate", "unlink", "unlinkat", "rmdir", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
                      "mknod", "mknodat", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2",
                      "execveat", "connect", "bind"]
        return [("open", writing(1)), ("openat", writing(2))] + always.map { ($0, []) }
    }()

    /// The program's path a call's filter does not notify an execve of: a stand-in, patched
    /// per call (`TraceFilter.program(sparing:)`).
    static let sparedPathStandIn: UInt64 = 0x5741_5244_7061_7468

    /// The filter of a call's effect trace: every syscall of `traced`, and every `execve`
    /// but the one of the tool itself, goes to ward (SECCOMP_RET_USER_NOTIF), which reads
    /// its arguments and lets it go on; everything else is allowed here, and left to the
    /// allowlist stacked with it.
    ///
    /// Why the tool's own execve is spared: it is made while the thread that spawned the
    /// call waits for it (vfork), so its notification would need a thread of its own to
    /// answer it, and two wake-ups across CPUs per call, several times what the rest of the
    /// trace costs. ward knows that program and its argv anyway. The filter tells it by its
    /// path pointer, an address in ward's memory that the call's child passes to execve; a
    /// process of the tool, in an address space of its own, names that address only by
    /// chance.
    static func compileTrace() throws(SandboxError) -> TraceFilter {
        guard let ctx = seccomp_init(SCMP_ACT_ALLOW) else { throw SandboxError(.internalError, "seccomp_init failed") }
        defer { seccomp_release(ctx) }
        func check(_ rc: Int32, _ what: @autoclosure () -> String) throws(SandboxError) {
            if rc != 0 { throw SandboxError(.internalError, "seccomp: \(what()) failed: \(errnoName(-rc))", errno: -rc) }
        }
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS), "set bad-arch action")
        try check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "leave no_new_privs to the spawn")
        func add(_ name: String, _ conditions: [scmp_arg_cmp]) throws(SandboxError) {
            let n = seccomp_syscall_resolve_name(name)
            guard n != __NR_SCMP_ERROR else { throw SandboxError(.internalError, "seccomp: unknown syscall \(name)") }
            var conds = conditions
            let rc = conds.withUnsafeMutableBufferPointer { buf in
                seccomp_rule_add_exact_array(ctx, SCMP_ACT_NOTIFY, n, UInt32(buf.count), buf.baseAddress)
            }
            try check(rc, "trace rule for \(name)")
        }
        for (name, alternatives) in traced {
            for matches in alternatives.isEmpty ? [[]] : alternatives {
                try add(name, matches.map { ward_scmp_arg($0.arg, SCMP_CMP_MASKED_EQ, $0.mask, $0.value) })
            }
        }
        try add("execve", [ward_scmp_arg(0, SCMP_CMP_NE, sparedPathStandIn, 0)])
        let program = try export(ctx)
        // Where the stand-in's two halves are compared: exactly one place each, or the
        // per-call patch could not be trusted.
        func index(of k: UInt32) -> Int? {
            let found = (0..<program.instructionCount).filter { i in
                (0..<4).reduce(UInt32(0)) { $0 | UInt32(program.bytes[i * 8 + 4 + $1]) << (8 * $1) } == k
            }
            return found.count == 1 ? found[0] : nil
        }
        guard let high = index(of: UInt32(sparedPathStandIn >> 32)), let low = index(of: UInt32(truncatingIfNeeded: sparedPathStandIn)) else {
            throw SandboxError(.internalError, "seccomp: the trace filter's execve comparison is not where it was expected")
        }
        return TraceFilter(template: program.bytes, high: high, low: low)
    }

    /// A hand-written prefix that refuses ioctl TIOCSTI and TIOCLINUX before libseccomp's
    /// program runs. libseccomp cannot mix an unconditional allow with conditional denials
    /// on one syscall, and a 64-bit "not equal" would let `(0x123 << 32) | TIOCSTI` through
    /// (CVE-2019-10063) because the kernel reads only the low 32 bits of the command. So
    /// this loads exactly those 32 bits (args[1], low word on little-endian x86_64) and
    /// compares them; everything else falls through to the allowlist.
    static let ttyInjectionGuard: [UInt8] = {
        let ldAbs: UInt16 = 0x20, jeq: UInt16 = 0x15, ja: UInt16 = 0x05, ret: UInt16 = 0x06
        let auditArchX86_64: UInt32 = 0xC000_003E, nrIoctl: UInt32 = 16
        let instructions: [(UInt16, UInt8, UInt8, UInt32)] = [
            (ldAbs, 0, 0, 4),                          // 0: A = seccomp_data.arch
            (jeq, 0, 5, auditArchX86_64),              // 1: native? else → 7
            (ldAbs, 0, 0, 0),                          // 2: A = seccomp_data.nr
            (jeq, 0, 3, nrIoctl),                      // 3: ioctl? else → 7
            (ldAbs, 0, 0, 24),                         // 4: A = low 32 bits of args[1]
            (jeq, 2, 0, UInt32(tiocsti)),              // 5: TIOCSTI → 8
            (jeq, 1, 0, UInt32(tioclinux)),            // 6: TIOCLINUX → 8
            (ja, 0, 0, 1),                             // 7: → 9, libseccomp's first instruction
            (ret, 0, 0, 0x0005_0000 | UInt32(EPERM)),  // 8: SECCOMP_RET_ERRNO | EPERM
        ]
        var bytes: [UInt8] = []
        for (code, jt, jf, k) in instructions {
            bytes += [UInt8(code & 0xFF), UInt8(code >> 8), jt, jf]
            bytes += [UInt8(k & 0xFF), UInt8(k >> 8 & 0xFF), UInt8(k >> 16 & 0xFF), UInt8(k >> 24)]
        }
        return bytes
    }()

    /// libseccomp 2.5.4 has no export-to-memory: export into a memfd and read it back.
    private static func export(_ ctx: scmp_filter_ctx) throws(SandboxError) -> SeccompProgram {
        let fd = ward_memfd("ward-bpf")
        guard fd >= 0 else { throw SandboxError(.internalError, "memfd_create failed: \(errnoName(errno))") }
        defer { close(fd) }
        let rc = seccomp_export_bpf(ctx, fd)
        guard rc == 0 else { throw SandboxError(.internalError, "seccomp_export_bpf failed: \(errnoName(-rc))") }
        let size = lseek(fd, 0, SEEK_END)
        guard size > 0, size % 8 == 0, size / 8 <= 4096 else {
            throw SandboxError(.internalError, "seccomp program has a bad size: \(size) bytes")
        }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        let n = pread(fd, &bytes, bytes.count, 0)
        guard n == size else { throw SandboxError(.internalError, "reading the seccomp program back failed") }
        return SeccompProgram(bytes: bytes)
    }
}
