import CSeccomp
import CWardSpawn
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// The effect trace of one call (see `Trace`): the call's child installs the trace filter
/// and sends its listener over `childFD` (`ward_step_trace`); a thread of ward's then reads
/// each notified syscall's arguments from the tool's memory, lets the syscall go on, and
/// records what it attempted. Each effect is also appended to the call's capture file as
/// it comes, so that after a crash of ward the operator settling the call sees what the
/// tool had done up to the crash.
///
/// One thread per traced call: the tool's own execve is notified while the thread that
/// spawned it waits for that execve (vfork), so the answer must come from elsewhere.
final class Tracer: @unchecked Sendable {
    // @unchecked: the fds are set in init and closed in deinit; what the tracing thread and
    // the call's thread share is in `state`; the buffers are the tracing thread's.
    /// A seqpacket pair: [0] ward's end, [1] the one the child sends on.
    private var socket: [Int32] = [-1, -1]
    /// Written by `finish`: the tracing thread stops.
    private var stopPipe: [Int32] = [-1, -1]
    private var thread: pthread_t?
    private var startNs: UInt64 = 0
    private struct State {
        var trace = Trace()
        /// What the effects recorded so far take (`Trace.byteLimit`).
        var bytes = 0
        /// The call's capture file, or -1; -1 once `finish` gave up on the thread.
        var capture: Int32 = -1
    }
    private let state = Lock(State())
    private let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Tracer.pathCapacity)
    private let base = UnsafeMutablePointer<CChar>.allocate(capacity: Tracer.pathCapacity)

    static let pathCapacity = 4096
    /// What is kept of an effect at most: the trace is for people, not for replaying, and a
    /// tool must not be able to grow one call's record without bound (a path, an exec's
    /// arguments, their count).
    static let pathLimit = 1024, argvLimit = (count: 64, bytes: 4096)
    /// How long `finish` waits for the thread: one stuck in the kernel (a path on a hung
    /// mount) must not hold the call forever.
    static let joinMilliseconds: Int32 = 2000

    init() throws(SandboxError) {
        guard ward_socketpair_cloexec(&socket) == 0, ward_pipe_cloexec(&stopPipe) == 0 else {
            throw SandboxError(.internalError, "the effect trace's socket pair failed: \(errnoName(errno))", errno: errno)
        }
    }

    deinit {
        for fd in socket + stopPipe where fd >= 0 { close(fd) }
        buffer.deallocate()
        base.deallocate()
    }

    /// The end the call's child sends the listener on (`ward_spawn_config.trace_fd`).
    var childFD: Int32 { socket[1] }

    /// Closes ward's copy of the child's end once the child has it: a child that dies
    /// before sending then hangs the socket up instead of leaving the thread waiting.
    func childStarted() {
        if socket[1] >= 0 { close(socket[1]) }
        socket[1] = -1
    }

    /// Starts the tracing thread; false when it cannot. `capture`: the call's capture file,
    /// or -1. On false, a listener already sent (a parked child's) is dropped, so the
    /// child's notified syscalls fail (ENOSYS) instead of waiting for an answer forever.
    func start(capture: Int32, at startNs: UInt64) -> Bool {
        state.withLock { $0.capture = capture }
        self.startNs = startNs
        var tid = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&tid, nil, { context in
            let tracer = Unmanaged<Tracer>.fromOpaque(context!).takeRetainedValue()
            tracer.loop()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Tracer>.fromOpaque(context).release()
            close(socket[0])
            socket[0] = -1
            return false
        }
        thread = tid
        return true
    }

    /// Stops the thread (the call's processes are gone) and returns what it recorded. A
    /// thread that does not stop in time is left behind, writing nothing more, and the trace
    /// says it may be incomplete.
    func finish() -> Trace {
        guard let thread else { return state.withLock { $0.trace } }
        self.thread = nil
        var byte: UInt8 = 1
        _ = write(stopPipe[1], &byte, 1)
        if ward_thread_join_within(thread, Tracer.joinMilliseconds) == 0 { return state.withLock { $0.trace } }
        pthread_detach(thread)
        return state.withLock { s in
            s.capture = -1
            s.trace.dropped = nil
            return s.trace
        }
    }

    // MARK: - The tracing thread

    private func loop() {
        let listener = ward_trace_receive_listener(socket[0], stopPipe[0])
        guard listener >= 0 else { return }
        defer { close(listener) }
        state.withLock { frame($0.capture, .traceStart, []) }
        var n = ward_trace_notification()
        while true {
            let got = ward_trace_next(listener, stopPipe[0], -1, &n)
            if got < 0 { return }
            if got == 0 { continue }
            handle(listener, n)
        }
    }

    /// What is read of a syscall while the kernel holds it; everything that may change once
    /// it runs (the path bytes, the directory an fd names, whether the file exists) is
    /// taken here.
    private struct Attempt {
        var kind: Trace.Effect.Kind
        var path: String?
        var pathBase: String?
        var to: String?
        var toBase: String?
        var target: String?
        var mode: UInt32?
        var argv: [String]?
        var address: String?
        var flags: [String]?
        /// The final component is followed if it is a symlink (open, exec, chmod).
        var follow = false
    }

    /// Reads, resolves and records the attempt (and appends it to the capture file) before
    /// the syscall goes on: a crash of ward right after the kernel acted still leaves the
    /// effect in the evidence.
    private func handle(_ listener: Int32, _ n: ward_trace_notification) {
        let full = state.withLock { $0.trace.effects.count >= Trace.limit }
        // Past the limit: counted, not read, so a flood costs the tool little.
        let attempt = full ? Read.skipped : read(n)
        // Whether what was read is the notified task's: its pid may have been reused since.
        let valid = ward_trace_id_valid(listener, n.id) == 0
        if valid, case .read(let attempt) = attempt { record(attempt, pid: n.pid) }
        _ = ward_trace_continue(listener, n.id)
        guard valid else { return }
        switch attempt {
        case .read: break
        case .ignored: break
        case .skipped, .unreadable: state.withLock { $0.trace.dropped = ($0.trace.dropped ?? 0) + 1 }
        }
    }

    /// What became of a notification.
    private enum Read {
        case read(Attempt)
        /// Nothing worth recording (an open of /dev/null).
        case ignored
        /// Past the trace's limits.
        case skipped
        /// Its arguments could not be read (memory ward may not read): counted as not
        /// recorded, so the trace says it is incomplete.
        case unreadable
    }

    private func read(_ n: ward_trace_notification) -> Read {
        if let attempt = attempt(n) { return attempt.kind == .write && attempt.path == nil ? .ignored : .read(attempt) }
        return .unreadable
    }

    private func attempt(_ n: ward_trace_notification) -> Attempt? {
        let a = n.args
        let pid = n.pid
        func string(_ address: UInt64) -> String? {
            ward_trace_read_string(pid, address, buffer, Tracer.pathCapacity) >= 0 ? String(cString: buffer) : nil
        }
        func fdPath(_ fd: UInt64) -> String? {
            ward_trace_fd_path(pid, Int32(truncatingIfNeeded: fd), base, Tracer.pathCapacity) >= 0 ? String(cString: base) : nil
        }
        /// A path argument and, when it is relative, the directory it is relative to.
        func path(_ address: UInt64, dirfd: UInt64 = UInt64(bitPattern: -100)) -> (String, String?)? {
            guard let p = string(address) else { return nil }
            return (p, p.hasPrefix("/") ? nil : fdPath(dirfd))
        }
        func at(_ address: UInt64, _ dirfd: UInt64 = UInt64(bitPattern: -100), _ kind: Trace.Effect.Kind, follow: Bool = false) -> Attempt? {
            guard let (p, b) = path(address, dirfd: dirfd) else { return nil }
            return Attempt(kind: kind, path: p, pathBase: b, follow: follow)
        }
        func two(_ kind: Trace.Effect.Kind, _ from: (UInt64, UInt64), _ to: (UInt64, UInt64)) -> Attempt? {
            guard let (p, b) = path(from.1, dirfd: from.0), let (q, c) = path(to.1, dirfd: to.0) else { return nil }
            return Attempt(kind: kind, path: p, pathBase: b, to: q, toBase: c)
        }
        let cwd = UInt64(bitPattern: -100)
        switch Tracer.syscalls[Int(n.nr)] {
        case "open": return opened(at(a.0, cwd, .write, follow: true), flags: a.1, mode: a.2)
        case "openat": return opened(at(a.1, a.0, .write, follow: true), flags: a.2, mode: a.3)
        case "creat": return opened(at(a.0, cwd, .write, follow: true), flags: 0o1101, mode: a.1)
        case "truncate": return at(a.0, cwd, .truncate, follow: true)
        case "unlink": return at(a.0, cwd, .delete)
        case "unlinkat": return at(a.1, a.0, a.2 & 0x200 != 0 ? .rmdir : .delete)
        case "rmdir": return at(a.0, cwd, .rmdir)
        case "rename", "renameat": return Tracer.syscalls[Int(n.nr)] == "rename" ? two(.rename, (cwd, a.0), (cwd, a.1)) : two(.rename, (a.0, a.1), (a.2, a.3))
        case "renameat2":
            guard var attempt = two(.rename, (a.0, a.1), (a.2, a.3)) else { return nil }
            let flags = [(UInt64(1), "noreplace"), (2, "exchange"), (4, "whiteout")].filter { a.4 & $0.0 != 0 }.map(\.1)
            attempt.flags = flags.isEmpty ? nil : flags
            return attempt
        case "link": return two(.link, (cwd, a.0), (cwd, a.1))
        case "linkat":
            // AT_EMPTY_PATH: the file linked is the fd itself (an O_TMPFILE made visible).
            if a.4 & 0x1000 != 0, string(a.1) == "", let (q, c) = path(a.3, dirfd: a.2) {
                return Attempt(kind: .link, path: fdPath(a.0), to: q, toBase: c)
            }
            return two(.link, (a.0, a.1), (a.2, a.3))
        case "mkdir": return moded(at(a.0, cwd, .mkdir), a.1)
        case "mkdirat": return moded(at(a.1, a.0, .mkdir), a.2)
        case "mknod": return moded(at(a.0, cwd, .create), a.1)
        case "mknodat": return moded(at(a.1, a.0, .create), a.2)
        case "symlink", "symlinkat":
            let (target, link, dirfd) = Tracer.syscalls[Int(n.nr)] == "symlink" ? (a.0, a.1, cwd) : (a.0, a.2, a.1)
            guard var attempt = at(link, dirfd, .symlink) else { return nil }
            attempt.target = string(target)
            return attempt
        case "chmod": return moded(at(a.0, cwd, .chmod, follow: true), a.1)
        case "fchmod": return fdPath(a.0).map { Attempt(kind: .chmod, path: $0, mode: UInt32(truncatingIfNeeded: a.1) & 0o7777) }
        case "fchmodat": return moded(at(a.1, a.0, .chmod, follow: true), a.2)
        // AT_SYMLINK_NOFOLLOW: the mode of the link itself.
        case "fchmodat2": return moded(at(a.1, a.0, .chmod, follow: a.3 & 0x100 == 0), a.2)
        case "execve": return exec(at(a.0, cwd, .exec, follow: true), argv: a.1, pid: pid)
        case "execveat":
            // AT_EMPTY_PATH: the program is the fd itself.
            if a.4 & 0x1000 != 0, string(a.1) == "" { return exec(fdPath(a.0).map { Attempt(kind: .exec, path: $0) }, argv: a.2, pid: pid) }
            return exec(at(a.1, a.0, .exec, follow: true), argv: a.2, pid: pid)
        case "connect", "bind":
            let kind: Trace.Effect.Kind = Tracer.syscalls[Int(n.nr)] == "bind" ? .bind : .connect
            return Tracer.address(pid: pid, at: a.1, length: a.2).map { Attempt(kind: kind, address: $0) }
        default: return nil
        }
    }

    private func moded(_ attempt: Attempt?, _ mode: UInt64) -> Attempt? {
        guard var attempt else { return nil }
        attempt.mode = UInt32(truncatingIfNeeded: mode) & 0o7777
        return attempt
    }

    /// An open that may write: a create when O_CREAT meets no file (asked now, before the
    /// kernel makes it), else a write, with how it writes.
    private func opened(_ attempt: Attempt?, flags: UInt64, mode: UInt64) -> Attempt? {
        guard var attempt, let p = attempt.path else { return nil }
        let full = Tracer.joined(attempt.pathBase, p)
        if full == "/dev/null" {  // a shell's `2>/dev/null` changes nothing
            attempt.path = nil
            return attempt
        }
        var flagNames: [String] = []
        if flags & 0o1000 != 0 { flagNames.append("truncate") }
        if flags & 0o2000 != 0 { flagNames.append("append") }
        if flags & 0o100 != 0 && access(full, F_OK) != 0 {
            attempt.kind = .create
            attempt.mode = UInt32(truncatingIfNeeded: mode) & 0o7777
            flagNames.removeAll { $0 == "truncate" }
        }
        attempt.flags = flagNames.isEmpty ? nil : flagNames
        return attempt
    }

    private func exec(_ attempt: Attempt?, argv address: UInt64, pid: Int32) -> Attempt? {
        guard var attempt else { return nil }
        var argv: [String] = []
        var bytes = 0
        var pointer: UInt64 = 0
        while ward_trace_read(pid, address + UInt64(argv.count * 8), &pointer, 8) == 8, pointer != 0 {
            guard argv.count < Tracer.argvLimit.count, bytes < Tracer.argvLimit.bytes else {
                argv.append("…")  // more arguments than are kept
                break
            }
            guard ward_trace_read_string(pid, pointer, buffer, Tracer.pathCapacity) >= 0 else { break }
            let arg = Tracer.cut(String(cString: buffer), to: Tracer.argvLimit.bytes - bytes)
            bytes += arg.utf8.count
            argv.append(arg)
        }
        attempt.argv = argv
        return attempt
    }

    /// `text` cut to at most `limit` bytes of UTF-8 (at a character), marked with `…`.
    static func cut(_ text: String, to limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var kept = ""
        for character in text {
            guard kept.utf8.count + character.utf8.count + 3 <= limit else { break }
            kept.append(character)
        }
        return kept + "…"
    }

    /// A sockaddr, readably: `127.0.0.1:8080`, `[::1]:443`, `/run/x.sock`, `@abstract`.
    static func address(pid: Int32, at address: UInt64, length: UInt64) -> String? {
        var raw = [UInt8](repeating: 0, count: 128)
        let n = Int(min(length, 128))
        guard n >= 2, ward_trace_read(pid, address, &raw, n) == n else { return nil }
        let family = Int32(raw[0]) | Int32(raw[1]) << 8
        let port = Int(raw[2]) << 8 | Int(raw[3])
        switch family {
        case AF_INET where n >= 8:
            return "\(raw[4]).\(raw[5]).\(raw[6]).\(raw[7]):\(port)"
        case AF_INET6 where n >= 24:
            var text = [CChar](repeating: 0, count: 64)
            let ok = raw[8..<24].withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &text, 64) } != nil
            return ok ? "[\(String(cString: text))]:\(port)" : nil
        case AF_UNIX:
            let path = raw[2..<n]
            if path.isEmpty { return "unix (unnamed)" }
            if path.first == 0 { return "@" + String(decoding: path.dropFirst(), as: UTF8.self) }
            return String(decoding: path.prefix { $0 != 0 }, as: UTF8.self)
        default:
            return "address family \(family)"
        }
    }

    // MARK: - Recording

    private func record(_ attempt: Attempt, pid: Int32) {
        let at = Double((Sandbox.monotonicNanoseconds() &- startNs) / 1000) / 1000
        var effect = Trace.Effect(kind: attempt.kind, target: attempt.target.map { Tracer.cut($0, to: Tracer.pathLimit) }, mode: attempt.mode,
                                  argv: attempt.argv, address: attempt.address, flags: attempt.flags, pid: pid, atMs: at)
        if let p = attempt.path { effect.path = Tracer.resolved(attempt.pathBase, p, pid: pid, follow: attempt.follow) }
        if let q = attempt.to { effect.to = Tracer.resolved(attempt.toBase, q, pid: pid, follow: false) }
        let json = effect.json.canonicalBytes
        state.withLock { s in
            guard s.bytes + json.count <= Trace.byteLimit else {
                s.trace.dropped = (s.trace.dropped ?? 0) + 1
                return
            }
            s.bytes += json.count
            s.trace.effects.append(effect)
            frame(s.capture, .effect, json)
            if s.trace.effects.count == Trace.limit { frame(s.capture, .traceCut, []) }
        }
    }

    /// Appends a frame to the capture file in one write: the output collector writes its
    /// own frames to the same file from another thread, and a frame must not be split.
    private func frame(_ capture: Int32, _ kind: OutputCapture.Kind, _ payload: [UInt8]) {
        guard capture >= 0 else { return }
        let bytes = OutputCapture.frameHeader(kind, length: payload.count) + payload
        _ = bytes.withUnsafeBytes { write(capture, $0.baseAddress, $0.count) }
    }

    /// A path as the tool named it, absolute and resolved (`resolve`), cut to `pathLimit`.
    /// The names that mean "this process" (/proc/self, /dev/fd, /dev/stdout, …) are the
    /// tool's, not ward's: resolved by ward as they are, they would name ward's own files.
    static func resolved(_ base: String?, _ path: String, pid: Int32, follow: Bool) -> String {
        var full = joined(base, path)
        for (alias, own) in [("/proc/self", "/proc/\(pid)"), ("/proc/thread-self", "/proc/\(pid)/task/\(pid)"), ("/dev/fd", "/proc/\(pid)/fd"),
                             ("/dev/stdin", "/proc/\(pid)/fd/0"), ("/dev/stdout", "/proc/\(pid)/fd/1"), ("/dev/stderr", "/proc/\(pid)/fd/2")]
        where full == alias || full.hasPrefix(alias + "/") {
            full = own + full.dropFirst(alias.count)
            break
        }
        var result = resolve(full, follow: follow)
        // A symlink of the tool's that leads into /proc/self led, in ward, to ward's own
        // files: keep what the tool named instead.
        let mine = "/proc/\(getpid())"
        if result == mine || result.hasPrefix(mine + "/") { result = lexical(full) }
        return cut(result, to: pathLimit)
    }

    /// `path` joined to `base` when relative; a relative path whose base could not be read
    /// stays relative (never joined to ward's own working directory).
    static func joined(_ base: String?, _ path: String) -> String {
        guard let base, !path.hasPrefix("/") else { return path }
        return path.isEmpty ? base : (base == "/" ? "/" : base + "/") + path
    }

    /// An absolute path with `.`, `..` and the symlinks of its directories resolved (and of
    /// its last component with `follow`), as the file system stands now; lexically where
    /// it cannot be (a directory that no longer exists).
    static func resolve(_ path: String, follow: Bool) -> String {
        guard path.hasPrefix("/") else { return path }
        if follow, let real = realpath(path, nil) {
            defer { free(real) }
            return String(cString: real)
        }
        var components = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let last = components.popLast() else { return "/" }
        if last == "." || last == ".." { return lexical(path) }
        let directory = "/" + components.joined(separator: "/")
        guard let real = realpath(directory, nil) else { return lexical(path) }
        defer { free(real) }
        let resolved = String(cString: real)
        return (resolved == "/" ? "" : resolved) + "/" + last
    }

    static func lexical(_ path: String) -> String {
        var out: [Substring] = []
        for part in path.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." { _ = out.popLast(); continue }
            out.append(part)
        }
        return "/" + out.joined(separator: "/")
    }

    /// Syscall numbers of this architecture to the names `Seccomp.traced` notifies.
    static let syscalls: [Int: String] = {
        var names: [Int: String] = [:]
        for (name, _) in Seccomp.traced {
            let n = seccomp_syscall_resolve_name(name)
            if n != __NR_SCMP_ERROR { names[Int(n)] = name }
        }
        return names
    }()
}
