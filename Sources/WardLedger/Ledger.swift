import Foundation
import GRDB
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// The idempotency ledger: one SQLite file (WAL) that records every tool call durably before
/// its child starts and again before its result is returned, the agent's checkpoints and
/// journal, and an append-only, hash-chained event log of every change.
///
/// ```swift
/// let ledger = try Ledger(path: ".ward/ledger.sqlite")
/// switch try ledger.begin(BeginRequest(run: "r1", callId: "c1", tool: "shell", effect: .nonIdempotent, arguments: args, …)) {
/// case .execute(let ticket): let outcome = run(); _ = try ledger.finish(ticket, outcome: outcome)
/// case .replay(let result): return result
/// }
/// ```
///
/// Schema (created only through migrations; query it with the `sqlite3` CLI):
///
/// - `runs(run_id, created_at, updated_at, attempts, finished_at, exit_status, event_count,
///   head_hash, workspace, workspace_dev, workspace_ino, workspace_born, policies, agent,
///   origin_run, origin_seq)`: one row per run; `finished_at` is set when its agent exited
///   for good; `head_hash` is the hash of the run's last event; the workspace columns and
///   `policies` are its place (`RunPlace`); `agent` is the canonical JSON array of the argv
///   `ward run` last started it with; a fork's `origin_run` and `origin_seq` name the run and
///   checkpoint it was made from (`fork`), NULL for any other run.
/// - `calls(run_id, call_id, tool, effect, args_hash, args, policy_hash, binary_hash, status,
///   attempt, executions, owner, started_at, finished_at, exit_code, signal, stdout, stderr,
///   truncated, duration_ms, verdict, note, delivered)`: the current state of each call; `stdout`
///   and `stderr` are blob hashes; `owner` is the token of the owner lock held by the ledger
///   handle running it (`OwnerLock`; a ward from before owner locks wrote `pid:starttime@bootid`);
///   `delivered` is, for a client that can lose answers (`ward mcp`), 0 until the client read
///   the answer, 2 once it did, 1 once it went on to something else (`Delivery`); NULL for
///   the agent protocol.
/// - `blobs(hash, size, data)`: content-addressed bytes (outputs, checkpoint chunks); `hash`
///   is the raw SHA-256 of `data`.
/// - `checkpoints(run_id, seq, label, call_id, created_at, size, state_hash, base_seq, keep,
///   keep_tail, chunks)`: a state is the concatenation of chunk blobs; its chunk list is the
///   first `keep` chunks of checkpoint `base_seq`, then the hashes in `chunks`, then the last
///   `keep_tail` chunks of `base_seq` (base NULL: `chunks` is the whole list, a keyframe).
/// - `journal(run_id, key, value, recorded_at)`: first value wins.
/// - `events(run_id, seq, at, kind, call_id, body, prev_hash, hash)`: append-only (triggers
///   refuse UPDATE and DELETE); `body` is the RFC 8785 JSON of the event and
///   `hash = SHA-256(prev_hash ‖ body)`, chaining each run's events from 64 zeros (a fork's
///   from the hash of the last origin event it copied).
public final class Ledger: Sendable {
    /// How hard a commit waits for the disk.
    public enum Durability: String, Sendable, CaseIterable {
        /// `synchronous=FULL`: a commit survives power loss.
        case full
        /// `synchronous=NORMAL`: a commit survives a crash of any process, but the last ones
        /// may be lost on power loss.
        case normal
    }

    /// `PRAGMA application_id` of ward ledgers ("WARD"): a SQLite file without it is refused.
    static let applicationID: Int32 = 0x5741_5244

    public let path: String
    /// Every file and directory of this ledger: the database, SQLite's side files, the owner
    /// locks and the captured outputs. Whoever can change one can change the record.
    public var files: [String] { [path, path + "-wal", path + "-shm", path + "-journal", lockDirectory, captureDirectory] }
    let pool: DatabasePool
    /// The lock that makes this handle the owner of the calls it begins (made at the first).
    let owner = Lock<OwnerLock?>(nil)
    let digests = FileDigests()
    let manifests = ManifestCache()
    /// Damaged checkpoints whose `checkpoint.damaged` event is known to be committed.
    let reportedDamage = Lock<Set<DamageKey>>([])
    /// Whether rows carry their events' times (migration v4): an audit of an older ledger,
    /// opened read-only and so not migrated, cannot hold the times to the events.
    let timesFollowEvents: Bool
    /// Whether calls record the delivery of their answers (migration v5): a ledger from
    /// before it has no such column to audit.
    let recordsDelivery: Bool
    /// Whether runs record their agent's command line (migration v7).
    let recordsAgent: Bool
    /// Whether runs record the run they were forked from (migration v8).
    let recordsForks: Bool

    /// Opens (creating when missing) the ledger at `path`, migrates its schema and recovers
    /// calls left `running` by processes that died.
    ///
    /// - Parameters:
    ///   - busyTimeout: how long to wait for a lock held by another process before failing
    ///     with `storage`.
    /// - Throws: `corrupt` when the file is not a ward ledger or is damaged (the file is left
    ///   untouched), `storage` when it cannot be opened or written.
    ///   - readOnly: for audits: nothing is written, not even recovery (the file must exist).
    ///   - existing: the file must exist (commands that settle what a ledger holds never
    ///     make an empty one, e.g. when run from another directory without `--ledger`).
    ///   - recover: recover dead owners' calls now; a command that may fail afterwards
    ///     opens without, so that failing it changes nothing.
    public init(path: String, durability: Durability = .full, busyTimeout: Double = 5,
                readOnly: Bool = false, existing: Bool = false, recover: Bool = true) throws(LedgerError) {
        self.path = path
        if readOnly || existing {
            guard access(path, F_OK) == 0 else { throw LedgerError(.storage, "no ledger at \(path)") }
        } else {
            try Ledger.createParentDirectory(of: path)
        }
        try Ledger.refuseForeignFile(path)
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.readonly = readOnly
        var timesFollowEvents = true
        var recordsDelivery = true
        var recordsAgent = true
        var recordsForks = true
        do {
            // A ledger is set up (WAL mode, then the schema) by one process at a time. Two
            // at once on a new file fail: SQLite may refuse a switch to WAL with "locked"
            // whatever the busy timeout, and GRDB's migrator reads which migrations are
            // applied before its transactions, so both would apply one ("duplicate column
            // name"). A ledger in WAL mode and up to date (every open but the first) takes
            // no lock.
            var setUp = readOnly || Ledger.isInWALMode(path) ? nil : try SchemaLock(ledger: path)
            pool = try DatabasePool(path: readOnly && Ledger.isOnReadOnlyMedia(path) ? Ledger.immutableURI(path) : path, configuration: config)
            // Set on the writer after the pool is open: GRDB's WAL set-up runs after
            // prepareDatabase and sets NORMAL, which would silently drop FULL's fsync per commit.
            if !readOnly {
                try pool.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
                }
            }
            if readOnly {
                let applied = try pool.read { db in try Ledger.migrator.appliedMigrations(db) }
                guard applied.contains("v1") else { throw LedgerError(.corrupt, "\(path) is not a ward ledger") }
                timesFollowEvents = applied.contains("v4")
                recordsDelivery = applied.contains("v5")
                recordsAgent = applied.contains("v7")
                recordsForks = applied.contains("v8")
            } else if try !pool.read({ db in try Ledger.migrator.hasCompletedMigrations(db) }) {
                if setUp == nil { setUp = try SchemaLock(ledger: path) }
                try Ledger.migrator.migrate(pool)
            }
            withExtendedLifetime(setUp) {}
        } catch {
            throw Ledger.map(error, doing: "opening \(path)")
        }
        self.timesFollowEvents = timesFollowEvents
        self.recordsDelivery = recordsDelivery
        self.recordsAgent = recordsAgent
        self.recordsForks = recordsForks
        if !readOnly && recover { try self.recover() }
    }

    /// The writer connection's `PRAGMA synchronous` as SQLite applies it (2 = FULL, 1 = NORMAL):
    /// what each commit really does, whatever was asked for.
    public func effectiveSynchronous() throws(LedgerError) -> Int {
        do {
            return try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
        } catch {
            throw Ledger.map(error, doing: "reading PRAGMA synchronous")
        }
    }

    /// Whether `path` lies on a file system mounted read-only (an archive, a snapshot).
    static func isOnReadOnlyMedia(_ path: String) -> Bool {
        var st = statvfs()
        return statvfs(path, &st) == 0 && st.f_flag & UInt(ST_RDONLY) != 0
    }

    /// A WAL ledger whose `-shm` is missing can only be read where it can be made, or as
    /// immutable: on read-only media nothing can change it, so immutable is the truth.
    static func immutableURI(_ path: String) -> String {
        var escaped = ""
        for c in path.unicodeScalars {
            switch c {
            case "%": escaped += "%25"
            case "?": escaped += "%3f"
            case "#": escaped += "%23"
            default: escaped.unicodeScalars.append(c)
            }
        }
        return "file:" + escaped + "?immutable=1"
    }

    /// Whether `path` is an SQLite database in WAL mode (its header's read and write
    /// versions are 2): then opening it changes no journal mode.
    private static func isInWALMode(_ path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var header = [UInt8](repeating: 0, count: 20)
        return pread(fd, &header, 20, 0) == 20 && header[18] == 2 && header[19] == 2
    }

    private static func createParentDirectory(of path: String) throws(LedgerError) {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return }
        var dir = ""
        for part in path[..<slash].split(separator: "/", omittingEmptySubsequences: false) {
            dir += (dir.isEmpty && path.hasPrefix("/") ? "/" : (dir.isEmpty ? "" : "/")) + part
            if part.isEmpty { continue }
            if mkdir(dir, 0o700) != 0 && errno != EEXIST {
                throw LedgerError(.storage, "cannot create directory \(dir): \(String(cString: strerror(errno)))")
            }
        }
    }

    /// A file that exists but is not an SQLite database, or is another application's, is
    /// refused before SQLite opens (and could write to) it.
    private static func refuseForeignFile(_ path: String) throws(LedgerError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { return }
            throw LedgerError(.storage, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        guard let header = OS.readAll(fd, limit: 100) else {
            throw LedgerError(.storage, "cannot read \(path): \(String(cString: strerror(errno)))")
        }
        if header.isEmpty { return }
        guard header.count == 100, header.starts(with: Array("SQLite format 3\0".utf8)) else {
            throw LedgerError(.corrupt, "\(path) is not a ward ledger (not an SQLite database)")
        }
        let appID = Int32(bitPattern: UInt32(header[68]) << 24 | UInt32(header[69]) << 16 | UInt32(header[70]) << 8 | UInt32(header[71]))
        let pageCount = UInt32(header[28]) << 24 | UInt32(header[29]) << 16 | UInt32(header[30]) << 8 | UInt32(header[31])
        if appID != applicationID && pageCount > 1 {
            throw LedgerError(.corrupt, "\(path) is an SQLite database but not a ward ledger")
        }
    }

    // MARK: - Schema

    static let migrator: DatabaseMigrator = {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(sql: """
                PRAGMA application_id = \(applicationID);
                CREATE TABLE runs (
                    run_id TEXT PRIMARY KEY NOT NULL,
                    created_at TEXT NOT NULL,
                    updated_at TEXT NOT NULL,
                    attempts INTEGER NOT NULL DEFAULT 0,
                    finished_at TEXT,
                    exit_status INTEGER,
                    event_count INTEGER NOT NULL DEFAULT 0,
                    head_hash TEXT NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE blobs (
                    hash BLOB PRIMARY KEY NOT NULL,
                    size INTEGER NOT NULL,
                    data BLOB NOT NULL
                ) WITHOUT ROWID;
                CREATE TABLE calls (
                    run_id TEXT NOT NULL,
                    call_id TEXT NOT NULL,
                    tool TEXT NOT NULL,
                    effect TEXT NOT NULL,
                    args_hash TEXT NOT NULL,
                    args TEXT NOT NULL,
                    policy_hash TEXT NOT NULL,
                    binary_hash TEXT NOT NULL,
                    status TEXT NOT NULL,
                    attempt INTEGER NOT NULL,
                    executions INTEGER NOT NULL,
                    owner TEXT,
                    started_at TEXT NOT NULL,
                    finished_at TEXT,
                    exit_code INTEGER,
                    signal INTEGER,
                    stdout BLOB,
                    stderr BLOB,
                    truncated INTEGER,
                    duration_ms REAL,
                    verdict TEXT,
                    note TEXT,
                    PRIMARY KEY (run_id, call_id)
                ) WITHOUT ROWID;
                CREATE INDEX calls_by_status ON calls(status);
                CREATE INDEX calls_by_tool ON calls(tool);
                CREATE TABLE checkpoints (
                    run_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    label TEXT,
                    call_id TEXT,
                    created_at TEXT NOT NULL,
                    size INTEGER NOT NULL,
                    state_hash TEXT NOT NULL,
                    base_seq INTEGER,
                    keep INTEGER NOT NULL,
                    keep_tail INTEGER NOT NULL,
                    chunks BLOB NOT NULL,
                    PRIMARY KEY (run_id, seq)
                ) WITHOUT ROWID;
                CREATE TABLE journal (
                    run_id TEXT NOT NULL,
                    key TEXT NOT NULL,
                    value TEXT NOT NULL,
                    recorded_at TEXT NOT NULL,
                    PRIMARY KEY (run_id, key)
                ) WITHOUT ROWID;
                CREATE TABLE events (
                    run_id TEXT NOT NULL,
                    seq INTEGER NOT NULL,
                    at TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    call_id TEXT,
                    body TEXT NOT NULL,
                    prev_hash TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    PRIMARY KEY (run_id, seq)
                ) WITHOUT ROWID;
                CREATE INDEX events_by_call ON events(run_id, call_id);
                CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
                    BEGIN SELECT RAISE(ABORT, 'ward ledger events are append-only'); END;
                CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
                    BEGIN SELECT RAISE(ABORT, 'ward ledger events are append-only'); END;
                """)
        }
        // Every index is one more page in each commit's WAL frames, and the fdatasync of
        // every begin and finish pays for them. Only unsettled calls need finding by status
        // (recovery at start-up, in-doubt lists); audits by tool or call scan a run's rows.
        migrator.registerMigration("v2") { db in
            try db.execute(sql: """
                DROP INDEX calls_by_status;
                DROP INDEX calls_by_tool;
                DROP INDEX events_by_call;
                CREATE INDEX calls_running ON calls(run_id) WHERE status = 'running';
                CREATE INDEX calls_in_doubt ON calls(run_id) WHERE status = 'in-doubt';
                """)
        }
        // Where each run ran (Ledger+Place): reconcile and later attempts use it.
        migrator.registerMigration("v3") { db in
            try db.execute(sql: """
                ALTER TABLE runs ADD COLUMN workspace TEXT;
                ALTER TABLE runs ADD COLUMN workspace_dev INTEGER;
                ALTER TABLE runs ADD COLUMN workspace_ino INTEGER;
                ALTER TABLE runs ADD COLUMN workspace_born TEXT;
                ALTER TABLE runs ADD COLUMN policies TEXT;
                """)
        }
        // Rows are stamped with the time of the event that changed them (`appendEvent`'s
        // `at`), so verify holds each time to its event. Before, each took its own clock
        // reading a few microseconds apart: set them to their events' once. (SQLite gives a
        // bare column the values of the row that MAX() picked.)
        migrator.registerMigration("v4") { db in
            try db.execute(sql: """
                UPDATE runs SET finished_at = e.at
                FROM (SELECT run_id, MAX(seq), at FROM events WHERE kind = 'run.finish' GROUP BY run_id) AS e
                WHERE runs.run_id = e.run_id AND runs.finished_at IS NOT NULL;
                UPDATE calls SET started_at = e.at
                FROM (SELECT run_id, call_id, MAX(seq), at FROM events WHERE kind = 'call.begin' GROUP BY run_id, call_id) AS e
                WHERE calls.run_id = e.run_id AND calls.call_id = e.call_id;
                UPDATE calls SET finished_at = e.at
                FROM (SELECT run_id, call_id, MAX(seq), at FROM events WHERE kind IN ('call.finish', 'call.resolve') GROUP BY run_id, call_id) AS e
                WHERE calls.run_id = e.run_id AND calls.call_id = e.call_id AND calls.finished_at IS NOT NULL;
                UPDATE checkpoints SET created_at = e.at
                FROM (SELECT run_id, json_extract(body, '$.data.seq') AS seq, at FROM events WHERE kind = 'checkpoint.save' AND json_valid(body)) AS e
                WHERE checkpoints.run_id = e.run_id AND checkpoints.seq = e.seq;
                UPDATE journal SET recorded_at = e.at
                FROM (SELECT run_id, json_extract(body, '$.data.key') AS key, MIN(seq), at FROM events
                      WHERE kind = 'journal.record' AND json_valid(body) GROUP BY run_id, key) AS e
                WHERE journal.run_id = e.run_id AND journal.key = e.key;
                """)
        }
        // Whether a call's answer reached its client, for clients that can lose one (an
        // MCP host; `Delivery`): NULL for the agent protocol, whose agents repeat a call by
        // its ID. Only the undelivered are looked up, by tool and arguments.
        migrator.registerMigration("v5") { db in
            try db.execute(sql: """
                ALTER TABLE calls ADD COLUMN delivered INTEGER;
                CREATE INDEX calls_undelivered ON calls(run_id, tool, args_hash) WHERE delivered IN (0, 2);
                """)
        }
        // Gated calls (`approve = true`) waiting for a verdict, found by `ward approve`
        // and `runs list` without a scan; the hot path never writes a row this index holds.
        migrator.registerMigration("v6") { db in
            try db.execute(sql: "CREATE INDEX calls_awaiting_approval ON calls(run_id) WHERE status = 'awaiting-approval'")
        }
        // The command line `ward run` started each run's agent with, so that a `ward run` of
        // the same agent finds the runs it could resume by an index, not a scan of events.
        migrator.registerMigration("v7") { db in
            try db.execute(sql: """
                ALTER TABLE runs ADD COLUMN agent TEXT;
                CREATE INDEX runs_by_agent ON runs(agent) WHERE agent IS NOT NULL;
                """)
        }
        // A fork names the run it was made from and the checkpoint it starts at
        // (Ledger+Fork); NULL for any other run. Its `run.fork` event says the same.
        migrator.registerMigration("v8") { db in
            try db.execute(sql: """
                ALTER TABLE runs ADD COLUMN origin_run TEXT;
                ALTER TABLE runs ADD COLUMN origin_seq INTEGER;
                """)
        }
        return migrator
    }()

    // MARK: - Events

    /// Appends an event to `run`'s chain inside the caller's transaction. The body is the RFC
    /// 8785 JSON of {run, seq, at, kind, call?, data}; it is what the hash covers. A row the
    /// event changes is stamped with the event's own time (`now`), so that verify can hold
    /// the row's time to it.
    @discardableResult
    func appendEvent(_ db: Database, run: String, kind: String, call: String? = nil, data: [String: JSONValue], at now: String = Timestamp.now()) throws -> Int {
        let head = try db.first("SELECT event_count, head_hash FROM runs WHERE run_id = ?", [.text(run)]) { (count: $0.int(0), hash: $0.text(1)) }
        if head == nil {
            try db.run("INSERT INTO runs (run_id, created_at, updated_at, attempts, event_count, head_hash) VALUES (?, ?, ?, 0, 0, ?)",
                       [.text(run), .text(now), .text(now), .text(Digest.genesis)])
        }
        let prev = head?.hash ?? Digest.genesis
        let seq = (head?.count ?? 0) + 1
        let body = Ledger.eventBody(run: run, seq: seq, at: now, kind: kind, call: call, data: data)
        let hash = Ledger.chain(prev: prev, body: body)
        try db.run("INSERT INTO events (run_id, seq, at, kind, call_id, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   [.text(run), .int(seq), .text(now), .text(kind), SQLValue(call), .text(body), .text(prev), .text(hash)])
        try db.run("UPDATE runs SET event_count = ?, head_hash = ?, updated_at = ? WHERE run_id = ?", [.int(seq), .text(hash), .text(now), .text(run)])
        return seq
    }

    /// The RFC 8785 JSON of an event: {at, call?, data, kind, run, seq}, keys in that order.
    static func eventBody(run: String, seq: Int, at: String, kind: String, call: String?, data: [String: JSONValue]) -> String {
        var members: [String: JSONValue] = ["run": .string(run), "seq": .number(Double(seq)), "at": .string(at), "kind": .string(kind), "data": .object(data)]
        if let call { members["call"] = .string(call) }
        return JSONValue.object(members).canonical
    }

    static func chain(prev: String, body: String) -> String {
        Digest.sha256Hex((Digest.bytes(fromHex: prev) ?? []) + Array(body.utf8))
    }

    /// Stores bytes once under their SHA-256; returns the hash.
    @discardableResult
    func putBlob(_ db: Database, _ bytes: [UInt8]) throws -> [UInt8] {
        let hash = Digest.sha256(bytes)
        try db.run("INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (?, ?, ?)", [.blob(hash), .int(bytes.count), .blob(bytes)])
        return hash
    }

    func blob(_ db: Database, _ hash: [UInt8]) throws -> [UInt8]? {
        try db.first("SELECT data FROM blobs WHERE hash = ?", [.blob(hash)]) { $0.blob(0) }
    }

    // MARK: - Access with error mapping

    /// One `BEGIN IMMEDIATE` transaction on the writer, committed when `body` returns and
    /// rolled back when it throws. BEGIN and COMMIT are cached statements: GRDB's own
    /// transaction wrapper parses both texts anew for every commit, on the hot path twice
    /// per tool call.
    func write<T>(_ what: String, _ body: (Database) throws -> T) throws(LedgerError) -> T {
        do {
            return try pool.writeWithoutTransaction { db in
                try db.run("BEGIN IMMEDIATE")
                do {
                    let value = try body(db)
                    try db.run("COMMIT")
                    return value
                } catch {
                    // A failed COMMIT may leave the transaction open (SQLITE_BUSY) or closed
                    // (an I/O error rolls it back): either way nothing of it stays.
                    if db.isInsideTransaction { try? db.run("ROLLBACK") }
                    throw error
                }
            }
        } catch let error as LedgerError { throw error } catch {
            let mapped = Ledger.map(error, doing: what)
            // Rolled back whole: the caller (an agent, an operator) learns that no part of
            // it stayed, so repeating it is safe.
            if (error as? DatabaseError)?.resultCode == .SQLITE_FULL {
                throw LedgerError(.storage, mapped.message + " (nothing of it was recorded)", underlying: mapped.underlying)
            }
            throw mapped
        }
    }

    func read<T>(_ what: String, _ body: (Database) throws -> T) throws(LedgerError) -> T {
        do { return try pool.read(body) } catch let error as LedgerError { throw error } catch {
            throw Ledger.map(error, doing: what)
        }
    }

    static func map(_ error: any Error, doing what: String) -> LedgerError {
        if let error = error as? LedgerError { return error }
        guard let db = error as? DatabaseError else { return LedgerError(.storage, "\(what): \(error)") }
        switch db.resultCode {
        case .SQLITE_CORRUPT, .SQLITE_NOTADB:
            return LedgerError(.corrupt, "\(what): the ledger file is damaged (\(db.message ?? "corrupt"))", underlying: db)
        case .SQLITE_FULL:
            return LedgerError(.storage, "\(what): the disk is full", underlying: db)
        case .SQLITE_BUSY, .SQLITE_LOCKED:
            return LedgerError(.storage, "\(what): the ledger is locked by another process", underlying: db)
        case .SQLITE_READONLY, .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_IOERR:
            return LedgerError(.storage, "\(what): \(db.message ?? "cannot write the ledger")", underlying: db)
        default:
            return LedgerError(.storage, "\(what): \(db.message ?? "\(db)")", underlying: db)
        }
    }
}

extension Array where Element == UInt8 {
    var databaseData: DatabaseValue { Data(self).databaseValue }
}

extension DatabaseValue {
    /// An INTEGER as stored; nil for any other type.
    var integer: Int? {
        if case .int64(let value) = storage { return Int(exactly: value) }
        return nil
    }

    /// The bytes of a BLOB (or of TEXT), empty for NULL.
    var bytes: [UInt8] {
        switch storage {
        case .blob(let data): [UInt8](data)
        case .string(let s): Array(s.utf8)
        default: []
        }
    }
}

/// Held while a process sets a ledger up (WAL mode and schema): an exclusive `flock` on
/// `LEDGER-locks/schema`, which works across PID namespaces and is released when the
/// process dies.
final class SchemaLock {
    private let fd: Int32

    init(ledger path: String) throws(LedgerError) {
        let directory = path + "-locks"
        try Ledger.makeDirectory(directory)
        let file = directory + "/schema"
        fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw LedgerError(.storage, "cannot open the schema lock \(file): \(String(cString: strerror(errno)))") }
        // Waited for: another process's set-up takes milliseconds.
        guard OS.lockExclusive(fd) else {
            let error = String(cString: strerror(errno))
            close(fd)
            throw LedgerError(.storage, "cannot take the schema lock \(file): \(error)")
        }
    }

    deinit { close(fd) }
}
