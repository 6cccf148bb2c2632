import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// `ward run` and an agent that meets a call in doubt: no restarts into the same refusal,
/// the commands that settle it printed once and pasteable, settled on a terminal and resumed,
/// and a documented exit status without one.
@Suite("ward run waits for an operator at a call in doubt", .serialized)
struct InDoubtRunTests {
    /// A work directory whose ledger holds run `waits` with step s0 of `agentScript` caught
    /// in doubt (its supervisor died mid-call), and the agent's arguments.
    func workdirWithCallInDoubt() throws -> (dir: String, args: [String]) {
        let dir = temporaryDirectory("waits")
        try agentScript.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        try beginThenCrash(ledgerAt: dir + "/.ward/ledger.sqlite", BeginRequest(
            run: "waits", callId: "s0", tool: "shell", effect: .nonIdempotent, arguments: .object(["command": .string("echo 0 >> effects.log; ")]),
            policyHash: "p", executable: "/bin/sh", attempt: 1))
        return (dir, ["run", "--policies", Paths.repository + "/policies", "--run-id", "waits", "--socket", dir + "/s.sock", "--", "python3", "agent.py", Paths.repository + "/python"])
    }

    @Test func withoutATerminalItPrintsPasteableCommandsAndExits4() throws {
        let (dir, args) = try workdirWithCallInDoubt()
        let first = try ward(args, in: dir)
        #expect(first.status == 4, "\(first.stdout)\(first.stderr)")
        #expect(first.stdout.contains("error in-doubt"), "\(first.stdout)")
        #expect(!first.stderr.contains("restart 1 of"), "ward restarted the agent into the same refusal: \(first.stderr)")
        #expect(first.stderr.components(separatedBy: "call s0 of run waits").count == 2, "said more than once: \(first.stderr)")
        // The command for "it did not run", pasted as printed, from another directory.
        let line = try #require(first.stderr.split(separator: "\n").first { $0.contains("if it did not run:") })
        let command = String(line[line.range(of: "ward ledger resolve")!.lowerBound...])
        let pasted = try runProgram("/bin/sh", ["-c", "PATH=\(BuildProducts.directory):$PATH; " + command], in: "/")
        #expect(pasted.status == 0, "\(command): \(pasted.output)")
        // Settled: the agent runs to the end, and the call runs exactly once.
        let second = try ward(args, in: dir)
        #expect(second.status == 0 && second.stdout.hasSuffix("finished\n"), "\(second.stdout)\(second.stderr)")
        #expect(try String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8) == "0\n1\n2\n3\n4\n5\n")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func onATerminalItAsksSettlesAndResumes() throws {
        let (dir, args) = try workdirWithCallInDoubt()
        // A pseudo-terminal: ward asks for the verdict and the note, then resumes the agent.
        let r = try wardOnTerminal(args, in: dir, [("settle call s0 now?", "n\n"), ("note (what you checked):", "no line in effects.log\n")])
        #expect(r.status == 0 && r.shown.contains("finished"), "\(r.shown)")
        #expect(r.shown.contains("resuming the agent"), "\(r.shown)")
        #expect(try String(contentsOfFile: dir + "/workspace/effects.log", encoding: .utf8) == "0\n1\n2\n3\n4\n5\n")
        let show = try ward(["ledger", "show", "waits", "s0", "--json"], in: dir)
        #expect(show.stdout.contains("no line in effects.log"), "the note was not recorded: \(show.stdout)")
    }
}
