import Foundation
import Testing
import WardClient
import WardCore

@Suite("WardClient against the real server")
struct ClientTests {
    @Test func callsCheckpointsJournalAndTypedErrors() async throws {
        let t = try TestServer()
        let ward = try WardClient(socketPath: t.server.path)
        defer { ward.close() }
        let first = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("printf hi")], checkpoint: .object(["step": .number(1)]))
        #expect(first.outcome.stdout == Array("hi".utf8) && !first.replayed)
        let again = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("printf hi")])
        #expect(again.replayed && again.outcome == first.outcome)
        do {
            _ = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("other")])
            Issue.record("no conflict")
        } catch {
            #expect(error.kind == .ward(.conflict))
        }
        do {
            _ = try await ward.call(callId: "c2", tool: "nope")
            Issue.record("no unknown-tool")
        } catch {
            #expect(error.kind == .ward(.unknownTool) && error.code == -32004)
        }
        #expect(try await ward.loadCheckpoint()?.state == .object(["step": .number(1)]))
        #expect(try await ward.saveCheckpoint(.array([.bool(true)]), label: "x") == 2)
        var made = 0
        let v1 = try await ward.journal("llm") { made += 1; return .string("first") }
        let v2 = try await ward.journal("llm") { made += 1; return .string("second") }
        #expect(v1 == .string("first") && v2 == .string("first") && made == 1)
        let resume = try await ward.resume()
        #expect(resume["runId"] == .string("r1"))
    }

    /// The blocking face: the same calls, results and typed errors, one request at a time;
    /// a wrong token is refused as the connection opens.
    @Test func aBlockingConnectionCallsAndGetsTypedErrors() throws {
        let t = try TestServer()
        let ward = try WardConnection(socketPath: t.server.path)
        let first = try ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("printf hi")])
        #expect(first.outcome.stdout == Array("hi".utf8) && !first.replayed)
        let again = try ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("printf hi")])
        #expect(again.replayed && again.outcome == first.outcome)
        do {
            _ = try ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("other")])
            Issue.record("no conflict")
        } catch {
            #expect(error.kind == .ward(.conflict) && error.code == -32001, "\(error)")
        }
        do {
            _ = try ward.request("checkpoint.load", .object(["seqq": .number(1)]))
            Issue.record("a misspelt member was taken")
        } catch {
            #expect(error.kind == .ward(.invalidArguments) && error.field == "seqq", "\(error)")
        }
        #expect(try ward.request("run.resume", .object([:])).objectValue?["runId"] == .string("r1"))
        // Past 16 MiB ward answers with `id: null` and closes the connection, before the
        // whole line is sent: the answer still says why.
        do {
            _ = try ward.request("journal.record", .object(["key": .string("big"), "value": .string(String(repeating: "a", count: 17 << 20))]))
            Issue.record("a line past the limit was taken")
        } catch {
            #expect(error.kind == .ward(.tooLarge), "\(error)")
        }
        do {
            _ = try WardConnection(socketPath: t.server.path, opening: .agent(token: AgentCredential.generate()))
            Issue.record("a wrong token was taken")
        } catch {
            #expect(error.kind == .ward(.unauthorized), "\(error)")
        }
    }

    @Test func concurrentRequestsOnOneConnection() async throws {
        let t = try TestServer()
        let ward = try WardClient(socketPath: t.server.path)
        defer { ward.close() }
        let results = try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for i in 0..<16 {
                group.addTask {
                    let r = try await ward.call(callId: "p\(i)", tool: "shell", arguments: ["command": .string("sleep 0.2; printf \(i)")])
                    return (i, String(decoding: r.outcome.stdout, as: UTF8.self))
                }
            }
            var all: [Int: String] = [:]
            for try await (i, out) in group { all[i] = out }
            return all
        }
        for i in 0..<16 { #expect(results[i] == "\(i)") }
    }

    /// The answer is the client's own timeout ("no answer"), which only the timer makes; a
    /// hang would outlast the time limit. (No wall-clock bound: on a loaded 2-core machine
    /// the test pool's threads, blocked by other suites, delayed the awaiting task by 12 s.)
    @Test(.timeLimit(.minutes(1)))
    func aStoppedSupervisorGivesATimeoutNotAHang() async throws {
        // A real `ward serve`, then SIGSTOP: the agent's request must fail, not hang.
        let dir = temporaryDirectory("stopped")
        let serve = try startServe(in: dir, run: "stopped")
        defer { kill(serve.processIdentifier, SIGKILL); serve.waitUntilExit() }
        let ward = try WardClient(socketPath: dir + "/s.sock", timeout: .milliseconds(500))
        defer { ward.close() }
        _ = try await ward.resume()
        let blocking = try WardConnection(socketPath: dir + "/s.sock", timeout: .milliseconds(500))
        kill(serve.processIdentifier, SIGSTOP)
        defer { kill(serve.processIdentifier, SIGCONT) }
        do {
            _ = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("true")])
            Issue.record("a stopped supervisor answered")
        } catch {
            #expect(error.kind == .connection && error.message.contains("no answer"), "\(error)")
        }
        do {
            _ = try blocking.call(callId: "c2", tool: "shell", arguments: ["command": .string("true")])
            Issue.record("a stopped supervisor answered")
        } catch {
            #expect(error.kind == .connection && error.message.contains("no answer"), "\(error)")
        }
        // Opening a connection (its session.auth) is bounded too, on either face.
        let opening = #expect(throws: WardClientError.self) { _ = try WardClient(socketPath: dir + "/s.sock", timeout: .milliseconds(500)) }
        #expect(opening?.kind == .connection && opening?.message.contains("no answer") == true, "\(String(describing: opening))")
        let openingBlocking = #expect(throws: WardClientError.self) { _ = try WardConnection(socketPath: dir + "/s.sock", timeout: .milliseconds(500)) }
        #expect(openingBlocking?.kind == .connection && openingBlocking?.message.contains("no answer") == true, "\(String(describing: openingBlocking))")
    }

    @Test func aFloodOfRequestsIsAllAnsweredAndTheServerLivesOn() async throws {
        let t = try TestServer()
        let c = try RawClient(t.server.path)
        // 2,000 requests at once on one connection; every one is answered, the server lives on.
        var flood: [UInt8] = []
        for i in 0..<2000 {
            flood += JSONValue.object(["jsonrpc": .string("2.0"), "id": .number(Double(i)), "method": .string("journal.record"),
                                       "params": .object(["key": .string("k\(i)"), "value": .number(Double(i))])]).canonicalBytes + [0x0A]
        }
        c.send(flood)
        var answered = Set<Int>()
        for _ in 0..<2000 {
            guard let r = c.next(), case .number(let id)? = r["id"], r["result"] != nil else { break }
            answered.insert(Int(id))
        }
        #expect(answered.count == 2000)
        #expect(try RawClient(t.server.path).call(1, "run.resume", .object([:]))?["result"] != nil)
    }

    @Test func aClosedServerFailsPendingAndNewRequests() async throws {
        let t = try TestServer()
        let ward = try WardClient(socketPath: t.server.path)
        t.server.stop()
        do {
            _ = try await ward.resume()
            Issue.record("request on a closed connection succeeded")
        } catch {
            #expect(error.kind == .connection)
        }
        #expect(throws: WardClientError.self) { _ = try WardClient(socketPath: "/nonexistent/ward.sock") }
    }
}

/// A server that accepts the client's `session.auth` (its token file is beside the socket),
/// then answers each request line with the next scripted reply (`ID` replaced by the
/// request's id): what a broken or hostile ward could send a client.
final class ScriptedServer: @unchecked Sendable {
    // @unchecked: `listenFD` and `path` are set once in init; the serving thread only reads them.
    let path: String
    private let listenFD: Int32

    init(replies: [String]) throws {
        path = temporaryDirectory("scripted") + "/s.sock"
        listenFD = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var addr = UnixSocket.address(path)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listenFD, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        try #require(bound == 0 && listen(listenFD, 4) == 0)
        try #require(AgentCredential.publish("scripted", at: AgentCredential.tokenFile(forSocket: path)))
        let replies = [#"{"jsonrpc":"2.0","id":ID,"result":{"runId":"scripted"}}"#] + replies
        let fd = listenFD
        Thread.detachNewThread {
            let conn = accept(fd, nil, nil)
            guard conn >= 0 else { return }
            var framer = LineFramer()
            var chunk = [UInt8](repeating: 0, count: 65536)
            var replies = replies[...]
            while let reply = replies.first {
                let n = chunk.withUnsafeMutableBytes { recv(conn, $0.baseAddress, $0.count, 0) }
                if n <= 0 { break }
                chunk.withUnsafeBytes { framer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                while let line = try? framer.next() {
                    let id = (try? JSONValue.parse(line).objectValue?["id"])??.canonical ?? "null"
                    _ = UnixSocket.sendAll(conn, Array((reply.replacingOccurrences(of: "ID", with: id) + "\n").utf8))
                    replies = replies.dropFirst()
                    if replies.isEmpty { break }
                }
            }
            close(conn)
        }
    }

    deinit { close(listenFD) }
}

@Suite("Clients never trap on a server's answer")
struct ClientRobustnessTests {
    /// Numbers past every integer type, fractional ids, wrong types and unparsable lines.
    @Test func theSwiftClientTurnsMalformedAnswersIntoErrors() async throws {
        let server = try ScriptedServer(replies: [
            #"{"jsonrpc":"2.0","id":ID,"result":{"seq":1e300}}"#,
            #"{"jsonrpc":"2.0","id":ID,"result":{"seq":1.5,"state":1}}"#,
            #"{"jsonrpc":"2.0","id":ID,"result":{"callId":"c","tool":"t","status":"succeeded","exitCode":1e300,"signal":-1e300,"attempt":1e300,"durationMs":-5,"stdoutBase64":"!!"}}"#,
            #"{"jsonrpc":"2.0","id":ID,"error":{"code":1e300,"message":7,"data":{"kind":["x"]}}}"#,
            "not json\n{\"id\":1e300}\n{\"id\":0.5,\"result\":1}\n[1,2]\n{\"jsonrpc\":\"2.0\",\"id\":ID,\"result\":\"nope\"}",
        ])
        let ward = try WardClient(socketPath: server.path, timeout: .seconds(20))
        defer { ward.close() }
        await #expect(throws: WardClientError.self) { _ = try await ward.saveCheckpoint(.null) }
        await #expect(throws: WardClientError.self) { _ = try await ward.loadCheckpoint(seq: 1) }
        let odd = try await ward.call(callId: "c", tool: "t")
        #expect(odd.outcome.exitCode == nil && odd.outcome.signal == nil && odd.attempt == 1 && odd.outcome.durationMs == 0)
        do {
            _ = try await ward.resume()
            Issue.record("an error answer was taken as a result")
        } catch {
            #expect(error.kind == .ward(.internal) && error.code == nil, "\(error)")
        }
        await #expect(throws: WardClientError.self) { _ = try await ward.call(callId: "c", tool: "t") }
    }

    /// The blocking face reads the same answers the same way, passing over the lines that
    /// answer nothing of its request's.
    @Test func theBlockingConnectionTurnsMalformedAnswersIntoErrors() throws {
        let server = try ScriptedServer(replies: [
            #"{"jsonrpc":"2.0","id":ID,"result":{"callId":"c","tool":"t","status":"succeeded","exitCode":1e300,"signal":-1e300,"attempt":1e300,"durationMs":-5,"stdoutBase64":"!!"}}"#,
            #"{"jsonrpc":"2.0","id":ID,"error":{"code":1e300,"message":7,"data":{"kind":["x"]}}}"#,
            "not json\n{\"id\":1e300}\n{\"id\":0.5,\"result\":1}\n[1,2]\n{\"jsonrpc\":\"2.0\",\"id\":ID,\"result\":\"nope\"}",
        ])
        let ward = try WardConnection(socketPath: server.path, timeout: .seconds(20))
        let odd = try ward.call(callId: "c", tool: "t")
        #expect(odd.outcome.exitCode == nil && odd.outcome.signal == nil && odd.attempt == 1 && odd.outcome.durationMs == 0)
        do {
            _ = try ward.request("run.resume", .object([:]))
            Issue.record("an error answer was taken as a result")
        } catch {
            #expect(error.kind == .ward(.internal) && error.code == nil, "\(error)")
        }
        do {
            _ = try ward.call(callId: "c", tool: "t")
            Issue.record("a string was taken as a CallResult")
        } catch {
            #expect(error.kind == .ward(.internal) && error.message.contains("CallResult"), "\(error)")
        }
    }

    @Test func thePythonClientRaisesWardErrorOnMalformedAnswers() throws {
        let replies = [
            "not json",
            #"[1]"#,
            #"{"jsonrpc":"2.0","id":ID,"error":"boom"}"#,
            #"{"jsonrpc":"2.0","id":ID,"error":{"code":1e300,"message":7,"data":[1]}}"#,
            #"{"jsonrpc":"2.0","id":ID}"#,
            #"{"jsonrpc":"2.0","id":ID,"result":{"nothing":1}}"#,
            #"{"jsonrpc":"2.0","id":ID,"result":{"callId":"c","stdoutBase64":"@@@"}}"#,
            #"{"jsonrpc":"2.0","id":ID,"result":[]}"#,
        ]
        // One connection per reply: a reply that is not JSON leaves a connection unusable.
        for reply in replies {
            let server = try ScriptedServer(replies: [reply])
            let script = """
                import sys
                sys.path.insert(0, sys.argv[1])
                from ward_client import Ward, WardError
                ward = Ward(sys.argv[2])
                for attempt in (lambda: ward.checkpoint({}), lambda: ward.call("t", call_id="c"), lambda: ward.journal("k", lambda: 1)):
                    try:
                        attempt()
                    except WardError as e:
                        print("WardError", e.kind)
                        break
                    except (BrokenPipeError, ConnectionResetError):
                        print("closed")
                        break
                else:
                    print("no error")
                """
            let r = try runProgram("/usr/bin/env", ["python3", "-c", script, Paths.repository + "/python", server.path])
            #expect(r.status == 0 && r.output.hasPrefix("WardError internal"), "\(reply): \(r.output)")
        }
    }
}
