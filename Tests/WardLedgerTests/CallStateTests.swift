import Testing
import WardCore
@testable import WardLedger

/// The call state machine on its own, without a database: every state a call can be
/// recorded in, every effect, every fate of its owner, a request that matches it or not.
@Suite("Call states: one decision for every recorded call and request")
struct CallStateTests {
    static let states: [CallState] = [.running, .inDoubt, .resolved(.executed), .resolved(.notExecuted), .awaitingApproval, .approved]
        + CallState.outcomes.sorted { $0.rawValue < $1.rawValue }.map { .finished($0) }
    static let owners: [OwnerState] = [.alive, .dead("its lock was released"), .unknown("its lock file is gone")]

    @Test func statesRoundTripThroughTheirColumnsAndNothingElseIsRead() {
        for state in Self.states {
            #expect(CallState(status: state.status.rawValue, verdict: state.verdict?.rawValue) == state)
        }
        // Every stored pair but those: a status this ward never writes, a verdict where none
        // belongs, a resolution without one.
        for status in CallStatus.allCases.map(\.rawValue) + ["done", ""] {
            for verdict in [nil, "executed", "not-executed", "maybe"] as [String?] {
                let state = CallState(status: status, verdict: verdict)
                let written = Self.states.contains { $0.status.rawValue == status && $0.verdict?.rawValue == verdict }
                #expect((state != nil) == written, "\(status) / \(verdict ?? "nil")")
            }
        }
    }

    @Test func theOutcomesAreTheToolsEnds() {
        #expect(CallState.outcomes == Set(CallStatus.allCases).subtracting([.running, .inDoubt, .resolved, .awaitingApproval, .approved]))
    }

    @Test func onlyFinishedCallsAndExecutedVerdictsAreReplayed() {
        for state in Self.states {
            let settled: Bool
            switch state {
            case .finished, .resolved(.executed): settled = true
            default: settled = false
            }
            #expect(state.isSettled == settled, "\(state)")
        }
    }

    /// What `begin` must do, written out case by case from the guarantees, against what
    /// `CallState.step` does, for every combination.
    static func expected(_ state: CallState, _ effect: CallEffect, _ owner: OwnerState) -> CallStep {
        switch (state, owner) {
        case (.running, .alive): .wait(unknownOwner: nil)
        // An owner whose life cannot be told is never declared dead: the request waits.
        case (.running, .unknown(let why)): .wait(unknownOwner: why)
        // A non-idempotent call caught mid-flight never runs again on a guess.
        case (.running, .dead(let fate)): effect == .nonIdempotent ? .putInDoubt(fate: fate) : .runAgain
        case (.inDoubt, _): .refuseInDoubt
        case (.resolved(.notExecuted), _): .runAgain
        // A gated call runs only once approved, and its first execution then begins; one
        // still waiting is never gated twice, nor run.
        case (.approved, _): .runAgain
        case (.awaitingApproval, _): .awaitApproval
        case (.resolved(.executed), _), (.finished, _): .replay
        }
    }

    @Test("every recorded state, effect and owner fate", arguments: CallEffect.allCases)
    func everyCombination(effect: CallEffect) {
        for state in Self.states {
            for owner in Self.owners {
                var asked = 0
                let recorded = (state: state, effect: effect, tool: "shell", argsHash: "a1")
                let step = CallState.step(recorded: recorded, tool: "shell", argsHash: "a1", owner: { asked += 1; return owner })
                #expect(step == Self.expected(state, effect, owner), "\(state), \(effect), owner \(owner)")
                // The owner's fate is asked of a running call only (it takes a lock test).
                #expect(asked == (state == .running ? 1 : 0), "\(state)")
                #expect(state.mayRunAgain(effect: effect) == (step == .runAgain || (state == .running && effect != .nonIdempotent)))
                // The same call ID with another tool or other arguments is a conflict in
                // every state, before any owner is asked.
                asked = 0
                #expect(CallState.step(recorded: recorded, tool: "http", argsHash: "a1", owner: { asked += 1; return owner }) == .conflict(otherTool: true))
                #expect(CallState.step(recorded: recorded, tool: "shell", argsHash: "b2", owner: { asked += 1; return owner }) == .conflict(otherTool: false))
                #expect(asked == 0)
            }
        }
    }

    @Test func nothingRecordedStartsTheFirstExecution() {
        #expect(CallState.step(recorded: nil, tool: "shell", argsHash: "a1", owner: { Issue.record("asked an owner"); return .alive }) == .start)
    }
}
