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
    // @unchecked: `trace` and the buffers belong to the tracing thread from `start` until
    // `finish` has joined it; the fds are set in init and closed in deinit.
    /// A seqpacket pair: [0] ward's end, [1] the one the child sends on.
    private var socket: [Int32] = [-1, -1]
    /// Written by `finish`: the tracing thread stops.
    private var stopPipe: [Int32] = [-1, -1]
    private var thread: pthread_t?
    private var capture: Int32 = -1
    private var startNs: UInt64 = 0
    private var trace = Trace()
    private var recorded = false
    private let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: Tracer.pathCapacity)
    private let base = UnsafeMutablePointer<CChar>.allocate(capacity: Tracer.pathCapacity)

    static let pathCapacity = 4096
    /// What is read of an exec's argv at most: the trace is for people, not for replaying.
    static let argvLimit = (count: 256, bytes: 32 << 10)

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

    /// Starts the tracing thread. `capture`: the call's capture file, or -1.
    func start(capture: Int32, at startNs: UInt64) {
        self.capture = capture
        self.startNs = startNs
        var tid = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&tid, nil, { context in
            let tracer = Unmanaged<Tracer>.fromOpaque(context!).takeRetainedValue()
            tracer.loop()
            return nil
        }, context)
        if rc == 0 { thread = tid } else { Unmanaged<Tracer>.fromOpaque(context).release() }
    }

    /// Stops the thread (the call's processes are gone) and returns what it recorded.
    func finish() -> Trace {
        if let thread {
            var byte: UInt8 = 1
            _ = write(stopPipe[1], &byte, 1)
            pthread_join(thread, nil)
            self.thread = nil
        }
        return trace
    }

    // MARK: - The tracing thread

    private func loop() {
        let listener = ward_trace_receive_listener(socket[0], stopPipe[0])
        guard listener >= 0 else { return }
        defer { close(listener) }
        frame(.traceStart, [])
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

    private func handle(_ listener: Int32, _ n: ward_trace_notification) {
        guard trace.effects.count < Trace.limit else {
            // Past the limit: counted, not read, so a flood costs the tool little.
            if ward_trace_continue(listener, n.id) == 0 { trace.dropped = (trace.dropped ?? 0) + 1 }
            return
        }
        let attempt = read(n)
        // ENOENT: the task died meanwhile, and its pid may be another's: what was read is not its.
        guard ward_trace_continue(listener, n.id) == 0, let attempt else { return }
        record(attempt, pid: n.pid)
    }

    private func read(_ n: ward_trace_notification) -> Attempt? {
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
        case "rename": return two(.rename, (cwd, a.0), (cwd, a.1))
        case "renameat", "renameat2": return two(.rename, (a.0, a.1), (a.2, a.3))
        case "link": return two(.link, (cwd, a.0), (cwd, a.1))
        case "linkat": return two(.link, (a.0, a.1), (a.2, a.3))
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
        case "fchmodat", "fchmodat2": return moded(at(a.1, a.0, .chmod, follow: true), a.2)
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
        if full == "/dev/null" { return nil }  // a shell's `2>/dev/null` changes nothing
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
        while argv.count < Tracer.argvLimit.count, bytes < Tracer.argvLimit.bytes,
              ward_trace_read(pid, address + UInt64(argv.count * 8), &pointer, 8) == 8, pointer != 0 {
            guard ward_trace_read_string(pid, pointer, buffer, Tracer.pathCapacity) >= 0 else { break }
            let arg = String(cString: buffer)
            bytes += arg.utf8.count
            argv.append(arg)
        }
        attempt.argv = argv
        return attempt
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
        var effect = Trace.Effect(kind: attempt.kind, target: attempt.target, mode: attempt.mode, argv: attempt.argv,
                                  address: attempt.address, flags: attempt.flags, pid: pid, atMs: at)
        if let p = attempt.path { effect.path = Tracer.resolve(Tracer.joined(attempt.pathBase, p), follow: attempt.follow) }
        if let q = attempt.to { effect.to = Tracer.resolve(Tracer.joined(attempt.toBase, q), follow: false) }
        trace.effects.append(effect)
        frame(.effect, effect.json.canonicalBytes)
        if trace.effects.count == Trace.limit { frame(.traceCut, []) }
    }

    /// Appends a frame to the capture file in one writev: the output collector writes its
    /// own frames to the same file from another thread, and a frame must not be split.
    private func frame(_ kind: OutputCapture.Kind, _ payload: [UInt8]) {
        guard capture >= 0 else { return }
        let bytes = OutputCapture.frameHeader(kind, length: payload.count) + payload
        _ = bytes.withUnsafeBytes { write(capture, $0.baseAddress, $0.count) }
    }

    static func joined(_ base: String?, _ path: String) -> String {
        guard let base, !path.hasPrefix("/") else { return path }
        return path.isEmpty ? base : (base == "/" ? "/" : base + "/") + path
    }

    /// An absolute path with `.`, `..` and the symlinks of its directories resolved (and of
    /// its last component with `follow`), as the file system stands now; lexically where
    /// it cannot be (a directory that no longer exists).
    static func resolve(_ path: String, follow: Bool) -> String {
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
