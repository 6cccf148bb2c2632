import Foundation
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// What `ward ledger report` shows of one run: its calls, their spans in time and outcomes,
/// the run's attempts, checkpoints, verdicts and approvals, and whether `verify` passed
/// (docs/design.md, *Report*). `data` is the document the HTML page embeds and renders.
public struct RunReport: Sendable {
    public var run: String
    public var calls: Int
    /// What `ward ledger verify --run RUN` says of it, its head hash included.
    public var verify: VerifyReport.Run
    /// `{run, verify, t0, generatedAt, limit, calls, marks, journal}`: times are
    /// milliseconds after `t0` (the run's first event), outputs cut to `limit` bytes.
    public var data: JSONValue
}

extension RunReport {
    /// The `trace` member of an outcome's event (`call.finish`, `call.in-doubt`: `{mode,
    /// effects, dropped}`) as the page shows it: `{execution, mode, effects: [[atMs, pid,
    /// words]], dropped}`; nil when the event has none.
    static func trace(_ data: [String: JSONValue], execution: JSONValue?) -> JSONValue? {
        guard let trace = data["trace"]?.objectValue else { return nil }
        // The page keeps a call's first effects; all of them are in `ward ledger show`.
        let all = trace["effects"]?.arrayValue ?? []
        let effects = all.prefix(Ledger.reportEffectLimit).map { effect -> JSONValue in
            let e = effect.objectValue ?? [:]
            return .array([e["atMs"] ?? .null, e["pid"] ?? .null, .string(words(effect))])
        }
        return .object(["execution": execution ?? .null, "mode": trace["mode"] ?? .null, "effects": .array(effects),
                        "dropped": trace["dropped"] ?? .null, "truncated": trace["truncated"] ?? .bool(false),
                        "notShown": .number(Double(max(0, all.count - Ledger.reportEffectLimit)))])
    }

    /// One effect in words, as `ledger show` prints it ("rename /w/a → /w/b"); an effect of a
    /// kind this ward does not know (a later ward's) with its members as JSON.
    public static func words(_ effect: JSONValue) -> String {
        if let known = Trace.Effect(json: effect) { return known.description }
        var rest = effect.objectValue ?? [:]
        let kind = rest.removeValue(forKey: "kind")?.stringValue ?? "?"
        return "\(kind) \(JSONValue.object(rest).canonical)"
    }
}


extension Ledger {
    /// Bytes of each call's arguments, stdout and stderr a report keeps; the rest is cut
    /// (and says so), so that a run of 10,000 calls stays a page a browser opens at once.
    public static let reportOutputLimit = 4096
    /// Effects of each traced execution a report lists (a call keeps up to 10,000).
    public static let reportEffectLimit = 200

    /// The report of `run`, or of the most recently active run when it is nil. Reads the
    /// ledger only, then runs the same check as `ward ledger verify --run`.
    /// - Throws: `notFound` for an unknown run or a ledger without runs.
    public func report(run: String? = nil) throws(LedgerError) -> RunReport {
        let (run, document) = try read("reading the report of run \(run ?? "(latest)")") { db -> (String, [String: JSONValue]) in
            let chosen: String
            if let run {
                guard try db.text("SELECT run_id FROM runs WHERE run_id = ?", run) != nil else {
                    throw LedgerError(.notFound, "no run \(run) in \(self.path)")
                }
                chosen = run
            } else {
                guard let latest = try db.text("SELECT run_id FROM runs ORDER BY updated_at DESC, run_id DESC LIMIT 1") else {
                    throw LedgerError(.notFound, "no runs in \(self.path)")
                }
                chosen = latest
            }
            var builder = ReportBuilder(ledger: self, db: db, run: chosen)
            return (chosen, try builder.build())
        }
        guard let verified = try verify(run: run).runs.first else { throw LedgerError(.notFound, "no run \(run) in \(path)") }
        var members = document
        members["verify"] = .object(["ok": .bool(verified.problem == nil), "problem": verified.problem.map { .string($0) } ?? .null,
                                     "note": verified.note.map { .string($0) } ?? .null, "head": .string(verified.head),
                                     "events": .number(Double(verified.events))])
        members["generatedAt"] = .string(Timestamp.now())
        return RunReport(run: run, calls: document["calls"]?.arrayValue?.count ?? 0, verify: verified, data: .object(members))
    }
}

/// Reads one run's rows and events into the report's document, in one read transaction.
private struct ReportBuilder {
    let ledger: Ledger
    let db: any SQLConnection
    let run: String

    /// Milliseconds of the run's first event; every time in the document is relative to it
    /// (a number is smaller than a timestamp, 10,000 times over).
    var t0: Double?

    init(ledger: Ledger, db: any SQLConnection, run: String) {
        self.ledger = ledger
        self.db = db
        self.run = run
    }

    mutating func build() throws -> [String: JSONValue] {
        let summary = try ledger.runs(db, agent: nil).first { ExactString($0.run) == ExactString(run) }
        let events = try db.rows("SELECT seq, at, kind, call_id, body FROM events WHERE run_id = ? ORDER BY seq", run)
        let firstAt = events.first.map { $0["at"] as String } ?? summary?.createdAt ?? ""
        t0 = ReportBuilder.milliseconds(firstAt)

        // Calls in the order they first appear in the chain (a gate or a begin).
        var index: [ExactString: Int] = [:]  // "é" and "e" + U+0301 are two calls
        var spans: [[JSONValue]] = []
        var callEvents: [[JSONValue]] = []
        var traces: [[JSONValue]] = []
        var open: [Int: (start: JSONValue, kind: String)] = [:]
        var marks: [JSONValue] = []
        var journal = 0
        func callIndex(_ id: String) -> Int {
            if let i = index[ExactString(id)] { return i }
            index[ExactString(id)] = spans.count
            spans.append([]); callEvents.append([]); traces.append([])
            return spans.count - 1
        }
        for row in events {
            let kind: String = row["kind"], seq: Int = row["seq"], at = time(row["at"])
            let data = (try? JSONValue.parse(row["body"] as String))?.objectValue?["data"]?.objectValue ?? [:]
            let callId: String? = row["call_id"]
            let call = callId.map(callIndex)
            func mark(_ text: String) { marks.append(.array([at, .string(kind), .string(text), call.map { .number(Double($0)) } ?? .null, .number(Double(seq))])) }
            func close(_ i: Int, _ status: String) {
                guard let o = open.removeValue(forKey: i) else { return }
                spans[i].append(.array([o.start, at, .string(status)]))
            }
            if let call, kind != "checkpoint.save" { callEvents[call].append(.array([.number(Double(seq)), at, .string(kind), .string(ReportBuilder.summary(kind, data))])) }
            switch kind {
            case "call.gate":
                open[call!] = (at, CallStatus.awaitingApproval.rawValue)
                mark("gated: awaiting approval")
            case "call.approve":
                close(call!, CallStatus.awaitingApproval.rawValue)
                mark("approved by \(data["by"]?.stringValue ?? "?")" + ReportBuilder.note(data))
            case "call.deny":
                close(call!, CallStatus.awaitingApproval.rawValue)
                mark("denied by \(data["by"]?.stringValue ?? "?")" + ReportBuilder.note(data))
            case "call.begin":
                // A begin while another execution is open: that one's process died and the
                // call was run again (idempotent or read-only). How long it ran is unknown.
                if let o = open.removeValue(forKey: call!) { spans[call!].append(.array([o.start, o.start, .string(CallStatus.killed.rawValue)])) }
                open[call!] = (at, CallStatus.running.rawValue)
            case "call.finish":
                close(call!, data["status"]?.stringValue ?? "?")
                if let trace = RunReport.trace(data, execution: data["execution"]) { traces[call!].append(trace) }
            case "call.in-doubt":
                // The tool ran at most until its owner died; the evidence says how long.
                if let o = open.removeValue(forKey: call!) {
                    let ran = data["ranForMs"]?.integer(Int.self).map { Double($0) }
                    let end: JSONValue = ran.flatMap { r in o.start.number.map { .number($0 + r) } } ?? o.start
                    spans[call!].append(.array([o.start, end, .string(CallStatus.inDoubt.rawValue)]))
                }
                if let trace = RunReport.trace(data, execution: data["execution"]) { traces[call!].append(trace) }
                mark("in doubt: " + (data["reason"]?.stringValue ?? "its outcome was never recorded"))
            case "call.resolve":
                mark("resolved \(data["verdict"]?.stringValue ?? "?") by \(data["by"]?.stringValue ?? "?")" + ReportBuilder.note(data))
            case "call.delivered": break
            case "run.attempt":
                let agent = (data["agent"]?.arrayValue ?? []).map { Shell.quote($0.stringValue ?? $0.canonical) }.joined(separator: " ")
                mark("attempt \(data["attempt"]?.integer(Int.self).map(String.init) ?? "?")" + (agent.isEmpty ? "" : ": \(agent)"))
            case "run.resumed": mark("resumed (\(data["by"]?.stringValue ?? "?"))")
            case "run.finish": mark("the agent exited with status \(data["exitStatus"]?.integer(Int.self).map(String.init) ?? "?")")
            case "run.fork":
                mark("forked from run \(data["origin"]?.stringValue ?? "?") at checkpoint \(data["at"]?.integer(Int.self).map(String.init) ?? "?")")
            case "run.place": mark("workspace \(data["workspace"]?.stringValue ?? "?")")
            case "run.moved": mark("workspace moved to \(data["to"]?.objectValue?["workspace"]?.stringValue ?? "?")")
            case "run.policies": mark("policies now \(data["to"]?.stringValue ?? "?")")
            case "checkpoint.save":
                mark("checkpoint \(data["seq"]?.integer(Int.self).map(String.init) ?? "?")" + (data["label"]?.stringValue.map { " (\($0))" } ?? ""))
            case "checkpoint.damaged":
                mark("checkpoint \(data["seq"]?.integer(Int.self).map(String.init) ?? "?") damaged: \(data["problem"]?.stringValue ?? "?")")
            case "journal.record": journal += 1
            default: mark(kind)
            }
        }

        var calls: [JSONValue] = Array(repeating: .null, count: spans.count)
        for row in try db.rows("SELECT * FROM calls WHERE run_id = ?", run) {
            let i = callIndex(row["call_id"])
            if calls.count <= i { calls.append(.null) }
            calls[i] = try call(row, spans: spans[i], events: callEvents[i], effects: traces[i], open: open[i])
        }
        var document: [String: JSONValue] = [
            "run": summary?.json ?? .object(["run": .string(run)]),
            "t0": .string(firstAt), "limit": .number(Double(Ledger.reportOutputLimit)),
            "calls": .array(calls), "marks": .array(marks), "journal": .number(Double(journal)),
        ]
        if let last = events.last { document["end"] = time(last["at"]) }
        return document
    }

    /// One call: its row, output cut, spans, events, effects and (for a call that was in
    /// doubt or gated) what settled it.
    func call(_ row: SQLRow, spans: [JSONValue], events: [JSONValue], effects: [JSONValue], open: (start: JSONValue, kind: String)?) throws -> JSONValue {
        let status = ledger.effectiveStatus(row)
        var spans = spans
        // Still open: a call still running or waiting is drawn to the run's last event; one
        // whose process died (in doubt, not recorded yet) ran for a time nobody knows.
        if let open {
            let dead = open.kind == CallStatus.running.rawValue && status != CallStatus.running.rawValue
            spans.append(.array([open.start, dead ? open.start : .null, .string(open.kind == CallStatus.running.rawValue ? status : open.kind)]))
        }
        // Members at their usual value are left out: 10,000 calls make this document.
        var members: [String: JSONValue] = [
            "id": .string(row["call_id"]), "tool": .string(row["tool"]), "effect": .string(row["effect"]), "status": .string(status),
            "attempt": .number(Double(row["attempt"] as Int)), "executions": .number(Double(row["executions"] as Int)),
            "spans": .array(spans), "events": .array(events),
        ]
        if !effects.isEmpty { members["effects"] = .array(effects) }
        if let duration = row["duration_ms"] as Double? { members["durationMs"] = .number(duration) }
        if let code = row["exit_code"] as Int? { members["exitCode"] = .number(Double(code)) }
        if let signal = row["signal"] as Int? { members["signal"] = .number(Double(signal)) }
        if (row["truncated"] as Int?) == 1 { members["truncated"] = .bool(true) }
        if let verdict = row["verdict"] as String? { members["verdict"] = .string(verdict) }
        if let note = row["note"] as String? { members["note"] = .string(note) }
        ReportBuilder.put(Array((row["args"] as String).utf8), as: "arguments", into: &members)
        for stream in ["stdout", "stderr"] {
            if let hash = row[stream] as [UInt8]?, let bytes = try ledger.blob(db, Array(hash)) {
                ReportBuilder.put(bytes, as: stream, into: &members)
            }
        }
        return .object(members)
    }

    /// `text` cut to the report's limit at a character boundary; `NAMEBytes` holds the whole
    /// size when it was cut, `NAMENotUTF8` marks bytes shown with replacement characters.
    static func put(_ bytes: [UInt8], as name: String, into members: inout [String: JSONValue]) {
        var end = min(bytes.count, Ledger.reportOutputLimit)
        while end < bytes.count && end > 0 && bytes[end] & 0xC0 == 0x80 { end -= 1 }
        let kept = bytes[..<end]
        if !kept.isEmpty { members[name] = .string(String(decoding: kept, as: UTF8.self)) }
        if end < bytes.count { members[name + "Bytes"] = .number(Double(bytes.count)) }
        if String(validating: kept, as: UTF8.self) == nil { members[name + "NotUTF8"] = .bool(true) }
    }

    /// One line for a call's event in its details.
    static func summary(_ kind: String, _ data: [String: JSONValue]) -> String {
        func value(_ key: String) -> String? {
            guard let v = data[key], v != .null else { return nil }
            return v.stringValue ?? v.canonical
        }
        switch kind {
        case "call.begin": return "execution \(value("execution") ?? "?"), attempt \(value("attempt") ?? "?")"
            + (value("checkpoint").map { ", checkpoint \($0)" } ?? "")
        case "call.finish": return [value("status"), value("exitCode").map { "exit \($0)" }, value("signal").map { "signal \($0)" },
                                    value("durationMs").map { "\($0) ms" }].compactMap { $0 }.joined(separator: ", ")
        case "call.in-doubt": return value("reason") ?? ""
        case "call.resolve": return "\(value("verdict") ?? "?") by \(value("by") ?? "?")" + note(data)
        case "call.approve", "call.deny": return "by \(value("by") ?? "?")" + note(data)
        default: return ""
        }
    }

    static func note(_ data: [String: JSONValue]) -> String {
        guard let note = data["note"]?.stringValue, !note.isEmpty else { return "" }
        return ": " + note
    }

    func time(_ at: String) -> JSONValue {
        guard let t0, let ms = ReportBuilder.milliseconds(at) else { return .null }
        return .number(ms - t0)
    }

    /// Unix milliseconds of a ledger timestamp ("2026-11-21T20:57:06.123Z", `Timestamp`).
    static func milliseconds(_ at: String) -> Double? {
        let b = Array(at.utf8)
        guard b.count == 24, b[4] == UInt8(ascii: "-"), b[10] == UInt8(ascii: "T"), b[19] == UInt8(ascii: "."), b[23] == UInt8(ascii: "Z") else { return nil }
        func number(_ from: Int, _ count: Int) -> Int32? {
            var v: Int32 = 0
            for c in b[from..<(from + count)] {
                guard c >= 0x30 && c <= 0x39 else { return nil }
                v = v * 10 + Int32(c - 0x30)
            }
            return v
        }
        guard let year = number(0, 4), let month = number(5, 2), let day = number(8, 2), let hour = number(11, 2),
              let minute = number(14, 2), let second = number(17, 2), let ms = number(20, 3) else { return nil }
        var tm = tm()
        tm.tm_year = year - 1900; tm.tm_mon = month - 1; tm.tm_mday = day
        tm.tm_hour = hour; tm.tm_min = minute; tm.tm_sec = second
        return Double(timegm(&tm)) * 1000 + Double(ms)
    }
}

private extension JSONValue {
    var number: Double? {
        if case .number(let d) = self { return d }
        return nil
    }
}
