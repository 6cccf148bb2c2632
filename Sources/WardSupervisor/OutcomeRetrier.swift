import Foundation
import WardCore
import WardLedger

/// Outcomes of calls that ran but could not be committed (a full disk, an I/O error) once
/// `finish` gave up its in-line retry. Each one is committed again, with backoff, on a
/// thread of its own until it lands or ward exits: its call stays `running` under this live
/// process meanwhile, so nothing runs it again, and a repeated request for it waits here
/// (`wait`) and gets the real result once it is recorded. Dropping it instead would leave
/// the call `running` for as long as ward lives, and its output lost after a restart.
///
/// One attempt at a time per outcome, on the retrier's thread only: two attempts racing
/// would have the loser fenced off by the winner's commit, and report a recorded outcome
/// as lost.
final class OutcomeRetrier: @unchecked Sendable {
    struct Key: Hashable {
        let run: String
        let callId: String
    }

    private struct Pending {
        let ticket: CallTicket
        let outcome: ToolOutcome
        var lastError: LedgerError
    }

    /// What a waiter learns.
    enum Wait {
        /// No longer held here: recorded, or given up for an error that is not storage (the
        /// ledger then says what became of the call).
        case settled
        /// Still not recorded when the wait ended; the last error.
        case pending(LedgerError)
    }

    let ledger: Ledger
    /// Seconds between attempts: doubled after each failed round, up to the maximum.
    let firstDelay: Double
    let maximumDelay: Double
    /// Where ward tells its operator about an outcome it gave up on.
    let notify: @Sendable (String) -> Void

    /// Guards every member below; waiters and the thread sleep on it.
    private let condition = NSCondition()
    private var pending: [Key: Pending] = [:]
    private var waiting: [Key: Int] = [:]
    private var threadRunning = false
    private var stopped = false
    /// Rounds of attempts made, whether one is under way, and whether one is wanted now (a
    /// flush).
    private var rounds = 0
    private var inRound = false
    private var hurry = false

    init(ledger: Ledger, firstDelay: Double = 0.05, maximumDelay: Double = 1, notify: @escaping @Sendable (String) -> Void) {
        self.ledger = ledger
        self.firstDelay = firstDelay
        self.maximumDelay = maximumDelay
        self.notify = notify
    }

    /// Takes an outcome whose commit failed with `error`; keeps committing it until it lands.
    func hand(_ ticket: CallTicket, outcome: ToolOutcome, error: LedgerError) {
        condition.lock()
        defer { condition.unlock() }
        pending[Key(run: ticket.run, callId: ticket.callId)] = Pending(ticket: ticket, outcome: outcome, lastError: error)
        guard !threadRunning, !stopped else { return }
        threadRunning = true
        let thread = Thread { [self] in loop() }
        thread.name = "ward-outcomes"
        thread.start()
    }

    /// Whether the outcome of a call is waiting to be recorded.
    func isPending(run: String, callId: String) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return pending[Key(run: run, callId: callId)] != nil
    }

    /// Whether a request waits for a call's outcome here (for tests).
    func isAwaited(run: String, callId: String) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        return waiting[Key(run: run, callId: callId), default: 0] > 0
    }

    /// Waits up to `timeout` seconds for a call's outcome to be recorded; nil when none of
    /// this call is held here.
    func wait(run: String, callId: String, timeout: Double) -> Wait? {
        let key = Key(run: run, callId: callId)
        let deadline = Date(timeIntervalSinceNow: min(max(timeout, 0), 1e9))
        condition.lock()
        defer { condition.unlock() }
        guard pending[key] != nil else { return nil }
        waiting[key, default: 0] += 1
        defer { waiting[key, default: 1] -= 1 }
        while pending[key] != nil {
            if !condition.wait(until: deadline) { return pending[key].map { .pending($0.lastError) } ?? .settled }
        }
        return .settled
    }

    /// At ward's exit: at least one more attempt for every outcome still held, and more
    /// until they land or `seconds` pass. Returns the outcomes not recorded, each reported
    /// through `notify`: if ward exits now, their calls stay `running` under a dead process
    /// and the next start recovers them (a non-idempotent one is in doubt, with its capture
    /// file as evidence; an idempotent one runs again). The thread goes on trying until
    /// the process ends.
    @discardableResult
    func flush(within seconds: Double) -> [CallTicket] {
        let deadline = Date(timeIntervalSinceNow: min(max(seconds, 0), 1e9))
        condition.lock()
        // A round under way began before this call: the one after it is the attempt this
        // flush asks for.
        let target = rounds + (inRound ? 2 : 1)
        hurry = true
        condition.broadcast()
        while !pending.isEmpty && threadRunning && (rounds < target || Date() < deadline) {
            // (Foundation traps on a wait until .distantFuture: the round is waited for plainly.)
            if rounds < target { condition.wait() } else { _ = condition.wait(until: deadline) }
        }
        let left = pending.values.map { ($0.ticket, $0.lastError) }
        condition.unlock()
        for (ticket, error) in left {
            notify("the outcome of call \(ticket.callId) of run \(ticket.run) could not be recorded before ward stopped (\(error.message)); "
                   + "the next start finds it unfinished")
        }
        return left.map(\.0)
    }

    /// Stops the thread after its current attempt (the supervisor is going away).
    func stop() {
        condition.lock()
        stopped = true
        condition.broadcast()
        condition.unlock()
    }

    private func loop() {
        var delay = firstDelay
        condition.lock()
        defer {
            threadRunning = false
            condition.broadcast()
            condition.unlock()
        }
        while !pending.isEmpty && !stopped {
            // The outcome has just failed to commit (for `finish`'s whole in-line retry):
            // pause first, unless ward is exiting and wants its attempt now.
            let next = Date(timeIntervalSinceNow: delay)
            while !hurry && !stopped && Date() < next { _ = condition.wait(until: next) }
            if stopped { return }
            hurry = false
            inRound = true
            let batch = pending
            condition.unlock()
            var results: [Key: Result<CallResult, LedgerError>] = [:]
            for (key, item) in batch {
                results[key] = Result { () throws(LedgerError) in try ledger.finish(item.ticket, outcome: item.outcome, retryFor: 0) }
            }
            var dropped: [String] = []
            for (key, result) in results {
                if case .failure(let error) = result, error.code != .storage {
                    dropped.append("the outcome of call \(key.callId) of run \(key.run) is not recorded: \(error.message)")
                }
            }
            for message in dropped { notify(message) }  // outside the lock: it is the caller's code
            condition.lock()
            for (key, result) in results {
                switch result {
                case .success:
                    pending[key] = nil
                case .failure(let error) where error.code == .storage:
                    pending[key]?.lastError = error
                case .failure:
                    // Fenced (another decision about the call stands) or worse: retrying
                    // cannot change it. A waiter asks the ledger what became of the call.
                    pending[key] = nil
                }
            }
            rounds += 1
            inRound = false
            condition.broadcast()
            delay = min(delay * 2, maximumDelay)
        }
    }
}
