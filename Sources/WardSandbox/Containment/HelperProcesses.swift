import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// A process ward keeps beside it that would outlive it for a moment: each tool's zygote
/// (it shares ward's memory) and the cgroup watchdog (a fork of ward).
protocol HelperProcess: AnyObject, Sendable {
    /// Makes the helper end now (SIGKILL, or closing what it waits on) and returns the pids
    /// to wait for: children of this process, not reaped yet.
    func endForExit() -> [pid_t]
}

/// ward's helpers end before ward does.
///
/// Both kinds carry ward's command line (the zygote reads ward's own memory, the watchdog a
/// copy of it), which holds the tool arguments of `ward sandbox` or the agent's command of
/// `ward run`. Left to die after ward, of the parent-death signal or the end of a pipe, they
/// still show that command line for a few milliseconds after ward exited, and the watchdog
/// may still be killing calls: whoever looks right after ward exits for anything left of
/// a call would find them. So at exit ward ends them and waits until each has exited.
enum HelperProcesses {
    private struct Entry { weak var helper: (any HelperProcess)? }
    private static let tracked = Lock<[Entry]>([])
    /// The exit hook, installed with the first helper.
    private static let hook: Void = { atexit { HelperProcesses.endAll() } }()

    static func track(_ helper: any HelperProcess) {
        _ = hook
        tracked.withLock { entries in
            entries.removeAll { $0.helper == nil }
            entries.append(Entry(helper: helper))
        }
    }

    /// Ends every helper still alive and waits (up to 2 s) until each has exited. It does not
    /// reap them: another thread may be waiting for a zygote, and the kernel frees the
    /// zombies with this process.
    static func endAll() {
        let helpers = tracked.withLock { entries in
            defer { entries.removeAll() }
            return entries.compactMap(\.helper)
        }
        var pending = helpers.flatMap { $0.endForExit() }
        for _ in 0..<10_000 where !pending.isEmpty {
            pending.removeAll(where: hasExited)
            if !pending.isEmpty { usleep(200) }
        }
    }

    /// Whether a child has exited (a zombie now) or was reaped, without reaping it.
    static func hasExited(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        if waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT | Int32(bitPattern: 0x4000_0000) /* __WALL */) != 0 {
            return errno != EINTR
        }
        return info._sifields._sigchld.si_pid == pid
    }
}
