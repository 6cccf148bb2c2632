import WardCore

/// What `Ledger.copy(to:)` moved.
public struct LedgerCopy: Sendable {
    public var runs: [String]
    public var rows: [String: Int]

    public var json: JSONValue {
        .object(["runs": .array(runs.map { .string($0) }), "rows": .object(rows.mapValues { .number(Double($0)) })])
    }
}

extension Ledger {
    /// The tables a copy moves, parents first.
    public static let copiedTables = ["blobs", "runs", "calls", "checkpoints", "journal", "events"]

    /// Copies every run of this ledger into `target` (a SQLite ledger into a PostgreSQL one,
    /// typically), row for row: events keep their bodies and hashes, so every chain verifies
    /// in both. One transaction on the target: a copy that fails leaves nothing there.
    ///
    /// - Throws: `invalid` when a run exists in the target already, or a call of this ledger
    ///   is running under a live owner (its outcome would be recorded here only); `storage`.
    public func copy(to target: Ledger) throws(LedgerError) -> LedgerCopy {
        // Calls of dead owners become in doubt here first: an owner lock means nothing to
        // the target, which would wait on it forever.
        try recover()
        // One snapshot of the source: a supervisor writing meanwhile cannot make the copy's
        // chains and rows disagree.
        let (runs, tables) = try read("reading \(path)") { from -> ([String], [(String, [String], [[SQLValue]])]) in
            if let (run, call) = try from.first("SELECT run_id, call_id FROM calls WHERE status = \(CallState.sql(.running))", { ($0.text(0), $0.text(1)) }) {
                throw LedgerError(.invalid, "call \(call) of run \(run) is running in \(self.path): copy the ledger once it has ended")
            }
            let runs = try from.texts("SELECT run_id FROM runs ORDER BY run_id")
            let tables = try Ledger.copiedTables.map { table in
                let columns = try Ledger.columns(from, table)
                let list = columns.map { "\"\($0)\"" }.joined(separator: ", ")
                return (table, columns, try from.all("SELECT \(list) FROM \(table)") { row in (0..<Int32(columns.count)).map { row.value($0) } })
            }
            return (runs, tables)
        }
        var counts: [String: Int] = [:]
        try target.write("copying \(path) into \(target.path)") { to in
            if let taken = try runs.first(where: { try to.int("SELECT 1 FROM runs WHERE run_id = ?", $0) != nil }) {
                throw LedgerError(.invalid, "run \(taken) exists already in \(target.path): a copy never merges two records of one run")
            }
            for (table, columns, rows) in tables {
                let list = columns.map { "\"\($0)\"" }.joined(separator: ", ")
                let insert = "INSERT INTO \(table) (\(list)) VALUES (\(columns.map { _ in "?" }.joined(separator: ", ")))"
                    + (table == "blobs" ? " ON CONFLICT DO NOTHING" : "")
                for row in rows { try to.run(insert, row) }
                counts[table] = rows.count
            }
        }
        return LedgerCopy(runs: runs, rows: counts)
    }

    /// The columns of `table` as this store has them.
    static func columns(_ db: any SQLConnection, _ table: String) throws -> [String] {
        try db.texts(db.dialect == .sqlite
            ? "SELECT name FROM pragma_table_info(?) ORDER BY cid"
            : "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            table)
    }
}

/// The ledger's store as `ward doctor --ledger` reports it.
public struct LedgerHealth: Sendable {
    /// "sqlite" or "postgresql".
    public var backend: String
    public var location: String
    public var schemaVersion: Int
    /// The schema this ward writes.
    public var expectedSchemaVersion: Int
    /// The server's version; nil for SQLite.
    public var serverVersion: String?
    /// How each commit waits for the disk (`synchronous` or `synchronous_commit`).
    public var durability: String
    /// The server's clock minus this host's, in milliseconds, measured across one round
    /// trip (the round trip's half is the uncertainty); nil for SQLite.
    public var clockSkewMs: Double?
    public var roundTripMs: Double?
    /// Leases: live, and expired but still owning running calls (those are in doubt).
    public var liveOwners: Int?
    public var leaseSeconds: Double?

    public var json: JSONValue {
        var members: [String: JSONValue] = [
            "backend": .string(backend), "location": .string(location), "schemaVersion": .number(Double(schemaVersion)),
            "expectedSchemaVersion": .number(Double(expectedSchemaVersion)), "durability": .string(durability),
        ]
        if let serverVersion { members["serverVersion"] = .string(serverVersion) }
        if let clockSkewMs { members["clockSkewMs"] = .number((clockSkewMs * 10).rounded() / 10) }
        if let roundTripMs { members["roundTripMs"] = .number((roundTripMs * 100).rounded() / 100) }
        if let liveOwners { members["liveOwners"] = .number(Double(liveOwners)) }
        if let leaseSeconds { members["leaseSeconds"] = .number(leaseSeconds) }
        return .object(members)
    }
}

extension Ledger {
    /// The store's connection, schema and clock, for `ward doctor --ledger`.
    public func health() throws(LedgerError) -> LedgerHealth {
        if let server = store as? PostgresStore { return try server.health() }
        let applied = try read("reading the schema") { db in try db.int("SELECT COUNT(*) FROM grdb_migrations") ?? 0 }
        let synchronous = try effectiveSynchronous()
        return LedgerHealth(backend: "sqlite", location: path, schemaVersion: applied, expectedSchemaVersion: SQLiteStore.migrationCount,
                            durability: synchronous == 2 ? "full" : synchronous == 1 ? "normal" : String(synchronous))
    }
}
