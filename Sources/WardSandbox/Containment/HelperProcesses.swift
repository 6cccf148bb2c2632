import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// ward's helpers end before ward does.
///
/// Each tool's zygote shares ward's memory and the cgroup watchdog is a fork of it: both
/// carry ward's command line, which holds the tool arguments of `ward sandbox` or the
/// agent's command of `ward run`. Left to die after ward, of the parent-death signal or the
/// end of a pipe, they still show that command line for a few milliseconds after ward
/// exited, and the watchdog may still be killing calls: whoever looks right after ward exits
/// for anything left of a call would find them. So at exit ward ends them and waits until
/// each has exited.
///
/// Helpers are kept by pid, not by object: a helper is removed here before it is reaped, so
/// a pid listed is never another process's.
enum HelperProcesses {
    /// How a helper is made to end.
    enum Ending {
        /// SIGKILL (a zygote).
        case kill
        /// Closing the write end of the pipe it waits on (the watchdog).
        case close(Int32)
    }

    private static let live = Lock<[pid_t: Ending]>([:])
    /// The exit hook, installed with the first helper.
    private static let hook: Void = { atexit { HelperProcesses.endAll() } }()

    /// A helper started: a child of this process, not reaped until `remove`.
    static func add(_ pid: pid_t, ending: Ending) {
        _ = hook
        live.withLock { $0[pid] = ending }
    }

    /// A helper about to be ended and reaped by its owner. False when the exit hook has
    /// already ended it (closed its pipe): the owner must not close it again.
    @discardableResult
    static func remove(_ pid: pid_t) -> Bool {
        live.withLock { $0.removeValue(forKey: pid) != nil }
    }

    /// Ends every helper still listed and waits (up to 2 s) until each has exited. It does
    /// not reap them: the kernel frees the zombies with this process.
    static func endAll() {
        var pending = live.withLock { helpers -> [pid_t] in
            defer { helpers.removeAll() }
            for (pid, ending) in helpers {
                switch ending {
                case .kill: Glibc.kill(pid, SIGKILL)
                case .close(let fd): Glibc.close(fd)
                }
            }
            return Array(helpers.keys)
        }
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
