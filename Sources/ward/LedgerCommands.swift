import ArgumentParser
import Foundation
import WardCore
import WardLedger
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// `--ledger FILE|URL`, shared by every command that touches the ledger.
struct LedgerOptions: ParsableArguments {
    /// `WARD_LEDGER` when set (a team's PostgreSQL ledger), else the file beside the agent.
    static var defaultLedger: String {
        if let named = ProcessInfo.processInfo.environment["WARD_LEDGER"], !named.isEmpty { return named }
        return ".ward/ledger.sqlite"
    }

    @Option(name: .long, help: "Ledger: a SQLite file, or postgres://USER@HOST[:PORT]/DB for one shared by supervisors on many hosts (default: $WARD_LEDGER, else .ward/ledger.sqlite).")
    var ledger: String = LedgerOptions.defaultLedger

    @Option(name: .long, help: "full (survives power loss) or normal (survives crashes; may lose the last commits on power loss).")
    var durability: Ledger.Durability = .full

    /// Opens the ledger; `readOnly` for audits, which must never change what they inspect;
    /// `existing` and `recover` as `Ledger.init` has them.
    func open(readOnly: Bool = false, existing: Bool = false, recover: Bool = true) throws -> Ledger {
        do { return try Ledger(path: ledger, durability: durability, readOnly: readOnly, existing: existing, recover: recover) } catch {
            throw CLIError.from(error)
        }
    }
}

extension Ledger.Durability: ExpressibleByArgument {}
extension Ledger.Verdict: ExpressibleByArgument {}

extension CLIError {
    /// Storage and damage exit 3; a missing call or a request that makes no sense exit 2.
    static func from(_ error: LedgerError) -> CLIError {
        switch error.code {
        case .storage, .corrupt: CLIError(message: error.message, exitCode: 3)
        default: CLIError(message: error.message, exitCode: 2)
        }
    }
}

/// Runs a ledger operation, turning its error into the CLI's.
func ledgerCall<T>(_ body: () throws(LedgerError) -> T) throws -> T {
    do { return try body() } catch { throw CLIError.from(error) }
}

/// Aligned text tables for people; `--json` is for machines. Every cell is escaped for the
/// terminal (one line each, so a value can never pose as another row).
enum Table {
    static func render(_ header: [String], _ rows: [[String]]) -> String {
        let rows = rows.map { $0.map { TerminalText.escape($0) } }
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            var out = ""
            for (i, cell) in cells.enumerated() {
                out += i == cells.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count + 2)
            }
            return out
        }
        return ([line(header)] + rows.map(line)).joined(separator: "\n")
    }
}

func printJSON(_ value: JSONValue) {
    Output.write(1, Array((value.canonical + "\n").utf8))
}

struct LedgerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ledger",
        abstract: "Audit what agents did: list, show, effects, verify, export, report; settle in-doubt calls.",
        subcommands: [List.self, Show.self, Effects.self, Verify.self, Export.self, Report.self, Resolve.self, Reconcile.self, Copy.self]
    )

    struct Copy: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Copy every run of a ledger into another (a SQLite file into PostgreSQL), chains intact.",
            discussion: "Rows are copied as they are: events keep their bodies and hashes, so `ward ledger verify` passes on both. One transaction on the target: a copy that fails leaves nothing there. Refused when a run exists in the target already, or a call is still running in the source.")
        @Option(help: "The ledger to copy (a file or a postgres:// URL).") var from: String
        @Option(help: "The ledger to copy into (made when missing).") var to: String
        @Flag(help: "JSON output.") var json = false

        func run() throws {
            let copy = try ledgerCall { () throws(LedgerError) -> LedgerCopy in
                let source = try Ledger(path: from, existing: true, recover: false)
                let target = try Ledger(path: to, recover: false)
                return try source.copy(to: target)
            }
            if json { return printJSON(copy.json) }
            let rows = Ledger.copiedTables.map { "\(copy.rows[$0] ?? 0) \($0)" }.joined(separator: ", ")
            Output.line(1, "copied \(copy.runs.count) run\(copy.runs.count == 1 ? "" : "s") (\(rows))")
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List calls, oldest first.")
        @OptionGroup var options: LedgerOptions
        @Option(name: .customLong("run"), help: "Only this run.") var runID: String?
        @Option(help: "Only this tool.") var tool: String?
        @Option(help: "Only this status (\(CallStatus.allCases.map(\.rawValue).joined(separator: ", "))).") var status: String?
        @Option(help: "Only calls started at or after this time: \(Checks.sinceForms).") var since: String?
        @Flag(help: "JSON output (one array).") var json = false

        func validate() throws {
            try Checks.nonEmpty(runID, "--run")
            try Checks.nonEmpty(tool, "--tool")
            try Checks.status(status)
            if let since, Checks.since(since, now: 0) == nil {
                throw ValidationError("--since \"\(since)\": expected \(Checks.sinceForms)")
            }
        }

        func run() throws {
            let ledger = try options.open(readOnly: true)
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            let from = since.flatMap { Checks.since($0, now: Double(now.tv_sec) + Double(now.tv_nsec) / 1e9) }
            let calls = try ledgerCall { () throws(LedgerError) in try ledger.listCalls(run: runID, tool: tool, status: status, since: from) }
            if json { return printJSON(.array(calls.map(\.json))) }
            if let runID, let origin = try ledgerCall({ () throws(LedgerError) in try ledger.origin(run: runID) }) {
                Output.line(2, "run \(runID) is a fork of run \(origin.run) at checkpoint \(origin.checkpoint)")
            }
            print(Table.render(["RUN", "CALL", "TOOL", "STATUS", "EXIT", "MS", "ATTEMPT", "RUNS", "STARTED"], calls.map { c in
                [c.run, c.callId, c.tool, c.status, c.exitCode.map(String.init) ?? "-", c.durationMs.map { String(Int($0.rounded())) } ?? "-",
                 String(c.attempt), String(c.executions), c.startedAt]
            }))
        }
    }

    struct Effects: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Which calls touched a file: the effects of traced calls, oldest first.",
            discussion: "Each effect is what a call's tool (or a process it started) attempted: files opened for writing, created, truncated, deleted, renamed, linked, chmodded, directories made and removed, programs executed, sockets connected or bound. A call caught mid-flight by a crash shows what it had attempted up to the crash.")
        @OptionGroup var options: LedgerOptions
        @Option(name: .customLong("run"), help: "Only this run.") var runID: String?
        @Option(help: "Only effects on paths matching this glob (* also matches /); a rename or link matches by either name.") var path: String?
        @Flag(help: "JSON output (one array).") var json = false

        func validate() throws {
            try Checks.nonEmpty(runID, "--run")
            try Checks.nonEmpty(path, "--path")
        }

        func run() throws {
            let ledger = try options.open(readOnly: true)
            let effects = try ledgerCall { () throws(LedgerError) in try ledger.effects(run: runID, path: path) }
            if json { return printJSON(.array(effects.map(\.json))) }
            print(Table.render(["RUN", "CALL", "TOOL", "PID", "AT MS", "EFFECT"], effects.map { e in
                [e.run, e.callId, e.tool, String(e.effect.pid), JSONValue.format(number: e.effect.atMs), e.effect.description]
            }))
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Everything about one call: arguments, result, timings, attempts, policy hash, events.")
        @OptionGroup var options: LedgerOptions
        @Argument(help: "Run ID.") var runID: String
        @Argument(help: "Call ID.") var call: String
        @Flag(help: "JSON output.") var json = false

        func validate() throws {
            try Checks.nonEmpty(runID, "the run ID")
            try Checks.nonEmpty(call, "the call ID")
        }

        func run() throws {
            let ledger = try options.open(readOnly: true)
            let detail = try ledgerCall { () throws(LedgerError) in try ledger.showCall(run: runID, callId: call) }
            if json { return printJSON(detail) }
            guard let d = detail.objectValue else { return }
            func text(_ key: String) -> String {
                switch d[key] {
                case .string(let s)?: s
                case .number(let n)?: JSONValue.format(number: n)
                case .null?, nil: "-"
                case let v?: v.canonical
                }
            }
            var rows: [[String]] = [
                ["call", "\(text("run")) / \(text("callId"))"], ["tool", "\(text("tool")) (\(text("effect")))"], ["status", text("status")],
                ["arguments", text("arguments")], ["args hash", text("argsHash")], ["policy hash", text("policyHash")],
                ["binary hash", text("binaryHash")], ["attempt", text("attempt")], ["executions", text("executions")],
                ["started", text("startedAt")], ["finished", text("finishedAt")],
            ]
            if d["workspace"] != .null { rows.insert(["workspace", text("workspace")], at: 3) }
            if let fork = d["forkOf"]?.objectValue {
                rows.insert(["fork of", "run \(fork["run"]?.stringValue ?? "?") at checkpoint \(fork["checkpoint"]?.canonical ?? "?")"], at: 1)
            }
            if d["verdict"] != .null { rows += [["verdict", text("verdict")], ["note", text("note")]] }
            if let approval = d["approval"]?.objectValue { rows += Show.approvalRows(approval) }
            if let evidence = d["inDoubt"]?.objectValue { rows += Show.evidenceRows(evidence) }
            if let result = d["result"]?.objectValue {
                for key in ["exitCode", "signal", "durationMs", "truncated", "stdout", "stdoutBase64", "stderr", "stderrBase64"] {
                    guard let v = result[key], v != .null else { continue }
                    rows.append([key, v.stringValue ?? v.canonical])
                }
            }
            if let trace = d["trace"].flatMap(Trace.init(json:)) { rows += Show.traceRows(trace) }
            print(Table.render(["FIELD", "VALUE"], rows))
            print("")
            let events = d["events"].flatMap { v -> [JSONValue]? in if case .array(let a) = v { return a }; return nil } ?? []
            print(Table.render(["SEQ", "AT", "KIND", "DATA"], events.compactMap(\.objectValue).map { e in
                [e["seq"].map { $0.canonical } ?? "", e["at"]?.stringValue ?? "", e["kind"]?.stringValue ?? "", e["data"]?.canonical ?? ""]
            }))
        }

        /// What a traced call attempted to change, one effect a row.
        static func traceRows(_ trace: Trace) -> [[String]] {
            let count = trace.effects.count == 1 ? "1 effect" : "\(trace.effects.count) effects"
            let head = ["effects", "\(count), as attempted (read from each syscall before the kernel ran it)"]
            return [head] + trace.lines.map { ["", $0] }
        }

        /// A gated call's verdict and who gave it, or the commands that give one.
        static func approvalRows(_ a: [String: JSONValue]) -> [[String]] {
            guard let verdict = a["verdict"]?.stringValue else {
                return [["approval", "awaiting an operator's verdict"], ["approve with", a["approve"]?.stringValue ?? ""],
                        ["deny with", a["deny"]?.stringValue ?? ""]]
            }
            let uid = a["uid"]?.integer(Int.self).map { " (uid \($0))" } ?? ""
            let note = a["note"]?.stringValue ?? ""
            return [["approval", "\(verdict) by \(a["by"]?.stringValue ?? "?")\(uid) at \(a["at"]?.stringValue ?? "?")"]]
                + (note.isEmpty ? [] : [["approval note", note]])
        }

        /// What an operator settling an in-doubt call goes on: who was running it and what
        /// became of them, how long the tool ran and what it printed before the crash.
        static func evidenceRows(_ e: [String: JSONValue]) -> [[String]] {
            func text(_ key: String) -> String? { e[key]?.stringValue }
            var rows: [[String]] = []
            if let reason = text("reason") { rows.append(["in doubt because", reason]) }
            if let owner = text("owner") { rows.append(["owner", owner + (text("ownerFate").map { ": " + $0 } ?? "")]) }
            if let by = text("foundBy") { rows.append(["found dead by", by]) }
            guard e["captured"] == .bool(true) else {
                rows.append(["output so far", "not captured (ward could not write its capture file, or this ledger predates it)"])
                return rows
            }
            let ranFor = e["ranForMs"]?.integer(Int.self).map { String(format: "%.1f s", Double($0) / 1000) } ?? "?"
            rows.append(["last sign of life", "\(text("lastSignOfLife") ?? "?") (ran at least \(ranFor) before ward died)"])
            if let exit = e["toolExit"]?.objectValue {
                let how = exit["exitCode"]?.integer(Int.self).map { "exited \($0)" } ?? exit["signal"]?.integer(Int.self).map { "killed by signal \($0)" }
                    ?? (exit["status"]?.stringValue ?? "ended")
                rows.append(["tool exit", "\(how) after \(exit["durationMs"]?.canonical ?? "?") ms: ward died before recording it"])
            } else {
                rows.append(["tool exit", "not seen: the tool was still running when ward died (and died with it)"])
            }
            for stream in ["stdout", "stderr"] {
                let label = "\(stream) so far"
                if let t = text(stream + "SoFar") { rows.append([label, t]) } else if let b = text(stream + "SoFarBase64") { rows.append([label + " (base64)", b]) }
            }
            return rows
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Recompute the hash chains and hold every recorded field to its events; name the first thing altered, removed, inserted or reordered (exit 1).")
        @OptionGroup var options: LedgerOptions
        @Option(name: .customLong("run"), help: "Only this run.") var runID: String?
        @Flag(help: "JSON output.") var json = false

        func validate() throws { try Checks.nonEmpty(runID, "--run") }

        func run() throws {
            let ledger = try options.open(readOnly: true)
            let report = try ledgerCall { () throws(LedgerError) in try ledger.verify(run: runID) }
            if json {
                printJSON(.object(["ok": .bool(report.ok), "runs": .array(report.runs.map { r in
                    .object(["run": .string(r.run), "events": .number(Double(r.events)), "head": .string(r.head),
                             "problem": r.problem.map { .string($0) } ?? .null, "note": r.note.map { .string($0) } ?? .null])
                })]))
            } else {
                print(Table.render(["RUN", "EVENTS", "HEAD", "RESULT"], report.runs.map { r in
                    [r.run, String(r.events), String(r.head.prefix(16)), r.problem ?? (r.note.map { "ok (\($0))" } ?? "ok")]
                }))
                for r in report.runs where r.problem != nil { Output.line(2, "ward: \(r.problem!)") }
            }
            if !report.ok { throw ExitCode(1) }
        }
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export events as JSON Lines.",
            discussion: "One object per event: {\"run\", \"seq\", \"at\", \"kind\", \"callId\", \"data\", \"prevHash\", \"hash\"}, in chain order."
        )
        @OptionGroup var options: LedgerOptions
        @Option(name: .customLong("run"), help: "Only this run.") var runID: String?
        @Option(help: "Output format (jsonl).") var format: String = "jsonl"

        func validate() throws {
            try Checks.nonEmpty(runID, "--run")
            guard format == "jsonl" else { throw ValidationError("unknown format \"\(format)\" (supported: jsonl)") }
        }

        func run() throws {
            let ledger = try options.open(readOnly: true)
            let events = try ledgerCall { () throws(LedgerError) in try ledger.exportEvents(run: runID) }
            var out: [UInt8] = []
            for e in events {
                out += Array(e.json.canonical.utf8)
                out.append(0x0A)
                if out.count > 1 << 16 { Output.write(1, out); out.removeAll(keepingCapacity: true) }
            }
            Output.write(1, out)
        }
    }

    struct Resolve: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Settle an in-doubt call with an operator's verdict.")
        @OptionGroup var options: LedgerOptions
        @Argument(help: "Run ID.") var runID: String
        @Argument(help: "Call ID.") var call: String
        @Option(name: .customLong("as"), help: "executed or not-executed.") var verdict: Ledger.Verdict
        @Option(help: "Why: what the operator checked.") var note: String
        @Flag(help: "JSON output.") var json = false

        func validate() throws {
            try Checks.nonEmpty(runID, "the run ID")
            try Checks.nonEmpty(call, "the call ID")
            // The note is the audit's only record of why: an empty one records nothing.
            guard note.contains(where: { !$0.isWhitespace }) else { throw ValidationError("--note must say what was checked") }
        }

        func run() throws {
            let ledger = try options.open(existing: true, recover: false)  // a refused verdict changes nothing
            try ledgerCall { () throws(LedgerError) in try ledger.resolve(run: runID, callId: call, as: verdict, note: note) }
            if json {
                printJSON(.object(["run": .string(runID), "callId": .string(call), "verdict": .string(verdict.rawValue), "note": .string(note)]))
            } else {
                Output.line(1, "call \(call) of run \(runID) resolved as \(verdict.rawValue)")
            }
        }
    }
}

extension LedgerCommand {
    struct Reconcile: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Settle in-doubt calls with their tools' reconcile commands.",
            discussion: "Each runs in its tool's sandbox with the call's arguments and WARD_RECONCILE=1: exit 0 = executed (its stdout is recorded), exit 3 = not executed, anything else = still in doubt. Exit 1 when calls remain in doubt."
        )
        @OptionGroup var options: LedgerOptions
        @OptionGroup var policyOptions: PolicyOptions
        @Option(name: .customLong("run"), help: "Only this run.") var runID: String?
        @Option(name: .customLong("call"), help: "Only this call.") var callID: String?
        @Flag(name: .customLong("move-workspace"), help: "The run's workspace was moved to --workspace: use it, and record the move.")
        var moveWorkspace = false
        @Flag(help: "JSON output.") var json = false

        func validate() throws {
            try Checks.nonEmpty(runID, "--run")
            try Checks.nonEmpty(callID, "--call")
        }

        func run() throws {
            let ledger = try options.open(existing: true)
            // Each run is reconciled in the workspace it ran in, with the policies it used:
            // a reconcile command run anywhere else finds no effect and would let the call
            // run twice. A missing or different workspace is refused, never made anew.
            let calls = try ledgerCall { () throws(LedgerError) in try ledger.inDoubtCalls(run: runID, callId: callID) }
            var runs: [String] = []
            for call in calls where !runs.contains(where: { ExactString($0) == ExactString(call.run) }) { runs.append(call.run) }
            var findings: [(InDoubtCall, Reconciler.Finding)] = []
            for run in runs {
                let place = try policyOptions.place(of: run, in: ledger, create: false, defaultAllowed: false)
                let policies = try PolicyOptions.load(place.policies)
                try Checks.layout(policies: policies, workspace: place.workspace, ledger: ledger)
                try policyOptions.claim(place, run: run, in: ledger, moved: moveWorkspace)
                let sandbox = try policyOptions.sandbox(policies, workspace: place.workspace)
                findings += try ledgerCall { () throws(LedgerError) in try Reconciler(ledger: ledger, sandbox: sandbox).reconcileAll(run: run, callId: callID) }
            }
            if json {
                printJSON(.array(findings.map { call, finding in
                    var item: [String: JSONValue] = ["run": .string(call.run), "callId": .string(call.callId), "tool": .string(call.tool)]
                    switch finding {
                    case .executed: item["finding"] = .string("executed")
                    case .notExecuted: item["finding"] = .string("not-executed")
                    case .undecided(let why): item["finding"] = .string("in-doubt"); item["reason"] = .string(why)
                    }
                    return .object(item)
                }))
            } else {
                print(Table.render(["RUN", "CALL", "TOOL", "FINDING"], findings.map { call, finding in
                    let text: String
                    switch finding {
                    case .executed: text = "executed (resolved)"
                    case .notExecuted: text = "not executed (resolved; may run again)"
                    case .undecided(let why): text = "still in doubt: \(why)"
                    }
                    return [call.run, call.callId, call.tool, text]
                }))
            }
            if findings.contains(where: { if case .undecided = $0.1 { return true }; return false }) { throw ExitCode(1) }
        }
    }
}

struct RunsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "runs", abstract: "Runs and their attempts.", subcommands: [List.self, Fork.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List runs; unfinished ones are marked, with the command that resumes each.",
            discussion: "Unfinished: the agent never exited for good (ward stopped, was killed, or still serves it), or last exited with a failure, or calls are running, in doubt or awaiting approval. JSON: one object per run, `resume` holding that command (null for a finished run)."
        )
        @OptionGroup var options: LedgerOptions
        @Flag(help: "JSON output.") var json = false

        func run() throws {
            let ledger = try options.open(readOnly: true)
            let runs = try ledgerCall { () throws(LedgerError) in try ledger.listRuns() }
            func resume(_ r: RunSummary) -> String? { r.unfinished ? ledger.resumeCommand(run: r.run, agent: r.agent) : nil }
            if json {
                return printJSON(.array(runs.map { r in
                    var members = r.json.objectValue ?? [:]
                    members["resume"] = resume(r).map { .string($0) } ?? .null
                    return .object(members)
                }))
            }
            print(Table.render(["RUN", "STATE", "ATTEMPTS", "CALLS", "RUNNING", "IN-DOUBT", "APPROVALS", "CHECKPOINTS", "FORK OF", "CREATED", "UPDATED"], runs.map { r in
                [r.run, r.unfinished ? "unfinished" : "finished (exit \(r.exitStatus ?? 0))", String(r.attempts), String(r.calls),
                 String(r.running), String(r.inDoubt), String(r.awaitingApproval), String(r.checkpoints),
                 r.origin.map { "\($0)@\(r.forkedAt ?? 0)" } ?? "", r.createdAt, r.updatedAt]
            }))
            let unfinished = runs.filter(\.unfinished)
            if !unfinished.isEmpty { print("\nto resume an unfinished run:") }
            for r in unfinished { print("  \(TerminalText.escape(r.run)): \(TerminalText.escape(resume(r) ?? ""))") }
        }
    }

    struct Fork: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a new run from a run's history up to one of its checkpoints.",
            discussion: """
                The new run holds the calls, journal entries and checkpoints that checkpoint SEQ knew of, and the outcomes of those calls recorded since. An agent started in it (`ward run --run-id NEW -- AGENT`) resumes at checkpoint SEQ: the calls it repeats are replayed, new ones run, in the origin's workspace with its policies. The origin is not changed. Exit 1 while a call begun before the checkpoint is still running.
                """
        )
        @OptionGroup var options: LedgerOptions
        @Argument(help: "The run to fork.") var runID: String
        // .unconditional: "--at -1" is a value to refuse, not an unknown option.
        @Option(parsing: .unconditional, help: "The checkpoint to fork at (1 is a run's first).") var at: Int
        @Option(name: .customLong("run-id"), help: "The new run's ID (default: generated).") var newRunID: String?
        @Flag(help: "JSON output.") var json = false

        func validate() throws {
            try Checks.nonEmpty(runID, "the run ID")
            if at < 1 { throw ValidationError("--at must be 1 or more (checkpoints are numbered from 1)") }
            if let newRunID, let problem = Identifier.runIDProblem(in: newRunID) {
                throw ValidationError("--run-id: the run ID \(problem)")
            }
        }

        func run() throws {
            let ledger = try options.open(existing: true, recover: false)  // a refused fork changes nothing
            let fork: ForkedRun
            do { fork = try ledger.fork(run: runID, at: at, as: newRunID ?? RunOptions.generatedRunID) } catch {
                // A call still running is the origin's state, not the request: asked again later, it forks.
                throw error.code == .inProgress ? CLIError(message: error.message, exitCode: 1) : CLIError.from(error)
            }
            if json {
                return printJSON(.object(["run": .string(fork.run), "origin": .string(fork.origin), "checkpoint": .number(Double(fork.checkpoint)),
                                          "events": .number(Double(fork.events)), "calls": .number(Double(fork.calls))]))
            }
            Output.line(1, fork.run)
            Output.line(2, "run \(fork.run) is a fork of run \(fork.origin) at checkpoint \(fork.checkpoint) (\(fork.calls) calls, \(fork.events) events copied); start it with: ward run --run-id \(Shell.quote(fork.run))\(options.ledger == LedgerOptions.defaultLedger ? "" : " --ledger \(Shell.quote(options.ledger))") -- AGENT...")
        }
    }
}

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "checkpoint", abstract: "A run's checkpoints.", subcommands: [Show.self])

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a checkpoint's state (the latest unless --seq).")
        @OptionGroup var options: LedgerOptions
        @Argument(help: "Run ID.") var runID: String
        // .unconditional: "--seq -1" is a value to refuse, not an unknown option.
        @Option(parsing: .unconditional, help: "Sequence number (1 is a run's first checkpoint).") var seq: Int?
        @Flag(help: "JSON output: {seq, state} with state as JSON when it is JSON, else a string or base64.") var json = false

        func validate() throws {
            try Checks.nonEmpty(runID, "the run ID")
            if let seq, seq < 1 { throw ValidationError("--seq must be 1 or more (checkpoints are numbered from 1)") }
        }

        func run() throws {
            let ledger = try options.open(readOnly: true)
            guard let checkpoint = try ledgerCall({ () throws(LedgerError) in try ledger.loadCheckpoint(run: runID, seq: seq) }) else {
                throw CLIError.usage(seq.map { "run \(runID) has no checkpoint \($0)" } ?? "run \(runID) has no checkpoints")
            }
            if json {
                let state: JSONValue
                if let parsed = try? JSONValue.parse(checkpoint.state) { state = parsed }
                else if let text = String(validating: checkpoint.state, as: UTF8.self) { state = .string(text) }
                else { return printJSON(.object(["seq": .number(Double(checkpoint.seq)), "stateBase64": .string(Base64.encode(checkpoint.state))])) }
                return printJSON(.object(["seq": .number(Double(checkpoint.seq)), "state": state]))
            }
            let all = try ledgerCall { () throws(LedgerError) in try ledger.listCheckpoints(run: runID) }
            let meta = all.compactMap(\.objectValue).first { $0["seq"] == .number(Double(checkpoint.seq)) }
            Output.line(2, "run \(runID), checkpoint \(checkpoint.seq) of \(all.count), \(checkpoint.state.count) bytes, \(meta?["createdAt"]?.stringValue ?? "")\(meta?["label"]?.stringValue.map { ", " + $0 } ?? "")")
            // The agent's own bytes: exact into a pipe, escaped on a terminal.
            Output.stream(1, checkpoint.state)
            if checkpoint.state.last != 0x0A { Output.write(1, [0x0A]) }
        }
    }
}
