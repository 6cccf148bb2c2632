import Foundation
import Synchronization
import Testing
import WardCore
@testable import WardLedger
import WardTestSupport

private func gated(_ call: String, run: String = "r", checkpoint: [UInt8]? = nil) -> BeginRequest {
    var r = request(call, run: run, checkpoint: checkpoint)
    r.gated = true
    return r
}

private let operatorA = Approver(uid: 1000, user: "alice")

@Suite("Ledger: approval gates")
struct ApprovalTests {
    @Test func aGatedCallIsRecordedAwaitingApprovalAndNeverRunsBeforeAVerdict() throws {
        let path = temporaryLedgerPath()
        let ledger = try Ledger(path: path)
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        // Asking again gates nothing a second time: one record, one gate event.
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        // Another ledger handle (ward restarted) finds it waiting still: recovery leaves it.
        let reopened = try Ledger(path: path)
        expectLedgerError(.awaitingApproval) { _ = try reopened.begin(gated("c1")) }
        #expect(try reopened.state(run: "r", callId: "c1") == .awaitingApproval)
        #expect(try reopened.listCalls(status: "awaiting-approval").map(\.callId) == ["c1"])
        #expect(try reopened.pendingApprovals().map(\.callId) == ["c1"])
        let kinds = try reopened.exportEvents(run: "r").map(\.kind)
        #expect(kinds == ["call.gate"])
        #expect(try reopened.verify().ok)
    }

    @Test func anApprovedCallRunsOnceAndIsReplayedAfter() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        try ledger.settleApproval(run: "r", callId: "c1", approve: true, note: "checked the recipient", by: operatorA)
        #expect(try ledger.pendingApprovals().isEmpty)
        let ticket = try #require(try ledger.begin(gated("c1")).ticket)
        #expect(ticket.execution == 1)
        _ = try ledger.finish(ticket, outcome: outcome("sent"))
        let replay = try #require(try ledger.begin(gated("c1")).replayed)
        #expect(replay.outcome.stdout == Array("sent".utf8))
        #expect(try ledger.exportEvents(run: "r").map(\.kind) == ["call.gate", "call.approve", "call.begin", "call.finish"])
        let approve = try #require(try ledger.exportEvents(run: "r").first { $0.kind == "call.approve" }?.data.objectValue)
        #expect(approve["by"] == .string("alice"))
        #expect(approve["uid"] == .number(1000))
        #expect(approve["note"] == .string("checked the recipient"))
        // A second verdict on a call that no longer waits is refused.
        expectLedgerError(.invalid) { try ledger.settleApproval(run: "r", callId: "c1", approve: true, note: "", by: operatorA) }
        expectLedgerError(.invalid) { try ledger.settleApproval(run: "r", callId: "c1", approve: false, note: "no", by: operatorA) }
        #expect(try ledger.verify().ok)
    }

    @Test func aDeniedCallEndsDeniedWithTheNoteAsItsStderrAndNeverRuns() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        try ledger.settleApproval(run: "r", callId: "c1", approve: false, note: "wrong recipient", by: operatorA)
        for _ in 0..<2 {
            let result = try #require(try ledger.begin(gated("c1")).replayed)
            #expect(result.outcome.status == .denied)
            #expect(result.outcome.stderr == Array("wrong recipient".utf8))
            #expect(result.outcome.stdout.isEmpty)
        }
        #expect(!(try ledger.exportEvents(run: "r").contains { $0.kind == "call.begin" }))
        let shown = try #require(try ledger.showCall(run: "r", callId: "c1").objectValue)
        #expect(shown["approval"]?.objectValue?["verdict"] == .string("denied"))
        #expect(shown["approval"]?.objectValue?["by"] == .string("alice"))
        #expect(try ledger.verify().ok)
    }

    @Test func verdictsOnCallsThatDoNotWaitAreRefusedAndChangeNothing() throws {
        let path = temporaryLedgerPath()
        let ledger = try Ledger(path: path)
        expectLedgerError(.notFound) { try ledger.settleApproval(run: "r", callId: "nope", approve: true, note: "", by: operatorA) }
        let ticket = try #require(try ledger.begin(request("plain", run: "r")).ticket)
        expectLedgerError(.invalid) { try ledger.settleApproval(run: "r", callId: "plain", approve: true, note: "", by: operatorA) }
        _ = try ledger.finish(ticket, outcome: outcome("ok"))
        let before = try ledger.exportEvents(run: "r").count
        expectLedgerError(.invalid) { try ledger.settleApproval(run: "r", callId: "plain", approve: false, note: "x", by: operatorA) }
        #expect(try ledger.exportEvents(run: "r").count == before)
    }

    /// Two operators approving at once, from two ledger handles (two processes): one verdict
    /// is recorded, the other refused, and the call begins once.
    @Test func twoApprovalsAtOnceRecordOne() throws {
        let path = temporaryLedgerPath()
        let ledger = try Ledger(path: path)
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        let handles = try (0..<2).map { _ in try Ledger(path: path, existing: true, recover: false) }
        let accepted = Atomic<Int>(0), refused = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
        for handle in handles {
            Thread {
                do {
                    try handle.settleApproval(run: "r", callId: "c1", approve: true, note: "", by: operatorA)
                    accepted.add(1, ordering: .relaxed)
                } catch { refused.add(1, ordering: .relaxed) }
                done.signal()
            }.start()
        }
        done.wait()
        done.wait()
        #expect(accepted.load(ordering: .relaxed) == 1)
        #expect(refused.load(ordering: .relaxed) == 1)
        _ = try #require(try ledger.begin(gated("c1")).ticket)
        expectLedgerError(.inProgress) { _ = try ledger.begin(gated("c1")) }
        #expect(try ledger.exportEvents(run: "r").filter { $0.kind == "call.approve" }.count == 1)
    }

    @Test func aCheckpointHandedInWithAGatedCallIsStoredWithItsGate() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1", checkpoint: Array(#"{"step":1}"#.utf8))) }
        let stored = try #require(try ledger.loadCheckpoint(run: "r", seq: nil))
        #expect(stored.seq == 1)
        #expect(try ledger.exportEvents(run: "r").map(\.kind) == ["checkpoint.save", "call.gate"])
        try ledger.settleApproval(run: "r", callId: "c1", approve: true, note: "", by: operatorA)
        _ = try #require(try ledger.begin(gated("c1")).ticket)
        #expect(try ledger.verify().ok)
    }

    @Test func awaitingAVerdictReturnsWhenOneIsGivenOrTheWaitRunsOut() throws {
        let path = temporaryLedgerPath()
        let ledger = try Ledger(path: path)
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        #expect(try ledger.awaitVerdict(run: "r", callId: "c1", timeout: 0.05) == false)
        let other = try Ledger(path: path, existing: true, recover: false)
        Thread {
            usleep(100_000)
            try? other.settleApproval(run: "r", callId: "c1", approve: true, note: "", by: operatorA)
        }.start()
        #expect(try ledger.awaitVerdict(run: "r", callId: "c1", timeout: 10) == true)
        #expect(try ledger.state(run: "r", callId: "c1") == .approved)
    }

    @Test func runsListCountsWhatWaits() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        _ = try ledger.startAttempt(run: "r")
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c2")) }
        try ledger.finishRun(run: "r", exitStatus: 0)
        let run = try #require(try ledger.listRuns().first)
        #expect(run.awaitingApproval == 2)
        #expect(run.unfinished)
        // Approved and not asked for since: still work left for the run.
        try ledger.settleApproval(run: "r", callId: "c1", approve: true, note: "", by: operatorA)
        try ledger.settleApproval(run: "r", callId: "c2", approve: false, note: "no", by: operatorA)
        let after = try #require(try ledger.listRuns().first)
        #expect(after.awaitingApproval == 1 && after.unfinished)
    }
}

@Suite("Ledger: verify holds gated calls to their events")
struct ApprovalVerifyTests {
    static func waiting() throws -> String {
        let path = temporaryLedgerPath("gates")
        let ledger = try Ledger(path: path, durability: .normal)
        _ = try ledger.startAttempt(run: "r")
        expectLedgerError(.awaitingApproval) { _ = try ledger.begin(gated("c1")) }
        #expect(try ledger.verify().ok)
        return path
    }

    static func problem(_ path: String) throws -> String? {
        try Ledger(path: path, readOnly: true).verify(run: "r").runs.first?.problem
    }

    @Test func anApprovalForgedInTheRowAlone() throws {
        let path = try Self.waiting()
        try VerifyFixture.edit(path, ["UPDATE calls SET status = 'approved' WHERE call_id = 'c1'"])
        #expect(try Self.problem(path)?.hasPrefix("call c1 of run r was altered: its status is approved where its events say awaiting-approval") == true)
    }

    @Test func aBeginWithoutAnApproval() throws {
        let path = try Self.waiting()
        var data = try VerifyFixture.data(path, "call.gate", call: "c1")
        data["execution"] = .number(1)
        data["owner"] = .string("someone")
        try VerifyFixture.append(path, "call.begin", call: "c1", data,
                                 then: ["UPDATE calls SET status = 'running', executions = 1, owner = 'someone' WHERE call_id = 'c1'"])
        #expect(try Self.problem(path) == "call c1 of run r: execution 1 began without a not-executed verdict after execution 0")
    }

    @Test func anApprovalOfACallThatWasNotWaiting() throws {
        let path = try Self.waiting()
        try VerifyFixture.append(path, "call.approve", call: "c1", ["by": .string("alice"), "uid": .number(1000), "note": .string("")],
                                 then: ["UPDATE calls SET status = 'approved' WHERE call_id = 'c1'"])
        #expect(try Self.problem(path) == nil)
        try VerifyFixture.append(path, "call.deny", call: "c1", ["by": .string("bob"), "uid": .number(1001), "note": .string("")])
        #expect(try Self.problem(path)?.contains("denies it, but it had been approved, not awaiting approval") == true)
    }

    @Test func aDenialWhoseStderrIsNotItsNote() throws {
        let path = try Self.waiting()
        let ledger = try Ledger(path: path, existing: true, recover: false)
        try ledger.settleApproval(run: "r", callId: "c1", approve: false, note: "no", by: operatorA)
        #expect(try Self.problem(path) == nil)
        try VerifyFixture.edit(path, ["INSERT OR IGNORE INTO blobs (hash, size, data) VALUES (X'\(Digest.hex(Digest.sha256(Array("yes".utf8))))', 3, 'yes')",
                                      "UPDATE calls SET stderr = X'\(Digest.hex(Digest.sha256(Array("yes".utf8))))' WHERE call_id = 'c1'"])
        #expect(try Self.problem(path)?.hasPrefix("call c1 of run r was altered: its stderr hash is") == true)
    }
}
