import Foundation

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

    /// The file of a SQLite ledger; a PostgreSQL ledger's URL without its password.
    public let path: String
    let store: any LedgerStore
    /// Every file and directory of this ledger on this host: the database and SQLite's side
    /// files, the owner locks and the captured outputs. Whoever can change one can change
    /// the record.
    public var files: [String] { store.files + [lockDirectory, captureDirectory] }
    /// Where this handle keeps what stays on this host (`lockDirectory`, `captureDirectory`):
    /// beside a SQLite ledger's file; for a server's ledger, a directory of `.ward`.
    let localBase: String
    /// What makes this handle the owner of the calls it begins (made at the first).
    let owner = Lock<(any LedgerOwner)?>(nil)
    let ownerLostHandlers = Lock<[@Sendable () -> Void]>([])
    let digests = FileDigests()
    let manifests = ManifestCache()
    /// The executions this handle has begun and not yet finished, by `Ledger.executionKey`,
    /// each added inside its begin's transaction: a call `running` under this handle's
    /// owner that is not here was begun by a transaction whose COMMIT landed while its answer
    /// was lost (a server's connection dropped), so its tool never started.
    let handedOut = Lock<Set<String>>([])
    /// Damaged checkpoints whose `checkpoint.damaged` event is known to be committed.
    let reportedDamage = Lock<Set<DamageKey>>([])
    /// Whether rows carry their events' times (migration v4): an audit of an older ledger,
    /// opened read-only and so not migrated, cannot hold the times to the events.
    var timesFollowEvents: Bool { store.features.timesFollowEvents }
    /// Whether calls record the delivery of their answers (migration v5): a ledger from
    /// before it has no such column to audit.
    var recordsDelivery: Bool { store.features.recordsDelivery }
    /// Whether runs record their agent's command line (migration v7).
    var recordsAgent: Bool { store.features.recordsAgent }
    /// Whether runs record the run they were forked from (migration v8).
    var recordsForks: Bool { store.features.recordsForks }

    /// Opens (creating when missing) the ledger at `path`, migrates its schema and recovers
    /// calls left `running` by processes that died.
    ///
    /// - Parameters:
    ///   - busyTimeout: how long to wait for a lock held by another process before failing
    ///     with `storage`.
    ///   - readOnly: for audits: nothing is written, not even recovery (the file must exist).
    ///   - existing: the file must exist (commands that settle what a ledger holds never
    ///     make an empty one, e.g. when run from another directory without `--ledger`).
    ///   - recover: recover dead owners' calls now; a command that may fail afterwards
    ///     opens without, so that failing it changes nothing.
    /// - Throws: `corrupt` when the file is not a ward ledger or is damaged (the file is left
    ///   untouched), `storage` when it cannot be opened or written.
    ///
    /// `path` may be a PostgreSQL URL (`postgres://USER@HOST[:PORT]/DB`, `Ledger.isServerURL`):
    /// then the ledger lives on that server, shared by supervisors on many hosts
    /// (`PostgresStore`), and `durability` is the server's (`synchronous_commit`).
    public init(path: String, durability: Durability = .full, busyTimeout: Double = 5,
                readOnly: Bool = false, existing: Bool = false, recover: Bool = true) throws(LedgerError) {
        if Ledger.isServerURL(path) {
            let server = try PostgresStore(url: path, readOnly: readOnly, existing: existing)
            store = server
            self.path = server.address.description
            // Outputs captured while calls run stay on the host that runs them.
            localBase = FileManager.default.currentDirectoryPath + "/.ward/postgres-"
                + String(Digest.sha256Hex(Array(server.address.description.utf8)).prefix(16))
        } else {
            self.path = path
            localBase = path
            store = try SQLiteStore(path: path, durability: durability, busyTimeout: busyTimeout, readOnly: readOnly, existing: existing)
        }
        if !readOnly && recover { try self.recover() }
    }

    /// Whether `text` names a ledger on a PostgreSQL server rather than a file.
    public static func isServerURL(_ text: String) -> Bool { PostgresAddress.isURL(text) }

    /// The ledger's server and schema as `ward doctor` reports them; nil for a SQLite ledger.
    public var isOnServer: Bool { store is PostgresStore }

    /// The writer connection's `PRAGMA synchronous` as SQLite applies it (2 = FULL, 1 = NORMAL):
    /// what each commit really does, whatever was asked for.
    public func effectiveSynchronous() throws(LedgerError) -> Int {
        guard let sqlite = store as? SQLiteStore else { return -1 }
        return try sqlite.effectiveSynchronous()
    }

    // MARK: - Events

    /// Appends an event to `run`'s chain inside the caller's transaction. The body is the RFC
    /// 8785 JSON of {run, seq, at, kind, call?, data}; it is what the hash covers. A row the
    /// event changes is stamped with the event's own time (`now`), so that verify can hold
    /// the row's time to it.
    @discardableResult
    func appendEvent(_ db: any SQLConnection, run: String, kind: String, call: String? = nil, data: [String: JSONValue], at now: String = Timestamp.now()) throws -> Int {
        if db.dialect == .postgres {
            // One round trip, not three: the server numbers and chains the body made here
            // (ward_append_event).
            let open = Ledger.openEventBody(run: run, at: now, kind: kind, call: call, data: data)
            guard let seq = try db.first("SELECT ward_append_event(?, ?, ?, ?, ?, ?)",
                                         [.text(run), .text(now), .text(kind), SQLValue(call), .text(open), .text(Digest.genesis)], { $0.int(0) })
            else { throw LedgerError(.storage, "appending an event to run \(run): the server returned no sequence number") }
            return seq
        }
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

    /// An event's body cut just before its seq, for a server that numbers it: `seq` is the
    /// body's last member (its keys are sorted), so the body is this, the number and `}`.
    static func openEventBody(run: String, at: String, kind: String, call: String?, data: [String: JSONValue]) -> String {
        let body = eventBody(run: run, seq: 0, at: at, kind: kind, call: call, data: data)
        precondition(body.hasSuffix(",\"seq\":0}"), "an event body whose last member is not seq")
        return String(body.dropLast(2))
    }

    static func chain(prev: String, body: String) -> String {
        Digest.sha256Hex((Digest.bytes(fromHex: prev) ?? []) + Array(body.utf8))
    }

    /// Stores a call's two outputs (`putBlobs`); returns their hashes.
    func putOutputs(_ db: any SQLConnection, _ stdout: [UInt8], _ stderr: [UInt8]) throws -> (stdout: [UInt8], stderr: [UInt8]) {
        let hashes = try putBlobs(db, [stdout, stderr])
        return (hashes[0], hashes[1])
    }

    /// Stores each of `contents` once under its SHA-256, in one statement per 333 (999
    /// values, what any SQLite build binds) rather than one each; returns the hashes in the order given. Inserted in the order
    /// of their hashes: two transactions of two runs storing the same blobs then wait on
    /// each other in one order, never in a cycle (a deadlock PostgreSQL would end by
    /// failing one of them).
    @discardableResult
    func putBlobs(_ db: any SQLConnection, _ contents: [[UInt8]]) throws -> [[UInt8]] {
        let hashes = contents.map { Digest.sha256($0) }
        var seen = Set<[UInt8]>()
        let rows = zip(hashes, contents).filter { seen.insert($0.0).inserted }.sorted { $0.0.lexicographicallyPrecedes($1.0) }
        for start in stride(from: 0, to: rows.count, by: 333) {
            let batch = rows[start..<min(start + 333, rows.count)]
            let values = Array(repeating: "(?, ?, ?)", count: batch.count).joined(separator: ", ")
            try db.run("INSERT INTO blobs (hash, size, data) VALUES \(values) ON CONFLICT DO NOTHING",
                       batch.flatMap { [SQLValue.blob($0.0), .int($0.1.count), .blob($0.1)] })
        }
        return hashes
    }

    func blob(_ db: any SQLConnection, _ hash: [UInt8]) throws -> [UInt8]? {
        try db.first("SELECT data FROM blobs WHERE hash = ?", [.blob(hash)]) { $0.blob(0) }
    }

    // MARK: - Access with error mapping

    /// One write transaction, committed when `body` returns and rolled back when it throws,
    /// serialized with every other writer of `run` (in any process, on any host).
    func write<T>(_ what: String, run: String, _ body: (any SQLConnection) throws -> T) throws(LedgerError) -> T {
        try write(what, runs: [run], body)
    }

    /// `runs` empty: serialized with every writer of every run (a change across runs).
    func write<T>(_ what: String, runs: [String] = [], _ body: (any SQLConnection) throws -> T) throws(LedgerError) -> T {
        do {
            return try store.write(runs: runs, body)
        } catch let error as LedgerError { throw error } catch {
            let mapped = Ledger.map(error, doing: what)
            // Rolled back whole: the caller (an agent, an operator) learns that no part of
            // it stayed, so repeating it is safe.
            if SQLiteStore.isDiskFull(error) {
                throw LedgerError(.storage, mapped.message + " (nothing of it was recorded)", underlying: mapped.underlying)
            }
            throw mapped
        }
    }

    /// One statement outside a transaction (a mark that no decision depends on).
    func statement(_ what: String, _ body: (any SQLConnection) throws -> Void) throws(LedgerError) {
        do { try store.statement(body) } catch let error as LedgerError { throw error } catch {
            throw Ledger.map(error, doing: what)
        }
    }

    func read<T>(_ what: String, _ body: (any SQLConnection) throws -> T) throws(LedgerError) -> T {
        do { return try store.read(body) } catch let error as LedgerError { throw error } catch {
            throw Ledger.map(error, doing: what)
        }
    }

    /// A read whose `body` runs one statement (`LedgerStore.lookup`).
    func lookup<T>(_ what: String, _ body: (any SQLConnection) throws -> T) throws(LedgerError) -> T {
        do { return try store.lookup(body) } catch let error as LedgerError { throw error } catch {
            throw Ledger.map(error, doing: what)
        }
    }

    static func map(_ error: any Error, doing what: String) -> LedgerError {
        if let error = error as? LedgerError { return error }
        return SQLiteStore.map(error, doing: what) ?? PostgresStore.map(error, doing: what) ?? LedgerError(.storage, "\(what): \(error)")
    }
}

/// What PostgreSQL's one-statement `journal.record` did: recorded the value, or found one
/// recorded before (its text).
enum JournalWrite {
    case recorded
    case found(String)
}

/// What a ledger's schema records, for audits of ledgers older than some migrations.
struct LedgerFeatures: Sendable {
    var timesFollowEvents: Bool
    var recordsDelivery: Bool
    var recordsAgent: Bool
    var recordsForks: Bool

    static let all = LedgerFeatures(timesFollowEvents: true, recordsDelivery: true, recordsAgent: true, recordsForks: true)
}

/// Where a ledger's records live: the SQLite file of one host, or a PostgreSQL database that
/// supervisors on many hosts share. The ledger's decisions are made once, in `Ledger`, on
/// the statements of either (`SQLConnection`).
protocol LedgerStore: Sendable {
    var dialect: SQLDialect { get }
    var readOnly: Bool { get }
    var features: LedgerFeatures { get }
    /// The files of the store on this host (none for a server).
    var files: [String] { get }
    /// One transaction serialized with every other writer of `runs` (of every run when empty).
    func write<T>(runs: [String], _ body: (any SQLConnection) throws -> T) throws -> T
    /// Makes the identity a handle runs calls under (`LedgerOwner`).
    func makeOwner(onLost: @escaping @Sendable () -> Void) throws(LedgerError) -> any LedgerOwner
    /// Whether the owner `token` (not this handle's) is alive.
    func ownerState(_ token: String) -> OwnerState
    /// Forgets owners that are gone, but those in `keep`.
    func sweepOwners(keeping keep: Set<String>)
    /// One supervisor per run (`Ledger.lockRun`); `owner` is the caller's identity.
    func lockRun(_ run: String, owner: String) throws(LedgerError) -> RunLock
    /// What an outcome's UPDATE of `calls` adds to its WHERE to be fenced by its owner's
    /// liveness as the store judges it ("" where the store's owners cannot outlive it).
    var fence: String { get }
    /// Throws, inside a write transaction, when `token` no longer owns calls (nothing for
    /// owners the store cannot outlive).
    func requireOwner(_ db: any SQLConnection, _ token: String) throws
    /// Runs `body` holding the lock `name`, waiting for it.
    func withLock<T>(named name: String, _ body: () throws(LedgerError) -> T) throws(LedgerError) -> T
    /// Statements outside a transaction.
    func statement(_ body: (any SQLConnection) throws -> Void) throws
    /// A consistent read.
    func read<T>(_ body: (any SQLConnection) throws -> T) throws -> T
    /// A read of one statement, which is consistent by itself: no transaction around it
    /// where one costs round trips (PostgreSQL).
    func lookup<T>(_ body: (any SQLConnection) throws -> T) throws -> T
}
