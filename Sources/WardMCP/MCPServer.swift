import Dispatch
import Foundation
import CWardOS
import WardCore
import WardLedger
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// ward as an MCP server over stdio (docs/design.md, *MCP*): newline-delimited JSON-RPC in
/// on stdin, out on stdout and nothing else there; ward's own messages go to stderr. Each
/// `tools/call` runs on a thread of its own through the supervisor, so a slow tool never
/// holds up `ping`, `tools/list` or another call. At the end of stdin it stops reading and
/// returns once every call in flight is recorded and answered.
///
/// The framing is ward's own (`LineFramer`, `RPCRequest`) rather than an SDK's: a line
/// longer than the limit is refused as it arrives instead of buffered, a malformed line is
/// answered with `id: null`, the calls in flight are waited for at the end of input, and a
/// cancelled call's answer is never written.
public final class MCPServer: Sendable {
    /// The protocol revisions ward speaks, newest first: a client asking for another is
    /// offered the newest (it may then disconnect).
    public static let protocolVersions = ["2025-11-25", "2025-06-18", "2025-03-26"]
    /// Longest accepted line, as on ward's socket.
    public static let maximumLineBytes = Supervisor.maximumLineBytes

    let tools: [String: MCPTool]
    let listed: JSONValue
    let version: String
    let input: Int32
    let output: Int32
    let supervisor: Opened
    /// Requests running now, by their id's canonical JSON.
    private let running = Lock<[String: Running]>([:])
    /// stdout: whole lines only (concurrent answers and notifications never interleave),
    /// and which answers the host has read.
    let out: Deliveries
    private let calls = DispatchGroup()
    let log: @Sendable (String) -> Void
    /// What the host said of itself in `initialize` (`MCPServer+Approval`).
    let host = Lock(Host())
    /// Requests ward made of the host (`elicitation/create`), by their id's canonical JSON.
    let asking = Lock<[String: Asked]>([:])
    /// Calls whose approval the host's user is being asked for: one prompt per call.
    let prompting = Lock<Set<String>>([])
    /// The host's input ended: nothing it would answer can come any more.
    let inputEnded = Lock(false)

    /// - Parameters:
    ///   - open: makes the supervisor (ledger, sandbox, run); started at once on a thread of
    ///     its own, so `initialize` is answered before it is done.
    public init(tools: [MCPTool], version: String, input: Int32 = 0, output: Int32 = 1,
                log: @escaping @Sendable (String) -> Void = MCPServer.logOnStderr,
                open: @escaping @Sendable () throws -> Supervisor) {
        self.tools = Dictionary(uniqueKeysWithValues: tools.map { ($0.name, $0) })
        listed = .object(["tools": .array(tools.map(\.json))])
        self.version = version
        self.input = input
        self.output = output
        self.log = log
        supervisor = Opened(open)
        out = Deliveries(fd: output)
    }

    public static let logOnStderr: @Sendable (String) -> Void = { message in
        _ = OS.writeAll(2, Array("ward mcp: \(message)\n".utf8))
    }

    /// Serves until stdin ends, then waits for the calls in flight. Returns the supervisor,
    /// nil when it could not be opened (for the caller to record outcomes still pending).
    @discardableResult
    public func serve() -> Supervisor? {
        // A host that closed its end must not kill ward with SIGPIPE mid-record.
        signal(SIGPIPE, SIG_IGN)
        // A host that left its pipes non-blocking (a Node wrapper) must not make an empty
        // pipe look like the end of input, or a full one like a closed host.
        for fd in [input, output] {
            let flags = fcntl(fd, F_GETFL)
            if flags >= 0 && flags & O_NONBLOCK != 0 { _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) }
        }
        MCPServer.readLines(from: input, tooLong: {
            send(RPCResponse.line(id: .null, error: RPCError(.tooLarge, "line longer than \(MCPServer.maximumLineBytes) bytes", code: -32600)))
        }, handle: handle)
        inputEnded.withLock { $0 = true }
        calls.wait()
        // A host that closes its end of stdin may still be reading the last answers.
        out.settle(within: 2)
        // Never exit while the ledger is being opened (made, migrated, recovered).
        return try? supervisor.get().get()
    }

    /// Reads newline-delimited messages from `fd` until its end, each non-blank line to
    /// `handle`. A line longer than `maximumLineBytes` is refused as it arrives (`tooLong`,
    /// once) instead of buffered, and dropped up to its newline; what follows is read as usual.
    static func readLines(from fd: Int32, tooLong: () -> Void, handle: ([UInt8]) -> Void) {
        var framer = LineFramer(maximumLineBytes: MCPServer.maximumLineBytes)
        var skipping = false
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            guard let n = chunk.withUnsafeMutableBytes({ OS.read(fd, into: $0) }), n > 0 else { break }
            chunk.withUnsafeBytes { framer.append(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            while true {
                let line: [UInt8]?
                do { line = try framer.next() } catch {
                    if !skipping { tooLong() }
                    skipping = !framer.skipLine()
                    continue
                }
                guard let line else { break }
                if skipping {
                    // The end of the over-long line.
                    skipping = false
                    continue
                }
                if !RPCRequest.isBlank(line) { handle(line) }
            }
        }
    }

    // MARK: - Messages

    /// A line from the host, sorted.
    enum HostMessage {
        case request(id: JSONValue, RPCRequest)
        case notification(RPCRequest)
        /// An answer to a request made of the host.
        case response([String: JSONValue])
    }

    /// Sorts a line from the host; a line that is none of these is answered (`send`) and
    /// gives nil.
    static func sort(_ line: [UInt8], send: ([UInt8]) -> Void) -> HostMessage? {
        let request: RPCRequest
        switch RPCRequest.decode(line) {
        case .success(let r): request = r
        case .failure(let refusal):
            if let members = try? JSONValue.parse(line).objectValue, members["method"] == nil, members["result"] != nil || members["error"] != nil {
                return .response(members)
            }
            if !refusal.silent { send(RPCResponse.line(id: refusal.id, error: refusal.error)) }
            return nil
        }
        if request.id == .null {
            // MCP: an id is a string or an integer, never null (it could not be told from the
            // answer to a line without one).
            send(RPCResponse.line(id: .null, error: RPCError(.invalidArguments, "a request id must not be null", code: -32600)))
            return nil
        }
        guard let id = request.id else { return .notification(request) }
        return .request(id: id, request)
    }

    func handle(_ line: [UInt8]) {
        let id: JSONValue, request: RPCRequest
        switch MCPServer.sort(line, send: { send($0) }) {
        case .request(let i, let r)?: (id, request) = (i, r)
        case .notification(let n)?:
            // notifications/initialized and any other notification: nothing to answer.
            if n.method == "notifications/cancelled" { cancel(n.params) }
            return
        case .response(let members)?:
            answered(members)  // an answer to ward's own request; any other is dropped
            return
        case nil: return
        }
        switch request.method {
        case "initialize": answer(id, .success(initialize(request.params)))
        case "ping": answer(id, .success(.object([:])))
        case "tools/list": answer(id, .success(listed))
        case "tools/call": startCall(id: id, params: request.params)
        default:
            answer(id, .failure(RPCError(.invalidArguments, "method not found: \(Params.quote(request.method)) (ward serves initialize, ping, tools/list, tools/call)",
                                         code: -32601, field: "method")))
        }
    }

    func initialize(_ params: JSONValue) -> JSONValue {
        let host = MCPServer.host(params)
        self.host.withLock { $0 = host }
        let asked = params.objectValue?["protocolVersion"]?.stringValue
        let agreed = asked.flatMap { MCPServer.protocolVersions.contains($0) ? $0 : nil } ?? MCPServer.protocolVersions[0]
        return .object([
            "protocolVersion": .string(agreed),
            "capabilities": .object(["tools": .object(["listChanged": .bool(false)])]),
            "serverInfo": .object(["name": .string("ward"), "version": .string(version)]),
            "instructions": .string("""
                Every tool runs in ward's sandbox and is recorded in its ledger. A tool that is not idempotent runs once per call: \
                a repeat of a request whose answer was lost, or sent right after the answer, gets the recorded result (marked \
                replayed) instead of running again. To run it again on purpose, ask for something else first, or give each call \
                its own ID in _meta["ward/callId"]. A tool whose policy gates it waits for a person's approval: ward asks \
                through elicitation where the client offers it, and otherwise answers with the command that approves the call; \
                asking again for the same call (same arguments) then runs it, once.
                """),
        ])
    }

    func answer(_ id: JSONValue, _ outcome: Result<JSONValue, RPCError>) {
        switch outcome {
        case .success(let result): send(RPCResponse.line(id: id, result: result))
        case .failure(let error): send(RPCResponse.line(id: id, error: error))
        }
    }

    /// Writes one message line; false when stdout is gone (the host closed it).
    @discardableResult
    func send(_ line: [UInt8]) -> Bool { out.send(line) }

    // MARK: - Calls in flight

    /// A `tools/call` running now.
    final class Running: Sendable {
        let cancellation = CallCancellation()
        /// Answered or cancelled: nothing more is sent for it.
        let over = Lock<Bool>(false)
        let progressToken: JSONValue?
        init(progressToken: JSONValue?) { self.progressToken = progressToken }
    }

    func startCall(id: JSONValue, params: JSONValue) {
        let key = id.canonical
        // A progress token is a string or an integer (anything else is not echoed back).
        let token = params.objectValue?["_meta"]?.objectValue?["progressToken"].flatMap { t -> JSONValue? in
            switch t {
            case .string: t
            case .number(let d) where Int(exactly: d) != nil: t
            default: nil
            }
        }
        let call = Running(progressToken: token)
        let duplicate = running.withLock { running in
            if running[key] != nil { return true }
            running[key] = call
            return false
        }
        if duplicate {
            // Not answered under that id: the host would take it for the first request's answer.
            answer(.null, .failure(RPCError(.invalidArguments, "request id \(key) is already in use by a call in flight", code: -32600)))
            return
        }
        let request = parse(params)
        if case .success(let r) = request { arrived(r) }
        calls.enter()
        Thread { [self] in
            defer {
                running.withLock { _ = $0.removeValue(forKey: key) }
                calls.leave()
            }
            let ticker = progress(call)
            let outcome = self.call(request, cancellation: call.cancellation)
            ticker?.cancel()
            // Not after a cancellation: the host was told nothing will come. When its tool was
            // killed, the host knows how the call ended as well as if it had read the answer
            // (`markRead`); one that ended before the cancellation came stays unread, and its
            // repeat gets the recorded answer.
            let cancelled = call.over.withLock { over in
                if over { return true }
                over = true
                switch outcome {
                case .answered(let result, nil): send(RPCResponse.line(id: id, result: result))
                case .answered(let result, let record?): out.send(RPCResponse.line(id: id, result: result)) { [self] in markRead(record) }
                case .refused(let error): send(RPCResponse.line(id: id, error: error))
                }
                return false
            }
            if cancelled, case .answered(let result, let record?) = outcome,
               result.objectValue?["_meta"]?.objectValue?["ward/status"] == .string(CallStatus.killed.rawValue) {
                markRead(record)
            }
        }.start()
    }

    func markRead(_ record: (supervisor: Supervisor, callId: String)) { MCPServer.markRead(record, log: log) }

    /// Records that the host read the answer to a call (`Deliveries`).
    static func markRead(_ record: (supervisor: Supervisor, callId: String), log: (String) -> Void) {
        do throws(LedgerError) { try record.supervisor.ledger.markRead(run: record.supervisor.runID, callId: record.callId) } catch {
            log("the host read the answer to call \(record.callId), but that could not be recorded (\(error.message)): a repeat of it will be answered from the ledger")
        }
    }

    /// `notifications/progress` at the start and every second, for a call that asked for it
    /// (hosts reset their request timeouts on each).
    func progress(_ call: Running) -> DispatchSourceTimer? {
        guard let token = call.progressToken else { return nil }
        let timer = DispatchSource.makeTimerSource(queue: .global())
        let ticks = Lock(0)
        timer.setEventHandler { [self] in
            let n = ticks.withLock { n in
                defer { n += 1 }
                return n
            }
            call.over.withLock { over in
                guard !over else { return }
                let params = JSONValue.object([
                    "progressToken": token, "progress": .number(Double(n)),
                    "message": .string(n == 0 ? "started" : "running for \(n) s"),
                ])
                send(JSONValue.object(["jsonrpc": .string("2.0"), "method": .string("notifications/progress"), "params": params]).canonicalBytes)
            }
        }
        timer.schedule(deadline: .now(), repeating: 1.0)
        timer.resume()
        return timer
    }

    /// The host gave up on a request: no answer is sent for it, and its tool's whole tree
    /// is killed (the call is recorded `killed`).
    func cancel(_ params: JSONValue) {
        guard let id = params.objectValue?["requestId"] else { return }
        guard let call = running.withLock({ $0[id.canonical] }) else { return }
        call.over.withLock { $0 = true }
        call.cancellation.cancel()
    }
}

/// The supervisor, made on a thread of its own from the start; callers wait for it.
final class Opened: Sendable {
    private let state = Lock<Result<Supervisor, RPCError>?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    init(_ open: @escaping @Sendable () throws -> Supervisor) {
        Thread { [state, ready] in
            let result: Result<Supervisor, RPCError>
            do { result = .success(try open()) } catch {
                result = .failure(RPCError(.internal, "ward could not start: \(error)"))
            }
            state.withLock { $0 = result }
            ready.signal()
        }.start()
    }

    /// Waits for it; the error names why it could not be made.
    func get() -> Result<Supervisor, RPCError> {
        if let done = state.withLock({ $0 }) { return done }
        ready.wait()
        ready.signal()  // for the next caller
        return state.withLock { $0! }
    }
}

/// ward's stdout, and which answers the host has taken off it: an answer is read once the
/// host has read its last byte (`Delivery.read`). Until then (the host died, or its session
/// ended before it read) a repeat of the call gets the recorded answer. On a pipe or a
/// socket the kernel tells how much written is still unread; written elsewhere (a file), an
/// answer counts as read once written.
final class Deliveries: Sendable {
    private struct State {
        var open = true
        /// Bytes written so far.
        var written = 0
        /// Answers written and not yet read, each with the offset of its end.
        var pending: [(end: Int, delivered: @Sendable () -> Void)] = []
    }

    let fd: Int32
    /// The kernel tells unread bytes on `fd`.
    let tracksReads: Bool
    private let state = Lock(State())
    private let wake = DispatchSemaphore(value: 0)

    init(fd: Int32) {
        self.fd = fd
        tracksReads = ward_unread_bytes(fd) >= 0
        if tracksReads { Thread { [self] in watch() }.start() }
    }

    /// Writes one line; `delivered` runs once the host has read all of it (never when the
    /// write fails). False when stdout is gone.
    @discardableResult
    func send(_ line: [UInt8], delivered: (@Sendable () -> Void)? = nil) -> Bool {
        let (written, deliveredNow) = state.withLock { s -> (Bool, Bool) in
            guard s.open else { return (false, false) }
            s.open = OS.writeAll(fd, line + [0x0A])
            guard s.open else { return (false, false) }
            s.written += line.count + 1
            guard let delivered else { return (true, false) }
            if !tracksReads { return (true, true) }
            s.pending.append((s.written, delivered))
            return (true, false)
        }
        if deliveredNow { delivered?() }
        if written && delivered != nil && tracksReads { wake.signal() }
        return written
    }

    /// At the end: waits until the host read every answer, closed its end, or `seconds` passed.
    func settle(within seconds: Double) {
        let end = DispatchTime.now() + seconds
        while state.withLock({ !$0.pending.isEmpty }) && DispatchTime.now() < end {
            var p = pollfd(fd: fd, events: 0, revents: 0)
            if poll(&p, 1, 0) == 1 && p.revents & Int16(POLLERR | POLLHUP) != 0 { return }
            usleep(2_000)
        }
    }

    /// Runs `delivered` of every answer the host has read by now. Called as each request
    /// arrives, before it is looked at: whatever the host read before it asked again is
    /// known as read then, however far behind the watcher's polling is.
    func collect() {
        // Read under the lock that writes take, so `written` and the unread count agree.
        let read = state.withLock { s -> [@Sendable () -> Void] in
            guard !s.pending.isEmpty else { return [] }
            let unread = Int(ward_unread_bytes(fd))
            guard unread >= 0 else { return [] }
            let taken = s.written - unread
            let done = s.pending.prefix { $0.end <= taken }
            s.pending.removeFirst(done.count)
            return done.map(\.delivered)
        }
        for delivered in read { delivered() }
    }

    /// Marks what the host has read, polling every 2 ms while answers wait to be read.
    private func watch() {
        while true {
            if state.withLock({ $0.pending.isEmpty }) { wake.wait() }
            collect()
            if state.withLock({ !$0.pending.isEmpty }) { usleep(2_000) }
        }
    }
}
