import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// The lock that makes a ledger handle the owner of the calls it begins: an exclusive
/// `flock` on its own file in `LEDGER-locks/`, held for as long as the handle lives. The
/// kernel releases it when the process dies, however it dies and in whatever PID namespace
/// or container it ran, so another process learns that an owner is gone by taking its lock
/// — never from /proc, whose PIDs, start times and boot IDs mean nothing across namespaces
/// and cannot always be read.
final class OwnerLock: LedgerOwner {
    /// What the ledger records as a call's owner: 32 hex digits, the name of the lock file.
    let token: String
    private let fd: Int32

    init(directory: String) throws(LedgerError) {
        var rng = SystemRandomNumberGenerator()
        token = Digest.hex((0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) })
        try Ledger.makeDirectory(directory)
        // Made under a temporary name and locked before it is renamed into place: nobody can
        // find the file unlocked and judge its owner dead.
        let temporary = directory + "/tmp-" + token
        let fd = open(temporary, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw LedgerError(.storage, "cannot create the owner lock \(temporary): \(String(cString: strerror(errno)))") }
        // For people reading the directory: which process holds it.
        let me = ProcessIdentity.current
        let details = JSONValue.object(["pid": .number(Double(me.pid)), "startTime": .number(Double(me.startTime)), "bootID": .string(me.bootID),
                                        "command": .string(ProcessIdentity.commandName)]).canonicalBytes + [0x0A]
        guard flock(fd, LOCK_EX | LOCK_NB) == 0, OS.writeAll(fd, details),
              rename(temporary, directory + "/" + OwnerLock.prefix + token) == 0 else {
            let error = String(cString: strerror(errno))
            close(fd)
            unlink(temporary)
            throw LedgerError(.storage, "cannot take the owner lock in \(directory): \(error)")
        }
        self.fd = fd
    }

    deinit { close(fd) }

    static let prefix = "owner-"

    static func isToken(_ text: String) -> Bool {
        text.utf8.count == 32 && text.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
    }
}

/// What can be said of a running call's owner.
enum OwnerState: Equatable {
    case alive
    /// Gone, and how that is known.
    case dead(String)
    /// Cannot be told (the lock file is unreadable or missing): the call is not declared
    /// dead on a guess, it waits.
    case unknown(String)
}

/// The identity under which a ledger handle runs calls: recorded as each running call's
/// `owner`, and alive exactly as long as the store can tell (a lock the kernel holds for a
/// SQLite ledger, a renewed lease for a PostgreSQL one).
protocol LedgerOwner: AnyObject, Sendable {
    var token: String { get }
    /// The store no longer holds it alive (a lease that expired): calls begun under it are
    /// fenced, and the handle takes a new identity for new ones.
    var isLost: Bool { get }
}

extension OwnerLock {
    var isLost: Bool { false }
}

extension Ledger {
    /// `LEDGER-locks/`: owner locks, run locks, reconcile locks, the schema lock (`SchemaLock`),
    /// on this host.
    var lockDirectory: String { localBase + "-locks" }

    /// The owner identity of this handle, made at its first call (and again once lost).
    func ownerToken() throws(LedgerError) -> String {
        if let token = owner.withLock({ $0.flatMap { $0.isLost ? nil : $0.token } }) { return token }
        // The handlers, not the ledger: no cycle, and no weak reference to the ledger.
        let made = try store.makeOwner { [handlers = ownerLostHandlers] in
            for handler in handlers.withLock({ $0 }) { handler() }
        }
        return owner.withLock { held in
            if held == nil || held!.isLost { held = made }
            return held!.token
        }
    }

    /// Runs `handler` (on another thread) whenever this handle loses its owner identity: its
    /// lease on a server's ledger expired unrenewed (the process was paused, or cut off). Its
    /// running calls' outcomes will be fenced: a supervisor stops their tools at once.
    public func whenOwnerLost(_ handler: @escaping @Sendable () -> Void) {
        ownerLostHandlers.withLock { $0.append(handler) }
        // Lost already (before the handler was there): it runs now.
        if owner.withLock({ $0?.isLost ?? false }) { handler() }
    }

    /// The lock file of this handle's owner lock, once it has one (for tests that stand in
    /// for a crashed supervisor); nil on a server's ledger.
    public var ownerLockPath: String? {
        guard store is SQLiteStore else { return nil }
        return owner.withLock { $0.map { lockDirectory + "/" + OwnerLock.prefix + $0.token } }
    }

    /// Whether the owner recorded for a running call is alive, dead or cannot be told.
    func ownerState(_ owner: String?) -> OwnerState {
        guard let owner else { return .unknown("no owner is recorded") }
        if let legacy = ProcessIdentity(text: owner) {
            // Recorded by a ward from before owner locks: only /proc can say.
            return legacy.fate.map { .dead($0) } ?? .alive
        }
        if let mine = self.owner.withLock({ $0 }), mine.token == owner {
            return mine.isLost ? .dead("this process's lease on the ledger expired") : .alive
        }
        return store.ownerState(owner)
    }

    /// Forgets owners that are gone and own no running call any more.
    /// `referenced`: the owners of running calls (kept until those are settled).
    func sweepOwnerLocks(referenced: Set<String>) {
        var keep = referenced
        if let mine = owner.withLock({ $0?.token }) { keep.insert(mine) }
        store.sweepOwners(keeping: keep)
    }

    /// Takes `run`'s lock, or says who holds it: one supervisor per run, whatever socket (or
    /// host) it serves it on, for as long as the lock lives. Nothing is recorded either way.
    public func lockRun(_ run: String) throws(LedgerError) -> RunLock {
        try store.lockRun(run, owner: ownerToken())
    }

    /// Runs `body` holding the reconcile lock of one call: two processes or threads
    /// reconciling the same in-doubt call take turns, so its reconcile command runs once and
    /// the second finds the call settled.
    public func withReconcileLock<T>(run: String, callId: String, _ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        try store.withLock(named: "reconcile-" + Ledger.idempotencyKey(run: run, callId: callId), body)
    }

    /// A call's state, nil when there is no such call.
    public func state(run: String, callId: String) throws(LedgerError) -> CallState? {
        try lookup("reading call \(callId)") { db in try CallRecord.fetch(db, run: run, callId: callId)?.state }
    }
}

extension SQLiteStore {
    var lockDirectory: String { path + "-locks" }

    /// An owner lock is held by the kernel until its process dies: a live process is never
    /// judged dead, so nothing more fences its outcomes.
    var fence: String { "" }

    func requireOwner(_ db: any SQLConnection, _ token: String) throws {}

    func makeOwner(onLost: @escaping @Sendable () -> Void) throws(LedgerError) -> any LedgerOwner { try OwnerLock(directory: lockDirectory) }

    /// Alive while the kernel holds its lock file's `flock`.
    func ownerState(_ owner: String) -> OwnerState {
        guard OwnerLock.isToken(owner) else { return .unknown("the owner \(owner) is not one ward records") }
        let file = lockDirectory + "/" + OwnerLock.prefix + owner
        let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return .unknown("its lock file \(file) cannot be opened: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            return .dead("its process\(SQLiteStore.ownerDetails(fd).map { " (\($0))" } ?? "") has ended: the kernel released its lock")
        }
        if errno == EWOULDBLOCK { return .alive }
        return .unknown("its lock \(file) cannot be tested: \(String(cString: strerror(errno)))")
    }

    /// "pid 123, ward serve" from an owner lock file, for people.
    static func ownerDetails(_ fd: Int32) -> String? {
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = pread(fd, &buffer, buffer.count, 0)
        guard n > 0, let newline = buffer[0..<n].firstIndex(of: 0x0A),
              let details = (try? JSONValue.parse(Array(buffer[0..<newline])))?.objectValue,
              let pid = details["pid"]?.integer(Int32.self) else { return nil }
        return "pid \(pid)" + (details["command"]?.stringValue.map { ", " + $0 } ?? "")
    }

    /// Removes the lock files of owners that are gone, but those of `keep` (the owners of
    /// running calls, whose files stay until those are settled, and the handle's own).
    func sweepOwners(keeping keep: Set<String>) {
        guard let dir = opendir(lockDirectory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasPrefix(OwnerLock.prefix) else { continue }
            let token = String(name.dropFirst(OwnerLock.prefix.count))
            guard !keep.contains(token) else { continue }
            let file = lockDirectory + "/" + name
            let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { continue }
            // Taken: its owner is gone. Unlinked while held, so no one judges it meanwhile.
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { unlink(file) }
            close(fd)
        }
    }

    /// An exclusive `flock` on `LEDGER-locks/run-<hash>`, held for the supervisor's life.
    func lockRun(_ run: String, owner: String) throws(LedgerError) -> RunLock {
        try Ledger.makeDirectory(lockDirectory)
        let file = lockDirectory + "/run-" + String(Digest.sha256Hex(Array(run.utf8)).prefix(32))
        let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw LedgerError(.storage, "cannot open the run lock \(file): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = SQLiteStore.ownerDetails(fd)
            close(fd)
            throw LedgerError(.busy, "run \(run) is served by another supervisor\(holder.map { " (\($0))" } ?? "") on this ledger")
        }
        let me = ProcessIdentity.current
        let details = JSONValue.object(["pid": .number(Double(me.pid)), "command": .string(ProcessIdentity.commandName)]).canonicalBytes + [0x0A]
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, details, details.count, 0)
        return RunLock { close(fd) }
    }

    /// `LEDGER-locks/NAME`, waited for: the other holder's work is bounded (a reconcile
    /// command by the tool's timeout).
    func withLock<T>(named name: String, _ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        try Ledger.makeDirectory(lockDirectory)
        let file = lockDirectory + "/" + name
        let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw LedgerError(.storage, "cannot open the lock \(file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        guard OS.lockExclusive(fd) else {
            throw LedgerError(.storage, "cannot take the lock \(file): \(String(cString: strerror(errno)))")
        }
        return try body()
    }
}

extension Ledger {
    static func makeDirectory(_ path: String) throws(LedgerError) {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw LedgerError(.storage, "cannot create directory \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// One supervisor per run, held for the supervisor's life whatever socket it listens on:
/// released when it goes away (or, for a SQLite ledger, when the process dies).
public final class RunLock: Sendable {
    private let release: @Sendable () -> Void

    init(release: @escaping @Sendable () -> Void) { self.release = release }

    deinit { release() }
}
