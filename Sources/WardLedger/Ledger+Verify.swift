import GRDB
import WardCore

/// What `ward ledger verify` found.
public struct VerifyReport: Sendable {
    public struct Run: Sendable {
        public var run: String
        public var events: Int
        /// The hash of the run's last event: record it elsewhere to detect a rewritten chain.
        public var head: String
        /// The first problem found in this run, if any.
        public var problem: String?
    }

    public var runs: [Run]
    public var ok: Bool { runs.allSatisfy { $0.problem == nil } }
}

extension Ledger {
    /// Recomputes every run's hash chain (or one run's) and checks the recorded state
    /// against it. For each run, names the first event that was altered, removed, inserted
    /// or reordered, and any call, output or journal entry that no longer matches its events.
    public func verify(run only: String? = nil) throws(LedgerError) -> VerifyReport {
        try read("verifying the ledger") { db in
            var runs = try String.fetchAll(db, sql: "SELECT run_id FROM runs UNION SELECT DISTINCT run_id FROM events ORDER BY 1")
            if let only {
                guard runs.contains(where: { ExactString($0) == ExactString(only) }) else { throw LedgerError(.notFound, "no run \(only) in \(self.path)") }
                runs = [only]
            }
            return VerifyReport(runs: try runs.map { try self.verifyRun(db, $0) })
        }
    }

    private func verifyRun(_ db: Database, _ run: String) throws -> VerifyReport.Run {
        let rows = try Row.fetchAll(db, sql: "SELECT * FROM events WHERE run_id = ? ORDER BY seq", arguments: [run])
        var report = VerifyReport.Run(run: run, events: rows.count, head: Digest.genesis, problem: nil)
        var prev = Digest.genesis
        var seenHashes: [String: Int] = [:]
        var expected = 1
        var bodies: [(seq: Int, kind: String, call: String?, data: [String: JSONValue])] = []
        func fail(_ message: String) -> VerifyReport.Run {
            var r = report
            r.problem = message
            return r
        }
        for row in rows {
            let seq: Int = row["seq"]
            let body: String = row["body"]
            let stored: String = row["hash"]
            let storedPrev: String = row["prev_hash"]
            if seq != expected {
                return fail(seq > expected
                    ? "event \(expected)\(seq - 1 > expected ? "–\(seq - 1)" : "") of run \(run) was removed (the events jump from \(expected - 1) to \(seq))"
                    : "event \(seq) of run \(run) appears twice")
            }
            guard let parsed = try? JSONValue.parse(body).objectValue else {
                return fail("event \(seq) of run \(run) was altered (its body is not valid JSON)")
            }
            if Ledger.chain(prev: storedPrev, body: body) != stored {
                return fail("event \(seq) of run \(run) was altered (its content does not match its hash)")
            }
            // The file may be hostile too: a seq of 1e300 is a finding, not a trap.
            if let bodySeq = parsed["seq"], bodySeq.integer() != seq {
                return fail("event \(seq) of run \(run) was reordered (it holds event \(bodySeq.canonical) of the chain)")
            }
            if parsed["run"]?.stringValue.map(ExactString.init) != ExactString(run) {
                return fail("event \(seq) of run \(run) was moved here from run \(parsed["run"]?.stringValue ?? "?")")
            }
            if storedPrev != prev {
                if let earlier = seenHashes[storedPrev] {
                    return fail("event \(seq) of run \(run) was reordered (it follows event \(earlier), not \(seq - 1))")
                }
                return fail("event \(seq) of run \(run) does not follow event \(seq - 1): an event before it was removed, inserted or altered")
            }
            func exact(_ member: String) -> ExactString? { parsed[member]?.stringValue.map(ExactString.init) }
            if exact("kind") != ExactString(row["kind"]) || exact("call") != (row["call_id"] as String?).map(ExactString.init)
                || exact("at") != ExactString(row["at"]) {
                return fail("event \(seq) of run \(run) was altered (its columns differ from its hashed body)")
            }
            seenHashes[stored] = seq
            prev = stored
            expected += 1
            bodies.append((seq, row["kind"], row["call_id"], parsed["data"]?.objectValue ?? [:]))
        }
        report.head = prev
        if let head = try Row.fetchOne(db, sql: "SELECT event_count, head_hash FROM runs WHERE run_id = ?", arguments: [run]) {
            let count: Int = head["event_count"]
            if count > rows.count {
                return fail("event \(rows.count + 1)\(count > rows.count + 1 ? "–\(count)" : "") of run \(run) was removed (the run records \(count) events)")
            }
            if count < rows.count || (head["head_hash"] as String) != prev {
                return fail("event \(count + 1) of run \(run) was inserted, or the run's head was altered")
            }
        } else if !rows.isEmpty {
            return fail("run \(run) has events but no run record (it was removed)")
        }
        if let problem = try checkState(db, run: run, events: bodies) { return fail(problem) }
        return report
    }

    /// The recorded calls, outputs and journal must be what the events say.
    private func checkState(_ db: Database, run: String, events: [(seq: Int, kind: String, call: String?, data: [String: JSONValue])]) throws -> String? {
        // Keyed by exact bytes, as the tables are: two call IDs that Swift's String equality
        // finds canonically equivalent ("é" and "e\u{301}") are two calls.
        var lastStatus: [ExactString: (status: String, seq: Int, data: [String: JSONValue])] = [:]
        var argsHash: [ExactString: String] = [:]
        var journalHashes: [ExactString: String] = [:]
        var place: [String: JSONValue]?
        for e in events {
            switch e.kind {
            case "run.place": place = e.data
            case "run.moved": place = e.data["to"]?.objectValue
            case "run.policies": place?["policies"] = e.data["to"]
            case "call.begin":
                lastStatus[ExactString(e.call!)] = ("running", e.seq, e.data)
                argsHash[ExactString(e.call!)] = e.data["argsHash"]?.stringValue
            case "call.finish": lastStatus[ExactString(e.call!)] = (e.data["status"]?.stringValue ?? "?", e.seq, e.data)
            case "call.in-doubt": lastStatus[ExactString(e.call!)] = ("in-doubt", e.seq, e.data)
            case "call.resolve": lastStatus[ExactString(e.call!)] = ("resolved", e.seq, e.data)
            case "journal.record": if let k = e.data["key"]?.stringValue { journalHashes[ExactString(k)] = e.data["valueHash"]?.stringValue }
            default: break
            }
        }
        let calls = try Row.fetchAll(db, sql: "SELECT * FROM calls WHERE run_id = ? ORDER BY call_id", arguments: [run])
        for call in calls {
            let id: String = call["call_id"]
            guard let last = lastStatus.removeValue(forKey: ExactString(id)) else {
                return "call \(id) of run \(run) has no events (it was inserted)"
            }
            if (call["status"] as String) != last.status {
                return "call \(id) of run \(run) was altered: it says \(call["status"] as String), its last event (\(last.seq)) says \(last.status)"
            }
            if (call["args_hash"] as String) != argsHash[ExactString(id)] {
                return "call \(id) of run \(run) was altered: its arguments differ from event records"
            }
            if Digest.sha256Hex((call["args"] as String).utf8) != (call["args_hash"] as String) {
                return "call \(id) of run \(run) was altered: its arguments do not match their hash"
            }
            for stream in ["stdout", "stderr"] {
                let value: DatabaseValue = call[stream]
                guard !value.isNull else { continue }
                let hash = value.bytes
                if let recorded = last.data[stream]?.stringValue, recorded != Digest.hex(hash) {
                    return "the recorded \(stream) of call \(id) of run \(run) was altered (it is not the one event \(last.seq) recorded)"
                }
                guard let data = try blob(db, hash) else { return "the recorded \(stream) of call \(id) of run \(run) was removed" }
                if Digest.sha256(data) != hash { return "the recorded \(stream) of call \(id) of run \(run) was altered" }
            }
        }
        if let (id, _) = lastStatus.first { return "call \(id) of run \(run) was removed (its events remain)" }
        for row in try Row.fetchAll(db, sql: "SELECT key, value FROM journal WHERE run_id = ?", arguments: [run]) {
            let key: String = row["key"]
            guard let recorded = journalHashes.removeValue(forKey: ExactString(key)) else { return "journal entry \(key) of run \(run) has no event (it was inserted)" }
            if Digest.sha256Hex((row["value"] as String).utf8) != recorded { return "journal entry \(key) of run \(run) was altered" }
        }
        if let (key, _) = journalHashes.first { return "journal entry \(key) of run \(run) was removed" }
        // The place decides where reconcile looks for a call's effect: it must be the one the
        // events recorded.
        let recorded = try Ledger.place(db, run: run)?.json
        if recorded.map({ JSONValue.object($0).canonicalBytes }) != place.map({ JSONValue.object($0).canonicalBytes }) {
            return "the workspace or policies recorded for run \(run) were altered (they are not the ones its events recorded)"
        }
        return nil
    }
}
