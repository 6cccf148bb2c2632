import Foundation
import Testing
import WardCore
@testable import WardLedger
import WardTestSupport

/// What a hostile tool prints to break out of the page: end the data block, start a script,
/// open a comment, add markup that runs code.
private let hostile = #"</script><script>document.title="pwned"</script><!-- <img src=x onerror="alert(1)"> </SCRIPT >"#

/// A run of every kind of history the report shows: two attempts (the second resumed), a
/// call that succeeded with its checkpoint, one that failed, one in doubt settled by an
/// operator, a gated call approved and run, one denied, one still awaiting, and a tool that
/// prints markup.
private func historyLedger() throws -> (Ledger, String) {
    let path = temporaryLedgerPath("report")
    let ledger = try Ledger(path: path)
    _ = try ledger.startAttempt(run: "r", agent: ["python3", "agent.py"])
    let ok = try #require(try ledger.begin(request("ok", run: "r", checkpoint: Array("{\"step\":1}".utf8))).ticket)
    _ = try ledger.finish(ok, outcome: outcome("done\n"))
    let bad = try #require(try ledger.begin(request("bad", run: "r")).ticket)
    _ = try ledger.finish(bad, outcome: outcome("", status: .failed, code: 2))
    let doubt = try #require(try ledger.begin(request("doubt", run: "r")).ticket)
    try ledger.markInDoubt(doubt, reason: "the zygote died mid-start")
    try ledger.resolve(run: "r", callId: "doubt", as: .executed, note: "the mail is in the sent folder")
    var gate = request("gated", run: "r")
    gate.gated = true
    _ = try? ledger.begin(gate)
    try ledger.settleApproval(run: "r", callId: "gated", approve: true, note: "looks right", by: Approver(uid: 1000, user: "alice"))
    let gated = try #require(try ledger.begin(gate).ticket)
    _ = try ledger.finish(gated, outcome: outcome("sent"))
    var no = request("refused", run: "r")
    no.gated = true
    _ = try? ledger.begin(no)
    try ledger.settleApproval(run: "r", callId: "refused", approve: false, note: "wrong recipient", by: Approver(uid: 1000, user: "alice"))
    var waits = request("waits", run: "r")
    waits.gated = true
    _ = try? ledger.begin(waits)
    _ = try ledger.startAttempt(run: "r", agent: ["python3", "agent.py"], resumedBy: .auto)
    let evil = try #require(try ledger.begin(request(hostile, run: "r", args: .object(["html": .string(hostile)]), attempt: 2)).ticket)
    _ = try ledger.finish(evil, outcome: ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array(hostile.utf8),
                                                     stderr: Array(hostile.utf8), truncated: false, durationMs: 3))
    return (ledger, path)
}

private func member(_ value: JSONValue?, _ key: String) -> JSONValue? { value?.objectValue?[key] }

@Suite("Ledger: report")
struct ReportTests {
    @Test func everyCallIsInTheReportWithItsSpansVerdictsAndApprovals() throws {
        let (ledger, _) = try historyLedger()
        let report = try ledger.report(run: "r")
        let calls = try #require(member(report.data, "calls")?.arrayValue)
        #expect(report.calls == 7)
        #expect(Set(calls.compactMap { member($0, "id")?.stringValue }) == ["ok", "bad", "doubt", "gated", "refused", "waits", hostile])
        let byID = Dictionary(uniqueKeysWithValues: calls.map { (member($0, "id")!.stringValue!, $0) })
        #expect(member(byID["ok"], "status") == .string("succeeded"))
        #expect(member(byID["ok"], "stdout") == .string("done\n"))
        #expect(member(byID["bad"], "status") == .string("failed"))
        #expect(member(byID["bad"], "exitCode") == .number(2))
        #expect(member(byID["doubt"], "status") == .string("resolved"))
        #expect(member(byID["doubt"], "verdict") == .string("executed"))
        #expect(member(byID["refused"], "status") == .string("denied"))
        #expect(member(byID["waits"], "status") == .string("awaiting-approval"))
        // One bar per execution, and a gated call's wait before it: [start, end, status].
        #expect(member(byID["gated"], "spans")?.arrayValue?.map { $0.arrayValue?[2] } == [.string("awaiting-approval"), .string("succeeded")])
        #expect(member(byID["doubt"], "spans")?.arrayValue?.map { $0.arrayValue?[2] } == [.string("in-doubt")])
        // A call still waiting is drawn to the end of the run: no end of its own.
        #expect(member(byID["waits"], "spans")?.arrayValue?.first?.arrayValue?[1] == .null)

        let marks = try #require(member(report.data, "marks")?.arrayValue).compactMap(\.arrayValue)
        let texts = marks.map { "\($0[1].stringValue!) \($0[2].stringValue!)" }
        #expect(texts.contains("run.attempt attempt 1: python3 agent.py"))
        #expect(texts.contains("run.resumed resumed (auto)"))
        #expect(texts.contains("run.attempt attempt 2: python3 agent.py"))
        #expect(texts.contains("checkpoint.save checkpoint 1"))
        #expect(texts.contains("call.in-doubt in doubt: the zygote died mid-start"))
        #expect(texts.contains("call.resolve resolved executed by operator: the mail is in the sent folder"))
        #expect(texts.contains("call.approve approved by alice: looks right"))
        #expect(texts.contains("call.deny denied by alice: wrong recipient"))
        #expect(texts.contains("call.gate gated: awaiting approval"))

        // Whether verify passed, and the chain's head: the run's last event's hash.
        #expect(report.verify.problem == nil)
        let head = try #require(try ledger.exportEvents(run: "r").last?.hash)
        #expect(report.verify.head == head)
        #expect(member(member(report.data, "verify"), "head") == .string(head))
        #expect(member(member(report.data, "verify"), "ok") == .bool(true))
    }

    @Test func withoutARunTheMostRecentlyActiveOneIsReportedAndAnUnknownOneIsNotFound() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        expectLedgerError(.notFound) { _ = try ledger.report() }
        // Apart by more than the timestamps' millisecond.
        _ = try ledger.startAttempt(run: "older")
        Thread.sleep(forTimeInterval: 0.01)
        _ = try ledger.startAttempt(run: "newer")
        Thread.sleep(forTimeInterval: 0.01)
        _ = try ledger.finish(try #require(try ledger.begin(request("c", run: "older")).ticket), outcome: outcome("x"))
        #expect(try ledger.report().run == "older")
        expectLedgerError(.notFound) { _ = try ledger.report(run: "nope") }
    }

    @Test func callIDsAreTheSameOnlyWhenTheirBytesAre() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        for id in ["\u{E9}", "e\u{301}"] {
            _ = try ledger.finish(try #require(try ledger.begin(request(id, run: "r")).ticket), outcome: outcome(id))
        }
        let calls = try #require(member(try ledger.report(run: "r").data, "calls")?.arrayValue)
        #expect(calls.map { Array(member($0, "id")!.stringValue!.utf8) } == [Array("\u{E9}".utf8), Array("e\u{301}".utf8)])
        #expect(calls.map { member($0, "stdout") } == [.string("\u{E9}"), .string("e\u{301}")])
    }

    @Test func outputsAreCutAtACharacterBoundaryAndSaySo() throws {
        let ledger = try Ledger(path: temporaryLedgerPath())
        // "é" is two bytes: byte 4096 falls inside one.
        let long = "a" + String(repeating: "é", count: 3000)
        let t = try #require(try ledger.begin(request("long", run: "r", args: .object(["text": .string(long)]))).ticket)
        _ = try ledger.finish(t, outcome: ToolOutcome(status: .succeeded, exitCode: 0, signal: nil, stdout: Array(long.utf8),
                                                      stderr: [0xFF, 0xFE, 0x41], truncated: true, durationMs: 1))
        let call = try #require(member(try ledger.report(run: "r").data, "calls")?.arrayValue?.first)
        let stdout = try #require(member(call, "stdout")?.stringValue)
        #expect(stdout.utf8.count == 4095 && long.hasPrefix(stdout))
        #expect(member(call, "stdoutBytes") == .number(6001))
        #expect(member(call, "argumentsBytes") != nil)
        #expect(member(call, "stderrNotUTF8") == .bool(true))
        #expect(member(call, "truncated") == .bool(true))
    }

    @Test func effectsReadAsWords() {
        func words(_ json: String) -> String { RunReport.words(try! JSONValue.parse(json)) }
        #expect(words(#"{"kind":"write","path":"/w/a","flags":["append"]}"#) == "write /w/a (append)")
        #expect(words(#"{"kind":"create","path":"/w/a","mode":"0644"}"#) == "create /w/a (mode 0644)")
        #expect(words(#"{"kind":"truncate","path":"/w/a"}"#) == "truncate /w/a")
        #expect(words(#"{"kind":"delete","path":"/w/a"}"#) == "delete /w/a")
        #expect(words(#"{"kind":"rename","path":"/w/a","to":"/w/b"}"#) == "rename /w/a → /w/b")
        #expect(words(#"{"kind":"mkdir","path":"/w/d"}"#) == "mkdir /w/d")
        #expect(words(#"{"kind":"rmdir","path":"/w/d"}"#) == "rmdir /w/d")
        #expect(words(#"{"kind":"link","path":"/w/a","to":"/w/b"}"#) == "link /w/a → /w/b")
        #expect(words(#"{"kind":"symlink","path":"/w/l","target":"../etc"}"#) == "symlink /w/l → ../etc")
        #expect(words(#"{"kind":"chmod","path":"/w/x","mode":"0755"}"#) == "chmod /w/x (mode 0755)")
        #expect(words(#"{"kind":"exec","path":"/usr/bin/git","argv":["git","commit","-m","a b"]}"#) == "exec /usr/bin/git commit -m 'a b'")
        #expect(words(#"{"kind":"connect","address":"127.0.0.1:8080"}"#) == "connect 127.0.0.1:8080")
        #expect(words(#"{"kind":"bind","address":"[::1]:80"}"#) == "bind [::1]:80")
        #expect(words(#"{"kind":"mount","path":"/mnt"}"#) == #"mount {"path":"/mnt"}"#)
    }

    @Test func aTraceIsShownWithItsModeEffectsAndWhatWasDropped() throws {
        let data = try #require(try JSONValue.parse(#"""
            {"status":"succeeded","trace":{"mode":"attempted","dropped":3,"effects":[
              {"kind":"write","path":"/w/a","flags":["append"],"pid":12,"atMs":5},
              {"kind":"exec","path":"/usr/bin/git","argv":["git","status"],"pid":13,"atMs":9}]}}
            """#).objectValue)
        let trace = try #require(RunReport.trace(data, execution: .number(1)))
        #expect(member(trace, "mode") == .string("attempted"))
        #expect(member(trace, "dropped") == .number(3) && member(trace, "notShown") == .number(0))
        #expect(member(trace, "execution") == .number(1))
        #expect(member(trace, "effects") == .array([.array([.number(5), .number(12), .string("write /w/a (append)")]),
                                                    .array([.number(9), .number(13), .string("exec /usr/bin/git status")])]))
        #expect(RunReport.trace(["status": .string("succeeded")], execution: .number(1)) == nil)
    }

    /// The page `ward ledger report` writes: self-contained, its data the report's, nothing
    /// from the ledger readable as markup.
    @Test func thePageIsSelfContainedAndNoToolOutputBecomesMarkup() throws {
        let (ledger, path) = try historyLedger()
        let directory = makeTemporaryDirectory("ward-report-test")
        let page = directory + "/report.html"
        let result = try BuildProducts.run(BuildProducts.ward, ["ledger", "report", "--ledger", path, "--run", "r", "--html", page])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["report.html"])  // no temporary left
        let html = try String(contentsOfFile: page, encoding: .utf8)

        // Nothing to fetch: no link, no external script, style or image, no URL at all.
        #expect(!html.contains("<link"))
        #expect(html.range(of: #"<script[^>]*\bsrc"#, options: [.regularExpression, .caseInsensitive]) == nil)
        #expect(html.range(of: #"(src|href)\s*=\s*["']?\s*(https?:)?//"#, options: [.regularExpression, .caseInsensitive]) == nil)
        #expect(!html.contains("http://") && !html.contains("https://"))
        #expect(html.contains("default-src 'none'"))

        // The hostile text never appears as markup: the page has its own two scripts only.
        #expect(html.components(separatedBy: "<script").count - 1 == 2)
        #expect(html.lowercased().components(separatedBy: "</script").count - 1 == 2)
        #expect(!html.contains("<img") && !html.contains("<!--"))

        // The data block is the report, byte for byte once its `<` escapes are read back.
        let open = try #require(html.range(of: #"<script type="application/json" id="ward-data">"#))
        let close = try #require(html.range(of: "</script>", range: open.upperBound..<html.endIndex))
        var shown = try JSONValue.parse(String(html[open.upperBound..<close.lowerBound])).objectValue ?? [:]
        var expected = try ledger.report(run: "r").data.objectValue ?? [:]
        shown["generatedAt"] = nil
        expected["generatedAt"] = nil
        #expect(JSONValue.object(shown) == JSONValue.object(expected))
        let head = try #require(try ledger.exportEvents(run: "r").last?.hash)
        #expect(member(member(.object(shown), "verify"), "head") == .string(head))

        // An unknown run is refused as other ledger commands refuse it, and writes nothing.
        let unknown = try BuildProducts.run(BuildProducts.ward, ["ledger", "report", "--ledger", path, "--run", "nope", "--html", directory + "/x.html"])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("no run nope"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/x.html"))
    }
}
