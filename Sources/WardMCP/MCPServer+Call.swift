import WardCore
import WardLedger
import WardPolicy
import WardSandbox
import WardSupervisor

/// `tools/call`: which ledger call a request is, running it, and its answer in MCP's terms.
extension MCPServer {
    /// The `_meta` key of a stable call ID (docs/design.md, *MCP*).
    public static let callIdKey = "ward/callId"

    enum Outcome {
        /// A `CallTool` result; with the call whose answer it carries, when its delivery is
        /// recorded once the answer is written.
        case answered(JSONValue, delivery: (supervisor: Supervisor, callId: String)?)
        /// A protocol error: an unknown tool, malformed params.
        case refused(RPCError)
    }

    /// A `tools/call` request, checked.
    struct Request: Sendable {
        let tool: MCPTool
        let arguments: JSONValue
        /// `Ledger.argumentsHash(arguments)`, once for the lookups it serves.
        let argsHash: String
        let stable: String?
    }

    /// Reads a `tools/call`'s params: its tool, arguments and call ID, before anything runs.
    func parse(_ params: JSONValue) -> Result<Request, RPCError> {
        do throws(RPCError) {
            let p = try Params(method: "tools/call", params, known: ["name", "arguments", "_meta", "idempotencyKey"])
            guard let name = p.value("name")?.stringValue else { throw p.error("name", "is required (a string)") }
            guard let tool = tools[name] else {
                throw RPCError(.unknownTool, "unknown tool \(Params.quote(name)) (tools: \(tools.keys.sorted().joined(separator: ", ")))",
                               code: -32602, field: "name")
            }
            let arguments = JSONValue.object(try p.object("arguments") ?? [:])
            return .success(Request(tool: tool, arguments: arguments, argsHash: Ledger.argumentsHash(arguments), stable: try MCPServer.stableID(p)))
        } catch {
            return .failure(error)
        }
    }

    /// As a request arrives, before it runs: the host asked for something, so the answers it
    /// had read reached it, unless this repeats one (`Ledger.confirmDeliveries`). Done on the
    /// reading thread, in the order requests come.
    func arrived(_ request: Request) {
        guard case .success(let supervisor) = self.supervisor.get() else { return }
        out.collect()
        do throws(LedgerError) {
            try supervisor.ledger.confirmDeliveries(run: supervisor.runID, asking: request.tool.policy.name, argsHash: request.argsHash)
        } catch {
            log("deliveries could not be recorded (\(error.message)): repeats of those calls will be answered from the ledger")
        }
    }

    func call(_ parsed: Result<Request, RPCError>, cancellation: CallCancellation) -> Outcome {
        let request: Request
        switch parsed {
        case .success(let r): request = r
        case .failure(let error): return .refused(error)
        }
        let supervisor: Supervisor
        switch self.supervisor.get() {
        case .success(let s): supervisor = s
        case .failure(let error): return .refused(error)
        }
        let policy = request.tool.policy
        var callId: String?
        do throws(RPCError) {
            callId = try MCPServer.callID(stable: request.stable, tool: policy.name, effect: policy.effect, gated: policy.approve,
                                          argsHash: request.argsHash, in: supervisor)
            let result: CallResult
            do {
                result = try supervisor.call(tool: policy.name, arguments: request.arguments, callId: callId!,
                                             awaitsDelivery: true, cancellation: cancellation)
            } catch where error.kind == .awaitingApproval && askHostToApprove(request, callId: callId!, supervisor: supervisor, cancellation: cancellation) {
                // The host's user gave the verdict: the call runs now, or replays as denied.
                result = try supervisor.call(tool: policy.name, arguments: request.arguments, callId: callId!,
                                             awaitsDelivery: true, cancellation: cancellation)
            }
            return .answered(MCPServer.content(result), delivery: (supervisor, result.callId))
        } catch {
            switch error.kind {
            case .unknownTool, .invalidArguments, .tooLarge: return .refused(error)
            // ward refused to run it (in doubt, a conflict, a full disk): the model is told
            // why, in a result it can read, and how the operator settles it.
            default: return .answered(MCPServer.refusal(error, callId: callId), delivery: nil)
            }
        }
    }

    /// The call ID a client chose: `_meta["ward/callId"]`, else an `idempotencyKey` param.
    static func stableID(_ p: Params) throws(RPCError) -> String? {
        if let meta = p.value("_meta"), meta != .null {
            guard let members = meta.objectValue else { throw p.error("_meta", "must be an object, not \(meta.typeName)") }
            if let id = members[callIdKey], id != .null {
                guard let text = id.stringValue else { throw p.error("_meta", "\(callIdKey) must be a string, not \(id.typeName)") }
                if let problem = Identifier.problem(in: text) { throw p.error("_meta", "\(callIdKey) \(problem)") }
                return text
            }
        }
        return try p.identifier("idempotencyKey", required: false)
    }

    /// Which recorded call a request is. A stable ID is the client's word: that call,
    /// replayed when the ledger holds it, a new one otherwise (a retry keeps its ID). Without
    /// one, for a tool that is not idempotent, a call of the run with the same tool and
    /// arguments whose answer has not reached the host (running, in doubt, or answered
    /// without the host going on: `Delivery`) is the one the host is repeating: it gets that
    /// call's outcome, never a second execution. Else a new ID: for a non-idempotent tool,
    /// derived from the tool and arguments and numbered past the ones already answered, so
    /// two identical requests at once are one call (the ledger runs it once and the other
    /// waits for it); for any other tool, random (it may simply run again).
    static func callID(stable: String?, tool: String, effect: Effect, gated: Bool, argsHash: String, in supervisor: Supervisor) throws(RPCError) -> String {
        if let stable { return stable }
        let ledger = supervisor.ledger
        let run = supervisor.runID
        do throws(LedgerError) {
            // A gated call is found again whatever its effect: a repeat must meet its gate
            // (and its verdict), never make another.
            guard effect == .nonIdempotent || gated else { return "mcp-" + randomHex() }
            if let unanswered = try ledger.undeliveredCall(run: run, tool: tool, argsHash: argsHash) { return unanswered }
            let prefix = "mcp-" + Ledger.sha256Hex(Array((tool + "\u{0}" + argsHash).utf8)).prefix(24) + "-"
            return prefix + String(try ledger.lastNumber(run: run, prefix: prefix) + 1)
        } catch {
            throw RPCError(error)
        }
    }

    static func randomHex() -> String {
        var rng = SystemRandomNumberGenerator()
        return (0..<4).map { _ in
            let v = rng.next() as UInt32
            let s = String(v, radix: 16)
            return String(repeating: "0", count: 8 - s.count) + s
        }.joined()
    }

    /// A CallResult as a `CallTool` result: the output as text the model can act on, the
    /// whole result as `structuredContent`, and `isError` for a tool that did not succeed.
    static func content(_ result: CallResult) -> JSONValue {
        let outcome = result.outcome
        var lines: [String] = []
        if result.replayed && outcome.status == .denied {
            // A denied call never ran: refused by its policy or the kernel, or by a person's verdict.
            lines.append("[ward: call \(result.callId) was denied before; this is its recorded answer, nothing ran]")
        } else if result.replayed {
            lines.append("[ward: call \(result.callId) already ran; this is its recorded result, the tool did not run again]")
        }
        let stdout = String(decoding: outcome.stdout, as: UTF8.self)
        let stderr = String(decoding: outcome.stderr, as: UTF8.self)
        let ok = outcome.status == .succeeded || outcome.status == .resolved
        if !ok {
            let how = switch outcome.status {
            case .failed: "exited with status \(outcome.exitCode.map(String.init) ?? "?")"
            case .timedOut: "timed out and was killed"
            case .killed: "was killed\(outcome.signal.map { " by signal \($0)" } ?? "")"
            case .denied: "was denied, and did not run (by its policy, the kernel, or a person: the reason is below)"
            default: outcome.status.rawValue
            }
            lines.append("\(result.tool) \(how)")
        }
        if let resolution = result.resolution {
            lines.append("[ward: settled as \(resolution.verdict.rawValue) by \(resolution.by)\(resolution.note.isEmpty ? "" : ": \(resolution.note)")]")
        }
        if !stdout.isEmpty { lines.append(ok && stderr.isEmpty ? stdout : "stdout:\n" + stdout) }
        if !stderr.isEmpty { lines.append("stderr:\n" + stderr) }
        if outcome.truncated { lines.append("[ward: output truncated at the policy's limit]") }
        return .object([
            "content": .array([.object(["type": .string("text"), "text": .string(lines.joined(separator: "\n"))])]),
            "structuredContent": result.json,
            "isError": .bool(!ok),
            "_meta": .object([
                callIdKey: .string(result.callId), "ward/replayed": .bool(result.replayed), "ward/status": .string(outcome.status.rawValue),
            ]),
        ])
    }

    /// ward's refusal to run a call, as a result the model reads: one line and the command
    /// that settles it.
    static func refusal(_ error: RPCError, callId: String?) -> JSONValue {
        let why = switch error.kind {
        case .inDoubt: "not run: the call is in doubt (it may have run, and how it ended is not recorded)"
        case .conflict: "not run: the call ID was used for another call"
        case .inProgress: "not run yet: the call is still running elsewhere"
        case .awaitingApproval: "not run yet: its tool needs an operator's approval, and the call waits for it (nothing ran)"
        case .policyDenied: "not run: its policy refuses it"
        case .storage: "the ledger could not record it"
        default: "failed"
        }
        return .object([
            "content": .array([.object(["type": .string("text"), "text": .string("ward: \(why). \(error.message)")])]),
            "isError": .bool(true),
            "_meta": .object(["ward/error": .string(error.kind.rawValue), callIdKey: callId.map { .string($0) } ?? .null]),
        ])
    }
}
