import Foundation
import Testing
import WardCore
import WardLedger
import WardTestSupport

/// docs/examples/messages_api.py on 127.0.0.1, with its state in `dir/api.json`.
final class MessagesAPI {
    struct DidNotStart: Error {
        let output: String
    }

    let process = Process()
    let url: String
    let statePath: String

    init(in dir: String) throws {
        statePath = dir + "/api.json"
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = [Paths.repository + "/docs/examples/messages_api.py", "--port", "0", "--state", statePath]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice  // its request log
        try process.run()
        // It prints its address once it accepts connections.
        let drain = OutputDrain(out.fileHandleForReading)
        let line = drain.wait(for: "\n") ? drain.textSoFar().split(separator: "\n").first : nil
        guard let line, line.hasPrefix("listening on ") else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw DidNotStart(output: drain.textSoFar())
        }
        url = String(line.dropFirst("listening on ".count))
    }

    deinit {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// The POST requests it received, and the messages it created (each with its key).
    func state() throws -> (posts: Int, keys: [String]) {
        guard let data = FileManager.default.contents(atPath: statePath) else { return (0, []) }
        let state = try #require(try JSONValue.parse(Array(data)).objectValue)
        let posts = state["posts"]?.integer() ?? -1
        return (posts, (state["messages"]?.arrayValue ?? []).compactMap { $0.objectValue?["idempotencyKey"]?.stringValue })
    }
}

/// The README's example of a tool for an HTTP API that honours idempotency keys
/// (docs/examples/http-api.toml), installed as the README says, against a toy API: a call
/// caught in doubt settles by asking the API, and the API sees each request once.
@Suite("The README's HTTP API example settles calls in doubt", .serialized)
struct HTTPExampleTests {
    /// The shipped policies with the example copied in.
    func policies() throws -> String {
        let dir = temporaryDirectory("http-policies")
        for name in ["syscall-sets.toml", "tools.toml"] {
            try FileManager.default.copyItem(atPath: Paths.repository + "/policies/" + name, toPath: dir + "/" + name)
        }
        try FileManager.default.copyItem(atPath: Paths.repository + "/docs/examples/http-api.toml", toPath: dir + "/http-api.toml")
        return dir
    }

    let call: JSONValue = .object(["callId": .string("m1"), "tool": .string("send_message"),
                                   "arguments": .object(["to": .string("ops"), "text": .string("deployed")])])

    /// A work directory of run `h` whose call m1 was caught by ward's death at `failpoint`,
    /// the policies, the API, and the environment that points the tool at it.
    func callCaughtInDoubt(at failpoint: String) throws -> (dir: String, policies: String, api: MessagesAPI, env: [String: String]) {
        let dir = temporaryDirectory("http")
        let policies = try policies()
        let api = try MessagesAPI(in: dir)
        let env = ["API_URL": api.url]
        try callUntilWardDies(in: dir, run: "h", policies: policies, failpoint: failpoint, call, environment: env)
        return (dir, policies, api, env)
    }

    @Test func aMessageSentBeforeWardDiedSettlesAsExecuted() throws {
        let (dir, policies, api, env) = try callCaughtInDoubt(at: "before-finish=kill")
        let key = Ledger.idempotencyKey(run: "h", callId: "m1")
        #expect(try api.state() == (1, [key]))

        // Without API_URL the API cannot be asked: the call stays in doubt, and says why.
        let blind = try reconcileFindings(in: dir)
        #expect(blind.status == 1 && blind.findings == ["m1": "in-doubt"], "\(blind)")
        #expect(blind.reasons["m1"]?.contains("API_URL is not set") == true, "\(blind)")
        let r = try reconcileFindings(in: dir, environment: env)
        #expect(r.status == 0 && r.findings == ["m1": "executed"], "\(r)")
        // Asked again: the API's answer, replayed; no second request.
        let again = try #require(try callOnce(in: dir, run: "h", policies: policies, call, environment: env)?["result"]?.objectValue)
        #expect(again["replayed"] == .bool(true) && again["status"] == .string("resolved"), "\(again)")
        let message = try #require(try JSONValue.parse(again["stdout"]?.stringValue ?? "").objectValue, "\(again)")
        #expect(message["id"] == .number(1) && message["idempotencyKey"] == .string(key), "\(message)")
        #expect(try api.state() == (1, [key]), "the API saw the request again")
    }

    @Test func aMessageNeverSentSettlesAsNotExecutedAndIsSentOnce() throws {
        let (dir, policies, api, env) = try callCaughtInDoubt(at: "after-begin=kill")
        #expect(try api.state() == (0, []))

        let r = try reconcileFindings(in: dir, environment: env)
        #expect(r.status == 0 && r.findings == ["m1": "not-executed"], "\(r)")
        let sent = try #require(try callOnce(in: dir, run: "h", policies: policies, call, environment: env)?["result"]?.objectValue)
        #expect(sent["status"] == .string("succeeded") && sent["replayed"] == .bool(false), "\(sent)")
        let replayed = try #require(try callOnce(in: dir, run: "h", policies: policies, call, environment: env)?["result"]?.objectValue)
        #expect(replayed["replayed"] == .bool(true), "\(replayed)")
        #expect(try api.state() == (1, [Ledger.idempotencyKey(run: "h", callId: "m1")]))
        #expect(try ward(["ledger", "verify"], in: dir).status == 0)
    }
}
