import Dispatch
import WardCore
import WardLedger
import WardSandbox
import WardSupervisor

/// A gated tool's call (`approve = true`) asked of the host's user, where the host declared
/// the `elicitation` capability: its answer is recorded as the verdict `ward approve` or
/// `ward deny` would record, naming the host (docs/design.md, "Approval gates"). A host
/// without it gets a result that says how an operator approves the call.
extension MCPServer {
    /// What the host said of itself in `initialize`: whether it can ask its user
    /// (`capabilities.elicitation`), and its name for the record of a verdict.
    struct Host: Sendable {
        var elicits = false
        var name = "an MCP host"
    }

    /// A request ward made of the host, waiting for its answer.
    final class Asked: Sendable {
        let answer = Lock<[String: JSONValue]?>(nil)
        let arrived = DispatchSemaphore(value: 0)
    }

    /// Reads the host's capabilities and name from `initialize`'s params.
    static func host(_ params: JSONValue) -> Host {
        let p = params.objectValue ?? [:]
        var host = Host()
        host.elicits = p["capabilities"]?.objectValue?["elicitation"] != nil
        if let name = p["clientInfo"]?.objectValue?["name"]?.stringValue, Identifier.problem(in: name) == nil { host.name = name }
        return host
    }

    /// An answer to a request ward made of the host: handed to the thread waiting for it.
    func answered(_ members: [String: JSONValue]) {
        guard let id = members["id"], let asked = asking.withLock({ $0.removeValue(forKey: id.canonical) }) else { return }
        asked.answer.withLock { $0 = members }
        asked.arrived.signal()
    }

    /// Asks the host's user whether a gated call may run, and records the answer as the
    /// call's verdict. Returns whether a verdict now exists (the caller asks for the call
    /// again: it runs, or replays as denied); false when the host cannot ask, its user
    /// cancelled, or the host's call was cancelled meanwhile: the call still waits.
    func askHostToApprove(_ request: Request, callId: String, supervisor: Supervisor, cancellation: CallCancellation) -> Bool {
        let host = self.host.withLock { $0 }
        guard host.elicits else { return false }
        /// Whether to stop waiting for the host: its call was cancelled, or its input ended.
        let givenUp = { cancellation.isCancelled || self.inputEnded.withLock { $0 } }
        /// Whether the call has a verdict now (`ward approve`, or another request's prompt).
        let settled = { (try? supervisor.ledger.state(run: supervisor.runID, callId: callId)).map { $0 != .awaitingApproval } ?? false }
        // One prompt per call: a repeat of it while the host's user is asked waits for that answer.
        guard prompting.withLock({ $0.insert(callId).inserted }) else {
            // No time limit: the answer, or the host giving up, ends it. A ledger that cannot
            // be read ends it too, the call still waiting.
            return (try? supervisor.ledger.awaitVerdict(run: supervisor.runID, callId: callId, timeout: .infinity, stop: givenUp)) ?? false
        }
        defer { _ = prompting.withLock { $0.remove(callId) } }
        let id = JSONValue.string("ward-approval-\(MCPServer.randomHex())")
        let asked = Asked()
        asking.withLock { $0[id.canonical] = asked }
        defer { _ = asking.withLock { $0.removeValue(forKey: id.canonical) } }
        let message = """
            ward: the agent asks to run \(request.tool.policy.name) (\(request.tool.policy.effect.rawValue)) with \(request.arguments.canonical). \
            Its policy needs your approval for each call; it runs once if you approve (run \(supervisor.runID), call \(callId)).
            """
        let schema = JSONValue.object([
            "type": .string("object"),
            "properties": .object([
                "approve": .object(["type": .string("boolean"), "title": .string("Approve"), "description": .string("Run this call, once")]),
                "note": .object(["type": .string("string"), "title": .string("Note"), "description": .string("Why (kept in ward's ledger)")]),
            ]),
            "required": .array([.string("approve")]),
        ])
        let sent = send(JSONValue.object([
            "jsonrpc": .string("2.0"), "id": id, "method": .string("elicitation/create"),
            "params": .object(["message": .string(message), "requestedSchema": schema]),
        ]).canonicalBytes)
        guard sent else { return false }
        // The user may take minutes. The host's cancellation of the call, or the end of its
        // input, ends the wait; an operator's verdict meanwhile (`ward approve`) settles it.
        while asked.arrived.wait(timeout: .now() + .milliseconds(200)) == .timedOut {
            if settled() { return true }
            if givenUp() { return false }
        }
        guard let answer = asked.answer.withLock({ $0 }), let result = answer["result"]?.objectValue,
              let action = result["action"]?.stringValue, action != "cancel" else { return false }
        let content = result["content"]?.objectValue ?? [:]
        let approve = action == "accept" && content["approve"] == .bool(true)
        let note = content["note"]?.stringValue ?? (approve ? "" : "declined in \(host.name)")
        do throws(LedgerError) {
            try supervisor.ledger.settleApproval(run: supervisor.runID, callId: callId, approve: approve, note: note, via: host.name)
        } catch where error.code == .invalid {
            // An operator's verdict came first (`ward approve`): it stands.
        } catch {
            log("the host's verdict on call \(callId) could not be recorded (\(error.message)): the call still waits")
            return false
        }
        return true
    }
}
