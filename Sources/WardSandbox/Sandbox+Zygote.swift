import WardCore
import CWardSpawn
import WardPolicy

#if canImport(Glibc)
import Glibc
#endif

/// The zygote of one tool (see `ward_zygote_start`): a confined process that starts each
/// call's tool so the call inherits its seccomp filter, Landlock domain and dropped
/// capabilities instead of attaching them again. Started on first use, restarted after it
/// dies; while it cannot run, calls take the direct spawn path, which is equally confined.
final class Zygote: @unchecked Sendable {
    // @unchecked: `config` and `bpf` are written once in init and only read afterwards (by
    // the zygote process too, which shares our memory); the C handle lives in the lock.
    /// The confinement the zygote applies; lives as long as the zygote.
    private let config: UnsafeMutablePointer<ward_spawn_config>
    private let bpf: UnsafeMutableRawBufferPointer
    private let scopeFD: Int32
    /// The running zygote's C handle. @unchecked: it is only touched inside `handle`'s lock.
    private struct Handle: @unchecked Sendable { var zygote: OpaquePointer? }
    /// The running zygote. Requests are serialized: one spawn at a time per zygote.
    private let handle = Lock(Handle(zygote: nil))

    /// The syscalls a call's child makes between the zygote and the tool: a policy that
    /// denies any of them is started directly instead.
    static let required: Set<String> = [
        "read", "write", "clone", "setsid", "dup2", "chdir", "rt_sigprocmask", "prctl",
        "prlimit64", "close_range", "execve", "exit_group", "openat",
    ]

    init(bpf program: SeccompProgram, landlockFD: Int32, features: KernelFeatures) {
        bpf = UnsafeMutableRawBufferPointer.allocate(byteCount: program.bytes.count, alignment: 8)
        bpf.copyBytes(from: program.bytes)
        config = .allocate(capacity: 1)
        config.initialize(to: ward_spawn_config())
        config.pointee.landlock_ruleset_fd = landlockFD
        config.pointee.bpf = features.seccomp ? UnsafeRawPointer(bpf.baseAddress) : nil
        config.pointee.bpf_len = UInt16(program.instructionCount)
        config.pointee.drop_bounding_set = features.privileged ? 1 : 0
        config.pointee.cap_last = Int32(features.capLast)
        scopeFD = Landlock.makeScopeRuleset(abi: features.landlockABI)
    }

    deinit {
        handle.withLock { h in
            if let z = h.zygote { ward_zygote_stop(z) }
            h.zygote = nil
        }
        if scopeFD >= 0 { close(scopeFD) }
        config.deallocate()
        bpf.deallocate()
    }

    /// The running zygote's pid, if one runs.
    var pid: pid_t? { handle.withLock { h in h.zygote.map { ward_zygote_pid($0) } } }

    /// Spawns through the zygote; nil when the zygote is unavailable (the caller then
    /// spawns directly). A failure of the call's own child is returned like ward_spawn's.
    func spawn(_ call: inout ward_spawn_config, _ error: inout ward_spawn_error, _ pidfd: inout Int32) -> pid_t? {
        handle.withLock { h -> pid_t? in
            if h.zygote == nil {
                var startError = ward_spawn_error()
                h.zygote = ward_zygote_start(config, scopeFD, &startError)
                if h.zygote == nil { return nil }
            }
            let pid = ward_zygote_spawn(h.zygote, &call, &error, &pidfd)
            if pid < 0 && error.step == Int32(WARD_STEP_ZYGOTE.rawValue) {
                // The zygote died (killed from outside, or by a tool of this policy before
                // the scope could stop it): reap it; the next call starts a new one.
                ward_zygote_stop(h.zygote)
                h.zygote = nil
                return nil
            }
            return pid
        }
    }
}
