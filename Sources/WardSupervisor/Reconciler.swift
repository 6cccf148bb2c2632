import Foundation
import WardCore
import WardLedger
import WardSandbox

/// Settles in-doubt calls with their tool's `reconcile` command: run in the tool's own
/// sandbox with the call's arguments, its WARD_* variables and `WARD_RECONCILE=1`. Exit 0:
/// the call was executed (its stdout becomes the recorded result). Exit 3: it was not (it
/// may run again). Anything else, or no reconcile command: it stays in doubt.
public struct Reconciler: Sendable {
    public let ledger: Ledger
    public let sandbox: Sandbox

    public init(ledger: Ledger, sandbox: Sandbox) {
        self.ledger = ledger
        self.sandbox = sandbox
    }

    /// What reconciling one call found.
    public enum Finding: Sendable, Equatable {
        case executed
        case notExecuted
        /// Still in doubt, and why.
        case undecided(String)
    }

    /// How much of an undecided reconcile command's stderr its reason quotes (the end: a
    /// program's last words say why it gave up).
    static let reasonLimit = 1000

    /// The environment every tool process of a call gets (docs/design.md, *What a tool receives*).
    public static func environment(run: String, callId: String) -> [(String, String)] {
        [("WARD_RUN_ID", run), ("WARD_CALL_ID", callId), ("WARD_IDEMPOTENCY_KEY", Ledger.idempotencyKey(run: run, callId: callId))]
    }

    /// Tries to settle one in-doubt call. One reconcile per call at a time, across
    /// processes: a second request waits, then finds the first one's verdict.
    public func reconcile(_ call: InDoubtCall) throws(LedgerError) -> Finding {
        try ledger.withReconcileLock(run: call.run, callId: call.callId) { () throws(LedgerError) -> Finding in
            switch try ledger.state(run: call.run, callId: call.callId) {
            case .inDoubt?: return try reconcileNow(call)
            case .resolved(.executed)?: return .executed
            case nil: return .undecided("call \(call.callId) of run \(call.run) is no longer in the ledger")
            default: return .notExecuted  // settled not-executed meanwhile (and maybe running again)
            }
        }
    }

    private func reconcileNow(_ call: InDoubtCall) throws(LedgerError) -> Finding {
        guard let policy = sandbox.policies.tools[call.tool] else { return .undecided("tool \(call.tool) is no longer in the policies") }
        guard policy.reconcile != nil else { return .undecided("tool \(call.tool) has no reconcile command") }
        let outcome: ToolOutcome
        do {
            outcome = try sandbox.run(tool: call.tool, arguments: call.arguments,
                                      environment: Reconciler.environment(run: call.run, callId: call.callId), reconcile: true)
        } catch {
            return .undecided("the reconcile command could not start: \(error)")
        }
        switch (outcome.status, outcome.exitCode) {
        case (.succeeded, 0?):
            try ledger.resolve(run: call.run, callId: call.callId, as: .executed,
                               note: "reconcile command exited 0", by: "reconcile", output: outcome.stdout)
            return .executed
        case (.failed, 3?):
            try ledger.resolve(run: call.run, callId: call.callId, as: .notExecuted, note: "reconcile command exited 3", by: "reconcile")
            return .notExecuted
        default:
            let detail = outcome.exitCode.map { "exited \($0)" } ?? outcome.status.rawValue
            // Its stderr is its reason ("cannot tell whether `git push` happened…"): the
            // operator who must settle the call by hand reads it in `ward ledger reconcile`.
            let said = String(decoding: outcome.stderr.suffix(Reconciler.reasonLimit), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return .undecided("the reconcile command \(detail)" + (said.isEmpty ? "" : ": " + said))
        }
    }

    /// Tries every in-doubt call (of one run, when given).
    public func reconcileAll(run: String? = nil, callId: String? = nil) throws(LedgerError) -> [(InDoubtCall, Finding)] {
        var out: [(InDoubtCall, Finding)] = []
        for call in try ledger.inDoubtCalls(run: run, callId: callId) { out.append((call, try reconcile(call))) }
        return out
    }
}
