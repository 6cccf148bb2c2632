import CWardOS
import CWardSpawn
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// A server running in its sandbox (`Sandbox.launchServer`): ward writes its stdin and reads
/// its stdout and stderr until it exits or is killed. Its whole tree is held together as a
/// call's is (its cgroup, and a PID namespace whose init it is, so everything it started dies
/// with it), and it is killed if ward dies (the parent-death signal of that init).
public final class SandboxedProcess: @unchecked Sendable {
    // @unchecked: the fds and the slot are fixed at creation; `ended` guards the rest.
    public let pid: pid_t
    /// Readable once the process has exited (poll it beside the pipes).
    public let pidfd: Int32
    /// The write end of its stdin.
    public let input: Int32
    /// The read ends of its stdout and stderr.
    public let output: Int32
    public let errors: Int32
    let containment: Containment
    let slot: CgroupSlot?
    let cgroups: CgroupPool?
    /// How it ended, once reaped.
    private struct State {
        var ended: (code: Int32?, signal: Int32?)?
        /// Its cgroup was given back: another call may hold it now.
        var released = false
    }
    private let state = Lock(State())

    init(pid: pid_t, pidfd: Int32, input: Int32, output: Int32, errors: Int32, containment: Containment, slot: CgroupSlot?, cgroups: CgroupPool?) {
        self.pid = pid
        self.pidfd = pidfd
        self.input = input
        self.output = output
        self.errors = errors
        self.containment = containment
        self.slot = slot
        self.cgroups = cgroups
        containment.register(pid, slot)
    }

    deinit {
        if state.withLock({ $0.ended == nil }) { terminate(); _ = wait() }
        for fd in [pidfd, input, output, errors] { close(fd) }
    }

    /// Kills its whole tree, from any thread; `wait` then returns. Safe at any time: the
    /// process is signalled through its pidfd (never another process that took its number
    /// after it was reaped), and its cgroup only while it is still its own.
    public func terminate() {
        state.withLock { s in
            guard !s.released else { return }
            if let slot { _ = slot.killAll(sparing: pid) }
            _ = ward_pidfd_kill(pidfd)
        }
    }

    /// Waits for it to exit, then kills whatever it left (its tree ends with it) and gives
    /// its cgroup back. Returns how it ended. Called once, by the thread that owns it.
    public func wait() -> (code: Int32?, signal: Int32?) {
        if let done = state.withLock({ $0.ended }) { return done }
        var exited: Int32 = 0, code: Int32 = 0, signal: Int32 = 0
        ward_wait(pid, &exited, &code, &signal)
        let how = (code: exited != 0 ? code : nil, signal: exited != 0 ? nil : signal)
        state.withLock { s in
            // Its PID namespace died with it (the kernel killed the rest); a cgroup is
            // emptied; its reaped pid is never signalled.
            if containment.treeKill != .pidNamespace { containment.killTree(pid: pid, slot: slot) }
            s.released = true
            s.ended = how
        }
        containment.unregister(pid)
        if let slot { cgroups?.release(slot) }
        return how
    }
}
