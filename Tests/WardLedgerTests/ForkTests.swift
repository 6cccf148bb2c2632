import Foundation
import Testing
import WardCore
@testable import WardLedger
import WardTestSupport

/// The rows of `table` of `run` (every column but the run), sorted, as text: what a fork must
/// hold of its origin's.
private func rows(_ ledger: Ledger, _ table: String, run: String, where condition: String = "1 = 1") throws -> [String] {
    try ledger.read("reading rows") { db in
        try db.rows("SELECT * FROM \(table) WHERE run_id = ? AND \(condition)", run).map { row in
            row.columnNames.filter { $0 != "run_id" }.map { "\($0)=\(row[$0] as SQLValue)" }.joined(separator: " ")
        }.sorted()
    }
}

/// The calls whose `call.begin` comes before the event that saved `checkpoint` of `run`.
private func callsBegunBefore(_ ledger: Ledger, run: String, checkpoint: Int) throws -> [String] {
    let events = try ledger.exportEvents(run: run)
    let end = try #require(events.first { $0.kind == "checkpoint.save" && $0.data.objectValue?["seq"] == .number(Double(checkpoint)) }).seq
    return Set(events.filter { $0.kind == "call.begin" && $0.seq < end }.compactMap(\.callId)).sorted()
}

private func exported(_ path: String, run: String) throws -> [String] {
    try Ledger(path: path, readOnly: true).exportEvents(run: run).map(\.json.canonical)
}

/// Rewrites `run`'s events from `seq` on as someone rebuilding its chain would: event `seq`'s
/// body changed by `change`, every hash after it made anew, the run's head moved. Only a
/// comparison with something outside the chain can tell.
private func rechain(_ path: String, run: String, from seq: Int, _ change: (String) -> String) throws {
    let ledger = try Ledger(path: path, existing: true, recover: false)
    try ledger.write("rewriting a chain") { db in
        try db.execute(TestLedger.sql("DROP TRIGGER IF EXISTS events_are_append_only_update"))
        var prev = try #require(try db.first("SELECT prev_hash FROM events WHERE run_id = ? AND seq = ?", [.text(run), .int(seq)]) { $0.text(0) })
        for (s, body) in try db.all("SELECT seq, body FROM events WHERE run_id = ? AND seq >= ? ORDER BY seq", [.text(run), .int(seq)], { ($0.int(0), $0.text(1)) }) {
            let changed = s == seq ? change(body) : body
            let hash = Ledger.chain(prev: prev, body: changed)
            try db.run("UPDATE events SET body = ?, prev_hash = ?, hash = ? WHERE run_id = ? AND seq = ?", [.text(changed), .text(prev), .text(hash), .text(run), .int(s)])
            prev = hash
        }
        try db.run("UPDATE runs SET head_hash = ? WHERE run_id = ?", [.text(prev), .text(run)])
    }
}

@Suite("Ledger: a fork holds its origin's history up to a checkpoint, and verify covers it")
struct ForkTests {
    @Test("a fork at each checkpoint holds exactly the rows its events make, and changes nothing of its origin", arguments: [1, 2, 3])
    func forkAtEachCheckpoint(checkpoint: Int) throws {
        let path = try VerifyFixture.make()
        let before = try exported(path, run: "r")
        let ledger = try Ledger(path: path, existing: true, recover: false)
        let fork = try ledger.fork(run: "r", at: checkpoint, as: "f")
        #expect(fork.run == "f" && fork.origin == "r" && fork.checkpoint == checkpoint)

        let begun = try callsBegunBefore(ledger, run: "r", checkpoint: checkpoint)
        #expect(fork.calls == begun.count)
        let ids = begun.map { "'\($0)'" }.joined(separator: ", ")
        #expect(try rows(ledger, "calls", run: "f") == rows(ledger, "calls", run: "r", where: begun.isEmpty ? "1 = 0" : "call_id IN (\(ids))"))
        #expect(try rows(ledger, "checkpoints", run: "f") == rows(ledger, "checkpoints", run: "r", where: "seq <= \(checkpoint)"))
        #expect(try ledger.loadCheckpoint(run: "f", seq: checkpoint)?.state == ledger.loadCheckpoint(run: "r", seq: checkpoint)?.state)
        #expect(try ledger.loadCheckpoint(run: "f")?.seq == checkpoint, "the fork holds checkpoints after its own")

        let events = try ledger.exportEvents(run: "f")
        let first = try #require(events.first)
        let origin = try ledger.exportEvents(run: "r")
        let end = try #require(origin.first { $0.kind == "checkpoint.save" && $0.data.objectValue?["seq"] == .number(Double(checkpoint)) })
        #expect(first.kind == "run.fork" && first.prevHash == end.hash)
        #expect(first.data.objectValue?["origin"] == .string("r") && first.data.objectValue?["at"] == .number(Double(checkpoint)))
        #expect(first.data.objectValue?["originSeq"] == .number(Double(end.seq)) && first.data.objectValue?["originHash"] == .string(end.hash))
        // The prefix one for one, then only the later events of the calls begun in it.
        #expect(events.dropFirst().prefix(end.seq).map { [$0.kind, $0.at, $0.callId ?? "", $0.data.canonical] }
                == origin.prefix(end.seq).map { [$0.kind, $0.at, $0.callId ?? "", $0.data.canonical] })
        let later = origin.dropFirst(end.seq).filter { $0.kind.hasPrefix("call.") && begun.contains($0.callId ?? "") }
        #expect(events.dropFirst(end.seq + 1).map { [$0.kind, $0.callId ?? "", $0.data.canonical] } == later.map { [$0.kind, $0.callId ?? "", $0.data.canonical] })

        let runs = try ledger.listRuns()
        let listed = try #require(runs.first { $0.run == "f" })
        #expect(listed.origin == "r" && listed.forkedAt == checkpoint)
        #expect(runs.first { $0.run == "r" }.map { $0.origin == nil && $0.forkedAt == nil } == true)
        #expect(try exported(path, run: "r") == before, "forking changed the origin")
        let report = try Ledger(path: path, readOnly: true).verify()
        #expect(report.runs.map(\.run) == ["f", "other", "r"])
        #expect(report.runs.allSatisfy { $0.problem == nil && $0.note == nil }, "\(report.runs.compactMap(\.problem))")
    }

    @Test func theCallHandedInWithTheCheckpointIsNotInTheFork() throws {
        let path = try VerifyFixture.make()
        let ledger = try Ledger(path: path, existing: true, recover: false)
        // Checkpoint 1 was handed in with c1: its state is the agent's before c1.
        _ = try ledger.fork(run: "r", at: 1, as: "f")
        #expect(try rows(ledger, "calls", run: "f").isEmpty)
        #expect(try ledger.loadUsableCheckpoint(run: "f").checkpoint?.callId == "c1")
        // The forked agent makes c1 again: it runs, with its own checkpoint.
        let again = try #require(try ledger.begin(request("c1", run: "f", checkpoint: VerifyFixture.state(7))).ticket)
        #expect(again.execution == 1 && again.checkpointSeq == 2)
        _ = try ledger.finish(again, outcome: outcome("output of the fork"))
        #expect(try Ledger(path: path, readOnly: true).verify().ok)
    }

    @Test func aCallBegunBeforeTheCheckpointAndFinishedAfterIsCopiedFinishedAndReplayed() throws {
        let path = temporaryLedgerPath("fork")
        let ledger = try Ledger(path: path, durability: .normal)
        _ = try ledger.startAttempt(run: "r")
        let slow = try #require(try ledger.begin(request("slow", run: "r")).ticket)
        let seq = try ledger.saveCheckpoint(run: "r", state: Array("{\"waiting\":true}".utf8))
        _ = try ledger.finish(slow, outcome: outcome("slow output"))
        let next = try #require(try ledger.begin(request("next", run: "r", checkpoint: Array("{\"step\":2}".utf8))).ticket)
        _ = try ledger.finish(next, outcome: outcome("next output"))

        _ = try ledger.fork(run: "r", at: seq, as: "f")
        let calls = try ledger.listCalls(run: "f")
        #expect(calls.map(\.callId) == ["slow"] && calls.first?.status == "succeeded")
        #expect(try ledger.exportEvents(run: "f").filter { $0.callId == "slow" }.map(\.kind) == ["call.begin", "call.finish"])
        let replayed = try #require(try ledger.begin(request("slow", run: "f")).replayed)
        #expect(replayed.outcome.stdout == Array("slow output".utf8) && replayed.replayed)
        #expect(try ledger.begin(request("next", run: "f")).ticket != nil, "a call after the checkpoint runs in the fork")
        #expect(try ledger.startAttempt(run: "f") == 2, "the fork's attempts go on from the copied ones")
        #expect(try Ledger(path: path, readOnly: true).verify().ok)
    }

    /// A gated call waiting before the checkpoint, approved and run after it: its effect
    /// happened, so the fork replays it instead of gating (and running) it again.
    @Test func aGatedCallApprovedAfterTheCheckpointIsCopiedWithItsOutcome() throws {
        let path = temporaryLedgerPath("fork")
        let ledger = try Ledger(path: path, durability: .normal)
        _ = try ledger.startAttempt(run: "r")
        var gated = request("mail", run: "r")
        gated.gated = true
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated) }
        let seq = try ledger.saveCheckpoint(run: "r", state: Array("{\"waiting\":true}".utf8))
        try ledger.settleApproval(run: "r", callId: "mail", approve: true, note: "", by: Approver(uid: 0, user: "root"))
        _ = try ledger.finish(try #require(try ledger.begin(gated).ticket), outcome: outcome("sent"))

        _ = try ledger.fork(run: "r", at: seq, as: "f")
        #expect(try ledger.exportEvents(run: "f").filter { $0.callId == "mail" }.map(\.kind) == ["call.gate", "call.approve", "call.begin", "call.finish"])
        var forked = gated
        forked.run = "f"
        let replayed = try #require(try ledger.begin(forked).replayed)
        #expect(replayed.outcome.stdout == Array("sent".utf8))
        let problems = try Ledger(path: path, readOnly: true).verify().runs.compactMap(\.problem)
        #expect(problems.isEmpty, "\(problems)")
    }

    @Test func aForkOfAForkVerifies() throws {
        let path = try VerifyFixture.make()
        let ledger = try Ledger(path: path, existing: true, recover: false)
        _ = try ledger.fork(run: "r", at: 1, as: "f")
        let c1 = try #require(try ledger.begin(request("c1", run: "f", checkpoint: VerifyFixture.state(8))).ticket)
        _ = try ledger.finish(c1, outcome: outcome("again"))
        _ = try ledger.fork(run: "f", at: 2, as: "g")
        #expect(try ledger.listCalls(run: "g").map(\.callId) == [])
        _ = try ledger.fork(run: "f", at: 1, as: "h")
        let report = try Ledger(path: path, readOnly: true).verify()
        #expect(report.runs.allSatisfy { $0.problem == nil }, "\(report.runs.compactMap(\.problem))")
        #expect(try ledger.exportEvents(run: "g").prefix(2).map(\.kind) == ["run.fork", "run.fork"])
    }

    @Test func whatAForkIsRefused() throws {
        let path = try VerifyFixture.make()
        let ledger = try Ledger(path: path, existing: true, recover: false)
        expectLedgerError(.notFound) { _ = try ledger.fork(run: "nobody", at: 1, as: "f") }
        expectLedgerError(.notFound) { _ = try ledger.fork(run: "r", at: 9, as: "f") }
        expectLedgerError(.invalid) { _ = try ledger.fork(run: "r", at: 0, as: "f") }
        expectLedgerError(.invalid) { _ = try ledger.fork(run: "r", at: 1, as: "other") }
        // A call still running under a live owner (this handle) when it is forked.
        _ = try #require(try ledger.begin(request("live", run: "r")).ticket)
        let seq = try ledger.saveCheckpoint(run: "r", state: Array("{}".utf8))
        let before = try exported(path, run: "r")
        expectLedgerError(.inProgress) { _ = try ledger.fork(run: "r", at: seq, as: "f") }
        #expect(try Set(ledger.listRuns().map(\.run)) == ["other", "r"] && exported(path, run: "r") == before, "a refused fork recorded something")
    }

    /// Audited read-only, a ledger from before forks is not migrated: it has no origin
    /// columns, and its runs are no forks.
    @Test(.sqliteFile) func aLedgerFromBeforeForksIsAudited() throws {
        let path = try VerifyFixture.make()
        try VerifyFixture.edit(path, ["ALTER TABLE runs DROP COLUMN origin_run", "ALTER TABLE runs DROP COLUMN origin_seq",
                                      "DELETE FROM grdb_migrations WHERE identifier = 'v8'"])
        let old = try Ledger(path: path, readOnly: true)
        #expect(try old.verify().ok)
        #expect(try old.listRuns().allSatisfy { $0.origin == nil && $0.forkedAt == nil })
        #expect(try old.origin(run: "r") == nil)
    }

    @Test("verify names what was done to a fork")
    func tamperingWithAForkIsNamed() throws {
        func forked() throws -> String {
            let path = try VerifyFixture.make()
            _ = try Ledger(path: path, existing: true, recover: false).fork(run: "r", at: 3, as: "f")
            return path
        }
        func problem(_ path: String) throws -> String? {
            try Ledger(path: path, readOnly: true).verify(run: "f").runs.first?.problem
        }
        var path = try forked()
        try VerifyFixture.edit(path, ["DROP TRIGGER events_are_append_only_update",
                                      "UPDATE events SET body = replace(body, '\"attempt\":2', '\"attempt\":3') WHERE run_id = 'f' AND kind = 'run.attempt' AND body LIKE '%\"attempt\":2%'"])
        var found = try problem(path)
        #expect(found?.hasPrefix("event ") == true && found?.contains("of run f was altered") == true, "\(found ?? "nothing")")

        // The chain rebuilt around a copy that no longer says what the origin's event says.
        path = try forked()
        let resolve = try #require(try Ledger(path: path, readOnly: true).exportEvents(run: "f").first { $0.kind == "call.resolve" && $0.callId == "c3" })
        try rechain(path, run: "f", from: resolve.seq) { $0.replacingOccurrences(of: "\"by\":\"reconcile\"", with: "\"by\":\"operator\"") }
        #expect(try problem(path) == "run f, a fork of run r at checkpoint 3, differs from its origin at its event \(resolve.seq), the copy of event \(resolve.seq - 1) of run r")

        // A run.fork that names another checkpoint than the one its copies end at.
        path = try forked()
        try rechain(path, run: "f", from: 1) { $0.replacingOccurrences(of: "\"at\":3", with: "\"at\":2") }
        found = try problem(path)
        #expect(found?.contains("does not save that checkpoint") == true, "\(found ?? "nothing")")

        path = try forked()
        try VerifyFixture.edit(path, ["UPDATE runs SET origin_seq = 1 WHERE run_id = 'f'"])
        #expect(try problem(path) == "run f was altered: its origin is r@1 where its events say r@3")
        path = try forked()
        try VerifyFixture.edit(path, ["UPDATE runs SET origin_run = 'f' WHERE run_id = 'other'"])
        #expect(try Ledger(path: path, readOnly: true).verify(run: "other").runs.first?.problem == "run other was altered: its origin is f@none where its events say none@none")

        // An origin that is not in the ledger (a fork copied out alone) is a note, not a finding.
        path = try forked()
        try VerifyFixture.edit(path, ["DROP TRIGGER events_are_append_only_delete", "DELETE FROM events WHERE run_id = 'r'", "DELETE FROM runs WHERE run_id = 'r'"])
        let alone = try #require(try Ledger(path: path, readOnly: true).verify(run: "f").runs.first)
        #expect(alone.problem == nil && alone.note?.contains("not in this ledger") == true)
    }
}
