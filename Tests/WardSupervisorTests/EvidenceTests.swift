import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// What `ward ledger show` gives the operator of an in-doubt call: the owner that died and
/// how, how long the tool ran, how it ended if it did, and what it printed up to the crash,
/// captured as it came (ward is SIGKILLed for real; nothing here is simulated).
@Suite("In doubt: the evidence for the operator", .serialized)
struct EvidenceTests {
    func policies() throws -> String {
        try testPolicies("evidence-policies", tools: #"""
        # Prints, then waits for the test to kill ward (it dies with ward).
        [tools.slow]
        command = ["/bin/sh", "-c", "echo step one; echo careful >&2; printf 'half'; exec sleep 60"]

        [tools.quick]
        command = ["/bin/sh", "-c", "echo sent $1", "sh", "{to}"]
        arguments = ["to"]

        [tools.stamp]
        command = ["/bin/sh", "-c", "echo stamped"]
        effect = "idempotent"

        # Publishes, then waits for the test to kill ward.
        [tools.publish]
        command = ["/bin/sh", "-c", "echo entry >> published.log; exec sleep 60"]
        """#)
    }

    func show(_ dir: String, _ run: String, _ call: String) throws -> [String: JSONValue] {
        let r = try ward(["ledger", "show", run, call, "--json"], in: dir)
        #expect(r.status == 0, "\(r.stderr)")
        return try #require(try JSONValue.parse(r.stdout).objectValue)
    }

    func captureFiles(_ dir: String) -> [String] {
        (try? FileManager.default.contentsOfDirectory(atPath: dir + "/.ward/ledger.sqlite-output")) ?? []
    }

    @Test func aCallCaughtRunningShowsItsOutputAndHowLongItRan() throws {
        let dir = temporaryDirectory("evidence-running")
        let serve = try startServe(in: dir, run: "ev", policies: try policies())
        let client = try RawClient(dir + "/s.sock")
        client.request(1, "tool.call", .object(["callId": .string("c1"), "tool": .string("slow"), "arguments": .object([:])]))
        // The output reaches the capture file as the tool prints it (both streams, read in
        // either order, before the mtime is taken); a heartbeat then moves
        // the file's mtime on while the tool is silent.
        let capture = dir + "/.ward/ledger.sqlite-output/" + Ledger.idempotencyKey(run: "ev", callId: "c1")
        // (Read as bytes: a traced call's effect frames have lengths that are not UTF-8.)
        let captured = { (text: String) in (try? Data(contentsOf: URL(fileURLWithPath: capture)))?.range(of: Data(text.utf8)) != nil }
        #expect(eventually { captured("half") && captured("careful") }, "the output was not captured")
        // The tool's last act, its exec of sleep, is in the trace: after it, only a heartbeat moves the mtime.
        #expect(eventually { captured("/usr/bin/sleep") }, "the exec of sleep was not traced")
        let printed = try FileManager.default.attributesOfItem(atPath: capture)[.modificationDate] as! Date
        // Half a second later than any write seen: only a heartbeat (a frame read above may
        // still have been finishing, on a busy machine, and move the mtime by a tick).
        #expect(eventually { (try? FileManager.default.attributesOfItem(atPath: capture)[.modificationDate] as? Date).map { $0 > printed + 0.5 } == true },
                "no heartbeat while the tool was silent")
        kill(serve.processIdentifier, SIGKILL)
        serve.waitUntilExit()

        // Read-only, before any writer recovered it: the evidence comes from the file itself.
        var call = try show(dir, "ev", "c1")
        #expect(call["status"] == .string("in-doubt"))
        #expect(call["workspace"] == .string(dir + "/workspace"))
        var evidence = try #require(call["inDoubt"]?.objectValue)
        #expect(evidence["recorded"] == .bool(false) && evidence["captured"] == .bool(true))
        #expect(evidence["stdoutSoFar"] == .string("step one\nhalf") && evidence["stderrSoFar"] == .string("careful\n"))
        #expect(evidence["toolExit"] == .null, "the tool had not ended")
        #expect((evidence["ranForMs"]?.integer(Int.self) ?? 0) >= 1000, "\(evidence)")
        // Its owner is known dead because the kernel released its lock, and named.
        #expect(evidence["ownerFate"]?.stringValue?.contains("pid \(serve.processIdentifier), ward serve) has ended") == true, "\(evidence)")
        #expect(evidence["owner"]?.stringValue?.utf8.count == 32, "\(evidence)")

        // A writer records it in doubt with that evidence (in the hash-chained event) and
        // deletes the file; `show` then gives the same from the ledger.
        let resolve = try ward(["ledger", "reconcile"], in: dir)
        #expect(resolve.stdout.contains("c1"), "\(resolve.stdout)\(resolve.stderr)")
        #expect(captureFiles(dir).isEmpty, "the capture file outlived its recording")
        call = try show(dir, "ev", "c1")
        evidence = try #require(call["inDoubt"]?.objectValue)
        #expect(evidence["recorded"] == .bool(true) && evidence["stdoutSoFar"] == .string("step one\nhalf"))
        #expect(evidence["stderrSoFar"] == .string("careful\n") && evidence["toolExit"] == .null)
        #expect((evidence["ranForMs"]?.integer(Int.self) ?? 0) >= 1000, "\(evidence)")
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)

        // The table says it in words, escaped for the terminal.
        let table = try ward(["ledger", "show", "ev", "c1"], in: dir).stdout
        #expect(table.contains("stdout so far") && table.contains("step one\\x0ahalf"), "\(table)")
        #expect(table.contains("still running when ward died") && table.contains("has ended: the kernel released its lock"), "\(table)")

        // Settled, the evidence stays with the call for the audit.
        #expect(try ward(["ledger", "resolve", "ev", "c1", "--as", "not-executed", "--note", "nothing was sent"], in: dir).status == 0)
        #expect(try show(dir, "ev", "c1")["inDoubt"]?.objectValue?["stdoutSoFar"] == .string("step one\nhalf"))
    }

    /// "It had opened published.log for writing" is the evidence a verdict needs: the
    /// trace reaches the capture file as the tool goes, and the in-doubt record after.
    @Test func aCallCaughtRunningShowsWhatItHadChanged() throws {
        let dir = temporaryDirectory("evidence-trace")
        let serve = try startServe(in: dir, run: "ev", policies: try policies())
        let client = try RawClient(dir + "/s.sock")
        client.request(1, "tool.call", .object(["callId": .string("p1"), "tool": .string("publish"), "arguments": .object([:])]))
        let log = dir + "/workspace/published.log"
        #expect(eventually { FileManager.default.fileExists(atPath: log) && (try? String(contentsOfFile: log, encoding: .utf8)) == "entry\n" })
        let capture = dir + "/.ward/ledger.sqlite-output/" + Ledger.idempotencyKey(run: "ev", callId: "p1")
        #expect(eventually { (try? Data(contentsOf: URL(fileURLWithPath: capture)))?.range(of: Data("/usr/bin/sleep".utf8)) != nil },
                "the tool's exec of sleep, after its write, never reached the capture file")
        kill(serve.processIdentifier, SIGKILL)
        serve.waitUntilExit()

        func effects(_ call: [String: JSONValue]) -> [String] {
            (call["trace"].flatMap(Trace.init(json:))?.effects ?? []).map(\.description)
        }
        // Read-only, from the capture file; then recorded in the chained in-doubt event.
        let wrote = "create \(dir)/workspace/published.log (mode 0666) (append)"
        let before = try show(dir, "ev", "p1")
        #expect(effects(before).contains(wrote), "\(before)")
        let reconcile = try ward(["ledger", "reconcile"], in: dir)
        #expect(reconcile.stdout.contains("p1"), "\(reconcile.stdout)\(reconcile.stderr)")
        let call = try show(dir, "ev", "p1")
        #expect(call["status"] == .string("in-doubt"))
        #expect(effects(call) == ["exec /usr/bin/dash -c 'echo entry >> published.log; exec sleep 60'", wrote, "exec /usr/bin/sleep 60"], "\(call)")
        #expect(call["inDoubt"]?.objectValue?["trace"] != nil)
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
        let table = try ward(["ledger", "show", "ev", "p1"], in: dir).stdout
        #expect(table.contains("3 effects, as attempted") && table.contains("published.log"), "\(table)")
        // Which calls touched the file: this one, found by a glob.
        let found = try ward(["ledger", "effects", "--path", "*/published.log", "--json"], in: dir)
        let rows = try JSONValue.parse(found.stdout).arrayValue ?? []
        #expect(rows.count == 1 && rows.first?.objectValue?["callId"] == .string("p1") && rows.first?.objectValue?["event"] == .string("call.in-doubt"),
                "\(found.stdout)\(found.stderr)")
    }

    @Test func aToolThatEndedBeforeWardDiedShowsHowItEnded() throws {
        let dir = temporaryDirectory("evidence-ended")
        try callUntilWardDies(in: dir, run: "ev", policies: try policies(), failpoint: "before-finish=kill",
                              .object(["callId": .string("m1"), "tool": .string("quick"), "arguments": .object(["to": .string("bob")])]))
        let evidence = try #require(try show(dir, "ev", "m1")["inDoubt"]?.objectValue)
        #expect(evidence["stdoutSoFar"] == .string("sent bob\n"))
        let exit = try #require(evidence["toolExit"]?.objectValue, "\(evidence)")
        #expect(exit["status"] == .string("succeeded") && exit["exitCode"] == .number(0))

        // `ward run`-style report: the same facts, one line each.
        let report = try ward(["ledger", "show", "ev", "m1"], in: dir).stdout
        #expect(report.contains("exited 0 after") && report.contains("ward died before recording it"), "\(report)")
    }

    @Test func finishedCallsLeaveNoCaptureAndOnlyNonIdempotentOnesAreCaptured() throws {
        let dir = temporaryDirectory("evidence-clean")
        let serve = try startServe(in: dir, run: "ev", policies: try policies())
        defer { kill(serve.processIdentifier, SIGTERM); serve.waitUntilExit() }
        let client = try RawClient(dir + "/s.sock")
        let sent = client.call(1, "tool.call", .object(["callId": .string("q1"), "tool": .string("quick"), "arguments": .object(["to": .string("amy")])]))
        #expect(sent?["result"]?.objectValue?["stdout"] == .string("sent amy\n"))
        #expect(client.call(2, "tool.call", .object(["callId": .string("s1"), "tool": .string("stamp"), "arguments": .object([:])]))?["result"] != nil)
        #expect(captureFiles(dir).isEmpty, "\(captureFiles(dir))")
        // A finished call has no in-doubt evidence.
        #expect(try show(dir, "ev", "q1")["inDoubt"] == nil)
    }
}

@Suite("Output capture files")
struct OutputCaptureFormatTests {
    @Test func framesRoundTripAndACutFrameKeepsWhatArrived() throws {
        var file = OutputCapture.header(run: "r", callId: "c\n1", execution: 2, startedMs: 1_700_000_000_000)
        for (kind, text) in [(OutputCapture.Kind.stdout, "ab"), (.stderr, "warn"), (.stdout, "cd")] {
            file += OutputCapture.frameHeader(kind, length: text.utf8.count) + Array(text.utf8)
        }
        let whole = try #require(OutputCapture.parse(file))
        #expect(whole.run == "r" && whole.callId == "c\n1" && whole.execution == 2 && whole.startedMs == 1_700_000_000_000)
        #expect(whole.stdout == Array("abcd".utf8) && whole.stderr == Array("warn".utf8) && whole.exit == nil)
        // A crash mid-frame: the bytes that made it are kept.
        let cut = try #require(OutputCapture.parse(Array(file.dropLast(1))))
        #expect(cut.stdout == Array("abc".utf8))
        // A byte that starts no frame ends the reading there.
        let garbled = try #require(OutputCapture.parse(file + [9, 1, 0, 0, 0, 0x41] + OutputCapture.frameHeader(.stdout, length: 1) + [0x42]))
        #expect(garbled.stdout == Array("abcd".utf8))
        // Not a capture file at all.
        #expect(OutputCapture.parse(Array("hello\n".utf8)) == nil)
        #expect(OutputCapture.parse([]) == nil)
    }
}
