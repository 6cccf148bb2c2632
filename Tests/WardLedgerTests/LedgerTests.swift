import Foundation
import Testing
import WardCore
@testable import WardLedger
import Synchronization
import WardTestSupport

/// The ledger the tests run on: a new SQLite file; with `WARD_TEST_LEDGER=postgres`, a new
/// database on a PostgreSQL server this test process starts (Scripts/test runs the ledger's
/// suites both ways).
func temporaryLedgerPath(_ label: String = "ledger") -> String {
    guard let server = TestLedger.server else { return makeTemporaryDirectory("ward-ledger-test") + "/\(label).sqlite" }
    return try! server.createDatabase("t\(getpid())_\(TestLedger.databases.add(1, ordering: .relaxed).newValue)") + "&lease=\(TestLedger.leaseSeconds)"
}

enum TestLedger {
    static let onPostgres = ProcessInfo.processInfo.environment["WARD_TEST_LEDGER"] == "postgres"
    static let server: PostgresServer? = onPostgres ? try! PostgresServer() : nil
    static let databases = Atomic<Int>(0)
    /// Short, so that a dead process's calls are judged in a test's time.
    static let leaseSeconds = 1.0
}

extension TestLedger {
    /// A hand edit written for SQLite, as the test's store reads it: PostgreSQL names a
    /// trigger's table, writes bytes as `'\\x…'::bytea` and ignores a conflict at the end.
    static func sql(_ sql: String) -> String {
        guard onPostgres else { return sql }
        var s = sql.replacingOccurrences(of: #"DROP TRIGGER (IF EXISTS )?(\w+)"#, with: "DROP TRIGGER $1$2 ON events", options: .regularExpression)
        s = s.replacingOccurrences(of: #"[Xx]'([0-9a-fA-F]*)'"#, with: #"'\\x$1'::bytea"#, options: .regularExpression)
        s = s.replacingOccurrences(of: #"CAST\(('[^']*') AS BLOB\)"#, with: "convert_to($1, 'UTF8')", options: .regularExpression)
        s = s.replacingOccurrences(of: #"zeroblob\(([^()]*(\([^()]*\))?)\)"#, with: "decode(repeat('00', $1), 'hex')", options: .regularExpression)
        if s.contains("INSERT OR IGNORE INTO") { s = s.replacingOccurrences(of: "INSERT OR IGNORE INTO", with: "INSERT INTO") + " ON CONFLICT DO NOTHING" }
        return s
    }
}

extension Trait where Self == ConditionTrait {
    /// About SQLite's file itself (its side files, its header, flock-held owners, a full
    /// disk under it): not a behaviour a server's ledger has.
    static var sqliteFile: Self { .enabled(if: !TestLedger.onPostgres, "about the SQLite file itself") }
}

func request(_ call: String, run: String = "r1", tool: String = "shell", effect: CallEffect = .nonIdempotent,
             args: JSONValue = .object(["command": .string("echo hi")]), checkpoint: [UInt8]? = nil, attempt: Int = 1) -> BeginRequest {
    BeginRequest(run: run, callId: call, tool: tool, effect: effect, arguments: args, policyHash: "policy-1",
                 executable: "/bin/sh", attempt: attempt, checkpoint: checkpoint)
}

func outcome(_ stdout: String, status: CallStatus = .succeeded, code: Int32 = 0) -> ToolOutcome {
    ToolOutcome(status: status, exitCode: code, signal: nil, stdout: Array(stdout.utf8), stderr: Array("err".utf8), truncated: false, durationMs: 1.25)
}

/// A process identity that is certainly dead: a crashed supervisor.

extension BeginDecision {
    var ticket: CallTicket? { if case .execute(let t) = self { return t }; return nil }
    var replayed: CallResult? { if case .replay(let r) = self { return r }; return nil }
}

func expectLedgerError(_ code: LedgerError.Code, _ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        try body()
        Issue.record("expected \(code)", sourceLocation: sourceLocation)
    } catch let error as LedgerError {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}

@Suite("Ledger: call lifecycle, replay, conflict, recovery")
struct LedgerCallTests {
    /// The durability asked for is the one commits get: WAL set-up in the database library
    /// once replaced FULL with NORMAL behind ward's back (no fsync per commit).
    @Test("synchronous is what was asked for", .sqliteFile, arguments: [(Ledger.Durability.full, 2), (.normal, 1)])
    func durabilityIsApplied(durability: Ledger.Durability, pragma: Int) throws {
        let path = temporaryLedgerPath()
        #expect(try Ledger(path: path, durability: durability).effectiveSynchronous() == pragma)
        #expect(try Ledger(path: path).effectiveSynchronous() == 2, "reopened with the default")
    }

    @Test func beginFinishReplayIsByteIdentical() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let ticket = try #require(try ledger.begin(request("c1")).ticket)
        #expect(ticket.execution == 1)
        let binary: [UInt8] = [0xFF, 0x00, 0xC3, 0x28] + Array("tail".utf8)
        var out = outcome("")
        out.stdout = binary
        let first = try ledger.finish(ticket, outcome: out)
        #expect(!first.replayed)
        for _ in 0..<3 {
            let replay = try #require(try ledger.begin(request("c1")).replayed)
            #expect(replay.replayed)
            #expect(replay.outcome == first.outcome)
            #expect(replay.outcome.stdout == binary)
            var a = first.json.objectValue!, b = replay.json.objectValue!
            a["replayed"] = nil
            b["replayed"] = nil
            #expect(JSONValue.object(a).canonical == JSONValue.object(b).canonical)
        }
        // Reopening the file changes nothing.
        let again = try Ledger(path: ledger.path)
        #expect(try again.begin(request("c1")).replayed?.outcome == first.outcome)
    }

    @Test func canonicalArgumentsReplayDifferentArgumentsConflict() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let t = try #require(try ledger.begin(request("c1", args: .object(["a": .number(1), "b": .array([.bool(true)])]))).ticket)
        _ = try ledger.finish(t, outcome: outcome("x"))
        // Same JSON, other key order and number spelling: the same call.
        let same = try JSONValue.parse(#"{"b": [true], "a": 1.0}"#)
        #expect(try ledger.begin(request("c1", args: same)).replayed != nil)
        expectLedgerError(.conflict) { _ = try ledger.begin(request("c1", args: .object(["a": .number(2)]))) }
        expectLedgerError(.conflict) { _ = try ledger.begin(request("c1", tool: "python", args: same)) }
    }

    /// A begin whose COMMIT landed while its answer was lost (a server's connection dropped
    /// just then) left the call running under this handle with no tool started: the next
    /// begin of it hands that execution out, once, recording nothing more.
    @Test func aBeginWhoseCommitLandedUnseenIsHandedOutOnceByTheNext() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let first = try #require(try ledger.begin(request("c1")).ticket)
        let begun = try ledger.exportEvents(run: "r1").count
        ledger.handedOut.withLock { $0.removeAll() }  // the answer that never came
        let again = try #require(try ledger.begin(request("c1")).ticket)
        #expect(again == first)
        #expect(try ledger.exportEvents(run: "r1").count == begun)
        // Handed out now: the next begin finds it running, and a finish records it once.
        expectLedgerError(.inProgress) { _ = try ledger.begin(request("c1")) }
        _ = try ledger.finish(again, outcome: outcome("done"))
        #expect(try ledger.begin(request("c1")).replayed?.outcome.stdout == Array("done".utf8))
        #expect(try ledger.verify().ok)
    }

    @Test func aRunningCallIsNeverStartedTwiceAndWaitersGetItsOutcome() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let ticket = try #require(try ledger.begin(request("c1")).ticket)
        expectLedgerError(.inProgress) { _ = try ledger.begin(request("c1")) }
        expectLedgerError(.inProgress) { _ = try ledger.awaitOutcome(run: "r1", callId: "c1", timeout: 0.05) }
        // The outcome is recorded once the waiter found the call running and sleeps before
        // looking again, so the wait itself is what is tested.
        let awaiting = Processes.currentThread()
        let failure = Mutex<String?>(nil)
        Thread {
            guard eventually({ Processes.isSleeping(awaiting) }) else { return }
            do { _ = try ledger.finish(ticket, outcome: outcome("done")) } catch { failure.withLock { $0 = "\(error)" } }
        }.start()
        let result = try #require(try ledger.awaitOutcome(run: "r1", callId: "c1", timeout: 30))
        #expect(result.replayed && result.outcome.stdout == Array("done".utf8))
        #expect(failure.withLock { $0 } == nil)
    }

    @Test func nonIdempotentCallOfADeadProcessBecomesInDoubtUntilResolved() throws {
        let path = temporaryLedgerPath()
        // …and the supervisor dies before finish.
        try beginThenCrash(ledgerAt: path, request("send-email"))
        let ledger = try Ledger(path: path)
        #expect(try ledger.listCalls(run: "r1").first?.status == "in-doubt")
        expectLedgerError(.inDoubt) { _ = try ledger.begin(request("send-email")) }
        expectLedgerError(.notFound) { try ledger.resolve(run: "r1", callId: "nope", as: .executed, note: "") }
        try ledger.resolve(run: "r1", callId: "send-email", as: .notExecuted, note: "mail log shows nothing sent")
        let again = try #require(try ledger.begin(request("send-email")).ticket)
        #expect(again.execution == 2)
        _ = try ledger.finish(again, outcome: outcome("sent"))
        #expect(try ledger.begin(request("send-email")).replayed?.outcome.stdout == Array("sent".utf8))
    }

    @Test func resolvedExecutedReplaysTheVerdict() throws {
        let path = temporaryLedgerPath()
        try beginThenCrash(ledgerAt: path, request("publish"))
        let ledger = try Ledger(path: path)
        try ledger.resolve(run: "r1", callId: "publish", as: .executed, note: "reconciled", by: "reconcile", output: Array("already published".utf8))
        let r = try #require(try ledger.begin(request("publish")).replayed)
        #expect(r.outcome.status == .resolved && r.replayed && r.outcome.stdout == Array("already published".utf8))
        expectLedgerError(.invalid) { try ledger.resolve(run: "r1", callId: "publish", as: .notExecuted, note: "") }
    }

    @Test("idempotent and read-only calls of a dead process simply run again", arguments: [CallEffect.idempotent, .readOnly])
    func retryable(effect: CallEffect) throws {
        let path = temporaryLedgerPath()
        try beginThenCrash(ledgerAt: path, request("c1", effect: effect))
        let ledger = try Ledger(path: path)
        #expect(try ledger.listCalls(run: "r1").first?.status == "running")
        let t = try #require(try ledger.begin(request("c1", effect: effect, attempt: 2)).ticket)
        #expect(t.execution == 2 && t.attempt == 2)
    }

    @Test func attemptsAndRuns() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        #expect(try ledger.startAttempt(run: "a") == 1)
        #expect(try ledger.startAttempt(run: "a") == 2)
        _ = try ledger.begin(request("c1", run: "a"))
        #expect(try ledger.listRuns().first?.unfinished == true)
        try ledger.finishRun(run: "b", exitStatus: 0)
        let runs = try ledger.listRuns()
        #expect(runs.map(\.run) == ["a", "b"])
        #expect(runs[0].attempts == 2 && runs[0].running == 1)
        #expect(runs[1].unfinished == false)
    }

    /// docs/design.md, *Offer to resume*: which runs are unfinished, and which of them a
    /// `ward run` of an agent in a workspace is offered.
    @Test func unfinishedRunsOfAnAgentInAWorkspace() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let here = RunPlace(workspace: "/w", device: 1, inode: 2, born: "3.0", policies: "/p")
        var replaced = here
        replaced.inode = 9
        var otherPolicies = here
        otherPolicies.policies = "/q"
        let agent = ["python3", "agent.py"]
        func run(_ id: String, agent: [String] = agent, place: RunPlace = here, exit: Int?) throws {
            _ = try ledger.startAttempt(run: id, agent: agent)
            try ledger.claimPlace(run: id, place)
            if let exit { try ledger.finishRun(run: id, exitStatus: exit) }
        }
        try run("succeeded", exit: 0)
        try run("failed", exit: 3)
        try run("stopped", exit: nil)
        try run("waiting", exit: 0)
        _ = try ledger.begin(request("c1", run: "waiting"))
        try ledger.write("a call awaiting approval") { db in
            try db.execute("UPDATE calls SET status = 'awaiting-approval' WHERE run_id = 'waiting'")
        }
        try run("other-policies", place: otherPolicies, exit: 1)
        try run("other-agent", agent: ["python3", "other.py"], exit: 1)
        try run("replaced-workspace", place: replaced, exit: 1)
        let all = Dictionary(uniqueKeysWithValues: try ledger.listRuns().map { ($0.run, $0) })
        #expect(all["succeeded"]?.unfinished == false)
        #expect(all["failed"]?.unfinished == true && all["stopped"]?.unfinished == true)
        #expect(all["waiting"]?.unfinished == true && all["waiting"]?.awaitingApproval == 1 && all["waiting"]?.running == 0)
        #expect(all["failed"]?.agent == agent)
        // The same workspace whatever the policies. (Their order, most recently active first,
        // is `ward run --resume always`'s test: these are made within a millisecond.)
        #expect(Set(try ledger.unfinishedRuns(agent: agent, workspace: here).map(\.run)) == ["other-policies", "waiting", "stopped", "failed"])
    }
}

@Suite("Ledger: checkpoints and journal")
struct LedgerStateTests {
    @Test func checkpointRoundTripOfLargeAndBinaryStates() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        // Seeded: chunk boundaries depend on the bytes, so the size of a delta is only fixed
        // for fixed bytes (with fresh random bytes each run, the bound below failed now and then).
        var rng = SplitMix64(seed: 0x5EED)
        let large = (0..<(3 << 20)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let s1 = try ledger.saveCheckpoint(run: "r", state: large, label: "big")
        let afterFirst = try ledger.checkpointStorageBytes(run: "r")
        var edited = large
        edited.replaceSubrange(1_000_000..<1_000_010, with: Array("0123456789abcdef".utf8))
        let s2 = try ledger.saveCheckpoint(run: "r", state: edited)
        // A 16-byte edit in the middle of 3 MiB adds a few chunks and a small manifest delta.
        let added = try ledger.checkpointStorageBytes(run: "r") - afterFirst
        #expect(added < 4096, "the edit added \(added) bytes")
        let s3 = try ledger.saveCheckpoint(run: "r", state: [])
        let s4 = try ledger.saveCheckpoint(run: "r", state: [0, 0, 0, 255])
        #expect([s1, s2, s3, s4] == [Int](1...4))
        #expect(try ledger.loadCheckpoint(run: "r", seq: 1)?.state == large)
        #expect(try ledger.loadCheckpoint(run: "r", seq: 2)?.state == edited)
        #expect(try ledger.loadCheckpoint(run: "r", seq: 3)?.state == [])
        #expect(try ledger.loadCheckpoint(run: "r")?.seq == 4)
        #expect(try ledger.loadCheckpoint(run: "r")?.state == [0, 0, 0, 255])
        #expect(try ledger.loadCheckpoint(run: "none") == nil)
        // A fresh process (no manifest cache) reads the same.
        #expect(try Ledger(path: ledger.path).loadCheckpoint(run: "r", seq: 2)?.state == edited)
    }

    @Test func storageGrowsWithWhatChanged() throws {
        // 200 steps, each appending 1 KiB to a JSON state (the LangGraph comparison).
        let ledger = try Ledger(path: temporaryLedgerPath())
        var items: [JSONValue] = []
        var state: [UInt8] = []
        for i in 0..<200 {
            items.append(.object(["step": .number(Double(i)), "note": .string(String(repeating: "x\(i % 10)", count: 490))]))
            state = Array(JSONValue.object(["items": .array(items)]).canonical.utf8)
            _ = try ledger.saveCheckpoint(run: "r", state: state)
        }
        let stored = try ledger.checkpointStorageBytes(run: "r")
        #expect(stored <= 2 * state.count, "stored \(stored) bytes for a \(state.count)-byte final state")
        for seq in [1, 17, 64, 100, 199, 200] {
            let s = try #require(try Ledger(path: ledger.path).loadCheckpoint(run: "r", seq: seq))
            #expect(s.state.count > 0)
        }
        #expect(try ledger.loadCheckpoint(run: "r")?.state == state)
    }

    // The last three change a column's type: a server's typed columns refuse them outright.
    @Test(arguments: [
        "base_seq = 3", "base_seq = 7", "keep = -1", "keep_tail = 1000000", "chunks = x'0001'", "chunks = zeroblob(32)",
        "state_hash = 'altered'",
    ] + (TestLedger.onPostgres ? [] : ["keep = 'x'", "base_seq = 2.5", "state_hash = x'00'"]))
    func aChunkListEditedByHandIsDamageNeverATrapOrALoop(edit: String) throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        // Each state extends the one before: checkpoints 2 and 3 are deltas.
        let states = (1...3).map { step in Array((0..<(200 * step)).map { "line \($0) of the state\n" }.joined().utf8) }
        for state in states { _ = try ledger.saveCheckpoint(run: "r", state: state) }
        // By another connection, as anyone editing the file would: not through the cache of this handle's own.
        let update = "UPDATE checkpoints SET \(edit) WHERE run_id = 'r' AND seq = 3"
        if TestLedger.onPostgres {
            try Ledger(path: ledger.path, recover: false).write("editing a checkpoint by hand") { db in try db.run(TestLedger.sql(update)) }
        } else {
            let sql = try BuildProducts.run("/usr/bin/sqlite3", [ledger.path, update])
            try #require(sql.status == 0, "\(sql)")
        }
        expectLedgerError(.corrupt) { _ = try ledger.loadCheckpoint(run: "r") }
        let usable = try ledger.loadUsableCheckpoint(run: "r")
        #expect(usable.checkpoint?.seq == 2 && usable.checkpoint?.state == states[1])
        #expect(usable.damaged.map(\.seq) == [3], "\(usable.damaged)")
        // The next save, much like checkpoint 3, loads; the damage is recorded once.
        let next = states[2] + Array("one more line\n".utf8)
        #expect(try ledger.saveCheckpoint(run: "r", state: next) == 4)
        #expect(try Ledger(path: ledger.path).loadUsableCheckpoint(run: "r").checkpoint?.state == next)
        _ = try ledger.loadUsableCheckpoint(run: "r", seq: 3)
        #expect(try ledger.exportEvents(run: "r").filter { $0.kind == "checkpoint.damaged" }.map { $0.data.objectValue?["seq"] } == [.number(3)])
    }

    @Test func checkpointWithACallIsInTheSameTransaction() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let state = Array(#"{"step":3}"#.utf8)
        let t = try #require(try ledger.begin(request("c1", checkpoint: state)).ticket)
        #expect(t.checkpointSeq == 1)
        #expect(try ledger.loadCheckpoint(run: "r1")?.state == state)
        // A conflicting call stores nothing.
        expectLedgerError(.conflict) { _ = try ledger.begin(request("c1", args: .object([:]), checkpoint: Array("other".utf8))) }
        #expect(try ledger.loadCheckpoint(run: "r1")?.seq == 1)
    }

    @Test func journalFirstValueWins() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let first = try ledger.journalRecord(run: "r", key: "llm-1", value: .object(["text": .string("plan A")]))
        #expect(first.recorded && first.value == .object(["text": .string("plan A")]))
        let second = try ledger.journalRecord(run: "r", key: "llm-1", value: .string("plan B"))
        #expect(!second.recorded && second.value == .object(["text": .string("plan A")]))
        #expect(try ledger.journalRecord(run: "other", key: "llm-1", value: .string("plan B")).recorded)
    }
}

@Suite("Ledger: files that are not ledgers", .sqliteFile)
struct LedgerFileTests {
    @Test func notALedgerIsRefusedAndLeftUntouched() throws {
        let path = temporaryLedgerPath()
        let junk = Array("this is a text file, not a database\n".utf8) + [UInt8](repeating: 7, count: 5000)
        FileManager.default.createFile(atPath: path, contents: Data(junk))
        expectLedgerError(.corrupt) { _ = try Ledger(path: path) }
        #expect(FileManager.default.contents(atPath: path) == Data(junk))
    }

    @Test func anotherApplicationsDatabaseIsRefused() throws {
        let path = temporaryLedgerPath()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        p.arguments = [path, "CREATE TABLE t(x); INSERT INTO t VALUES (1);"]
        try p.run()
        p.waitUntilExit()
        let before = FileManager.default.contents(atPath: path)
        expectLedgerError(.corrupt) { _ = try Ledger(path: path) }
        #expect(FileManager.default.contents(atPath: path) == before)
    }

    @Test func damagedLedgerGivesAClearError() throws {
        let path = temporaryLedgerPath()
        do {
            let ledger = try Ledger(path: path)
            for i in 0..<50 { _ = try ledger.finish(try #require(try ledger.begin(request("c\(i)")).ticket), outcome: outcome(String(repeating: "o", count: 3000))) }
        }
        var bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        for i in stride(from: 4096, to: bytes.count, by: 97) { bytes[i] ^= 0x5A }  // flip bytes past the header page
        let copy = path + ".copy"
        FileManager.default.createFile(atPath: copy, contents: Data(bytes))
        let original = FileManager.default.contents(atPath: path)
        do {
            let damaged = try Ledger(path: copy, readOnly: true)
            _ = try damaged.verify()
            _ = try damaged.listCalls()
            Issue.record("damage went unnoticed")
        } catch {
            #expect(error.code == .corrupt || error.code == .storage, "\(error)")
        }
        #expect(FileManager.default.contents(atPath: path) == original)
    }
}

/// A small seeded generator (SplitMix64), for test data that must be the same every run.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
