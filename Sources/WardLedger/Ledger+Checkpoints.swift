import WardCore

/// Content-defined chunking (a gear rolling hash with FastCDC's normalized cut points):
/// boundaries follow the content, so an edit or an append changes only the chunks around
/// it, and every unchanged chunk of a state is stored once however many checkpoints hold it.
/// Small chunks (64–512 bytes, ~256 on average) because the chunk that ends a state is
/// stored again at every append: with 200 appends of 1 KiB, 64/256/512 stores 1.34× the
/// final state, 128/512/1024 2.0×, 128/512/4096 3.1× (measured on repetitive JSON).
enum Chunker {
    static let minimum = 64
    static let average = 256
    static let maximum = 512
    // Harder to cut before the average size, easier after (normalized chunking).
    static let maskSmall: UInt64 = 0x0000_AAAA_A000_0000  // 10 bits: harder to cut before the average
    static let maskLarge: UInt64 = 0x0000_9249_0000_0000  // 6 bits: easier after it

    static let gear: [UInt64] = {
        var table = [UInt64](repeating: 0, count: 256)
        var x: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<256 {
            // splitmix64: a fixed, well-mixed table (boundaries must be stable forever).
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            table[i] = z ^ (z >> 31)
        }
        return table
    }()

    /// The chunk boundaries of `bytes` as ranges.
    static func chunks(_ bytes: [UInt8]) -> [Range<Int>] {
        var out: [Range<Int>] = []
        var start = 0
        while start < bytes.count {
            let end = cut(bytes, from: start)
            out.append(start..<end)
            start = end
        }
        return out
    }

    private static func cut(_ bytes: [UInt8], from start: Int) -> Int {
        let remaining = bytes.count - start
        if remaining <= minimum { return bytes.count }
        let limit = start + min(remaining, maximum)
        let normal = start + min(remaining, average)
        var hash: UInt64 = 0
        var i = start + minimum
        while i < normal {
            hash = (hash << 1) &+ gear[Int(bytes[i])]
            if hash & maskSmall == 0 { return i + 1 }
            i += 1
        }
        while i < limit {
            hash = (hash << 1) &+ gear[Int(bytes[i])]
            if hash & maskLarge == 0 { return i + 1 }
            i += 1
        }
        return limit
    }
}

/// The last manifest (chunk hash list) of each run, so a checkpoint is stored as a delta
/// against its predecessor without reading it back.
///
/// An entry describes a checkpoint as it was committed, never one still inside a
/// transaction: a transaction that fails (a full disk) must leave nothing behind that a
/// later save would build on. And an entry is trusted only while nothing else has written
/// the ledger (`dataVersion`): another process may have stored checkpoints of the run
/// meanwhile, or edited them.
final class ManifestCache: Sendable {
    struct Entry {
        var seq: Int
        var hashes: [[UInt8]]
        var chainLength: Int
        var chainBytes: Int
        /// The checkpoint's `state_hash`, checked against its row.
        var stateHash: String
        /// `PRAGMA data_version` of the writer inside the transaction that stored it: the
        /// same value later means no other connection has committed since.
        var dataVersion: Int
    }
    private let entries = Lock<[String: Entry]>([:])

    func get(_ run: String) -> Entry? { entries.withLock { $0[run] } }

    /// Called once the transaction that stored `entry` has committed. Two saves of a run
    /// commit in order but may get here in either: the later checkpoint is kept.
    func committed(_ run: String, _ entry: Entry) {
        entries.withLock { entries in
            if let held = entries[run], held.seq > entry.seq { return }
            entries[run] = entry
        }
    }
}

/// A checkpoint that cannot be loaded: its chunk list (or one it is a delta against) is
/// damaged, a chunk is missing, or its state does not match its recorded hash.
public struct DamagedCheckpoint: Sendable, Equatable {
    public var seq: Int
    public var problem: String

    public var json: JSONValue { .object(["seq": .number(Double(seq)), "problem": .string(problem)]) }
}

extension Ledger {
    /// A keyframe (the full manifest) at least every this many checkpoints, so loading any
    /// checkpoint reads a bounded number of rows.
    static let keyframeInterval = 32

    /// Saves the agent's state under the next sequence number of `run`.
    public func saveCheckpoint(run: String, state: [UInt8], label: String? = nil) throws(LedgerError) -> Int {
        let stored = try write("saving a checkpoint of run \(run)", run: run) { db in
            try self.storeCheckpoint(db, run: run, state: state, label: label, callId: nil)
        }
        manifests.committed(run, stored.manifest)
        return stored.seq
    }

    /// What `storeCheckpoint` wrote; the caller hands `manifest` to the cache once the
    /// transaction has committed.
    struct StoredCheckpoint {
        var seq: Int
        var manifest: ManifestCache.Entry
    }

    /// Stores a checkpoint inside the caller's transaction (with a call's `running` record).
    func storeCheckpoint(_ db: any SQLConnection, run: String, state: [UInt8], label: String?, callId: String?, at now: String = Timestamp.now()) throws -> StoredCheckpoint {
        let latest = try db.first("SELECT seq, state_hash FROM checkpoints WHERE run_id = ? ORDER BY seq DESC LIMIT 1", [.text(run)]) {
            (seq: $0.int(0), stateHash: $0.text(1))
        }
        let seq = (latest?.seq ?? 0) + 1
        // A server's ledger has no such counter: there every save reads its base anew.
        let dataVersion = db.dialect == .sqlite ? try db.first("PRAGMA data_version") { $0.int(0) } ?? -1 : -1
        let hashes = try putBlobs(db, Chunker.chunks(state).map { Array(state[$0]) })
        var previous: ManifestCache.Entry?
        if let latest {
            if let cached = manifests.get(run), cached.seq == latest.seq, cached.stateHash == latest.stateHash, dataVersion >= 0, cached.dataVersion == dataVersion {
                previous = cached
            } else {
                do {
                    previous = try loadManifest(db, run: run, seq: latest.seq).map {
                        ManifestCache.Entry(seq: latest.seq, hashes: $0.0, chainLength: $0.1, chainBytes: $0.2, stateHash: latest.stateHash,
                                            dataVersion: dataVersion)
                    }
                } catch let error as LedgerError where error.code == .corrupt {
                    // A damaged predecessor is no base: this checkpoint is stored whole (a
                    // keyframe), so the run's later checkpoints load again.
                    try recordDamage(db, run: run, [DamagedCheckpoint(seq: latest.seq, problem: error.message)])
                }
            }
        }
        // Delta against the previous checkpoint: its first `keep` and last `keepTail` chunks.
        var keep = 0, keepTail = 0
        if let previous {
            let old = previous.hashes
            while keep < old.count && keep < hashes.count && old[keep] == hashes[keep] { keep += 1 }
            while keepTail < old.count - keep && keepTail < hashes.count - keep
                    && old[old.count - 1 - keepTail] == hashes[hashes.count - 1 - keepTail] { keepTail += 1 }
        }
        let fresh = hashes[keep..<(hashes.count - keepTail)].flatMap { $0 }
        // Chunks are written, the checkpoint row is not: a crash here rolls both back.
        if FailPoints.hit(.inCheckpoint) { throw LedgerError(.storage, "fail point in-checkpoint") }
        let chainLength = (previous?.chainLength ?? 0) + 1
        let chainBytes = (previous?.chainBytes ?? 0) + fresh.count
        let keyframe = previous == nil || chainLength >= Ledger.keyframeInterval || chainBytes >= hashes.count * 32
        let stored: [UInt8] = keyframe ? hashes.flatMap { $0 } : fresh
        let stateHash = Digest.sha256Hex(state)
        try db.run("""
            INSERT INTO checkpoints (run_id, seq, label, call_id, created_at, size, state_hash, base_seq, keep, keep_tail, chunks)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """, [.text(run), .int(seq), SQLValue(label), SQLValue(callId), .text(now), .int(state.count), .text(stateHash),
                  keyframe ? .null : .int(seq - 1), .int(keyframe ? 0 : keep), .int(keyframe ? 0 : keepTail), .blob(stored)])
        var data: [String: JSONValue] = ["seq": .number(Double(seq)), "size": .number(Double(state.count)), "stateHash": .string(stateHash)]
        if let label { data["label"] = .string(label) }
        try appendEvent(db, run: run, kind: "checkpoint.save", call: callId, data: data, at: now)
        return StoredCheckpoint(seq: seq, manifest: ManifestCache.Entry(
            seq: seq, hashes: hashes, chainLength: keyframe ? 0 : chainLength, chainBytes: keyframe ? 0 : chainBytes,
            stateHash: stateHash, dataVersion: dataVersion))
    }

    /// The chunk hashes of a checkpoint, with the length and byte size of its delta chain;
    /// nil when there is no such checkpoint.
    ///
    /// - Throws: `corrupt` when its chunk list, or one in its chain, cannot be decoded. The
    ///   rows may have been edited by hand: no value in them may trap or loop.
    func loadManifest(_ db: any SQLConnection, run: String, seq: Int) throws -> ([[UInt8]], Int, Int)? {
        var rows: [(seq: Int, keep: Int, keepTail: Int, chunks: [UInt8], keyframe: Bool)] = []
        var current: Int? = seq
        func damaged(_ at: Int, _ why: String) -> LedgerError {
            LedgerError(.corrupt, "the chunk list of checkpoint \(at) of run \(run) is damaged (\(why))\(at == seq ? "" : ", and checkpoint \(seq) is stored against it")")
        }
        while let s = current {
            guard let row = try db.row("SELECT base_seq, keep, keep_tail, chunks FROM checkpoints WHERE run_id = ? AND seq = ?", run, s) else {
                if rows.isEmpty { return nil }
                throw LedgerError(.corrupt, "checkpoint \(s) of run \(run) is missing (needed by checkpoint \(seq))")
            }
            // Read as stored values: a hostile SQLite file's column may hold text (keep = 'x').
            let chunks: SQLValue = row["chunks"], baseValue: SQLValue = row["base_seq"]
            guard let keep = (row["keep"] as SQLValue).integer, let keepTail = (row["keep_tail"] as SQLValue).integer,
                  baseValue.isNull || baseValue.integer != nil else { throw damaged(s, "a number in it is not a number") }
            let base = baseValue.integer
            // A base at or after its own checkpoint would make the chain a loop.
            if let base, base >= s { throw damaged(s, "it is stored against checkpoint \(base)") }
            rows.append((s, keep, keepTail, chunks.bytes, base == nil))
            current = base
        }
        var hashes: [[UInt8]] = []
        var chainBytes = 0
        for (index, row) in rows.reversed().enumerated() {
            guard row.chunks.count % 32 == 0 else { throw damaged(row.seq, "\(row.chunks.count) bytes is not a list of hashes") }
            guard row.keyframe || (row.keep >= 0 && row.keepTail >= 0 && row.keep <= hashes.count - row.keepTail) else {
                throw damaged(row.seq, "it keeps \(row.keep) + \(row.keepTail) chunks of a checkpoint of \(hashes.count)")
            }
            var fresh: [[UInt8]] = []
            var i = 0
            while i < row.chunks.count {
                fresh.append(Array(row.chunks[i..<i + 32]))
                i += 32
            }
            if row.keyframe {
                hashes = fresh
            } else {
                hashes = Array(hashes[0..<row.keep]) + fresh + Array(hashes[(hashes.count - row.keepTail)...])
            }
            if index > 0 { chainBytes += row.chunks.count }
        }
        return (hashes, rows.count - 1, chainBytes)
    }

    /// The state of checkpoint `seq` of `run`, checked against its recorded hash; nil when
    /// there is no such checkpoint. Throws `corrupt` when it cannot be loaded.
    func loadState(_ db: any SQLConnection, run: String, seq: Int) throws -> [UInt8]? {
        guard let row = try db.row("SELECT state_hash FROM checkpoints WHERE run_id = ? AND seq = ?", run, seq),
              let (hashes, _, _) = try loadManifest(db, run: run, seq: seq) else { return nil }
        var state: [UInt8] = []
        for hash in hashes {
            guard let chunk = try blob(db, hash) else {
                throw LedgerError(.corrupt, "a chunk of checkpoint \(seq) of run \(run) is missing")
            }
            state += chunk
        }
        guard Array(Digest.sha256Hex(state).utf8) == (row["state_hash"] as SQLValue).bytes else {
            throw LedgerError(.corrupt, "checkpoint \(seq) of run \(run) does not match its recorded hash")
        }
        return state
    }

    /// A checkpoint of `run`: the given sequence number, or the latest.
    ///
    /// - Throws: `corrupt` when that checkpoint is damaged (audits show it as it is; a
    ///   supervisor uses `loadUsableCheckpoint`, which skips it).
    public func loadCheckpoint(run: String, seq: Int? = nil) throws(LedgerError) -> (seq: Int, state: [UInt8])? {
        try read("loading a checkpoint of run \(run)") { db -> (Int, [UInt8])? in
            guard let target = try seq ?? db.int("SELECT MAX(seq) FROM checkpoints WHERE run_id = ?", run),
                  let state = try self.loadState(db, run: run, seq: target) else { return nil }
            return (target, state)
        }
    }

    /// The checkpoint an agent resumes from: `seq` (the latest when nil), or when that one is
    /// damaged the last one before it that loads. A damaged checkpoint never wedges a run:
    /// each one skipped is returned in `damaged` and recorded once as a `checkpoint.damaged`
    /// event (when the ledger is writable; a failure to record it fails nothing).
    public func loadUsableCheckpoint(run: String, seq: Int? = nil) throws(LedgerError)
        -> (checkpoint: (seq: Int, state: [UInt8], callId: String?)?, damaged: [DamagedCheckpoint]) {
        let (found, damaged) = try read("loading a checkpoint of run \(run)") { db -> ((Int, [UInt8], String?)?, [DamagedCheckpoint]) in
            var damaged: [DamagedCheckpoint] = []
            var target = try seq ?? db.int("SELECT MAX(seq) FROM checkpoints WHERE run_id = ?", run)
            while let t = target {
                do {
                    guard let state = try self.loadState(db, run: run, seq: t) else { break }  // no such checkpoint
                    // The call it was handed in with: the state is the one before that call.
                    let callId = try db.text("SELECT call_id FROM checkpoints WHERE run_id = ? AND seq = ?", run, t)
                    return ((t, state, callId), damaged)
                } catch let error as LedgerError where error.code == .corrupt {
                    damaged.append(DamagedCheckpoint(seq: t, problem: error.message))
                }
                target = try db.int("SELECT MAX(seq) FROM checkpoints WHERE run_id = ? AND seq < ?", run, t)
            }
            return (nil, damaged)
        }
        let unreported = damaged.filter { d in !reportedDamage.withLock { $0.contains(DamageKey(run: run, seq: d.seq)) } }
        if !unreported.isEmpty && !store.readOnly,
           let reported = try? write("recording damaged checkpoints of run \(run)", run: run, { db in try self.recordDamage(db, run: run, unreported) }) {
            // Remembered once committed, so the next load does not look for the events again.
            reportedDamage.withLock { $0.formUnion(reported.map { DamageKey(run: run, seq: $0) }) }
        }
        return (found, damaged)
    }

    struct DamageKey: Hashable {
        var run: String
        var seq: Int
    }

    /// Appends a `checkpoint.damaged` event for each of `damaged` that has none yet, inside
    /// the caller's transaction; returns every damaged checkpoint of the run now reported.
    @discardableResult
    func recordDamage(_ db: any SQLConnection, run: String, _ damaged: [DamagedCheckpoint]) throws -> Set<Int> {
        var reported = Set<Int>()
        for body in try db.texts("SELECT body FROM events WHERE run_id = ? AND kind = 'checkpoint.damaged'", run) {
            if let seq = (try? JSONValue.parse(body))?.objectValue?["data"]?.objectValue?["seq"]?.integer(Int.self) { reported.insert(seq) }
        }
        for d in damaged where !reported.contains(d.seq) {
            try appendEvent(db, run: run, kind: "checkpoint.damaged", data: ["seq": .number(Double(d.seq)), "problem": .string(d.problem)])
            reported.insert(d.seq)
        }
        return reported
    }

    // MARK: - Journal

    /// The value recorded under `key`, if any (records nothing).
    public func journalLookup(run: String, key: String) throws(LedgerError) -> JSONValue? {
        try lookup("reading journal entry \(key)") { db in
            guard let text = try db.text("SELECT value FROM journal WHERE run_id = ? AND key = ?", run, key) else { return nil }
            guard let value = try? JSONValue.parse(text) else { throw LedgerError(.corrupt, "journal entry \(key) of run \(run) is not valid JSON") }
            return value
        }
    }

    /// Records `value` under `key` unless a value is recorded already; returns the recorded
    /// value and whether this call recorded it. First value wins, forever.
    public func journalRecord(run: String, key: String, value: JSONValue) throws(LedgerError) -> (value: JSONValue, recorded: Bool) {
        let text = value.canonical
        let event: [String: JSONValue] = ["key": .string(key), "valueHash": .string(Digest.sha256Hex(text.utf8))]
        func parsed(_ existing: String) throws(LedgerError) -> JSONValue {
            guard let parsed = try? JSONValue.parse(existing) else { throw LedgerError(.corrupt, "journal entry \(key) of run \(run) is not valid JSON") }
            return parsed
        }
        if let server = store as? PostgresStore {
            // The durable step in one round trip: the same insert, rule and event as the
            // transaction below, in one statement.
            let now = Timestamp.now()
            let written: JournalWrite
            do {
                written = try server.journalRecord(run: run, key: key, value: text, at: now,
                                                   event: Ledger.openEventBody(run: run, at: now, kind: "journal.record", call: nil, data: event))
            } catch {
                throw Ledger.map(error, doing: "recording journal entry \(key)")
            }
            switch written {
            case .recorded: return (value, true)
            case .found(let existing): return (try parsed(existing), false)
            }
        }
        return try write("recording journal entry \(key)", run: run) { db in
            // Inserted unless there is one already (one statement on the common path, the
            // first record); the run's lock keeps another from coming between.
            let now = Timestamp.now()
            try db.run("INSERT INTO journal (run_id, key, value, recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       [.text(run), .text(key), .text(text), .text(now)])
            if try db.changes == 0 {
                let existing = try db.first("SELECT value FROM journal WHERE run_id = ? AND key = ?", [.text(run), .text(key)], { $0.text(0) })
                return (try parsed(existing ?? ""), false)
            }
            try self.appendEvent(db, run: run, kind: "journal.record", data: event, at: now)
            return (value, true)
        }
    }
}
