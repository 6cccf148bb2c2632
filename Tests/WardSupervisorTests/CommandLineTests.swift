import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// Runs `command` (a shell command line) on a pseudo-terminal, as an operator would see it.
func onTerminal(_ command: String, in directory: String) throws -> String {
    try runProgram("/usr/bin/script", ["-qec", command, "/dev/null"], in: directory).output
}

/// The elements of a JSON array.
func elements(_ value: JSONValue?) -> [JSONValue]? {
    if case .array(let a)? = value { return a }
    return nil
}

/// `s` as one shell word.
func shellQuoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }

/// What would act on a terminal: C0 controls other than line breaks, DEL, C1, bidi overrides.
func terminalControls(_ text: String) -> [Unicode.Scalar] {
    text.unicodeScalars.filter { TerminalText.needsEscape($0) && $0 != "\n" && $0 != "\t" && $0 != "\r" }
}

@Suite("Command line: human output is safe to print", .serialized)
struct TerminalSafetyTests {
    // Every value an agent or a tool chooses, each with something a terminal would act on.
    static let run = "run\u{1b}]0;pwned\u{07}"
    static let call = "call\u{202e}gpj.exe"
    static let tool = "tool\u{9b}31m"
    static let stdout = "out\u{1b}]52;c;aGk=\u{07}\nsecond line\n"
    static let note = "checked\u{1b}[2J by hand"
    static let label = "label\u{1b}[31m"

    /// A ledger holding a finished call, a resolved one and a checkpoint, all hostile.
    static let directory: String = {
        let dir = temporaryDirectory("cli-hostile")
        let ledger = try! Ledger(path: dir + "/ledger.sqlite")
        func begin(_ id: String) -> CallTicket {
            let request = BeginRequest(run: run, callId: id, tool: tool, effect: .nonIdempotent, arguments: .object(["k": .string("\u{1b}[2J")]),
                                       policyHash: "p", executable: "/bin/true", attempt: 1)
            guard case .execute(let ticket) = try! ledger.begin(request) else { fatalError("replayed") }
            return ticket
        }
        _ = try! ledger.finish(begin(call), outcome: ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array(stdout.utf8),
                                                                 stderr: Array("err\u{1b}[K".utf8), truncated: false, durationMs: 1))
        try! ledger.markInDoubt(begin(call + "2"), reason: "crash")
        try! ledger.resolve(run: run, callId: call + "2", as: .executed, note: note)
        _ = try! ledger.saveCheckpoint(run: run, state: Array("state\u{1b}]52;c;aGk=\u{07}".utf8), label: label)
        return dir
    }()

    func ward(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try WardSupervisorTests.ward(args + ["--ledger", TerminalSafetyTests.directory + "/ledger.sqlite"], in: TerminalSafetyTests.directory)
    }

    @Test func ledgerListShowVerifyAndRunsListEscapeWhatAgentsChose() throws {
        let outputs = [
            try ward(["ledger", "list"]), try ward(["ledger", "show", Self.run, Self.call]), try ward(["ledger", "show", Self.run, Self.call + "2"]),
            try ward(["ledger", "verify"]), try ward(["runs", "list"]),
        ]
        for r in outputs {
            #expect(r.status == 0, "\(r.stderr)")
            #expect(terminalControls(r.stdout + r.stderr).isEmpty, "raw controls in:\n\(r.stdout)")
            #expect(r.stdout.contains(#"run\x1b]0;pwned\x07"#), "\(r.stdout)")
        }
        let list = outputs[0].stdout
        #expect(list.contains(#"call\u{202e}gpj.exe"#) && list.contains(#"tool\u{9b}31m"#), "\(list)")
        // One line per call under the header: no value can pose as a row.
        #expect(list.split(separator: "\n").count == 3, "\(list)")
        let show = outputs[1].stdout
        #expect(show.contains(#"out\x1b]52;c;aGk=\x07\x0asecond line\x0a"#) && show.contains(#"err\x1b[K"#), "\(show)")
        #expect(outputs[2].stdout.contains(#"checked\x1b[2J by hand"#), "\(outputs[2].stdout)")
    }

    @Test func jsonAndExportStayExact() throws {
        let list = try ward(["ledger", "list", "--json"])
        let calls = try #require(elements(try JSONValue.parse(list.stdout)))
        #expect(calls.compactMap { $0.objectValue?["callId"]?.stringValue }.sorted() == [Self.call, Self.call + "2"])
        let show = try JSONValue.parse(try ward(["ledger", "show", Self.run, Self.call, "--json"]).stdout)
        #expect(show.objectValue?["result"]?.objectValue?["stdout"] == .string(Self.stdout))
        let export = try ward(["ledger", "export"])
        let events = try export.stdout.split(separator: "\n").map { try JSONValue.parse(String($0)) }
        #expect(events.contains { $0.objectValue?["run"] == .string(Self.run) })
    }

    @Test func checkpointStateIsExactIntoAPipeAndEscapedOnATerminal() throws {
        let piped = try ward(["checkpoint", "show", Self.run])
        #expect(piped.status == 0)
        #expect(piped.stdout == "state\u{1b}]52;c;aGk=\u{07}\n")
        #expect(piped.stderr.contains(#"label\x1b[31m"#) && terminalControls(piped.stderr).isEmpty, "\(piped.stderr)")
        let shown = try onTerminal(([Paths.ward, "checkpoint", "show", Self.run, "--ledger", "ledger.sqlite"]).map(shellQuoted).joined(separator: " "),
                                   in: Self.directory)
        #expect(shown.contains(#"state\x1b]52;c;aGk=\x07"#) && terminalControls(shown).isEmpty, "\(shown)")
    }

    @Test func resolveAndErrorMessagesEscapeTheIDsTheyRepeat() throws {
        let missing = try ward(["ledger", "show", Self.run, "nope\u{1b}[2J"])
        #expect(missing.status == 2)
        #expect(missing.stderr.hasPrefix("ward: ") && missing.stderr.contains(#"nope\x1b[2J"#) && terminalControls(missing.stderr).isEmpty, "\(missing.stderr)")
        let resolved = try ward(["ledger", "resolve", Self.run, Self.call + "2", "--as", "executed", "--note", "again"])
        #expect(terminalControls(resolved.stdout + resolved.stderr).isEmpty, "\(resolved)")
        #expect((resolved.stdout + resolved.stderr).contains(#"call\u{202e}gpj.exe2"#), "\(resolved)")
    }

    @Test func sandboxPassesToolOutputThroughIntoAPipeAndEscapesItOnATerminal() throws {
        let dir = temporaryDirectory("cli-sandbox")
        let args = ["sandbox", "--policies", Paths.repository + "/policies", "shell", "--arg", #"command=printf '\033]0;pwned\007x\\y\n' >&2; printf '\033]52;c;aGk=\007\n'"#]
        let piped = try WardSupervisorTests.ward(args, in: dir)
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stdout == "\u{1b}]52;c;aGk=\u{07}\n" && piped.stderr == "\u{1b}]0;pwned\u{07}x\\y\n")
        let shown = try onTerminal(([Paths.ward] + args).map(shellQuoted).joined(separator: " "), in: dir)
        #expect(shown.contains(#"\x1b]52;c;aGk=\x07"#) && shown.contains(#"\x1b]0;pwned\x07x\\y"#) && terminalControls(shown).isEmpty, "\(shown)")
    }
}

@Suite("Command line: says no to what it does not understand")
struct CommandLineTests {
    static let directory = temporaryDirectory("cli")

    /// `ward ARGS` in a fresh directory, with an empty ledger there.
    func ward(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try WardSupervisorTests.ward(args, in: CommandLineTests.directory)
    }

    /// Exit 2 and exactly one line, `ward: …` containing every one of `needles`.
    func expectUsageError(_ args: [String], _ needles: String..., sourceLocation: SourceLocation = #_sourceLocation) throws {
        let r = try ward(args)
        #expect(r.status == 2, "\(args): exit \(r.status), \(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stderr.hasPrefix("ward: ") && r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)", sourceLocation: sourceLocation)
        for needle in needles { #expect(r.stderr.contains(needle), "\(args): \(r.stderr) lacks \(needle)", sourceLocation: sourceLocation) }
    }

    static let ledger: String = {
        let path = directory + "/ledger.sqlite"
        let l = try! Ledger(path: path)
        let request = BeginRequest(run: "r", callId: "c1", tool: "t", effect: .idempotent, arguments: .object([:]), policyHash: "p", executable: "/bin/true", attempt: 1)
        guard case .execute(let ticket) = try! l.begin(request) else { fatalError("replayed") }
        _ = try! l.finish(ticket, outcome: ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: [], stderr: [], truncated: false, durationMs: 1))
        return path
    }()

    @Test func listRefusesAnUnknownStatusAndNamesTheKnownOnes() throws {
        try expectUsageError(["ledger", "list", "--ledger", Self.ledger, "--status", "indoubt"], "indoubt", "in-doubt", "timed-out", "succeeded")
        let r = try ward(["ledger", "list", "--ledger", Self.ledger, "--status", "succeeded"])
        #expect(r.status == 0 && r.stdout.contains("c1"), "\(r)")
    }

    @Test func sinceIsParsedStrictly() throws {
        for bad in ["yesterday", "2026-13-01", "2026-02-30", "2026-11-21T25:00", "2026-11-21T20:00+25:00", "10x", "-5m", "", "2026-11-21Z"] {
            try expectUsageError(["ledger", "list", "--ledger", Self.ledger, "--since", bad], "--since")
        }
        // The call was recorded just now: an hour ago and a date long past include it, a future one does not.
        for (since, included) in [("1h", true), ("2000-01-01", true), ("2000-01-01T00:00:00.5+02:00", true), ("2999-01-01T00:00Z", false), ("0s", false)] {
            let r = try ward(["ledger", "list", "--ledger", Self.ledger, "--since", since, "--json"])
            #expect(r.status == 0, "\(since): \(r.stderr)")
            #expect(r.stdout.contains("\"c1\"") == included, "\(since): \(r.stdout)")
        }
    }

    @Test func numbersIDsAndChoicesOutOfRangeAreRefused() throws {
        try expectUsageError(["run", "--max-restarts", "-1", "--", "true"], "--max-restarts", "-1")
        try expectUsageError(["run", "--grace", "-5", "--", "true"], "--grace")
        try expectUsageError(["run", "--grace", "nan", "--", "true"], "--grace")
        try expectUsageError(["run", "--restart", "sometimes", "--", "true"], "sometimes", "on-failure")
        try expectUsageError(["run", "--resume", "maybe", "--", "true"], "maybe", "auto")
        try expectUsageError(["run", "--resume", "always", "--run-id", "r", "--", "true"], "--resume", "--run-id")
        try expectUsageError(["run", "--run-id", "", "--", "true"], "--run-id")
        try expectUsageError(["serve", "--run-id", ""], "--run-id")
        try expectUsageError(["checkpoint", "show", "--ledger", Self.ledger, "r", "--seq", "0"], "--seq")
        try expectUsageError(["checkpoint", "show", "--ledger", Self.ledger, "r", "--seq", "-3"], "--seq")
        try expectUsageError(["call", "--call-id", "", "shell", "--socket", "/nonexistent"], "--call-id")
        try expectUsageError(["ledger", "list", "--ledger", Self.ledger, "--run", ""], "--run")
        try expectUsageError(["ledger", "resolve", "--ledger", Self.ledger, "r", "c1", "--as", "executed", "--note", " "], "--note")
        try expectUsageError(["ledger", "list", "--ledger", Self.ledger, "--bogus"], "--bogus")
    }

    @Test func sandboxRefusesArgumentsTheToolDoesNotDeclare() throws {
        let policies = Paths.repository + "/policies"
        try expectUsageError(["sandbox", "--policies", policies, "shell", "--arg", "command=touch ran", "--arg", "extra=1"], #"no argument "extra" (its arguments: "command")"#)
        try expectUsageError(["sandbox", "--policies", policies, "shell", "--args-json", #"{"command": "touch ran", "comand": "x"}"#], "\"comand\"")
        try expectUsageError(["sandbox", "--policies", policies, "shell", "--args-json", #"{"command": "touch ran"}"#, "--arg", "command=x"], "given twice")
        #expect(!FileManager.default.fileExists(atPath: Self.directory + "/workspace/ran"), "a refused call ran")
        let ok = try ward(["sandbox", "--policies", policies, "shell", "--arg", "command=echo fine"])
        #expect(ok.status == 0 && ok.stdout == "fine\n", "\(ok)")
    }

    /// tool.call refuses an undeclared argument as ward sandbox does; ward call passes a tool's
    /// output through into a pipe exactly and escapes it on a terminal.
    @Test func callThroughTheSupervisor() throws {
        let dir = temporaryDirectory("cli-call")
        let serve = try startServe(in: dir, run: "cli-call")
        defer { serve.terminate(); serve.waitUntilExit() }
        let socket = dir + "/s.sock"
        let refused = try WardSupervisorTests.ward(["call", "--socket", socket, "--call-id", "c1", "shell", "--arg", "command=touch ran", "--arg", "extra=1"], in: dir)
        #expect(refused.status == 2, "\(refused)")
        #expect(refused.stderr == "ward: invalid-arguments: tool shell has no argument \"extra\" (its arguments: \"command\")\n", "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/workspace/ran"), "a refused call ran")
        let args = ["call", "--socket", socket, "--call-id", "c2", "shell", "--arg", #"command=printf '\033]52;c;aGk=\007\n'"#]
        let piped = try WardSupervisorTests.ward(args, in: dir)
        #expect(piped.status == 0 && piped.stdout == "\u{1b}]52;c;aGk=\u{07}\n", "\(piped)")
        // The same call ID replays the recorded output, now onto a terminal.
        let shown = try onTerminal(([Paths.ward] + args).map(shellQuoted).joined(separator: " "), in: dir)
        #expect(shown.contains(#"\x1b]52;c;aGk=\x07"#) && terminalControls(shown).isEmpty, "\(shown)")
        // The exit status says how the tool ended; --json prints the whole CallResult.
        let failed = try WardSupervisorTests.ward(["call", "--socket", socket, "--call-id", "c3", "shell", "--arg", "command=printf no >&2; exit 3"], in: dir)
        #expect(failed.status == 3 && failed.stderr == "no", "\(failed)")
        let killed = try WardSupervisorTests.ward(["call", "--socket", socket, "--call-id", "c4", "shell", "--arg", "command=kill -9 $$"], in: dir)
        #expect(killed.status == 128 + 9, "\(killed)")
        let json = try WardSupervisorTests.ward(["call", "--socket", socket, "--call-id", "c3", "--json", "shell", "--arg", "command=printf no >&2; exit 3"], in: dir)
        let result = try #require(CallResult(json: try JSONValue.parse(json.stdout)), "\(json)")
        #expect(json.status == 3 && result.outcome.status == .failed && result.outcome.exitCode == 3 && result.replayed, "\(json)")
        #expect(result.outcome.stderr == Array("no".utf8), "\(json)")
    }

    @Test func aMissingPolicyDirectoryIsAUsageErrorEverywhere() throws {
        for args in [["policy", "check", "/nonexistent/policies"], ["sandbox", "--policies", "/nonexistent/policies", "shell"],
                     ["policy", "explain", "--policies", "/nonexistent/policies", "shell"]] {
            try expectUsageError(args, "/nonexistent/policies")
        }
    }

    @Test func policyCheckPrintsEveryDiagnosticAlikeAndInOrder() throws {
        let dir = temporaryDirectory("cli-policies")
        try "[tools.z]\nnetwork = \"maybe\"\ncommand = [\"/bin/true\"]\nsyscalls = [\"@default\"]\n".write(toFile: dir + "/b.toml", atomically: true, encoding: .utf8)
        try "[tools.a]\ncommand = [\"/bin/true\"]\nsyscalls = [\"@default\"]\nbogus = 1\neffect = \"sometimes\"\n[tools.b]\nnonsense = 2\n".write(toFile: dir + "/a.toml", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: Paths.repository + "/policies/syscall-sets.toml", toPath: dir + "/syscall-sets.toml")
        let r = try ward(["policy", "check", dir])
        #expect(r.status == 1, "\(r)")
        var lines = r.stderr.split(separator: "\n").map(String.init)
        #expect(lines.popLast()?.hasPrefix("ward: ") == true, "\(r.stderr)")
        #expect(lines.count >= 4, "\(r.stderr)")
        // FILE:LINE:COL: message, every one, sorted by file, line, column.
        let positions = lines.map { line -> (String, Int, Int) in
            let parts = line.split(separator: ":", maxSplits: 3).map(String.init)
            guard parts.count == 4, let l = Int(parts[1]), let c = Int(parts[2]), parts[3].hasPrefix(" ") else {
                Issue.record("not FILE:LINE:COL: message: \(line)")
                return ("", 0, 0)
            }
            return (parts[0], l, c)
        }
        #expect(positions.map(\.0).allSatisfy { $0.hasPrefix(dir) }, "\(lines)")
        #expect(zip(positions, positions.dropFirst()).allSatisfy { $0 <= $1 }, "not sorted:\n\(r.stderr)")
        #expect(positions.first?.0.hasSuffix("/a.toml") == true && positions.last?.0.hasSuffix("/b.toml") == true, "\(lines)")
        let ok = try ward(["policy", "check", Paths.repository + "/policies"])
        #expect(ok.status == 0 && ok.stderr.isEmpty, "\(ok)")
    }

    /// `[servers.NAME]` tables are checked alike, and a valid one is listed.
    @Test func policyCheckCoversMCPServers() throws {
        let dir = temporaryDirectory("cli-servers")
        try FileManager.default.copyItem(atPath: Paths.repository + "/policies/syscall-sets.toml", toPath: dir + "/syscall-sets.toml")
        let server = "[defaults]\nsyscalls = [\"@default\"]\n[servers.time]\ncommand = [\"/bin/true\"]\n[servers.time.tools.now]\neffect = \"read-only\"\n"
        try (server + "[servers.time.tools.later]\neffect = \"often\"\n").write(toFile: dir + "/s.toml", atomically: true, encoding: .utf8)
        let bad = try ward(["policy", "check", dir])
        #expect(bad.status == 1 && bad.stderr.hasPrefix(dir + "/s.toml:8:1: effect must be one of read-only, idempotent, non-idempotent (got \"often\")"), "\(bad)")
        try server.write(toFile: dir + "/s.toml", atomically: true, encoding: .utf8)
        let good = try ward(["policy", "check", dir])
        #expect(good.status == 0 && good.stdout == "\(dir): 0 tools OK (); 1 MCP servers OK (time)\n", "\(good)")
    }

    @Test func explainShowsTheWorkspaceAsAnAbsolutePath() throws {
        let r = try ward(["policy", "explain", "--policies", Paths.repository + "/policies", "--workspace", "ws/./x", "shell"])
        #expect(r.status == 0, "\(r.stderr)")
        let real = URL(fileURLWithPath: Self.directory).resolvingSymlinksInPath().path
        #expect(r.stdout.contains("HOME=\(Self.directory)/ws/x\n") || r.stdout.contains("HOME=\(real)/ws/x\n"), "\(r.stdout)")
        #expect(!r.stdout.contains("HOME=ws"), "\(r.stdout)")
    }

    /// The memory limit says how it is enforced: per call where a memory cgroup is writable
    /// (root here), per process (RLIMIT_AS) where none is (an unprivileged user here, with no
    /// delegated cgroup).
    @Test func explainSaysWhetherMemoryIsLimitedPerCallOrPerProcess() throws {
        let root = try ward(["policy", "explain", "--policies", Paths.repository + "/policies", "shell"])
        #expect(root.status == 0 && root.stdout.contains("memory 1 GiB per call (memory cgroup)"), "\(root)")
        // A copy nobody can read wherever the checkout lies (a clone under a 0700 directory).
        let policies = makeTemporaryDirectory("ward-explain-policies")
        chmod(policies, 0o755)
        for name in ["syscall-sets.toml", "tools.toml"] {
            try FileManager.default.copyItem(atPath: Paths.repository + "/policies/" + name, toPath: policies + "/" + name)
        }
        let nobody = try runProgram("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", Paths.ward,
                                                         "policy", "explain", "--policies", policies, "--workspace", "/tmp", "shell"], in: "/tmp")
        #expect(nobody.status == 0 && nobody.output.contains("memory 1 GiB PER PROCESS (RLIMIT_AS;"), "\(nobody.output)")
    }

    @Test func versionIsPrinted() throws {
        let r = try ward(["--version"])
        #expect(r.status == 0)
        #expect(r.stdout.wholeMatch(of: /\d+\.\d+\.\d+\n/) != nil, "\(r.stdout)")
        let doctor = try JSONValue.parse(try ward(["doctor", "--json"]).stdout)
        #expect(doctor.objectValue?["version"]?.stringValue == r.stdout.dropLast().description)
    }

    @Test func doctorJSONHasStableKeysAndTheTableStaysAligned() throws {
        let r = try ward(["doctor", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let features = try #require(elements(try JSONValue.parse(r.stdout).objectValue?["features"]))
        #expect(features.compactMap { $0.objectValue?["key"]?.stringValue } == ["seccomp", "landlock", "user-namespaces", "privileged", "isolation", "cgroups", "effect-trace"])
        for feature in features.compactMap(\.objectValue) {
            #expect(Set(feature.keys) == ["key", "name", "available", "state", "effect", "without"], "\(feature)")
            if case .bool? = feature["available"] {} else { Issue.record("available is not a boolean: \(feature)") }
            #expect(feature["without"]?.stringValue?.isEmpty == false)
        }
        // In the table, each feature's state and effect start at the same column on every row.
        let table = try ward(["doctor"]).stdout.split(separator: "\n").map(String.init)
        var stateColumns: Set<Int> = [], effectColumns: Set<Int> = []
        for feature in features.compactMap(\.objectValue) {
            let name = feature["name"]!.stringValue!, effect = feature["effect"]!.stringValue!
            let firstState = String(feature["state"]!.stringValue!.split(separator: ";").first!.trimmingCharacters(in: .whitespaces))
            let line = try #require(table.first { $0.hasPrefix(name + "  ") }, "no row for \(name) in \(table)")
            stateColumns.insert(line.distance(from: line.startIndex, to: try #require(line.range(of: "  " + firstState)).lowerBound) + 2)
            effectColumns.insert(line.distance(from: line.startIndex, to: try #require(line.range(of: effect, options: .backwards)).lowerBound))
        }
        #expect(stateColumns.count == 1 && effectColumns.count == 1, "columns move:\n\(table.joined(separator: "\n"))")
    }
}
