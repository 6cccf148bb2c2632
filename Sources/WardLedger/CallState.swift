import WardCore

/// Where a recorded call is, and the only moves between its states (docs/design.md, "Call
/// states"). The ledger stores it in two columns of `calls`, `status` and `verdict`
/// (`init(status:verdict:)`, `status`, `verdict`); `begin`, `finish`, recovery, `resolve`,
/// the audits and `verify` all decide through this type, so no other code spells a status.
///
///     (none) ──gate──▶ awaiting-approval ──approve──▶ approved ──begin──▶ running
///                              └──deny──▶ finished(denied)                 replayed
///
///     (none) ──begin──▶ running ──finish──▶ finished(outcome)       replayed
///                          │  ▲
///      owner died,         │  └──begin── owner died, the tool may run again
///      non-idempotent ─────┤              (read-only, idempotent)
///                          ▼
///                       in-doubt ──resolve──▶ resolved(executed)      replayed
///                                        └──▶ resolved(not-executed) ──begin──▶ running
public enum CallState: Hashable, Sendable {
    /// Begun, its outcome not recorded: owned by the ledger handle that began it.
    case running
    /// The tool ran to an outcome (succeeded, failed, timed-out, killed, denied).
    case finished(CallStatus)
    /// A non-idempotent call whose owner died before its outcome was recorded: it may or
    /// may not have had its effect, and it is never run again on a guess.
    case inDoubt
    /// An in-doubt call settled by a verdict.
    case resolved(Resolution.Verdict)
    /// A gated tool's call, recorded before anything runs, waiting for an operator's verdict
    /// (`ward approve` or `ward deny`). Nothing runs it meanwhile, whatever crashes.
    case awaitingApproval
    /// Approved, its tool not begun: the next request for it begins execution 1, once.
    case approved

    /// The outcomes a tool's run can end in (`finished`'s statuses).
    public static let outcomes: Set<CallStatus> = [.succeeded, .failed, .timedOut, .killed, .denied]

    /// From the stored columns; nil for a pair this ward never writes.
    public init?(status: String, verdict: String?) {
        guard let status = CallStatus(rawValue: status) else { return nil }
        switch status {
        case .running where verdict == nil: self = .running
        case .inDoubt where verdict == nil: self = .inDoubt
        case .awaitingApproval where verdict == nil: self = .awaitingApproval
        case .approved where verdict == nil: self = .approved
        case .resolved:
            guard let verdict = verdict.flatMap(Resolution.Verdict.init(rawValue:)) else { return nil }
            self = .resolved(verdict)
        case _ where CallState.outcomes.contains(status) && verdict == nil: self = .finished(status)
        default: return nil
        }
    }

    /// The `status` column (and what `CallResult.status` reports).
    public var status: CallStatus {
        switch self {
        case .running: .running
        case .finished(let outcome): outcome
        case .inDoubt: .inDoubt
        case .resolved: .resolved
        case .awaitingApproval: .awaitingApproval
        case .approved: .approved
        }
    }

    /// The `verdict` column.
    public var verdict: Resolution.Verdict? {
        if case .resolved(let verdict) = self { return verdict }
        return nil
    }

    /// Final: its result is replayed to every later request (finished, or resolved as executed).
    public var isSettled: Bool {
        switch self {
        case .finished, .resolved(.executed): true
        case .running, .inDoubt, .resolved(.notExecuted), .awaitingApproval, .approved: false
        }
    }

    /// Whether a new execution of the call may begin in this state, its owner (when it is
    /// running) being dead: a call whose tool may run twice and whose process died, a call
    /// that a verdict says did not run, or an approved call (its first execution).
    public func mayRunAgain(effect: CallEffect) -> Bool {
        switch self {
        case .running: effect != .nonIdempotent
        case .resolved(.notExecuted), .approved: true
        case .finished, .inDoubt, .resolved(.executed), .awaitingApproval: false
        }
    }

    /// `status = 'running'` and the like, for SQL: the stored spelling of a status.
    static func sql(_ status: CallStatus) -> String { "'\(status.rawValue)'" }
    /// `verdict = 'not-executed'` and the like, for SQL.
    static func sql(_ verdict: Resolution.Verdict) -> String { "'\(verdict.rawValue)'" }
}

/// What the ledger does with a request for a call ID, from what it holds for it.
enum CallStep: Equatable {
    /// Nothing recorded: execution 1 begins.
    case start
    /// Execution n+1 begins (`CallState.mayRunAgain`).
    case runAgain
    /// Its result is final: returned as recorded, marked replayed.
    case replay
    /// The call ID was recorded with another tool or other arguments.
    case conflict(otherTool: Bool)
    /// Running under an owner that lives, or whose life cannot be told (nil, or why):
    /// the request waits for its outcome and never runs it beside that owner.
    case wait(unknownOwner: String?)
    /// Running, non-idempotent, its owner dead: recorded in doubt now, and refused.
    case putInDoubt(fate: String)
    /// In doubt: refused until an operator or the tool's reconcile command settles it.
    case refuseInDoubt
    /// A gated call not approved or denied yet: refused (or waited on) until it is; never a
    /// second gate.
    case awaitApproval
}

extension CallState {
    /// The one decision of `begin` (and of `awaitOutcome`, recovery, `resolve` and the
    /// audits, which ask it of a recorded call): pure, so every state, effect and owner
    /// fate is tested without a database (`CallStateTests`). `owner` is asked only of a
    /// running call.
    static func step(recorded: (state: CallState, effect: CallEffect, tool: String, argsHash: String)?,
                     tool: String, argsHash: String, owner: () -> OwnerState) -> CallStep {
        guard let recorded else { return .start }
        if recorded.tool != tool || recorded.argsHash != argsHash { return .conflict(otherTool: recorded.tool != tool) }
        switch recorded.state {
        case .running:
            switch owner() {
            case .alive: return .wait(unknownOwner: nil)
            case .unknown(let why): return .wait(unknownOwner: why)
            case .dead(let fate): return recorded.state.mayRunAgain(effect: recorded.effect) ? .runAgain : .putInDoubt(fate: fate)
            }
        case .inDoubt: return .refuseInDoubt
        case .awaitingApproval: return .awaitApproval
        case .resolved(.notExecuted), .approved: return .runAgain
        case .finished, .resolved(.executed): return .replay
        }
    }
}

/// How far a call's answer got to a client that can lose it (`ward mcp`): the `delivered`
/// column. A host gives no receipt, so ward goes by what it can see: the host read the
/// answer off its pipe (`read`), then asked for something else (`delivered`). Until then a
/// repeat of a non-idempotent call is the host's retry and gets the recorded answer.
public enum Delivery: Int, Sendable {
    /// Running, in doubt, or answered with the answer not read yet.
    case awaited = 0
    /// The client asked for something else after reading the answer (`call.delivered`).
    case delivered = 1
    /// The client read the answer.
    case read = 2
}
