import ArgumentParser
import CWardOS
import CWardSpawn
import Dispatch
import Foundation
import Logging
import WardCore
import WardLedger
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

enum RestartPolicy: String, ExpressibleByArgument, CaseIterable {
    case onFailure = "on-failure", always, never
}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Supervise an agent: start it, serve it, restart it after a crash with backoff, resume its run.",
        discussion: """
            The agent gets ward's environment plus WARD_SOCKET, WARD_RUN_ID, WARD_ATTEMPT and WARD_TOKEN \
            (the credential its connections open with; tools never get it). \
            It is restarted after a crash (non-zero exit or signal) with exponential backoff; \
            ward exits with its final status. SIGINT/SIGTERM: stop accepting calls, let running \
            tools finish within --grace seconds, kill the rest (recorded killed), stop the agent. \
            If ward itself is killed, the agent and the tools die with it; `ward run --run-id SAME` \
            recovers the run. When the agent stops at a call in doubt, ward does not restart it into \
            the same refusal: it prints the calls and the commands that settle them, offers to settle \
            them on a terminal and then resumes the agent, and otherwise exits with status 4. \
            Without --run-id, ward looks for unfinished runs of the same agent command line in the same \
            workspace: on a terminal it shows them and asks whether to resume one, start a new run or \
            list their calls; otherwise --resume decides (default auto: resume the only one, refuse \
            with status 2 to guess among several).
            """
    )

    /// The exit status when ward stops because calls are in doubt and nobody settled them.
    static let waitingForOperator: Int32 = 4

    @OptionGroup var options: RunOptions

    @Option(help: "When to restart the agent: on-failure, always, never.")
    var restart: RestartPolicy = .onFailure

    // .unconditional: "--max-restarts -1" is a value to refuse, not an unknown option "-1".
    @Option(name: .customLong("max-restarts"), parsing: .unconditional, help: "Restarts at most this many times (0 or more).")
    var maxRestarts: Int = 5

    @Option(help: "Without --run-id and a terminal to ask on, what to do with unfinished runs of this agent in this workspace: auto (resume the only one; several: refuse, exit 2), always (resume the most recent), never (start a new run). Given on a terminal, it is not asked.")
    var resume: ResumeMode?

    @Argument(parsing: .postTerminator, help: "The agent's command line (after --).")
    var agent: [String] = []

    func validate() throws {
        guard !agent.isEmpty else { throw ValidationError("no agent: ward run [options] -- AGENT...") }
        guard maxRestarts >= 0 else { throw ValidationError("--max-restarts must be 0 or more, not \(maxRestarts)") }
        if resume != nil && options.runID != nil {
            throw ValidationError("--resume chooses among unfinished runs, and --run-id already names the run: give one of them")
        }
    }

    func run() throws {
        guard let program = RunCommand.resolve(agent[0]) else { throw CLIError.usage("agent \(agent[0]) not found in PATH") }
        ward_termination_catch()
        let choose: ((Ledger) throws -> (run: String, resumedBy: Ledger.Resumption?))? = options.runID == nil ? { try self.chooseRun($0) } : nil
        let (server, supervisor) = try options.startServer(logger: Logger(label: "ward"), publishToken: false, agent: agent, choose: choose)
        let run = supervisor.runID

        // One waiter for both events: the agent exiting, or SIGINT/SIGTERM.
        enum Event { case exited(Int32, Int32), terminate(Int32) }
        let events = Lock<[Event]>([])
        let wake = DispatchSemaphore(value: 0)
        Thread {
            while true {
                let sig = ward_termination_wait()
                events.withLock { $0.append(.terminate(sig)) }
                wake.signal()
            }
        }.start()

        /// The agent's next attempt, once the operator settled the calls it stopped at.
        func resumeAgent(because why: String) throws {
            Output.write(2, Array("ward: \(why); resuming the agent\n".utf8))
            supervisor.attempt = try ledgerCall { () throws(LedgerError) in try supervisor.ledger.startAttempt(run: run) }
        }
        /// Ends ward while calls wait for an operator, whose answer a restart cannot give.
        func stopForOperator() throws -> Never {
            drain(server: server, supervisor: supervisor)
            server.stop()
            throw ExitCode(RunCommand.waitingForOperator)
        }

        var restarts = 0
        while true {
            // The agent's token goes into its environment only: never into ward's own, from
            // which tools' environments are built.
            let own = ["WARD_SOCKET": server.path, "WARD_RUN_ID": run, "WARD_ATTEMPT": "\(supervisor.attempt)",
                       AgentCredential.environmentVariable: server.token]
            var env: [String] = []
            var e = environ
            while let p = e.pointee {
                let entry = String(cString: p)
                if own[String(entry.prefix { $0 != "=" })] == nil { env.append(entry) }
                e += 1
            }
            env += own.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            var err = ward_spawn_error()
            let pid = Sandbox.withCStrings(agent) { argv in
                Sandbox.withCStrings(env) { envp in program.withCString { ward_spawn_agent($0, argv, envp, &err) } }
            }
            guard pid > 0 else {
                server.stop()
                throw CLIError(message: "cannot start the agent \(program): \(String(cString: ward_step_name(err.step))) failed: \(errnoName(err.error))", exitCode: 1)
            }
            // A thread of its own: it blocks for the agent's whole life.
            Thread {
                var exited: Int32 = 0, code: Int32 = 0, sig: Int32 = 0
                ward_wait(pid, &exited, &code, &sig)
                events.withLock { $0.append(.exited(exited != 0 ? code : -1, sig)) }
                wake.signal()
            }.start()

            var status: Int32 = 0
            var signalled = false
            waiting: while true {
                wake.wait()
                for event in events.withLock({ e -> [Event] in defer { e.removeAll() }; return e }) {
                    switch event {
                    case .terminate(let sig):
                        shutDown(server: server, supervisor: supervisor, agent: pid)
                        Glibc.exit(128 + sig)
                    case .exited(let code, let sig):
                        status = code >= 0 ? code : 128 + sig
                        signalled = code < 0
                        break waiting
                    }
                }
            }
            let wouldRestart = restart == .always || (restart == .onFailure && (status != 0 || signalled))
            // An agent that met a call in doubt would meet the same refusal after a restart:
            // an operator decides first. Waiting for one is not a crash (--max-restarts).
            if supervisor.takeToldInDoubt(), let unsettled = try? supervisor.ledger.inDoubtCalls(run: run), !unsettled.isEmpty {
                Output.write(2, Array(RunCommand.inDoubtReport(unsettled, ledger: supervisor.ledger, stopped: wouldRestart).utf8))
                if wouldRestart {
                    if isatty(0) == 1, RunCommand.settleOnTerminal(unsettled, ledger: supervisor.ledger) {
                        try resumeAgent(because: "every call in doubt is settled")
                        continue
                    }
                    try stopForOperator()
                }
            }
            // The same for a call that awaits approval: the agent would meet the same gate.
            if supervisor.takeToldAwaitingApproval(), let waiting = try? supervisor.ledger.pendingApprovals(run: run), !waiting.isEmpty, wouldRestart {
                Output.write(2, Array("ward: the agent stopped at \(waiting.count == 1 ? "a call" : "calls") awaiting approval; a restart would meet the same gate, so ward waits for a verdict.\n".utf8))
                ApproveCommand.list(waiting, ledger: supervisor.ledger, to: 2)
                if isatty(0) == 1, RunCommand.approveOnTerminal(waiting, ledger: supervisor.ledger) {
                    try resumeAgent(because: "every call has a verdict")
                    continue
                }
                Output.write(2, Array("ward: then run the same `ward run --run-id \(Shell.quote(run)) …` again\n".utf8))
                try stopForOperator()
            }
            let again = restarts < maxRestarts && wouldRestart
            if !again, let waiting = try? supervisor.ledger.pendingApprovals(run: run), !waiting.isEmpty {
                // Not an error of ward's, but nothing the operator should miss.
                Output.write(2, Array("ward: the agent exited with \(waiting.count == 1 ? "a call" : "calls") awaiting approval:\n".utf8))
                ApproveCommand.list(waiting, ledger: supervisor.ledger, to: 2)
            }
            if !again {
                // Calls still running for the agent that left are finished and recorded
                // (or killed and recorded after the grace period), never left in doubt.
                drain(server: server, supervisor: supervisor)
                _ = try? supervisor.ledger.finishRun(run: run, exitStatus: Int(status))
                server.stop()
                if status != 0 { throw ExitCode(status) }
                return
            }
            restarts += 1
            let backoff = min(0.1 * Double(1 << min(restarts - 1, 6)), 5.0)
            Output.write(2, Array("ward: agent exited with status \(status); restart \(restarts) of \(maxRestarts) in \(backoff) s\n".utf8))
            usleep(useconds_t(backoff * 1_000_000))
            supervisor.attempt = try ledgerCall { () throws(LedgerError) in try supervisor.ledger.startAttempt(run: run) }
        }
    }

    /// Graceful stop: no new calls, running tools get the grace period, then die (recorded
    /// killed), then the agent's process group is stopped.
    func shutDown(server: SocketServer, supervisor: Supervisor, agent: pid_t) {
        drain(server: server, supervisor: supervisor)
        kill(-agent, SIGTERM)
        for _ in 0..<200 where kill(agent, 0) == 0 { usleep(10_000) }
        kill(-agent, SIGKILL)
        server.stop()
    }

    func drain(server: SocketServer, supervisor: Supervisor) { options.drain(server: server, supervisor: supervisor) }

    /// Which calls are in doubt, what is known of each, and the commands that settle them,
    /// pasteable as printed.
    static func inDoubtReport(_ calls: [InDoubtCall], ledger: Ledger, stopped: Bool) -> String {
        var text = stopped ? "ward: the agent stopped at \(calls.count == 1 ? "a call" : "calls") in doubt; a restart would meet the same refusal, so ward waits for an operator.\n"
                           : "ward: the agent exited with \(calls.count == 1 ? "a call" : "calls") still in doubt.\n"
        for call in calls {
            // Identifiers hold no control characters, but arguments and reasons may hold
            // C1 controls and bidi marks that canonical JSON leaves raw.
            text += "  call \(TerminalText.escape(call.callId)) of run \(call.run): tool \(call.tool), started \(call.startedAt)\n"
            if let reason = call.reason { text += "    \(TerminalText.escape(reason))\n" }
            if let workspace = call.workspace { text += "    in workspace \(TerminalText.escape(workspace))\n" }
            if let ms = call.ranForMs {
                let exit = call.toolExit?.objectValue
                let how = exit == nil ? "it was still running when ward died"
                    : "it ended (\(exit?["exitCode"]?.integer(Int.self).map { "exit \($0)" } ?? exit?["status"]?.stringValue ?? "?")) before ward could record it"
                text += "    the tool ran at least \(String(format: "%.1f", Double(ms) / 1000)) s; \(how)\n"
                if !call.outputTail.isEmpty {
                    text += "    its output ended with: \(TerminalText.escape(bytes: call.outputTail))\n"
                }
            }
            text += "    arguments \(TerminalText.escape(String(call.arguments.canonical.prefix(300))))\n"
            text += "    if it ran:          \(ledger.resolveCommand(run: call.run, callId: call.callId, as: .executed))\n"
            text += "    if it did not run:  \(ledger.resolveCommand(run: call.run, callId: call.callId, as: .notExecuted))\n"
        }
        if stopped { text += "  then run the same `ward run --run-id \(Shell.quote(calls[0].run)) …` again; `ward ledger show` gives each call's details.\n" }
        return text
    }

    /// Asks the operator on the terminal for each call's verdict and note; true when every
    /// call was settled.
    static func settleOnTerminal(_ calls: [InDoubtCall], ledger: Ledger) -> Bool {
        let note = "ward: note (what you checked): "
        return askEachOnTerminal(calls, question: { "ward: settle call \(TerminalText.escape($0.callId)) now? executed (e), not executed (n), or leave it in doubt (Enter): " },
                                 choices: [TerminalChoice(words: ["e", "executed"], answer: Ledger.Verdict.executed, notePrompt: note),
                                           TerminalChoice(words: ["n", "not-executed", "not executed"], answer: .notExecuted, notePrompt: note)]) {
            try ledger.resolve(run: $0.run, callId: $0.callId, as: $1, note: $2)
        }
    }

    /// Asks the operator on the terminal for each waiting call's verdict; true when every
    /// call got one.
    static func approveOnTerminal(_ calls: [PendingApproval], ledger: Ledger) -> Bool {
        askEachOnTerminal(calls, question: { "ward: call \(TerminalText.escape($0.callId)): approve (a), deny (d), or leave it waiting (Enter): " },
                          choices: [TerminalChoice(words: ["a", "approve"], answer: true, notePrompt: nil),
                                    // A denied call's note is its stderr: the agent's only word of why.
                                    TerminalChoice(words: ["d", "deny"], answer: false, notePrompt: "ward: why may it not run (the agent reads this): ")]) {
            try ledger.settleApproval(run: $0.run, callId: $0.callId, approve: $1, note: $2)
        }
    }

    /// An answer the operator may type to `askEachOnTerminal`'s question: the words that give it,
    /// and the prompt for the note it needs (nil: it needs none, and the note is empty).
    struct TerminalChoice<Answer> {
        var words: Set<String>
        var answer: Answer
        var notePrompt: String?
    }

    /// Asks the operator on the terminal, call by call, `question`, then the chosen answer's
    /// note until one is given, and hands both to `record`. Any other answer (Enter) leaves
    /// the call as it is; a refused record is shown and leaves it too.
    /// - Returns: true when every call's answer was recorded; false at the end of the input,
    ///   which ends the questions.
    static func askEachOnTerminal<Call, Answer>(_ calls: [Call], question: (Call) -> String, choices: [TerminalChoice<Answer>],
                                                record: (Call, Answer, _ note: String) throws -> Void) -> Bool {
        var recorded = 0
        for call in calls {
            Output.write(2, Array(question(call).utf8))
            guard let answer = readLine()?.trimmingCharacters(in: .whitespaces).lowercased() else { return false }
            guard let choice = choices.first(where: { $0.words.contains(answer) }) else { continue }
            var note = ""
            while note.isEmpty, let prompt = choice.notePrompt {
                Output.write(2, Array(prompt.utf8))
                guard let line = readLine() else { return false }
                note = line.trimmingCharacters(in: .whitespaces)
            }
            do {
                try record(call, choice.answer, note)
                recorded += 1
            } catch {
                Output.write(2, Array("ward: \(error)\n".utf8))
            }
        }
        return recorded == calls.count
    }

    static func resolve(_ program: String) -> String? {
        if program.contains("/") { return access(program, X_OK) == 0 ? program : nil }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        for dir in path.split(separator: ":") where access("\(dir)/\(program)", X_OK) == 0 { return "\(dir)/\(program)" }
        return nil
    }
}
