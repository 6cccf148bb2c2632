import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// `ward run` without `--run-id` and an unfinished run of the same agent in the same
/// workspace (docs/design.md, *Offer to resume*): asked on a terminal, decided by `--resume`
/// without one, never offered for another agent or workspace, and listed by `ward runs list`
/// with the command that resumes it.
@Suite("ward run offers to resume an unfinished run", .serialized)
struct ResumeOfferTests {
    func workdir() throws -> String {
        let dir = temporaryDirectory("resume")
        try agentScript.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        return dir
    }

    let agent = ["python3", "agent.py", Paths.repository + "/python"]

    func args(_ dir: String, _ extra: [String] = [], agent: [String]? = nil) -> [String] {
        ["run", "--policies", Paths.repository + "/policies", "--socket", dir + "/s.sock", "--max-restarts", "0"] + extra + ["--"] + (agent ?? self.agent)
    }

    /// Runs the agent without a run ID until it crashes after step 2 (not restarted): an
    /// unfinished run with three calls done and checkpoint 3; returns its ID.
    func unfinishedRun(in dir: String, _ extra: [String] = [], sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
        let before = Set(try runs(in: dir).keys)
        let r = try ward(args(dir, extra), in: dir, environment: ["CRASH_AT": "2"])
        #expect(r.status == 9 && r.stdout.hasSuffix("2 ran\n"), "\(r.stdout)\(r.stderr)", sourceLocation: sourceLocation)
        return try #require(Set(try runs(in: dir).keys).subtracting(before).first, sourceLocation: sourceLocation)
    }

    /// `ward runs list --json`, by run ID.
    func runs(in dir: String) throws -> [String: [String: JSONValue]] {
        guard FileManager.default.fileExists(atPath: dir + "/.ward/ledger.sqlite") else { return [:] }
        let r = try ward(["runs", "list", "--json"], in: dir)
        guard case .array(let items) = try JSONValue.parse(r.stdout) else { return [:] }
        return Dictionary(uniqueKeysWithValues: items.compactMap(\.objectValue).map { ($0["run"]?.stringValue ?? "", $0) })
    }

    func eventKinds(in dir: String, run: String) throws -> [String] {
        try ward(["ledger", "export", "--run", run], in: dir).stdout.split(separator: "\n").compactMap {
            try JSONValue.parse(String($0)).objectValue?["kind"]?.stringValue
        }
    }

    @Test func onATerminalItShowsTheRunAndResumesIt() throws {
        let dir = try workdir()
        let run = try unfinishedRun(in: dir)
        let (status, shown) = try wardOnTerminal(args(dir), in: dir, [
            ("list its calls (l)? [r]: ", "l\n"),
            // The list, then the question again.
            ("list its calls (l)? [r]: ", "r\n"),
        ])
        #expect(status == 0 && shown.contains("finished"), "\(shown)")
        // What ward knows of the run, before the question.
        for fact in ["this agent has an unfinished run in this workspace", "1. run \(run): started ", "1 attempt, the agent last exited with status 9",
                     "last checkpoint 3 at 20", "calls: 3 done, 0 in doubt, 0 awaiting approval", "resume it: ward run --run-id \(run) --ledger "] {
            #expect(shown.contains(fact), "missing \(fact): \(shown)")
        }
        #expect(shown.components(separatedBy: "list its calls (l)? [r]: ").count == 3, "asked other than twice: \(shown)")
        #expect(shown.contains("s2") && shown.contains("succeeded"), "the calls were not listed: \(shown)")
        // Resumed: the same run, its second attempt, from its checkpoint (step 2 replayed).
        #expect(shown.contains("2 replayed") && !shown.contains("0 ran\r\n1 ran"), "\(shown)")
        let all = try runs(in: dir)
        #expect(all.count == 1 && all[run]?["attempts"] == .number(2) && all[run]?["unfinished"] == .bool(false), "\(all)")
        #expect(try String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8) == "0\n1\n2\n3\n4\n5\n")
        let export = try ward(["ledger", "export", "--run", run], in: dir).stdout
        #expect(export.contains(#""data":{"by":"prompt"},"hash""#) && export.contains(#""kind":"run.resumed""#), "\(export)")
        let kinds = try eventKinds(in: dir, run: run)
        let resumed = try #require(kinds.firstIndex(of: "run.resumed"))
        #expect(kinds[resumed + 1] == "run.attempt" && kinds.filter { $0 == "run.resumed" }.count == 1, "\(kinds)")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func onATerminalANewRunOrNoAnswer() throws {
        let dir = try workdir()
        let run = try unfinishedRun(in: dir)
        // End of input: no answer, and nothing is started or recorded.
        let before = try ward(["ledger", "export"], in: dir).stdout
        let none = try wardOnTerminal(args(dir), in: dir, [("[r]: ", "\u{04}")])
        #expect(none.status == 2 && none.shown.contains("no answer: nothing was started"), "\(none.shown)")
        #expect(try ward(["ledger", "export"], in: dir).stdout == before)
        // A new run: from zero, under a new run ID; the unfinished one is left as it was.
        let (status, shown) = try wardOnTerminal(args(dir), in: dir, [("[r]: ", "n\n")])
        #expect(status == 0 && shown.contains("0 ran") && shown.contains("finished"), "\(shown)")
        let all = try runs(in: dir)
        #expect(all.count == 2 && all[run]?["attempts"] == .number(1) && all[run]?["unfinished"] == .bool(true), "\(all)")
        #expect(all.values.contains { $0["run"] != .string(run) && $0["attempts"] == .number(1) && $0["unfinished"] == .bool(false) })
        #expect(!(try ward(["ledger", "export"], in: dir).stdout.contains("run.resumed")))
        // Given on a terminal, --resume is not asked.
        let decided = try wardOnTerminal(args(dir, ["--resume", "always"]), in: dir, [])
        #expect(decided.status == 0 && !decided.shown.contains("[r]: ") && decided.shown.contains("resuming run \(run)"), "\(decided.shown)")
    }

    @Test func withoutATerminalEachResumeModeDoesWhatItSays() throws {
        let dir = try workdir()
        let first = try unfinishedRun(in: dir)
        // never: a new run, from zero; saying which unfinished one it leaves.
        let never = try ward(args(dir, ["--resume", "never"]), in: dir, environment: ["CRASH_AT": "2"])
        #expect(never.status == 9 && never.stdout.hasPrefix("0 ran\n") && never.stderr.contains("starting new run") && never.stderr.contains(first),
                "\(never.stdout)\(never.stderr)")
        let all = try runs(in: dir)
        #expect(all.count == 2 && all[first]?["attempts"] == .number(1))
        let second = try #require(all.keys.first { $0 != first })
        // auto (the default) with two: it does not guess, and nothing is started or recorded.
        let before = try ward(["ledger", "export"], in: dir).stdout
        let auto = try ward(args(dir), in: dir)
        #expect(auto.status == 2 && auto.stdout.isEmpty, "\(auto.stdout)\(auto.stderr)")
        #expect(auto.stderr.contains("2 unfinished runs of this agent in this workspace, and --resume auto does not guess"), "\(auto.stderr)")
        #expect(auto.stderr.contains("run \(first)") && auto.stderr.contains("run \(second)"), "\(auto.stderr)")
        #expect(try ward(["ledger", "export"], in: dir).stdout == before)
        // always: the most recent.
        let always = try ward(args(dir, ["--resume", "always"]), in: dir)
        #expect(always.status == 0 && always.stdout.contains("2 replayed") && always.stdout.hasSuffix("finished\n"), "\(always.stdout)\(always.stderr)")
        #expect(always.stderr.contains("resuming run \(second), the most recent"), "\(always.stderr)")
        // auto with one: that one.
        let one = try ward(args(dir), in: dir)
        #expect(one.status == 0 && one.stdout.contains("2 replayed") && one.stdout.hasSuffix("finished\n"), "\(one.stdout)\(one.stderr)")
        #expect(one.stderr.contains("resuming run \(first), the unfinished run"), "\(one.stderr)")
        // auto with none: a new run, and nothing said.
        let fresh = try ward(args(dir), in: dir)
        #expect(fresh.status == 0 && fresh.stdout.hasPrefix("0 ran\n") && !fresh.stderr.contains("resuming"), "\(fresh.stdout)\(fresh.stderr)")
        let after = try runs(in: dir)
        #expect(after.count == 3 && after[first]?["attempts"] == .number(2) && after[second]?["attempts"] == .number(2))
        #expect(after.values.allSatisfy { $0["unfinished"] == .bool(false) }, "\(after)")
        let export = try ward(["ledger", "export"], in: dir).stdout
        #expect(export.contains(#""data":{"by":"always"}"#) && export.contains(#""data":{"by":"auto"}"#), "\(export)")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    /// ward SIGKILLed while step 1's call runs: the run has no exit and a call in doubt. A new
    /// run would run every effect again; resumed, the agent meets the call in doubt and ward
    /// waits for an operator, with nothing run twice.
    @Test func aRunWithACallInDoubtIsResumedNotStartedAfresh() throws {
        let dir = try workdir()
        let killed = try ward(args(dir), in: dir, environment: ["WARD_FAILPOINTS": "after-begin=kill@2"])
        #expect(killed.status != 0 && killed.stdout == "0 ran\n", "ward was not killed: \(killed)")
        let run = try #require(try runs(in: dir).keys.first)
        // Resumed (Enter), then asked to settle the call in doubt: left in doubt (Enter).
        let (status, shown) = try wardOnTerminal(args(dir), in: dir, [("[r]: ", "\n"), ("settle call s1 now?", "\n")])
        #expect(shown.contains("1. run \(run): started ") && shown.contains("no exit recorded") && shown.contains("calls: 1 done, 1 in doubt"), "\(shown)")
        #expect(status == 4 && shown.contains("call s1 of run \(run)"), "\(shown)")
        #expect(try String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8) == "0\n")
        let all = try runs(in: dir)
        #expect(all.count == 1 && all[run]?["attempts"] == .number(2) && all[run]?["inDoubt"] == .number(1), "\(all)")
        // Without a terminal too (auto, the default), and still nothing run twice.
        let auto = try ward(args(dir), in: dir)
        #expect(auto.status == 4 && auto.stderr.contains("resuming run \(run)"), "\(auto.stdout)\(auto.stderr)")
        #expect(try String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8) == "0\n")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func anotherAgentOrWorkspaceIsNotOffered() throws {
        let dir = try workdir()
        let run = try unfinishedRun(in: dir)
        // Under --resume auto, an offered run would be resumed: each of these starts anew.
        let otherAgent = try ward(args(dir, agent: agent + ["--verbose"]), in: dir)
        let otherWorkspace = try ward(args(dir, ["--workspace", "elsewhere"]), in: dir)
        for r in [otherAgent, otherWorkspace] {
            #expect(r.status == 0 && r.stdout.hasPrefix("0 ran\n") && !r.stderr.contains("resuming"), "\(r.stdout)\(r.stderr)")
        }
        let all = try runs(in: dir)
        #expect(all.count == 3 && all[run]?["attempts"] == .number(1) && all[run]?["unfinished"] == .bool(true), "\(all)")
    }

    @Test func aRunAnotherSupervisorServesIsNotOffered() throws {
        let dir = try workdir()
        // The first start waits; the next returns at once.
        let waits = ["sh", "-c", "[ -e started ] || { touch started; sleep 30; }"]
        let serving = Process()
        serving.executableURL = URL(fileURLWithPath: Paths.ward)
        serving.arguments = ["run", "--policies", Paths.repository + "/policies", "--socket", dir + "/first.sock", "--"] + waits
        serving.currentDirectoryURL = URL(fileURLWithPath: dir)
        try serving.run()
        defer {
            serving.terminate()
            serving.waitUntilExit()
        }
        #expect(eventually { FileManager.default.fileExists(atPath: dir + "/started") }, "the first agent never started")
        // Unfinished (no exit yet), but served: resuming it would be refused, so a new run starts.
        let r = try ward(args(dir, agent: waits), in: dir)
        #expect(r.status == 0 && !r.stderr.contains("resuming"), "\(r.stdout)\(r.stderr)")
        #expect(try runs(in: dir).count == 2)
    }

    @Test func runsListSaysHowToResumeEachUnfinishedRun() throws {
        let dir = try workdir()
        let run = try unfinishedRun(in: dir)
        let hint = "ward run --run-id \(run) --ledger \(dir)/.ward/ledger.sqlite -- python3 agent.py \(Paths.repository)/python"
        let list = try ward(["runs", "list"], in: dir)
        #expect(list.stdout.contains("\(run): \(hint)"), "\(list.stdout)")
        #expect(try runs(in: dir)[run]?["resume"] == .string(hint))
        // Pasted as printed, it resumes the run.
        let pasted = try runProgram("/bin/sh", ["-c", "PATH=\(BuildProducts.directory):$PATH; " + hint], in: dir)
        #expect(pasted.status == 0 && pasted.output.contains("2 replayed"), "\(pasted.output)")
        let after = try runs(in: dir)
        #expect(after[run]?["attempts"] == .number(2) && after[run]?["resume"] == .null, "\(after)")
        // Named by --run-id, nothing was offered: no resumption is recorded.
        #expect(!(try eventKinds(in: dir, run: run).contains("run.resumed")))
    }
}
