import Foundation
import Testing
import WardCore
@testable import WardLedger
import Synchronization
import WardTestSupport

/// The binaries next to the test bundle.
enum Binaries {
    static var ward: String { BuildProducts.ward }
    static var torture: String { BuildProducts.directory + "/ward-torture" }

    @discardableResult
    static func run(_ path: String, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try BuildProducts.run(path, arguments)
    }

    static func sqlite(_ path: String, _ sql: String) throws {
        let r = try run("/usr/bin/sqlite3", [path, sql])
        #expect(r.status == 0, "sqlite3: \(r.stderr)")
    }
}

@Suite("Ledger under SIGKILL and across processes", .serialized)
struct LedgerProcessTests {
    /// A process writing through the ledger is killed at random points, many times. After
    /// each kill the file opens, verifies, and nothing it reported durable is lost.
    @Test func randomKillsLoseNothing() throws {
        let path = temporaryLedgerPath()
        var finished: [String] = []
        var journal: [String] = []
        var checkpoints: [(Int, String)] = []
        // On a server each kill also waits out the dead process's lease: fewer rounds, as long.
        for round in 0..<(TestLedger.onPostgres ? 15 : 30) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: Binaries.torture)
            p.arguments = ["loop", path, "r", "k\(round)"]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let output = OutputDrain(out.fileHandleForReading)
            // Killed at a random moment of its writing, counted from its first call (its
            // start-up time on a busy machine is no part of the window).
            #expect(output.wait(for: "begun"), "round \(round): ward-torture never began a call")
            usleep(useconds_t(Int.random(in: 20_000...150_000)))  // the kill's random point, not a wait for anything
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            // On a server the dead process's lease outlives it until it expires.
            if TestLedger.onPostgres { usleep(useconds_t(TestLedger.leaseSeconds * 1_000_000) + 300_000) }
            let lines = output.text().split(separator: "\n")
            for line in lines {
                let w = line.split(separator: " ")
                if w.first == "finished" { finished.append(String(w[1])) }
                if w.first == "journal" { journal.append(String(w[1])) }
                if w.first == "checkpoint", w.count == 3, let seq = Int(w[1]) { checkpoints.append((seq, String(w[2]))) }
            }
            let ledger = try Ledger(path: path)
            let report = try ledger.verify()
            #expect(report.ok, "round \(round): \(report.runs.compactMap(\.problem))")
            let calls = Dictionary(uniqueKeysWithValues: try ledger.listCalls(run: "r").map { ($0.callId, $0) })
            for id in finished {
                #expect(calls[id]?.status == "succeeded", "round \(round): finished call \(id) is \(calls[id]?.status ?? "missing")")
            }
            for (id, call) in calls where call.status == "running" || call.status == "in-doubt" {
                // Caught between begin and finish: non-idempotent ones are in doubt, the rest retryable.
                #expect((call.effect == "non-idempotent") == (call.status == "in-doubt"), "\(id): \(call.effect) \(call.status)")
                #expect(!finished.contains(id))
            }
            for key in journal {
                #expect(try ledger.journalRecord(run: "r", key: key, value: .null).recorded == false, "journal \(key) lost")
            }
        }
        let ledger = try Ledger(path: path)
        // A server's commit is a few round trips more than SQLite's: fewer calls fit the same kills.
        #expect(finished.count > (TestLedger.onPostgres ? 15 : 100), "the torture loop hardly ran: \(finished.count) calls")
        for id in finished.shuffled().prefix(20) {
            guard case .replay(let result)? = try? ledger.begin(BeginRequest(run: "r", callId: id, tool: "t", effect: .nonIdempotent,
                    arguments: .object(["i": .number(Double(id.split(separator: "-").last!)!)]), policyHash: "p", executable: "/bin/true", attempt: 1))
            else { Issue.record("\(id) did not replay"); continue }
            #expect(result.outcome.stdout == Array("out-\(id)".utf8))
        }
        for (seq, id) in checkpoints.suffix(20) {
            #expect(try ledger.loadCheckpoint(run: "r", seq: seq)?.state == Array("state after \(id)".utf8))
        }
    }

    /// Four processes begin `call` in `path` at once (the one that runs it holds it `hold`
    /// ms): exactly one runs it, the others are told it is running or replay it.
    func expectOneRuns(_ path: String, _ call: String, hold: Int, round: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let results = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            let r = try? Binaries.run(Binaries.torture, ["race", path, "r", call, "\(hold)"])
            results.withLock { $0.append(r?.stdout ?? "failed") }
        }
        let all = results.withLock { $0 }
        #expect(all.filter { $0.hasPrefix("execute") }.count == 1, "round \(round): \(all)", sourceLocation: sourceLocation)
        #expect(all.allSatisfy { $0.hasPrefix("execute") || $0.hasPrefix("error in-progress") || $0.hasPrefix("replay") }, "round \(round): \(all)",
                sourceLocation: sourceLocation)
    }

    /// Two supervisors on one ledger never both run the same call.
    @Test func twoProcessesNeverBothRunACall() throws {
        let path = temporaryLedgerPath()
        _ = try Ledger(path: path)
        for round in 0..<5 { expectOneRuns(path, "c\(round)", hold: 200, round: round) }
    }

    /// Supervisors started at the same moment on a ledger that does not exist yet all open
    /// it: one sets it up while the others wait (the two-supervisor crash matrix found them
    /// failing with "duplicate column name", SQLite's switch to WAL with "locked").
    @Test func processesCreatingOneLedgerAtOnceAllOpenIt() throws {
        for round in 0..<10 {
            let path = temporaryLedgerPath()
            expectOneRuns(path, "c", hold: 50, round: round)
            #expect(try Ledger(path: path).verify().ok)
        }
    }

    @Test(.sqliteFile) func verifyNamesEachKindOfTampering() throws {
        // Each edit is what someone with the sqlite3 CLI could do to a real file.
        let edits: [(String, String, String)] = [
            ("altered", "UPDATE events SET body = replace(body, '\"attempt\":1', '\"attempt\":7') WHERE run_id = 'r' AND seq = 3", "event 3 of run r was altered"),
            ("removed", "DELETE FROM events WHERE run_id = 'r' AND seq = 4", "event 4 of run r was removed"),
            ("removed last", "DELETE FROM events WHERE run_id = 'r' AND seq = (SELECT MAX(seq) FROM events WHERE run_id = 'r')", "was removed"),
            ("inserted", "UPDATE events SET seq = seq + 1000 WHERE run_id = 'r' AND seq >= 5; UPDATE events SET seq = seq - 999 WHERE run_id = 'r' AND seq >= 1005; INSERT INTO events SELECT run_id, 5, at, kind, call_id, body, prev_hash, hash FROM events WHERE run_id = 'r' AND seq = 2", "event 5 of run r"),
            ("reordered", "UPDATE events SET seq = 100 WHERE run_id = 'r' AND seq = 3; UPDATE events SET seq = 3 WHERE run_id = 'r' AND seq = 4; UPDATE events SET seq = 4 WHERE run_id = 'r' AND seq = 100", "event 3 of run r was reordered"),
            ("call status", "UPDATE calls SET status = 'failed' WHERE run_id = 'r' AND call_id = 'c1'", "call c1 of run r was altered"),
            ("output", "UPDATE blobs SET data = CAST('forged' AS BLOB) WHERE hash = (SELECT stdout FROM calls WHERE call_id = 'c1')", "stdout of call c1 of run r was altered"),
            ("journal", "UPDATE journal SET value = '\"forged\"' WHERE run_id = 'r'", "journal entry k of run r was altered"),
        ]
        for (name, sql, message) in edits {
            let path = temporaryLedgerPath(name.replacingOccurrences(of: " ", with: "-"))
            do {
                let ledger = try Ledger(path: path)
                for i in 1...3 {
                    let t = try #require(try ledger.begin(request("c\(i)", run: "r")).ticket)
                    _ = try ledger.finish(t, outcome: outcome("output \(i)"))
                }
                _ = try ledger.journalRecord(run: "r", key: "k", value: .string("v"))
            }
            let clean = try Binaries.run(Binaries.ward, ["ledger", "verify", "--ledger", path])
            #expect(clean.status == 0, "\(name): \(clean.stderr)")
            try Binaries.sqlite(path, "DROP TRIGGER events_are_append_only_update; DROP TRIGGER events_are_append_only_delete; " + sql)
            let r = try Binaries.run(Binaries.ward, ["ledger", "verify", "--ledger", path])
            #expect(r.status == 1, "\(name): tampering not detected: \(r.stdout)")
            #expect(r.stderr.contains(message), "\(name): \(r.stderr)")
        }
    }

    @Test(.sqliteFile) func eventsAreAppendOnlyUnlessTheTriggersAreDropped() throws {
        let path = temporaryLedgerPath()
        _ = try Ledger(path: path).startAttempt(run: "r")
        let r = try Binaries.run("/usr/bin/sqlite3", [path, "DELETE FROM events"])
        #expect(r.status != 0 && r.stderr.contains("append-only"), "\(r)")
    }

    /// On a server, whoever can connect with the ledger's role meets the same triggers.
    @Test(.enabled(if: TestLedger.onPostgres, "about a server's ledger")) func eventsOnAServerAreAppendOnly() throws {
        let path = temporaryLedgerPath()
        _ = try Ledger(path: path).startAttempt(run: "r")
        let database = try #require(path.split(separator: "?").first?.split(separator: "/").last.map(String.init))
        for sql in ["DELETE FROM events", "UPDATE events SET kind = 'x'", "TRUNCATE events"] {
            #expect(throws: (any Error).self) { try TestLedger.server!.psql(database, sql) }
        }
        #expect(try TestLedger.server!.psql(database, "SELECT COUNT(*) FROM events").trimmingCharacters(in: .whitespacesAndNewlines) == "1")
    }

    @Test func auditCommands() throws {
        let path = temporaryLedgerPath()
        do {
            let ledger = try Ledger(path: path)
            _ = try ledger.startAttempt(run: "demo")
            let t = try #require(try ledger.begin(request("c1", run: "demo", checkpoint: Array(#"{"step":1}"#.utf8))).ticket)
            _ = try ledger.finish(t, outcome: outcome("hello"))
            try beginThenCrash(ledgerAt: path, request("c2", run: "demo"))
        }
        let w = Binaries.ward
        let list = try Binaries.run(w, ["ledger", "list", "--ledger", path])
        #expect(list.status == 0 && list.stdout.contains("c1") && list.stdout.contains("succeeded"), "\(list)")
        let doubt = try Binaries.run(w, ["ledger", "list", "--ledger", path, "--status", "in-doubt", "--json"])
        let doubtJSON = try JSONValue.parse(doubt.stdout)
        guard case .array(let items) = doubtJSON else { Issue.record("not an array"); return }
        #expect(items.count == 1 && items[0].objectValue?["callId"] == .string("c2"))
        let show = try Binaries.run(w, ["ledger", "show", "demo", "c1", "--ledger", path, "--json"])
        let detail = try JSONValue.parse(show.stdout).objectValue!
        #expect(detail["arguments"] == .object(["command": .string("echo hi")]))
        #expect(detail["result"]?.objectValue?["stdout"] == .string("hello"))
        #expect(detail["policyHash"] == .string("policy-1"))
        let human = try Binaries.run(w, ["ledger", "show", "demo", "c1", "--ledger", path])
        #expect(human.stdout.contains("call.begin") && human.stdout.contains("call.finish"), "\(human.stdout)")
        let export = try Binaries.run(w, ["ledger", "export", "--ledger", path, "--format", "jsonl"])
        let lines = export.stdout.split(separator: "\n")
        #expect(lines.count >= 5)
        for line in lines {
            let e = try JSONValue.parse(String(line)).objectValue!
            #expect(Set(e.keys) == ["run", "seq", "at", "kind", "callId", "data", "prevHash", "hash"])
        }
        let runs = try Binaries.run(w, ["runs", "list", "--ledger", path])
        #expect(runs.stdout.contains("demo") && runs.stdout.contains("unfinished"), "\(runs.stdout)")
        let cp = try Binaries.run(w, ["checkpoint", "show", "demo", "--ledger", path, "--json"])
        #expect(try JSONValue.parse(cp.stdout) == .object(["seq": .number(1), "state": .object(["step": .number(1)])]))
        // Settling the in-doubt call.
        let bad = try Binaries.run(w, ["ledger", "resolve", "demo", "c1", "--as", "executed", "--note", "x", "--ledger", path])
        #expect(bad.status == 2 && bad.stderr.contains("not in-doubt"), "\(bad)")
        let ok = try Binaries.run(w, ["ledger", "resolve", "demo", "c2", "--as", "not-executed", "--note", "checked the mail log", "--ledger", path])
        #expect(ok.status == 0, "\(ok)")
        let after = try Binaries.run(w, ["ledger", "show", "demo", "c2", "--ledger", path, "--json"])
        #expect(try JSONValue.parse(after.stdout).objectValue?["note"] == .string("checked the mail log"))
        #expect(try Binaries.run(w, ["ledger", "verify", "--ledger", path]).status == 0)
        // Errors: a missing call (2), a file that is not a ledger (3, untouched), no ledger (3).
        #expect(try Binaries.run(w, ["ledger", "show", "demo", "nope", "--ledger", path]).status == 2)
        let junk = makeTemporaryDirectory("ward-ledger-test") + "/junk.sqlite"
        FileManager.default.createFile(atPath: junk, contents: Data("not a database".utf8))
        let notLedger = try Binaries.run(w, ["ledger", "list", "--ledger", junk])
        #expect(notLedger.status == 3 && notLedger.stderr.contains("not a ward ledger"), "\(notLedger)")
        #expect(FileManager.default.contents(atPath: junk) == Data("not a database".utf8))
        #expect(try Binaries.run(w, ["ledger", "list", "--ledger", "/nonexistent/ledger.sqlite"]).status == 3)
    }
}
