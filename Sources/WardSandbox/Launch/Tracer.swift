import CSeccomp
import CWardSpawn
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// The effect trace of one call (see `Trace`): the call's child installs the trace filter
/// and sends its listener over `childFD` (`ward_step_trace`); the thread that runs the call
/// then answers the notifications as they come, in the same `poll` as the tool's output
/// (`service`): it reads each notified syscall's arguments from the tool's memory, records
/// what was attempted, appends it to the call's capture file (so that after a crash of ward
/// the operator settling the call sees what the tool had done), and only then lets the
/// syscall go on. No thread of its own: the tool's own execve, which the spawning thread
/// waits for, is not notified (`Seccomp.compileTrace`) but recorded from what ward knows.
final class Tracer {
    /// A seqpacket pair: [0] ward's end, [1] the one the child sends on.
    private var socket: [Int32] = [-1, -1]
    /// The filter's listener once received; -1 before and after.
    private(set) var listener: Int32 = -1
    private var capture: Int32 = -1
    private var startNs: UInt64 = 0
    private var trace = Trace()
    /// What the effects recorded so far take (`Trace.byteLimit`).
    private var bytes = 0
    /// The call's own filter: the trace filter with its execve's path filled in.
    let program: SeccompProgram
    private let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Tracer.pathCapacity)
    private let base = UnsafeMutablePointer<CChar>.allocate(capacity: Tracer.pathCapacity)

    static let pathCapacity = 4096
    /// What is kept of an effect at most: the trace is for people, not for replaying, and a
    /// tool must not be able to grow one call's record without bound (a path, an exec's
    /// arguments, their count).
    static let pathLimit = 1024, argvLimit = (count: 64, bytes: 4096)

    /// - Parameter path: the call's program path, as the child passes it to execve.
    init(filter: TraceFilter, sparing path: UnsafeRawPointer) throws(SandboxError) {
        program = filter.program(sparing: path)
        guard ward_socketpair_cloexec(&socket) == 0 else {
            throw SandboxError(.internalError, "the effect trace's socket pair failed: \(errnoName(errno))", errno: errno)
        }
    }

    deinit {
        for fd in socket + [listener] where fd >= 0 { close(fd) }
        buffer.deallocate()
        base.deallocate()
    }

    /// The end the call's child sends the listener on (`ward_spawn_config.trace_fd`).
    var childFD: Int32 { socket[1] }

    /// Once the tool is started (`pid`, running `executable` with `argv`): takes the listener
    /// the child sent, and records the tool's own exec first. `capture`: the call's capture
    /// file, or -1.
    func begin(capture: Int32, at startNs: UInt64, pid: Int32, executable: String, argv: [String]) {
        self.capture = capture
        self.startNs = startNs
        if socket[1] >= 0 { close(socket[1]) }
        socket[1] = -1
        listener = ward_trace_receive_listener(socket[0])
        guard listener >= 0 else {
            // The child always sends it before its execve: a trace without it is not whole.
            trace.dropped = nil
            return
        }
        frame(.traceStart, [])
        record(Attempt(kind: .exec, path: executable, argv: argv.isEmpty ? [] : Tracer.bounded(argv), follow: true), pid: pid)
    }

    /// Answers every notification waiting (the listener polled readable).
    func service() {
        guard listener >= 0 else { return }
        var n = ward_trace_notification()
        while true {
            let got = ward_trace_next(listener, 0, &n)
            if got > 0 {
                handle(n)
                continue
            }
            if got < 0 {
                // Hung up: no process uses the filter any more, so nothing more can come,
                // and a listener left in the poll set would wake it at once, again and again.
                close(listener)
                listener = -1
            }
            return
        }
    }

    /// The call's processes are gone: what they attempted. The listener is closed, so a
    /// process that outlived the call (where nothing killed the tree) has its notified
    /// syscalls refused (ENOSYS) rather than waiting.
    func finish() -> Trace {
        service()
        if listener >= 0 { close(listener) }
        listener = -1
        return trace
    }

    /// Reads, resolves and records the attempt (and appends it to the capture file) before
    /// the syscall goes on: a crash of ward right after the kernel acted still leaves the
    /// effect in the evidence.
    private func handle(_ n: ward_trace_notification) {
        // Past the limit: counted, not read, so a flood costs the tool little.
        let attempt = trace.effects.count >= Trace.limit ? Read.skipped : read(n)
        // Whether what was read is the notified task's: its pid may have been reused since.
        let valid = ward_trace_id_valid(listener, n.id) == 0
        if valid, case .read(let attempt) = attempt { record(attempt, pid: n.pid) }
        _ = ward_trace_continue(listener, n.id)
        guard valid else { return }
        switch attempt {
        case .read, .ignored: break
        case .skipped, .unreadable: trace.dropped = (trace.dropped ?? 0) + 1
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
        // O_EXCL: created, or the open fails; no need to ask.
        if flags & 0o100 != 0 && (flags & 0o200 != 0 || access(full, F_OK) != 0) {
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
        var pointer: UInt64 = 0
        // One past what is kept, to know that some were left out.
        while argv.count <= Tracer.argvLimit.count, ward_trace_read(pid, address + UInt64(argv.count * 8), &pointer, 8) == 8, pointer != 0,
              ward_trace_read_string(pid, pointer, buffer, Tracer.pathCapacity) >= 0 {
            argv.append(String(cString: buffer))
        }
        attempt.argv = Tracer.bounded(argv)
        return attempt
    }

    /// At most `argvLimit` arguments and bytes, the last one cut marked `…` (and a `…` of its
    /// own when arguments were left out).
    static func bounded(_ argv: [String]) -> [String] {
        var kept: [String] = []
        var bytes = 0
        for arg in argv {
            guard kept.count < argvLimit.count, bytes < argvLimit.bytes else {
                kept.append("…")
                break
            }
            let cut = cut(arg, to: argvLimit.bytes - bytes)
            bytes += cut.utf8.count
            kept.append(cut)
        }
        return kept
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
        if let p = attempt.path { effect.path = resolved(attempt.pathBase, p, pid: pid, follow: attempt.follow) }
        if let q = attempt.to { effect.to = resolved(attempt.toBase, q, pid: pid, follow: false) }
        // Its JSON only where it is written now (the capture file); the budget counts the
        // strings, and what any effect's JSON adds to them at most.
        let json = capture >= 0 ? effect.json.canonicalBytes : nil
        let size = json?.count ?? Tracer.estimatedSize(effect)
        guard bytes + size <= Trace.byteLimit else {
            trace.dropped = (trace.dropped ?? 0) + 1
            return
        }
        bytes += size
        trace.effects.append(effect)
        if let json { frame(.effect, json) }
        if trace.effects.count == Trace.limit { frame(.traceCut, []) }
    }

    /// About an effect's JSON size: its strings, and 160 bytes for its keys and numbers.
    static func estimatedSize(_ effect: Trace.Effect) -> Int {
        var size = 160
        for text in [effect.path, effect.to, effect.target, effect.address] { size += text?.utf8.count ?? 0 }
        for arg in effect.argv ?? [] { size += arg.utf8.count + 3 }
        return size
    }

    /// Appends a frame to the capture file in one write: the output collector writes its
    /// own frames to the same file, and a frame must not be split.
    private func frame(_ kind: OutputCapture.Kind, _ payload: [UInt8]) {
        guard capture >= 0 else { return }
        let bytes = OutputCapture.frameHeader(kind, length: payload.count) + payload
        _ = bytes.withUnsafeBytes { write(capture, $0.baseAddress, $0.count) }
    }

    /// A path as the tool named it, absolute and resolved (`resolve`), cut to `pathLimit`.
    /// The names that mean "this process" (/proc/self, /dev/fd, /dev/stdout, …) are the
    /// tool's, not ward's: resolved by ward as they are, they would name ward's own files.
    func resolved(_ base: String?, _ path: String, pid: Int32, follow: Bool) -> String {
        var full = Tracer.joined(base, path)
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
        if result == mine || result.hasPrefix(mine + "/") { result = Tracer.lexical(full) }
        return Tracer.cut(result, to: Tracer.pathLimit)
    }

    /// `path` joined to `base` when relative; a relative path whose base could not be read
    /// stays relative (never joined to ward's own working directory).
    static func joined(_ base: String?, _ path: String) -> String {
        guard let base, !path.hasPrefix("/") else { return path }
        return path.isEmpty ? base : (base == "/" ? "/" : base + "/") + path
    }

    /// Directories resolved in this call: a tool writes many files in few directories, and
    /// each notified syscall waits while ward resolves its path. Resolved once, as they stood
    /// the first time (a directory the tool later replaces by a symlink keeps its first
    /// resolution: the trace is of attempts).
    private var directories: [String: String] = [:]

    /// An absolute path with `.`, `..` and the symlinks of its directories resolved (and of
    /// its last component with `follow`), as the file system stands now; lexically where
    /// it cannot be (a directory that no longer exists).
    func resolve(_ path: String, follow: Bool) -> String {
        guard path.hasPrefix("/") else { return path }
        var components = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        guard let last = components.popLast() else { return "/" }
        if last == "." || last == ".." { return Tracer.realpath(path) ?? Tracer.lexical(path) }
        let directory = "/" + components.joined(separator: "/")
        let resolvedDirectory: String
        if let known = directories[directory] {
            resolvedDirectory = known
        } else {
            guard let real = Tracer.realpath(directory) else { return Tracer.lexical(path) }
            if directories.count >= 4096 { directories.removeAll(keepingCapacity: true) }
            directories[directory] = real
            resolvedDirectory = real
        }
        let joined = (resolvedDirectory == "/" ? "" : resolvedDirectory) + "/" + last
        // The last component is followed only where it is a symlink (one lstat).
        var st = stat()
        if follow, lstat(joined, &st) == 0, st.st_mode & S_IFMT == S_IFLNK { return Tracer.realpath(joined) ?? joined }
        return joined
    }

    static func realpath(_ path: String) -> String? {
        guard let real = Glibc.realpath(path, nil) else { return nil }
        defer { free(real) }
        return String(cString: real)
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
        for name in Seccomp.traced.map(\.name) + ["execve"] {
            let n = seccomp_syscall_resolve_name(name)
            if n != __NR_SCMP_ERROR { names[Int(n)] = name }
        }
        return names
    }()
}
