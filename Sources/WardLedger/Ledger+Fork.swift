import WardCore

/// A run made from another one's history up to one of its checkpoints (`Ledger.fork`).
public struct ForkedRun: Sendable {
    /// The new run.
    public var run: String
    /// The run it was made from.
    public var origin: String
    /// The origin's checkpoint it starts at.
    public var checkpoint: Int
    /// The origin's events copied into it (after its own `run.fork`).
    public var events: Int
    /// The calls it holds: those begun before the checkpoint.
    public var calls: Int
}

extension Ledger {
    /// Makes run `fork` from `origin`'s history up to its checkpoint `checkpoint`: an agent
    /// started in the fork resumes at that checkpoint, its calls up to it are replayed and
    /// new ones run (docs/design.md, "Forks"). One write transaction; the origin is only read.
    ///
    /// The fork's chain is its `run.fork` event, chained from the hash of the origin's event
    /// that saved the checkpoint, then the origin's events up to that one and the later
    /// events of the calls they began (an effect that happened once is replayed, never run
    /// again), each with the fork's run ID and sequence number. Its `calls`, `checkpoints`
    /// and `journal` rows are the origin's that those events account for; chunks stay shared.
    ///
    /// ```swift
    /// let fork = try ledger.fork(run: "run-a", at: 3, as: "run-b")
    /// ```
    ///
    /// - Throws: `notFound` (no such run or checkpoint), `invalid` (`fork` exists already,
    ///   or `checkpoint` < 1), `inProgress` (a call begun before the checkpoint is still
    ///   running under a live owner: its outcome is not known yet), `corrupt` (an event to
    ///   copy does not match its hash), `storage`.
    public func fork(run origin: String, at checkpoint: Int, as fork: String) throws(LedgerError) -> ForkedRun {
        guard checkpoint >= 1 else { throw LedgerError(.invalid, "checkpoints are numbered from 1: there is no checkpoint \(checkpoint)") }
        return try write("forking run \(origin) at checkpoint \(checkpoint)", runs: [origin, fork]) { db in
            guard try db.first("SELECT 1 FROM runs WHERE run_id = ?", [.text(origin)], { _ in true }) != nil else {
                throw LedgerError(.notFound, "no run \(origin) in \(self.path)")
            }
            guard try db.first("SELECT 1 FROM runs WHERE run_id = ?", [.text(fork)], { _ in true }) == nil else {
                throw LedgerError(.invalid, "run \(fork) exists already in \(self.path): a fork is a new run")
            }
            guard let end = try db.first("""
                SELECT e.seq FROM checkpoints k, events e WHERE k.run_id = ?1 AND k.seq = ?2
                    AND e.run_id = ?1 AND e.kind = 'checkpoint.save' AND \(db.dialect.isJSONObject("e.body")) AND \(db.dialect.jsonNumber("e.body", "data", "seq")) = ?2
                """, [.text(origin), .int(checkpoint)], { $0.int(0) }) else {
                throw LedgerError(.notFound, "run \(origin) has no checkpoint \(checkpoint)")
            }
            let begun = Ledger.callsBeforeForkPoint
            // An outcome still to come would be recorded in the origin only, and the fork
            // would hold the call running under an owner that never finishes it there.
            let values: [SQLValue] = [.text(fork), .text(origin), .int(end)]
            for (id, owner) in try db.all("SELECT call_id, owner FROM calls WHERE run_id = ?2 AND status = \(CallState.sql(.running)) AND call_id IN (\(begun))",
                                          values, { ($0.text(0), $0.optionalText(1)) }) {
                if case .dead = self.ownerState(owner) { continue }  // the fork's first start recovers it, as the origin's would
                throw LedgerError(.inProgress, "call \(id) of run \(origin) began before checkpoint \(checkpoint) and is still running: fork it once its outcome is recorded")
            }
            let copied = try self.copiedEvents(db, values, origin: origin, through: end, calls: begun)
            guard let last = copied.firstIndex(where: { $0.seq == end }) else {
                throw LedgerError(.corrupt, "event \(end) of run \(origin) is missing")
            }
            let now = Timestamp.now()
            let head = copied[last].hash
            let forkData: [String: JSONValue] = [
                "origin": .string(origin), "at": .number(Double(checkpoint)), "originSeq": .number(Double(end)),
                "originHash": .string(head), "events": .number(Double(copied.count)),
            ]
            // Chained from the origin's prefix: the fork's whole chain commits to it.
            var prev = head
            var body = Ledger.eventBody(run: fork, seq: 1, at: now, kind: "run.fork", call: nil, data: forkData)
            var hash = Ledger.chain(prev: prev, body: body)
            let insert = "INSERT INTO events (run_id, seq, at, kind, call_id, body, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            try db.run(insert, [.text(fork), .int(1), .text(now), .text("run.fork"), .null, .text(body), .text(prev), .text(hash)])
            let runFrame = Array(#","run":"#.utf8) + JSONValue.string(fork).canonicalBytes + Array(#","seq":"#.utf8)
            var run = ForkState()
            for (i, event) in copied.enumerated() {
                let seq = i + 2
                // The body with the fork's run and seq: they are its last two members.
                var bytes = Array(event.body.utf8.dropLast(event.frame))
                bytes += runFrame
                bytes += String(seq).utf8
                bytes.append(UInt8(ascii: "}"))
                body = String(decoding: bytes, as: UTF8.self)
                prev = hash
                hash = Ledger.chain(prev: prev, body: body)
                try db.run(insert, [.text(fork), .int(seq), .text(event.at), .text(event.kind), SQLValue(event.call), .text(body), .text(prev), .text(hash)])
                try run.follow(event)
            }
            let place = run.place
            try db.run("""
                INSERT INTO runs (run_id, created_at, updated_at, attempts, finished_at, exit_status, event_count, head_hash,
                                  workspace, workspace_dev, workspace_ino, workspace_born, policies, agent, origin_run, origin_seq)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [.text(fork), .text(now), .text(copied.last?.at ?? now), .int(run.attempts), SQLValue(run.finish?.at), SQLValue(run.finish?.exitStatus),
                      .int(copied.count + 1), .text(hash), SQLValue(place?.workspace), place.map { .int(Int(Int64(bitPattern: $0.device))) } ?? .null,
                      place.map { .int(Int(Int64(bitPattern: $0.inode))) } ?? .null, SQLValue(place?.born), SQLValue(place?.policies),
                      SQLValue(run.agent), .text(origin), .int(checkpoint)])
            let calls = try Ledger.copyRows(db, "calls", values, where: "call_id IN (\(begun))")
            _ = try Ledger.copyRows(db, "checkpoints", [.text(fork), .text(origin), .int(checkpoint)], where: "seq <= ?3")
            _ = try Ledger.copyRows(db, "journal", values, where: """
                key IN (SELECT \(db.dialect.jsonIfValid("body", "data", "key")) FROM events WHERE run_id = ?2 AND seq <= ?3 AND kind = 'journal.record')
                """)
            return ForkedRun(run: fork, origin: origin, checkpoint: checkpoint, events: copied.count, calls: calls)
        }
    }

    /// The calls of run `?2` begun (or gated) by its event `?3`, whose whole history a fork
    /// at that event takes: a gated call approved and run later had its effect too.
    static let callsBeforeForkPoint = "SELECT call_id FROM events WHERE run_id = ?2 AND seq <= ?3 AND kind IN ('call.begin', 'call.gate')"

    /// One origin event to copy, checked against its hash.
    struct CopiedEvent {
        var seq: Int
        var at: String
        var kind: String
        var call: String?
        var body: String
        var hash: String
        /// The length of its body's `,"run":RUN,"seq":SEQ}`, which the fork's replaces.
        var frame: Int
    }

    /// The origin's events through `end` and the later ones of the calls `calls` selects,
    /// in chain order. Each must match its hash, and the ones through `end` must chain: a
    /// fork of an altered history would carry the alteration under a new hash. `values`: the
    /// fork (?1), the origin (?2) and the origin's event that saved the checkpoint (?3).
    func copiedEvents(_ db: any SQLConnection, _ values: [SQLValue], origin: String, through end: Int, calls: String) throws -> [CopiedEvent] {
        let originRun = Array(#","run":"#.utf8) + JSONValue.string(origin).canonicalBytes + Array(#","seq":"#.utf8)
        var expectedPrev: String?
        return try db.all("""
            SELECT seq, at, kind, call_id, body, prev_hash, hash FROM events
            WHERE run_id = ?2 AND (seq <= ?3 OR (substr(kind, 1, 5) = 'call.' AND call_id IN (\(calls)))) ORDER BY seq
            """, values) { row in
            let seq = row.int(0), body = row.text(4), prev = row.text(5), hash = row.text(6)
            let frame = originRun + Array(String(seq).utf8) + [UInt8(ascii: "}")]
            var damaged: LedgerError {
                LedgerError(.corrupt, "event \(seq) of run \(origin) does not match its hash: `ward ledger verify --run \(origin)` names what was altered")
            }
            guard Ledger.chain(prev: prev, body: body) == hash, body.utf8.suffix(frame.count).elementsEqual(frame) else { throw damaged }
            if seq <= end {
                if let expectedPrev, expectedPrev != prev { throw damaged }
                expectedPrev = hash
            }
            return CopiedEvent(seq: seq, at: row.text(1), kind: row.text(2), call: row.optionalText(3), body: body, hash: hash, frame: frame.count)
        }
    }

    /// Copies `table`'s rows of the origin (`?2`) that `condition` selects to the fork
    /// (`?1`), every column as it is but the run: columns later migrations add come along.
    /// Returns how many.
    static func copyRows(_ db: any SQLConnection, _ table: String, _ values: [SQLValue], where condition: String) throws -> Int {
        let columns = try db.texts(db.dialect == .sqlite
            ? "SELECT name FROM pragma_table_info(?) WHERE name != 'run_id' ORDER BY cid"
            : "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? AND column_name != 'run_id' ORDER BY ordinal_position",
            table)
        let list = columns.map { "\"\($0)\"" }.joined(separator: ", ")
        try db.run("INSERT INTO \(table) (run_id, \(list)) SELECT ?1, \(list) FROM \(table) WHERE run_id = ?2 AND \(condition)", values)
        return try db.changes
    }
}

/// What a fork's `runs` row holds, from the events copied into it, as `appendEvent`,
/// `startAttempt`, `finishRun` and `claimPlace` set it for the origin.
private struct ForkState {
    var attempts = 0
    var finish: (at: String, exitStatus: Int?)?
    var place: RunPlace?
    /// The agent's command line the last attempt that named one recorded (canonical JSON).
    var agent: String?

    mutating func follow(_ event: Ledger.CopiedEvent) throws {
        switch event.kind {
        case "run.attempt", "run.finish", "run.place", "run.moved", "run.policies":
            guard let data = (try? JSONValue.parse(event.body))?.objectValue?["data"]?.objectValue else {
                throw LedgerError(.corrupt, "event \(event.seq) of the run being forked is not valid JSON")
            }
            switch event.kind {
            case "run.attempt":
                attempts += 1
                if let named = data["agent"] { agent = named.canonical }
            case "run.finish": finish = (event.at, data["exitStatus"]?.integer(Int.self))
            case "run.place": place = RunPlace(json: data)
            case "run.moved": place = data["to"]?.objectValue.flatMap(RunPlace.init(json:))
            default: if let to = data["to"]?.stringValue { place?.policies = to }
            }
        default: break
        }
    }
}

extension RunPlace {
    /// From the `data` of a `run.place` event (`json`).
    init?(json: [String: JSONValue]) {
        guard let workspace = json["workspace"]?.stringValue, let device = json["device"]?.integer(UInt64.self),
              let inode = json["inode"]?.integer(UInt64.self), let born = json["born"]?.stringValue, let policies = json["policies"]?.stringValue else { return nil }
        self.init(workspace: workspace, device: device, inode: inode, born: born, policies: policies)
    }
}
