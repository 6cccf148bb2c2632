import Foundation
import Testing
import WardCore
import WardLedger
import WardSupervisor

@Suite("Ledger: a run remembers where it ran")
struct LedgerPlaceTests {
    func directory(_ name: String) throws -> String {
        let dir = temporaryDirectory("place") + "/" + name
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    func temporaryLedgerPath() -> String { temporaryDirectory("ledger") + "/l.sqlite" }

    @Test func theFirstPlaceIsKeptAndAnotherIsRefused() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        let policies = try directory("policies")
        let ws = try directory("ws")
        let place = try #require(RunPlace.of(workspace: ws, policies: policies))
        #expect(RunPlace.of(workspace: ws + "/missing", policies: policies) == nil, "a missing workspace has no place (and is not created)")
        #expect(!FileManager.default.fileExists(atPath: ws + "/missing"))
        try ledger.claimPlace(run: "r1", place)
        try ledger.claimPlace(run: "r1", place)  // the same place again: nothing to record
        #expect(try ledger.recordedPlace(run: "r1") == place)

        // Another directory, and the same path holding a new directory: both refused.
        let other = try #require(RunPlace.of(workspace: try directory("other"), policies: policies))
        #expect(#expect(throws: LedgerError.self) { try ledger.claimPlace(run: "r1", other) }?.code == .invalid)
        try FileManager.default.removeItem(atPath: ws)
        try FileManager.default.createDirectory(atPath: ws, withIntermediateDirectories: false)
        let recreated = try #require(RunPlace.of(workspace: ws, policies: policies))
        #expect(recreated.workspace == place.workspace && recreated != place, "a directory made anew must differ: \(place) vs \(recreated)")
        do {
            try ledger.claimPlace(run: "r1", recreated)
            Issue.record("a recreated workspace was accepted")
        } catch {
            #expect(error.code == .invalid && error.message.contains("replaced"), "\(error)")
        }
        #expect(try ledger.recordedPlace(run: "r1") == place)

        // An explicit move is recorded, and then it is the run's place.
        try ledger.claimPlace(run: "r1", other, moved: true)
        #expect(try ledger.recordedPlace(run: "r1") == other)
        let kinds = try ledger.exportEvents(run: "r1").map(\.kind)
        #expect(kinds == ["run.place", "run.moved"], "\(kinds)")
        #expect(try ledger.verify().ok)
    }

    @Test func verifyNamesAnAlteredPlace() throws {
        let path = temporaryLedgerPath()
        let ledger = try Ledger(path: path)
        let place = try #require(RunPlace.of(workspace: try directory("ws"), policies: try directory("policies")))
        try ledger.claimPlace(run: "r1", place)
        #expect(try ledger.verify().ok)
        // Someone points the run at another directory behind the ledger's back.
        let sqlite = Process()
        sqlite.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        sqlite.arguments = [path, "UPDATE runs SET workspace = '/tmp' WHERE run_id = 'r1'"]
        try sqlite.run()
        sqlite.waitUntilExit()
        try #require(sqlite.terminationStatus == 0)
        let report = try Ledger(path: path, readOnly: true).verify()
        #expect(!report.ok && report.runs.first?.problem?.contains("workspace") == true, "\(report.runs)")
    }
}

/// `ward ledger reconcile` and later attempts work in the run's own workspace: from another
/// directory, with a missing, a different or a newly made workspace, they refuse, make
/// nothing and run nothing; with the recorded one they settle correctly.
@Suite("A run's workspace: reconcile and restart use the recorded one", .serialized)
struct RunPlaceCommandTests {
    @Test func reconcileFromAnywhereUsesTheRecordedWorkspaceAndRefusesAnother() throws {
        let dir = temporaryDirectory("place-run")
        let policies = try reconcilePolicies()
        // ward dies after the tool published and before its outcome was recorded.
        try callUntilWardDies(in: dir, run: "pub", policies: policies, failpoint: "before-finish=kill",
                              .object(["callId": .string("p1"), "tool": .string("publish"), "arguments": .object(["page": .string("index")])]))
        let published = dir + "/workspace/published.log"
        #expect(try String(contentsOfFile: published, encoding: .utf8).split(separator: "\n").count == 1)

        let elsewhere = temporaryDirectory("elsewhere")
        let ledger = ["--ledger", dir + "/.ward/ledger.sqlite"]
        func reconcile(_ extra: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try ward(["ledger", "reconcile", "--policies", policies] + ledger + extra, in: elsewhere)
        }
        func stillInDoubt() throws -> Bool {
            try ward(["ledger", "list", "--status", "in-doubt", "--json"] + ledger, in: elsewhere).stdout.contains("\"p1\"")
        }

        // A relative --workspace that does not exist here: refused, and not created.
        var r = try reconcile(["--workspace", "workspace"])
        #expect(r.status == 1 && r.stderr.contains("does not exist"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: elsewhere + "/workspace"), "a reconcile made an empty workspace")
        // Another existing directory: refused.
        try FileManager.default.createDirectory(atPath: elsewhere + "/other", withIntermediateDirectories: false)
        r = try reconcile(["--workspace", elsewhere + "/other"])
        #expect(r.status == 1 && r.stderr.contains("ran in workspace"), "\(r.stderr)")
        // The recorded workspace moved away: refused, not made anew.
        try FileManager.default.moveItem(atPath: dir + "/workspace", toPath: dir + "/moved")
        r = try reconcile([])
        #expect(r.status == 1 && r.stderr.contains("is missing"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/workspace"))
        // An empty directory made at the recorded path: refused as a replacement.
        try FileManager.default.createDirectory(atPath: dir + "/workspace", withIntermediateDirectories: false)
        r = try reconcile([])
        #expect(r.status == 1 && r.stderr.contains("replaced"), "\(r.stderr)")
        #expect(try stillInDoubt(), "a refused reconcile settled the call")
        try FileManager.default.removeItem(atPath: dir + "/workspace")

        // Where it was moved, said so: the move is recorded and the call settles as executed.
        r = try reconcile(["--workspace", dir + "/moved", "--move-workspace"])
        #expect(r.status == 0 && r.stdout.contains("executed"), "\(r.stdout)\(r.stderr)")
        #expect(try !stillInDoubt())
        let events = try ward(["ledger", "export", "--run", "pub"] + ledger, in: elsewhere).stdout
        #expect(events.contains("\"run.moved\""), "\(events)")
        #expect(try String(contentsOfFile: dir + "/moved/published.log", encoding: .utf8).split(separator: "\n").count == 1, "published twice")
        #expect(try ward(["ledger", "verify"] + ledger, in: elsewhere).status == 0)
    }

    @Test func aLaterAttemptUsesTheRecordedWorkspaceFromAnotherDirectory() throws {
        let dir = temporaryDirectory("place-restart")
        let policies = try reconcilePolicies()
        let first = try startServe(in: dir, run: "later", policies: policies)
        first.terminate()
        first.waitUntilExit()
        // Started from elsewhere without --workspace: the run's own workspace is used.
        let elsewhere = temporaryDirectory("elsewhere")
        let ledger = dir + "/.ward/ledger.sqlite"
        let second = try startServe(in: elsewhere, run: "later", policies: policies, extra: ["--ledger", ledger])
        let c = try RawClient(elsewhere + "/s.sock")
        _ = c.call(1, "tool.call", .object(["callId": .string("p2"), "tool": .string("publish"), "arguments": .object(["page": .string("a")])]))
        second.terminate()
        second.waitUntilExit()
        #expect(FileManager.default.fileExists(atPath: dir + "/workspace/published.log"))
        #expect(!FileManager.default.fileExists(atPath: elsewhere + "/workspace"), "a second workspace was made for the run")
        // With another workspace given: refused before anything starts.
        let refused = try ward(["serve", "--run-id", "later", "--policies", policies, "--ledger", ledger, "--workspace", elsewhere, "--socket", temporaryDirectory("sock") + "/t.sock"], in: elsewhere)
        #expect(refused.status == 1 && refused.stderr.contains("ran in workspace"), "\(refused.stderr)")
    }
}
