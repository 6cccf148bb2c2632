import ArgumentParser
import WardCore
import WardLedger

/// `ward approve` and `ward deny`: an operator's verdict on a gated call (a tool with
/// `approve = true`), recorded in the run's chain with who gave it and when
/// (docs/design.md, "Approval gates").
struct ApproveCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "approve",
        abstract: "Approve a call that waits for approval (it then runs, once); without arguments, list what waits.",
        discussion: """
            The call runs when its agent asks for it (an agent waiting in tool.call with approvalTimeout goes on at once). \
            The verdict is an event of the run's chain, with your uid and user name. Exit 2 when the call is not awaiting approval.
            """
    )

    @OptionGroup var options: LedgerOptions
    @Argument(help: "Run ID.") var runID: String?
    @Argument(help: "Call ID.") var call: String?
    @Option(help: "Why it may run (recorded with the verdict).") var note: String = ""
    @Flag(help: "JSON output.") var json = false

    func validate() throws {
        try Checks.nonEmpty(runID, "the run ID")
        try Checks.nonEmpty(call, "the call ID")
        if runID != nil && call == nil { throw ValidationError("give the call ID too: ward approve RUN CALL (or no arguments to list what waits)") }
    }

    func run() throws {
        guard let runID, let call else {
            let ledger = try options.open(readOnly: true)
            let pending = try ledgerCall { () throws(LedgerError) in try ledger.pendingApprovals() }
            if json { return printJSON(.array(pending.map(\.json))) }
            ApproveCommand.list(pending, ledger: ledger)
            return
        }
        try ApproveCommand.settle(options, run: runID, call: call, approve: true, note: note, json: json)
    }

    /// Each waiting call with its arguments, readably, and the two commands that settle it.
    static func list(_ pending: [PendingApproval], ledger: Ledger, to fd: Int32 = 1) {
        guard !pending.isEmpty else { return Output.line(fd, "no calls await approval") }
        Output.line(fd, "\(pending.count) call\(pending.count == 1 ? "" : "s") await\(pending.count == 1 ? "s" : "") approval:")
        for p in pending {
            Output.line(fd, "")
            Output.line(fd, "run \(p.run), call \(p.callId): tool \(p.tool) (\(p.effect)), waiting since \(p.since) (attempt \(p.attempt))")
            let arguments = p.arguments.objectValue ?? [:]
            if arguments.isEmpty { Output.line(fd, "  no arguments") }
            for name in arguments.keys.sorted() {
                let value = arguments[name]!
                // Text as it reads (escaped for the terminal by Output); anything else as JSON.
                Output.block(fd, "  \(name): " + (value.stringValue ?? value.canonical).replacingOccurrences(of: "\n", with: "\n    "))
            }
            Output.line(fd, "  approve: \(ledger.approvalCommand(run: p.run, callId: p.callId, approve: true))")
            Output.line(fd, "  deny:    \(ledger.approvalCommand(run: p.run, callId: p.callId, approve: false))")
        }
    }

    static func settle(_ options: LedgerOptions, run: String, call: String, approve: Bool, note: String, json: Bool) throws {
        // Never a new ledger, and nothing recovered: a refused verdict changes nothing.
        let ledger = try options.open(existing: true, recover: false)
        let approver = Approver.current
        try ledgerCall { () throws(LedgerError) in try ledger.settleApproval(run: run, callId: call, approve: approve, note: note, by: approver) }
        let verdict = approve ? "approved" : "denied"
        if json {
            return printJSON(.object(["run": .string(run), "callId": .string(call), "verdict": .string(verdict), "note": .string(note),
                                      "by": .string(approver.user), "uid": .number(Double(approver.uid))]))
        }
        Output.line(1, "call \(call) of run \(run) \(verdict) by \(approver.user) (uid \(approver.uid))"
                    + (approve ? ": it runs when its agent asks for it" : ": it will not run"))
    }
}

struct DenyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deny",
        abstract: "Refuse a call that waits for approval: it ends denied, with the note as its stderr, and never runs.",
        discussion: "The verdict is an event of the run's chain, with your uid and user name. Exit 2 when the call is not awaiting approval."
    )

    @OptionGroup var options: LedgerOptions
    @Argument(help: "Run ID.") var runID: String
    @Argument(help: "Call ID.") var call: String
    @Option(help: "Why it may not run: the agent reads it as the call's stderr.") var note: String
    @Flag(help: "JSON output.") var json = false

    func validate() throws {
        try Checks.nonEmpty(runID, "the run ID")
        try Checks.nonEmpty(call, "the call ID")
        // The agent's only word of why: an empty note tells it nothing.
        guard note.contains(where: { !$0.isWhitespace }) else { throw ValidationError("--note must say why the call may not run") }
    }

    func run() throws {
        try ApproveCommand.settle(options, run: runID, call: call, approve: false, note: note, json: json)
    }
}
