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
    // @unchecked: `config` is written once in init and only read afterwards (by
    // the zygote process too, which shares our memory); the C handle lives in the lock.
    /// The confinement the zygote applies; lives as long as the zygote.
    private let config: UnsafeMutablePointer<ward_spawn_config>
    /// The tool's filter, which `config` points at, and its Landlock ruleset, which each
    /// call's child nests under the zygote's domain: a domain of its own per call, which
    /// Landlock keeps from ptracing (process_vm_*, pidfd_getfd, kcmp) the zygote, ward and
    /// other calls, and from signalling them (scopes, ABI 6). Kept alive with the zygote.
    private let tool: ToolConfinement
    /// The zygote's own Landlock ruleset (owned here).
    private let zygoteFD: Int32
    /// The running zygote's C handle. @unchecked: it is only touched inside `handle`'s lock.
    private struct Handle: @unchecked Sendable { var zygote: OpaquePointer? }
    /// The running zygote.
    private let handle = Lock(Handle(zygote: nil))
    /// One spawn at a time per zygote; a parked call holds it from `startParked` to
    /// `finishParked`, so it is a bare mutex rather than a scoped `Lock`.
    private let spawning: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()

    /// The syscalls a call's child makes between the zygote and the tool: a policy that
    /// denies any of them is started directly instead.
    static let required: Set<String> = [
        "read", "write", "clone", "setsid", "dup2", "chdir", "rt_sigprocmask", "prctl",
        "prlimit64", "close_range", "execve", "exit_group", "openat", "getppid",
    ]

    /// A zygote for `tool`, confined as `confinement` says, in a domain of `rulesetFD`
    /// (`Confinement.zygoteRuleset`, now owned here). Not started yet.
    init(tool: ToolConfinement, rulesetFD: Int32, confinement: Confinement) {
        self.tool = tool
        config = .allocate(capacity: 1)
        config.initialize(to: ward_spawn_config())
        confinement.configureZygote(&config.pointee, tool: tool, rulesetFD: rulesetFD)
        zygoteFD = rulesetFD
    }

    deinit {
        handle.withLock { Zygote.stop(&$0) }
        close(zygoteFD)
        pthread_mutex_destroy(spawning)
        spawning.deallocate()
        config.deallocate()
    }

    /// The running zygote's pid, if one runs.
    var pid: pid_t? { handle.withLock { h in h.zygote.map { ward_zygote_pid($0) } } }

    /// What became of a spawn asked of the zygote.
    enum Spawn {
        /// The zygote made no child for the request (it cannot start, or it died first):
        /// nothing was started, the caller spawns directly.
        case unavailable
        /// The call's pid, or -1 with the child's failure in the error (as ward_spawn).
        case spawned(pid_t)
        /// The zygote died after it made the call's child: the tool may have started.
        case lost
    }

    /// Spawns through the zygote.
    func spawn(_ call: inout ward_spawn_config, _ error: inout ward_spawn_error, _ pidfd: inout Int32) -> Spawn {
        pthread_mutex_lock(spawning)
        defer { pthread_mutex_unlock(spawning) }
        return handle.withLock { h -> Spawn in
            guard let z = running(&h) else { return .unavailable }
            guard ward_zygote_spawn_start(z, &call, &error, &pidfd) == WARD_ZYGOTE_SPAWNED else { return settle(&h, WARD_ZYGOTE_UNAVAILABLE, -1) }
            var pid: pid_t = -1
            let outcome = ward_zygote_spawn_finish(z, &error, &pidfd, &pid)
            return settle(&h, outcome, pid)
        }
    }

    /// Asks the zygote for a child that waits at `call.gate_fd` before execve, if no other
    /// call holds the zygote; true when asked: the zygote is then reserved for this call
    /// until `finishParked`.
    func startParked(_ call: UnsafePointer<ward_spawn_config>, _ error: UnsafeMutablePointer<ward_spawn_error>,
                     _ pidfd: UnsafeMutablePointer<Int32>) -> Bool {
        guard pthread_mutex_trylock(spawning) == 0 else { return false }
        let asked = handle.withLock { h -> Bool in
            guard let z = running(&h) else { return false }
            if ward_zygote_spawn_start(z, call, error, pidfd) == WARD_ZYGOTE_SPAWNED { return true }
            _ = settle(&h, WARD_ZYGOTE_UNAVAILABLE, -1)
            return false
        }
        if !asked { pthread_mutex_unlock(spawning) }
        return asked
    }

    /// Waits until the parked child has exec'd or given up (after its gate byte) and frees
    /// the zygote.
    func finishParked(_ error: UnsafeMutablePointer<ward_spawn_error>, _ pidfd: UnsafeMutablePointer<Int32>) -> Spawn {
        defer { pthread_mutex_unlock(spawning) }
        return handle.withLock { h -> Spawn in
            guard let z = h.zygote else { return .unavailable }
            var pid: pid_t = -1
            let outcome = ward_zygote_spawn_finish(z, error, pidfd, &pid)
            return settle(&h, outcome, pid)
        }
    }

    /// The zygote, started on first use (or after it died); nil when it cannot start. A
    /// zygote found dead here died between calls, before this call's request: replacing it
    /// is safe, where a death after the request leaves the call's start unknown.
    private func running(_ h: inout Handle) -> OpaquePointer? {
        if let z = h.zygote, ward_zygote_alive(z) == 0 { Zygote.stop(&h) }
        if h.zygote == nil {
            var startError = ward_spawn_error()
            h.zygote = ward_zygote_start(config, tool.landlockFD, &startError)
            if let z = h.zygote { HelperProcesses.add(ward_zygote_pid(z), ending: .kill) }
        }
        return h.zygote
    }

    /// Stops (kills and reaps) the running zygote, if any; no longer ended at exit.
    private static func stop(_ h: inout Handle) {
        guard let z = h.zygote else { return }
        HelperProcesses.remove(ward_zygote_pid(z))
        ward_zygote_stop(z)
        h.zygote = nil
    }

    /// A spawn's result. When the zygote is gone (killed from outside) it is reaped, and the next call starts a new one.
    private func settle(_ h: inout Handle, _ outcome: ward_zygote_outcome, _ pid: pid_t) -> Spawn {
        guard outcome != WARD_ZYGOTE_SPAWNED else { return .spawned(pid) }
        Zygote.stop(&h)
        return outcome == WARD_ZYGOTE_LOST ? .lost : .unavailable
    }
}
