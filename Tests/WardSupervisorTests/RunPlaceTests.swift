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
        expectLedgerError(.invalid) { try ledger.claimPlace(run: "r1", other) }
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
