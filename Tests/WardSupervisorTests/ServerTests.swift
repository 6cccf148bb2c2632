import Foundation
import Synchronization
import Testing
import WardClient
import WardCore
import WardLedger
import WardPolicy
import WardSandbox
@testable import WardSupervisor
import WardTestSupport

/// A supervisor serving a temporary ledger and workspace on a temporary socket.
final class TestServer: Sendable {
    let server: SocketServer
    let supervisor: Supervisor
    let workspace: String

    init(run: String = "r1", ledgerPath: String? = nil, policies directory: String = Paths.repository + "/policies", finishRetry: Double = 10,
         notify: @escaping @Sendable (String) -> Void = Supervisor.notifyOnStderr) throws {
        workspace = temporaryDirectory("ws")
        let policies = try PolicyLoader.load(directory: directory)
        let ledger = try Ledger(path: ledgerPath ?? temporaryDirectory("ledger") + "/l.sqlite")
        let sandbox = try Sandbox(policies: policies, workspace: workspace)
        supervisor = Supervisor(ledger: ledger, sandbox: sandbox, runID: run, attempt: try ledger.startAttempt(run: run),
                                finishRetry: finishRetry, notify: notify)
        server = try SocketServer(path: temporaryDirectory("sock") + "/s.sock", supervisor: supervisor, publishToken: true)
        server.start()
    }

    deinit { server.stop() }
}

/// The tests' raw protocol probe: ward's blocking client (`WardConnection`), with each line
/// ward sends read as its parsed object (nil at end of stream, after 20 s of silence, or for
/// a line that is no JSON object), and sends that never fail a test by themselves: a probe
/// may write into a connection ward has closed. It opens the connection as the agent (the
/// token beside the socket, or `token`) unless `authenticate` is false.
final class RawClient {
    private let connection: WardConnection

    init(_ path: String, authenticate: Bool = true, token: String? = nil) throws {
        connection = try WardConnection(socketPath: path, opening: authenticate ? .agent(token: token) : .unauthenticated, timeout: .seconds(20))
    }

    func send(_ bytes: [UInt8]) { try? connection.send(bytes) }

    func send(_ text: String) { send(Array(text.utf8)) }

    func request(_ id: Int, _ method: String, _ params: JSONValue) { try? connection.send(id: .number(Double(id)), method: method, params: params) }

    func next() -> [String: JSONValue]? { (try? connection.nextLine()).flatMap { try? JSONValue.parse($0).objectValue } }

    func call(_ id: Int, _ method: String, _ params: JSONValue) -> [String: JSONValue]? {
        request(id, method, params)
        return next()
    }
}

func kind(_ response: [String: JSONValue]?) -> String? { response?["error"]?.objectValue?["data"]?.objectValue?["kind"]?.stringValue }

func shellCall(_ id: String, _ command: String, checkpoint: JSONValue? = nil) -> JSONValue {
    var p: [String: JSONValue] = ["callId": .string(id), "tool": .string("shell"), "arguments": .object(["command": .string(command)])]
    if let checkpoint { p["checkpoint"] = checkpoint }
    return .object(p)
}

@Suite("Server: the agent protocol over a Unix socket")
struct ServerTests {
    @Test func callReplayConflictAndErrorKinds() throws {
        let t = try TestServer()
        let c = try RawClient(t.server.path)
        let first = try #require(c.call(1, "tool.call", shellCall("c1", "echo $WARD_RUN_ID $WARD_CALL_ID; echo x >> count.txt", checkpoint: .object(["step": .number(1)])))?["result"]?.objectValue)
        #expect(first["stdout"] == .string("r1 c1\n") && first["replayed"] == .bool(false) && first["status"] == .string("succeeded"))
        let again = try #require(c.call(2, "tool.call", shellCall("c1", "echo $WARD_RUN_ID $WARD_CALL_ID; echo x >> count.txt"))?["result"]?.objectValue)
        #expect(again["replayed"] == .bool(true))
        var a = first, b = again
        a["replayed"] = nil
        b["replayed"] = nil
        #expect(JSONValue.object(a).canonical == JSONValue.object(b).canonical)
        #expect(try String(contentsOfFile: t.workspace + "/count.txt", encoding: .utf8) == "x\n")
        #expect(kind(c.call(3, "tool.call", shellCall("c1", "something else"))) == "conflict")
        #expect(kind(c.call(4, "tool.call", .object(["callId": .string("c9"), "tool": .string("nope")]))) == "unknown-tool")
        #expect(kind(c.call(5, "tool.call", .object(["callId": .string("c9"), "tool": .string("shell"), "arguments": .array([])]))) == "invalid-arguments")
        #expect(kind(c.call(6, "tool.call", .object(["tool": .string("shell")]))) == "invalid-arguments")
        #expect(kind(c.call(7, "tool.call", .object(["callId": .string("c9"), "tool": .string("shell"), "arguments": .object([:])]))) == "invalid-arguments")
        // Nothing was recorded for the refused calls.
        #expect(try t.supervisor.ledger.listCalls(run: "r1").map(\.callId) == ["c1"])
        // The checkpoint handed in with c1 was stored with it.
        let loaded = c.call(8, "checkpoint.load", .object([:]))?["result"]?.objectValue
        #expect(loaded?["state"] == .object(["step": .number(1)]) && loaded?["seq"] == .number(1))
        let saved = c.call(9, "checkpoint.save", .object(["state": .object(["step": .number(2)]), "label": .string("after c1")]))
        #expect(saved?["result"]?.objectValue?["seq"] == .number(2))
        #expect(c.call(10, "checkpoint.load", .object(["seq": .number(1)]))?["result"]?.objectValue?["state"] == .object(["step": .number(1)]))
        #expect(c.call(11, "checkpoint.load", .object(["seq": .number(99)]))?["result"] == .null)
        let j1 = c.call(12, "journal.record", .object(["key": .string("llm-1"), "value": .string("plan A")]))?["result"]?.objectValue
        let j2 = c.call(13, "journal.record", .object(["key": .string("llm-1"), "value": .string("plan B")]))?["result"]?.objectValue
        #expect(j1 == ["value": .string("plan A"), "recorded": .bool(true)] && j2 == ["value": .string("plan A"), "recorded": .bool(false)])
        let resume = try #require(c.call(14, "run.resume", .object([:]))?["result"]?.objectValue)
        #expect(resume["runId"] == .string("r1") && resume["attempt"] == .number(1) && resume["inDoubt"] == .array([]))
        #expect(resume["checkpoint"]?.objectValue?["seq"] == .number(2))
    }

    @Test func malformedInputNeverCrashesOrHangs() throws {
        let t = try TestServer()
        let c = try RawClient(t.server.path)
        c.send("{not json\n")
        #expect(c.next()?["error"]?.objectValue?["code"] == .number(-32700))
        c.send("[1,2]\n")
        #expect(kind(c.next()) == "invalid-arguments")
        c.send(#"{"jsonrpc":"1.0","id":1,"method":"run.resume"}"# + "\n")
        #expect(c.next()?["id"] == .number(1))
        c.send(#"{"jsonrpc":"2.0","id":2,"method":"no.such"}"# + "\n")
        #expect(c.next()?["error"]?.objectValue?["code"] == .number(-32601))
        c.send(#"{"jsonrpc":"2.0","id":3,"method":"tool.call","params":"x"}"# + "\n")
        #expect(kind(c.next()) == "invalid-arguments")
        c.send(#"{"jsonrpc":"2.0","id":{"a":1},"method":"run.resume"}"# + "\n")
        #expect(c.next()?["id"] == .null)
        // A notification gets no answer; the next request does.
        c.send(#"{"jsonrpc":"2.0","method":"journal.record","params":{"key":"n","value":1}}"# + "\n\n   \n")
        #expect(c.call(4, "run.resume", .object([:]))?["id"] == .number(4))
        // A line cut off mid-request by a closing client is never acted on.
        do {
            let cut = try RawClient(t.server.path)
            cut.send(#"{"jsonrpc":"2.0","id":1,"method":"tool.call","params":{"callId":"cut","tool":"shell","arguments":{"command":"true"}}"#)
        }
        Thread.sleep(forTimeInterval: 0.2)  // time in which the cut request must not run (nothing to wait for)
        #expect(try t.supervisor.ledger.listCalls(run: "r1").isEmpty)
        // A line over 16 MiB: too-large, and the connection closes; the server lives on.
        let big = try RawClient(t.server.path)
        big.send(Array(#"{"jsonrpc":"2.0","id":1,"method":"journal.record","params":{"key":"k","value":""#.utf8) + [UInt8](repeating: 0x61, count: 17 << 20))
        #expect(kind(big.next()) == "too-large")
        #expect(big.next() == nil)
        #expect(try RawClient(t.server.path).call(1, "run.resume", .object([:]))?["result"] != nil)
    }

    @Test func requestsOnOneConnectionRunInParallel() throws {
        let t = try TestServer()
        let c = try RawClient(t.server.path)
        for i in 0..<10 { c.request(i, "tool.call", shellCall("p\(i)", "echo start >> order.txt; sleep 0.5; echo end >> order.txt; echo \(i)")) }
        var seen: [Int: String] = [:]
        for _ in 0..<10 {
            let r = try #require(c.next())
            guard case .number(let id)? = r["id"] else { continue }
            seen[Int(id)] = r["result"]?.objectValue?["stdout"]?.stringValue
        }
        for i in 0..<10 { #expect(seen[i] == "\(i)\n", "response \(i): \(seen[i] ?? "missing")") }
        // Run one after another, the calls would alternate start, end, start, end.
        let order = try String(contentsOfFile: t.workspace + "/order.txt", encoding: .utf8).split(separator: "\n")
        #expect(order.count == 20)
        #expect((order.firstIndex(of: "end") ?? 0) > 1, "no two calls overlapped: \(order)")
    }

    @Test func aCallRunningOnAnotherConnectionIsAwaitedNotRunTwice() throws {
        let t = try TestServer()
        let results = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            guard let c = try? RawClient(t.server.path) else { return }
            let r = c.call(1, "tool.call", shellCall("once", "echo ran >> ran.txt; sleep 0.5; echo done"))
            results.withLock { $0.append(r?["result"]?.objectValue?["stdout"]?.stringValue ?? "\(String(describing: r))") }
        }
        #expect(results.withLock { $0 } == ["done\n", "done\n", "done\n", "done\n"])
        #expect(try String(contentsOfFile: t.workspace + "/ran.txt", encoding: .utf8) == "ran\n")
    }

    @Test func inDoubtCallsAreListedAndRefused() throws {
        let ledgerPath = temporaryDirectory("ledger") + "/l.sqlite"
        try beginThenCrash(ledgerAt: ledgerPath, BeginRequest(
            run: "r1", callId: "mail", tool: "shell", effect: .nonIdempotent, arguments: .object(["command": .string("send")]),
            policyHash: "p", executable: "/bin/sh", attempt: 1))
        let t = try TestServer(ledgerPath: ledgerPath)
        let c = try RawClient(t.server.path)
        #expect(c.call(1, "run.resume", .object([:]))?["result"]?.objectValue?["inDoubt"] == .array([.string("mail")]))
        #expect(kind(c.call(2, "tool.call", shellCall("mail", "send"))) == "in-doubt")
        try t.supervisor.ledger.resolve(run: "r1", callId: "mail", as: .notExecuted, note: "checked")
        #expect(c.call(3, "tool.call", shellCall("mail", "send"))?["result"]?.objectValue?["status"] == .string("failed"))
    }

    @Test(.enabled(if: getuid() == 0, "needs root: it mounts a small tmpfs"))
    func aFullDiskRefusesCallsBeforeAnyChildStarts() throws {
        let mountPoint = temporaryDirectory("fulldisk")
        let mount = try Process.run(URL(fileURLWithPath: "/bin/mount"), arguments: ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint])
        mount.waitUntilExit()
        try #require(mount.terminationStatus == 0)
        defer { (try? Process.run(URL(fileURLWithPath: "/bin/umount"), arguments: ["-l", mountPoint]))?.waitUntilExit() }
        let t = try TestServer(ledgerPath: mountPoint + "/ledger.sqlite")
        let c = try RawClient(t.server.path)
        #expect(c.call(1, "tool.call", shellCall("before", "echo before >> effects.log"))?["result"] != nil)
        // Fill the ledger's disk.
        let filler = mountPoint + "/filler"
        _ = FileManager.default.createFile(atPath: filler, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: filler))
        while (try? handle.write(contentsOf: Data(repeating: 0, count: 16 * 1024))) != nil {}
        try? handle.close()
        let refused = c.call(2, "tool.call", shellCall("during", "echo during >> effects.log"))
        #expect(kind(refused) == "storage", "\(String(describing: refused))")
        let effects = try String(contentsOfFile: t.workspace + "/effects.log", encoding: .utf8)
        #expect(effects == "before\n", "a child started although its call could not be recorded: \(effects)")
        // Space returns: the same call runs, once; the earlier result is intact.
        try FileManager.default.removeItem(atPath: filler)
        #expect(c.call(3, "tool.call", shellCall("during", "echo during >> effects.log"))?["result"]?.objectValue?["status"] == .string("succeeded"))
        #expect(c.call(4, "tool.call", shellCall("before", "echo before >> effects.log"))?["result"]?.objectValue?["replayed"] == .bool(true))
        #expect(try String(contentsOfFile: t.workspace + "/effects.log", encoding: .utf8) == "before\nduring\n")
    }

    @Test func otherUsersAreTurnedAway() throws {
        let t = try TestServer()
        // Open the file system's doors, so only SO_PEERCRED stands in the way.
        let dir = String(t.server.path[..<t.server.path.lastIndex(of: "/")!])
        chmod(dir, 0o755)
        chmod(t.server.path, 0o777)
        let r = try BuildProducts.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/usr/bin/python3", "-c", """
        import socket, sys
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(5)
        try:
            s.sendall(b'{"jsonrpc":"2.0","id":1,"method":"run.resume"}\\n')
            data = s.recv(100)
            print("answered" if data else "closed")
        except ConnectionError:
            print("closed")
        """, t.server.path])
        #expect(r.stdout == "closed\n", "\(r)")
    }
}
