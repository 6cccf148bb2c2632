import Dispatch
import WardCore
import WardLedger
import WardPolicy
import WardSupervisor

/// A proxied `tools/call`: its ledger call, forwarding it to the server, and its answer.
extension MCPProxy {
    /// A checked `tools/call`.
    struct ProxiedRequest: Sendable {
        /// The server's name of the tool, and ward's rules for it.
        let tool: ServerToolPolicy
        /// What the ledger records: `SERVER/TOOL`.
        let recorded: String
        let arguments: JSONValue
        let argsHash: String
        let stable: String?
        /// The host's `_meta`, passed on (its progress token) less ward's own keys.
        let meta: [String: JSONValue]
    }

    func startCall(id: JSONValue, params: JSONValue) {
        let call: Call
        switch register(id) {
        case .success(let c): call = c
        case .failure(let error) where error.kind == .invalidArguments:
            // Not answered under that id: the host would take it for the first request's answer.
            answer(.null, .failure(error))
            return
        case .failure(let error):
            answer(id, .failure(error))
            return
        }
        // With the tools known (the usual case), the request is read and its deliveries
        // confirmed here, on the reading thread, in the order requests come (as `ward mcp`
        // does); else on its own thread, once the server has listed them.
        let early = catalog.withLock { $0 }.map { parse(params, catalog: $0) }
        if case .success(let request)? = early { arrived(request) }
        detached { [self] in
            defer { unregister(id) }
            let outcome = self.call(early ?? parse(params, catalog: nil), call, arrived: early != nil)
            // Not after a cancellation: the host was told nothing will come.
            call.over.withLock { over in
                guard !over else { return }
                over = true
                switch outcome {
                case .answered(let line, let record?, _): out.send(line(id)) { [log] in MCPServer.markRead(record, log: log) }
                case .answered(let line, nil, _): send(line(id))
                }
            }
            if call.cancelled.withLock({ $0 }), case .answered(_, let record?, true) = outcome {
                // ward killed it at the host's word: the host knows how it ended. One that
                // the server finished anyway stays unread, and a repeat gets its answer.
                MCPServer.markRead(record, log: log)
            }
        }
    }

    enum ProxiedOutcome {
        /// The answer line for a request id; with the call whose delivery is recorded once it
        /// is read; and whether ward killed it (`killed`).
        case answered(@Sendable (JSONValue) -> [UInt8], (supervisor: Supervisor, callId: String)?, killed: Bool)
    }

    /// Reads a `tools/call`'s params against the server's tools (`known`, else listed now).
    func parse(_ params: JSONValue, catalog known: Catalog?) -> Result<ProxiedRequest, RPCError> {
        do throws(RPCError) {
            let p = try Params(method: "tools/call", params, known: ["name", "arguments", "_meta", "idempotencyKey"])
            guard let name = p.value("name")?.stringValue else { throw p.error("name", "is required (a string)") }
            var catalog: Catalog
            if let known { catalog = known } else { catalog = try listTools().get() }
            if catalog.serverNames[name] == nil, known == nil {
                // The host may know a list newer than ward's.
                invalidateCatalog()
                catalog = try listTools().get()
            }
            guard let serverName = catalog.serverNames[name] else {
                throw RPCError(.unknownTool, "unknown tool \(Params.quote(name)) (tools of \(policy.name): \(catalog.serverNames.keys.sorted().joined(separator: ", ")))",
                               code: -32602, field: "name")
            }
            let arguments = JSONValue.object(try p.object("arguments") ?? [:])
            var meta = p.value("_meta")?.objectValue ?? [:]
            meta.removeValue(forKey: MCPServer.callIdKey)
            return .success(ProxiedRequest(tool: policy.tool(serverName), recorded: "\(policy.name)/\(serverName)", arguments: arguments,
                                           argsHash: Ledger.argumentsHash(arguments), stable: try MCPServer.stableID(p), meta: meta))
        } catch {
            return .failure(error)
        }
    }

    /// The host asked for something: the answers it had read reached it, unless this
    /// repeats one (`Ledger.confirmDeliveries`).
    func arrived(_ request: ProxiedRequest) {
        guard case .success(let supervisor) = self.supervisor.get() else { return }
        out.collect()
        do throws(LedgerError) {
            try supervisor.ledger.confirmDeliveries(run: supervisor.runID, asking: request.recorded, argsHash: request.argsHash)
        } catch {
            log("deliveries could not be recorded (\(error.message)): repeats of those calls will be answered from the ledger")
        }
    }

    /// - Parameter arrived: its deliveries were confirmed as it was read.
    func call(_ parsed: Result<ProxiedRequest, RPCError>, _ call: Call, arrived alreadyArrived: Bool) -> ProxiedOutcome {
        let request: ProxiedRequest
        let supervisor: Supervisor
        switch (parsed, self.supervisor.get()) {
        case (.failure(let error), _), (_, .failure(let error)): return .answered({ RPCResponse.line(id: $0, error: error) }, nil, killed: false)
        case (.success(let r), .success(let s)): (request, supervisor) = (r, s)
        }
        if !alreadyArrived { arrived(request) }
        let tool = request.tool
        // Whether the host received the answer matters only where a repeat must not run
        // again; a call that may be repeated skips the record of its reading (a commit).
        let tracked = tool.effect == .nonIdempotent || tool.approve
        let deadline = DispatchTime.now() + .milliseconds(Int(min(tool.timeoutMilliseconds, UInt64(Int.max / 1_000_000))))
        // The server first: a call that cannot reach it is refused before anything is
        // recorded (the host is told why; nothing ran).
        let process: ProxiedServer.Process
        do { process = try self.process(by: deadline) } catch {
            return .answered({ RPCResponse.line(id: $0, error: error) }, nil, killed: false)
        }
        var callId: String?
        do throws(RPCError) {
            callId = try MCPServer.callID(stable: request.stable, tool: request.recorded, effect: tool.effect, gated: tool.approve,
                                          argsHash: request.argsHash, in: supervisor)
            let result = try supervisor.call(forwarding: request.recorded, effect: tool.effect, timeoutMilliseconds: tool.timeoutMilliseconds,
                                             arguments: request.arguments, callId: callId!, policyHash: policyHash(tool), executable: executable,
                                             awaitsDelivery: tracked, gated: tool.approve) { _ in forward(request, call, to: process, until: deadline) }
            return .answered(MCPProxy.answer(result), tracked ? (supervisor, result.callId) : nil, killed: result.outcome.status == .killed)
        } catch {
            if error.kind == .invalidArguments || error.kind == .tooLarge { return .answered({ RPCResponse.line(id: $0, error: error) }, nil, killed: false) }
            // ward refused to send it (in doubt, a conflict, a full disk): the model is told
            // why, in a result it can read, and how the operator settles it.
            let refusal = MCPServer.refusal(error, callId: callId)
            return .answered({ RPCResponse.line(id: $0, result: refusal) }, nil, killed: false)
        }
    }

    /// What the ledger records of a proxied tool's rules: the server's sandbox and command,
    /// and the tool's effect and timeout.
    func policyHash(_ tool: ServerToolPolicy) -> String {
        var own: [String: JSONValue] = [
            "server": .string(Supervisor.policyHash(policy.sandbox)), "tool": .string(tool.name), "effect": .string(tool.effect.rawValue),
            "destructive": .bool(tool.destructive), "timeoutMs": .number(Double(tool.timeoutMilliseconds)),
        ]
        // Present only when set, so that an ungated tool's hash is what it always was.
        if tool.approve { own["approve"] = .bool(true) }
        return Ledger.sha256Hex(JSONValue.object(own).canonicalBytes)
    }

    /// Sends the call to the server, its `running` record durable, and waits for the answer:
    /// until `deadline` (the tool's timeout), or the host's cancellation, and then a grace
    /// period. A server that does not stop by then is killed with its whole tree. Whatever
    /// the server answers is what is recorded, even after a cancellation or the timeout.
    func forward(_ request: ProxiedRequest, _ call: Call, to first: ProxiedServer.Process, until deadline: DispatchTime) -> Supervisor.Forwarded {
        let started = DispatchTime.now()
        func elapsed() -> Double { Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e6 }
        func killed(_ why: String) -> Supervisor.Forwarded {
            .answered(ToolOutcome(status: .killed, exitCode: nil, signal: nil, stdout: [], stderr: Array("ward: \(why)\n".utf8),
                                  truncated: false, durationMs: elapsed()))
        }
        var params: [String: JSONValue] = ["name": .string(request.tool.name), "arguments": request.arguments]
        if !request.meta.isEmpty { params["_meta"] = .object(request.meta) }
        var next: ProxiedServer.Process? = first
        var unsent = "the server had stopped"
        // A request the server never got may go to a new process, once: nothing ran.
        for _ in 0..<2 {
            if call.cancelled.withLock({ $0 }) { return killed("cancelled by the host before it reached the server") }
            let process: ProxiedServer.Process
            if let given = next {
                process = given
                next = nil
            } else {
                do { process = try self.process(by: deadline) } catch { return .notSent(reason: error.message) }
            }
            let (id, pending) = process.start("tools/call", .object(params))
            call.sent.withLock { $0 = pending }
            // A cancellation that came while it was being sent did not wake it.
            var reply = pending.wait(until: call.cancelled.withLock { $0 } ? .now() : deadline)
            var stopped: CallStatus?
            if reply == nil {
                // Cancelled by the host, or out of time: asked to stop, then killed.
                let cancelled = call.cancelled.withLock { $0 }
                stopped = cancelled ? .killed : .timedOut
                let why = cancelled ? "the host cancelled the call" : "the call timed out after \(request.tool.timeoutMilliseconds) ms"
                process.notify("notifications/cancelled", .object(["requestId": .number(Double(id)), "reason": .string("ward: \(why)")]))
                let grace = DispatchTime.now() + MCPProxy.cancelGrace
                // Another wake (a second cancellation) does not cut the grace period short.
                while reply == nil && DispatchTime.now() < grace { reply = pending.wait(until: grace) }
                if reply == nil {
                    process.kill("\(why), and it did not stop within \(Int(MCPProxy.cancelGrace)) s")
                    reply = pending.wait(until: .now() + 10)
                }
                process.forget(id)
            }
            switch reply {
            case .unsent(let why)?:
                if stopped == .killed { return killed("cancelled by the host before it reached the server") }
                unsent = "MCP server \(policy.name) \(why)"
                if stopped == .timedOut { return .notSent(reason: unsent) }
                continue
            case .result(let result)?:
                proxied.answered()
                let failed = result.objectValue?["isError"] == .bool(true)
                return .answered(outcome(["result": result], status: failed ? .failed : .succeeded, durationMs: elapsed()))
            case .error(let error)?:
                proxied.answered()
                return .answered(outcome(["error": error], status: .failed, durationMs: elapsed()))
            case .lost(let why)?:
                // The host asked for it to stop: it did, with its server.
                if stopped == .killed { return killed("cancelled by the host; MCP server \(policy.name) \(why)") }
                return .unanswered(status: stopped ?? .killed, reason: "MCP server \(policy.name) \(why)\(stopped == nil ? " before answering" : "")",
                                   durationMs: elapsed())
            case nil:
                return .unanswered(status: stopped ?? .killed, reason: "MCP server \(policy.name) could not be stopped", durationMs: elapsed())
            }
        }
        return .notSent(reason: unsent)
    }

    /// A server's answer as an outcome: its JSON-RPC `result` or `error`, kept whole, unless
    /// it is larger than the server's `limits.output`: then it is not kept (a cut answer
    /// would not be JSON), and the call fails saying so.
    func outcome(_ envelope: [String: JSONValue], status: CallStatus, durationMs: Double) -> ToolOutcome {
        let bytes = JSONValue.object(envelope).canonicalBytes
        let duration = (durationMs * 1000).rounded() / 1000
        let limit = policy.sandbox.limits.output
        guard UInt64(bytes.count) <= limit else {
            let why = "ward: the server's answer (\(bytes.count) bytes) is larger than its policy's output limit (\(limit) bytes): not kept\n"
            return ToolOutcome(status: .failed, exitCode: nil, signal: nil, stdout: [], stderr: Array(why.utf8), truncated: true, durationMs: duration)
        }
        return ToolOutcome(status: status, exitCode: nil, signal: nil, stdout: bytes, stderr: [], truncated: false, durationMs: duration)
    }

    /// The host's answer for a recorded call: the server's own answer, with ward's `_meta`
    /// (call ID, replayed, status); a replay says so in its first content item. A call
    /// the server never answered (or that an operator settled) is an error result saying so.
    static func answer(_ result: CallResult) -> @Sendable (JSONValue) -> [UInt8] {
        let envelope = (try? JSONValue.parse(result.outcome.stdout))?.objectValue ?? [:]
        if let error = envelope["error"], result.resolution == nil {
            return { id in JSONValue.object(["jsonrpc": .string("2.0"), "id": id, "error": error]).canonicalBytes }
        }
        let ward: [String: JSONValue] = [
            MCPServer.callIdKey: .string(result.callId), "ward/replayed": .bool(result.replayed), "ward/status": .string(result.outcome.status.rawValue),
        ]
        var members: [String: JSONValue]
        if let answered = envelope["result"]?.objectValue, result.resolution == nil {
            members = answered
            if result.replayed {
                let note = JSONValue.object(["type": .string("text"), "text": .string("[ward: call \(result.callId) already ran; this is its recorded result, the tool did not run again]")])
                members["content"] = .array([note] + (answered["content"]?.arrayValue ?? []))
            }
        } else {
            // ward's own account (killed, timed out, not sent, settled), without a
            // structuredContent that the tool's outputSchema would not describe.
            members = MCPServer.content(result).objectValue ?? [:]
            members.removeValue(forKey: "structuredContent")
        }
        var meta = members["_meta"]?.objectValue ?? [:]
        meta.merge(ward) { _, ours in ours }
        members["_meta"] = .object(meta)
        let answered = JSONValue.object(members)
        return { id in RPCResponse.line(id: id, result: answered) }
    }
}
