import CWardOS
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// Landlock rulesets, sized by the ABI the running kernel reports. Debian 12's headers know
/// only ABI 2, so the access bits and the ruleset struct are defined here.
public enum Landlock {
    // Filesystem rights (ABI 1 unless noted).
    static let execute: UInt64 = 1 << 0
    static let writeFile: UInt64 = 1 << 1
    static let readFile: UInt64 = 1 << 2
    static let readDir: UInt64 = 1 << 3
    static let removeDir: UInt64 = 1 << 4
    static let removeFile: UInt64 = 1 << 5
    static let makeChar: UInt64 = 1 << 6
    static let makeDir: UInt64 = 1 << 7
    static let makeReg: UInt64 = 1 << 8
    static let makeSock: UInt64 = 1 << 9
    static let makeFifo: UInt64 = 1 << 10
    static let makeBlock: UInt64 = 1 << 11
    static let makeSym: UInt64 = 1 << 12
    static let refer: UInt64 = 1 << 13      // ABI 2
    static let truncate: UInt64 = 1 << 14   // ABI 3
    static let ioctlDev: UInt64 = 1 << 15   // ABI 5
    // Network rights (ABI 4).
    static let bindTCP: UInt64 = 1 << 0
    static let connectTCP: UInt64 = 1 << 1
    // Scopes (ABI 6).
    static let scopeAbstractUnix: UInt64 = 1 << 0
    static let scopeSignal: UInt64 = 1 << 1

    /// Rights that make sense on a file (directory-only rights on a file rule give EINVAL).
    static let fileRights: UInt64 = execute | writeFile | readFile | truncate | ioctlDev

    /// The Landlock ABI ward uses: the kernel's, 0 when Landlock is absent or disabled,
    /// lowered to `WARD_TEST_LANDLOCK_ABI` when that is set (see `testABICap`).
    public static func abiVersion() -> Int {
        let v = ward_landlock_create_ruleset(nil, 0, 1 /* LANDLOCK_CREATE_RULESET_VERSION */)
        let kernel = v < 0 ? 0 : Int(v)
        return testABICap.map { min($0, kernel) } ?? kernel
    }

    /// For tests only: `WARD_TEST_LANDLOCK_ABI=N` (read once, at first use) makes ward use
    /// at most Landlock ABI N, as on an older kernel, so the threat tests can run at every
    /// ABI ward supports on one machine. It can only take protections away.
    static let testABICap: Int? = getenv("WARD_TEST_LANDLOCK_ABI").flatMap { Int(String(cString: $0)) }.map { max(0, $0) }

    /// Every filesystem right this ABI knows: all of them are handled, so anything not
    /// granted by a rule is denied (never device nodes: MAKE_CHAR/MAKE_BLOCK are never granted).
    static func handledFS(abi: Int) -> UInt64 {
        var rights: UInt64 = (1 << 13) - 1
        if abi >= 2 { rights |= refer }
        if abi >= 3 { rights |= truncate }
        if abi >= 5 { rights |= ioctlDev }
        return rights
    }

    static func readRights(abi: Int) -> UInt64 { execute | readFile | readDir }

    static func writeRights(abi: Int) -> UInt64 {
        var rights = readRights(abi: abi) | writeFile | removeDir | removeFile | makeDir | makeReg | makeSock | makeFifo | makeSym
        if abi >= 2 { rights |= refer }
        if abi >= 3 { rights |= truncate }
        return rights
    }

    /// Builds a ruleset fd for these roots. Paths that do not exist are skipped (the policy
    /// check already refused missing non-optional ones). The fd is close-on-exec; the child
    /// applies it with landlock_restrict_self.
    /// `zygote`: also let the holder write files under /proc. A zygote's domain needs that
    /// for each call's child to write its own OOM score (a score written anywhere else in
    /// ward's memory would be ward's too), and only ward's C code ever runs in it: each
    /// call's child then nests the tool's own ruleset, which takes /proc away again.
    static func makeRuleset(read: [String], write: [String], network: NetworkAccess, abi: Int,
                            zygote: Bool = false) throws(SandboxError) -> Int32 {
        // struct landlock_ruleset_attr { handled_access_fs; handled_access_net; scoped }
        var attr: (UInt64, UInt64, UInt64) = (handledFS(abi: abi), 0, 0)
        // Network "none": TCP bind and connect handled with no rule = all denied (seccomp
        // already refuses socket(); this is the second layer). "loopback" lives in its own
        // network namespace and "any" is the host's: neither is restricted here.
        if abi >= 4 && network == .none { attr.1 = bindTCP | connectTCP }
        // Abstract Unix sockets and signals stay inside the sandbox's own domain: no
        // reaching X11/D-Bus/other agents, no killing the supervisor.
        if abi >= 6 { attr.2 = scopeAbstractUnix | scopeSignal }
        let size = abi >= 6 ? 24 : (abi >= 4 ? 16 : 8)
        let fd = withUnsafePointer(to: &attr) { ward_landlock_create_ruleset($0, UInt(size), 0) }
        guard fd >= 0 else {
            throw SandboxError(.spawnFailed, "landlock_create_ruleset failed: \(errnoName(errno))", errno: errno)
        }
        let rulesetFD = Int32(fd)
        do {
            for (paths, rights) in [(read, readRights(abi: abi)), (write, writeRights(abi: abi))] {
                for path in paths { try addRule(rulesetFD, path: path, rights: rights) }
            }
            if zygote { try addRule(rulesetFD, path: "/proc", rights: writeFile) }
        } catch {
            close(rulesetFD)
            throw error
        }
        return rulesetFD
    }

    private static func addRule(_ ruleset: Int32, path: String, rights: UInt64) throws(SandboxError) {
        let fd = ward_open_path(path)
        if fd < 0 {
            if errno == ENOENT { return }
            throw SandboxError(.spawnFailed, "cannot open sandbox root \(path): \(errnoName(errno))", errno: errno)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SandboxError(.spawnFailed, "cannot stat sandbox root \(path): \(errnoName(errno))", errno: errno) }
        let isDir = (st.st_mode & S_IFMT) == S_IFDIR
        let granted = isDir ? rights : rights & fileRights
        if ward_landlock_add_path_rule(ruleset, granted, fd) != 0 {
            throw SandboxError(.spawnFailed, "landlock_add_rule for \(path) failed: \(errnoName(errno))", errno: errno)
        }
    }
}
