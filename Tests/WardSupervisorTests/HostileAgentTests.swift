import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// What a hostile or careless agent sends: for every method and every parameter, values of
/// every JSON type, numbers at and past every boundary, empty, huge and control-character
/// strings; envelopes with wrong versions and odd ids. A real `ward serve` must answer each
/// request exactly once, never fail inside itself, still serve a real call afterwards, and
/// leave a ledger that verifies.
@Suite("Hostile agent: no request takes ward down or blurs its audit", .serialized)
struct HostileAgentTests {
    /// A valid params object per method: the matrix replaces one member at a time.
    static let validParams: [String: [String: JSONValue]] = [
        "run.resume": [:],
        "tool.call": ["callId": .string("base"), "tool": .string("list_dir"), "arguments": .object(["path": .string(".")]),
                      "checkpoint": .object(["step": .number(1)])],
        "checkpoint.save": ["state": .object(["step": .number(1)]), "label": .string("l")],
        "checkpoint.load": ["seq": .number(1)],
        "journal.record": ["key": .string("k"), "value": .number(1)],
    ]

    static let hostileValues: [JSONValue] = [
        .null, .bool(true), .bool(false), .number(0), .number(-0.0), .number(1), .number(-1), .number(1.5), .number(1e300), .number(-1e300),
        .number(1e-300), .number(9_223_372_036_854_775_808), .number(18_446_744_073_709_551_616), .number(9_007_199_254_740_992),
        .string(""), .string(String(repeating: "x", count: 100_000)), .string("a\u{0}b"), .string("\u{1b}]0;owned\u{7}"),
        .string("\u{1b}]52;c;aGk=\u{7}"), .string("\u{9b}2J"), .string("\u{7f}"), .string("tab\there"), .string("line\nbreak"),
        .string("\u{202e}evil"), .string("é"), .array([]), .array([.number(1), .string("a")]), .object([:]),
        .object(["nested": .object(["deeper": .array([.null])])]),
    ]

    @Test func everyMethodEveryParamEveryValue() throws {
        let dir = temporaryDirectory("hostile")
        let serve = try startServe(in: dir, run: "hostile")
        defer { serve.terminate(); serve.waitUntilExit() }
        let c = try RawClient(dir + "/s.sock")
        var id = 0
        var answered = 0
        /// One request with an id: exactly one answer, with that id, and never a failure
        /// inside ward (`internal`, `storage`).
        func send(_ method: String, _ params: JSONValue) throws -> [String: JSONValue] {
            id += 1
            c.request(id, method, params)
            let response = try #require(c.next(), "no answer to \(method) \(params.canonical.prefix(200))")
            #expect(response["id"] == .number(Double(id)), "answer to another request: \(response)")
            #expect((response["result"] == nil) != (response["error"] == nil))
            if let error = response["error"]?.objectValue {
                let k = error["data"]?.objectValue?["kind"]?.stringValue ?? ""
                #expect(RPCError.Kind(rawValue: k) != nil && k != "internal" && k != "storage",
                        "\(method) \(params.canonical.prefix(200)): \(error)")
            }
            answered += 1
            return response
        }

        for (method, valid) in Self.validParams.sorted(by: { $0.key < $1.key }) {
            for member in valid.keys.sorted() + ["unexpected"] {
                for (n, value) in Self.hostileValues.enumerated() {
                    var params = valid
                    params[member] = value
                    // A fresh call ID per tool call, so each one is decided on its own.
                    if method == "tool.call", member != "callId" { params["callId"] = .string("m-\(member)-\(n)") }
                    let response = try send(method, .object(params))
                    if member == "unexpected" {
                        #expect(kind(response) == "invalid-arguments" && (field(response) == "unexpected" || inexact(response)), "\(response)")
                    }
                }
            }
            // params itself of every type.
            for value in Self.hostileValues where value.objectValue == nil {
                let response = try send(method, value)
                #expect(kind(response) == "invalid-arguments" && (field(response) == "params" || inexact(response)),
                        "\(method) params \(value.canonical.prefix(50)): \(response)")
            }
        }

        // The values that used to trap or alias, one by one, with the exact error.
        for seq in [1e300, -1e300, 9_223_372_036_854_775_808, -1, 0, 1.5, 1e-300] {
            let r = try send("checkpoint.load", .object(["seq": .number(seq)]))
            #expect(kind(r) == "invalid-arguments" && field(r) == "seq", "seq \(seq): \(r)")
        }
        for bad in ["x\u{0}a", "x\u{1b}[31m", "", String(repeating: "c", count: 1025)] {
            let r = try send("tool.call", .object(["callId": .string(bad), "tool": .string("read_file"), "arguments": .object(["path": .string(".")])]))
            #expect(kind(r) == "invalid-arguments" && field(r) == "callId", "\(r)")
            let j = try send("journal.record", .object(["key": .string(bad), "value": .number(1)]))
            #expect(kind(j) == "invalid-arguments" && field(j) == "key", "\(j)")
        }

        // Envelopes: wrong versions, odd ids, methods that are not strings, unpaired
        // surrogates. Each line gets one answer; an id the server cannot echo exactly (huge,
        // fractional) is refused with id null. Odd but exact ids are echoed on a normal answer.
        let lines: [(String, JSONValue)] = [
            (#"{"jsonrpc":"1.0","id":900,"method":"run.resume"}"#, .number(900)),
            (#"{"jsonrpc":2.0,"id":901,"method":"run.resume"}"#, .number(901)),
            (#"{"id":902,"method":"run.resume"}"#, .number(902)),
            (#"{"jsonrpc":"2.0","id":{"a":1},"method":"run.resume"}"#, .null),
            (#"{"jsonrpc":"2.0","id":[1],"method":"run.resume"}"#, .null),
            (#"{"jsonrpc":"2.0","id":true,"method":"run.resume"}"#, .null),
            (#"{"jsonrpc":"2.0","id":1e300,"method":"run.resume"}"#, .null),
            (#"{"jsonrpc":"2.0","id":-0.5,"method":"run.resume"}"#, .null),
            (#"{"jsonrpc":"2.0","id":12345678901234567890,"method":"run.resume"}"#, .null),
            (#"{"jsonrpc":"2.0","id":9007199254740991,"method":"run.resume"}"#, .number(9_007_199_254_740_991)),
            (#"{"jsonrpc":"2.0","id":"\u0000\u001b","method":"run.resume"}"#, .string("\u{0}\u{1b}")),
            (#"{"jsonrpc":"2.0","id":903,"method":7}"#, .number(903)),
            (#"{"jsonrpc":"2.0","id":904,"method":"no.such"}"#, .number(904)),
            (#"{"jsonrpc":"2.0","id":905,"method":"journal.record","params":{"key":"\ud800","value":1}}"#, .null),
            (#"{"jsonrpc":"2.0","id":906,"method":"journal.record","params":{"key":"\udc00x","value":1}}"#, .null),
            (#"[{"jsonrpc":"2.0","id":907,"method":"run.resume"}]"#, .null),
            (#"{"jsonrpc":"2.0","id":908,"method":"checkpoint.load","params":{"seq":1e400}}"#, .null),
            ("\u{7}garbage", .null),
        ]
        let validOddIDs: Set<JSONValue> = [.number(9_007_199_254_740_991), .string("\u{0}\u{1b}")]
        for (line, expectedID) in lines {
            c.send(line + "\n")
            let response = try #require(c.next(), "no answer to \(line)")
            #expect(response["id"] == expectedID, "\(line): \(response)")
            if validOddIDs.contains(expectedID) {
                #expect(response["result"]?.objectValue?["runId"] == .string("hostile"), "\(line): \(response)")
            } else {
                #expect(kind(response) == "invalid-arguments", "\(line): \(response)")
            }
        }
        // An integer a double cannot hold is refused, not rounded into another call's
        // arguments (the same call with 9007199254740992 would replay instead of conflict).
        c.send(#"{"jsonrpc":"2.0","id":950,"method":"tool.call","params":{"callId":"big","tool":"list_dir","arguments":{"path":".","n":9007199254740993}}}"# + "\n")
        let big = try #require(c.next())
        #expect(big["id"] == .number(950) && kind(big) == "invalid-arguments", "\(big)")
        // The same for 2^53+1, 2^63, a 20-digit integer, their negatives, and 2^62 (a double,
        // but written back as 4611686018427388000), in arguments and in journal values; the
        // integers that come back as they were sent are kept.
        for (n, literal) in ["9007199254740993", "9223372036854775808", "12345678901234567891", "-9007199254740993", "-12345678901234567891", "4611686018427387904"].enumerated() {
            c.send(#"{"jsonrpc":"2.0","id":\#(960 + n),"method":"tool.call","params":{"callId":"big\#(n)","tool":"list_dir","arguments":{"path":".","n":\#(literal)}}}"# + "\n")
            let call = try #require(c.next())
            #expect(kind(call) == "invalid-arguments" && call["error"]?.objectValue?["message"]?.stringValue?.contains(String(literal.prefix(20))) == true, "\(call)")
            c.send(#"{"jsonrpc":"2.0","id":\#(970 + n),"method":"journal.record","params":{"key":"big\#(n)","value":{"n":\#(literal)}}}"# + "\n")
            let journal = try #require(c.next())
            #expect(kind(journal) == "invalid-arguments", "\(journal)")
        }
        c.send(#"{"jsonrpc":"2.0","id":980,"method":"journal.record","params":{"key":"exact","value":[9007199254740992,-9007199254740994,1e300]}}"# + "\n")
        let exact = try #require(c.next())
        #expect(exact["result"]?.objectValue?["value"]?.canonical == "[9007199254740992,-9007199254740994,1e+300]", "\(exact)")
        // A notification is run but never answered: the next answer is the next request's.
        c.send(#"{"jsonrpc":"2.0","method":"checkpoint.load","params":{"seq":1e300}}"# + "\n")

        // The same server still serves a real call.
        let real = try send("tool.call", shellCall("after-all", "echo still here"))
        #expect(real["result"]?.objectValue?["stdout"] == .string("still here\n"), "\(real)")
        #expect(answered > 500)
        serve.terminate()
        serve.waitUntilExit()
        let verify = try ward(["ledger", "verify"], in: dir)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    /// Call IDs and journal keys either round-trip exactly through every layer (tool.call,
    /// replay, list, show, export, verify) or are refused; none is ever aliased to another.
    @Test func identifiersRoundTripExactlyOrAreRefused() throws {
        let dir = temporaryDirectory("ids")
        let serve = try startServe(in: dir, run: "ids")
        defer { serve.terminate(); serve.waitUntilExit() }
        let c = try RawClient(dir + "/s.sock")
        var id = 0
        func send(_ method: String, _ params: [String: JSONValue]) throws -> [String: JSONValue] {
            id += 1
            return try #require(c.call(id, method, .object(params)))
        }
        func call(_ callId: String) throws -> [String: JSONValue] {
            try send("tool.call", ["callId": .string(callId), "tool": .string("shell"),
                                   "arguments": .object(["command": .string("echo ran >> count.log; printf '%s' \"$WARD_CALL_ID\"")])])
        }

        // Every control character is refused, and nothing is recorded for it.
        let controls = Array(0x00...0x1F) + Array(0x7F...0x9F)
        for code in controls {
            let c = String(Character(Unicode.Scalar(UInt32(code))!))
            let r = try call("x\(c)a")
            #expect(kind(r) == "invalid-arguments" && field(r) == "callId", "U+\(String(code, radix: 16)): \(r)")
            let j = try send("journal.record", ["key": .string("k\(c)"), "value": .number(1)])
            #expect(kind(j) == "invalid-arguments" && field(j) == "key", "U+\(String(code, radix: 16)): \(j)")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/workspace/count.log"), "a refused call ran")

        // Distinct texts, including canonically equivalent pairs that Swift's == folds.
        let ids = ["é", "e\u{301}", "K", "\u{212A}", "日本語-ид", "🧪\u{200d}x", "\u{202e}rtl", "a b", "quote\"back\\slash", "x"]
        for callId in ids {
            let r = try call(callId)
            let result = try #require(r["result"]?.objectValue, "\(callId): \(r)")
            #expect(result["callId"] == .string(callId) && result["stdout"] == .string(callId) && result["replayed"] == .bool(false), "\(result)")
        }
        for callId in ids {
            let result = try #require(call(callId)["result"]?.objectValue)
            #expect(result["callId"] == .string(callId) && result["stdout"] == .string(callId) && result["replayed"] == .bool(true), "\(result)")
        }
        let runs = try String(contentsOfFile: dir + "/workspace/count.log", encoding: .utf8)
        #expect(runs.split(separator: "\n").count == ids.count, "each distinct ID runs once: \(runs)")

        // Journal keys: equivalent texts are distinct keys with their own values.
        for (n, key) in ids.enumerated() {
            let r = try #require(send("journal.record", ["key": .string(key), "value": .number(Double(n))])["result"]?.objectValue)
            #expect(r["recorded"] == .bool(true) && r["value"] == .number(Double(n)), "\(key): \(r)")
        }
        for (n, key) in ids.enumerated() {
            let r = try #require(send("journal.record", ["key": .string(key)])["result"]?.objectValue)
            #expect(r["found"] == .bool(true) && r["value"] == .number(Double(n)), "\(key): \(r)")
        }
        serve.terminate()
        serve.waitUntilExit()

        // The audit shows each one exactly.
        let list = try ward(["ledger", "list", "--run", "ids", "--json"], in: dir)
        let listed = try JSONValue.parse(list.stdout)
        let listedIDs = (listed.arrayValue ?? []).compactMap { $0.objectValue?["callId"]?.stringValue }
        #expect(listedIDs.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) } == ids.map { Array($0.utf8) }.sorted { $0.lexicographicallyPrecedes($1) },
                "\(list.stdout)")
        for callId in ids {
            let show = try ward(["ledger", "show", "ids", callId, "--json"], in: dir)
            #expect(show.status == 0, "\(callId): \(show.stderr)")
            let detail = try JSONValue.parse(show.stdout).objectValue
            #expect(detail?["callId"].flatMap(\.stringValue).map { Array($0.utf8) } == Array(callId.utf8), "\(show.stdout)")
        }
        let export = try ward(["ledger", "export", "--run", "ids"], in: dir)
        let exportedIDs = Set(export.stdout.split(separator: "\n").compactMap { try? JSONValue.parse(String($0)).objectValue?["callId"]?.stringValue }.map { Array($0.utf8) })
        #expect(exportedIDs == Set(ids.map { Array($0.utf8) }), "\(export.stdout.prefix(500))")
        let verify = try ward(["ledger", "verify"], in: dir)
        #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
    }

    /// A run ID names the socket file: one that would leave its directory, hide in it or
    /// carry a control character is refused before anything is opened.
    @Test(arguments: ["a/b", "../escape", ".hidden", "", "x\u{1b}]0;t\u{7}", "tab\there", String(repeating: "r", count: 65)])
    func badRunIDsAreRefused(_ run: String) throws {
        let dir = temporaryDirectory("runid")
        let r = try ward(["serve", "--run-id", run, "--policies", Paths.repository + "/policies", "--socket", dir + "/s.sock"], in: dir)
        #expect(r.status == 2 && r.stderr.contains("run ID"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/.ward"), "a ledger was opened for a refused run ID")
    }
}

/// Refused because an integer in the request is past what a double holds exactly.
func inexact(_ response: [String: JSONValue]?) -> Bool {
    response?["error"]?.objectValue?["message"]?.stringValue?.contains("cannot be held exactly") == true
}

func field(_ response: [String: JSONValue]?) -> String? { response?["error"]?.objectValue?["data"]?.objectValue?["field"]?.stringValue }

@Suite("ward serve outlives what exhausts it, and stops cleanly", .serialized)
struct ServeResilienceTests {
    /// More connections than ward has descriptors: the extra ones wait, and once they close
    /// ward accepts again (it used to stop accepting for good at EMFILE).
    @Test func runningOutOfDescriptorsDoesNotDeafenWard() throws {
        let dir = temporaryDirectory("emfile")
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: "/usr/bin/prlimit")
        serve.arguments = ["--nofile=64:64", Paths.ward, "serve", "--policies", Paths.repository + "/policies", "--socket", dir + "/s.sock", "--run-id", "emfile", "--grace", "0"]
        serve.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = Pipe()
        serve.standardOutput = out
        try serve.run()
        defer { serve.terminate(); serve.waitUntilExit() }
        _ = out.fileHandleForReading.availableData
        var flood: [RawClient] = []
        // Unauthenticated: a connection holds a descriptor before it says anything.
        for _ in 0..<100 { if let c = try? RawClient(dir + "/s.sock", authenticate: false) { flood.append(c) } }
        flood.removeAll()  // closes them all
        let c = try RawClient(dir + "/s.sock")
        #expect(c.call(1, "run.resume", .object([:]))?["result"]?.objectValue?["runId"] == .string("emfile"))
    }

    /// SIGTERM lets running tools finish within --grace, then kills them and records them
    /// `killed`: nothing is left `running` to turn in doubt at the next start.
    @Test func sigtermRecordsRunningCallsKilled() throws {
        let dir = temporaryDirectory("sigterm")
        let serve = Process()
        serve.executableURL = URL(fileURLWithPath: Paths.ward)
        serve.arguments = ["serve", "--policies", Paths.repository + "/policies", "--socket", dir + "/s.sock", "--run-id", "term", "--grace", "0.2"]
        serve.currentDirectoryURL = URL(fileURLWithPath: dir)
        let out = Pipe()
        serve.standardOutput = out
        try serve.run()
        _ = out.fileHandleForReading.availableData
        let c = try RawClient(dir + "/s.sock")
        c.request(1, "tool.call", shellCall("slow", "echo started > started; sleep 30"))
        for _ in 0..<500 where !FileManager.default.fileExists(atPath: dir + "/workspace/started") { usleep(10_000) }
        serve.terminate()
        let answer = c.next()
        serve.waitUntilExit()
        #expect(answer?["result"]?.objectValue?["status"] == .string("killed"), "\(String(describing: answer))")
        let list = try ward(["ledger", "list", "--json"], in: dir)
        #expect(list.stdout.contains("\"killed\"") && !list.stdout.contains("in-doubt"), "\(list.stdout)")
    }
}
