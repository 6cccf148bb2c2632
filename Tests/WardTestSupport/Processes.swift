import Foundation

/// What /proc says about processes, for tests that look for leftovers or for ward's own
/// helper processes.
///
/// Swift Testing runs suites in parallel in one process, and a process that made a cgroup
/// `Sandbox` is a child subreaper: the orphans of other suites' `ward` processes (their
/// zygotes and watchdogs, once those are killed) become this process's zombies. So a test
/// never counts this process's children in general; it follows the pids it made itself.
public enum Processes {
    /// Children of `parent` whose name (`comm`) is `comm`: zombies only, or the live ones.
    public static func children(of parent: Int32 = getpid(), named comm: String, zombies: Bool) -> Set<Int32> {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return Set(entries.compactMap { name -> Int32? in
            guard let pid = Int32(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/stat") else { return nil }
            let text = String(decoding: data, as: UTF8.self)
            // "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            guard let open = text.firstIndex(of: "("), let close = text.lastIndex(of: ")") else { return nil }
            guard text[text.index(after: open)..<close] == comm else { return nil }
            let fields = text[text.index(after: close)...].split(separator: " ")
            return fields.count > 1 && (fields[0] == "Z") == zombies && Int32(fields[1]) == parent ? pid : nil
        })
    }

    /// Live processes whose command line contains `token` (a token of the test's own, so
    /// that other tests' and other runs' processes on this machine never match). Zombies
    /// have an empty command line and never match.
    public static func withCommandLine(containing token: String) -> [Int32] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return entries.compactMap { name -> Int32? in
            guard let pid = Int32(name), let data = FileManager.default.contents(atPath: "/proc/\(name)/cmdline") else { return nil }
            return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).contains(token) ? pid : nil
        }
    }

    /// The name (`comm`) of a process or thread (`"1234"` or `"1234/task/1240"`); nil when gone.
    public static func name(of process: String) -> String? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(process)/comm") else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
    }

    public static func name(of pid: Int32) -> String? { name(of: "\(pid)") }

    /// Whether `pid` is a child of this process that has exited and not been reaped, or is
    /// still running: false once it was reaped (by whoever waits for it). Looks without reaping.
    public static func isUnreapedChild(_ pid: Int32) -> Bool {
        var info = siginfo_t()
        return waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0
    }

    /// The syscall a thread (`"1234/task/1240"`) is blocked in and its six arguments, from
    /// /proc; nil while it runs (or is gone).
    public static func blockedSyscall(_ thread: String) -> [UInt64]? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(thread)/syscall") else { return nil }
        // "nr arg0 … arg5 sp pc", numbers in hex after the first; "running" while it runs.
        let fields = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isWhitespace)
        guard fields.count >= 7, let nr = UInt64(fields[0]) else { return nil }
        let args = fields[1...6].compactMap { UInt64($0.dropFirst(2), radix: 16) }
        return args.count == 6 ? [nr] + args : nil
    }

    /// The `nfds` and `timeout` of the poll(2) a thread is blocked in; nil when it is not.
    public static func blockedInPoll(_ thread: String) -> (fds: Int, timeout: Int32)? {
        // 7: poll on x86_64, the one architecture ward's spawn code supports.
        guard let call = blockedSyscall(thread), call[0] == 7 else { return nil }
        return (Int(call[2]), Int32(truncatingIfNeeded: call[3]))
    }

    /// Whether a thread is blocked in nanosleep or clock_nanosleep (x86_64 numbers): in a
    /// retry or polling loop's pause, so it has tried at least once.
    public static func isSleeping(_ thread: String) -> Bool {
        guard let call = blockedSyscall(thread) else { return false }
        return call[0] == 35 || call[0] == 230
    }

    /// This thread, as a path under /proc (`"1234/task/1240"`), for another thread to watch.
    public static func currentThread() -> String {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/thread-self")) ?? "thread-self"
    }
}

/// Waits for a condition that another thread or process brings about: checks it every
/// millisecond until it holds or `seconds` pass (a deadline against hanging, never the
/// synchronisation itself). Returns whether it held.
public func eventually(within seconds: Double = 20, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while true {
        if try condition() { return true }
        if ContinuousClock.now >= deadline { return false }
        usleep(1_000)
    }
}
