import Foundation
import Testing
import WardCore
@testable import WardLedger
import WardTestSupport

/// A ledger holding every kind of event ward writes, each made through the ledger's own API:
/// run "r" with two attempts (the first naming its agent, the second resumed), a place whose policies changed and which moved, calls that
/// finished (one with an exit code and truncated output, one killed by a signal), calls
/// caught running by a crash and resolved executed or not-executed (and then run again), an
/// idempotent one run again after the crash, one left in doubt with the output it printed,
/// one left running; checkpoints (saved with a call, labelled, a delta); journal entries;
/// the run finished. Run "other" is there so that a finding is seen to name the right run.
enum VerifyFixture {
    static let place = RunPlace(workspace: "relative/r", device: 1, inode: 2, born: "3.000000004", policies: "relative/policies-a")
    static let agent = ["python3", "agent.py", "it's"]

    /// A state of a few chunks, the same every time.
    static func state(_ seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        return (0..<3000).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    static func make() throws -> String {
        let path = temporaryLedgerPath("verify")
        do {
            // The handle of a supervisor that dies with calls running.
            let crashed = try Ledger(path: path, durability: .normal)
            _ = try crashed.startAttempt(run: "r", agent: agent)
            try crashed.claimPlace(run: "r", place)
            var policies = place
            policies.policies = "/policies/b"
            try crashed.claimPlace(run: "r", policies)
            var moved = policies
            moved.workspace = "relative/r-moved"
            moved.inode = 5
            try crashed.claimPlace(run: "r", moved, moved: true)
            let c1 = try #require(try crashed.begin(request("c1", run: "r", checkpoint: state(1))).ticket)
            _ = try crashed.finish(c1, outcome: ToolOutcome(status: .failed, exitCode: 3, signal: nil, stdout: Array("output 1".utf8),
                                                            stderr: Array("warning 1".utf8), truncated: true, durationMs: 12.5))
            let c2 = try #require(try crashed.begin(request("c2", run: "r", tool: "fetch")).ticket)
            _ = try crashed.finish(c2, outcome: ToolOutcome(status: .killed, exitCode: nil, signal: 9, stdout: Array("output 2".utf8),
                                                            stderr: [], truncated: false, durationMs: 300))
            _ = try crashed.saveCheckpoint(run: "r", state: state(2), label: "plan")
            _ = try crashed.journalRecord(run: "r", key: "k", value: .string("v"))
            _ = try crashed.journalRecord(run: "r", key: "k2", value: .object(["n": .number(2)]))
            _ = try crashed.begin(request("c3", run: "r"))
            _ = try crashed.begin(request("c4", run: "r"))
            _ = try crashed.begin(request("c5", run: "r", effect: .idempotent))
            let c6 = try #require(try crashed.begin(request("c6", run: "r")).ticket)
            let capture = try #require(crashed.openCapture(c6))
            FileHandle(fileDescriptor: capture.fd, closeOnDealloc: false).write(Data(OutputCapture.frameHeader(.stdout, length: 9) + Array("half-sent".utf8)))
            _ = try crashed.begin(request("c7", run: "r", effect: .idempotent))
            _ = try crashed.startAttempt(run: "other")
            _ = try crashed.journalRecord(run: "other", key: "k", value: .string("v"))
        }
        // The handle is gone, but its lock goes only with the last copy of its descriptor: a
        // child another suite's sandbox was making at that moment (forked, not yet exec'd)
        // holds one for a while. A real supervisor's death ends its children too.
        #expect(eventually { ownerLocksAreFree(ledger: path) }, "the dropped handle's owner lock stayed held")
        // Opened anew: the dead handle's non-idempotent calls (c3, c4, c6) are in doubt.
        let ledger = try Ledger(path: path, durability: .normal)
        _ = try ledger.startAttempt(run: "r", resumedBy: .prompt)
        try ledger.resolve(run: "r", callId: "c3", as: .executed, note: "the mail log shows it sent", by: "reconcile", output: Array("sent".utf8))
        try ledger.resolve(run: "r", callId: "c4", as: .notExecuted, note: "nothing in the mail log")
        let c4 = try #require(try ledger.begin(request("c4", run: "r", attempt: 2)).ticket)
        _ = try ledger.finish(c4, outcome: outcome("output 4"))
        let c5 = try #require(try ledger.begin(request("c5", run: "r", effect: .idempotent, attempt: 2)).ticket)
        #expect(c4.execution == 2 && c5.execution == 2)
        _ = try ledger.finish(c5, outcome: outcome("output 5"))
        _ = try ledger.saveCheckpoint(run: "r", state: state(2) + Array("and one more step".utf8))
        // Calls of a client that can lose answers (ward mcp): d1's answer was delivered (read,
        // then the client asked for something else), d2's read, d3's not even that.
        for id in ["d1", "d2", "d3"] {
            var awaiting = request(id, run: "r")
            awaiting.awaitsDelivery = true
            let ticket = try #require(try ledger.begin(awaiting).ticket)
            _ = try ledger.finish(ticket, outcome: outcome("output \(id)"))
            if id != "d3" { try ledger.markRead(run: "r", callId: id) }
            if id == "d1" { try ledger.confirmDeliveries(run: "r", asking: "shell", argsHash: Ledger.argumentsHash(.object(["other": .bool(true)]))) }
        }
        try ledger.finishRun(run: "r", exitStatus: 0)
        return path
    }

    /// The first problem verify finds in run "r" (and none in run "other").
    static func problem(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> String? {
        let report = try Ledger(path: path, readOnly: true).verify()
        #expect(report.runs.map(\.run) == ["other", "r"], sourceLocation: sourceLocation)
        #expect(report.runs.first { $0.run == "other" }?.problem == nil, sourceLocation: sourceLocation)
        return report.runs.first { $0.run == "r" }?.problem
    }

    /// Runs statements on the file as anyone with SQLite could (the events' triggers stay:
    /// these edits leave every event as it was).
    static func edit(_ path: String, _ statements: [String]) throws {
        let ledger = try Ledger(path: path, existing: true, recover: false)
        try ledger.write("editing the ledger by hand") { db in
            for sql in statements { try db.run(TestLedger.sql(sql)) }
        }
    }

    /// Appends an event with a correct hash, as only ward's writer (or someone rebuilding the
    /// chain) could, with `statements` making the rows agree with it: what is left to betray
    /// it is that ward never writes such a sequence.
    static func append(_ path: String, _ kind: String, call: String? = nil, _ data: [String: JSONValue], then statements: [String] = []) throws {
        let ledger = try Ledger(path: path, existing: true, recover: false)
        try ledger.write("appending an event by hand") { db in
            try ledger.appendEvent(db, run: "r", kind: kind, call: call, data: data)
            for sql in statements { try db.run(TestLedger.sql(sql)) }
        }
    }

    /// The data of the last event of `kind` of a call (or of the run).
    static func data(_ path: String, _ kind: String, call: String? = nil) throws -> [String: JSONValue] {
        let events = try Ledger(path: path, readOnly: true).exportEvents(run: "r")
        let event = try #require(events.last { $0.kind == kind && $0.callId == call })
        return try #require(event.data.objectValue)
    }
}

/// One edit of the tables, and the start of what verify must say about it.
struct TableEdit: Sendable, CustomTestStringConvertible {
    var name: String
    var statements: [String]
    var finding: String
    var testDescription: String { name }

    init(_ name: String, _ statements: String..., finding: String) {
        self.name = name
        self.statements = statements
        self.finding = finding
    }
}

private func hex(_ text: String) -> String { Digest.hex(Array(text.utf8)) }

@Suite("Ledger: verify checks every field that changes behaviour against the events")
struct VerifyTests {
    static let edits: [TableEdit] = {
        let forgedArgs = #"{"command":"rm -rf /"}"#
        let c = "WHERE run_id = 'r' AND call_id"
        let all: [TableEdit?] = [
            // Calls: each column that decides what a call does or what its result says.
            TableEdit("call status", "UPDATE calls SET status = 'succeeded' \(c) = 'c1'", finding: "call c1 of run r was altered: its status is succeeded where its events say failed"),
            TableEdit("call exit code", "UPDATE calls SET exit_code = 0 \(c) = 'c1'", finding: "call c1 of run r was altered: its exit code is 0 where its events say 3"),
            TableEdit("call signal", "UPDATE calls SET signal = NULL \(c) = 'c2'", finding: "call c2 of run r was altered: its signal is none where its events say 9"),
            TableEdit("call truncation", "UPDATE calls SET truncated = 0 \(c) = 'c1'", finding: "call c1 of run r was altered: its truncation is 0 where its events say 1"),
            TableEdit("call duration", "UPDATE calls SET duration_ms = 1 \(c) = 'c2'", finding: "call c2 of run r was altered: its duration is 1 where its events say 300"),
            TableEdit("call tool", "UPDATE calls SET tool = 'shell' \(c) = 'c2'", finding: "call c2 of run r was altered: its tool is shell where its events say fetch"),
            TableEdit("call effect", "UPDATE calls SET effect = 'idempotent' \(c) = 'c6'", finding: "call c6 of run r was altered: its effect is idempotent where its events say non-idempotent"),
            TableEdit("call arguments and their hash",
                      "UPDATE calls SET args = '\(forgedArgs)', args_hash = '\(Ledger.sha256Hex(Array(forgedArgs.utf8)))' \(c) = 'c1'",
                      finding: "call c1 of run r was altered: its arguments hash is \(Ledger.sha256Hex(Array(forgedArgs.utf8))) where its events say"),
            TableEdit("call arguments", "UPDATE calls SET args = '\(forgedArgs)' \(c) = 'c1'", finding: "call c1 of run r was altered: its arguments do not match their hash"),
            TableEdit("call policy hash", "UPDATE calls SET policy_hash = 'policy-2' \(c) = 'c1'", finding: "call c1 of run r was altered: its policy hash is policy-2 where its events say policy-1"),
            TableEdit("call binary hash", "UPDATE calls SET binary_hash = 'unreadable' \(c) = 'c1'", finding: "call c1 of run r was altered: its binary hash is unreadable where its events say"),
            TableEdit("call stdout hash", "UPDATE calls SET stdout = (SELECT stdout FROM calls \(c) = 'c2') \(c) = 'c1'", finding: "call c1 of run r was altered: its stdout hash is"),
            TableEdit("call stderr hash", "UPDATE calls SET stderr = (SELECT stdout FROM calls \(c) = 'c2') \(c) = 'c1'", finding: "call c1 of run r was altered: its stderr hash is"),
            TableEdit("call verdict", "UPDATE calls SET verdict = 'not-executed' \(c) = 'c3'", finding: "call c3 of run r was altered: its verdict is not-executed where its events say executed"),
            TableEdit("call note", "UPDATE calls SET note = 'nobody checked' \(c) = 'c3'", finding: "call c3 of run r was altered: its note is nobody checked where its events say the mail log shows it sent"),
            TableEdit("call executions", "UPDATE calls SET executions = 1 \(c) = 'c4'", finding: "call c4 of run r was altered: its execution count is 1 where its events say 2"),
            TableEdit("call attempt", "UPDATE calls SET attempt = 1 \(c) = 'c5'", finding: "call c5 of run r was altered: its attempt is 1 where its events say 2"),
            TableEdit("call owner", "UPDATE calls SET owner = 'ffffffffffffffffffffffffffffffff' \(c) = 'c7'", finding: "call c7 of run r was altered: its owner is ffffffffffffffffffffffffffffffff where its events say"),
            TableEdit("call owner of a finished call", "UPDATE calls SET owner = 'ffffffffffffffffffffffffffffffff' \(c) = 'c1'", finding: "call c1 of run r was altered: its owner is ffffffffffffffffffffffffffffffff where its events say none"),
            TableEdit("call finish time removed", "UPDATE calls SET finished_at = NULL \(c) = 'c1'", finding: "call c1 of run r was altered: its finish time is none where its events say 20"),
            // Times order the not-executed calls a resumed agent is given, and audits.
            TableEdit("call finish time", "UPDATE calls SET finished_at = '2000-01-01T00:00:00.000000Z' \(c) = 'c2'",
                      finding: "call c2 of run r was altered: its finish time is 2000-01-01T00:00:00.000000Z where its events say 20"),
            TableEdit("call finish time of a call still running", "UPDATE calls SET finished_at = '2000-01-01T00:00:00.000000Z' \(c) = 'c7'",
                      finding: "call c7 of run r was altered: its finish time is 2000-01-01T00:00:00.000000Z where its events say none"),
            TableEdit("call start time", "UPDATE calls SET started_at = '2000-01-01T00:00:00.000000Z' \(c) = 'c4'",
                      finding: "call c4 of run r was altered: its start time is 2000-01-01T00:00:00.000000Z where its events say 20"),
            TableEdit("call removed", "DELETE FROM calls \(c) = 'c2'", finding: "call c2 of run r was removed (its events remain)"),
            TableEdit("call inserted", "INSERT INTO calls SELECT run_id, 'c9', tool, effect, args_hash, args, policy_hash, binary_hash, status, attempt, executions, owner, started_at, finished_at, exit_code, signal, stdout, stderr, truncated, duration_ms, verdict, note, delivered FROM calls \(c) = 'c2'",
                      finding: "call c9 of run r has no events (it was inserted)"),
            // Deliveries: a forged one would let a host's repeat of an unanswered call run again.
            TableEdit("delivery forged", "UPDATE calls SET delivered = 1 \(c) = 'd2'", finding: "call d2 of run r was altered: its delivery is 1 where its events say awaited"),
            TableEdit("delivery forged on an unread answer", "UPDATE calls SET delivered = 1 \(c) = 'd3'", finding: "call d3 of run r was altered: its delivery is 1 where its events say awaited"),
            TableEdit("delivery undone", "UPDATE calls SET delivered = 0 \(c) = 'd1'", finding: "call d1 of run r was altered: its delivery is 0 where its events say delivered"),
            TableEdit("delivery cleared", "UPDATE calls SET delivered = NULL \(c) = 'd2'", finding: "call d2 of run r was altered: its delivery is none where its events say otherwise"),
            TableEdit("delivery of an agent's call", "UPDATE calls SET delivered = 1 \(c) = 'c2'", finding: "call c2 of run r was altered: its delivery is 1 where its events say none"),
            // Outputs, and what an operator settles a call in doubt on.
            TableEdit("output altered", "UPDATE blobs SET data = CAST('forged' AS BLOB) WHERE data = CAST('output 1' AS BLOB)", finding: "the recorded stdout of call c1 of run r was altered"),
            TableEdit("output removed", "DELETE FROM blobs WHERE data = CAST('warning 1' AS BLOB)", finding: "the recorded stderr of call c1 of run r was removed"),
            TableEdit("output size", "UPDATE blobs SET size = 1 WHERE data = CAST('output 2' AS BLOB)", finding: "the recorded stdout of call c2 of run r was altered"),
            TableEdit("evidence of a call in doubt", "UPDATE blobs SET data = CAST('never sent' AS BLOB) WHERE data = CAST('half-sent' AS BLOB)",
                      finding: "the stdout captured of call c6 of run r before it was in doubt"),
            // Checkpoints: what `checkpoint show` and `checkpoint.load` serve.
            // A forged checkpoint (chunk, manifest and state hash): `aForgedCheckpointWouldBeServed`.
            TableEdit("checkpoint chunk list", "UPDATE checkpoints SET chunks = (SELECT chunks FROM checkpoints WHERE run_id = 'r' AND seq = 1) WHERE run_id = 'r' AND seq = 2",
                      finding: "checkpoint 2 of run r was altered: its chunks do not make the state its event"),
            TableEdit("checkpoint chunk altered", "UPDATE blobs SET data = zeroblob(length(data)) WHERE hash = substr((SELECT chunks FROM checkpoints WHERE run_id = 'r' AND seq = 2), 33, 32)",
                      finding: "checkpoint 2 of run r was altered: its chunks do not make the state its event"),
            TableEdit("checkpoint chunk removed", "DELETE FROM blobs WHERE hash = substr((SELECT chunks FROM checkpoints WHERE run_id = 'r' AND seq = 1), 1, 32)",
                      finding: "a chunk of checkpoint 1 of run r was removed"),
            TableEdit("checkpoint delta", "UPDATE checkpoints SET keep = keep - 1 WHERE run_id = 'r' AND seq = 3", finding: "checkpoint 3 of run r was altered: its chunks do not make the state"),
            TableEdit("checkpoint delta damaged", "UPDATE checkpoints SET keep = 100000 WHERE run_id = 'r' AND seq = 3", finding: "checkpoint 3 of run r was altered: its chunk list is damaged"),
            TableEdit("checkpoint state hash", "UPDATE checkpoints SET state_hash = '\(Digest.sha256Hex([]))' WHERE run_id = 'r' AND seq = 2", finding: "checkpoint 2 of run r was altered: its state hash is"),
            TableEdit("checkpoint label", "UPDATE checkpoints SET label = 'release' WHERE run_id = 'r' AND seq = 2", finding: "checkpoint 2 of run r was altered: its label is release where its event"),
            TableEdit("checkpoint call", "UPDATE checkpoints SET call_id = 'c2' WHERE run_id = 'r' AND seq = 1", finding: "checkpoint 1 of run r was altered: its call is c2 where its event"),
            TableEdit("checkpoint time", "UPDATE checkpoints SET created_at = '2000-01-01T00:00:00.000000Z' WHERE run_id = 'r' AND seq = 2",
                      finding: "checkpoint 2 of run r was altered: its time is 2000-01-01T00:00:00.000000Z where its event"),
            TableEdit("checkpoint removed", "DELETE FROM checkpoints WHERE run_id = 'r' AND seq = 3", finding: "checkpoint 3 of run r was removed"),
            TableEdit("checkpoint inserted", "INSERT INTO checkpoints SELECT run_id, 4, label, call_id, created_at, size, state_hash, base_seq, keep, keep_tail, chunks FROM checkpoints WHERE run_id = 'r' AND seq = 3",
                      finding: "checkpoint 4 of run r has no event (it was inserted)"),
            // The journal: first value wins.
            TableEdit("journal value", "UPDATE journal SET value = '\"w\"' WHERE run_id = 'r' AND key = 'k'", finding: "journal entry k of run r was altered"),
            TableEdit("journal time", "UPDATE journal SET recorded_at = '2000-01-01T00:00:00.000000Z' WHERE run_id = 'r' AND key = 'k2'",
                      finding: "journal entry k2 of run r was altered: its time is 2000-01-01T00:00:00.000000Z where its event"),
            TableEdit("journal entry removed", "DELETE FROM journal WHERE run_id = 'r' AND key = 'k2'", finding: "journal entry k2 of run r was removed"),
            TableEdit("journal entry inserted", "INSERT INTO journal VALUES ('r', 'k3', '1', '2026-01-01T00:00:00.000Z')", finding: "journal entry k3 of run r has no event (it was inserted)"),
            // The run.
            TableEdit("run attempts", "UPDATE runs SET attempts = 1 WHERE run_id = 'r'", finding: "run r was altered: its attempt count is 1 where its events say 2"),
            TableEdit("run finish time removed", "UPDATE runs SET finished_at = NULL WHERE run_id = 'r'", finding: "run r was altered: its finish time is none where its events say"),
            TableEdit("run finish time", "UPDATE runs SET finished_at = '2000-01-01T00:00:00.000000Z' WHERE run_id = 'r'",
                      finding: "run r was altered: its finish time is 2000-01-01T00:00:00.000000Z where its events say 20"),
            TableEdit("run exit status", "UPDATE runs SET exit_status = 1 WHERE run_id = 'r'", finding: "run r was altered: its exit status is 1 where its events say 0"),
            TableEdit("run creation time", "UPDATE runs SET created_at = '2000-01-01T00:00:00.000Z' WHERE run_id = 'r'", finding: "run r was altered: its creation time is 2000-01-01T00:00:00.000Z"),
            TableEdit("run workspace", "UPDATE runs SET workspace = 'relative/elsewhere' WHERE run_id = 'r'", finding: "the workspace or policies recorded for run r were altered"),
            TableEdit("run workspace inode", "UPDATE runs SET workspace_ino = 2 WHERE run_id = 'r'", finding: "the workspace or policies recorded for run r were altered"),
            TableEdit("run policies", "UPDATE runs SET policies = 'relative/policies-b' WHERE run_id = 'r'", finding: "the workspace or policies recorded for run r were altered"),
            // A server's typed columns refuse this edit outright.
            TestLedger.onPostgres ? nil : TableEdit("run workspace device of another type", "UPDATE runs SET workspace_dev = 'one' WHERE run_id = 'r'", finding: "the workspace or policies recorded for run r were altered"),
            // The agent decides which runs `ward run` offers to resume.
            TableEdit("run agent", #"UPDATE runs SET agent = '["sh"]' WHERE run_id = 'r'"#, finding: #"run r was altered: its agent is ["sh"] where its events say ["python3","agent.py","it's"]"#),
        ]
        return all.compactMap { $0 }
    }()

    @Test("an edit of the tables is named", arguments: edits)
    func editIsNamed(_ edit: TableEdit) throws {
        let path = try VerifyFixture.make()
        #expect(try VerifyFixture.problem(path) == nil, "\(edit.name): the untouched ledger")
        try VerifyFixture.edit(path, edit.statements)
        let problem = try VerifyFixture.problem(path)
        #expect(problem?.hasPrefix(edit.finding) == true, "\(edit.name): \(problem ?? "not detected")")
    }

    @Test func anUntouchedLedgerVerifiesAndReportsItsHead() throws {
        let path = try VerifyFixture.make()
        let report = try Ledger(path: path, readOnly: true).verify()
        #expect(report.ok, "\(report.runs.compactMap(\.problem))")
        let events = try Ledger(path: path, readOnly: true).exportEvents(run: "r")
        let r = try #require(report.runs.first { $0.run == "r" })
        #expect(r.events == events.count && r.head == events.last?.hash)
        // Every kind of event is in it, so each kind's checks ran on what ward really writes.
        #expect(Set(events.map(\.kind)) == ["run.attempt", "run.resumed", "run.place", "run.policies", "run.moved", "call.begin", "call.finish", "call.in-doubt",
                                             "call.resolve", "call.delivered", "checkpoint.save", "journal.record", "run.finish"])
        #expect(try Ledger(path: path, readOnly: true).verify(run: "r").runs.map(\.problem) == [nil])
    }

    /// A ledger written before rows took their events' times (each row read the clock
    /// itself, microseconds apart): opened read-only it is not migrated and its times are not
    /// held to the events (only whether a call or run finished); opened to write, migration
    /// v4 sets each time to its event's, and from then on they are held.
    @Test(.sqliteFile) func aLedgerFromBeforeRowsTookTheirEventsTimesVerifies() throws {
        let path = try VerifyFixture.make()
        // Each edit opens the file to write, which migrates it first: the skew and the
        // forgotten migration are made after.
        let old = [
            "UPDATE calls SET started_at = started_at || '1', finished_at = finished_at || '1'",
            "UPDATE runs SET finished_at = finished_at || '1'",
            "UPDATE checkpoints SET created_at = created_at || '1'",
            "UPDATE journal SET recorded_at = recorded_at || '1'",
            "DELETE FROM grdb_migrations WHERE identifier = 'v4'",
        ]
        try VerifyFixture.edit(path, old)
        #expect(try VerifyFixture.problem(path) == nil)
        try VerifyFixture.edit(path, ["UPDATE calls SET finished_at = NULL WHERE run_id = 'r' AND call_id = 'c1'"] + old)
        #expect(try VerifyFixture.problem(path)?.hasPrefix("call c1 of run r was altered: its finish time is none") == true)
        try VerifyFixture.edit(path, ["UPDATE calls SET finished_at = 'x' WHERE run_id = 'r' AND call_id = 'c1'"] + old)
        _ = try Ledger(path: path, durability: .normal)  // migrated: each time is its event's again
        #expect(try VerifyFixture.problem(path) == nil)
        try VerifyFixture.edit(path, ["UPDATE journal SET recorded_at = recorded_at || '1' WHERE run_id = 'r'"])
        #expect(try VerifyFixture.problem(path)?.hasPrefix("journal entry k of run r was altered: its time") == true)
    }

    /// The attacks of issue 14, with what each did before verify caught it.
    @Test func aVerdictFlippedToNotExecutedWouldRunTheCallAgain() throws {
        let path = try VerifyFixture.make()
        try VerifyFixture.edit(path, ["UPDATE calls SET verdict = 'not-executed' WHERE run_id = 'r' AND call_id = 'c3'"])
        #expect(try VerifyFixture.problem(path)?.hasPrefix("call c3 of run r was altered: its verdict") == true)
        // What it does: the payment runs again.
        let ledger = try Ledger(path: path, durability: .normal)
        #expect(try ledger.begin(request("c3", run: "r")).ticket?.execution == 2)
    }

    @Test func aForgedCheckpointWouldBeServed() throws {
        let path = try VerifyFixture.make()
        let forged = Array(#"{"approved":true}"#.utf8)
        let hash = Digest.sha256Hex(forged)
        try VerifyFixture.edit(path, [
            "INSERT INTO blobs VALUES (X'\(hash)', \(forged.count), X'\(Digest.hex(forged))')",
            "UPDATE checkpoints SET chunks = X'\(hash)', base_seq = NULL, keep = 0, keep_tail = 0, size = \(forged.count), state_hash = '\(hash)' WHERE run_id = 'r' AND seq = 3",
        ])
        #expect(try Ledger(path: path, readOnly: true).loadCheckpoint(run: "r")?.state == forged)
        #expect(try VerifyFixture.problem(path)?.hasPrefix("checkpoint 3 of run r was altered") == true)
    }

    /// A forgery that keeps the size: only the content betrays it.
    @Test func aCheckpointOfTheSameSizeIsReadBack() throws {
        let path = try VerifyFixture.make()
        let original = try #require(try Ledger(path: path, readOnly: true).loadCheckpoint(run: "r", seq: 2)?.state)
        var forged = original
        forged[0] ^= 1
        let hash = Digest.sha256Hex(forged)
        try VerifyFixture.edit(path, [
            "INSERT INTO blobs VALUES (X'\(hash)', \(forged.count), X'\(Digest.hex(forged))')",
            "UPDATE checkpoints SET chunks = X'\(hash)', base_seq = NULL, keep = 0, keep_tail = 0 WHERE run_id = 'r' AND seq = 2",
        ])
        #expect(try VerifyFixture.problem(path)?.hasPrefix("checkpoint 2 of run r was altered: its chunks do not make the state") == true)
    }
}

@Suite("Ledger: verify names sequences of events ward never writes")
struct VerifySequenceTests {
    /// A ledger with one non-idempotent call c1 begun by a live handle (kept by the caller).
    static func running() throws -> (path: String, ledger: Ledger) {
        let path = temporaryLedgerPath("sequence")
        let ledger = try Ledger(path: path, durability: .normal)
        _ = try ledger.startAttempt(run: "r")
        _ = try #require(try ledger.begin(request("c1", run: "r")).ticket)
        #expect(try problem(path) == nil)
        return (path, ledger)
    }

    static func problem(_ path: String) throws -> String? {
        try Ledger(path: path, readOnly: true).verify(run: "r").runs.first?.problem
    }

    static func begin(_ path: String, execution: Int) throws -> [String: JSONValue] {
        var data = try VerifyFixture.data(path, "call.begin", call: "c1")
        data["execution"] = .number(Double(execution))
        return data
    }

    @Test func aNonIdempotentCallRunningAgainWithoutAVerdict() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "call.begin", call: "c1", try Self.begin(path, execution: 2),
                                 then: ["UPDATE calls SET executions = 2 WHERE call_id = 'c1'"])
        #expect(try Self.problem(path) == "call c1 of run r: execution 2 began without a not-executed verdict after execution 1")
        withExtendedLifetime(ledger) {}
    }

    @Test func aCallInDoubtRunningAgainWithoutAVerdict() throws {
        let path = temporaryLedgerPath("sequence")
        _ = try Ledger(path: path, durability: .normal).begin(request("c1", run: "r"))
        let ledger = try Ledger(path: path, durability: .normal)  // finds c1 in doubt
        #expect(try ledger.listCalls(run: "r").first?.status == "in-doubt")
        let begin = try Self.begin(path, execution: 2)
        try VerifyFixture.append(path, "call.begin", call: "c1", begin,
                                 then: ["UPDATE calls SET status = 'running', executions = 2, owner = '\(begin["owner"]?.stringValue ?? "")' WHERE call_id = 'c1'"])
        #expect(try Self.problem(path) == "call c1 of run r: execution 2 began without a not-executed verdict after execution 1")
        withExtendedLifetime(ledger) {}
    }

    @Test func aFinishedCallRunningAgain() throws {
        let path = temporaryLedgerPath("sequence")
        let ledger = try Ledger(path: path, durability: .normal)
        _ = try ledger.finish(try #require(try ledger.begin(request("c1", run: "r", effect: .idempotent)).ticket), outcome: outcome("once"))
        try VerifyFixture.append(path, "call.begin", call: "c1", try Self.begin(path, execution: 2))
        #expect(try Self.problem(path) == "call c1 of run r: execution 2 began after execution 1 finished (a finished call is replayed, never run again)")
    }

    @Test func aCallResolvedExecutedRunningAgain() throws {
        let path = temporaryLedgerPath("sequence")
        _ = try Ledger(path: path, durability: .normal).begin(request("c1", run: "r"))
        try Ledger(path: path, durability: .normal).resolve(run: "r", callId: "c1", as: .executed, note: "it ran")
        try VerifyFixture.append(path, "call.begin", call: "c1", try Self.begin(path, execution: 2))
        #expect(try Self.problem(path) == "call c1 of run r: execution 2 began after execution 1 was resolved as executed")
    }

    /// The rule that lets ward run a call again: idempotent after a crash, or after a
    /// not-executed verdict. Both through the ledger's API: they verify.
    @Test func theRunsAgainWardMakesVerify() throws {
        let path = temporaryLedgerPath("sequence")
        do {
            let crashed = try Ledger(path: path, durability: .normal)
            _ = try crashed.begin(request("idempotent", run: "r", effect: .idempotent))
            _ = try crashed.begin(request("payment", run: "r"))
        }
        let ledger = try Ledger(path: path, durability: .normal)
        try ledger.resolve(run: "r", callId: "payment", as: .notExecuted, note: "no charge at the bank")
        for id in ["idempotent", "payment"] {
            let again = try #require(try ledger.begin(request(id, run: "r", effect: id == "payment" ? .nonIdempotent : .idempotent)).ticket)
            #expect(again.execution == 2)
            _ = try ledger.finish(again, outcome: outcome("done"))
        }
        #expect(try Self.problem(path) == nil)
    }

    @Test func anExecutionNumberSkipped() throws {
        let path = temporaryLedgerPath("sequence")
        _ = try Ledger(path: path, durability: .normal).begin(request("c1", run: "r", effect: .idempotent))
        try VerifyFixture.append(path, "call.begin", call: "c1", try Self.begin(path, execution: 3),
                                 then: ["UPDATE calls SET executions = 3 WHERE call_id = 'c1'"])
        #expect(try Self.problem(path)?.hasPrefix("call c1 of run r: event 2 begins execution 3 after execution 1") == true)
    }

    @Test func anotherToolUnderTheSameCallID() throws {
        let path = temporaryLedgerPath("sequence")
        _ = try Ledger(path: path, durability: .normal).begin(request("c1", run: "r", effect: .idempotent))
        var data = try Self.begin(path, execution: 2)
        data["tool"] = .string("git")
        try VerifyFixture.append(path, "call.begin", call: "c1", data, then: ["UPDATE calls SET executions = 2 WHERE call_id = 'c1'"])
        #expect(try Self.problem(path)?.hasPrefix("call c1 of run r: execution 2 began (event 2) with another tool or other arguments") == true)
    }

    static func finish(execution: Int) -> [String: JSONValue] {
        ["status": .string("succeeded"), "exitCode": .number(0), "signal": .null, "stdout": .string(Digest.sha256Hex([])),
         "stderr": .string(Digest.sha256Hex([])), "truncated": .bool(false), "durationMs": .number(1), "execution": .number(Double(execution))]
    }

    /// The rows as that finish would leave them.
    static let finished = [
        "INSERT OR IGNORE INTO blobs VALUES (X'\(Digest.sha256Hex([]))', 0, X'')",
        """
        UPDATE calls SET status = 'succeeded', exit_code = 0, signal = NULL, stdout = X'\(Digest.sha256Hex([]))', stderr = X'\(Digest.sha256Hex([]))',
            truncated = 0, duration_ms = 1, owner = NULL,
            finished_at = (SELECT at FROM events WHERE call_id = 'c1' AND kind = 'call.finish' ORDER BY seq DESC LIMIT 1) WHERE call_id = 'c1'
        """,
    ]

    @Test func aFinishForAnExecutionThatNeverBegan() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "call.finish", call: "c1", Self.finish(execution: 2), then: Self.finished)
        #expect(try Self.problem(path) == "call c1 of run r: event 3 finishes execution 2, which never began")
        withExtendedLifetime(ledger) {}
    }

    @Test func aFinishForACallThatNeverBegan() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "call.finish", call: "c0", Self.finish(execution: 1))
        #expect(try Self.problem(path) == "call c0 of run r: event 3 finishes execution 1, which never began")
        withExtendedLifetime(ledger) {}
    }

    @Test func twoFinishesOfOneExecution() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "call.finish", call: "c1", Self.finish(execution: 1), then: Self.finished)
        try VerifyFixture.append(path, "call.finish", call: "c1", Self.finish(execution: 1))
        #expect(try Self.problem(path) == "call c1 of run r: event 4 finishes execution 1, which had finished (succeeded)")
        withExtendedLifetime(ledger) {}
    }

    @Test func aVerdictOnACallNotInDoubt() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "call.resolve", call: "c1", ["verdict": .string("not-executed"), "note": .string(""), "by": .string("operator"),
                                                                    "stdout": .string(Digest.sha256Hex([]))])
        #expect(try Self.problem(path) == "call c1 of run r: event 3 resolves it, but it was running, not in doubt")
        withExtendedLifetime(ledger) {}
    }

    @Test func anAttemptNumberSkipped() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "run.attempt", ["attempt": .number(3)], then: ["UPDATE runs SET attempts = 3 WHERE run_id = 'r'"])
        #expect(try Self.problem(path) == "event 3 of run r starts attempt 3 after attempt 1 (attempts are counted one by one)")
        withExtendedLifetime(ledger) {}
    }

    @Test func aResumptionWithoutTheAttemptItStarts() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "run.resumed", ["by": .string("auto")])
        #expect(try Self.problem(path) == "event 3 of run r resumes the run, but no attempt follows it")
        try VerifyFixture.append(path, "run.finish", ["exitStatus": .number(0)])
        #expect(try Self.problem(path) == "event 3 of run r resumes the run, but event 4 is not the attempt it starts")
        withExtendedLifetime(ledger) {}
    }

    @Test func aResumptionByNobodyWardKnows() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "run.resumed", ["by": .string("cron")])
        #expect(try Self.problem(path) == "event 3 of run r (run.resumed) holds no valid by")
        withExtendedLifetime(ledger) {}
    }

    @Test func aResumptionOfARunThatNeverStarted() throws {
        let path = temporaryLedgerPath("sequence")
        let ledger = try Ledger(path: path, durability: .normal)
        _ = try ledger.startAttempt(run: "r", resumedBy: .always)
        #expect(try Self.problem(path) == "event 1 of run r resumes a run that never started")
    }

    @Test func anAgentThatIsNotACommandLine() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "run.attempt", ["attempt": .number(2), "agent": .array([])], then: ["UPDATE runs SET attempts = 2, agent = '[]' WHERE run_id = 'r'"])
        #expect(try Self.problem(path) == "event 3 of run r (run.attempt) holds no valid agent")
        withExtendedLifetime(ledger) {}
    }

    @Test func aCheckpointSavedWithACallThatNeverBegan() throws {
        let (path, ledger) = try Self.running()
        try ledger.write("saving a checkpoint alone") { db in
            _ = try ledger.storeCheckpoint(db, run: "r", state: Array("state".utf8), label: nil, callId: "c9")
        }
        #expect(try Self.problem(path) == "checkpoint 1 of run r was saved with call c9 (event 3), but that call never began")
        withExtendedLifetime(ledger) {}
    }

    @Test func aJournalEntryRecordedTwice() throws {
        let (path, ledger) = try Self.running()
        _ = try ledger.journalRecord(run: "r", key: "k", value: .string("v"))
        try VerifyFixture.append(path, "journal.record", try VerifyFixture.data(path, "journal.record"))
        #expect(try Self.problem(path) == "journal entry k of run r is recorded by two events (the first value recorded is the only one)")
    }

    @Test func anEventOfAKindWardDoesNotWrite() throws {
        let (path, ledger) = try Self.running()
        try VerifyFixture.append(path, "call.undo", call: "c1", [:])
        #expect(try Self.problem(path) == "event 3 of run r is of a kind this ward does not know (call.undo), so it cannot vouch for what it changed")
        withExtendedLifetime(ledger) {}
    }
}

/// Whether no process holds an owner lock of the ledger at `path` (its `-locks` directory).
func ownerLocksAreFree(ledger path: String) -> Bool {
    let directory = path + "-locks"
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.filter { $0.hasPrefix("owner-") }.allSatisfy { name in
        let fd = open(directory + "/" + name, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return true }
        defer { close(fd) }
        return flock(fd, LOCK_SH | LOCK_NB) == 0
    }
}
