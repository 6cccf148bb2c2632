import WardCore
import WardLedger
import WardPolicy

/// Calls that ward records but does not run itself: `ward mcp proxy` forwards each to a
/// sandboxed MCP server. The ledger's rules are the same as for a tool ward runs: the
/// `running` record is durable before the call leaves ward, the outcome is recorded before
/// the caller sees it, a finished call is replayed, and a non-idempotent call that got no
/// answer is in doubt, never sent again on a guess.
extension Supervisor {
    /// What became of a forwarded call.
    public enum Forwarded: Sendable {
        /// It was answered: the answer, as the outcome to record.
        case answered(ToolOutcome)
        /// No answer came (the server died, was killed, or the call timed out): `status` and
        /// `reason` are recorded for a call that may be repeated; a non-idempotent one is put
        /// in doubt instead.
        case unanswered(status: CallStatus, reason: String, durationMs: Double)
        /// It never left ward (the server had stopped, and none could be started): nothing
        /// ran. Settled as not executed, so that asking again runs it.
        case notSent(reason: String)
    }

    /// Records a call's start, runs `forward` (unless the ledger replays it or refuses it),
    /// and records what came back.
    /// - Parameters:
    ///   - tool: the name recorded (`SERVER/TOOL` for a proxied call).
    ///   - executable: the program whose hash is recorded with the call.
    ///   - forward: sends the call on, once its `running` record is durable.
    /// - Throws: `in-doubt` when it must not run (or just became in doubt), the ledger's
    ///   other refusals (`conflict`, `storage`).
    public func call(forwarding tool: String, effect: Effect, timeoutMilliseconds: UInt64, arguments: JSONValue, callId: String,
                     policyHash: String, executable: String, awaitsDelivery: Bool, gated: Bool = false,
                     forward: (CallTicket) -> Forwarded) throws(RPCError) -> CallResult {
        let request = BeginRequest(run: runID, callId: callId, tool: tool, effect: CallEffect(effect), arguments: arguments,
                                   policyHash: policyHash, executable: executable, attempt: attempt, awaitsDelivery: awaitsDelivery,
                                   gated: gated)
        let ticket: CallTicket
        switch try begin(request, timeoutMilliseconds: timeoutMilliseconds, reconcilable: false, launch: nil).0 {
        case .replay(let result): return result
        case .execute(let t): ticket = t
        }
        switch forward(ticket) {
        case .answered(let outcome):
            return try record(ticket, outcome)
        case .unanswered(_, let reason, _) where effect == .nonIdempotent:
            // It may have done its work: never sent again on a guess (docs/design.md, "A
            // non-idempotent call never runs twice").
            try ledgerCall { () throws(LedgerError) in try ledger.markInDoubt(ticket, reason: reason) }
            throw RPCError(.inDoubt, "call \(callId) of run \(runID): \(reason); \(ledger.settleHint(run: runID, callId: callId))")
        case .notSent(let reason):
            try ledgerCall { () throws(LedgerError) in
                try ledger.markInDoubt(ticket, reason: "not sent: \(reason)")
                try ledger.resolve(run: runID, callId: callId, as: .notExecuted, note: "never sent: \(reason)", by: "ward")
            }
            throw RPCError(.internal, "call \(callId) was not sent (\(reason)): nothing ran; ask again")
        case .unanswered(let status, let reason, let durationMs):
            return try record(ticket, ToolOutcome(status: status, exitCode: nil, signal: nil, stdout: [], stderr: Array("ward: \(reason)\n".utf8),
                                                  truncated: false, durationMs: durationMs))
        }
    }
}
