import Foundation
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// Who gave a verdict on a gated call: the uid of the process that recorded it and that
/// uid's user name, as the kernel and the password database tell them (docs/design.md,
/// "Approval gates").
public struct Approver: Sendable, Hashable {
    public var uid: UInt32
    public var user: String

    public init(uid: UInt32, user: String) {
        self.uid = uid
        self.user = user
    }

    /// This process's real uid and its name (`uid N` when it has none).
    public static var current: Approver {
        let uid = getuid()
        guard let entry = getpwuid(uid), let name = entry.pointee.pw_name else { return Approver(uid: uid, user: "uid \(uid)") }
        return Approver(uid: uid, user: String(cString: name))
    }
}

/// A gated call waiting for a verdict, as `ward approve` lists it.
public struct PendingApproval: Sendable {
    public var run: String
    public var callId: String
    public var tool: String
    public var effect: String
    public var arguments: JSONValue
    /// When it was recorded.
    public var since: String
    public var attempt: Int

    public var json: JSONValue {
        .object(["run": .string(run), "callId": .string(callId), "tool": .string(tool), "effect": .string(effect),
                 "arguments": arguments, "since": .string(since), "attempt": .number(Double(attempt))])
    }
}

extension Ledger {
    /// The refusal of a call that waits for a verdict, with the commands that give one.
    func awaitingApprovalError(run: String, callId: String, tool: String) -> LedgerError {
        LedgerError(.awaitingApproval, "call \(callId) of run \(run) (tool \(tool)) awaits an operator's approval: "
                    + "`\(approvalCommand(run: run, callId: callId, approve: true))` runs it, "
                    + "`\(approvalCommand(run: run, callId: callId, approve: false))` refuses it; "
                    + "then ask for it again with the same call ID")
    }

    /// `ward approve RUN CALL --ledger PATH` (or `ward deny … --note 'WHY'`), quoted for a shell.
    public func approvalCommand(run: String, callId: String, approve: Bool) -> String {
        let note = approve ? "" : " --note 'WHY'"
        return "ward \(approve ? "approve" : "deny") \(Shell.quote(run)) \(Shell.quote(callId))\(note) --ledger \(Shell.quote(absolutePath))"
    }

    /// This ledger's path as an operator in another directory can use it.
    var absolutePath: String {
        path.hasPrefix("/") ? path : (realpath(path, nil).map { p in defer { free(p) }; return String(cString: p) } ?? path)
    }

    /// Settles a gated call: approved, it runs once when asked for (`call.approve`); denied,
    /// it ends `denied` with `note` as its stderr and is replayed as such (`call.deny`). Both
    /// record who and when in the run's chain, in the transaction that checks the call
    /// still waits: of two verdicts at once, the second is refused and nothing runs twice.
    /// - Parameters:
    ///   - approver: who gives it: by default this process's user.
    ///   - host: the MCP host whose user gave it (`ward mcp` asked through the host):
    ///     recorded `by` as `USER via HOST`, with the uid of the user ward runs as.
    /// - Throws: `notFound` (no such call), `invalid` (not awaiting approval), `storage`.
    public func settleApproval(run: String, callId: String, approve: Bool, note: String, by approver: Approver = .current,
                               via host: String? = nil) throws(LedgerError) {
        try write("\(approve ? "approving" : "denying") call \(callId)", run: run) { db in
            guard let call = try CallRecord.fetch(db, run: run, callId: callId) else {
                throw LedgerError(.notFound, "no call \(callId) in run \(run)")
            }
            guard call.state == .awaitingApproval else {
                throw LedgerError(.invalid, "call \(callId) of run \(run) is \(call.state.status.rawValue), not awaiting approval")
            }
            let now = Timestamp.now()
            let by = host.map { "\(approver.user) via \($0)" } ?? approver.user
            var data: [String: JSONValue] = ["by": .string(by), "uid": .number(Double(approver.uid)), "note": .string(note)]
            if approve {
                try db.run("UPDATE calls SET status = \(CallState.sql(.approved)) WHERE run_id = ? AND call_id = ?", [.text(run), .text(callId)])
                try self.appendEvent(db, run: run, kind: "call.approve", call: callId, data: data, at: now)
            } else {
                let (out, err) = try self.putOutputs(db, [], Array(note.utf8))
                try db.run("""
                    UPDATE calls SET status = \(CallState.sql(.denied)), finished_at = ?, stdout = ?, stderr = ?, exit_code = NULL, signal = NULL,
                        truncated = 0, duration_ms = 0
                    WHERE run_id = ? AND call_id = ?
                    """, [.text(now), .blob(out), .blob(err), .text(run), .text(callId)])
                data["stderr"] = .string(Digest.hex(err))
                try self.appendEvent(db, run: run, kind: "call.deny", call: callId, data: data, at: now)
            }
        }
    }

    /// Waits until a gated call is no longer awaiting approval, or `timeout` seconds pass
    /// (`.infinity`: no limit), or `stop` says to give up (ward is shutting down, the asker left).
    /// - Returns: true once it has a verdict (the caller asks `begin` again), false when the
    ///   wait ran out or was given up.
    public func awaitVerdict(run: String, callId: String, timeout: Double, stop: () -> Bool = { false }) throws(LedgerError) -> Bool {
        let deadline = ContinuousClock.now + .milliseconds(Int(min(max(timeout, 0), 1e9) * 1000))
        var delay = 0.005
        while true {
            // A read of one row: a verdict comes from another process (`ward approve`), so
            // there is nothing in this one to wake on.
            let waiting = try read("reading call \(callId)") { db in
                try CallRecord.fetch(db, run: run, callId: callId)?.state == .awaitingApproval
            }
            if !waiting { return true }
            if ContinuousClock.now >= deadline || stop() { return false }
            Thread.sleep(forTimeInterval: delay)
            delay = min(delay * 2, 0.1)
        }
    }

    /// Gated calls waiting for a verdict, oldest first: of every run, or of one.
    public func pendingApprovals(run: String? = nil) throws(LedgerError) -> [PendingApproval] {
        try read("listing calls awaiting approval") { db in
            var sql = "SELECT run_id, call_id, tool, effect, args, started_at, attempt FROM calls WHERE status = \(CallState.sql(.awaitingApproval))"
            var args: [SQLValue] = []
            if let run {
                sql += " AND run_id = ?"
                args.append(.text(run))
            }
            return try db.all(sql + " ORDER BY started_at, run_id, call_id", args) { r in
                PendingApproval(run: r.text(0), callId: r.text(1), tool: r.text(2), effect: r.text(3),
                                arguments: (try? JSONValue.parse(r.text(4))) ?? .object([:]), since: r.text(5), attempt: r.int(6))
            }
        }
    }
}
