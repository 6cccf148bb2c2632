import Crypto
import Foundation
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
        /// What could not be checked and is no problem: a fork whose origin is not in this ledger.
        public var note: String?
    }

    public var runs: [Run]
    public var ok: Bool { runs.allSatisfy { $0.problem == nil } }
}

extension Ledger {
    /// Recomputes every run's hash chain (or one run's) and checks that everything recorded
    /// beside it is what its events make. For each run, names the first event that was
    /// altered, removed, inserted or reordered; the first sequence of events ward could not
    /// have written (a call executed again without a not-executed verdict, an outcome for an
    /// execution that never began, …); and the first call, output, checkpoint, journal
    /// entry or run field that no longer matches its events.
    ///
    /// Reads one row at a time, never a whole table: what it keeps of a run is the state of
    /// its calls still open and a few dozen bytes per call that has ended (≈ 30 MiB resident
    /// for 100,000 events; see the bench).
    public func verify(run only: String? = nil) throws(LedgerError) -> VerifyReport {
        try read("verifying the ledger") { db in
            var runs = try db.texts("SELECT run_id FROM runs UNION SELECT DISTINCT run_id FROM events ORDER BY 1")
            if let only {
                guard runs.contains(where: { ExactString($0) == ExactString(only) }) else { throw LedgerError(.notFound, "no run \(only) in \(self.path)") }
                runs = [only]
            }
            return VerifyReport(runs: try runs.map { run in
                var check = RunCheck(db: db, run: run, exactTimes: self.timesFollowEvents, deliveries: self.recordsDelivery,
                                     agents: self.recordsAgent, forks: self.recordsForks)
                return try check.report()
            })
        }
    }
}

/// The first thing in a run that its events do not account for, in words for an operator.
private struct Finding: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// The members of events' `data` that verify reads.
private enum Member: Int, CaseIterable {
    case attempt, exitStatus, seq, size, stateHash, label, key, valueHash, checkpoint, execution, tool, effect, argsHash, policyHash, binaryHash,
         owner, status, exitCode, signal, stdout, stderr, truncated, durationMs, verdict, note, by, stdoutSoFar, stderrSoFar, delivery, uid

    static let byName = Dictionary(uniqueKeysWithValues: allCases.map { ("\($0)", $0) })
    static let names = allCases.map { Array("\($0)".utf8) }

    /// The member a key of `data` names, found by its bytes (no String made).
    static func named(_ key: UnsafeBufferPointer<UInt8>) -> Member? {
        for (i, name) in names.enumerated() where name.count == key.count {
            if name.withUnsafeBufferPointer({ memcmp($0.baseAddress!, key.baseAddress!, key.count) == 0 }) { return allCases[i] }
        }
        return nil
    }
}

/// The value of a member of an event's `data`.
private enum Value {
    case string(String), number(Double), bool(Bool), null
}

/// Reads the members of an event's `data` (its JSON text, as the body holds it) into
/// `values`. Ward writes a flat object of strings, numbers, booleans and nulls, read here in
/// place; anything else (an escape, a nested value) is read through `JSONValue`. Parsing
/// whole bodies, in Swift or with SQLite's JSON functions, cost more than the rest of verify.
/// - Returns: false when it is not a JSON object.
private func readData(_ text: UnsafeBufferPointer<UInt8>, into values: inout [Value?]) -> Bool {
    for i in values.indices { values[i] = nil }
    func set(_ key: String, _ value: Value) {
        if let member = Member.byName[key] { values[member.rawValue] = value }
    }
    func generally() -> Bool {
        guard let object = (try? JSONValue.parse(Array(text)))?.objectValue else { return false }
        for (key, value) in object {
            switch value {
            case .string(let s): set(key, .string(s))
            case .number(let d): set(key, .number(d))
            case .bool(let b): set(key, .bool(b))
            case .null: set(key, .null)
            case .array, .object: continue  // no member read is one
            }
        }
        return true
    }
    let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
    var i = 0
    /// The bytes of a string without escapes starting at `i` (a quote), moving past it.
    func plainString() -> UnsafeBufferPointer<UInt8>? {
        var j = i + 1
        while j < text.count && text[j] != quote {
            if text[j] == backslash || text[j] < 0x20 { return nil }
            j += 1
        }
        guard j < text.count else { return nil }
        defer { i = j + 1 }
        return UnsafeBufferPointer(rebasing: text[(i + 1)..<j])
    }
    func literal(_ word: StaticString) -> Bool {
        let n = word.utf8CodeUnitCount
        guard i + n <= text.count, memcmp(text.baseAddress! + i, word.utf8Start, n) == 0 else { return false }
        i += n
        return true
    }
    guard text.count >= 2, text[0] == UInt8(ascii: "{") else { return generally() }
    i = 1
    if text.count == 2 && text[1] == UInt8(ascii: "}") { return true }
    while true {
        guard i < text.count, text[i] == quote, let key = plainString(), i < text.count, text[i] == UInt8(ascii: ":") else { return generally() }
        i += 1
        guard i < text.count else { return generally() }
        let member = Member.named(key)
        var value = Value.null
        switch text[i] {
        case quote:
            guard let bytes = plainString() else { return generally() }
            if member != nil { value = .string(String(decoding: bytes, as: UTF8.self)) }
        case UInt8(ascii: "t") where literal("true"): value = .bool(true)
        case UInt8(ascii: "f") where literal("false"): value = .bool(false)
        case UInt8(ascii: "n") where literal("null"): value = .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            let start = i
            while i < text.count, let c = Optional(text[i]), (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9")) || c == UInt8(ascii: "-") || c == UInt8(ascii: "+")
                    || c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E") { i += 1 }
            guard let number = Double(String(decoding: UnsafeBufferPointer(rebasing: text[start..<i]), as: UTF8.self)) else { return generally() }
            value = .number(number)
        default:
            return generally()
        }
        if let member { values[member.rawValue] = value }
        guard i < text.count else { return generally() }
        if text[i] == UInt8(ascii: "}") { return i == text.count - 1 ? true : generally() }
        guard text[i] == UInt8(ascii: ",") else { return generally() }
        i += 1
    }
}

/// One event with its `data` members, as the writer wrote them. A member missing or of
/// another type is a finding (only a rewritten chain can hold one).
private struct Event {
    var run: String
    var seq: Int
    var kind: String
    /// When it was recorded: the time of the rows it changed.
    var at: String
    let values: [Value?]

    func invalid(_ member: String) -> Finding { Finding("event \(seq) of run \(run) (\(kind)) holds no valid \(member)") }
    func invalid(_ member: Member) -> Finding { invalid("\(member)") }

    /// The member's value; nil when it is absent or JSON null.
    private func value(_ member: Member) -> Value? {
        switch values[member.rawValue] {
        case nil, .null?: nil
        case let value?: value
        }
    }

    func has(_ member: Member) -> Bool { value(member) != nil }

    func optionalString(_ member: Member) throws -> String? {
        switch value(member) {
        case nil: return nil
        case .string(let s)?: return s
        default: throw invalid(member)
        }
    }

    func string(_ member: Member) throws -> String {
        guard let value = try optionalString(member) else { throw invalid(member) }
        return value
    }

    /// The file may be hostile: a number that is not an Int is a finding, not a trap.
    func optionalInt(_ member: Member) throws -> Int? {
        switch value(member) {
        case nil: return nil
        case .number(let d)?: if let n = Int(exactly: d) { return n }
        default: break
        }
        throw invalid(member)
    }

    func int(_ member: Member) throws -> Int {
        guard let value = try optionalInt(member) else { throw invalid(member) }
        return value
    }

    func bool(_ member: Member) throws -> Bool {
        guard case .bool(let b)? = value(member) else { throw invalid(member) }
        return b
    }

    func number(_ member: Member) throws -> Double {
        guard case .number(let d)? = value(member) else { throw invalid(member) }
        return d
    }

    /// A blob's SHA-256, recorded as 64 hex digits.
    func hash(_ member: Member) throws -> [UInt8] {
        guard let bytes = Digest.bytes(fromHex: try string(member)), bytes.count == 32 else { throw invalid(member) }
        return bytes
    }
}

/// What a fork's `run.fork` event records: the run and checkpoint it was made from, the
/// origin's event that saved that checkpoint and its hash (the fork's chain starts from it),
/// and how many of the origin's events it copied.
private struct ForkOrigin {
    var run: String
    var checkpoint: Int
    var seq: Int
    var hash: String
    var events: Int

    init?(_ data: [String: JSONValue]) {
        guard let run = data["origin"]?.stringValue, let checkpoint = data["at"]?.integer(Int.self), let seq = data["originSeq"]?.integer(Int.self),
              let hash = data["originHash"]?.stringValue, Digest.bytes(fromHex: hash)?.count == 32, let events = data["events"]?.integer(Int.self),
              checkpoint >= 1, seq >= 1, events >= seq else { return nil }
        (self.run, self.checkpoint, self.seq, self.hash, self.events) = (run, checkpoint, seq, hash, events)
    }
}

/// "was running", for "… but it was running": where a call was (nil: not begun) when an
/// event came that ward's writer would not have written.
private func was(_ state: CallState?) -> String {
    switch state {
    case nil: "had not begun"
    case .running?: "was running"
    case .inDoubt?: "was in doubt"
    case .finished(let status)?: "had finished (\(status.rawValue))"
    case .resolved(let verdict)?: "had been resolved as \(verdict.rawValue)"
    case .awaitingApproval?: "was awaiting approval"
    case .approved?: "had been approved"
    }
}

/// A call ID as a small key: two 64-bit hashes of its bytes (byte-exact: "é" and
/// "e\u{301}" are two calls, as in SQLite), from the process's randomly seeded hasher, so
/// no file can be made for two IDs to collide.
private struct CallKey: Hashable {
    var high: Int
    var low: Int

    init(_ id: String) {
        var id = id
        (high, low) = id.withUTF8 { bytes in
            var a = Hasher(), b = Hasher()
            a.combine(0 as UInt8)
            b.combine(1 as UInt8)
            a.combine(bytes: UnsafeRawBufferPointer(bytes))
            b.combine(bytes: UnsafeRawBufferPointer(bytes))
            return (a.finalize(), b.finalize())
        }
    }
}

/// One call's events replayed: its state, and the `calls` row they leave, column by column,
/// set exactly as `begin`, `finish`, `markInDoubt` and `resolve` set it.
private struct CallReplay {
    let id: String
    /// The first `call.begin`'s tool, effect and arguments hash: the row is inserted with
    /// them, and no later execution changes them.
    var first: (tool: String, effect: String, argsHash: String)?
    /// nil until its first `call.begin`.
    var state: CallState?
    var execution = 0
    var lastEvent = 0
    var row = Fields()
    var delivery = ExpectedDelivery.none
}

/// What a call's events say of its `delivered` column (`Delivery`): nothing (NULL: not a
/// client that can lose answers), awaited (0, or 2 once read: reading leaves no event), or
/// delivered (1, after its `call.delivered`).
private enum ExpectedDelivery: UInt8 {
    case none, awaited, delivered

    func holds(_ recorded: SQLValue) -> Bool {
        switch self {
        case .none: recorded.isNull
        case .awaited: same(recorded, Delivery.awaited.rawValue.sqlValue) || same(recorded, Delivery.read.rawValue.sqlValue)
        case .delivered: same(recorded, Delivery.delivered.rawValue.sqlValue)
        }
    }

    var shown: String {
        switch self {
        case .none: "none"
        case .awaited: "awaited"
        case .delivered: "delivered"
        }
    }
}

/// The columns of `calls` that events set, in the order a finding reports them.
private enum Field: Int, CaseIterable {
    case status, tool, effect, argsHash, policyHash, binaryHash, attempt, executions, owner, exitCode, signal, stdout, stderr, truncated, duration, verdict, note,
         startedAt, finishedAt

    /// The times, held to their events' only in a ledger whose rows carry them.
    static let times: Set<Field> = [.startedAt, .finishedAt]

    var column: String {
        switch self {
        case .argsHash: "args_hash"
        case .policyHash: "policy_hash"
        case .binaryHash: "binary_hash"
        case .exitCode: "exit_code"
        case .duration: "duration_ms"
        case .startedAt: "started_at"
        case .finishedAt: "finished_at"
        default: "\(self)"
        }
    }

    /// For people.
    var name: String {
        switch self {
        case .argsHash: "arguments hash"
        case .policyHash: "policy hash"
        case .binaryHash: "binary hash"
        case .executions: "execution count"
        case .exitCode: "exit code"
        case .stdout: "stdout hash"
        case .stderr: "stderr hash"
        case .truncated: "truncation"
        case .startedAt: "start time"
        case .finishedAt: "finish time"
        default: "\(self)"
        }
    }
}

/// A value for each `Field` (NULL until set).
private struct Fields {
    var values = [SQLValue](repeating: .null, count: Field.allCases.count)
    subscript(field: Field) -> SQLValue {
        get { values[field.rawValue] }
        set { values[field.rawValue] = newValue }
    }
}

/// Verifies one run in one pass over its events in chain order, one row at a time: the
/// hashes; each event's columns against its body; the run's own sequences (attempts and
/// checkpoints numbered one by one, places moved from where they were, a call's checkpoint
/// saved just before its begin); the rows that never change once written (checkpoints with
/// their content, journal entries), each looked up as its event comes; and each call's
/// events replayed as the writer applies them, refusing a sequence it never writes, its row
/// checked once the call has ended. Then the run's own row, and rows no event accounts for.
///
/// What it holds is the state of the calls still open (running, in doubt) and a few dozen
/// bytes per call that ended: never a table.
private struct RunCheck {
    let db: any SQLConnection
    let run: String
    /// Rows carry their events' times (`Ledger.timesFollowEvents`).
    let exactTimes: Bool
    /// Rows carry whether their answers were delivered (`Ledger.recordsDelivery`).
    let deliveries: Bool
    /// Runs carry their agent's command line (`Ledger.recordsAgent`).
    let agents: Bool
    /// Runs record the run they were forked from (`Ledger.recordsForks`).
    let forks: Bool

    var events = 0
    var head = Digest.genesis
    var firstAt: String?
    var lastAt: String?
    var attempts = 0
    var finish: (at: String, exitStatus: Int)?
    var place: [String: JSONValue]?
    /// The canonical JSON of the agent's command line the last attempt that named one recorded.
    var agent: String?
    /// A resumption (its event): the next event must be the attempt it starts.
    var pendingResumption: Int?
    var checkpoints = 0
    /// The chunk hashes of the last checkpoint (32 bytes each, flat): the next one is a delta on it.
    var manifest: [UInt8] = []
    /// A checkpoint saved with a call: the next event must be that call's begin.
    var pendingCheckpoint: (event: Int, seq: Int, call: String)?
    /// A fork's `run.fork` (its first event), read before the chain: where the chain starts.
    var origin: ForkOrigin?
    /// The `run.fork` events at the start of the chain (a fork's own, then copies of its
    /// origin's, for a fork of a fork): how many, and for each, its events that end the
    /// copied prefix and the copied history (by this run's numbering).
    var forkEvents = 0
    var copies: [(prefixEnd: Int, end: Int)] = []
    var note: String?
    var journalEntries = 0
    var checkedBlobs = Set<BlobKey>()
    /// The members of the event being read, by `Member` (kept to spare an allocation per event).
    var values = [Value?](repeating: nil, count: Member.allCases.count)
    /// Calls whose events may continue, each replayed so far.
    var open: [CallKey: CallReplay] = [:]
    /// Calls that have ended, with how: all that is kept of each.
    var ended: [CallKey: (state: CallState, execution: Int, delivery: ExpectedDelivery)] = [:]

    mutating func report() throws -> VerifyReport.Run {
        var chained = false
        do {
            try readFork()
            try checkChain()
            chained = true
            try checkOrigin()
            try checkRunRecord()
            try checkJournalRows()
            try checkCheckpointRows()
            try checkOpenCalls()
            if deliveries { try checkDeliveries() }
            return VerifyReport.Run(run: run, events: events, head: head, problem: nil, note: note)
        } catch let finding as Finding {
            // The chain may have stopped early: count what is there.
            let total = chained ? events : try db.int("SELECT COUNT(*) FROM events WHERE run_id = ?", run) ?? 0
            return VerifyReport.Run(run: run, events: total, head: chained ? head : Digest.genesis, problem: finding.message)
        }
    }

    // MARK: - The chain

    static let scanSQL = "SELECT seq, at, kind, call_id, body, prev_hash, hash FROM events WHERE run_id = ? ORDER BY seq"

    /// `,"run":RUN,"seq":` as the canonical JSON of this run's events holds it.
    lazy var runFrame = Array(#","run":"#.utf8) + JSONValue.string(run).canonicalBytes + Array(#","seq":"#.utf8)
    /// The prefix and suffix being matched, kept to spare an allocation per event.
    var prefix: [UInt8] = []
    var suffix: [UInt8] = []

    /// Whether `body` is the canonical JSON `appendEvent` makes of these columns around its
    /// `data`: {"at", "call"?, "data", "kind", "run", "seq"}, in that order. Checked byte for
    /// byte, without parsing the body.
    mutating func frames(_ body: String, seq: Int, at: String, kind: String, call: String?) -> Bool {
        prefix.removeAll(keepingCapacity: true)
        prefix += #"{"at":"#.utf8
        appendJSON(at, to: &prefix)
        if let call {
            prefix += #","call":"#.utf8
            appendJSON(call, to: &prefix)
        }
        prefix += #","data":"#.utf8
        suffix.removeAll(keepingCapacity: true)
        suffix += #","kind":"#.utf8
        appendJSON(kind, to: &suffix)
        suffix += runFrame
        suffix += String(seq).utf8
        suffix.append(UInt8(ascii: "}"))
        var body = body
        return body.withUTF8 { b in
            b.count >= prefix.count + suffix.count && b.starts(with: prefix) && b[(b.count - suffix.count)...].elementsEqual(suffix)
        }
    }

    /// Why the body of event `seq` does not hold its columns, when it is reordered, moved or
    /// not JSON (read by SQLite, only once something is wrong).
    func diagnose(_ seq: Int) throws {
        let said = try db.first("""
            SELECT object, CASE WHEN object THEN \(db.dialect.jsonNumber("body", "seq")) END, CASE WHEN object THEN \(db.dialect.json("body", "run")) END
            FROM (SELECT body, \(db.dialect.isJSONObject("body")) AS object FROM events WHERE run_id = ? AND seq = ?) AS e
            """, [.text(run), .int(seq)]) { r in (object: r.int(0) == 1, seq: r.value(1), run: r.value(2)) }
        guard let said, said.object else { throw Finding("event \(seq) of run \(run) was altered (its body is not a valid JSON object)") }
        // The file may be hostile too: a seq of 1e300 is a finding, not a trap.
        if !same(said.seq, seq.sqlValue) {
            throw Finding("event \(seq) of run \(run) was reordered (it holds event \(shown(said.seq)) of the chain)")
        }
        if !same(said.run, run.sqlValue) { throw Finding("event \(seq) of run \(run) was moved here from run \(shown(said.run))") }
    }

    mutating func checkChain() throws {
        // A fork's chain starts from the hash of the origin's event it was made at; when its
        // `run.fork` holds no valid one, from what its first event names (then the event's
        // hash, or its data, is the finding).
        var prev = origin?.hash ?? Digest.genesis
        if origin == nil, let named = try db.first("SELECT prev_hash FROM events WHERE run_id = ? AND seq = 1 AND kind = 'run.fork'", [.text(run)], { $0.text(0) }) {
            prev = named
        }
        var prevBytes = Digest.bytes(fromHex: prev) ?? []
        try db.each(Self.scanSQL, [.text(run)]) { row in
            let seq = row.int(0), at = row.text(1), kind = row.text(2), call = row.optionalText(3)
            let body = row.text(4), storedPrev = row.text(5), stored = row.text(6)
            let expected = events + 1
            if seq != expected {
                throw Finding(seq > expected
                    ? "event \(expected)\(seq - 1 > expected ? "–\(seq - 1)" : "") of run \(run) was removed (the events jump from \(expected - 1) to \(seq))"
                    : "event \(seq) of run \(run) appears twice")
            }
            // `Ledger.chain`, with the bytes of the previous hash kept from the event before
            // when this one names it (as it must).
            var hasher = SHA256()
            hasher.update(data: storedPrev == prev ? prevBytes : Digest.bytes(fromHex: storedPrev) ?? [])
            var text = body
            text.withUTF8 { hasher.update(bufferPointer: UnsafeRawBufferPointer($0)) }
            let digest = Array(hasher.finalize())
            if !isHex(of: digest, stored) {
                throw Finding("event \(seq) of run \(run) was altered (its content does not match its hash)")
            }
            let framed = frames(body, seq: seq, at: at, kind: kind, call: call)
            if !framed { try diagnose(seq) }
            if storedPrev != prev {
                // Looked up, not remembered: a table of every hash would grow with the run.
                if let earlier = try db.first("SELECT seq FROM events WHERE run_id = ? AND hash = ? AND seq < ?", [.text(run), .text(storedPrev), .int(seq)], { $0.int(0) }) {
                    throw Finding("event \(seq) of run \(run) was reordered (it follows event \(earlier), not \(seq - 1))")
                }
                throw Finding("event \(seq) of run \(run) does not follow event \(seq - 1): an event before it was removed, inserted or altered")
            }
            if !framed { throw Finding("event \(seq) of run \(run) was altered (its columns differ from its hashed body)") }
            prev = stored
            prevBytes = digest
            events = seq
            firstAt = firstAt ?? at
            lastAt = at
            // Between the frame checked above: the event's `data`.
            let (start, end) = (prefix.count, body.utf8.count - suffix.count)
            var whole: [String: JSONValue] = [:]
            let read = text.withUTF8 { bytes in
                let data = UnsafeBufferPointer(rebasing: bytes[start..<end])
                // A place is an object of objects (from, to), an attempt may name its agent (an
                // array), a fork names its origin: read whole, and only these are.
                if kind == "run.place" || kind == "run.moved" || kind == "run.policies" || kind == "run.attempt" || kind == "run.fork" {
                    whole = (try? JSONValue.parse(Array(data)))?.objectValue ?? [:]
                }
                return readData(data, into: &values)
            }
            guard read else { throw Finding("event \(seq) of run \(run) was altered (its data is not a JSON object)") }
            try follow(Event(run: run, seq: seq, kind: kind, at: at, values: values), data: whole, call: call)
        }
        if let pending = pendingCheckpoint {
            throw Finding("checkpoint \(pending.seq) of run \(run) was saved with call \(pending.call) (event \(pending.event)), but that call never began")
        }
        if let resumed = pendingResumption { throw Finding("event \(resumed) of run \(run) resumes the run, but no attempt follows it") }
        head = prev
    }

    /// The run's own sequences, and the rows written once with an event, as each event comes
    /// (`data`: the whole of a place event's).
    mutating func follow(_ e: Event, data: [String: JSONValue], call: String?) throws {
        if let resumed = pendingResumption {
            // `startAttempt` records a resumption and the attempt it starts in one transaction.
            guard e.kind == "run.attempt" else {
                throw Finding("event \(resumed) of run \(run) resumes the run, but event \(e.seq) is not the attempt it starts")
            }
            pendingResumption = nil
        }
        if let pending = pendingCheckpoint {
            // `begin` saves the call's checkpoint and records the call (its start, or its
            // gate) in one transaction.
            guard e.kind == "call.begin" || e.kind == "call.gate", call.map(ExactString.init) == ExactString(pending.call),
                  try e.optionalInt(.checkpoint) == pending.seq else {
                throw Finding("checkpoint \(pending.seq) of run \(run) was saved with call \(pending.call) (event \(pending.event)), but event \(e.seq) is not that call's begin")
            }
            pendingCheckpoint = nil
        } else if e.kind == "call.begin" || e.kind == "call.gate", let seq = try e.optionalInt(.checkpoint), !copies.contains(where: { $0.prefixEnd < e.seq && e.seq <= $0.end }) {
            // A fork copies a call's later executions, but not the later checkpoints they were begun with.
            throw Finding("event \(e.seq) of run \(run) begins call \(call ?? "?") with checkpoint \(seq), which was not saved with it")
        }
        if let origin, e.seq == origin.seq + 1, try !(e.kind == "checkpoint.save" && e.optionalInt(.seq) == origin.checkpoint) {
            throw Finding("run \(run) is a fork of run \(origin.run) at checkpoint \(origin.checkpoint), but its event \(e.seq), where the history it copied ends, does not save that checkpoint")
        }
        switch e.kind {
        case "run.fork":
            // A run's first event; a fork of a fork copies its origin's just after its own.
            guard e.seq == forkEvents + 1 else {
                throw Finding("event \(e.seq) of run \(run) records a fork, which only a run's first event does")
            }
            guard let fork = ForkOrigin(data) else { throw e.invalid("origin") }
            forkEvents = e.seq
            copies.append((e.seq + fork.seq, e.seq + fork.events))
        case "run.attempt":
            let attempt = try e.int(.attempt)
            guard attempt == attempts + 1 else {
                throw Finding("event \(e.seq) of run \(run) starts attempt \(attempt) after attempt \(attempts) (attempts are counted one by one)")
            }
            attempts = attempt
            if let named = data["agent"] {
                guard case .array(let args) = named, !args.isEmpty, args.allSatisfy({ $0.stringValue != nil }) else { throw e.invalid("agent") }
                agent = named.canonical
            }
        case "run.resumed":
            guard Ledger.Resumption(rawValue: try e.string(.by)) != nil else { throw e.invalid(.by) }
            guard attempts > 0 else { throw Finding("event \(e.seq) of run \(run) resumes a run that never started") }
            pendingResumption = e.seq
        case "run.finish":
            finish = (e.at, try e.int(.exitStatus))
        case "run.place":
            guard place == nil else { throw Finding("event \(e.seq) of run \(run) records a first place for a run that had one (a move is recorded as run.moved)") }
            place = data
        case "run.moved":
            guard let current = place, data["from"].map({ $0.canonicalBytes }) == JSONValue.object(current).canonicalBytes else {
                throw Finding("event \(e.seq) of run \(run) moves the run from a place it was not in")
            }
            guard let to = data["to"]?.objectValue else { throw e.invalid("to") }
            place = to
        case "run.policies":
            guard place != nil, data["from"].map({ $0.canonicalBytes }) == place?["policies"]?.canonicalBytes else {
                throw Finding("event \(e.seq) of run \(run) changes the run's policies from ones it did not have")
            }
            guard let to = data["to"]?.stringValue else { throw e.invalid("to") }
            place?["policies"] = .string(to)
        case "checkpoint.save":
            try checkCheckpoint(e, call: call)
        case "journal.record":
            try checkJournalEntry(e)
        case "call.begin", "call.finish", "call.in-doubt", "call.resolve", "call.delivered", "call.gate", "call.approve", "call.deny":
            guard let call else { throw Finding("event \(e.seq) of run \(run) (\(e.kind)) names no call") }
            try follow(e, of: call)
        default:
            throw Finding("event \(e.seq) of run \(run) is of a kind this ward does not know (\(e.kind)), so it cannot vouch for what it changed")
        }
    }

    /// A checkpoint row never changes once saved: its label, call, size and state hash must
    /// be its event's, and its chunk list, rebuilt and read back, must make that state.
    mutating func checkCheckpoint(_ e: Event, call: String?) throws {
        let seq = try e.int(.seq), size = try e.int(.size), stateHash = try e.string(.stateHash), label = try e.optionalString(.label)
        guard seq == checkpoints + 1 else {
            throw Finding("event \(e.seq) of run \(run) saves checkpoint \(seq) after checkpoint \(checkpoints) (checkpoints are numbered one by one)")
        }
        checkpoints = seq
        // Where a fork's copied prefix ends, the checkpoint's call is not copied: the fork
        // makes it anew.
        if let call, !copies.contains(where: { $0.prefixEnd == e.seq }) { pendingCheckpoint = (e.seq, seq, call) }
        var name: String { "checkpoint \(seq) of run \(run)" }  // made for a finding only
        guard let row = try db.first("""
            SELECT label, call_id, size, state_hash, base_seq, keep, keep_tail, chunks, created_at FROM checkpoints WHERE run_id = ? AND seq = ?
            """, [.text(run), .int(seq)], { r in
                (label: r.isNull(0) ? SQLValue.null : r.text(0).sqlValue, call: r.isNull(1) ? SQLValue.null : r.text(1).sqlValue,
                 size: r.int(2), stateHash: r.text(3), base: r.optionalInt(4), keep: r.int(5), keepTail: r.int(6), chunks: r.blob(7), createdAt: r.value(8))
            }) else {
            throw Finding("\(name) was removed (its event \(e.seq) remains)")
        }
        var fields: [(String, SQLValue, SQLValue)] = [
            ("label", row.label, label.map(\.sqlValue) ?? .null), ("call", row.call, call.map(\.sqlValue) ?? .null),
            ("size", row.size.sqlValue, size.sqlValue), ("state hash", row.stateHash.sqlValue, stateHash.sqlValue),
        ]
        if exactTimes { fields.append(("time", row.createdAt, e.at.sqlValue)) }
        for (field, recorded, expected) in fields where !same(recorded, expected) {
            throw Finding("\(name) was altered: its \(field) is \(shown(recorded)) where its event (\(e.seq)) says \(shown(expected))")
        }
        // The chunk list as `loadManifest` builds it; ward's deltas are always on the checkpoint before.
        var damaged: Finding { Finding("\(name) was altered: its chunk list is damaged") }
        guard row.chunks.count % 32 == 0 else { throw damaged }
        if let base = row.base {
            // Compared without arithmetic that a hostile file's numbers could overflow.
            let kept = manifest.count / 32
            guard base == seq - 1, row.keep >= 0, row.keepTail >= 0, row.keep <= kept, row.keepTail <= kept - row.keep else { throw damaged }
            manifest = Array(manifest[..<(row.keep * 32)]) + row.chunks + Array(manifest[(manifest.count - row.keepTail * 32)...])
        } else {
            manifest = row.chunks
        }
        var hasher = SHA256()
        var bytes = 0
        var i = 0
        while i < manifest.count {
            guard let chunk = try db.first("SELECT data FROM blobs WHERE hash = ?", [.blob(Array(manifest[i..<(i + 32)]))], { $0.blob(0) }) else {
                throw Finding("a chunk of \(name) was removed")
            }
            hasher.update(data: chunk)
            bytes += chunk.count
            i += 32
        }
        guard bytes == size, isHex(of: hasher.finalize(), stateHash) else {
            throw Finding("\(name) was altered: its chunks do not make the state its event (\(e.seq)) recorded")
        }
    }

    /// A journal entry never changes once recorded: its value must hash to its event's.
    mutating func checkJournalEntry(_ e: Event) throws {
        let key = try e.string(.key), valueHash = try e.string(.valueHash)
        guard let (value, recordedAt) = try db.first("SELECT value, recorded_at FROM journal WHERE run_id = ? AND key = ?", [.text(run), .text(key)], {
            ($0.blob(0), $0.value(1))
        }) else {
            throw Finding("journal entry \(key) of run \(run) was removed")
        }
        if Digest.sha256Hex(value) != valueHash { throw Finding("journal entry \(key) of run \(run) was altered") }
        if exactTimes && !same(recordedAt, e.at.sqlValue) {
            // The row has the time of an earlier event of the key: this one records it again.
            try refuseJournalKeyRecordedTwice()
            throw Finding("journal entry \(key) of run \(run) was altered: its time is \(shown(recordedAt)) where its event (\(e.seq)) says \(e.at)")
        }
        journalEntries += 1
    }

    // MARK: - Forks

    /// A fork's first event, `run.fork`, read before the chain it starts.
    mutating func readFork() throws {
        guard let body = try db.first("SELECT body FROM events WHERE run_id = ? AND seq = 1 AND kind = 'run.fork'", [.text(run)], { $0.text(0) }) else { return }
        origin = (try? JSONValue.parse(body))?.objectValue?["data"]?.objectValue.flatMap(ForkOrigin.init)
    }

    /// A fork holds what it copied, and when its origin is in this ledger, its chain starts
    /// from the origin's event it names and its copies are the origin's events: the prefix
    /// one for one, then the later events of the calls begun in it, in order (the origin may
    /// have more: it went on after the fork). Compared where SQLite holds the rows.
    mutating func checkOrigin() throws {
        guard let fork = origin else { return }
        let name = "run \(run), a fork of run \(fork.run) at checkpoint \(fork.checkpoint),"
        if events < fork.events + 1 { throw Finding("\(name) holds \(events - 1) of the \(fork.events) events it copied") }
        guard try db.first("SELECT 1 FROM events WHERE run_id = ? LIMIT 1", [.text(fork.run)], { _ in true }) != nil else {
            note = "a fork of run \(fork.run), which is not in this ledger: what it copied was checked on its own"
            return
        }
        guard let hash = try db.first("SELECT hash FROM events WHERE run_id = ? AND seq = ?", [.text(fork.run), .int(fork.seq)], { $0.text(0) }), hash == fork.hash else {
            throw Finding("\(name) was made at event \(fork.seq) of run \(fork.run), which does not have the hash the fork records (one of the two was altered)")
        }
        let differs = """
            (o.k IS NULL OR f.kind != o.kind OR f.call_id IS DISTINCT FROM o.call_id OR f.at != o.at
             OR \(db.dialect.jsonIfValid("f.body", "data")) IS DISTINCT FROM o.data OR o.data IS NULL)
            """
        let data = "\(db.dialect.jsonIfValid("body", "data")) AS data"
        if let seq = try db.first("""
            WITH o AS (SELECT seq + 1 AS k, kind, call_id, at, \(data) FROM events WHERE run_id = ?2 AND seq <= ?3)
            SELECT f.seq FROM events f LEFT JOIN o ON o.k = f.seq WHERE f.run_id = ?1 AND f.seq BETWEEN 2 AND ?3 + 1 AND \(differs) ORDER BY f.seq LIMIT 1
            """, [.text(run), .text(fork.run), .int(fork.seq)], { $0.int(0) }) {
            throw Finding("\(name) differs from its origin at its event \(seq), the copy of event \(seq - 1) of run \(fork.run)")
        }
        if let seq = try db.first("""
            WITH o AS (SELECT row_number() OVER (ORDER BY seq) + ?3 + 1 AS k, seq, kind, call_id, at, \(data) FROM events
                       WHERE run_id = ?2 AND seq > ?3 AND substr(kind, 1, 5) = 'call.'
                         AND call_id IN (\(Ledger.callsBeforeForkPoint)))
            SELECT f.seq FROM events f LEFT JOIN o ON o.k = f.seq WHERE f.run_id = ?1 AND f.seq > ?3 + 1 AND f.seq <= ?4 + 1 AND \(differs)
            ORDER BY f.seq LIMIT 1
            """, [.text(run), .text(fork.run), .int(fork.seq), .int(fork.events)], { $0.int(0) }) {
            throw Finding("\(name) differs from its origin at its event \(seq), copied from the later history of the calls begun before the checkpoint")
        }
    }

    // MARK: - The run's own rows

    /// The `runs` row: the chain's length and head, and the fields set with events.
    func checkRunRecord() throws {
        guard let row = try db.row("""
            SELECT event_count, head_hash, created_at, updated_at, attempts, finished_at, exit_status\(forks ? ", origin_run, origin_seq" : "") FROM runs WHERE run_id = ?
            """, run) else {
            if events > 0 { throw Finding("run \(run) has events but no run record (it was removed)") }
            return
        }
        // Read as values, never converted: a hostile file's text in a number column is a
        // finding, not a trap.
        let count = (row["event_count"] as SQLValue).integer ?? -1
        if count > events {
            throw Finding("event \(events + 1)\(count > events + 1 ? "–\(count)" : "") of run \(run) was removed (the run records \(count) events)")
        }
        if count < events || !same(row["head_hash"], head.sqlValue) {
            throw Finding("event \(count + 1) of run \(run) was inserted, or the run's head was altered")
        }
        // `appendEvent` makes the run with its first event and stamps it with each.
        guard let firstAt, let lastAt else { throw Finding("run \(run) has no events (its record was inserted)") }
        let fields: [(String, String, SQLValue)] = [
            ("created_at", "creation time", firstAt.sqlValue), ("updated_at", "update time", lastAt.sqlValue),
            ("attempts", "attempt count", attempts.sqlValue),
            ("finished_at", "finish time", finish.map { $0.at.sqlValue } ?? .null),
            ("exit_status", "exit status", finish.map { $0.exitStatus.sqlValue } ?? .null),
        ]
        for (column, name, expected) in fields {
            let recorded: SQLValue = row[column]
            // An older ledger's finish time is its own clock reading: only its presence is held.
            if exactTimes || column != "finished_at" ? same(recorded, expected) : recorded.isNull == expected.isNull { continue }
            throw Finding("run \(run) was altered: its \(name) is \(shown(recorded)) where its events say \(shown(expected))")
        }
        if forks {
            let recorded: [SQLValue] = [row["origin_run"], row["origin_seq"]]
            let expected: [SQLValue] = [origin.map { $0.run.sqlValue } ?? .null, origin.map { $0.checkpoint.sqlValue } ?? .null]
            if !same(recorded[0], expected[0]) || !same(recorded[1], expected[1]) {
                throw Finding("run \(run) was altered: its origin is \(shown(recorded[0]))@\(shown(recorded[1])) where its events say \(shown(expected[0]))@\(shown(expected[1]))")
            }
        }
        // `RunPlace` refuses a row whose columns are not of these types: name the edit here.
        // (PostgreSQL's columns cannot hold another type.)
        guard try db.dialect == .postgres || db.int("""
            SELECT workspace IS NULL OR (typeof(workspace) = 'text' AND typeof(workspace_dev) = 'integer' AND typeof(workspace_ino) = 'integer'
                AND typeof(workspace_born) IN ('text', 'null') AND typeof(policies) IN ('text', 'null')) FROM runs WHERE run_id = ?
            """, run) == 1 else {
            throw Finding("the workspace or policies recorded for run \(run) were altered (they are not of the types ward records)")
        }
        // The place decides where reconcile looks for a call's effect: it must be the one the
        // events recorded.
        let recorded = try Ledger.place(db, run: run)?.json
        if recorded.map({ JSONValue.object($0).canonicalBytes }) != place.map({ JSONValue.object($0).canonicalBytes }) {
            throw Finding("the workspace or policies recorded for run \(run) were altered (they are not the ones its events recorded)")
        }
        // The agent decides which runs `ward run` offers to resume.
        let expected = agent.map(\.sqlValue) ?? .null
        if agents, let recorded = try db.first("SELECT agent FROM runs WHERE run_id = ?", [.text(run)], { $0.value(0) }), !same(recorded, expected) {
            throw Finding("run \(run) was altered: its agent is \(shown(recorded)) where its events say \(shown(expected))")
        }
    }

    /// Every journal event found its row; a row beyond them has no event, and two events of
    /// one key would be a first value replaced.
    func checkJournalRows() throws {
        // A scan of the run's events, made only when two of them could name one key.
        if journalEntries > 1 { try refuseJournalKeyRecordedTwice() }
        let rows = try db.int("SELECT COUNT(*) FROM journal WHERE run_id = ?", run) ?? 0
        if rows > journalEntries {
            let key = try db.text("""
                SELECT key FROM journal WHERE run_id = ?
                EXCEPT SELECT \(db.dialect.jsonIfValid("body", "data", "key")) FROM events WHERE run_id = ? AND kind = 'journal.record'
                ORDER BY 1 LIMIT 1
                """, run, run)
            throw Finding("journal entry \(key ?? "?") of run \(run) has no event (it was inserted)")
        }
    }

    func refuseJournalKeyRecordedTwice() throws {
        if let key = try db.text("""
            SELECT k FROM (SELECT \(db.dialect.jsonIfValid("body", "data", "key")) AS k FROM events WHERE run_id = ? AND kind = 'journal.record') AS j
            GROUP BY k HAVING COUNT(*) > 1 LIMIT 1
            """, run) {
            throw Finding("journal entry \(key) of run \(run) is recorded by two events (the first value recorded is the only one)")
        }
    }

    /// Every checkpoint event found its row (numbered 1…n); any other row has no event.
    func checkCheckpointRows() throws {
        if let seq = try db.int("SELECT seq FROM checkpoints WHERE run_id = ? AND (seq < 1 OR seq > ?) ORDER BY seq LIMIT 1", run, checkpoints) {
            throw Finding("checkpoint \(seq) of run \(run) has no event (it was inserted)")
        }
    }

    // MARK: - Calls

    /// A call's event: replayed on the call's state; once the call has ended (finished, or
    /// resolved executed: nothing may follow), its row is checked and only its end is kept.
    mutating func follow(_ e: Event, of id: String) throws {
        let key = CallKey(id)
        if e.kind == "call.delivered" {
            // Only after the answer it marks exists, and once per execution that awaits it.
            guard var end = ended[key], end.delivery == .awaited else {
                let what = ended[key] == nil ? "before the call had an answer" : "of an answer that was not awaited or was delivered already"
                throw Finding("call \(id) of run \(run): event \(e.seq) records the delivery \(what)")
            }
            end.delivery = .delivered
            ended[key] = end
            return
        }
        var call: CallReplay
        if let open = open.removeValue(forKey: key) {
            call = open
        } else if let end = ended[key] {
            // Anything after a call's end is a finding: replay it on what the end was.
            call = CallReplay(id: id)
            call.state = end.state
            call.execution = end.execution
            call.delivery = end.delivery
        } else {
            call = CallReplay(id: id)
        }
        try replay(e, into: &call)
        if let state = call.state, state.isSettled {
            try checkRow(call)
            ended[key] = (state, call.execution, call.delivery)
        } else {
            open[key] = call
        }
    }

    /// The calls still open at the end of the chain (running, in doubt, resolved
    /// not-executed) are checked; a row with no events at all was inserted.
    mutating func checkOpenCalls() throws {
        for call in open.values.sorted(by: { $0.lastEvent < $1.lastEvent }) { try checkRow(call) }
        let rows = try db.int("SELECT COUNT(*) FROM calls WHERE run_id = ?", run) ?? 0
        if rows > open.count + ended.count {
            let id = try db.text("""
                SELECT call_id FROM calls WHERE run_id = ? EXCEPT SELECT call_id FROM events WHERE run_id = ? AND call_id IS NOT NULL ORDER BY 1 LIMIT 1
                """, run, run)
            throw Finding("call \(id ?? "?") of run \(run) has no events (it was inserted)")
        }
    }

    /// Each call's `delivered` column must be what its events say: a forged 1 would let a
    /// host's repeat of a call whose answer it never read run the tool again. Checked once
    /// the chain is read (a delivery comes after the row was checked at the call's end).
    mutating func checkDeliveries() throws {
        var expected: [CallKey: (id: String, delivery: ExpectedDelivery)] = [:]
        for (key, call) in open where call.delivery != .none { expected[key] = (call.id, call.delivery) }
        var seen = Set<CallKey>()
        try db.each("SELECT call_id, delivered FROM calls WHERE run_id = ? AND delivered IS NOT NULL", [.text(run)]) { r in
            let id = r.text(0)
            let key = CallKey(id)
            let want = expected[key]?.delivery ?? ended[key]?.delivery ?? ExpectedDelivery.none
            let recorded = r.value(1)
            guard want.holds(recorded) else {
                throw Finding("call \(id) of run \(run) was altered: its delivery is \(shown(recorded)) where its events say \(want.shown)")
            }
            seen.insert(key)
        }
        // A row whose delivery was cleared (NULL) while its events await one.
        let awaited = expected.count + ended.values.count { $0.delivery != .none }
        if seen.count < awaited {
            let cleared = try db.all("SELECT call_id FROM calls WHERE run_id = ? AND delivered IS NULL", [.text(run)]) { $0.text(0) }
            let missing = expected.first { !seen.contains($0.key) }?.value.id
                ?? cleared.first { ended[CallKey($0)].map { $0.delivery != .none } == true } ?? "?"
            throw Finding("call \(missing) of run \(run) was altered: its delivery is none where its events say otherwise")
        }
    }

    /// Applies one event to a call as ward's writer would have, refusing what it never does.
    mutating func replay(_ e: Event, into call: inout CallReplay) throws {
        let run = run  // a copy: the names below are made while self is being changed
        var name: String { "call \(call.id) of run \(run)" }  // made for a finding only
        switch e.kind {
        case "call.begin":
            let execution = try e.int(.execution), tool = try e.string(.tool), effect = try e.string(.effect), argsHash = try e.string(.argsHash)
            let attempt = try e.int(.attempt), owner = try e.string(.owner)
            // Every begin names the hashes its row records (its first, `insert`, sets them).
            _ = (try e.string(.policyHash), try e.string(.binaryHash))
            guard CallEffect(rawValue: effect) != nil else { throw e.invalid(.effect) }
            if call.state == nil {
                guard execution == 1 else { throw Finding("\(name): event \(e.seq) begins execution \(execution), but no execution began before it") }
                try Self.insert(e, into: &call, state: .running, execution: 1)
                call.row[.owner] = owner.sqlValue
                break
            }
            guard execution == call.execution + 1 else {
                throw Finding("\(name): event \(e.seq) begins execution \(execution) after execution \(call.execution) (executions are numbered one by one)")
            }
            // Only where `begin` runs a call again (`CallState.mayRunAgain`): an idempotent or
            // read-only call whose process died, run again as it is, or a not-executed verdict.
            let recordedEffect = call.first.flatMap { CallEffect(rawValue: $0.effect) } ?? .nonIdempotent
            guard let state = call.state, state.mayRunAgain(effect: recordedEffect) else {
                switch call.state {
                case .finished?:
                    throw Finding("\(name): execution \(execution) began after execution \(call.execution) finished (a finished call is replayed, never run again)")
                case .resolved?:
                    throw Finding("\(name): execution \(execution) began after execution \(call.execution) was resolved as executed")
                default:
                    throw Finding("\(name): execution \(execution) began without a not-executed verdict after execution \(call.execution)")
                }
            }
            // What `begin` clears for the next execution (still clear on a call that was running).
            for field in [Field.verdict, .note, .stdout, .stderr, .exitCode, .signal, .finishedAt] { call.row[field] = .null }
            call.row[.status] = CallStatus.running.rawValue.sqlValue
            // `begin` refuses another tool or other arguments under the same call ID.
            guard let first = call.first, sameBytes(first.tool, tool), sameBytes(first.argsHash, argsHash) else {
                throw Finding("\(name): execution \(execution) began (event \(e.seq)) with another tool or other arguments than execution 1")
            }
            call.row[.executions] = execution.sqlValue
            call.row[.owner] = owner.sqlValue
            call.row[.attempt] = attempt.sqlValue
            call.row[.startedAt] = e.at.sqlValue
            call.state = .running
            call.execution = execution
            if try e.has(.delivery) && e.bool(.delivery) { call.delivery = .awaited }
        case "call.gate":
            // A gate is a call's first record, as `begin` writes it for a gated tool.
            guard call.state == nil else { throw Finding("\(name): event \(e.seq) gates it, but it \(was(call.state))") }
            try Self.insert(e, into: &call, state: .awaitingApproval, execution: 0)
        case "call.approve", "call.deny":
            guard call.state == .awaitingApproval else {
                throw Finding("\(name): event \(e.seq) \(e.kind == "call.approve" ? "approves" : "denies") it, but it \(was(call.state)), not awaiting approval")
            }
            _ = try e.string(.by)  // who gave the verdict: shown by the audits from this event
            _ = try e.int(.uid)
            let note = try e.string(.note)
            if e.kind == "call.approve" {
                call.row[.status] = CallStatus.approved.rawValue.sqlValue
                call.state = .approved
                break
            }
            // Denied: ended with the note as its stderr, as `settleApproval` records it.
            let stderr = try e.hash(.stderr)
            guard Digest.sha256(Array(note.utf8)) == stderr else { throw e.invalid(.stderr) }
            call.row[.status] = CallStatus.denied.rawValue.sqlValue
            call.row[.stdout] = SQLValue.blob(Digest.sha256([]))
            call.row[.stderr] = SQLValue.blob(stderr)
            call.row[.exitCode] = .null
            call.row[.signal] = .null
            call.row[.truncated] = 0.sqlValue
            call.row[.duration] = 0.0.sqlValue
            call.row[.finishedAt] = e.at.sqlValue
            call.state = .finished(.denied)
        case "call.finish":
            let execution = try e.int(.execution)
            guard call.state == .running, execution == call.execution else {
                throw Finding(call.state == nil || execution > call.execution
                    ? "\(name): event \(e.seq) finishes execution \(execution), which never began"
                    : execution < call.execution
                    ? "\(name): event \(e.seq) finishes execution \(execution), which execution \(call.execution) had replaced"
                    : "\(name): event \(e.seq) finishes execution \(execution), which \(was(call.state))")
            }
            let status = try e.string(.status)
            guard let outcome = CallStatus(rawValue: status), CallState.outcomes.contains(outcome) else { throw e.invalid(.status) }
            call.row[.status] = status.sqlValue
            call.row[.exitCode] = try e.optionalInt(.exitCode)?.sqlValue ?? .null
            call.row[.signal] = try e.optionalInt(.signal)?.sqlValue ?? .null
            call.row[.stdout] = SQLValue.blob(try e.hash(.stdout))
            call.row[.stderr] = SQLValue.blob(try e.hash(.stderr))
            call.row[.truncated] = (try e.bool(.truncated) ? 1 : 0).sqlValue
            call.row[.duration] = try e.number(.durationMs).sqlValue
            call.row[.owner] = .null
            call.row[.finishedAt] = e.at.sqlValue
            call.state = .finished(outcome)
        case "call.in-doubt":
            guard call.state == .running else { throw Finding("\(name): event \(e.seq) puts it in doubt, but it \(was(call.state))") }
            // What the operator settles it on: the output captured before the crash.
            for (stream, member) in [("stdout", Member.stdoutSoFar), ("stderr", .stderrSoFar)] where e.has(member) {
                try checkBlob(try e.hash(member), "the \(stream) captured of \(name) before it was in doubt (event \(e.seq))")
            }
            call.row[.status] = CallStatus.inDoubt.rawValue.sqlValue
            call.row[.owner] = .null
            call.state = .inDoubt
        case "call.resolve":
            guard call.state == .inDoubt else { throw Finding("\(name): event \(e.seq) resolves it, but it \(was(call.state)), not in doubt") }
            let verdict = try e.string(.verdict), note = try e.string(.note)
            guard let settled = Resolution.Verdict(rawValue: verdict) else { throw e.invalid(.verdict) }
            _ = try e.string(.by)  // who settled it: replayed results read it from this event
            call.row[.status] = CallStatus.resolved.rawValue.sqlValue
            call.row[.verdict] = verdict.sqlValue
            call.row[.note] = note.sqlValue
            call.row[.stdout] = SQLValue.blob(try e.hash(.stdout))
            call.row[.stderr] = SQLValue.blob(Digest.sha256([]))
            call.row[.exitCode] = .null
            call.row[.signal] = .null
            call.row[.truncated] = 0.sqlValue
            call.row[.owner] = .null
            call.row[.finishedAt] = e.at.sqlValue
            call.state = .resolved(settled)
        default:
            throw Finding("event \(e.seq) of run \(run) is of a kind this ward does not know (\(e.kind))")
        }
        call.lastEvent = e.seq
    }

    /// A call's first record (its begin, or its gate): the row `begin` inserts, with the
    /// tool, effect and arguments no later execution changes.
    static func insert(_ e: Event, into call: inout CallReplay, state: CallState, execution: Int) throws {
        let tool = try e.string(.tool), effect = try e.string(.effect), argsHash = try e.string(.argsHash)
        guard CallEffect(rawValue: effect) != nil else { throw e.invalid(.effect) }
        call.first = (tool, effect, argsHash)
        call.row[.tool] = tool.sqlValue
        call.row[.effect] = effect.sqlValue
        call.row[.argsHash] = argsHash.sqlValue
        call.row[.policyHash] = try e.string(.policyHash).sqlValue
        call.row[.binaryHash] = try e.string(.binaryHash).sqlValue
        call.row[.status] = state.status.rawValue.sqlValue
        call.row[.attempt] = try e.int(.attempt).sqlValue
        call.row[.executions] = execution.sqlValue
        call.row[.startedAt] = e.at.sqlValue
        call.state = state
        call.execution = execution
        call.delivery = try e.has(.delivery) && e.bool(.delivery) ? .awaited : .none
    }

    /// The call's row must be the one its events leave, and its outputs the blobs they name.
    static let rowSQL = "SELECT \(Field.allCases.map(\.column).joined(separator: ", ")), args FROM calls WHERE run_id = ? AND call_id = ?"

    mutating func checkRow(_ call: CallReplay) throws {
        let run = run  // a copy: the names below are made while self is being changed
        var name: String { "call \(call.id) of run \(run)" }  // made for a finding only
        let exactTimes = exactTimes
        // Compared where SQLite holds the row: values are made only for a finding.
        let args = Int32(Field.allCases.count)
        guard let (mismatch, argsHash) = try db.first(Self.rowSQL, [.text(run), .text(call.id)], { r in
            (Field.allCases.first { field in
                let i = Int32(field.rawValue)
                // An older ledger's times are its rows' own clock readings: there only
                // whether the call has finished is held to its events.
                if !exactTimes && Field.times.contains(field) { return field == .finishedAt && r.isNull(i) != call.row[field].isNull }
                return !r.holds(call.row[field], at: i)
            }.map { ($0, r.value(Int32($0.rawValue))) },
             r.withBytes(args) { SHA256.hash(data: $0) })
        }) else {
            throw Finding("\(name) was removed (its events remain)")
        }
        if let (field, recorded) = mismatch {
            throw Finding("\(name) was altered: its \(field.name) is \(shown(recorded)) where its events say \(shown(call.row[field])) (event \(call.lastEvent))")
        }
        guard case .text(let recordedHash) = call.row[.argsHash], isHex(of: argsHash, recordedHash) else {
            throw Finding("\(name) was altered: its arguments do not match their hash")
        }
        for (stream, value) in [("stdout", call.row[.stdout]), ("stderr", call.row[.stderr])] where !value.isNull {
            try checkBlob(value.bytes, "the recorded \(stream) of \(name)")
        }
    }

    /// A blob must be there and be the bytes its hash names. Many calls share one (the empty
    /// stderr): a few thousand checked ones are remembered, then forgotten at once.
    mutating func checkBlob(_ hash: [UInt8], _ what: @autoclosure () -> String) throws {
        let key = BlobKey(hash)
        if checkedBlobs.contains(key) { return }
        guard let (size, data) = try db.first("SELECT size, data FROM blobs WHERE hash = ?", [.blob(hash)], { ($0.int(0), $0.blob(1)) }) else {
            throw Finding("\(what()) was removed")
        }
        if size != data.count || Digest.sha256(data) != hash { throw Finding("\(what()) was altered") }
        if checkedBlobs.count >= 4096 { checkedBlobs.removeAll(keepingCapacity: true) }
        checkedBlobs.insert(key)
    }
}

/// A blob's hash by its first 16 bytes, as a set of checked blobs keeps it.
private struct BlobKey: Hashable {
    var high: UInt64
    var low: UInt64

    init(_ hash: [UInt8]) {
        high = hash.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
        low = hash.dropFirst(8).prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }
}

/// Equal as stored: text byte for byte, numbers by value.
private func same(_ a: SQLValue, _ b: SQLValue) -> Bool { a.same(as: b) }

/// Appends the canonical JSON of a string: quoted as it is when nothing in it needs escaping
/// (the common case, a timestamp or a kind), else as `JSONValue` writes it.
private func appendJSON(_ text: String, to bytes: inout [UInt8]) {
    var text = text
    let plain = text.withUTF8 { b in b.allSatisfy { $0 >= 0x20 && $0 != UInt8(ascii: "\"") && $0 != UInt8(ascii: "\\") && $0 != 0x7F } }
    if plain {
        bytes.append(UInt8(ascii: "\""))
        bytes += text.utf8
        bytes.append(UInt8(ascii: "\""))
    } else {
        bytes += JSONValue.string(text).canonicalBytes
    }
}

/// Whether `hex` is the lowercase hex of `bytes`, as `Digest.hex` writes it (compared
/// without making either: once or twice per event).
private func isHex(of bytes: some Sequence<UInt8>, _ hex: String) -> Bool {
    var hex = hex
    return hex.withUTF8 { text in
        var i = 0
        for byte in bytes {
            guard i + 1 < text.count, text[i] == hexDigits[Int(byte >> 4)], text[i + 1] == hexDigits[Int(byte & 15)] else { return false }
            i += 2
        }
        return i == text.count
    }
}

private let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

/// A column's value in a finding.
private func shown(_ value: SQLValue) -> String { value.description }
