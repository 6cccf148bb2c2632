import Foundation
import Synchronization
import Testing
import WardCore
import WardLedger
@testable import WardSupervisor
import WardTestSupport

/// A small tmpfs for a ledger, which a filler file fills to the last page and whose space
/// returns when the filler is deleted. Unmounted when it goes.
final class SmallDisk {
    let mountPoint: String
    var filler: String { mountPoint + "/filler" }

    init(megabytes: Int) throws {
        mountPoint = temporaryDirectory("fulldisk")
        let mount = try Process.run(URL(fileURLWithPath: "/bin/mount"), arguments: ["-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", mountPoint])
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0)
    }

    deinit { (try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", mountPoint]))?.waitUntilExit() }

    /// Writes the filler until the file system has no page left.
    func fill() throws {
        _ = FileManager.default.createFile(atPath: filler, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: filler))
        defer { try? handle.close() }
        let block = Data(repeating: 0x55, count: 4096)
        while (try? handle.write(contentsOf: block)) != nil {}  // until ENOSPC
    }

    func free() throws { try FileManager.default.removeItem(atPath: filler) }
}

/// Runs `ward ledger verify` on a ledger; its exit status and output.
func verifyLedger(_ path: String) throws -> (status: Int32, output: String) {
    let r = try BuildProducts.run(Paths.ward, ["ledger", "verify", "--ledger", path])
    return (r.status, r.stdout + r.stderr)
}

@Suite("Storage outages end cleanly", .serialized)
struct StorageOutageTests {
    static func save(_ c: RawClient, _ id: Int, _ state: JSONValue) -> [String: JSONValue]? {
        c.call(id, "checkpoint.save", .object(["state": state]))
    }

    static func seq(_ response: [String: JSONValue]?) -> Int? { response?["result"]?.objectValue?["seq"]?.integer(Int.self) }

    @Test(.enabled(if: getuid() == 0, "needs root: it mounts a small tmpfs"))
    func aSaveThatFailsOnAFullDiskLeavesNothingTheNextSaveBuildsOn() throws {
        let disk = try SmallDisk(megabytes: 8)
        let ledgerPath = disk.mountPoint + "/ledger.sqlite"
        let a = try TestServer(run: "r1", ledgerPath: ledgerPath)
        // Another supervisor, for another run, on the same ledger.
        let b = try TestServer(run: "r2", ledgerPath: ledgerPath)
        let ca = try RawClient(a.server.path), cb = try RawClient(b.server.path)
        #expect(Self.seq(Self.save(ca, 1, .object(["step": .number(1)]))) == 1)
        #expect(Self.seq(Self.save(ca, 2, .object(["step": .number(2)]))) == 2)
        // A state of some 400 KB: more than the write-ahead log has room for, so its commit
        // is the write that meets the full disk.
        let log = (0..<8000).map { JSONValue.string("entry \($0): the agent's notes on what it did at this step") }
        try disk.fill()
        let failed = Self.save(ca, 3, .object(["step": .number(3), "log": .array(log)]))
        #expect(kind(failed) == "storage", "\(String(describing: failed))")
        #expect(failed?["error"]?.objectValue?["message"]?.stringValue?.contains("nothing of it was recorded") == true, "\(String(describing: failed))")
        let refused = cb.call(1, "journal.record", .object(["key": .string("k"), "value": .number(1)]))
        #expect(kind(refused) == "storage", "\(String(describing: refused))")
        try disk.free()
        // Another writer stores run r1's next checkpoint under the sequence number the failed
        // save had: a small state, nothing like the one that failed.
        let other = try Ledger(path: ledgerPath)
        #expect(try other.saveCheckpoint(run: "r1", state: Array(#"{"other":true}"#.utf8)) == 3)
        #expect(cb.call(2, "journal.record", .object(["key": .string("k"), "value": .number(1)]))?["result"]?.objectValue?["recorded"] == .bool(true))
        // The agent saves on, its state much like the one that failed: a delta against that
        // state (never committed) would not load.
        let state4 = JSONValue.object(["step": .number(4), "log": .array(log + [.string("one more")])])
        #expect(Self.seq(Self.save(ca, 4, state4)) == 4)
        let loaded = try #require(ca.call(5, "checkpoint.load", .object([:]))?["result"]?.objectValue)
        #expect(loaded["seq"] == .number(4) && loaded["state"] == state4 && loaded["damaged"] == nil)
        #expect(ca.call(6, "checkpoint.load", .object(["seq": .number(3)]))?["result"]?.objectValue?["state"] == .object(["other": .bool(true)]))
        let resumed = try #require(ca.call(7, "run.resume", .object([:]))?["result"]?.objectValue?["checkpoint"]?.objectValue)
        #expect(resumed["seq"] == .number(4) && resumed["state"] == state4)
        // So does a ward started afresh.
        let fresh = try #require(try Ledger(path: ledgerPath).loadCheckpoint(run: "r1"))
        #expect(fresh.seq == 4 && fresh.state == state4.canonicalBytes)
        #expect(try a.supervisor.ledger.exportEvents(run: "r1").allSatisfy { $0.kind != "checkpoint.damaged" })
        let verified = try verifyLedger(ledgerPath)
        #expect(verified.status == 0, "\(verified.output)")
    }

    /// A non-idempotent tool that waits for `go` in the workspace, then prints 1..300000
    /// (1,988,895 bytes); `ran.log` counts its runs.
    static func emitPolicies() throws -> String {
        try testPolicies("outage", tools: #"""
        [tools.emit]
        command = ["/bin/sh", "-c", "echo ran >> ran.log; while [ ! -e go ]; do sleep 0.01; done; seq 1 300000"]
        effect = "non-idempotent"
        write = ["{workspace}"]
        limits = { output = "4M" }
        """#)
    }

    @Test(.enabled(if: getuid() == 0, "needs root: it mounts a small tmpfs"))
    func anOutcomeThatMeetsAFullDiskIsRecordedOnceSpaceReturns() throws {
        let disk = try SmallDisk(megabytes: 16)
        let ledgerPath = disk.mountPoint + "/ledger.sqlite"
        let notices = Mutex<[String]>([])
        let a = try TestServer(run: "r1", ledgerPath: ledgerPath, policies: try Self.emitPolicies(), finishRetry: 0.5,
                               notify: { message in notices.withLock { $0.append(message) } })
        let b = try TestServer(run: "r2", ledgerPath: ledgerPath)
        let cb = try RawClient(b.server.path)
        let expected = (1...300_000).map { "\($0)\n" }.joined()
        let call = JSONValue.object(["callId": .string("big"), "tool": .string("emit"), "arguments": .object([:])])
        let first = try RawClient(a.server.path)
        first.request(1, "tool.call", call)
        #expect(eventually { FileManager.default.fileExists(atPath: a.workspace + "/ran.log") }, "the tool never started")
        try disk.fill()
        FileManager.default.createFile(atPath: a.workspace + "/go", contents: nil)
        // The tool ran; its outcome cannot be committed.
        let refused = first.next()
        #expect(kind(refused) == "storage", "\(String(describing: refused))")
        #expect(refused?["error"]?.objectValue?["message"]?.stringValue?.contains("ward keeps trying") == true, "\(String(describing: refused))")
        #expect(try a.supervisor.ledger.listCalls(run: "r1").map(\.status) == ["running"])
        // Its capture file stays until the outcome is committed.
        let capture = ledgerPath + "-output/" + Ledger.idempotencyKey(run: "r1", callId: "big")
        #expect(FileManager.default.fileExists(atPath: capture))
        // The other supervisor's writes fail cleanly meanwhile.
        let journal = cb.call(1, "journal.record", .object(["key": .string("k"), "value": .number(1)]))
        #expect(kind(journal) == "storage", "\(String(describing: journal))")
        // What ward's exit does: one more attempt, and the outcome reported when it fails.
        #expect(a.supervisor.recordPendingOutcomes(within: 0) == 1)
        #expect(notices.withLock { $0 }.contains { $0.contains("call big of run r1 could not be recorded") }, "\(notices.withLock { $0 })")
        // Asked again while the disk is full, the call waits for its outcome (never runs again).
        let again = try RawClient(a.server.path)
        again.request(2, "tool.call", call)
        #expect(eventually { a.supervisor.outcomes.isAwaited(run: "r1", callId: "big") }, "the repeated request did not wait for the outcome")
        try disk.free()
        let result = try #require(again.next()?["result"]?.objectValue, "no result once space returned")
        #expect(result["status"] == .string("succeeded") && result["replayed"] == .bool(true))
        // Compared apart: a failed #expect on two 2 MB strings would diff them for hours.
        let same = result["stdout"]?.stringValue == expected
        #expect(same, "the output is not the tool's, byte for byte (\(result["stdout"]?.stringValue?.utf8.count ?? 0) bytes)")
        #expect(a.supervisor.recordPendingOutcomes(within: 10) == 0)
        // Recorded once; asked for again, by this ward and by one started afresh, the same bytes.
        let replayed = try RawClient(a.server.path).call(3, "tool.call", call)?["result"]?.objectValue?["stdout"]?.stringValue == expected
        #expect(replayed, "asked again, the call did not return the same bytes")
        let decision = try Ledger(path: ledgerPath).begin(BeginRequest(
            run: "r1", callId: "big", tool: "emit", effect: .nonIdempotent, arguments: .object([:]), policyHash: "p",
            executable: "/bin/sh", attempt: 1))
        guard case .replay(let replay) = decision else { Issue.record("a fresh ward would run the call again: \(decision)"); return }
        let fromDisk = replay.outcome.stdout == Array(expected.utf8)
        #expect(fromDisk, "a fresh ward replays other bytes (\(replay.outcome.stdout.count))")
        #expect(try String(contentsOfFile: a.workspace + "/ran.log", encoding: .utf8) == "ran\n", "the tool ran more than once")
        #expect(try a.supervisor.ledger.exportEvents(run: "r1").filter { $0.kind == "call.finish" }.count == 1)
        #expect(!FileManager.default.fileExists(atPath: capture), "the capture file outlived the commit")
        #expect(cb.call(2, "journal.record", .object(["key": .string("k"), "value": .number(1)]))?["result"]?.objectValue?["recorded"] == .bool(true))
        let verified = try verifyLedger(ledgerPath)
        #expect(verified.status == 0, "\(verified.output)")
    }

    @Test(.enabled(if: getuid() == 0, "needs root: it mounts a small tmpfs"))
    func wardsExitTriesOnceMoreWhateverTheBackoff() throws {
        let disk = try SmallDisk(megabytes: 8)
        let ledger = try Ledger(path: disk.mountPoint + "/ledger.sqlite")
        let decision = try ledger.begin(BeginRequest(run: "r1", callId: "c1", tool: "shell", effect: .nonIdempotent,
                                                     arguments: .object([:]), policyHash: "p", executable: "/bin/sh", attempt: 1))
        guard case .execute(let ticket) = decision else { Issue.record("\(decision)"); return }
        let output = Array(String(repeating: "output of the call\n", count: 100_000).utf8)
        let outcome = ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: output, stderr: [], truncated: false, durationMs: 1)
        try disk.fill()
        var failure: LedgerError?
        do { _ = try ledger.finish(ticket, outcome: outcome, retryFor: 0) } catch { failure = error }
        let error = try #require(failure, "the outcome was committed on a full disk")
        // A retrier whose next attempt of its own is an hour away: only the exit's attempt can land.
        let notices = Mutex<[String]>([])
        let retrier = OutcomeRetrier(ledger: ledger, firstDelay: 3600, maximumDelay: 3600,
                                     notify: { message in notices.withLock { $0.append(message) } })
        defer { retrier.stop() }
        retrier.hand(ticket, outcome: outcome, error: error)
        let start = ContinuousClock.now
        #expect(retrier.flush(within: 0).map(\.callId) == ["c1"])
        #expect(ContinuousClock.now - start < .seconds(30), "the exit waited for the backoff")
        #expect(notices.withLock { $0 }.count == 1)
        #expect(try ledger.listCalls(run: "r1").map(\.status) == ["running"])
        try disk.free()
        #expect(retrier.flush(within: 0).isEmpty, "the exit's attempt did not land once there was space")
        let recorded = try ledger.awaitOutcome(run: "r1", callId: "c1", timeout: 0)?.outcome.stdout == output
        #expect(recorded, "the recorded output is not the call's")
    }

    @Test func aDamagedCheckpointIsReportedAndSkippedAndLaterSavesLoad() throws {
        let t = try TestServer()
        let c = try RawClient(t.server.path)
        func state(_ step: Int, notes: Int) -> JSONValue {
            .object(["step": .number(Double(step)), "notes": .array((0..<notes).map { .string("note \($0) of the run so far") })])
        }
        let states = (1...3).map { state($0, notes: 100 * $0) }
        for (i, state) in states.enumerated() { #expect(Self.seq(Self.save(c, i + 1, state)) == i + 1) }
        // Checkpoint 3's chunk list, edited by hand: no longer a list of hashes.
        let path = t.supervisor.ledger.path
        let edit = try runProgram("/usr/bin/sqlite3", [path, "UPDATE checkpoints SET chunks = x'0001' WHERE run_id = 'r1' AND seq = 3"])
        try #require(edit.status == 0, "\(edit.output)")
        let loaded = try #require(c.call(10, "checkpoint.load", .object([:]))?["result"]?.objectValue)
        #expect(loaded["seq"] == .number(2) && loaded["state"] == states[1])
        let damaged = loaded["damaged"]?.arrayValue?.compactMap(\.objectValue) ?? []
        #expect(damaged.map { $0["seq"] } == [.number(3)], "\(loaded)")
        #expect(damaged.first?["problem"]?.stringValue?.contains("checkpoint 3 of run r1 is damaged") == true, "\(damaged)")
        let resumed = try #require(c.call(11, "run.resume", .object([:]))?["result"]?.objectValue?["checkpoint"]?.objectValue)
        #expect(resumed["seq"] == .number(2) && resumed["damaged"]?.arrayValue?.count == 1)
        // Reported once, however often it is met.
        let events = try t.supervisor.ledger.exportEvents(run: "r1").filter { $0.kind == "checkpoint.damaged" }
        #expect(events.map { $0.data.objectValue?["seq"] } == [.number(3)])
        // A call carrying the next state stores it whole (its base is damaged; the ledger was
        // edited behind this ward's back, so what it remembers of checkpoint 3 is no base
        // either), and it loads. Much like checkpoint 3, it would be a delta otherwise.
        let state4 = state(4, notes: 300)
        let call = c.call(12, "tool.call", shellCall("after", "echo ok", checkpoint: state4))
        #expect(call?["result"]?.objectValue?["status"] == .string("succeeded"), "\(String(describing: call))")
        let latest = try #require(c.call(13, "checkpoint.load", .object([:]))?["result"]?.objectValue)
        #expect(latest["seq"] == .number(4) && latest["state"] == state4 && latest["damaged"] == nil)
        let state5 = state(5, notes: 301)
        #expect(Self.seq(Self.save(c, 14, state5)) == 5)
        #expect(c.call(15, "checkpoint.load", .object([:]))?["result"]?.objectValue?["state"] == state5)
        // Asked for by number, the damaged one gives the last good one before it.
        #expect(c.call(16, "checkpoint.load", .object(["seq": .number(3)]))?["result"]?.objectValue?["seq"] == .number(2))
        // A ward started afresh loads the same.
        let fresh = try Ledger(path: path).loadUsableCheckpoint(run: "r1")
        #expect(fresh.checkpoint?.seq == 5 && fresh.damaged.isEmpty)
        #expect(try t.supervisor.ledger.exportEvents(run: "r1").filter { $0.kind == "checkpoint.damaged" }.count == 1)
    }
}
