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
            #expect(error.kind == .conflict)
        }
        do {
            _ = try await ward.call(callId: "c2", tool: "nope")
            Issue.record("no unknown-tool")
        } catch {
            #expect(error.kind == .unknownTool && error.code == -32004)
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

    @Test func aStoppedSupervisorGivesATimeoutNotAHang() async throws {
        // A real `ward serve`, then SIGSTOP: the agent's request must fail, not hang.
        let dir = temporaryDirectory("stopped")
        let serve = try startServe(in: dir, run: "stopped")
        defer { kill(serve.processIdentifier, SIGKILL); serve.waitUntilExit() }
        let ward = try WardClient(socketPath: dir + "/s.sock", timeout: .milliseconds(500))
        defer { ward.close() }
        _ = try await ward.resume()
        kill(serve.processIdentifier, SIGSTOP)
        defer { kill(serve.processIdentifier, SIGCONT) }
        let start = ContinuousClock.now
        do {
            _ = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("true")])
            Issue.record("a stopped supervisor answered")
        } catch {
            #expect(error.kind == .connection && error.message.contains("no answer"), "\(error)")
        }
        #expect(ContinuousClock.now - start < .seconds(10))  // the 500 ms timeout, not a hang (generous: sanitizer runs are slow)
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
