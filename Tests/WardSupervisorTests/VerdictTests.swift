import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport
@testable import WardSupervisor

/// An operator's verdict reaches the agent: a call resolved `not-executed` is not completed
/// and runs once when asked for; one resolved `executed` replays with its verdict.
@Suite("Verdicts reach the agent")
struct VerdictTests {
    /// A server whose ledger holds two non-idempotent calls of run r1 caught in doubt.
    func serverWithCallsInDoubt() throws -> (TestServer, RawClient) {
        let ledgerPath = temporaryDirectory("ledger") + "/l.sqlite"
        for (id, command) in [("mail", "echo sent >> mail.log; echo mailed"), ("post", "echo posted >> post.log")] {
            try beginThenCrash(ledgerAt: ledgerPath, BeginRequest(
                run: "r1", callId: id, tool: "shell", effect: .nonIdempotent, arguments: .object(["command": .string(command)]),
                policyHash: "p", executable: "/bin/sh", attempt: 1))
        }
        let t = try TestServer(ledgerPath: ledgerPath)
        return (t, try RawClient(t.server.path))
    }

    @Test func notExecutedIsListedApartAndRunsOnce() throws {
        let (t, c) = try serverWithCallsInDoubt()
        try t.supervisor.ledger.resolve(run: "r1", callId: "mail", as: .notExecuted, note: "the mail log shows nothing sent")
        let resume = try #require(c.call(1, "run.resume", .object([:]))?["result"]?.objectValue)
        #expect(resume["notExecuted"] == .array([.string("mail")]), "\(resume)")
        #expect(resume["completedSince"] == .array([]), "a not-executed call is not completed: \(resume)")
        #expect(resume["inDoubt"] == .array([.string("post")]))
        let ran = try #require(c.call(2, "tool.call", shellCall("mail", "echo sent >> mail.log; echo mailed"))?["result"]?.objectValue)
        #expect(ran["status"] == .string("succeeded") && ran["replayed"] == .bool(false) && ran["resolution"] == nil, "\(ran)")
        let again = try #require(c.call(3, "tool.call", shellCall("mail", "echo sent >> mail.log; echo mailed"))?["result"]?.objectValue)
        #expect(again["replayed"] == .bool(true) && again["stdout"] == .string("mailed\n"))
        #expect(try String(contentsOfFile: t.workspace + "/mail.log", encoding: .utf8) == "sent\n", "it ran exactly once")
        let after = try #require(c.call(4, "run.resume", .object([:]))?["result"]?.objectValue)
        #expect(after["notExecuted"] == .array([]) && after["completedSince"]?.arrayValue?.count == 1, "\(after)")
    }

    @Test func executedReplaysWithTheVerdict() throws {
        let (t, c) = try serverWithCallsInDoubt()
        try t.supervisor.ledger.resolve(run: "r1", callId: "post", as: .executed, note: "found on the site", by: "reconcile",
                                        output: Array("already posted\n".utf8))
        let resume = try #require(c.call(1, "run.resume", .object([:]))?["result"]?.objectValue)
        let completed = try #require(resume["completedSince"]?.arrayValue?.first?.objectValue, "\(resume)")
        let replay = try #require(c.call(2, "tool.call", shellCall("post", "echo posted >> post.log"))?["result"]?.objectValue)
        for result in [completed, replay] {
            #expect(result["status"] == .string("resolved") && result["replayed"] == .bool(true) && result["stdout"] == .string("already posted\n"), "\(result)")
            let resolution = try #require(result["resolution"]?.objectValue, "\(result)")
            #expect(resolution["verdict"] == .string("executed") && resolution["note"] == .string("found on the site") && resolution["by"] == .string("reconcile"))
            #expect(resolution["at"]?.stringValue?.hasPrefix("20") == true, "\(resolution)")
        }
        #expect(!FileManager.default.fileExists(atPath: t.workspace + "/post.log"), "an executed verdict never runs the tool")
        // The Swift client decodes it.
        let decoded = try #require(CallResult(json: .object(replay)))
        #expect(decoded.resolution?.verdict == .executed && decoded.resolution?.by == "reconcile")
    }
}
