import Foundation
import WardCore

/// The effect class of a tool, as the ledger sees it (mirrors the policy's `effect`).
public enum CallEffect: String, Sendable, CaseIterable {
    case readOnly = "read-only"
    case idempotent
    case nonIdempotent = "non-idempotent"
}

/// Everything `begin` records about a call before its child exists.
public struct BeginRequest: Sendable {
    public var run: String
    public var callId: String
    public var tool: String
    public var effect: CallEffect
    public var arguments: JSONValue
    public var policyHash: String
    /// Path of the tool's executable; its SHA-256 is recorded (cached by inode and mtime).
    public var executable: String
    /// The agent attempt making the call.
    public var attempt: Int
    /// The agent's state, stored in the same transaction as the `running` record.
    public var checkpoint: [UInt8]?
    /// The client may lose the answer (an MCP host whose session ends): the call is recorded
    /// as not delivered (`Delivery`), and a repeat of a non-idempotent one finds it
    /// (`undeliveredCall`) instead of running the tool again.
    public var awaitsDelivery = false
    /// The tool is gated (`approve = true`): a new call is recorded `awaiting-approval` and
    /// runs only once an operator approves it.
    public var gated = false

    public init(run: String, callId: String, tool: String, effect: CallEffect, arguments: JSONValue,
                policyHash: String, executable: String, attempt: Int, checkpoint: [UInt8]? = nil, awaitsDelivery: Bool = false,
                gated: Bool = false) {
        self.run = run
        self.callId = callId
        self.tool = tool
        self.effect = effect
        self.arguments = arguments
        self.policyHash = policyHash
        self.executable = executable
        self.attempt = attempt
        self.checkpoint = checkpoint
        self.awaitsDelivery = awaitsDelivery
        self.gated = gated
    }
}

/// The columns of a `calls` row that decide what happens to a call and make its result.
struct CallRecord {
    var callId: String
    var tool: String
    var effect: CallEffect
    var argsHash: String
    var state: CallState
    var note: String?
    var finishedAt: String?
    var owner: String?
    var startedAt: String
    var attempt: Int
    var executions: Int
    var exitCode: Int?
    var signal: Int?
    var stdoutHash: [UInt8]?
    var stderrHash: [UInt8]?
    var truncated: Bool
    var durationMs: Double

    /// What `begin` and `CallState.step` weigh a request against.
    var decided: (state: CallState, effect: CallEffect, tool: String, argsHash: String) { (state, effect, tool, argsHash) }

    static func fetch(_ db: any SQLConnection, run: String, callId: String) throws -> CallRecord? {
        try db.first("""
            SELECT call_id, tool, effect, args_hash, status, verdict, owner, started_at, attempt, executions, exit_code, signal,
                   stdout, stderr, truncated, duration_ms, note, finished_at
            FROM calls WHERE run_id = ? AND call_id = ?
            """, [.text(run), .text(callId)]) { r in
            guard let effect = CallEffect(rawValue: r.text(2)), let state = CallState(status: r.text(4), verdict: r.optionalText(5)) else {
                throw LedgerError(.corrupt, "call \(callId) of run \(run) has a status (\(r.text(4)), verdict \(r.optionalText(5) ?? "none")) or effect (\(r.text(2))) this ward never records")
            }
            return CallRecord(callId: r.text(0), tool: r.text(1), effect: effect, argsHash: r.text(3), state: state,
                       note: r.optionalText(16), finishedAt: r.optionalText(17), owner: r.optionalText(6),
                       startedAt: r.text(7), attempt: r.int(8), executions: r.int(9),
                       exitCode: r.optionalInt(10), signal: r.optionalInt(11), stdoutHash: r.isNull(12) ? nil : r.blob(12),
                       stderrHash: r.isNull(13) ? nil : r.blob(13), truncated: r.int(14) != 0, durationMs: r.real(15))
        }
    }
}

/// Permission to run a call once: its `running` record is durable.
public struct CallTicket: Sendable, Hashable {
    public let run: String
    public let callId: String
    public let tool: String
    public let attempt: Int
    /// 1 for the first execution, 2+ when an idempotent call interrupted by a crash, or a
    /// call resolved not-executed, runs again.
    public let execution: Int
    /// Sequence number of the checkpoint stored with the call, if any.
    public let checkpointSeq: Int?
    /// The owner lock of the handle that began it: outcomes are recorded only while the
    /// call is still this owner's execution (fencing).
    let owner: String
}

/// What `begin` decided.
public enum BeginDecision: Sendable {
    /// Run it now; then call `finish`.
    case execute(CallTicket)
    /// Its outcome is recorded: return this, byte for byte, marked replayed.
    case replay(CallResult)
}

extension Ledger {
    /// Records a call as `running` before anything runs — or decides that it must not run.
    ///
    /// - Returns: `.execute` with a ticket (the record is durable), or `.replay` with the
    ///   recorded result.
    /// - Throws: `conflict` (same call ID, other tool or arguments), `in-doubt` (a
    ///   non-idempotent call caught by a crash, not yet settled), `in-progress` (another
    ///   live process or thread is running it: see `awaitOutcome`), `storage`.
    public func begin(_ request: BeginRequest) throws(LedgerError) -> BeginDecision {
        let canonical = request.arguments.canonical
        let argsHash = Digest.sha256Hex(canonical.utf8)
        let binaryHash = digests.digest(of: request.executable)
        let me = try ownerToken()
        // One write transaction decides and records. A replay writes nothing, so its commit
        // does not touch the disk; and the writer's page cache is warm, where a reader's is
        // invalidated by every commit.
        var foundInDoubt: String?
        // A gated call recorded now: the refusal that says how to approve it is thrown
        // after the commit.
        var gatedNow = false
        // The stored checkpoint's manifest, for the cache once the transaction commits.
        var storedManifest: ManifestCache.Entry?
        // The execution this transaction hands out, if it does: forgotten unless it commits
        // (its COMMIT may have landed all the same: then the next begin finds the call
        // running under this owner, not handed out, and hands it out).
        var beginning: String?
        var committed = false
        defer { if !committed, let beginning { handedOut.withLock { _ = $0.remove(beginning) } } }
        let decided = try write("recording the start of call \(request.callId)", run: request.run) { db -> BeginDecision? in
            try self.store.requireOwner(db, me)
            let now = Timestamp.now()
            func startExecution(_ execution: Int, recording record: () throws -> Void) throws -> BeginDecision {
                try record()
                var checkpointSeq: Int?
                if let state = request.checkpoint {
                    let stored = try self.storeCheckpoint(db, run: request.run, state: state, label: nil, callId: request.callId, at: now)
                    checkpointSeq = stored.seq
                    storedManifest = stored.manifest
                }
                var data: [String: JSONValue] = [
                    "tool": .string(request.tool), "effect": .string(request.effect.rawValue), "argsHash": .string(argsHash),
                    "policyHash": .string(request.policyHash), "binaryHash": .string(binaryHash),
                    "attempt": .number(Double(request.attempt)), "execution": .number(Double(execution)), "owner": .string(me),
                ]
                if let checkpointSeq { data["checkpoint"] = .number(Double(checkpointSeq)) }
                if request.awaitsDelivery { data["delivery"] = .bool(true) }
                try self.appendEvent(db, run: request.run, kind: "call.begin", call: request.callId, data: data, at: now)
                beginning = Ledger.executionKey(run: request.run, callId: request.callId, execution: execution)
                self.handedOut.withLock { _ = $0.insert(beginning!) }
                return .execute(CallTicket(run: request.run, callId: request.callId, tool: request.tool, attempt: request.attempt,
                                           execution: execution, checkpointSeq: checkpointSeq, owner: me))
            }

            let call = try CallRecord.fetch(db, run: request.run, callId: request.callId)
            switch CallState.step(recorded: call?.decided, tool: request.tool, argsHash: argsHash, owner: { self.ownerState(call?.owner) }) {
            case .start where request.gated:
                // Recorded before anything runs, with the agent's checkpoint, and durable
                // across any crash: the verdict, not a restart, decides whether it runs.
                try db.run("""
                    INSERT INTO calls (run_id, call_id, tool, effect, args_hash, args, policy_hash, binary_hash, status,
                                       attempt, executions, owner, started_at, delivered)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, \(CallState.sql(.awaitingApproval)), ?, 0, NULL, ?, ?)
                    """, [.text(request.run), .text(request.callId), .text(request.tool), .text(request.effect.rawValue), .text(argsHash),
                          .text(canonical), .text(request.policyHash), .text(binaryHash), .int(request.attempt), .text(now),
                          request.awaitsDelivery ? .int(Delivery.awaited.rawValue) : .null])
                var data: [String: JSONValue] = [
                    "tool": .string(request.tool), "effect": .string(request.effect.rawValue), "argsHash": .string(argsHash),
                    "policyHash": .string(request.policyHash), "binaryHash": .string(binaryHash), "attempt": .number(Double(request.attempt)),
                ]
                if let state = request.checkpoint {
                    let stored = try self.storeCheckpoint(db, run: request.run, state: state, label: nil, callId: request.callId, at: now)
                    storedManifest = stored.manifest
                    data["checkpoint"] = .number(Double(stored.seq))
                }
                if request.awaitsDelivery { data["delivery"] = .bool(true) }
                try self.appendEvent(db, run: request.run, kind: "call.gate", call: request.callId, data: data, at: now)
                gatedNow = true
                return nil
            case .awaitApproval:
                throw self.awaitingApprovalError(run: request.run, callId: request.callId, tool: request.tool)
            case .start:
                return try startExecution(1) {
                    try db.run("""
                        INSERT INTO calls (run_id, call_id, tool, effect, args_hash, args, policy_hash, binary_hash, status,
                                           attempt, executions, owner, started_at, delivered)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, \(CallState.sql(.running)), ?, 1, ?, ?, ?)
                        """, [.text(request.run), .text(request.callId), .text(request.tool), .text(request.effect.rawValue), .text(argsHash),
                              .text(canonical), .text(request.policyHash), .text(binaryHash), .int(request.attempt), .text(me), .text(now),
                              request.awaitsDelivery ? .int(Delivery.awaited.rawValue) : .null])
                }
            case .conflict(let otherTool):
                let call = call!
                let what = otherTool ? "tool \(call.tool)" : "different arguments"
                throw LedgerError(.conflict, "call \(request.callId) of run \(request.run) was recorded with \(what) (started \(call.startedAt))")
            case .wait(nil):
                let call = call!
                let execution = Ledger.executionKey(run: request.run, callId: request.callId, execution: call.executions)
                guard call.owner == me, !self.handedOut.withLock({ $0.contains(execution) }) else {
                    throw LedgerError(.inProgress, "call \(request.callId) of run \(request.run) is running (\(call.owner == me ? "in this process" : "in another process"))")
                }
                // Begun by this handle, in a transaction whose COMMIT landed while its answer
                // was lost: no tool was started, so it starts now, as recorded (nothing new).
                let checkpoint = try db.first("""
                    SELECT \(db.dialect.json("body", "data", "checkpoint")) FROM events
                    WHERE run_id = ? AND call_id = ? AND kind = 'call.begin' ORDER BY seq DESC LIMIT 1
                    """, [.text(request.run), .text(request.callId)]) { $0.optionalInt(0) } ?? nil
                beginning = execution
                self.handedOut.withLock { _ = $0.insert(execution) }
                return .execute(CallTicket(run: request.run, callId: request.callId, tool: call.tool, attempt: call.attempt,
                                           execution: call.executions, checkpointSeq: checkpoint, owner: me))
            case .wait(let why?):
                throw LedgerError(.inProgress, "call \(request.callId) of run \(request.run) is running, and whether its owner lives cannot be told: \(why)")
            case .putInDoubt(let fate):
                // Its process died mid-call. Recorded in doubt by this transaction, which
                // must commit: the refusal is thrown after it.
                let call = call!
                try self.markInDoubt(db, run: request.run, callId: request.callId, owner: call.owner, fate: fate, execution: call.executions)
                foundInDoubt = call.startedAt
                return nil
            case .refuseInDoubt:
                throw self.inDoubtError(run: request.run, callId: request.callId, started: call!.startedAt)
            case .runAgain:
                // A process that died mid-call (the tool may run twice), or a verdict that it
                // did not run: the next execution, its earlier outcome and verdict cleared.
                let call = call!
                return try startExecution(call.executions + 1) {
                    try db.run("""
                        UPDATE calls SET status = \(CallState.sql(.running)), executions = ?, owner = ?, attempt = ?, started_at = ?, finished_at = NULL,
                            verdict = NULL, note = NULL, stdout = NULL, stderr = NULL, exit_code = NULL, signal = NULL,
                            delivered = CASE WHEN ? = 1 THEN \(Delivery.awaited.rawValue) ELSE delivered END
                        WHERE run_id = ? AND call_id = ?
                        """, [.int(call.executions + 1), .text(me), .int(request.attempt), .text(now), .int(request.awaitsDelivery ? 1 : 0),
                              .text(request.run), .text(request.callId)])
                }
            case .replay:
                return .replay(try self.result(db, run: request.run, call!, replayed: true))
            }
        }
        committed = true
        if let storedManifest { manifests.committed(request.run, storedManifest) }
        guard let decision = decided else {
            if gatedNow { throw awaitingApprovalError(run: request.run, callId: request.callId, tool: request.tool) }
            removeCapture(run: request.run, callId: request.callId)
            throw inDoubtError(run: request.run, callId: request.callId, started: foundInDoubt ?? "")
        }
        if case .execute = decision, FailPoints.hit(.afterBegin) {
            throw LedgerError(.storage, "fail point after-begin")
        }
        return decision
    }

    /// A non-idempotent call (or a gated call of any effect) of `run` with this tool and these
    /// arguments whose answer the client has not received (`Delivery`): still running, in doubt, or finished with its
    /// answer unread or read without the client going on to anything else. A host that
    /// repeats such a request under a new ID (its retry, or a new session after ward died)
    /// must get this call's outcome, never a second execution.
    /// - Parameter argsHash: `argumentsHash` of the request's arguments.
    public func undeliveredCall(run: String, tool: String, argsHash: String) throws(LedgerError) -> String? {
        try read("looking for an unanswered call of tool \(tool)") { db in
            try db.first("""
                SELECT call_id FROM calls \(self.undelivered) WHERE run_id = ? AND tool = ? AND args_hash = ? AND delivered IN (0, 2)
                    AND (effect = ? OR EXISTS (SELECT 1 FROM events e WHERE e.run_id = calls.run_id AND e.call_id = calls.call_id AND e.kind = 'call.gate'))
                ORDER BY started_at DESC LIMIT 1
                """, [.text(run), .text(tool), .text(argsHash), .text(CallEffect.nonIdempotent.rawValue)]) { $0.text(0) }
        }
    }

    /// The SHA-256 (hex) of arguments' canonical JSON: what `begin` records as `args_hash`.
    public static func argumentsHash(_ arguments: JSONValue) -> String { Digest.sha256Hex(arguments.canonical.utf8) }

    /// The undelivered calls' partial index, named: the ledger runs no ANALYZE, and without
    /// its statistics SQLite's planner takes the primary key's run prefix instead, a scan of
    /// every call of the run on each MCP request (7.7 ms against 12 µs at 100,000 calls).
    /// The queries repeat the index's own condition (`delivered IN (0, 2)`) so it applies.
    /// (PostgreSQL's planner finds it by that condition alone.)
    var undelivered: String { store.dialect == .sqlite ? "INDEXED BY calls_undelivered" : "" }

    /// The highest N among `run`'s call IDs `prefix` + N (N a decimal number), 0 when none.
    public func lastNumber(run: String, prefix: String) throws(LedgerError) -> Int {
        try read("numbering calls \(prefix)…") { db in
            // Of equal prefixes, the longer number is the larger, then the later in byte order.
            try db.first("""
                SELECT substr(call_id, CAST(? AS INTEGER)) FROM calls WHERE run_id = ? AND call_id >= ? AND call_id < ?
                ORDER BY length(call_id) DESC, call_id DESC LIMIT 1
                """, [.int(prefix.utf8.count + 1), .text(run), .text(prefix), .text(prefix + "\u{10FFFF}")]) { Int($0.text(0)) ?? 0 } ?? 0
        }
    }

    /// Records that the client read a finished call's answer (`Delivery.read`). Not yet
    /// delivered: a client that gave up on the request (its timeout) reads the answer and
    /// throws it away, then retries.
    public func markRead(run: String, callId: String) throws(LedgerError) {
        do {
            try statement("recording that the answer to call \(callId) was read") { db in
                try db.run("""
                    UPDATE calls SET delivered = \(Delivery.read.rawValue) WHERE run_id = ? AND call_id = ? AND delivered = \(Delivery.awaited.rawValue)
                        AND status NOT IN (\(CallState.sql(.running)), \(CallState.sql(.inDoubt)))
                    """, [.text(run), .text(callId)])
            }
        } catch {
            throw Ledger.map(error, doing: "recording that the answer to call \(callId) was read")
        }
    }

    /// The client of `run` asks for this tool with these arguments. Unless that repeats a
    /// call whose answer it has not been seen to receive (any effect: running, unread, or
    /// read and not followed by anything else), it has gone on: every answer it had read is
    /// delivered (`call.delivered`), and a repeat of one of those calls from now on runs it
    /// again. A repeat confirms nothing: a host that timed out retries its requests, and a
    /// retry is not going on. A mark lost (ward died before this commit) errs on the safe
    /// side: the repeat gets the recorded answer instead.
    /// - Parameter argsHash: `argumentsHash` of the request's arguments.
    public func confirmDeliveries(run: String, asking tool: String, argsHash: String) throws(LedgerError) {
        let repeats = "SELECT 1 FROM calls \(self.undelivered) WHERE run_id = ? AND tool = ? AND args_hash = ? AND delivered IN (0, 2)"
        let read = "SELECT call_id FROM calls \(self.undelivered) WHERE run_id = ? AND delivered IN (0, 2) AND delivered = \(Delivery.read.rawValue)"
        // Nothing to confirm (the common case) costs a read, not a commit.
        let confirm = try self.read("looking for answers read") { db in
            try db.first(repeats, [.text(run), .text(tool), .text(argsHash)]) { _ in true } == nil && db.first(read, [.text(run)]) { _ in true } == true
        }
        guard confirm else { return }
        try write("recording deliveries of run \(run)", run: run) { db in
            guard try db.first(repeats, [.text(run), .text(tool), .text(argsHash)], { _ in true }) == nil else { return }
            let now = Timestamp.now()
            for callId in try db.all(read, [.text(run)], { $0.text(0) }) {
                try self.appendEvent(db, run: run, kind: "call.delivered", call: callId, data: [:], at: now)
                try db.run("UPDATE calls SET delivered = \(Delivery.delivered.rawValue) WHERE run_id = ? AND call_id = ?", [.text(run), .text(callId)])
            }
        }
    }

    /// What becomes of a recorded call if it is asked for again as it was recorded.
    func step(of call: CallRecord) -> CallStep {
        CallState.step(recorded: call.decided, tool: call.tool, argsHash: call.argsHash, owner: { self.ownerState(call.owner) })
    }

    /// For a call recorded `running` with this effect and owner: how its owner died, when
    /// that puts it in doubt (`CallStep.putInDoubt`); nil while it may still finish or may
    /// simply run again. An effect this ward never records counts as non-idempotent.
    func caughtInDoubt(effect: String, owner: String?) -> String? {
        let effect = CallEffect(rawValue: effect) ?? .nonIdempotent
        guard case .putInDoubt(let fate) = CallState.step(recorded: (.running, effect, "", ""), tool: "", argsHash: "",
                                                          owner: { self.ownerState(owner) }) else { return nil }
        return fate
    }

    func inDoubtError(run: String, callId: String, started: String) -> LedgerError {
        LedgerError(.inDoubt, "call \(callId) of run \(run) was started at \(started) and never finished: \(settleHint(run: run, callId: callId))")
    }

    /// The commands that settle an in-doubt call, as an operator pastes them: quoted, with
    /// this ledger's absolute path, and the note a placeholder to fill in.
    public func resolveCommand(run: String, callId: String, as verdict: Verdict) -> String {
        "ward ledger resolve \(Shell.quote(run)) \(Shell.quote(callId)) --as \(verdict.rawValue) --note 'WHAT YOU CHECKED' --ledger \(Shell.quote(absolutePath))"
    }

    /// `ward run --run-id RUN --ledger LEDGER -- AGENT...`, pasteable as printed: resumes `run`
    /// with the agent `agent` (the run's recorded one; `AGENT...` is left for the operator to
    /// fill in when none is recorded). The run's workspace and policies are recorded.
    public func resumeCommand(run: String, agent: [String]?) -> String {
        "ward run --run-id \(Shell.quote(run)) --ledger \(Shell.quote(absolutePath)) -- \(agent.map { $0.map(Shell.quote).joined(separator: " ") } ?? "AGENT...")"
    }

    /// "settle it with `…executed…` or `…not-executed…`".
    public func settleHint(run: String, callId: String) -> String {
        "settle it with `\(resolveCommand(run: run, callId: callId, as: .executed))` (it ran) or `\(resolveCommand(run: run, callId: callId, as: .notExecuted))` (it did not)"
    }

    /// Records that the process running a call died before its outcome was recorded, with
    /// what is known of it (`InDoubtEvidence`). The caller removes the capture file after
    /// the commit.
    func markInDoubt(_ db: any SQLConnection, run: String, callId: String, owner: String?, fate: String, execution: Int) throws {
        try markInDoubt(db, run: run, callId: callId, execution: execution, data: [
            "reason": .string("the process running it died before the outcome was recorded: \(fate)"),
            "owner": owner.map { .string($0) } ?? .null, "ownerFate": .string(fate),
        ])
    }

    func markInDoubt(_ db: any SQLConnection, run: String, callId: String, execution: Int, data: [String: JSONValue]) throws {
        var data = data
        data["foundBy"] = .string(ProcessIdentity.current.description)
        if let captured = readCapture(run: run, callId: callId, execution: execution) {
            data.merge(try captured.eventData(db, ledger: self)) { _, new in new }
        }
        try db.run("UPDATE calls SET status = \(CallState.sql(.inDoubt)), owner = NULL WHERE run_id = ? AND call_id = ?", [.text(run), .text(callId)])
        try appendEvent(db, run: run, kind: "call.in-doubt", call: callId, data: data)
    }

    /// Gives up on a call whose tool may or may not have started (the process starting it
    /// died mid-start): it becomes in-doubt, as after a crash, for an operator or the tool's
    /// reconcile command to settle. Only a call that is still `running` is changed.
    public func markInDoubt(_ ticket: CallTicket, reason: String) throws(LedgerError) {
        let me = ticket.owner
        try write("marking call \(ticket.callId) in doubt", run: ticket.run) { db in
            // Fenced: only this handle's own execution of the call.
            guard try db.first("SELECT status, owner, executions FROM calls WHERE run_id = ? AND call_id = ?", [.text(ticket.run), .text(ticket.callId)], { r in
                r.text(0) == CallStatus.running.rawValue && r.optionalText(1) == me && r.int(2) == ticket.execution
            }) == true else { return }
            try self.markInDoubt(db, run: ticket.run, callId: ticket.callId, execution: ticket.execution,
                                 data: ["reason": .string(reason), "owner": .string(me), "ownerFate": .string("alive")])
        }
        removeCapture(run: ticket.run, callId: ticket.callId)
    }

    /// Records a new execution of a running call whose start was lost (its zygote died
    /// after taking it: the tool may have started) and whose tool may run twice: the
    /// caller starts it again only after this, so the ledger counts both executions. Fenced
    /// as `finish` is; never for a non-idempotent call (that one is put in doubt).
    public func runAgain(_ ticket: CallTicket) throws(LedgerError) -> CallTicket {
        let execution = ticket.execution + 1
        // Handed out inside the transaction, as `begin` does, and forgotten unless it commits.
        let key = Ledger.executionKey(run: ticket.run, callId: ticket.callId, execution: execution)
        var committed = false
        defer { if !committed { handedOut.withLock { _ = $0.remove(key) } } }
        let again = try write("recording execution \(execution) of call \(ticket.callId)", run: ticket.run) { db in
            guard let row = try db.first("""
                SELECT effect, args_hash, policy_hash, binary_hash FROM calls
                WHERE run_id = ? AND call_id = ? AND status = \(CallState.sql(.running)) AND owner = ? AND executions = ?\(self.store.fence)
                """, [.text(ticket.run), .text(ticket.callId), .text(ticket.owner), .int(ticket.execution)], { r in
                    (effect: r.text(0), argsHash: r.text(1), policyHash: r.text(2), binaryHash: r.text(3))
                }) else {
                throw LedgerError(.fenced, "call \(ticket.callId) of run \(ticket.run) was taken from this process while it started")
            }
            guard let effect = CallEffect(rawValue: row.effect), CallState.running.mayRunAgain(effect: effect) else {
                throw LedgerError(.invalid, "call \(ticket.callId) of run \(ticket.run) is non-idempotent: it is never started again on a guess")
            }
            let now = Timestamp.now()
            try db.run("UPDATE calls SET executions = ?, started_at = ? WHERE run_id = ? AND call_id = ?",
                       [.int(execution), .text(now), .text(ticket.run), .text(ticket.callId)])
            try self.appendEvent(db, run: ticket.run, kind: "call.begin", call: ticket.callId, data: [
                "tool": .string(ticket.tool), "effect": .string(effect.rawValue), "argsHash": .string(row.argsHash),
                "policyHash": .string(row.policyHash), "binaryHash": .string(row.binaryHash),
                "attempt": .number(Double(ticket.attempt)), "execution": .number(Double(execution)), "owner": .string(ticket.owner),
            ], at: now)
            self.handedOut.withLock { _ = $0.insert(key) }
            return CallTicket(run: ticket.run, callId: ticket.callId, tool: ticket.tool, attempt: ticket.attempt,
                              execution: execution, checkpointSeq: ticket.checkpointSeq, owner: ticket.owner)
        }
        committed = true
        handedOut.withLock { _ = $0.remove(Ledger.executionKey(run: ticket.run, callId: ticket.callId, execution: ticket.execution)) }
        return again
    }

    /// A call's execution, as `handedOut` holds it.
    static func executionKey(run: String, callId: String, execution: Int) -> String {
        idempotencyKey(run: run, callId: callId) + "#\(execution)"
    }

    /// Records the outcome durably, then returns the result for the agent. On a storage
    /// failure the commit is retried (with backoff, up to `retryFor` seconds); the call is
    /// never reported done before its outcome is on disk. A `storage` error leaves the call
    /// `running` under this handle, its capture file in place: the caller still holds the
    /// outcome and must commit it again until it lands (the supervisor's `OutcomeRetrier`),
    /// or the call waits, unfinished, for as long as this process lives.
    public func finish(_ ticket: CallTicket, outcome: ToolOutcome, retryFor seconds: Double = 10) throws(LedgerError) -> CallResult {
        let deadline = ContinuousClock.now + .milliseconds(Int(min(max(seconds, 0), 1e9) * 1000))  // never a trap on a huge wait
        var delay = 0.005
        if FailPoints.hit(.beforeFinish) { throw LedgerError(.storage, "fail point before-finish") }
        var recorded: CallResult?
        while recorded == nil {
            do {
                recorded = try write("recording the outcome of call \(ticket.callId)", run: ticket.run) { db in
                    let now = Timestamp.now()
                    let (out, err) = try self.putOutputs(db, outcome.stdout, outcome.stderr)
                    try db.run("""
                        UPDATE calls SET status = ?, finished_at = ?, exit_code = ?, signal = ?, stdout = ?, stderr = ?,
                            truncated = ?, duration_ms = ?, owner = NULL
                        WHERE run_id = ? AND call_id = ? AND status = \(CallState.sql(.running)) AND owner = ? AND executions = ?\(self.store.fence)
                        """, [.text(outcome.status.rawValue), .text(now), SQLValue(outcome.exitCode.map(Int.init)),
                              SQLValue(outcome.signal.map(Int.init)), .blob(out), .blob(err), .int(outcome.truncated ? 1 : 0),
                              .real(outcome.durationMs), .text(ticket.run), .text(ticket.callId), .text(ticket.owner), .int(ticket.execution)])
                    // Fenced: another process decided about this call meanwhile (judged its
                    // owner dead); its decision stands and nothing is recorded over it.
                    guard try db.changes == 1 else {
                        // Or a retry whose first COMMIT landed though its answer was lost (a
                        // server's connection dropped): the outcome recorded is this one.
                        if try self.finishLanded(db, ticket, status: outcome.status, stdout: out) {
                            return CallResult(callId: ticket.callId, tool: ticket.tool, outcome: outcome, replayed: false, attempt: ticket.attempt)
                        }
                        throw LedgerError(.fenced, "call \(ticket.callId) of run \(ticket.run) was taken from this process while it ran; its outcome here is not recorded")
                    }
                    var data: [String: JSONValue] = [
                        "status": .string(outcome.status.rawValue),
                        "exitCode": outcome.exitCode.map { .number(Double($0)) } ?? .null,
                        "signal": outcome.signal.map { .number(Double($0)) } ?? .null,
                        "stdout": .string(Digest.hex(out)), "stderr": .string(Digest.hex(err)),
                        "truncated": .bool(outcome.truncated), "durationMs": .number(outcome.durationMs),
                        "execution": .number(Double(ticket.execution)),
                    ]
                    // What it attempted to change: in the same transaction as the outcome,
                    // and in the chain with it.
                    if let trace = outcome.trace { data["trace"] = trace.json }
                    try self.appendEvent(db, run: ticket.run, kind: "call.finish", call: ticket.callId, data: data, at: now)
                    return CallResult(callId: ticket.callId, tool: ticket.tool, outcome: outcome, replayed: false, attempt: ticket.attempt)
                }
            } catch where error.code == .storage && ContinuousClock.now < deadline {
                Thread.sleep(forTimeInterval: delay)
                delay = min(delay * 2, 0.5)
            }
        }
        // Recorded: what was captured for a crash is not needed.
        removeCapture(run: ticket.run, callId: ticket.callId)
        handedOut.withLock { _ = $0.remove(Ledger.executionKey(run: ticket.run, callId: ticket.callId, execution: ticket.execution)) }
        // After the commit, never inside the retry loop: the outcome is recorded once.
        if FailPoints.hit(.afterFinish) { throw LedgerError(.storage, "fail point after-finish") }
        return recorded!
    }

    /// Whether the call's last event is this execution's `call.finish` with this outcome.
    private func finishLanded(_ db: any SQLConnection, _ ticket: CallTicket, status: CallStatus, stdout: [UInt8]) throws -> Bool {
        guard let body = try db.text("SELECT body FROM events WHERE run_id = ? AND call_id = ? ORDER BY seq DESC LIMIT 1", ticket.run, ticket.callId),
              let event = (try? JSONValue.parse(body))?.objectValue, event["kind"] == .string("call.finish"),
              let data = event["data"]?.objectValue else { return false }
        return data["execution"] == .number(Double(ticket.execution)) && data["status"] == .string(status.rawValue)
            && data["stdout"] == .string(Digest.hex(stdout))
    }

    /// Waits for a call that is `running` elsewhere to get an outcome.
    ///
    /// - Returns: the recorded result (replayed) once there is one.
    /// - Throws: `in-progress` after `timeout` seconds; `in-doubt` if its process died (for a
    ///   non-idempotent call); nothing else runs it meanwhile.
    public func awaitOutcome(run: String, callId: String, timeout: Double) throws(LedgerError) -> CallResult? {
        let deadline = ContinuousClock.now + .milliseconds(Int(min(max(timeout, 0), 1e9) * 1000))  // never a trap on a huge wait
        var delay = 0.001
        while true {
            let found = try read("reading call \(callId)") { db -> (CallRecord, CallResult?)? in
                guard let call = try CallRecord.fetch(db, run: run, callId: callId) else { return nil }
                return (call, call.state.isSettled ? try self.result(db, run: run, call, replayed: true) : nil)
            }
            guard let (call, result) = found else { return nil }
            if let result { return result }
            switch step(of: call) {
            case .wait: break
            case .refuseInDoubt: throw inDoubtError(run: run, callId: callId, started: call.startedAt)
            default: return nil  // its owner died, or a verdict says it did not run: the caller begins again
            }
            if ContinuousClock.now >= deadline {
                throw LedgerError(.inProgress, "call \(callId) of run \(run) is still running after \(timeout) s")
            }
            Thread.sleep(forTimeInterval: delay)
            delay = min(delay * 2, 0.05)
        }
    }

    /// The CallResult of a settled call.
    func result(_ db: any SQLConnection, run: String, _ call: CallRecord, replayed: Bool) throws -> CallResult {
        let out = try call.stdoutHash.map { try blob(db, $0) ?? [] } ?? []
        let err = try call.stderrHash.map { try blob(db, $0) ?? [] } ?? []
        let outcome = ToolOutcome(status: call.state.status, exitCode: call.exitCode.map(Int32.init),
                                  signal: call.signal.map(Int32.init), stdout: out, stderr: err, truncated: call.truncated,
                                  durationMs: call.durationMs)
        var resolution: Resolution?
        if let verdict = call.state.verdict {
            // Who settled it is in the call.resolve event only.
            let by = try db.first("""
                SELECT \(db.dialect.json("body", "data", "by")) FROM events WHERE run_id = ? AND call_id = ? AND kind = 'call.resolve' ORDER BY seq DESC LIMIT 1
                """, [.text(run), .text(call.callId)]) { $0.optionalText(0) } ?? nil
            resolution = Resolution(verdict: verdict, note: call.note ?? "", by: by ?? "operator", at: call.finishedAt ?? "")
        }
        return CallResult(callId: call.callId, tool: call.tool, outcome: outcome, replayed: replayed, attempt: call.attempt, resolution: resolution)
    }

    // MARK: - Recovery

    /// Calls left `running` by a process that died: non-idempotent ones become in-doubt now;
    /// idempotent and read-only ones are run again on their next request (`begin`).
    public func recover() throws(LedgerError) {
        // Capture files listed before the calls are read: a file whose call is not running
        // then was left by a crash after its outcome (or verdict) was recorded.
        let captures = captureFiles()
        let running = try read("scanning running calls") { db in
            try db.all("SELECT run_id, call_id, effect, owner, executions FROM calls WHERE status = \(CallState.sql(.running))") { r in
                (run: r.text(0), call: r.text(1), effect: r.text(2), owner: r.optionalText(3), executions: r.int(4))
            }
        }
        var live = Set<String>(), owners = Set<String>()
        for row in running {
            let owner = row.owner, run = row.run, call = row.call
            guard let fate = caughtInDoubt(effect: row.effect, owner: owner) else {
                live.insert(Ledger.idempotencyKey(run: run, callId: call))
                if let owner { owners.insert(owner) }
                continue
            }
            try write("marking call \(call) in doubt", run: run) { db in
                // Re-check inside the write transaction: another process may have settled it.
                guard try db.first("SELECT status, owner FROM calls WHERE run_id = ? AND call_id = ?", [.text(run), .text(call)], { r in
                    r.text(0) == CallStatus.running.rawValue && r.optionalText(1) == owner
                }) == true else { return }
                try self.markInDoubt(db, run: run, callId: call, owner: owner, fate: fate, execution: row.executions)
            }
            removeCapture(run: run, callId: call)
        }
        for name in captures where !live.contains(name) { unlink(captureDirectory + "/" + name) }
        sweepOwnerLocks(referenced: owners)
    }

    /// An operator's (or a reconcile command's) verdict on an in-doubt call: `executed`, its
    /// result is recorded and replayed from now on; `not-executed`, it may run again under
    /// the same call ID.
    public typealias Verdict = Resolution.Verdict

    /// Settles an in-doubt call. `output` becomes the recorded stdout for `executed` (what a
    /// reconcile command printed; empty for an operator).
    public func resolve(run: String, callId: String, as verdict: Verdict, note: String, by resolver: String = "operator",
                        output: [UInt8] = []) throws(LedgerError) {
        try write("resolving call \(callId)", run: run) { db in
            guard let call = try CallRecord.fetch(db, run: run, callId: callId) else {
                throw LedgerError(.notFound, "no call \(callId) in run \(run)")
            }
            var state = call.state
            // Caught running under a dead owner and not yet recovered: recorded in doubt in
            // this same transaction, so a verdict that fails leaves nothing changed.
            if case .putInDoubt(let fate) = self.step(of: call) {
                try self.markInDoubt(db, run: run, callId: callId, owner: call.owner, fate: fate, execution: call.executions)
                state = .inDoubt
            }
            guard state == .inDoubt else {
                throw LedgerError(.invalid, "call \(callId) of run \(run) is \(state.status.rawValue), not in-doubt")
            }
            let (out, empty) = try self.putOutputs(db, output, [])
            let now = Timestamp.now()
            try db.run("""
                UPDATE calls SET status = \(CallState.sql(.resolved)), verdict = ?, note = ?, finished_at = ?, stdout = ?, stderr = ?,
                    exit_code = NULL, signal = NULL, truncated = 0, owner = NULL
                WHERE run_id = ? AND call_id = ?
                """, [.text(verdict.rawValue), .text(note), .text(now), .blob(out), .blob(empty), .text(run), .text(callId)])
            try self.appendEvent(db, run: run, kind: "call.resolve", call: callId, data: [
                "verdict": .string(verdict.rawValue), "note": .string(note), "by": .string(resolver), "stdout": .string(Digest.hex(out)),
            ], at: now)
        }
        removeCapture(run: run, callId: callId)  // its evidence is in the call.in-doubt event
    }

    /// How `ward run` came to resume an unfinished run it found (rather than one named by
    /// `--run-id`): the operator chose it at the prompt, or `--resume auto|always` did.
    public enum Resumption: String, Sendable, CaseIterable {
        case prompt, auto, always
    }

    /// Starts a new agent attempt of `run` (creating the run); returns its number (1, 2, …).
    ///
    /// - Parameters:
    ///   - agent: the agent's command line (`ward run`), recorded in the `run.attempt` event
    ///     and as the run's `agent`: how `unfinishedRuns(agent:workspace:)` finds the run.
    ///   - resumedBy: recorded as a `run.resumed` event just before the attempt, in the same
    ///     transaction, when `ward run` chose to resume this run.
    public func startAttempt(run: String, agent: [String]? = nil, resumedBy: Resumption? = nil) throws(LedgerError) -> Int {
        try write("starting an attempt of run \(run)", run: run) { db in
            let attempts = try db.first("SELECT attempts FROM runs WHERE run_id = ?", [.text(run)]) { $0.int(0) } ?? 0
            if let resumedBy { try self.appendEvent(db, run: run, kind: "run.resumed", data: ["by": .string(resumedBy.rawValue)]) }
            var data: [String: JSONValue] = ["attempt": .number(Double(attempts + 1))]
            if let agent { data["agent"] = Ledger.agentJSON(agent) }
            try self.appendEvent(db, run: run, kind: "run.attempt", data: data)
            try db.run("UPDATE runs SET attempts = ? WHERE run_id = ?", [.int(attempts + 1), .text(run)])
            if let agent { try db.run("UPDATE runs SET agent = ? WHERE run_id = ?", [.text(Ledger.agentJSON(agent).canonical), .text(run)]) }
            return attempts + 1
        }
    }

    static func agentJSON(_ agent: [String]) -> JSONValue { .array(agent.map { .string($0) }) }
}

/// A call that is in doubt, with what is needed to reconcile it.
public struct InDoubtCall: Sendable {
    public var run: String
    public var callId: String
    public var tool: String
    public var arguments: JSONValue
    public var startedAt: String
    /// Why it is in doubt ("the process running it died before the outcome was recorded: …").
    public var reason: String?
    /// The workspace its run recorded: where to look for its effect.
    public var workspace: String?
    /// How long the tool ran before ward died, when its output was captured.
    public var ranForMs: Int?
    /// `{status, exitCode, signal, durationMs}` when the tool ended before ward died.
    public var toolExit: JSONValue?
    /// The end of what the tool printed on stdout before the crash (at most 200 bytes).
    public var outputTail: [UInt8] = []
}

extension Ledger {
    /// In-doubt calls (after recovery), optionally of one run or one call.
    public func inDoubtCalls(run: String? = nil, callId: String? = nil) throws(LedgerError) -> [InDoubtCall] {
        try recover()
        return try read("listing in-doubt calls") { db in
            // What is known comes from the call's last call.in-doubt event: who died and how,
            // and what its capture file held.
            var sql = """
                SELECT run_id, call_id, tool, args, started_at, (SELECT \(db.dialect.json("e.body", "data")) FROM events e
                    WHERE e.run_id = c.run_id AND e.call_id = c.call_id AND e.kind = 'call.in-doubt' ORDER BY e.seq DESC LIMIT 1) AS data,
                    (SELECT workspace FROM runs r WHERE r.run_id = c.run_id) AS workspace
                FROM calls c WHERE status = \(CallState.sql(.inDoubt))
                """
            var args: [SQLValue] = []
            if let run { sql += " AND run_id = ?"; args.append(.text(run)) }
            if let callId { sql += " AND call_id = ?"; args.append(.text(callId)) }
            let rows = try db.all(sql + " ORDER BY started_at, run_id, call_id", args) { r in
                (run: r.text(0), callId: r.text(1), tool: r.text(2), args: r.text(3), startedAt: r.text(4), data: r.optionalText(5), workspace: r.optionalText(6))
            }
            return try rows.map { row in
                let data = row.data.flatMap { try? JSONValue.parse($0) }?.objectValue ?? [:]
                var call = InDoubtCall(run: row.run, callId: row.callId, tool: row.tool,
                                       arguments: (try? JSONValue.parse(row.args)) ?? .object([:]), startedAt: row.startedAt,
                                       reason: data["reason"]?.stringValue, workspace: row.workspace,
                                       ranForMs: data["ranForMs"]?.integer(Int.self), toolExit: data["toolExit"].flatMap { $0 == .null ? nil : $0 })
                if let hex = data["stdoutSoFar"]?.stringValue, let hash = Digest.bytes(fromHex: hex), let out = try self.blob(db, hash) {
                    call.outputTail = Array(out.suffix(200))
                }
                return call
            }
        }
    }

    /// The idempotency key of a call: stable for a run and call ID across every attempt and
    /// every restart, for tools to pass to APIs that deduplicate on it.
    public static func idempotencyKey(run: String, callId: String) -> String {
        "ward-" + String(Digest.sha256Hex(Array(run.utf8) + [0] + Array(callId.utf8)).prefix(32))
    }
}
