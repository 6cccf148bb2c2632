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
final class OwnerLock: Sendable {
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

extension Ledger {
    /// `LEDGER-locks/`: owner locks, run locks, reconcile locks, the schema lock (`SchemaLock`).
    var lockDirectory: String { path + "-locks" }

    /// The owner lock of this handle, made at its first call.
    func ownerToken() throws(LedgerError) -> String {
        if let token = owner.withLock({ $0?.token }) { return token }
        let made = try OwnerLock(directory: lockDirectory)
        return owner.withLock { held in
            if held == nil { held = made }
            return held!.token
        }
    }

    /// The lock file of this handle's owner lock, once it has one (for tests that stand in
    /// for a crashed supervisor).
    public var ownerLockPath: String? { owner.withLock { $0.map { lockDirectory + "/" + OwnerLock.prefix + $0.token } } }

    /// Whether the owner recorded for a running call is alive, dead or cannot be told.
    func ownerState(_ owner: String?) -> OwnerState {
        guard let owner else { return .unknown("no owner is recorded") }
        if let legacy = ProcessIdentity(text: owner) {
            // Recorded by a ward from before owner locks: only /proc can say.
            return legacy.fate.map { .dead($0) } ?? .alive
        }
        guard OwnerLock.isToken(owner) else { return .unknown("the owner \(owner) is not one ward records") }
        if owner == self.owner.withLock({ $0?.token }) { return .alive }
        let file = lockDirectory + "/" + OwnerLock.prefix + owner
        let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
        guard fd >= 0 else { return .unknown("its lock file \(file) cannot be opened: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        if flock(fd, LOCK_SH | LOCK_NB) == 0 {
            return .dead("its process\(Ledger.ownerDetails(fd).map { " (\($0))" } ?? "") has ended: the kernel released its lock")
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

    /// Removes the lock files of owners that are gone and own no running call any more.
    /// `referenced`: the owners of running calls (their files stay until those are settled).
    func sweepOwnerLocks(referenced: Set<String>) {
        guard let dir = opendir(lockDirectory) else { return }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
            guard name.hasPrefix(OwnerLock.prefix) else { continue }
            let token = String(name.dropFirst(OwnerLock.prefix.count))
            guard !referenced.contains(token), token != owner.withLock({ $0?.token }) else { continue }
            let file = lockDirectory + "/" + name
            let fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
            guard fd >= 0 else { continue }
            // Taken: its owner is gone. Unlinked while held, so no one judges it meanwhile.
            if flock(fd, LOCK_EX | LOCK_NB) == 0 { unlink(file) }
            close(fd)
        }
    }

    static func makeDirectory(_ path: String) throws(LedgerError) {
        if mkdir(path, 0o700) != 0 && errno != EEXIST {
            throw LedgerError(.storage, "cannot create directory \(path): \(String(cString: strerror(errno)))")
        }
    }
}

/// One supervisor per run: an exclusive `flock` on `LEDGER-locks/run-<hash>` held for the
/// supervisor's life, whatever socket it listens on.
public final class RunLock: Sendable {
    private let fd: Int32

    init(fd: Int32) { self.fd = fd }

    deinit { close(fd) }
}

extension Ledger {
    /// Takes `run`'s lock, or says who holds it. Nothing is recorded either way.
    public func lockRun(_ run: String) throws(LedgerError) -> RunLock {
        try Ledger.makeDirectory(lockDirectory)
        let file = lockDirectory + "/run-" + String(Digest.sha256Hex(Array(run.utf8)).prefix(32))
        let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw LedgerError(.storage, "cannot open the run lock \(file): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let holder = Ledger.ownerDetails(fd)
            close(fd)
            throw LedgerError(.invalid, "run \(run) is served by another supervisor\(holder.map { " (\($0))" } ?? "") on this ledger")
        }
        let me = ProcessIdentity.current
        let details = JSONValue.object(["pid": .number(Double(me.pid)), "command": .string(ProcessIdentity.commandName)]).canonicalBytes + [0x0A]
        _ = ftruncate(fd, 0)
        _ = pwrite(fd, details, details.count, 0)
        return RunLock(fd: fd)
    }
}

extension Ledger {
    /// Runs `body` holding the reconcile lock of one call (`LEDGER-locks/reconcile-KEY`):
    /// two processes or threads reconciling the same in-doubt call take turns, so its
    /// reconcile command runs once and the second finds the call settled.
    public func withReconcileLock<T>(run: String, callId: String, _ body: () throws(LedgerError) -> T) throws(LedgerError) -> T {
        try Ledger.makeDirectory(lockDirectory)
        let file = lockDirectory + "/reconcile-" + Ledger.idempotencyKey(run: run, callId: callId)
        let fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw LedgerError(.storage, "cannot open the reconcile lock \(file): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // Waits for the other reconciler: its command is bounded by the tool's timeout.
        guard OS.lockExclusive(fd) else {
            throw LedgerError(.storage, "cannot take the reconcile lock \(file): \(String(cString: strerror(errno)))")
        }
        return try body()
    }

    /// A call's state, nil when there is no such call.
    public func state(run: String, callId: String) throws(LedgerError) -> CallState? {
        try read("reading call \(callId)") { db in try CallRecord.fetch(db, run: run, callId: callId)?.state }
    }
}
