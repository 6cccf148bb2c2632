import Foundation
import Testing
import WardCore
import WardTestSupport

/// An agent that makes the same six calls on every start, each handed in with a checkpoint
/// of where it stands, and leans on ward to replay the ones already recorded. Each call's
/// effect appends a line to effects.log (non-idempotent). It prints how each call went.
private let forkAgent = """
import sys
sys.path.insert(0, sys.argv[1])
from ward_client import Ward
ward = Ward()
r = ward.resume()
print("resumed at", (r["checkpoint"] or {}).get("seq"), flush=True)
for step in range(6):
    res = ward.call("shell", {"command": f"echo {step} >> effects.log"}, call_id=f"s{step}", checkpoint={"step": step})
    print(step, "replayed" if res["replayed"] else "ran", flush=True)
"""

@Suite("ward runs fork: a run made from another's history up to a checkpoint", .serialized)
struct ForkRunTests {
    @Test func anAgentStartedInAForkReplaysWhatItsCheckpointKnewAndRunsTheRest() throws {
        let dir = temporaryDirectory("fork")
        try forkAgent.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        let agent = ["--", "python3", "agent.py", Paths.repository + "/python"]
        let first = try ward(["run", "--policies", Paths.repository + "/policies", "--run-id", "origin", "--socket", dir + "/s.sock"] + agent, in: dir)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout == "resumed at None\n" + (0..<6).map { "\($0) ran\n" }.joined())
        let effects = dir + "/workspace/effects.log"
        #expect(try String(contentsOfFile: effects, encoding: .utf8) == "0\n1\n2\n3\n4\n5\n")
        let origin = try ward(["ledger", "export", "--run", "origin"], in: dir)

        // Checkpoint 4 was handed in with s3: the agent's state before s3. s0–s2 began before it.
        let fork = try ward(["runs", "fork", "origin", "--at", "4", "--run-id", "forked"], in: dir)
        #expect(fork.status == 0, "\(fork.stderr)")
        #expect(fork.stdout == "forked\n")
        #expect(fork.stderr.contains("ward run --run-id forked -- AGENT"), "\(fork.stderr)")

        let second = try ward(["run", "--policies", Paths.repository + "/policies", "--run-id", "forked", "--socket", dir + "/s.sock"] + agent, in: dir)
        #expect(second.status == 0, "\(second.stderr)")
        #expect(second.stdout == "resumed at 4\n0 replayed\n1 replayed\n2 replayed\n3 ran\n4 ran\n5 ran\n")
        // The replayed calls ran no tool: only s3–s5 added their lines, in the origin's workspace.
        #expect(try String(contentsOfFile: effects, encoding: .utf8) == "0\n1\n2\n3\n4\n5\n3\n4\n5\n")

        #expect(try ward(["ledger", "export", "--run", "origin"], in: dir).stdout == origin.stdout, "the fork changed its origin")
        let verify = try ward(["ledger", "verify"], in: dir)
        #expect(verify.status == 0 && verify.stdout.contains("forked") && verify.stdout.contains("origin"), "\(verify.stdout)\(verify.stderr)")

        let runs = try #require(elements(try JSONValue.parse(ward(["runs", "list", "--json"], in: dir).stdout))?.compactMap(\.objectValue))
        let forked = try #require(runs.first { $0["run"] == .string("forked") })
        #expect(forked["origin"] == .string("origin") && forked["forkedAt"] == .number(4) && forked["attempts"] == .number(2))
        #expect(runs.first { $0["run"] == .string("origin") }?["origin"] == .null)
        let table = try ward(["runs", "list"], in: dir).stdout
        #expect(table.contains("FORK OF") && table.contains("origin@4"), "\(table)")
        #expect(try ward(["ledger", "show", "forked", "s0"], in: dir).stdout.contains("run origin at checkpoint 4"))
        let exported = try ward(["ledger", "export", "--run", "forked"], in: dir).stdout.split(separator: "\n")
        let line = try #require(exported.first)
        let event = try #require(try JSONValue.parse(String(line)).objectValue)
        #expect(event["kind"] == .string("run.fork") && event["data"]?.objectValue?["origin"] == .string("origin"))
    }

    /// The demo's agent (47 calls, each handed in with a checkpoint of its step), forked at
    /// checkpoint 31: started in the fork it resumes at step 31, the 16 calls after it run, the
    /// 30 before it replay from the fork's ledger without running a tool, and the origin is
    /// unchanged.
    @Test func theDemoRunForkedAtACheckpoint() throws {
        let dir = temporaryDirectory("fork-demo")
        let agent = ["--", "python3", Paths.repository + "/Scripts/demo_site.py", "agent"]
        func run(_ id: String) throws -> (status: Int32, stdout: String, stderr: String) {
            try ward(["run", "--policies", Paths.repository + "/policies", "--run-id", id, "--socket", dir + "/s.sock"] + agent, in: dir)
        }
        let origin = try run("site")
        #expect(origin.status == 0 && origin.stdout.contains("47 calls ran, 0 replayed"), "\(origin)")
        let before = try ward(["ledger", "export", "--run", "site"], in: dir).stdout

        #expect(try ward(["runs", "fork", "site", "--at", "31", "--run-id", "site-b"], in: dir).status == 0)
        let forked = try run("site-b")
        #expect(forked.status == 0 && forked.stdout.contains("resuming at step 31") && forked.stdout.contains("17 calls ran, 0 replayed"),
                "\(forked)")
        // Its one publish after the checkpoint ran in the fork: the shared workspace's log has
        // the origin's line and the fork's.
        #expect(try String(contentsOfFile: dir + "/workspace/published.log", encoding: .utf8).split(separator: "\n").count == 2)

        // Every call the checkpoint knew of replays in the fork: no tool runs, nothing is begun.
        let serve = try startServe(in: dir, run: "site-b")
        defer { serve.terminate(); serve.waitUntilExit() }
        let client = try RawClient(dir + "/s.sock")
        for step in [0, 11, 29] {
            let shown = try JSONValue.parse(try ward(["ledger", "show", "site-b", "step-\(step)", "--json"], in: dir).stdout).objectValue
            let params = JSONValue.object(["callId": .string("step-\(step)"), "tool": shown?["tool"] ?? .null, "arguments": shown?["arguments"] ?? .null])
            let result = try #require(client.call(step, "tool.call", params)?["result"]?.objectValue)
            #expect(result["replayed"] == .bool(true) && result["status"] == .string("succeeded"), "\(result)")
        }
        let begins = try ward(["ledger", "export", "--run", "site-b"], in: dir).stdout.split(separator: "\n").filter { $0.contains(#""kind":"call.begin""#) }
        #expect(begins.count == 47, "30 copied begins and the fork's 17: \(begins.count)")
        #expect(try ward(["ledger", "export", "--run", "site"], in: dir).stdout == before, "the origin is unchanged")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    @Test func whatAForkRefusesAndHowItExits() throws {
        let dir = temporaryDirectory("fork-refused")
        try forkAgent.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        let run = try ward(["run", "--policies", Paths.repository + "/policies", "--run-id", "origin", "--socket", dir + "/s.sock",
                            "--", "python3", "agent.py", Paths.repository + "/python"], in: dir)
        #expect(run.status == 0, "\(run.stderr)")
        let before = try ward(["ledger", "export"], in: dir).stdout
        let refusals: [([String], Int32, String)] = [
            (["nobody", "--at", "1"], 2, "no run nobody"),
            (["origin", "--at", "9"], 2, "run origin has no checkpoint 9"),
            (["origin", "--at", "0"], 2, "--at must be 1 or more"),
            (["origin", "--at", "1", "--run-id", "origin"], 2, "run origin exists already"),
            (["origin", "--at", "1", "--run-id", "../x"], 2, "--run-id"),
        ]
        for (args, status, message) in refusals {
            let r = try ward(["runs", "fork"] + args, in: dir)
            #expect(r.status == status && r.stderr.contains(message), "\(args): \(r.status) \(r.stderr)")
        }
        #expect(try ward(["ledger", "export"], in: dir).stdout == before, "a refused fork recorded something")
        let generated = try ward(["runs", "fork", "origin", "--at", "2", "--json"], in: dir)
        let made = try #require(try JSONValue.parse(generated.stdout).objectValue)
        #expect(made["run"]?.stringValue?.hasPrefix("run-") == true && made["calls"] == .number(1) && made["checkpoint"] == .number(2))
    }
}
