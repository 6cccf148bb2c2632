import CWardOS
import Foundation
import Synchronization
import WardCore
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// Serves the agent protocol on a Unix stream socket: one JSON object per line, requests
/// on one connection served concurrently and answered by id.
///
/// A connection is served only when its peer is provably not a tool of a call (see
/// `peerIsOutsideEveryCall`), or once it has presented the agent's token
/// (`AgentCredential`): tools may share ward's uid, so the peer's uid alone does not tell the
/// agent from a tool.
///
/// Every request blocks on the ledger (fsync) and often on a tool for seconds, so each
/// request runs on a thread of its own: the thread that read it, while a pool thread takes
/// over reading the connection (WorkerPool). Responses are written whole under a
/// per-connection lock. (SO_PEERCRED needs the raw fd.)
public final class SocketServer: Sendable {
    public let path: String
    /// The agent's credential for this server's life: `ward run` hands it to the agent.
    public let token: String
    /// Where the token was published for agents started elsewhere (`ward serve`), or nil.
    public let tokenFile: String?
    let supervisor: Supervisor
    let listenFD: Int32
    private let stopping = Atomic<Bool>(false)
    private let workers = WorkerPool()
    private let draining = Atomic<Bool>(false)
    private let inFlight = Atomic<Int>(0)
    private let connections = Lock<Set<Int32>>([])

    /// Checks the socket's directory (creating it with mode 0700 when missing), replaces a
    /// stale socket file, binds (mode 0600) and listens, with a new token.
    /// - Parameter publishToken: also write the token to `AgentCredential.tokenFile(forSocket:)`
    ///   (mode 0600), for agents that ward does not start itself.
    public init(path: String, supervisor: Supervisor, publishToken: Bool = false) throws(RPCError) {
        self.path = path
        self.supervisor = supervisor
        token = AgentCredential.generate()
        guard path.utf8.count < 108 else { throw RPCError(.internal, "socket path too long (at most 107 bytes): \(path)") }
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        if mkdir(dir, 0o700) != 0 && errno != EEXIST {
            throw RPCError(.internal, "cannot create socket directory \(dir): \(String(cString: strerror(errno)))")
        }
        try SocketServer.checkDirectory(dir)
        if SocketServer.isLive(path) { throw RPCError(.internal, "another supervisor is listening on \(path)") }
        unlink(path)
        // A stale token file (of a supervisor that was killed) must never pass for this one's.
        let tokenPath = AgentCredential.tokenFile(forSocket: path)
        unlink(tokenPath)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RPCError(.internal, "socket: \(String(cString: strerror(errno)))") }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        var addr = UnixSocket.address(path)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        guard bound == 0 else {
            let e = errno
            close(fd)
            throw RPCError(.internal, "cannot bind \(path): \(String(cString: strerror(e)))")
        }
        chmod(path, 0o600)
        if publishToken && !AgentCredential.publish(token, at: tokenPath) {
            let e = errno
            close(fd)
            unlink(path)
            throw RPCError(.internal, "cannot write the token file \(tokenPath): \(String(cString: strerror(e)))")
        }
        tokenFile = publishToken ? tokenPath : nil
        guard listen(fd, 128) == 0 else {
            close(fd)
            throw RPCError(.internal, "listen: \(String(cString: strerror(errno)))")
        }
        listenFD = fd
    }

    /// Refuses a socket directory that anyone but ward's own uid could change: another local
    /// user who made it first (mode 0777, or a symlink to a directory of theirs) could swap
    /// the socket for one of their own and answer the agent's calls (forged results, stolen
    /// arguments and token). It must be a directory (not a symlink) owned by ward's
    /// effective uid with no group or other permissions, or be `$XDG_RUNTIME_DIR` (made by
    /// the system for this user alone).
    public static func checkDirectory(_ dir: String) throws(RPCError) {
        var st = stat()
        guard lstat(dir, &st) == 0 else {
            throw RPCError(.internal, "socket directory \(dir): \(String(cString: strerror(errno)))")
        }
        let refuse = { (problem: String) throws(RPCError) in
            throw RPCError(.internal, "socket directory \(dir) \(problem): another user could replace ward's socket; "
                           + "remove it, or pass --socket in a directory of mode 0700 that only uid \(geteuid()) owns")
        }
        if st.st_mode & S_IFMT == S_IFLNK { try refuse("is a symlink") }
        if st.st_mode & S_IFMT != S_IFDIR { try refuse("is not a directory") }
        if st.st_uid != geteuid() { try refuse("is owned by uid \(st.st_uid), not ward's uid \(geteuid())") }
        let runtime = getenv("XDG_RUNTIME_DIR").map { String(cString: $0) }
        // Search permission alone (x, as a root ward's ACL entry for the tool identity on a
        // workspace's parents shows in the group bits) lets no one list or change it.
        if st.st_mode & 0o066 != 0 && runtime != dir {
            try refuse("has mode \(String(st.st_mode & 0o7777, radix: 8)): others may read or change it (700 or 711 at most)")
        }
    }

    /// Whether something accepts connections on `path` now.
    static func isLive(_ path: String) -> Bool {
        guard case .success(let fd) = UnixSocket.connect(path) else { return false }
        close(fd)
        return true
    }

    /// Accepts connections on a thread of its own until `stop`.
    public func start() {
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "ward-accept"
        thread.start()
    }

    /// Stops accepting connections and answers new requests with an error; requests already
    /// running go on (for a graceful shutdown).
    public func drain() {
        draining.store(true, ordering: .sequentiallyConsistent)
        supervisor.drain()
        shutdown(listenFD, Int32(SHUT_RDWR))
    }

    /// Waits until no request is running, at most `timeout` seconds; true when idle.
    public func waitUntilIdle(timeout: Double) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(min(max(timeout, 0), 1e9) * 1000))
        while inFlight.load(ordering: .sequentiallyConsistent) > 0 {
            if ContinuousClock.now >= deadline { return false }
            usleep(10_000)
        }
        return true
    }

    /// Stops accepting, closes every connection and removes the socket file.
    public func stop() {
        guard !stopping.exchange(true, ordering: .sequentiallyConsistent) else { return }
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        unlink(path)
        if let tokenFile { unlink(tokenFile) }
        for fd in connections.withLock({ $0 }) { shutdown(fd, Int32(SHUT_RDWR)) }
    }

    private func acceptLoop() {
        while !stopping.load(ordering: .sequentiallyConsistent) {
            let fd = OS.retrying { accept(listenFD, nil, nil) }
            if fd < 0 {
                switch errno {
                case ECONNABORTED: continue
                case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                    // Out of descriptors or memory for now (many connections, many calls):
                    // closing ones free them. Stopping here would leave ward deaf for good.
                    usleep(20_000)
                    continue
                default: return
                }
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            // Only our own user (or root) may drive tools with our privileges.
            let peer = ward_peer_uid(fd)
            guard peer >= 0, uid_t(peer) == geteuid() || peer == 0 else {
                close(fd)
                continue
            }
            connections.withLock { _ = $0.insert(fd) }
            // stop() sets `stopping` before it walks `connections`: a connection accepted
            // while it runs is either in the set it walks or sees the flag here.
            if stopping.load(ordering: .sequentiallyConsistent) {
                connections.withLock { _ = $0.remove(fd) }
                close(fd)
                return
            }
            let connection = Connection(fd)
            let outside = peerIsOutsideEveryCall(fd)
            workers.run(alwaysStart: true) { [self] in
                switch opening(connection, outsideEveryCall: outside) {
                case .refused: end(connection)
                case .authenticated: read(connection)
                case .request(let line): read(connection, first: line)
                }
            }
        }
    }

    /// Writes whole response lines to one connection; requests answer from many threads.
    final class Writer: Sendable {
        /// The connection's fd: one writer at a time.
        private let fd: Lock<Int32>
        init(_ fd: Int32) { self.fd = Lock(fd) }

        func send(_ bytes: [UInt8]) {
            fd.withLock { fd in _ = UnixSocket.sendAll(fd, bytes + [0x0A]) }
        }
    }

    /// Requests one connection may have running at once: past it, the connection is not
    /// read until one finishes (backpressure on a flooding agent, not unbounded threads).
    public static let maximumInFlightPerConnection = 64

    /// One connection's state. Its reading side (`framer`, `chunk`) belongs to whichever
    /// thread holds the reader role; the role passes through the worker pool's lock.
    final class Connection: @unchecked Sendable {
        let fd: Int32
        let writer: Writer
        let requests = DispatchGroup()
        let slots = DispatchSemaphore(value: SocketServer.maximumInFlightPerConnection)
        var framer = LineFramer(maximumLineBytes: Supervisor.maximumLineBytes)
        var chunk = [UInt8](repeating: 0, count: 1 << 16)

        init(_ fd: Int32) {
            self.fd = fd
            writer = Writer(fd)
        }

        /// The next request line; nil at the end of the connection (after answering a line
        /// that is too long). A line cut off by the peer's close is dropped: nothing
        /// half-read is ever acted on.
        func nextLine() -> [UInt8]? {
            while true {
                do {
                    if let line = try framer.next() { return line }
                } catch {
                    writer.send(RPCResponse.line(id: .null, error: RPCError(.tooLarge, "request line longer than \(Supervisor.maximumLineBytes) bytes")))
                    return nil
                }
                let n = OS.retrying { chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) } }
                if n <= 0 { return nil }
                chunk.withUnsafeBytes { framer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            }
        }
    }

    /// Whether the peer is provably not a tool of a call: in ward's own PID namespace (a
    /// tool started directly is pid 1 of its own) and in no call's cgroup (every process of
    /// a call stays in it, daemonized or not). Such a peer, with ward's uid (checked at
    /// accept), needs no token: an agent speaking the protocol as it is, started by hand or
    /// by `ward run`. Where calls have neither (no cgroups, no namespaces), nothing proves
    /// it, and the token is required. A root ward's tools run as another uid and never get
    /// this far.
    func peerIsOutsideEveryCall(_ fd: Int32) -> Bool {
        guard supervisor.sandbox.treeKill != .processGroup else { return false }
        let pid = ward_peer_pid(fd)
        guard pid > 0 else { return false }  // 0: the peer's PID namespace is not under ward's
        var mine = stat(), theirs = stat()
        guard stat("/proc/self/ns/pid", &mine) == 0, stat("/proc/\(pid)/ns/pid", &theirs) == 0,
              mine.st_ino == theirs.st_ino, mine.st_dev == theirs.st_dev else { return false }
        guard let cgroups = readSmallFile("/proc/\(pid)/cgroup") else { return false }
        return !cgroups.split(separator: "\n").contains { $0.contains("/ward-") && $0.contains("/call-") }
    }

    /// How a connection opened.
    enum Opening {
        case refused
        /// `session.auth` with the token, answered.
        case authenticated
        /// A peer outside every call began with a request: served as any other.
        case request([UInt8])
    }

    /// Reads the connection's first request. `session.auth` with the token is answered; a
    /// peer outside every call may also begin with any other request (the caller serves it).
    /// Anything else is answered with an `unauthorized` error (the caller then closes the
    /// connection): a tool that reached the socket never gets a request served.
    private func opening(_ connection: Connection, outsideEveryCall: Bool) -> Opening {
        var line: [UInt8]
        repeat {
            guard let next = connection.nextLine() else { return .refused }
            line = next
        } while RPCRequest.isBlank(line)
        let request: RPCRequest
        switch RPCRequest.decode(line) {
        case .success(let r): request = r
        case .failure(let refusal):
            if outsideEveryCall { return .request(line) }
            connection.writer.send(RPCResponse.line(id: refusal.id, error: refusal.error))
            return .refused
        }
        let refusal: String
        if request.method != AgentCredential.method {
            if outsideEveryCall { return .request(line) }
            refusal = "the connection must open with \(AgentCredential.method) and the agent's token (\(AgentCredential.environmentVariable) "
                + "under ward run, the token file beside the socket under ward serve); \(Params.quote(request.method)) refused"
        } else if case .string(let presented)? = request.params.objectValue?["token"],
                  AgentCredential.matches(presented, token) {
            connection.writer.send(RPCResponse.line(id: request.id ?? .null, result: .object(["runId": .string(supervisor.runID)])))
            return .authenticated
        } else {
            refusal = "\(AgentCredential.method): wrong or missing token"
        }
        connection.writer.send(RPCResponse.line(id: request.id ?? .null, error: RPCError(.unauthorized, refusal)))
        return .refused
    }

    /// Closes a connection once its requests are answered.
    private func end(_ connection: Connection) {
        connection.requests.wait()
        connections.withLock { _ = $0.remove(connection.fd) }
        close(connection.fd)
    }

    /// Holds a connection's reader role (leader/follower): reads up to the next request, hands
    /// the role to a pool thread, and answers that request on this thread. A request never
    /// waits for a thread to wake up: the thread that read it runs it, and the next reader
    /// wakes while it does.
    private func read(_ connection: Connection, first: [UInt8]? = nil) {
        var first = first
        while let line = first ?? connection.nextLine() {
            first = nil
            if RPCRequest.isBlank(line) { continue }
            if draining.load(ordering: .sequentiallyConsistent) {
                connection.writer.send(RPCResponse.line(id: .null, error: RPCError(.internal, "ward is shutting down")))
                continue
            }
            connection.slots.wait()
            connection.requests.enter()
            inFlight.add(1, ordering: .sequentiallyConsistent)
            // A reader must always get a thread, past the pool's cap too: an idle
            // connection holds one, and a request needs its connection read to arrive.
            workers.run(alwaysStart: true) { [self] in read(connection) }
            defer {
                inFlight.subtract(1, ordering: .sequentiallyConsistent)
                connection.requests.leave()
                connection.slots.signal()
            }
            guard let response = supervisor.handle(line: line) else { return }
            if FailPoints.hit(.beforeReply) { return }  // a lost reply: the client sees no answer
            connection.writer.send(response)
            return
        }
        end(connection)
    }
}
