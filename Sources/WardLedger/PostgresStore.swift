import Foundation
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// A ledger on a PostgreSQL server, shared by supervisors on many hosts.
///
/// - Each write transaction takes PostgreSQL advisory locks first: the run's own, exclusive,
///   and a shared one that a change across runs takes exclusive. Writers of one run are
///   serialized as SQLite serializes every writer, so the ledger's decisions (read the
///   call's row, decide, record) hold; writers of different runs commit side by side.
/// - Owners are leases (`owners`): renewed by each handle while it lives, judged by the
///   server's clock, so no host's clock decides another host's fate. An owner whose lease
///   expired is dead: its running calls are in doubt (non-idempotent) or free to run again.
/// - Every outcome is written only while its owner's lease holds, checked in the same
///   statement (`fence`): a supervisor paused past its lease records nothing over what
///   another decided meanwhile, and its token is never renewed again (a new one is made).
final class PostgresStore: LedgerStore {
    let address: PostgresAddress
    let pool: PostgresPool
    let readOnly: Bool
    /// How long an owner lives without renewing its lease.
    let leaseSeconds: Double
    var dialect: SQLDialect { .postgres }
    var features: LedgerFeatures { .all }
    var files: [String] { [] }
    /// A connection of its own for leases and owner look-ups: those never wait for the pool,
    /// which transactions that look owners up may hold.
    private let side: Lock<PostgresLink?> = Lock(nil)

    /// The schema this ward writes; a ledger whose schema is newer is refused.
    static let schemaVersion = 2
    /// Advisory lock keys ("WARD" and its neighbours): schema set-up, all runs, one run.
    static let schemaKey = 0x5741_5244_0001
    static let allRunsKey = 0x5741_5244_0002
    static let runClass: Int32 = 0x5752

    init(url: String, readOnly: Bool, existing: Bool) throws(LedgerError) {
        do {
            address = try PostgresAddress(url: url)
        } catch {
            throw LedgerError(.invalid, "\(error)")
        }
        leaseSeconds = address.leaseSeconds ?? 15
        self.readOnly = readOnly
        pool = PostgresPool(address, size: 4, timeout: address.connectTimeout ?? 10)
        do {
            try pool.with { link in try self.setUp(link, create: !(readOnly || existing)) }
        } catch {
            pool.close()
            throw PostgresStore.map(error, doing: "opening the ledger at \(address)") ?? LedgerError(.storage, "opening the ledger at \(address): \(error)")
        }
    }

    deinit {
        side.withLock { $0?.close() }
        pool.close()
    }

    // MARK: - Schema

    /// Makes or migrates the schema, one supervisor at a time (a session advisory lock: a
    /// supervisor that dies while holding it releases it with its connection).
    private func setUp(_ link: PostgresLink, create: Bool) throws {
        let version = try PostgresStore.version(link)
        if version == PostgresStore.schemaVersion { return }
        if let version, version > PostgresStore.schemaVersion {
            throw LedgerError(.corrupt, "the ledger at \(address) has schema version \(version), newer than this ward's (\(PostgresStore.schemaVersion)): use a newer ward")
        }
        guard create else {
            if version == nil { throw LedgerError(.storage, "no ward ledger at \(address) (the database has no ward schema)") }
            // An older schema, opened to audit: nothing is migrated by a read.
            if readOnly { return }
            throw LedgerError(.storage, "the ledger at \(address) has schema version \(version!), older than this ward's: open it once without --existing to migrate it")
        }
        _ = try link.query("SELECT pg_advisory_lock(?)", [.int(PostgresStore.schemaKey)])
        defer { _ = try? link.query("SELECT pg_advisory_unlock(?)", [.int(PostgresStore.schemaKey)]) }
        // Another supervisor may have set it up while this one waited.
        var current = try PostgresStore.version(link) ?? 0
        while current < PostgresStore.schemaVersion {
            let next = current + 1
            try link.execute(script: "BEGIN; " + PostgresStore.migrations[next - 1] + "; UPDATE ward_schema SET version = \(next); COMMIT;")
            current = next
        }
    }

    /// The schema version recorded in the database; nil when it has no ward schema.
    static func version(_ link: PostgresLink) throws -> Int? {
        let exists = try link.query("SELECT to_regclass('ward_schema') IS NOT NULL").rows.first?.first
        guard exists == .int(1) else { return nil }
        guard case .int(let v) = try link.query("SELECT version FROM ward_schema").rows.first?.first else { return 0 }
        return v
    }

    /// The migrations, in order; each runs in one transaction with the version it sets.
    /// Text columns compare byte for byte (`COLLATE "C"`), as SQLite's do: the order of IDs
    /// and times must not depend on the server's locale.
    static let migrations: [String] = [
        """
        CREATE TABLE IF NOT EXISTS ward_schema (version INTEGER NOT NULL);
        INSERT INTO ward_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM ward_schema);
        CREATE TABLE runs (
            run_id TEXT COLLATE "C" PRIMARY KEY,
            created_at TEXT COLLATE "C" NOT NULL,
            updated_at TEXT COLLATE "C" NOT NULL,
            attempts BIGINT NOT NULL DEFAULT 0,
            finished_at TEXT COLLATE "C",
            exit_status BIGINT,
            event_count BIGINT NOT NULL DEFAULT 0,
            head_hash TEXT COLLATE "C" NOT NULL,
            workspace TEXT COLLATE "C",
            workspace_dev BIGINT,
            workspace_ino BIGINT,
            workspace_born TEXT COLLATE "C",
            policies TEXT COLLATE "C",
            agent TEXT COLLATE "C",
            origin_run TEXT COLLATE "C",
            origin_seq BIGINT
        );
        CREATE INDEX runs_by_agent ON runs(agent) WHERE agent IS NOT NULL;
        CREATE TABLE blobs (
            hash BYTEA PRIMARY KEY,
            size BIGINT NOT NULL,
            data BYTEA NOT NULL
        );
        CREATE TABLE calls (
            run_id TEXT COLLATE "C" NOT NULL,
            call_id TEXT COLLATE "C" NOT NULL,
            tool TEXT COLLATE "C" NOT NULL,
            effect TEXT COLLATE "C" NOT NULL,
            args_hash TEXT COLLATE "C" NOT NULL,
            args TEXT COLLATE "C" NOT NULL,
            policy_hash TEXT COLLATE "C" NOT NULL,
            binary_hash TEXT COLLATE "C" NOT NULL,
            status TEXT COLLATE "C" NOT NULL,
            attempt BIGINT NOT NULL,
            executions BIGINT NOT NULL,
            owner TEXT COLLATE "C",
            started_at TEXT COLLATE "C" NOT NULL,
            finished_at TEXT COLLATE "C",
            exit_code BIGINT,
            signal BIGINT,
            stdout BYTEA,
            stderr BYTEA,
            truncated BIGINT,
            duration_ms DOUBLE PRECISION,
            verdict TEXT COLLATE "C",
            note TEXT COLLATE "C",
            delivered BIGINT,
            PRIMARY KEY (run_id, call_id)
        );
        CREATE INDEX calls_running ON calls(run_id) WHERE status = 'running';
        CREATE INDEX calls_in_doubt ON calls(run_id) WHERE status = 'in-doubt';
        CREATE INDEX calls_undelivered ON calls(run_id, tool, args_hash) WHERE delivered IN (0, 2);
        CREATE INDEX calls_awaiting_approval ON calls(run_id) WHERE status = 'awaiting-approval';
        CREATE TABLE checkpoints (
            run_id TEXT COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL,
            label TEXT COLLATE "C",
            call_id TEXT COLLATE "C",
            created_at TEXT COLLATE "C" NOT NULL,
            size BIGINT NOT NULL,
            state_hash TEXT COLLATE "C" NOT NULL,
            base_seq BIGINT,
            keep BIGINT NOT NULL,
            keep_tail BIGINT NOT NULL,
            chunks BYTEA NOT NULL,
            PRIMARY KEY (run_id, seq)
        );
        CREATE TABLE journal (
            run_id TEXT COLLATE "C" NOT NULL,
            key TEXT COLLATE "C" NOT NULL,
            value TEXT COLLATE "C" NOT NULL,
            recorded_at TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (run_id, key)
        );
        CREATE TABLE events (
            run_id TEXT COLLATE "C" NOT NULL,
            seq BIGINT NOT NULL,
            at TEXT COLLATE "C" NOT NULL,
            kind TEXT COLLATE "C" NOT NULL,
            call_id TEXT COLLATE "C",
            body TEXT COLLATE "C" NOT NULL,
            prev_hash TEXT COLLATE "C" NOT NULL,
            hash TEXT COLLATE "C" NOT NULL,
            PRIMARY KEY (run_id, seq)
        );
        CREATE FUNCTION ward_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'ward ledger events are append-only'; END $$;
        CREATE TRIGGER events_are_append_only_update BEFORE UPDATE ON events
            FOR EACH ROW EXECUTE FUNCTION ward_events_append_only();
        CREATE TRIGGER events_are_append_only_delete BEFORE DELETE ON events
            FOR EACH ROW EXECUTE FUNCTION ward_events_append_only();
        CREATE TRIGGER events_are_append_only_truncate BEFORE TRUNCATE ON events
            FOR EACH STATEMENT EXECUTE FUNCTION ward_events_append_only();
        CREATE FUNCTION ward_json_valid(t TEXT) RETURNS BOOLEAN LANGUAGE plpgsql IMMUTABLE AS $$
            BEGIN PERFORM t::jsonb; RETURN true; EXCEPTION WHEN others THEN RETURN false; END $$;
        CREATE TABLE owners (
            token TEXT COLLATE "C" PRIMARY KEY,
            host TEXT NOT NULL,
            pid BIGINT NOT NULL,
            command TEXT NOT NULL,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            expires_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE run_locks (
            run_id TEXT COLLATE "C" PRIMARY KEY,
            owner TEXT COLLATE "C" NOT NULL,
            since TIMESTAMPTZ NOT NULL DEFAULT now()
        )
        """,
        // v2: an event appended in one round trip instead of three (`Ledger.appendEvent`):
        // the run's head read, the event chained to it and inserted, the head moved. The
        // chain is `Ledger.chain`'s, SHA-256 of the previous hash's bytes and the body's
        // UTF-8, and `p_open` is the body ward made, cut just before its seq (its last
        // member), so the server adds nothing to an event but its number.
        """
        CREATE FUNCTION ward_append_event(p_run TEXT, p_at TEXT, p_kind TEXT, p_call TEXT, p_open TEXT, p_genesis TEXT)
        RETURNS BIGINT LANGUAGE plpgsql AS $$
        DECLARE
            n BIGINT;
            prev TEXT;
            body TEXT;
            h TEXT;
        BEGIN
            SELECT event_count, head_hash INTO n, prev FROM runs WHERE run_id = p_run;
            IF NOT FOUND THEN
                INSERT INTO runs (run_id, created_at, updated_at, attempts, event_count, head_hash)
                    VALUES (p_run, p_at, p_at, 0, 0, p_genesis);
                n := 0;
                prev := p_genesis;
            END IF;
            n := n + 1;
            body := p_open || n::text || '}';
            h := encode(sha256(decode(prev, 'hex') || convert_to(body, 'UTF8')), 'hex');
            INSERT INTO events (run_id, seq, at, kind, call_id, body, prev_hash, hash)
                VALUES (p_run, n, p_at, p_kind, p_call, body, prev, h);
            UPDATE runs SET event_count = n, head_hash = h, updated_at = p_at WHERE run_id = p_run;
            RETURN n;
        END $$;
        -- `Ledger.journalRecord` in one statement (`PostgresStore.journalRecord`): the run's
        -- locks as `lockSQL` takes them, the value inserted unless one is there (first
        -- value wins), its event appended; the value recorded before, else NULL.
        CREATE FUNCTION ward_journal_record(p_run TEXT, p_key TEXT, p_value TEXT, p_at TEXT, p_all BIGINT, p_class BIGINT,
                                            p_lock BIGINT, p_open TEXT, p_genesis TEXT)
        RETURNS TEXT LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock_shared(p_all), pg_advisory_xact_lock(p_class::integer, p_lock::integer);
            INSERT INTO journal (run_id, key, value, recorded_at) VALUES (p_run, p_key, p_value, p_at) ON CONFLICT DO NOTHING;
            IF NOT FOUND THEN
                RETURN (SELECT value FROM journal WHERE run_id = p_run AND key = p_key);
            END IF;
            PERFORM ward_append_event(p_run, p_at, 'journal.record', NULL, p_open, p_genesis);
            RETURN NULL;
        END $$
        """,
    ]

    // MARK: - Transactions

    func write<T>(runs: [String], _ body: (any SQLConnection) throws -> T) throws -> T {
        try transaction("BEGIN", first: PostgresStore.lockSQL(runs), body)
    }

    /// One transaction on a pooled connection: `begin`, then `first`, then `body`; committed
    /// when `body` returns, rolled back when anything throws (on a connection still open).
    ///
    /// A transaction that finds its pooled connection gone before any answer came back (the
    /// server restarted while it sat idle, before the pool could see it close) is tried once
    /// more on a new one: no COMMIT was sent, so nothing of it can have stayed or run twice.
    private func transaction<T>(_ begin: String, first: String? = nil, _ body: (any SQLConnection) throws -> T) throws -> T {
        do {
            return try transactionOnce(begin, first: first, again: true, body)
        } catch is StaleLink {
            // Its idle neighbours went with the server too, unseen as well.
            pool.dropIdle()
            return try transactionOnce(begin, first: first, again: false, body)
        }
    }

    private struct StaleLink: Error {}

    private func transactionOnce<T>(_ begin: String, first: String?, again: Bool, _ body: (any SQLConnection) throws -> T) throws -> T {
        try pool.with { link in
            // BEGIN and the locks in one wait, before the body: it decides under the run's
            // lock (and reads its clock there). Its writes are sent without a wait each: its
            // next read, or the wait before the COMMIT, sees them all answered.
            let session = PostgresSession(link, deferringWrites: true)
            let before = link.answered
            var committing = false
            do {
                try link.enqueue(begin)
                if let first { try link.enqueue(first) }
                try link.flush()
                let value = try body(session)
                // Every statement answered before the COMMIT is sent: one that failed (on
                // the server or in this client) is never followed by a COMMIT.
                try link.flush()
                committing = true
                // A COMMIT of a transaction the server had failed is answered ROLLBACK, not
                // an error: never taken for a commit.
                let ended = try link.query("COMMIT")
                guard ended.command == "COMMIT" else {
                    throw PostgresFailure(sqlState: "25P02", message: "the server rolled the transaction back (\(ended.command))", connectionLost: false)
                }
                return value
            } catch let failure as PostgresFailure where failure.connectionLost && again && !committing && link.answered == before {
                throw StaleLink()
            } catch {
                if !link.isBroken { _ = try? link.query("ROLLBACK") }
                throw error
            }
        }
    }

    /// `Ledger.journalRecord` in one round trip, a statement that commits by itself
    /// (ward_journal_record). `event` is the journal.record event's body cut before its seq
    /// (`Ledger.openEventBody`).
    func journalRecord(run: String, key: String, value: String, at now: String, event: String) throws -> JournalWrite {
        try pool.with { link in
            let result = try link.query("SELECT ward_journal_record(?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                .text(run), .text(key), .text(value), .text(now), .int(PostgresStore.allRunsKey), .int(Int(PostgresStore.runClass)),
                .int(Int(PostgresStore.runKey(run))), .text(event), .text(Digest.genesis),
            ])
            return result.rows.first?.first?.textValue.map(JournalWrite.found) ?? .recorded
        }
    }

    /// The advisory locks of a transaction that writes `runs` (of every run when empty),
    /// taken in one statement, in one order (the runs' keys sorted), so two never deadlock.
    static func lockSQL(_ runs: [String]) -> String {
        if runs.isEmpty { return "SELECT pg_advisory_xact_lock(\(allRunsKey))" }
        let keys = Set(runs.map(runKey)).sorted()
        return "SELECT pg_advisory_xact_lock_shared(\(allRunsKey))" + keys.map { ", pg_advisory_xact_lock(\(runClass), \($0))" }.joined()
    }

    /// A run's lock key: the first 4 bytes of the SHA-256 of its ID (two runs may share
    /// one and are then serialized with each other, which is always safe).
    static func runKey(_ run: String) -> Int32 {
        Int32(bitPattern: Digest.sha256(Array(run.utf8)).prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
    }

    func statement(_ body: (any SQLConnection) throws -> Void) throws {
        try pool.with { link in try body(PostgresSession(link)) }
    }

    /// One snapshot for every statement of the read (verify, audits).
    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", body)
    }

    /// One statement, its own snapshot: one round trip rather than three.
    func lookup<T>(_ body: (any SQLConnection) throws -> T) throws -> T {
        try pool.with { link in try body(PostgresSession(link)) }
    }

    /// Runs `body` on the side connection (made again when it broke).
    func onSide<T>(_ body: (PostgresLink) throws -> T) throws -> T {
        try side.withLock { link in
            if link == nil || link!.isBroken {
                link?.close()
                link = try PostgresLink(address, timeout: address.connectTimeout ?? 10)
            }
            return try body(link!)
        }
    }

    // MARK: - Health

    func health() throws(LedgerError) -> LedgerHealth {
        do {
            return try onSide { link in
                let version = try PostgresStore.version(link) ?? 0
                let settings = try link.query("SELECT current_setting('server_version'), current_setting('synchronous_commit')").rows.first ?? []
                // The server's clock against this host's, halfway through the round trip.
                let before = Date().timeIntervalSince1970
                let start = ContinuousClock.now
                let server = try link.query("SELECT extract(epoch FROM clock_timestamp())::float8").rows.first?.first
                let elapsed = ContinuousClock.now - start
                let roundTrip = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                var skew: Double?
                if case .real(let t) = server { skew = (t - (before + roundTrip / 2)) * 1000 }
                let live = try link.query("SELECT COUNT(*) FROM owners WHERE expires_at > now()").rows.first?.first?.integer
                return LedgerHealth(backend: "postgresql", location: address.description, schemaVersion: version,
                                    expectedSchemaVersion: PostgresStore.schemaVersion, serverVersion: settings.first?.textValue,
                                    durability: "synchronous_commit=" + (settings.count > 1 ? settings[1].textValue ?? "?" : "?"),
                                    clockSkewMs: skew, roundTripMs: roundTrip * 1000, liveOwners: live, leaseSeconds: leaseSeconds)
            }
        } catch {
            throw PostgresStore.map(error, doing: "checking the ledger at \(address)") ?? LedgerError(.storage, "\(error)")
        }
    }

    // MARK: - Errors

    /// PostgreSQL's errors as the ledger's; nil for any other error.
    static func map(_ error: any Error, doing what: String) -> LedgerError? {
        if let error = error as? LedgerError { return error }
        guard let failure = error as? PostgresFailure else { return nil }
        if failure.connectionLost {
            return LedgerError(.storage, "\(what): the ledger's server cannot be reached (\(failure.message))", underlying: failure)
        }
        switch failure.sqlState ?? "" {
        case "53100":
            return LedgerError(.storage, "\(what): the server's disk is full", underlying: failure)
        case "40001", "40P01", "55P03":
            return LedgerError(.storage, "\(what): another supervisor holds what it needs; try again (\(failure.message))", underlying: failure)
        case let state where state.hasPrefix("57P") || state.hasPrefix("08"):
            return LedgerError(.storage, "\(what): the ledger's server went away (\(failure.message))", underlying: failure)
        default:
            return LedgerError(.storage, "\(what): \(failure)", underlying: failure)
        }
    }
}

/// A PostgreSQL connection as the ledger's statements see it.
///
/// In a transaction (`deferringWrites`) a statement run for its effect alone is enqueued
/// (`PostgresLink.enqueue`), not waited for: its failure surfaces at the next read,
/// `changes` or the COMMIT, which rolls the transaction back whole, so nothing of it stays.
final class PostgresSession: SQLConnection {
    let link: PostgresLink
    private let deferringWrites: Bool
    var dialect: SQLDialect { .postgres }

    init(_ link: PostgresLink, deferringWrites: Bool = false) {
        self.link = link
        self.deferringWrites = deferringWrites
    }

    var changes: Int {
        get throws {
            try link.flush()
            return link.lastAffected
        }
    }

    private func query(_ sql: String, _ values: [SQLValue]) throws -> PostgresResult { try link.query(sql, values) }

    func run(_ sql: String, _ values: [SQLValue]) throws {
        if deferringWrites { try link.enqueue(sql, values) } else { _ = try query(sql, values) }
    }

    func first<T>(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> T) throws -> T? {
        let result = try query(sql, values)
        return try result.rows.first.map { try body(SQLRow(values: $0, columns: result.columns)) }
    }

    func all<T>(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> T) throws -> [T] {
        let result = try query(sql, values)
        return try result.rows.map { try body(SQLRow(values: $0, columns: result.columns)) }
    }

    func each(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> Void) throws {
        let result = try query(sql, values)
        for row in result.rows { try body(SQLRow(values: row, columns: result.columns)) }
    }
}
