import Synchronization
import WardCore
import WardLedger
import WardPolicy
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// The agent protocol (docs/design.md, *The protocol*) for one run: each method's params →
/// result, over the ledger and the sandbox. Thread-safe; a request blocks the calling thread
/// for as long as its tool runs, so callers give each request its own thread.
public final class Supervisor: Sendable {
    public let runID: String
    private let currentAttempt: Atomic<Int>
    /// The agent attempt now being served (ward run moves it on at each restart).
    public var attempt: Int {
        get { currentAttempt.load(ordering: .relaxed) }
        set { currentAttempt.store(newValue, ordering: .relaxed) }
    }
    public let ledger: Ledger
    public let sandbox: Sandbox
    let reconciler: Reconciler
    /// Set when the agent was told that a call is in doubt (an `in-doubt` error, or in-doubt
    /// calls in `run.resume`): restarting it would only meet the same refusal, so `ward run`
    /// waits for an operator instead (`takeToldInDoubt`).
    private let toldInDoubt = Atomic<Bool>(false)
    /// Set when the agent was told that a call awaits approval: restarting an agent that
    /// then exited would only meet the same gate, so `ward run` waits for the verdicts.
    private let toldAwaitingApproval = Atomic<Bool>(false)
    /// Set once ward is shutting down: an approved call must not start a tool that the
    /// shutdown would kill halfway (its approval spent on a `killed` outcome), so a request
    /// waiting for a verdict stops waiting and a verdict that lands meanwhile starts nothing.
    private let draining = Atomic<Bool>(false)

    /// ward is shutting down: requests waiting for a verdict are answered `awaiting-approval`.
    public func drain() { draining.store(true, ordering: .sequentiallyConsistent) }
    /// Policy hashes by tool: the policies do not change while a supervisor runs.
    private let policyHashes = Lock<[String: String]>([:])
    /// Longest accepted request line (docs/design.md, *The protocol*): 16 MiB.
    public static let maximumLineBytes = 16 << 20

    /// Held for the supervisor's life: no other supervisor serves this run meanwhile.
    let runLock: RunLock?
    /// How long `finish` retries a failed commit in line before the outcome is handed to
    /// `outcomes` and the agent is told it is not recorded yet.
    let finishRetry: Double
    /// Outcomes that ran but are not recorded yet, committed again until they land.
    let outcomes: OutcomeRetrier
    /// Where ward tells its operator what the agent may not see (stderr, "ward: …").
    let notify: @Sendable (String) -> Void
    /// Damaged checkpoints the operator was told of: once each, however often they are met.
    private let toldDamage = Lock<Set<Int>>([])

    public init(ledger: Ledger, sandbox: Sandbox, runID: String, attempt: Int, runLock: RunLock? = nil, finishRetry: Double = 10,
                notify: @escaping @Sendable (String) -> Void = Supervisor.notifyOnStderr) {
        self.runLock = runLock
        self.ledger = ledger
        self.sandbox = sandbox
        self.runID = runID
        self.finishRetry = finishRetry
        self.notify = notify
        currentAttempt = Atomic(attempt)
        reconciler = Reconciler(ledger: ledger, sandbox: sandbox)
        outcomes = OutcomeRetrier(ledger: ledger, notify: notify)
        // A lease lost (this process was paused, or cut off from a server's ledger, past its
        // lease): another supervisor may have judged its calls already. Their tools stop now,
        // rather than go on with effects whose outcomes would be fenced anyway.
        ledger.whenOwnerLost { [sandbox] in
            notify("this supervisor's lease on the ledger expired (it was paused or cut off from the server): "
                + "its running calls are stopped, and their outcomes are not recorded over what another supervisor decided")
            sandbox.terminateAll()
        }
    }

    deinit { outcomes.stop() }

    public static let notifyOnStderr: @Sendable (String) -> Void = { message in
        let line = Array("ward: \(message)\n".utf8)
        _ = line.withUnsafeBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }

    /// At ward's exit, once no request runs: outcomes not recorded yet get one more attempt,
    /// and more until they land or `seconds` pass. Returns how many could not be recorded
    /// (each one is reported through `notify`).
    @discardableResult
    public func recordPendingOutcomes(within seconds: Double) -> Int {
        outcomes.flush(within: seconds).count
    }

    // MARK: - JSON-RPC framing

    /// Handles one request line; returns the response line (without the newline), or nil
    /// for a notification (a request without an id).
    public func handle(line: [UInt8]) -> [UInt8]? {
        let request: RPCRequest
        switch RPCRequest.decode(line) {
        case .success(let r): request = r
        case .failure(let refusal): return refusal.silent ? nil : RPCResponse.line(id: refusal.id, error: refusal.error)
        }
        let outcome: Result<JSONValue, RPCError>
        do { outcome = .success(try handle(method: request.method, params: request.params)) } catch { outcome = .failure(error) }
        guard let id = request.id else { return nil }
        switch outcome {
        case .success(let result): return RPCResponse.line(id: id, result: result)
        case .failure(let error): return RPCResponse.line(id: id, error: error)
        }
    }

    // MARK: - Methods

    /// Runs one method. Its params are checked member by member before anything is read
    /// from or written to the ledger (`Params`): a bad value is an `invalid-arguments` error
    /// naming the member, never a trap, so one agent cannot take down the calls of others.
    public func handle(method: String, params: JSONValue) throws(RPCError) -> JSONValue {
        switch method {
        case "run.resume":
            _ = try Params(method: method, params, known: [])
            return try resume()
        case "tool.call":
            do { return try toolCall(Params(method: method, params, known: ["callId", "tool", "arguments", "checkpoint", "approvalTimeout"])) } catch where error.kind == .inDoubt {
                toldInDoubt.store(true, ordering: .relaxed)
                throw error
            } catch where error.kind == .awaitingApproval {
                toldAwaitingApproval.store(true, ordering: .relaxed)
                throw error
            }
        case "checkpoint.save": return try checkpointSave(Params(method: method, params, known: ["state", "label"]))
        case "checkpoint.load": return try checkpointLoad(Params(method: method, params, known: ["seq"]))
        case "journal.record": return try journalRecord(Params(method: method, params, known: ["key", "value"]))
        default:
            throw RPCError(.invalidArguments, "unknown method \(Params.quote(method)) (methods: \(Supervisor.methods.joined(separator: ", ")))",
                           code: -32601, field: "method")
        }
    }

    /// The methods of the agent protocol.
    public static let methods = ["run.resume", "tool.call", "checkpoint.save", "checkpoint.load", "journal.record"]

    func ledgerCall<T>(_ body: () throws(LedgerError) -> T) throws(RPCError) -> T {
        do { return try body() } catch { throw RPCError(error) }
    }

    /// Whether the agent was told of a call in doubt since the last time this was asked.
    public func takeToldInDoubt() -> Bool { toldInDoubt.exchange(false, ordering: .relaxed) }

    /// Whether the agent was told of a call awaiting approval since the last time this was asked.
    public func takeToldAwaitingApproval() -> Bool { toldAwaitingApproval.exchange(false, ordering: .relaxed) }

    func resume() throws(RPCError) -> JSONValue {
        let (checkpoint, damaged) = try usableCheckpoint(seq: nil)
        let completed = try ledgerCall { () throws(LedgerError) in try ledger.completedSince(run: runID, checkpoint: checkpoint?.seq) }
        let inDoubt = try ledgerCall { () throws(LedgerError) in try ledger.inDoubtCalls(run: runID) }
        let notExecuted = try ledgerCall { () throws(LedgerError) in try ledger.notExecutedCalls(run: runID) }
        let awaiting = try ledgerCall { () throws(LedgerError) in try ledger.pendingApprovals(run: runID) }
        if !inDoubt.isEmpty { toldInDoubt.store(true, ordering: .relaxed) }
        if !awaiting.isEmpty { toldAwaitingApproval.store(true, ordering: .relaxed) }
        return .object([
            "runId": .string(runID),
            "attempt": .number(Double(attempt)),
            "checkpoint": try Supervisor.checkpoint(checkpoint, damaged: damaged),
            "completedSince": .array(completed.map(\.json)),
            "inDoubt": .array(inDoubt.map { .string($0.callId) }),
            "notExecuted": .array(notExecuted.map { .string($0) }),
            "awaitingApproval": .array(awaiting.map { .string($0.callId) }),
        ])
    }

    static func state(_ bytes: [UInt8]) throws(RPCError) -> JSONValue {
        do { return try JSONValue.parse(bytes) } catch { throw RPCError(.storage, "a stored checkpoint is not valid JSON") }
    }

    /// The checkpoint to resume from: `seq` (the latest when nil), or the last good one
    /// before it when that one is damaged. A damaged checkpoint is reported (in the answer,
    /// as a `checkpoint.damaged` event, to the operator), never an error that would fail
    /// every load and every resume of the run from then on.
    func usableCheckpoint(seq: Int?) throws(RPCError) -> (checkpoint: (seq: Int, state: [UInt8], callId: String?)?, damaged: [DamagedCheckpoint]) {
        let found = try ledgerCall { () throws(LedgerError) in try ledger.loadUsableCheckpoint(run: runID, seq: seq) }
        for d in found.damaged where toldDamage.withLock({ $0.insert(d.seq).inserted }) {
            notify("checkpoint \(d.seq) of run \(runID) is damaged and skipped: \(d.problem)")
        }
        return found
    }

    /// `{seq, state, callId?, damaged?}` (`callId`: the call it was handed in with, whose
    /// state before the call it is; `damaged`: the checkpoints skipped for this one), or null.
    static func checkpoint(_ c: (seq: Int, state: [UInt8], callId: String?)?, damaged: [DamagedCheckpoint]) throws(RPCError) -> JSONValue {
        guard let c else { return .null }
        var members: [String: JSONValue] = ["seq": .number(Double(c.seq)), "state": try state(c.state)]
        if let callId = c.callId { members["callId"] = .string(callId) }
        if !damaged.isEmpty { members["damaged"] = .array(damaged.map(\.json)) }
        return .object(members)
    }

    func checkpointSave(_ p: Params) throws(RPCError) -> JSONValue {
        guard let state = p.value("state") else { throw p.error("state", "is required (any JSON value)") }
        let label = try p.identifier("label", required: false)
        let seq = try ledgerCall { () throws(LedgerError) in try ledger.saveCheckpoint(run: runID, state: state.canonicalBytes, label: label) }
        return .object(["seq": .number(Double(seq))])
    }

    func checkpointLoad(_ p: Params) throws(RPCError) -> JSONValue {
        let seq = try p.integer("seq", in: 1...Params.maximumInteger)
        let (checkpoint, damaged) = try usableCheckpoint(seq: seq)
        return try Supervisor.checkpoint(checkpoint, damaged: damaged)
    }

    func journalRecord(_ p: Params) throws(RPCError) -> JSONValue {
        let key = try p.identifier("key", required: true)!
        guard let value = p.value("value") else {
            // Without a value: look up only (so a client calls the model only when nothing is recorded).
            let found = try ledgerCall { () throws(LedgerError) in try ledger.journalLookup(run: runID, key: key) }
            return .object(["value": found ?? .null, "recorded": .bool(false), "found": .bool(found != nil)])
        }
        let (recorded, isNew) = try ledgerCall { () throws(LedgerError) in try ledger.journalRecord(run: runID, key: key, value: value) }
        return .object(["value": recorded, "recorded": .bool(isNew)])
    }

    // MARK: - tool.call

    func toolCall(_ p: Params) throws(RPCError) -> JSONValue {
        let callId = try p.identifier("callId", required: true)!
        let requested = try p.identifier("tool", required: true)!
        let arguments = JSONValue.object(try p.object("arguments") ?? [:])
        let approvalTimeout = try p.seconds("approvalTimeout", upTo: Supervisor.longestApprovalWait) ?? 0
        return try call(tool: requested, arguments: arguments, callId: callId, checkpoint: p.value("checkpoint").map(\.canonicalBytes),
                        approvalTimeout: approvalTimeout).json
    }

    /// The longest an agent may wait in one `tool.call` for a gated call's verdict (a day);
    /// it may ask again, with the same call ID, for as long as it likes.
    public static let longestApprovalWait = 86_400.0

    /// A tool call: replayed from the ledger, or run in the sandbox with its start and its
    /// outcome recorded (the agent protocol's `tool.call`, and `ward mcp`'s `tools/call`).
    /// - Parameters:
    ///   - checkpoint: the agent's state, stored with the `running` record.
    ///   - awaitsDelivery: the client may lose the answer (`BeginRequest.awaitsDelivery`).
    ///   - cancellation: lets another thread kill the tool; the call ends `killed`.
    ///   - approvalTimeout: how long to wait for the verdict on a gated call before the
    ///     `awaiting-approval` error (seconds; 0 answers at once).
    public func call(tool requested: String, arguments: JSONValue, callId: String, checkpoint: [UInt8]? = nil,
                     awaitsDelivery: Bool = false, cancellation: CallCancellation? = nil, approvalTimeout: Double = 0) throws(RPCError) -> CallResult {
        // Tool names match byte for byte: Swift's String equality would let "\u{212A}" (Kelvin
        // sign) find the tool "K", and the ledger would record a name no policy has.
        guard let policy = sandbox.policies.tools[requested], policy.name.utf8.elementsEqual(requested.utf8) else {
            throw RPCError(.unknownTool, "tool.call: unknown tool \(Params.quote(requested)) (known: \(sandbox.policies.tools.keys.sorted().joined(separator: ", ")))",
                           field: "tool")
        }
        let tool = policy.name
        // Bad arguments are refused before anything is recorded.
        let executable: String
        do { executable = try sandbox.check(tool: tool, arguments: arguments) } catch { throw RPCError(error) }
        let request = BeginRequest(run: runID, callId: callId, tool: tool, effect: CallEffect(policy.effect), arguments: arguments,
                                   policyHash: policyHash(policy), executable: executable, attempt: attempt,
                                   checkpoint: checkpoint, awaitsDelivery: awaitsDelivery, gated: policy.approve)
        let environment = Reconciler.environment(run: runID, callId: callId)
        let launch = Launch(tool: tool, arguments: arguments, environment: environment, cancellation: cancellation)
        // Given up before anything was recorded: nothing runs and nothing is recorded.
        if cancellation?.isCancelled == true { throw RPCError(.internal, "call \(callId) was cancelled before it started") }
        switch try begin(request, timeoutMilliseconds: policy.timeoutMilliseconds, reconcilable: policy.reconcile != nil, launch: launch,
                         approvalTimeout: approvalTimeout) {
        case (.replay(let result), _): return result
        case (.execute(let ticket), let parked): return try execute(ticket, policy: policy, parked: parked, launch: launch)
        }
    }

    /// What the sandbox needs to start a call's tool.
    struct Launch {
        var tool: String
        var arguments: JSONValue
        var environment: [(String, String)]
        var cancellation: CallCancellation?
    }

    /// The ledger's decision on a request, after waiting for a call that another owner runs
    /// and reconciling (once) a call in doubt: replay it, or execute it. A call the ledger
    /// does not hold yet (the common case) gets its child made and confined first, parked at
    /// its gate, so the spawn overlaps the writing and fsync of its `running` record; the
    /// tool itself starts only once that record is durable (`execute`). Without `launch`
    /// (a call forwarded elsewhere), nothing is parked. A gated call waits for its verdict
    /// up to `approvalTimeout` seconds, then is refused with `awaiting-approval`.
    func begin(_ request: BeginRequest, timeoutMilliseconds: UInt64, reconcilable: Bool, launch: Launch?,
               approvalTimeout: Double = 0) throws(RPCError) -> (BeginDecision, SandboxCall?) {
        var request = request
        var reconciled = false
        let approvalDeadline = ContinuousClock.now + .milliseconds(Int(min(max(approvalTimeout, 0), Supervisor.longestApprovalWait) * 1000))
        while true {
            var parked: SandboxCall?
            // A gated call's child is never made ahead: most wait far longer than a spawn
            // takes, and one approved runs in the path that makes its child then.
            if let launch, !request.gated, (try? ledger.state(run: runID, callId: request.callId)) == nil {
                parked = try? sandbox.prepareCall(tool: launch.tool, arguments: launch.arguments, environment: launch.environment)
                parked?.park()
            }
            do {
                let decision = try ledger.begin(request)
                if case .replay = decision { parked?.cancel() }
                return (decision, parked)
            } catch where error.code == .inProgress {
                parked?.cancel()
                // Never a second child: wait for the one that runs.
                let wait = Double(timeoutMilliseconds) / 1000 + 10
                // It ran here, and its outcome waits for the disk: the real result once it
                // is recorded, or the reason it is not yet.
                switch outcomes.wait(run: runID, callId: request.callId, timeout: wait) {
                case .pending(let last)?:
                    throw RPCError(.storage, "call \(request.callId) of run \(runID) ran, but its outcome is not recorded yet (\(last.message)); "
                                   + "ward keeps trying: ask again for its result")
                case .settled?: continue
                case nil: break
                }
                let result = try ledgerCall { () throws(LedgerError) in try ledger.awaitOutcome(run: runID, callId: request.callId, timeout: wait) }
                if let result { return (.replay(result), nil) }
                // Its process died: begin decides again.
            } catch where error.code == .awaitingApproval {
                parked?.cancel()
                let left = Double((approvalDeadline - ContinuousClock.now) / .milliseconds(1)) / 1000
                let stopping = { self.draining.load(ordering: .sequentiallyConsistent) }
                guard left > 0, try ledgerCall({ () throws(LedgerError) in
                    try ledger.awaitVerdict(run: runID, callId: request.callId, timeout: left, stop: stopping)
                }) else {
                    throw RPCError(error)
                }
                if stopping() {
                    throw RPCError(.internal, "call \(request.callId) of run \(runID): ward is shutting down and starts nothing now; "
                                   + "its verdict stands: ask for it again once ward is back")
                }
                // The agent's state before the call went in with the gate, or with the
                // request that made it: the run goes on from the verdict without another.
                request.checkpoint = nil
            } catch where error.code == .inDoubt && !reconciled && reconcilable {
                parked?.cancel()
                reconciled = true
                let calls = try ledgerCall { () throws(LedgerError) in try ledger.inDoubtCalls(run: runID, callId: request.callId) }
                for call in calls { _ = try ledgerCall { () throws(LedgerError) in try reconciler.reconcile(call) } }
            } catch {
                parked?.cancel()
                throw RPCError(error)
            }
        }
    }

    /// Runs a call whose `running` record is durable and records its outcome.
    func execute(_ first: CallTicket, policy: ToolPolicy, parked: SandboxCall?, launch: Launch) throws(RPCError) -> CallResult {
        var ticket = first
        // A non-idempotent call's output is captured as it comes: if ward dies mid-call, it
        // is the operator's evidence of how far the tool got.
        let capture = policy.effect == .nonIdempotent ? ledger.openCapture(ticket) : nil
        var parked = parked
        while true {
            let end: SandboxCall.End
            if launch.cancellation?.isCancelled == true {
                // Cancelled while its start was being recorded: the tool never starts, and
                // the call ends killed (its record says it was begun).
                parked?.cancel()
                return try record(ticket, ToolOutcome(status: .killed, exitCode: nil, signal: nil, stdout: [],
                                                      stderr: Array("ward: cancelled before the tool started\n".utf8), truncated: false, durationMs: 0))
            } else if let call = parked {
                end = call.start(capture: capture?.fd ?? -1, cancellation: launch.cancellation)
                parked = nil
            } else {
                do throws(SandboxError) {
                    end = try sandbox.prepareCall(tool: launch.tool, arguments: launch.arguments, environment: launch.environment)
                        .start(capture: capture?.fd ?? -1, cancellation: launch.cancellation)
                } catch {
                    end = .refused(error)
                }
            }
            switch end {
            case .finished(let outcome):
                return try record(ticket, outcome)
            case .refused(let error):
                // Recorded as denied: the policy or the kernel refused to start it.
                return try record(ticket, ToolOutcome(status: .denied, exitCode: nil, signal: nil, stdout: [],
                                                      stderr: Array("ward: \(error)\n".utf8), truncated: false, durationMs: 0))
            case .lostStart where policy.effect != .nonIdempotent && ticket.execution == first.execution:
                // Repeating it is harmless: started afresh, once, as an execution of its own
                // in the ledger (the lost start may have run the tool).
                ticket = try ledgerCall { () throws(LedgerError) in try ledger.runAgain(ticket) }
            case .lostStart(let error):
                // It may have run: never run it again on a guess (docs/design.md, "A
                // non-idempotent call never runs twice").
                try ledgerCall { () throws(LedgerError) in try ledger.markInDoubt(ticket, reason: error.message) }
                throw RPCError(.inDoubt, "call \(ticket.callId) of run \(runID): \(error.message); \(ledger.settleHint(run: runID, callId: ticket.callId))")
            }
        }
    }

    /// Records a call's outcome. One that cannot be committed within `finishRetry` (the
    /// disk is full) is kept and committed again until it lands: its call must not stay
    /// `running` for as long as ward lives, nor its output be lost. Until then the agent
    /// gets a storage error, and a repeated request waits for the real result.
    func record(_ ticket: CallTicket, _ outcome: ToolOutcome) throws(RPCError) -> CallResult {
        do {
            return try ledger.finish(ticket, outcome: outcome, retryFor: finishRetry)
        } catch where error.code == .storage {
            outcomes.hand(ticket, outcome: outcome, error: error)
            throw RPCError(.storage, "call \(ticket.callId) of run \(ticket.run) ran, but its outcome could not be recorded (\(error.message)); "
                           + "ward keeps trying: ask again for its result")
        } catch {
            throw RPCError(error)
        }
    }

    func policyHash(_ p: ToolPolicy) -> String {
        if let hash = policyHashes.withLock({ $0[p.name] }) { return hash }
        let hash = Supervisor.policyHash(p)
        policyHashes.withLock { $0[p.name] = hash }
        return hash
    }

    /// SHA-256 of the canonical JSON of a tool's effective policy: recorded with every call,
    /// so an audit shows when a tool's sandbox changed.
    public static func policyHash(_ p: ToolPolicy) -> String {
        let json = JSONValue.object([
            "command": .array(p.command.map { .string($0) }), "effect": .string(p.effect.rawValue),
            "syscalls": .array(p.syscalls.map { .string($0) }), "network": .string(p.network.rawValue),
            "read": .array(p.read.map { .string($0) }), "write": .array(p.write.map { .string($0) }),
            "env": .array(p.environment.map { e in
                switch e {
                case .inherit(let n): .string(n)
                case .set(let n, let v): .string(n + "=" + v)
                }
            }),
            "timeoutMs": .number(Double(p.timeoutMilliseconds)),
            "limits": .object([
                "memory": p.limits.memory.map { .number(Double($0)) } ?? .null, "cpu": p.limits.cpuSeconds.map { .number(Double($0)) } ?? .null,
                "processes": p.limits.processes.map { .number(Double($0)) } ?? .null, "fileSize": p.limits.fileSize.map { .number(Double($0)) } ?? .null,
                "openFiles": p.limits.openFiles.map { .number(Double($0)) } ?? .null, "output": .number(Double(p.limits.output)),
            ]),
            "reconcile": p.reconcile.map { .array($0.map { .string($0) }) } ?? .null,
            // Which argument names it accepts decides which calls run at all.
            "arguments": p.arguments.map { .array($0.map { .string($0) }) } ?? .null,
        ])
        let traceOverridden = p.traced != (p.effect == .nonIdempotent)
        guard p.approve || traceOverridden, case .object(var members) = json else { return Ledger.sha256Hex(json.canonicalBytes) }
        // Whether calls wait for a verdict decides which run at all, and whether they are
        // traced what their record holds; each present only when it departs from the
        // default, so that other tools' hashes are what they always were.
        if p.approve { members["approve"] = .bool(true) }
        if traceOverridden { members["trace"] = .bool(p.traced) }
        return Ledger.sha256Hex(JSONValue.object(members).canonicalBytes)
    }
}

extension CallEffect {
    init(_ effect: Effect) {
        switch effect {
        case .readOnly: self = .readOnly
        case .idempotent: self = .idempotent
        case .nonIdempotent: self = .nonIdempotent
        }
    }
}
