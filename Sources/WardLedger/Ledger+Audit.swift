import WardCore

/// One call as `ward ledger list` shows it.
public struct CallSummary: Sendable {
    public var run: String
    public var callId: String
    public var tool: String
    public var effect: String
    public var status: String
    public var attempt: Int
    public var executions: Int
    public var startedAt: String
    public var finishedAt: String?
    public var exitCode: Int?
    public var durationMs: Double?

    public var json: JSONValue {
        .object([
            "run": .string(run), "callId": .string(callId), "tool": .string(tool), "effect": .string(effect),
            "status": .string(status), "attempt": .number(Double(attempt)), "executions": .number(Double(executions)),
            "startedAt": .string(startedAt), "finishedAt": finishedAt.map { .string($0) } ?? .null,
            "exitCode": exitCode.map { .number(Double($0)) } ?? .null, "durationMs": durationMs.map { .number($0) } ?? .null,
        ])
    }
}

/// One event as exported (JSON Lines): stable field names.
public struct EventRecord: Sendable {
    public var run: String
    public var seq: Int
    public var at: String
    public var kind: String
    public var callId: String?
    public var data: JSONValue
    public var prevHash: String
    public var hash: String

    /// `{"run", "seq", "at", "kind", "callId", "data", "prevHash", "hash"}`.
    public var json: JSONValue {
        .object(["run": .string(run), "seq": .number(Double(seq)), "at": .string(at), "kind": .string(kind),
                 "callId": callId.map { .string($0) } ?? .null, "data": data, "prevHash": .string(prevHash), "hash": .string(hash)])
    }
}

/// A run as `ward runs list` shows it.
public struct RunSummary: Sendable {
    public var run: String
    public var createdAt: String
    public var updatedAt: String
    public var attempts: Int
    public var finishedAt: String?
    public var exitStatus: Int?
    public var calls: Int
    public var running: Int
    public var inDoubt: Int
    public var checkpoints: Int
    /// Gated calls not run yet: waiting for a verdict (`awaiting-approval`), or approved and
    /// not asked for since (`approved`: it runs when the agent asks, so the run has work left).
    public var awaitingApproval: Int
    /// Calls done: finished, or settled as executed.
    public var done: Int
    /// The latest checkpoint's sequence number and time.
    public var lastCheckpoint: (seq: Int, at: String)?
    /// The command line `ward run` last started the run's agent with; nil for a run only
    /// `ward serve` or `ward mcp` served (or one from before ward recorded it).
    public var agent: [String]?
    /// Where it ran; nil when none is recorded (or the record is damaged).
    public var place: RunPlace?

    /// The run it was forked from (`Ledger.fork`), nil for any other run.
    public var origin: String?
    /// The origin's checkpoint it was forked at.
    public var forkedAt: Int?

    /// Whether the run may have work left (docs/design.md, *Offer to resume*): its agent never
    /// exited for good (no `run.finish`: ward stopped, was killed, or still serves it), or
    /// last exited with a failure, or calls of it are running, in doubt or awaiting approval.
    public var unfinished: Bool {
        finishedAt == nil || (exitStatus ?? 0) != 0 || running > 0 || inDoubt > 0 || awaitingApproval > 0
    }

    public var json: JSONValue {
        .object(["run": .string(run), "createdAt": .string(createdAt), "updatedAt": .string(updatedAt),
                 "attempts": .number(Double(attempts)), "finishedAt": finishedAt.map { .string($0) } ?? .null,
                 "exitStatus": exitStatus.map { .number(Double($0)) } ?? .null, "calls": .number(Double(calls)),
                 "running": .number(Double(running)), "inDoubt": .number(Double(inDoubt)),
                 "awaitingApproval": .number(Double(awaitingApproval)), "done": .number(Double(done)),
                 "checkpoints": .number(Double(checkpoints)), "unfinished": .bool(unfinished),
                 "lastCheckpoint": lastCheckpoint.map { .object(["seq": .number(Double($0.seq)), "at": .string($0.at)]) } ?? .null,
                 "agent": agent.map { .array($0.map { .string($0) }) } ?? .null,
                 "workspace": place.map { .string($0.workspace) } ?? .null,
                 "origin": origin.map { .string($0) } ?? .null, "forkedAt": forkedAt.map { .number(Double($0)) } ?? .null])
    }
}

extension Ledger {
    /// Calls, newest first, filtered by run, tool, status and start time (ISO 8601 prefix order).
    public func listCalls(run: String? = nil, tool: String? = nil, status: String? = nil, since: String? = nil) throws(LedgerError) -> [CallSummary] {
        try read("listing calls") { db in
            var clauses: [String] = []
            var args: [SQLValue] = []
            if let run { clauses.append("run_id = ?"); args.append(.text(run)) }
            if let tool { clauses.append("tool = ?"); args.append(.text(tool)) }
            // A running call whose process died is reported as what it is (in doubt, when
            // non-idempotent) even by a read-only audit that records nothing.
            let inDoubt = CallStatus.inDoubt.rawValue
            if let status { clauses.append(status == inDoubt ? "status IN (\(CallState.sql(.inDoubt)), \(CallState.sql(.running)))" : "status = ?"); if status != inDoubt { args.append(.text(status)) } }
            if let since { clauses.append("started_at >= ?"); args.append(.text(since)) }
            let whereSQL = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
            return try db.rows("SELECT * FROM calls \(whereSQL) ORDER BY started_at, run_id, call_id",
                                    args).map { row in
                CallSummary(run: row["run_id"], callId: row["call_id"], tool: row["tool"], effect: row["effect"], status: self.effectiveStatus(row),
                            attempt: row["attempt"], executions: row["executions"], startedAt: row["started_at"],
                            finishedAt: row["finished_at"], exitCode: row["exit_code"], durationMs: row["duration_ms"])
            }.filter { status == nil || $0.status == status }
        }
    }

    /// The recorded status, except that a non-idempotent call still `running` under a dead
    /// process is in doubt (recovery records that the next time the ledger is opened for writing).
    func effectiveStatus(_ row: SQLRow) -> String {
        let status: String = row["status"]
        guard status == CallStatus.running.rawValue, caughtInDoubt(effect: row["effect"], owner: row["owner"]) != nil else { return status }
        return CallStatus.inDoubt.rawValue
    }

    /// Everything about one call: its record, arguments, result and events.
    public func showCall(run: String, callId: String) throws(LedgerError) -> JSONValue {
        try read("reading call \(callId)") { db in
            guard let row = try db.row("SELECT * FROM calls WHERE run_id = ? AND call_id = ?", run, callId) else {
                throw LedgerError(.notFound, "no call \(callId) in run \(run)")
            }
            let status = self.effectiveStatus(row)
            var members: [String: JSONValue] = [
                "run": .string(row["run_id"]), "callId": .string(row["call_id"]), "tool": .string(row["tool"]), "effect": .string(row["effect"]),
                "status": .string(status), "arguments": (try? JSONValue.parse(row["args"] as String)) ?? .null,
                "argsHash": .string(row["args_hash"]), "policyHash": .string(row["policy_hash"]), "binaryHash": .string(row["binary_hash"]),
                "attempt": .number(Double(row["attempt"] as Int)), "executions": .number(Double(row["executions"] as Int)),
                "startedAt": .string(row["started_at"]), "finishedAt": (row["finished_at"] as String?).map { .string($0) } ?? .null,
                "owner": (row["owner"] as String?).map { .string($0) } ?? .null,
                "verdict": (row["verdict"] as String?).map { .string($0) } ?? .null, "note": (row["note"] as String?).map { .string($0) } ?? .null,
            ]
            let call = try CallRecord.fetch(db, run: run, callId: callId)
            if let call, call.state.isSettled || call.state == .resolved(.notExecuted) {
                members["result"] = try self.result(db, run: run, call, replayed: false).json
            }
            // What an operator settling it has to go on (kept after it is resolved, for the audit).
            let recorded: String = row["status"]
            if status == CallStatus.inDoubt.rawValue || call?.state.verdict != nil,
               let evidence = try self.inDoubtEvidence(db, run: run, callId: callId, status: recorded, owner: row["owner"], execution: row["executions"]) {
                members["inDoubt"] = evidence
            }
            // What it attempted to change: recorded with its outcome, else the evidence of a
            // crash (its capture file, while no writer has recovered it yet).
            if let trace = try self.trace(db, run: run, callId: callId) {
                members["trace"] = trace.json
            } else if let trace = members["inDoubt"]?.objectValue?["trace"] {
                members["trace"] = trace
            }
            // A gated call: who approved or denied it, when and why (from its event).
            if let verdict = try db.row("""
                SELECT kind, at, body FROM events WHERE run_id = ? AND call_id = ? AND kind IN ('call.approve', 'call.deny') ORDER BY seq DESC LIMIT 1
                """, run, callId) {
                let data = (try? JSONValue.parse(verdict["body"] as String))?.objectValue?["data"]?.objectValue ?? [:]
                members["approval"] = .object([
                    "verdict": .string((verdict["kind"] as String) == "call.approve" ? "approved" : "denied"), "at": .string(verdict["at"]),
                    "by": data["by"] ?? .null, "uid": data["uid"] ?? .null, "note": data["note"] ?? .null,
                ])
            } else if call?.state == .awaitingApproval {
                members["approval"] = .object(["verdict": .null, "approve": .string(self.approvalCommand(run: run, callId: callId, approve: true)),
                                               "deny": .string(self.approvalCommand(run: run, callId: callId, approve: false))])
            }
            let workspace = try db.text("SELECT workspace FROM runs WHERE run_id = ?", run)
            members["workspace"] = workspace.map { .string($0) } ?? .null
            if let fork = try self.origin(db, run: run) {
                members["forkOf"] = .object(["run": .string(fork.run), "checkpoint": .number(Double(fork.checkpoint))])
            }
            members["events"] = .array(try self.events(db, run: run, callId: callId).map(\.json))
            return .object(members)
        }
    }

    /// Events of one run (or all), in chain order.
    public func exportEvents(run: String? = nil) throws(LedgerError) -> [EventRecord] {
        try read("exporting events") { db in try self.events(db, run: run, callId: nil) }
    }

    func events(_ db: any SQLConnection, run: String?, callId: String?) throws -> [EventRecord] {
        var sql = "SELECT * FROM events"
        var args: [SQLValue] = []
        if let run { sql += " WHERE run_id = ?"; args.append(.text(run)) }
        if let callId { sql += " AND call_id = ?"; args.append(.text(callId)) }
        sql += " ORDER BY run_id, seq"
        return try db.rows(sql, args).map { row in
            let body = (try? JSONValue.parse(row["body"] as String))?.objectValue
            return EventRecord(run: row["run_id"], seq: row["seq"], at: row["at"], kind: row["kind"], callId: row["call_id"],
                               data: body?["data"] ?? .null, prevHash: row["prev_hash"], hash: row["hash"])
        }
    }

    /// Every run, oldest first.
    public func listRuns() throws(LedgerError) -> [RunSummary] {
        try read("listing runs") { db in try self.runs(db, agent: nil) }
    }

    /// The unfinished runs (`RunSummary.unfinished`) whose agent `ward run` last started with
    /// the command line `agent` in `workspace` (the same directory: its path and the
    /// filesystem object behind it, as `claimPlace` compares them), most recently active first.
    public func unfinishedRuns(agent: [String], workspace: RunPlace) throws(LedgerError) -> [RunSummary] {
        // A ledger from before v7, audited read-only, records no agent.
        guard recordsAgent else { return [] }
        return try read("finding unfinished runs") { db in
            try self.runs(db, agent: agent).filter { $0.unfinished && $0.place?.isSameWorkspace(as: workspace) == true }
                .sorted { ($0.updatedAt, $0.run) > ($1.updatedAt, $1.run) }
        }
    }

    /// Runs, oldest first; only those last started with `agent` when it is given.
    func runs(_ db: any SQLConnection, agent: [String]?) throws -> [RunSummary] {
        let settled = CallState.outcomes.map { CallState.sql($0) }.joined(separator: ", ")
        return try db.rows("""
            SELECT r.*, (SELECT COUNT(*) FROM calls c WHERE c.run_id = r.run_id) AS calls,
                   (SELECT COUNT(*) FROM calls c WHERE c.run_id = r.run_id AND c.status = \(CallState.sql(.running))) AS running,
                   (SELECT COUNT(*) FROM calls c WHERE c.run_id = r.run_id AND c.status = \(CallState.sql(.inDoubt))) AS in_doubt,
                   (SELECT COUNT(*) FROM calls c WHERE c.run_id = r.run_id AND c.status IN (\(CallState.sql(.awaitingApproval)), \(CallState.sql(.approved)))) AS awaiting_approval,
                   (SELECT COUNT(*) FROM calls c WHERE c.run_id = r.run_id AND (c.status IN (\(settled))
                        OR (c.status = \(CallState.sql(.resolved)) AND c.verdict = \(CallState.sql(.executed))))) AS done,
                   (SELECT \(db.dialect.lines("c.effect || ' ' || COALESCE(c.owner, '')")) FROM calls c
                        WHERE c.run_id = r.run_id AND c.status = \(CallState.sql(.running))) AS running_owners,
                   (SELECT COUNT(*) FROM checkpoints k WHERE k.run_id = r.run_id) AS checkpoints,
                   (SELECT MAX(k.seq) FROM checkpoints k WHERE k.run_id = r.run_id) AS last_checkpoint,
                   (SELECT k.created_at FROM checkpoints k WHERE k.run_id = r.run_id ORDER BY k.seq DESC LIMIT 1) AS last_checkpoint_at
            FROM runs r \(agent == nil ? "" : "WHERE r.agent = ?") ORDER BY r.created_at, r.run_id
            """, agent.map { [.text(Ledger.agentJSON($0).canonical)] } ?? []).map { row in
            // Running calls of dead processes count as in doubt (non-idempotent), as in listCalls.
            let orphaned = ((row["running_owners"] as String?) ?? "").split(separator: "\n").filter { line in
                let parts = line.split(separator: " ", maxSplits: 1)
                return self.caughtInDoubt(effect: parts.first.map(String.init) ?? "", owner: parts.count < 2 ? nil : String(parts[1])) != nil
            }.count
            let agent = (row["agent"] as String?).flatMap { try? JSONValue.parse($0) }.flatMap { value -> [String]? in
                guard case .array(let items) = value else { return nil }
                let args = items.compactMap(\.stringValue)
                return args.count == items.count ? args : nil
            }
            let lastCheckpoint = (row["last_checkpoint"] as Int?).map { (seq: $0, at: (row["last_checkpoint_at"] as String?) ?? "") }
            return RunSummary(run: row["run_id"], createdAt: row["created_at"], updatedAt: row["updated_at"], attempts: row["attempts"],
                              finishedAt: row["finished_at"], exitStatus: row["exit_status"], calls: row["calls"],
                              running: (row["running"] as Int) - orphaned, inDoubt: (row["in_doubt"] as Int) + orphaned,
                              checkpoints: row["checkpoints"], awaitingApproval: row["awaiting_approval"], done: row["done"],
                              lastCheckpoint: lastCheckpoint, agent: agent, place: (try? RunPlace(row, run: row["run_id"])) ?? nil,
                              origin: row["origin_run"], forkedAt: row["origin_seq"])
        }
    }

    /// The run and checkpoint `run` was forked from; nil when it is no fork (or the ledger,
    /// audited read-only, is from before forks).
    public func origin(run: String) throws(LedgerError) -> (run: String, checkpoint: Int)? {
        try read("reading the origin of run \(run)") { db in try self.origin(db, run: run) }
    }

    func origin(_ db: any SQLConnection, run: String) throws -> (run: String, checkpoint: Int)? {
        guard recordsForks, let row = try db.row("SELECT origin_run, origin_seq FROM runs WHERE run_id = ?", run),
              let origin = row["origin_run"] as String?, let seq = row["origin_seq"] as Int? else { return nil }
        return (origin, seq)
    }

    /// Records that the run's agent exited for good with `status`.
    public func finishRun(run: String, exitStatus: Int) throws(LedgerError) {
        try write("finishing run \(run)", run: run) { db in
            let now = Timestamp.now()
            try self.appendEvent(db, run: run, kind: "run.finish", data: ["exitStatus": .number(Double(exitStatus))], at: now)
            try db.execute("UPDATE runs SET finished_at = ?, exit_status = ? WHERE run_id = ?", now, exitStatus, run)
        }
    }

    /// Metadata of a run's checkpoints (sequence, label, size, time, call).
    public func listCheckpoints(run: String) throws(LedgerError) -> [JSONValue] {
        try read("listing checkpoints") { db in
            try db.rows("SELECT seq, label, call_id, created_at, size, state_hash FROM checkpoints WHERE run_id = ? ORDER BY seq", run).map { row in
                .object(["seq": .number(Double(row["seq"] as Int)), "label": (row["label"] as String?).map { .string($0) } ?? .null,
                         "callId": (row["call_id"] as String?).map { .string($0) } ?? .null, "createdAt": .string(row["created_at"]),
                         "size": .number(Double(row["size"] as Int)), "stateHash": .string(row["state_hash"])])
            }
        }
    }

    /// Bytes the ledger uses for checkpoint data: chunk blobs referenced by checkpoints plus
    /// their manifests (what the storage budget measures).
    public func checkpointStorageBytes(run: String) throws(LedgerError) -> Int {
        try read("measuring checkpoint storage") { db in
            let manifests = try db.int("SELECT COALESCE(SUM(LENGTH(chunks)), 0) FROM checkpoints WHERE run_id = ?", run) ?? 0
            var hashes = Set<[UInt8]>()
            for seq in try db.ints("SELECT seq FROM checkpoints WHERE run_id = ?", run) {
                if let (list, _, _) = try self.loadManifest(db, run: run, seq: seq) { hashes.formUnion(list) }
            }
            var chunkBytes = 0
            for hash in hashes { chunkBytes += try db.int("SELECT size FROM blobs WHERE hash = ?", hash) ?? 0 }
            return manifests + chunkBytes
        }
    }
}

extension Ledger {
    /// Results of the calls of `run` that finished (or were resolved `executed`) after
    /// checkpoint `seq` was saved — all finished calls when `seq` is nil: what a resumed agent
    /// has not seen in its state yet.
    public func completedSince(run: String, checkpoint seq: Int?) throws(LedgerError) -> [CallResult] {
        try read("reading completed calls of run \(run)") { db in
            var after = 0
            if let seq {
                for row in try db.rows("SELECT seq, body FROM events WHERE run_id = ? AND kind = 'checkpoint.save' ORDER BY seq DESC", run) {
                    if (try? JSONValue.parse(row["body"] as String))?.objectValue?["data"]?.objectValue?["seq"]?.integer() == seq {
                        after = row["seq"]
                        break
                    }
                }
            }
            let ids = try db.texts("""
                SELECT call_id FROM events WHERE run_id = ? AND seq > ? AND kind IN ('call.finish', 'call.resolve')
                GROUP BY call_id ORDER BY MIN(seq)
                """, run, after)
            return try ids.compactMap { id in
                // A call resolved not-executed is not completed: it is listed apart
                // (`notExecutedCalls`) and runs when asked for.
                guard let call = try CallRecord.fetch(db, run: run, callId: id), call.state.isSettled else { return nil }
                return try self.result(db, run: run, call, replayed: true)
            }
        }
    }

    /// The calls of `run` resolved `not-executed`, in the order they were resolved: an
    /// operator found they never ran, so each runs (once) when the agent asks for it again.
    public func notExecutedCalls(run: String) throws(LedgerError) -> [String] {
        try read("reading the not-executed calls of run \(run)") { db in
            try db.texts("""
                SELECT call_id FROM calls WHERE run_id = ? AND status = \(CallState.sql(.resolved)) AND verdict = \(CallState.sql(.notExecuted))
                ORDER BY finished_at, call_id
                """, run)
        }
    }
}
