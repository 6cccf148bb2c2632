import ArgumentParser
import WardCore
import WardLedger
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// What `ward run` without `--run-id` does with unfinished runs of its agent in its workspace
/// when nobody is asked (no terminal, or `--resume` given).
enum ResumeMode: String, ExpressibleByArgument, CaseIterable {
    /// Resume the only one; refuse to guess among several (exit 2). The default: a new run
    /// would run again every effect the unfinished one already had, and a run with calls in
    /// doubt would be left behind unnoticed; resuming replays what is recorded and runs
    /// nothing twice.
    case auto
    /// Resume the most recently active one.
    case always
    /// Start a new run, leaving the unfinished ones as they are.
    case never
}

extension RunCommand {
    /// The run this `ward run` serves when no `--run-id` names one, chosen before anything is
    /// locked or recorded (docs/design.md, *Offer to resume*): a new run, or an unfinished run
    /// of the same agent command line in the same workspace, resumed by the operator's answer
    /// on a terminal or by `--resume`. Says on stderr what was decided and why.
    func chooseRun(_ ledger: Ledger) throws -> (run: String, resumedBy: Ledger.Resumption?) {
        let fresh = RunOptions.generatedRunID
        // A workspace that does not exist yet holds no run.
        guard let here = RunPlace.of(workspace: options.policyOptions.workspace, policies: options.policyOptions.policies) else { return (fresh, nil) }
        var candidates = try ledgerCall { () throws(LedgerError) in try ledger.unfinishedRuns(agent: agent, workspace: here) }
        // A run another supervisor serves now cannot be resumed here (its start would be
        // refused): taking its lock tells, and dropping it at once releases it.
        candidates.removeAll { (try? ledger.lockRun($0.run)) == nil }
        guard let latest = candidates.first else { return (fresh, nil) }
        func say(_ text: String) { Output.write(2, Array("ward: \(text)\n".utf8)) }
        let others = candidates.dropFirst().map { TerminalText.escape($0.run) }.joined(separator: ", ")
        switch resume ?? (isatty(0) == 1 && isatty(2) == 1 ? nil : .auto) {
        case .never?:
            say("starting new run \(fresh); the unfinished \(candidates.count == 1 ? "run" : "runs") of this agent in this workspace (\(candidates.map { TerminalText.escape($0.run) }.joined(separator: ", "))) \(candidates.count == 1 ? "is" : "are") left as \(candidates.count == 1 ? "it is" : "they are") (--resume never)")
            return (fresh, nil)
        case .always?:
            say("resuming run \(TerminalText.escape(latest.run)), the most recent unfinished run of this agent in this workspace (--resume always)\(others.isEmpty ? "" : "; also unfinished: \(others)")")
            return (latest.run, .always)
        case .auto? where candidates.count == 1:
            say("resuming run \(TerminalText.escape(latest.run)), the unfinished run of this agent in this workspace (--resume auto; --resume never starts a new run)")
            return (latest.run, .auto)
        case .auto?:
            throw CLIError(message: """
                \(candidates.count) unfinished runs of this agent in this workspace, and --resume auto does not guess which one to resume: \
                nothing was started. Resume one with its command above, the most recent with --resume always, or start a new run with --resume never
                """, exitCode: 2, details: RunCommand.describe(candidates, ledger: ledger).split(separator: "\n").map(String.init))
        case nil:
            return try RunCommand.askOnTerminal(candidates, fresh: fresh, ledger: ledger)
        }
    }

    /// Shows the candidates and asks until the operator answers: resume (the most recent,
    /// or one by its number), a new run, or list their calls first. An end of input is no
    /// answer, and ward will not guess between running every effect again and continuing:
    /// nothing is started (exit 2).
    static func askOnTerminal(_ candidates: [RunSummary], fresh: String, ledger: Ledger) throws -> (run: String, resumedBy: Ledger.Resumption?) {
        Output.write(2, Array(describe(candidates, ledger: ledger).utf8))
        let question = candidates.count == 1
            ? "ward: resume run \(TerminalText.escape(candidates[0].run)) (r), start a new run (n), or list its calls (l)? [r]: "
            : "ward: resume the most recent, run \(TerminalText.escape(candidates[0].run)) (r, or the number of another), start a new run (n), or list their calls (l)? [r]: "
        while true {
            Output.write(2, Array(question.utf8))
            guard let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() else {
                throw CLIError(message: "no answer: nothing was started (choose with --resume auto|always|never, or --run-id)", exitCode: 2)
            }
            switch answer {
            case "", "r", "resume": return (candidates[0].run, .prompt)
            case "n", "new": return (fresh, nil)
            case "l", "list": Output.write(2, Array(listCalls(of: candidates, ledger: ledger).utf8))
            default:
                if let n = Int(answer), candidates.indices.contains(n - 1) { return (candidates[n - 1].run, .prompt) }
                Output.write(2, Array("ward: answer r, n, l\(candidates.count == 1 ? "" : " or a number from 1 to \(candidates.count)")\n".utf8))
            }
        }
    }

    /// What ward knows of each unfinished run, numbered, most recent first, with the
    /// command that resumes it.
    static func describe(_ candidates: [RunSummary], ledger: Ledger) -> String {
        var text = "ward: \(candidates.count == 1 ? "this agent has an unfinished run" : "this agent has \(candidates.count) unfinished runs") in this workspace:\n"
        for (i, r) in candidates.enumerated() {
            let ended = r.finishedAt == nil ? "no exit recorded (ward stopped, or was killed, before the agent ended)"
                : "the agent last exited with status \(r.exitStatus ?? 0)"
            let checkpoint = r.lastCheckpoint.map { "last checkpoint \($0.seq) at \($0.at)" } ?? "no checkpoint"
            text += "  \(i + 1). run \(TerminalText.escape(r.run)): started \(r.createdAt), \(r.attempts) \(r.attempts == 1 ? "attempt" : "attempts"), \(ended)\n"
            text += "     \(checkpoint); calls: \(r.done) done, \(r.inDoubt) in doubt, \(r.awaitingApproval) awaiting approval\(r.running > 0 ? ", \(r.running) running" : "")\n"
            text += "     resume it: \(TerminalText.escape(ledger.resumeCommand(run: r.run, agent: r.agent)))\n"
        }
        return text
    }

    /// The calls of each run, as `ward ledger list` shows them.
    static func listCalls(of candidates: [RunSummary], ledger: Ledger) -> String {
        var text = ""
        for (i, r) in candidates.enumerated() {
            text += "\(i + 1). run \(TerminalText.escape(r.run)):\n"
            guard let calls = try? ledger.listCalls(run: r.run), !calls.isEmpty else {
                text += "  no calls\n"
                continue
            }
            text += Table.render(["CALL", "TOOL", "STATUS", "EXIT", "ATTEMPT", "STARTED"], calls.map { c in
                [c.callId, c.tool, c.status, c.exitCode.map(String.init) ?? "-", String(c.attempt), c.startedAt]
            }).split(separator: "\n").map { "  " + $0 + "\n" }.joined()
        }
        return text
    }
}
