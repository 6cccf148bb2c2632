import CSeccomp
import CWardSpawn
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

enum Seccomp {
    /// clone/unshare flags that create namespaces (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC |
    /// NEWUSER | NEWPID | NEWNET, plus CLONE_NEWTIME, which only unshare takes).
    static let namespaceFlags: UInt64 = 0x7E02_0000 | 0x80
    static let tiocsti: UInt64 = 0x5412
    static let tioclinux: UInt64 = 0x541C
    /// PER_LINUX, PER_LINUX32 (0x8), UNAME26 (0x20000), both (0x20008) and the query.
    static let allowedPersonalities: [UInt64] = [0, 0x8, 0x20000, 0x20008, 0xFFFF_FFFF]
    /// Always ENOSYS: clone3's flags live in a struct a filter cannot read, and glibc falls
    /// back to clone on ENOSYS (EPERM would break it); the new mount API likewise.
    static let enosys = ["clone3", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr", "openat2"]
    /// Syscalls that set a file's mode, with the argument holding it. A tool never sets the
    /// setuid or setgid bit: a binary it leaves in the workspace would run as the tool's
    /// user for whoever starts it (no_new_privs covers only the tool's own processes).
    /// Seccomp, not `nosuid`: the workspace is the operator's file system, not a mount of
    /// ward's. (openat2's mode lives in a struct a filter cannot read: it gets ENOSYS, and
    /// callers fall back to openat.)
    static let modeArgument: [String: UInt32] = [
        "chmod": 1, "fchmod": 1, "fchmodat": 2, "fchmodat2": 2, "creat": 1, "open": 2, "openat": 3, "mknod": 1, "mknodat": 2,
    ]
    static let setIDBits: UInt64 = 0o6000
    /// Syscalls whose arguments ward restricts itself.
    static let filtered: Set<String> = Set(["clone", "unshare", "ioctl", "personality", "socket", "socketpair"]).union(modeArgument.keys)

    /// Compiles the allowlist. Default action EPERM; foreign ABIs kill the process. Any
    /// libseccomp failure is fatal: a silently dropped rule is a hole.
    static func compile(syscalls: [String], network: NetworkAccess) throws(SandboxError) -> SeccompProgram {
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

        func nr(_ name: String) throws(SandboxError) -> Int32 {
            let n = seccomp_syscall_resolve_name(name)
            guard n != __NR_SCMP_ERROR else { throw SandboxError(.internalError, "seccomp: unknown syscall \(name)") }
            return n
        }
        func add(_ action: UInt32, _ name: String, _ conditions: [scmp_arg_cmp] = []) throws(SandboxError) {
            let n = try nr(name)
            var conds = conditions
            let rc = conds.withUnsafeMutableBufferPointer { buf in
                seccomp_rule_add_exact_array(ctx, action, n, UInt32(buf.count), buf.baseAddress)
            }
            try check(rc, "rule for \(name)")
        }
        func masked(_ arg: UInt32, mask: UInt64, equals value: UInt64) -> scmp_arg_cmp {
            ward_scmp_arg(arg, SCMP_CMP_MASKED_EQ, mask, value)
        }
        func equals(_ arg: UInt32, _ value: UInt64) -> scmp_arg_cmp {
            ward_scmp_arg(arg, SCMP_CMP_EQ, value, 0)
        }

        let allowed = Set(syscalls)
        for name in syscalls where !filtered.contains(name) && !enosys.contains(name) {
            try add(SCMP_ACT_ALLOW, name)
        }
        // Always allowed: it can only take privileges away, and each call started by a
        // zygote uses it to nest its own Landlock scope.
        if !allowed.contains("landlock_restrict_self") { try add(SCMP_ACT_ALLOW, "landlock_restrict_self") }
        // Likewise: each call of a root ward's zygote takes the tool identity with these,
        // under this filter. Without CAP_SETUID and CAP_SETGID (no tool has them) they only
        // move among the ids the caller already has, and capset only lowers.
        for name in ["setgroups", "setresgid", "setresuid", "capset"] where !allowed.contains(name) { try add(SCMP_ACT_ALLOW, name) }
        for name in enosys { try add(ward_scmp_act_errno(UInt16(ENOSYS)), name) }
        if allowed.contains("clone") {
            try add(SCMP_ACT_ALLOW, "clone", [masked(0, mask: namespaceFlags, equals: 0)])
        }
        if allowed.contains("unshare") {
            try add(SCMP_ACT_ALLOW, "unshare", [masked(0, mask: namespaceFlags, equals: 0)])
        }
        if allowed.contains("ioctl") { try add(SCMP_ACT_ALLOW, "ioctl") }
        if allowed.contains("personality") {
            for p in allowedPersonalities { try add(SCMP_ACT_ALLOW, "personality", [equals(0, p)]) }
        }
        if allowed.contains("socket") {
            let families: [Int32]
            switch network {
            case .none: families = []
            case .loopback: families = [AF_INET, AF_INET6]
            case .any: families = [AF_INET, AF_INET6, AF_UNIX]
            }
            for f in families { try add(SCMP_ACT_ALLOW, "socket", [equals(0, UInt64(f))]) }
        }
        for (name, argument) in modeArgument where allowed.contains(name) {
            try add(SCMP_ACT_ALLOW, name, [masked(argument, mask: setIDBits, equals: 0)])
        }
        if allowed.contains("socketpair") {
            try add(SCMP_ACT_ALLOW, "socketpair", [equals(0, UInt64(AF_UNIX))])
        }
        let program = try export(ctx)
        return allowed.contains("ioctl") ? SeccompProgram(bytes: ttyInjectionGuard + program.bytes) : program
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
