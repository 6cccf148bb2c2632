import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway PostgreSQL server for one test suite: Debian's newest installed server
/// (`/usr/lib/postgresql/N/bin`), its data directory, Unix socket and log in a temporary
/// directory, user `ward` trusted, database `ward` made at start. fsync and
/// synchronous_commit stay on (ward's budgets are measured with them); `settings` adds other
/// `-c` parameters. Its data directory is a copy of one that initdb made once per process.
/// PostgreSQL refuses to run as root: as root the server runs as the
/// `postgres` system user, which owns the directory. Stopped and removed on deinit, and killed
/// when the test process exits (a suite's static server is never deinitialized).
///
/// The same in bash for scripts: `Scripts/pg-server`.
public final class PostgresServer: @unchecked Sendable {
    public enum StopMode: String, Sendable { case fast, immediate }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Holds the socket (`.s.PGSQL.PORT`), the data directory (`data`) and the server's log (`log`).
    public let directory: String
    /// The port: names the Unix socket, and is the TCP port on 127.0.0.1 when `tcp` was asked for.
    public let port: Int
    public let listensOnTCP: Bool
    /// How long `init` took to have the server ready, in seconds.
    public private(set) var startupSeconds: Double = 0
    private let bin: String
    private let settings: [String: String]
    private let lock = NSLock()
    private var running = false

    /// The URL of database `ward` over the Unix socket.
    public var url: String { url(database: "ward") }

    /// The URL of database `ward` over TCP (nil unless `tcp` was asked for).
    public var tcpURL: String? { listensOnTCP ? "postgres://ward@127.0.0.1:\(port)/ward" : nil }

    public func url(database: String) -> String {
        let query = "host=" + (directory.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? directory)
        return "postgres://ward@/\(database)?\(query)" + (port == 5432 ? "" : "&port=\(port)")
    }

    /// `tcp`: also listen on 127.0.0.1, on a free port. `settings`: more `-c NAME=VALUE`.
    public init(tcp: Bool = false, settings: [String: String] = [:]) throws {
        let started = ContinuousClock.now
        bin = try Self.binDirectory()
        directory = makeTemporaryDirectory("ward-pg")
        listensOnTCP = tcp
        port = tcp ? try Self.freeTCPPort() : 5432
        self.settings = settings
        PostgresServer.registerForExit(directory)
        try Self.handToOwner(directory)
        // A copy of one initdb made per process: 70 ms rather than 650.
        try Self.run("/bin/cp", ["-a", Self.template(bin), "\(directory)/data"])
        try start()
        try psql("postgres", "CREATE DATABASE ward")
        let elapsed = (ContinuousClock.now - started).components
        startupSeconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
    }

    deinit {
        try? stop(mode: .immediate)
        _ = try? Self.run("/bin/rm", ["-rf", "--one-file-system", "--", directory])
        PostgresServer.unregisterForExit(directory)
    }

    /// Starts the server on its existing data (after `stop`): same socket, same port.
    public func start() throws {
        var options = "-k '\(directory)' -c listen_addresses='\(listensOnTCP ? "127.0.0.1" : "")' -c port=\(port)"
        options += " -c fsync=on -c synchronous_commit=on"
        for (name, value) in settings.sorted(by: { $0.key < $1.key }) {
            options += " -c '\(name)=\(value.replacingOccurrences(of: "'", with: "'\\''"))'"
        }
        do {
            try ownerRun("\(bin)/pg_ctl", ["-w", "-t", "60", "-D", "\(directory)/data", "-l", "\(directory)/log", "-o", options, "start"])
        } catch {
            let log = (try? String(contentsOfFile: "\(directory)/log", encoding: .utf8)) ?? ""
            throw Failure(description: "\(error)\n\(log.split(separator: "\n").suffix(20).joined(separator: "\n"))")
        }
        lock.withLock { running = true }
    }

    /// Stops the server: `fast` disconnects sessions and shuts down cleanly, `immediate`
    /// kills it as a crash would (recovery at the next start).
    public func stop(mode: StopMode = .fast) throws {
        guard lock.withLock({ running }) else { return }
        try ownerRun("\(bin)/pg_ctl", ["-w", "-D", "\(directory)/data", "-m", mode.rawValue, "stop"])
        lock.withLock { running = false }
    }

    /// Makes a new empty database; its URL.
    public func createDatabase(_ name: String) throws -> String {
        try psql("postgres", "CREATE DATABASE \"\(name.replacingOccurrences(of: "\"", with: "\"\""))\"")
        return url(database: name)
    }

    /// Runs SQL through psql as user ward; its output (unaligned, tuples only).
    @discardableResult
    public func psql(_ database: String, _ sql: String) throws -> String {
        try Self.run("\(bin)/psql", ["-h", directory, "-p", "\(port)", "-U", "ward", "-d", database, "-X", "-q", "-A", "-t",
                                     "-v", "ON_ERROR_STOP=1", "-c", sql])
    }

    /// The server's log so far.
    public var log: String { (try? String(contentsOfFile: "\(directory)/log", encoding: .utf8)) ?? "" }

    // MARK: Processes

    private static var isRoot: Bool { geteuid() == 0 }

    /// Makes `directory` the server's: traversable by all (for clients' sockets), owned by
    /// postgres when we are root.
    private static func handToOwner(_ directory: String) throws {
        guard chmod(directory, 0o755) == 0 else { throw Failure(description: "chmod \(directory): \(String(cString: strerror(errno)))") }
        if isRoot { try run("/bin/chown", ["postgres:", directory]) }
    }

    private static let templateLock = NSLock()
    nonisolated(unsafe) private static var templatePath: String?

    /// A data directory that initdb made (user ward trusted, C locale, UTF-8), for servers to copy.
    private static func template(_ bin: String) throws -> String {
        try templateLock.withLock {
            if let templatePath { return templatePath }
            let directory = makeTemporaryDirectory("ward-pg-template")
            try handToOwner(directory)
            let data = "\(directory)/data"
            let initdb = ["-D", data, "-U", "ward", "--auth=trust", "--locale=C", "-E", "UTF8", "--no-sync", "--no-instructions"]
            if isRoot {
                try run("/usr/sbin/runuser", ["-u", "postgres", "--", "\(bin)/initdb"] + initdb, in: directory)
            } else {
                try run("\(bin)/initdb", initdb, in: directory)
            }
            templatePath = data
            return data
        }
    }

    /// Runs a server program as the directory's owner: postgres when this process is root.
    @discardableResult
    private func ownerRun(_ program: String, _ arguments: [String]) throws -> String {
        if Self.isRoot {
            return try Self.run("/usr/sbin/runuser", ["-u", "postgres", "--", program] + arguments, in: directory)
        }
        return try Self.run(program, arguments, in: directory)
    }

    /// Runs a program to completion; its standard output and error, or an error with them.
    ///
    /// Spawned directly, every descriptor above stderr closed in the child: pg_ctl leaves the
    /// postmaster running, and whatever it inherited would stay open as long as the server
    /// runs (Foundation's Process waits for such a descriptor, and other suites' pipes would
    /// never see their end).
    @discardableResult
    private static func run(_ program: String, _ arguments: [String], in directory: String? = nil) throws -> String {
        var template = Array("/tmp/ward-pg-out-XXXXXX".utf8CString)
        let out = mkstemp(&template)
        guard out >= 0 else { throw Failure(description: "mkstemp: \(String(cString: strerror(errno)))") }
        unlink(template)
        defer { close(out) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out, 1)
        posix_spawn_file_actions_adddup2(&actions, out, 2)
        guard let closeFrom = SpawnActions.closeFrom, let changeDirectory = SpawnActions.changeDirectory else {
            throw Failure(description: "this glibc lacks posix_spawn_file_actions_addclosefrom_np or _addchdir_np (2.34+)")
        }
        _ = closeFrom(&actions, 3)
        if let directory { _ = changeDirectory(&actions, directory) }
        let argv = ([program] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, program, &actions, nil, argv, environ)
        guard rc == 0 else { throw Failure(description: "cannot run \(program): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        lseek(out, 0, SEEK_SET)
        while true {
            let n = read(out, &buffer, buffer.count)
            if n <= 0 { break }
            output += buffer[0..<n]
        }
        let text = String(decoding: output, as: UTF8.self)
        // Exited (low 7 bits 0) with status 0.
        guard status & 0x7f == 0 && (status >> 8) & 0xff == 0 else {
            throw Failure(description: "\((program as NSString).lastPathComponent) \(arguments.joined(separator: " ")) failed (wait status \(status)): \(text)")
        }
        return text
    }

    /// The newest server version's bin directory under /usr/lib/postgresql.
    private static func binDirectory() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .filter { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/initdb") }
            .sorted { (Double($0) ?? 0) < (Double($1) ?? 0) }
        guard let newest = versions.last else {
            throw Failure(description: "no PostgreSQL server in \(root): run Scripts/setup --postgres")
        }
        return "\(root)/\(newest)/bin"
    }

    /// A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick).
    private static func freeTCPPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else { throw Failure(description: "bind 127.0.0.1:0: \(String(cString: strerror(errno)))") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    // MARK: Exit

    private static func registerForExit(_ directory: String) { liveServers.add(directory) }
    private static func unregisterForExit(_ directory: String) { liveServers.remove(directory) }
}

/// glibc's posix_spawn extensions, which Swift's Glibc module (built without _GNU_SOURCE)
/// does not declare.
private enum SpawnActions {
    typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    typealias ChangeDirectory = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
    static let closeFrom: CloseFrom? = symbol("posix_spawn_file_actions_addclosefrom_np")
    static let changeDirectory: ChangeDirectory? = symbol("posix_spawn_file_actions_addchdir_np")

    private static func symbol<F>(_ name: String) -> F? {
        guard let pointer = dlsym(UnsafeMutableRawPointer(bitPattern: 0), name) else { return nil }  // RTLD_DEFAULT
        return unsafeBitCast(pointer, to: F.self)
    }
}

/// Servers still running when the process exits get SIGQUIT (an immediate shutdown), so
/// none outlives the test run (their directories are removed at exit too).
private let liveServers = LiveServers()

private final class LiveServers: @unchecked Sendable {
    private let lock = NSLock()
    private var directories: Set<String> = []
    private var registered = false

    func add(_ directory: String) {
        lock.withLock {
            directories.insert(directory)
            if !registered {
                registered = true
                // Registered after makeTemporaryDirectory's handler, so it runs before the removal.
                atexit { liveServers.killAll() }
            }
        }
    }

    func remove(_ directory: String) { _ = lock.withLock { directories.remove(directory) } }

    func killAll() {
        for directory in lock.withLock({ Array(directories) }) {
            guard let text = try? String(contentsOfFile: "\(directory)/data/postmaster.pid", encoding: .utf8),
                  let first = text.split(separator: "\n").first, let pid = Int32(first) else { continue }
            kill(pid, SIGQUIT)
        }
    }
}
