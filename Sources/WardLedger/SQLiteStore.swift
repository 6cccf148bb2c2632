import Foundation
import GRDB
import GRDBSQLite
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// The embedded store: one SQLite file in WAL mode, through GRDB. One writer at a time (each
/// write transaction is `BEGIN IMMEDIATE`), readers beside it.
final class SQLiteStore: LedgerStore {
    let path: String
    let pool: DatabasePool
    let readOnly: Bool
    let features: LedgerFeatures
    var dialect: SQLDialect { .sqlite }

    /// `PRAGMA application_id` of ward ledgers ("WARD"): a SQLite file without it is refused.
    static let applicationID: Int32 = 0x5741_5244

    init(path: String, durability: Ledger.Durability, busyTimeout: Double, readOnly: Bool, existing: Bool) throws(LedgerError) {
        self.path = path
        self.readOnly = readOnly
        if readOnly || existing {
            guard access(path, F_OK) == 0 else { throw LedgerError(.storage, "no ledger at \(path)") }
        } else {
            try SQLiteStore.createParentDirectory(of: path)
        }
        try SQLiteStore.refuseForeignFile(path)
        var config = Configuration()
        config.busyMode = .timeout(busyTimeout)
        config.readonly = readOnly
        var features = LedgerFeatures.all
        do {
            // A ledger is set up (WAL mode, then the schema) by one process at a time. Two
            // at once on a new file fail: SQLite may refuse a switch to WAL with "locked"
            // whatever the busy timeout, and GRDB's migrator reads which migrations are
            // applied before its transactions, so both would apply one ("duplicate column
            // name"). A ledger in WAL mode and up to date (every open but the first) takes
            // no lock.
            var setUp = readOnly || SQLiteStore.isInWALMode(path) ? nil : try SchemaLock(ledger: path)
            pool = try DatabasePool(path: readOnly && SQLiteStore.isOnReadOnlyMedia(path) ? SQLiteStore.immutableURI(path) : path, configuration: config)
            // Set on the writer after the pool is open: GRDB's WAL set-up runs after
            // prepareDatabase and sets NORMAL, which would silently drop FULL's fsync per commit.
            if !readOnly {
                try pool.writeWithoutTransaction { db in
                    try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
                }
            }
            if readOnly {
                let applied = try pool.read { db in try SQLiteStore.migrator.appliedMigrations(db) }
                guard applied.contains("v1") else { throw LedgerError(.corrupt, "\(path) is not a ward ledger") }
                features = LedgerFeatures(timesFollowEvents: applied.contains("v4"), recordsDelivery: applied.contains("v5"),
                                          recordsAgent: applied.contains("v7"), recordsForks: applied.contains("v8"))
            } else if try !pool.read({ db in try SQLiteStore.migrator.hasCompletedMigrations(db) }) {
                if setUp == nil { setUp = try SchemaLock(ledger: path) }
                try SQLiteStore.migrator.migrate(pool)
            }
            withExtendedLifetime(setUp) {}
        } catch {
            throw Ledger.map(error, doing: "opening \(path)")
        }
        self.features = features
    }

    /// One `BEGIN IMMEDIATE` transaction on the writer, committed when `body` returns and
    /// rolled back when it throws: SQLite has one writer, so every write is serialized with
    /// every other, whatever runs it touches. BEGIN and COMMIT are cached statements: GRDB's
    /// own transaction wrapper parses both texts anew for every commit, on the hot path twice
    /// per tool call.
    func write<T>(runs: [String], _ body: (any SQLConnection) throws -> T) throws -> T {
        try pool.writeWithoutTransaction { db in
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
    }

    func statement(_ body: (any SQLConnection) throws -> Void) throws {
        try pool.writeWithoutTransaction { db in try body(db) }
    }

    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try pool.read { db in try body(db) }
    }

    func lookup<T>(_ body: (any SQLConnection) throws -> T) throws -> T { try read(body) }

    var files: [String] { [path, path + "-wal", path + "-shm", path + "-journal"] }

    /// SQLite's errors as the ledger's; nil for any other error.
    static func map(_ error: any Error, doing what: String) -> LedgerError? {
        guard let db = error as? DatabaseError else { return nil }
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

    static func isDiskFull(_ error: any Error) -> Bool { (error as? DatabaseError)?.resultCode == .SQLITE_FULL }

    /// The writer connection's `PRAGMA synchronous` as SQLite applies it (2 = FULL, 1 = NORMAL):
    /// what each commit really does, whatever was asked for.
    func effectiveSynchronous() throws(LedgerError) -> Int {
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

    /// How many migrations make the current schema.
    static var migrationCount: Int { migrator.migrations.count }

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
