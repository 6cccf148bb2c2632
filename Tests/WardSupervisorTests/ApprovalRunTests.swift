import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// The shipped tools plus `send`, a gated non-idempotent tool that appends its `to` to
/// sent.log in the workspace.
private func gatedPolicies(in dir: String) throws -> String {
    let policies = dir + "/policies"
    try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
    for file in ["tools.toml", "syscall-sets.toml"] {
        try FileManager.default.copyItem(atPath: Paths.repository + "/policies/" + file, toPath: policies + "/" + file)
    }
    let send = """

        [tools.send]
        description = "Send a message: gated, an operator approves each."
        command = ["/bin/sh", "-c", "echo \\"$0\\" >> sent.log && echo sent \\"$0\\"", "{to}"]
        arguments = ["to"]
        write = ["{workspace}"]
        approve = true
        """
    let handle = try #require(FileHandle(forWritingAtPath: policies + "/tools.toml"))
    handle.seekToEndOfFile()
    handle.write(Data(send.utf8))
    try handle.close()
    return policies
}

/// An agent that sends one message through the gated tool, waiting for the verdict, and
/// prints what came back. It writes its pid first, so the test can kill it while it waits.
private let gatedAgent = """
import os, sys
sys.path.insert(0, sys.argv[1])
from ward_client import Ward, WardError
ward = Ward()
r = ward.resume()
with open("agent.pid", "w") as f:
    f.write(str(os.getpid()))
try:
    res = ward.call("send", {"to": "bob"}, call_id="mail-1", checkpoint={"step": 1},
                    approval_timeout=float(os.environ.get("APPROVAL_WAIT", "120")))
except WardError as e:
    print("error", e.kind, flush=True)
    sys.exit(3)
print(res["status"], res["stdout"].strip(), res["stderr"].strip(), "replayed" if res["replayed"] else "ran", flush=True)
"""

private func sendCall(_ id: String, approvalTimeout: Double? = nil) -> JSONValue {
    var p: [String: JSONValue] = ["callId": .string(id), "tool": .string("send"), "arguments": .object(["to": .string("bob")])]
    if let approvalTimeout { p["approvalTimeout"] = .number(approvalTimeout) }
    return .object(p)
}

/// Starts `ward ARGS` in `dir` without waiting for it; its stdout is drained.
private func startWard(_ args: [String], in dir: String, env: [String: String] = [:]) throws -> (Process, OutputDrain) {
    let p = Process()
    p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
    p.executableURL = URL(fileURLWithPath: Paths.ward)
    p.arguments = args
    p.currentDirectoryURL = URL(fileURLWithPath: dir)
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    return (p, OutputDrain(out.fileHandleForReading))
}

@Suite("Approval gates: durable across crashes, settled once", .serialized)
struct ApprovalRunTests {
    /// Polls until `condition` holds (10 s at most).
    func eventually(_ what: String, _ condition: () throws -> Bool, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let deadline = Date().addingTimeInterval(20)
        while try !condition() {
            guard Date() < deadline else { Issue.record("never: \(what)", sourceLocation: sourceLocation); return }
            usleep(20_000)
        }
    }

    func awaiting(in dir: String) throws -> [String] {
        let listed = try ward(["ledger", "list", "--status", "awaiting-approval", "--json"], in: dir)
        guard listed.status == 0 else { return [] }
        return (try JSONValue.parse(listed.stdout).arrayValue ?? []).compactMap { $0.objectValue?["callId"]?.stringValue }
    }

    func gates(in dir: String) throws -> Int {
        let exported = try ward(["ledger", "export", "--run", "gate"], in: dir).stdout
        return exported.split(separator: "\n").filter { $0.contains(#""kind":"call.gate""#) }.count
    }

    /// The agent is killed while it waits, then ward is SIGKILLed while the restarted agent
    /// waits: the call still waits, gated once; approved, it runs exactly once.
    @Test func aGatedCallSurvivesTheAgentsAndWardsDeathsAndRunsOnceApproved() throws {
        let dir = temporaryDirectory("approval")
        let policies = try gatedPolicies(in: dir)
        try gatedAgent.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        let args = ["run", "--policies", policies, "--run-id", "gate", "--socket", dir + "/s.sock", "--", "python3", "agent.py", Paths.repository + "/python"]

        let (first, _) = try startWard(args, in: dir)
        try eventually("the call awaits approval") { try awaiting(in: dir) == ["mail-1"] }
        // The agent dies while it waits: ward restarts it, and it asks again.
        let pid = try #require(Int32(String(contentsOfFile: dir + "/agent.pid", encoding: .utf8)))
        kill(pid, SIGKILL)
        try eventually("the agent was restarted") { (try? String(contentsOfFile: dir + "/agent.pid", encoding: .utf8)) != String(pid) }
        usleep(200_000)
        // Then ward dies, with the restarted agent waiting.
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        #expect(try awaiting(in: dir) == ["mail-1"])
        #expect(!FileManager.default.fileExists(atPath: dir + "/workspace/sent.log"), "nothing ran before a verdict")

        // ward again: the agent resumes and waits once more for the same, single gate.
        let (second, output) = try startWard(args, in: dir)
        try eventually("the restarted agent waits") { try runsList(in: dir)?["attempts"] == .number(3) }
        usleep(200_000)
        #expect(try awaiting(in: dir) == ["mail-1"])
        #expect(try gates(in: dir) == 1, "asking again never gates twice")
        let pending = try ward(["approve"], in: dir)
        #expect(pending.status == 0 && pending.stdout.contains("call mail-1: tool send") && pending.stdout.contains("to: bob")
                && pending.stdout.contains("ward approve gate mail-1"), "\(pending.stdout)")

        let approved = try ward(["approve", "gate", "mail-1", "--note", "bob expects it"], in: dir)
        #expect(approved.status == 0, "\(approved.stderr)")
        second.waitUntilExit()
        let printed = String(decoding: output.all(), as: UTF8.self)
        #expect(second.terminationStatus == 0 && printed.contains("succeeded sent bob"), "\(printed)")
        #expect(try String(contentsOfFile: dir + "/workspace/sent.log", encoding: .utf8) == "bob\n", "it ran exactly once")
        // It no longer waits: another verdict is refused.
        let again = try ward(["approve", "gate", "mail-1"], in: dir)
        #expect(again.status == 2 && again.stderr.contains("not awaiting approval"), "\(again)")
        let shown = try ward(["ledger", "show", "gate", "mail-1"], in: dir)
        #expect(shown.stdout.contains("approved by ") && shown.stdout.contains("bob expects it"), "\(shown.stdout)")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    /// An agent that does not wait for the verdict and exits: `ward run` does not restart it
    /// into the same gate but stops with status 4, listing what waits; once approved, the
    /// same `ward run` resumes it and the call runs once.
    @Test func anAgentThatStopsAtAGateIsNotRestartedIntoIt() throws {
        let dir = temporaryDirectory("approval")
        let policies = try gatedPolicies(in: dir)
        try gatedAgent.write(toFile: dir + "/agent.py", atomically: true, encoding: .utf8)
        let args = ["run", "--policies", policies, "--run-id", "gate", "--socket", dir + "/s.sock", "--", "python3", "agent.py", Paths.repository + "/python"]
        let stopped = try ward(args, in: dir, environment: ["APPROVAL_WAIT": "0"])
        #expect(stopped.status == 4, "\(stopped)")
        #expect(stopped.stdout.contains("error awaiting-approval"), "\(stopped.stdout)")
        #expect(stopped.stderr.contains("awaiting approval") && stopped.stderr.contains("ward approve gate mail-1"), "\(stopped.stderr)")
        #expect(try runsList(in: dir)?["attempts"] == .number(1), "not restarted into the gate")
        #expect(try ward(["approve", "gate", "mail-1"], in: dir).status == 0)
        let resumed = try ward(args, in: dir, environment: ["APPROVAL_WAIT": "0"])
        #expect(resumed.status == 0 && resumed.stdout.contains("succeeded sent bob") && resumed.stdout.hasSuffix("ran\n"), "\(resumed)")
        #expect(try String(contentsOfFile: dir + "/workspace/sent.log", encoding: .utf8) == "bob\n")
    }

    func runsList(in dir: String) throws -> [String: JSONValue]? {
        let listed = try ward(["runs", "list", "--json"], in: dir)
        return (try? JSONValue.parse(listed.stdout))?.arrayValue?.first?.objectValue
    }

    @Test func aDeniedCallNeverRunsAndEndsDeniedWithTheNote() throws {
        let dir = temporaryDirectory("approval")
        let policies = try gatedPolicies(in: dir)
        let serve = try startServe(in: dir, run: "gate", policies: policies)
        defer { serve.terminate(); serve.waitUntilExit() }
        let client = try RawClient(dir + "/s.sock")
        let refused = client.call(1, "tool.call", sendCall("mail-2"))
        #expect(kind(refused) == "awaiting-approval", "\(String(describing: refused))")
        #expect(refused?["error"]?.objectValue?["code"] == .number(-32009))
        let message = refused?["error"]?.objectValue?["message"]?.stringValue ?? ""
        #expect(message.contains("ward approve gate mail-2") && message.contains("ward deny gate mail-2"), "\(message)")
        #expect(try runsList(in: dir)?["awaitingApproval"] == .number(1))
        let resume = client.call(9, "run.resume", .object([:]))?["result"]?.objectValue
        #expect(resume?["awaitingApproval"] == .array([.string("mail-2")]), "\(String(describing: resume))")

        let denied = try ward(["deny", "gate", "mail-2", "--note", "not to bob today"], in: dir)
        #expect(denied.status == 0, "\(denied.stderr)")
        for id in 2...3 {
            let result = try #require(client.call(id, "tool.call", sendCall("mail-2"))?["result"]?.objectValue)
            #expect(result["status"] == .string("denied") && result["stderr"] == .string("not to bob today"), "\(result)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/workspace/sent.log"), "a denied call never runs")
        #expect(try ward(["deny", "gate", "mail-2", "--note", "again"], in: dir).status == 2)
        #expect(try ward(["approve", "gate", "no-such-call"], in: dir).status == 2)
        #expect(try ward(["deny", "gate", "mail-2", "--note", " "], in: dir).status == 2, "a denial says why")
        // A shell agent: `ward call` exits 1 naming the gate; with --approval-timeout it waits.
        let env = ["WARD_SOCKET": dir + "/s.sock"]
        let gated = try ward(["call", "--call-id", "mail-7", "send", "--arg", "to=carol"], in: dir, environment: env)
        #expect(gated.status == 1 && gated.stderr.contains("ward approve gate mail-7"), "\(gated)")
        let (waiting, out) = try startWard(["call", "--call-id", "mail-7", "--approval-timeout", "60", "send", "--arg", "to=carol"], in: dir, env: env)
        usleep(300_000)
        #expect(try ward(["approve", "gate", "mail-7"], in: dir).status == 0)
        waiting.waitUntilExit()
        #expect(waiting.terminationStatus == 0 && String(decoding: out.all(), as: UTF8.self) == "sent carol\n")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    /// An agent waiting in tool.call goes on the moment the verdict lands; two operators
    /// approving at once record one verdict, and the call runs once.
    @Test func twoApprovalsAtOnceRunTheCallOnce() throws {
        let dir = temporaryDirectory("approval")
        let policies = try gatedPolicies(in: dir)
        let serve = try startServe(in: dir, run: "gate", policies: policies)
        defer { serve.terminate(); serve.waitUntilExit() }
        let client = try RawClient(dir + "/s.sock")
        client.request(1, "tool.call", sendCall("mail-3", approvalTimeout: 60))
        try eventually("the call awaits approval") { try awaiting(in: dir) == ["mail-3"] }
        let approvals = try (0..<2).map { _ in try startWard(["approve", "gate", "mail-3"], in: dir).0 }
        for p in approvals { p.waitUntilExit() }
        #expect(approvals.map(\.terminationStatus).sorted() == [0, 2])
        let result = try #require(client.next()?["result"]?.objectValue)
        #expect(result["status"] == .string("succeeded"), "\(result)")
        #expect(try String(contentsOfFile: dir + "/workspace/sent.log", encoding: .utf8) == "bob\n")
        // Asked for again: replayed, not run.
        let replay = try #require(client.call(2, "tool.call", sendCall("mail-3"))?["result"]?.objectValue)
        #expect(replay["replayed"] == .bool(true))
        #expect(try String(contentsOfFile: dir + "/workspace/sent.log", encoding: .utf8) == "bob\n")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }

    /// ward stopping (SIGTERM) ends the agent's wait for a verdict at once: a tool started
    /// now would be killed halfway by the shutdown, its approval spent on a `killed` outcome.
    @Test func aShutdownEndsTheWaitAndStartsNothing() throws {
        let dir = temporaryDirectory("approval")
        let serve = try startServe(in: dir, run: "gate", policies: try gatedPolicies(in: dir), extra: ["--grace", "1"])
        let client = try RawClient(dir + "/s.sock")
        client.request(1, "tool.call", sendCall("mail-6", approvalTimeout: 60))
        try eventually("the call awaits approval") { try awaiting(in: dir) == ["mail-6"] }
        let stopped = Date()
        serve.terminate()
        #expect(kind(client.next()) == "awaiting-approval")
        serve.waitUntilExit()
        #expect(Date().timeIntervalSince(stopped) < 10)
        #expect(try awaiting(in: dir) == ["mail-6"], "still waiting for its verdict")
        #expect(!FileManager.default.fileExists(atPath: dir + "/workspace/sent.log"))
    }

    @Test func anApprovalWaitThatRunsOutIsTheAwaitingApprovalError() throws {
        let dir = temporaryDirectory("approval")
        let serve = try startServe(in: dir, run: "gate", policies: try gatedPolicies(in: dir))
        defer { serve.terminate(); serve.waitUntilExit() }
        let client = try RawClient(dir + "/s.sock")
        let started = Date()
        #expect(kind(client.call(1, "tool.call", sendCall("mail-4", approvalTimeout: 0.3))) == "awaiting-approval")
        #expect(Date().timeIntervalSince(started) >= 0.3)
        for bad in [JSONValue.number(-1), .string("5"), .number(1e9)] {
            var p = sendCall("mail-5").objectValue!
            p["approvalTimeout"] = bad
            let refused = client.call(2, "tool.call", .object(p))
            #expect(kind(refused) == "invalid-arguments" && refused?["error"]?.objectValue?["data"]?.objectValue?["field"] == .string("approvalTimeout"))
        }
        #expect(try awaiting(in: dir) == ["mail-4"], "a refused request records nothing")
    }
}
