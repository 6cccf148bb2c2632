import Dispatch
import Foundation
import WardCore
import WardPolicy
import WardSandbox
import WardSupervisor

#if canImport(Glibc)
import Glibc
#endif

/// `ward mcp proxy` (docs/design.md, *MCP proxy*): an MCP server over stdio whose tools are a
/// third-party MCP server's, run in that server's sandbox (`[servers.NAME]`), with every
/// `tools/call` through the ledger. To the host it is the server, with ward's annotations
/// and names hosts accept; to the server it is the host, passing on what the host declared
/// it can do (sampling, elicitation, roots) and declining the rest.
public final class MCPProxy: Sendable {
    let policy: ServerPolicy
    /// The server's program, whose hash each call records.
    let executable: String
    let version: String
    let input: Int32
    let supervisor: Opened
    let out: Deliveries
    let log: @Sendable (String) -> Void
    private let server: Lock<ProxiedServer?> = Lock(nil)
    /// The host's `initialize` params: the server is initialized with them at each start.
    private let hostInitialize = Lock<JSONValue?>(nil)
    /// The server's tools as the host sees them, until its list changes or it restarts.
    let catalog = Lock<Catalog?>(nil)
    /// Moved on each time the server's list may have changed: a list read before is not kept.
    private let catalogGeneration = Lock(0)
    /// `tools/call` requests running now, by their id's canonical JSON.
    private let running = Lock<[String: Call]>([:])
    /// Requests of the server passed on to the host, by the id ward gave them there.
    private let toHost = Lock<(next: Int, waiting: [String: (process: ProxiedServer.Process, id: JSONValue)])>((1, [:]))
    private let requests = DispatchGroup()
    /// How long a cancelled call's server has to stop before its tree is killed.
    static let cancelGrace = 5.0

    /// - Parameters:
    ///   - open: makes the supervisor (ledger, sandbox, run), started at once on a thread of
    ///     its own.
    public init(server policy: ServerPolicy, version: String, input: Int32 = 0, output: Int32 = 1,
                log: @escaping @Sendable (String) -> Void = MCPProxy.logOnStderr,
                open: @escaping @Sendable () throws -> Supervisor) {
        self.policy = policy
        executable = policy.sandbox.command.first.map { Executable.resolve($0) ?? $0 } ?? ""
        self.version = version
        self.input = input
        self.log = log
        supervisor = Opened(open)
        out = Deliveries(fd: output)
        let opened = supervisor
        server.withLock {
            $0 = ProxiedServer(policy: policy, sandbox: { opened.get().map(\.sandbox) },
                               inbound: { [weak self] message, process in self?.inbound(message, from: process) },
                               started: { [weak self] process in self?.restarted(process) },
                               ended: { [weak self] process in self?.forgetRequests(of: process) }, log: log)
        }
    }

    public static let logOnStderr: @Sendable (String) -> Void = { message in
        _ = OS.writeAll(2, Array("ward mcp proxy: \(message)\n".utf8))
    }

    var proxied: ProxiedServer { server.withLock { $0! } }

    /// Serves until stdin ends, then waits for the requests in flight and stops the server.
    /// Returns the supervisor, nil when it could not be opened.
    @discardableResult
    public func serve() -> Supervisor? {
        signal(SIGPIPE, SIG_IGN)
        let flags = fcntl(input, F_GETFL)
        if flags >= 0 && flags & O_NONBLOCK != 0 { _ = fcntl(input, F_SETFL, flags & ~O_NONBLOCK) }
        MCPServer.readLines(from: input, tooLong: { [self] in
            send(RPCResponse.line(id: .null, error: RPCError(.tooLarge, "line longer than \(MCPServer.maximumLineBytes) bytes", code: -32600)))
        }, handle: handle)
        requests.wait()
        out.settle(within: 2)
        proxied.stop()
        return try? supervisor.get().get()
    }

    @discardableResult
    func send(_ line: [UInt8]) -> Bool { out.send(line) }

    func send(_ message: [String: JSONValue]) { send(JSONValue.object(message).canonicalBytes) }

    func answer(_ id: JSONValue, _ outcome: Result<JSONValue, RPCError>) {
        switch outcome {
        case .success(let result): send(RPCResponse.line(id: id, result: result))
        case .failure(let error): send(RPCResponse.line(id: id, error: error))
        }
    }

    /// Runs `body` on a thread of its own, counted until it returns: a request that waits
    /// for the server never holds up the host's other messages.
    func detached(_ body: @escaping @Sendable () -> Void) {
        requests.enter()
        Thread { [requests] in
            body()
            requests.leave()
        }.start()
    }

    // MARK: - From the host

    func handle(_ line: [UInt8]) {
        let id: JSONValue, request: RPCRequest
        switch MCPServer.sort(line, send: { send($0) }) {
        case .request(let i, let r)?: (id, request) = (i, r)
        case .notification(let n)?:
            switch n.method {
            case "notifications/cancelled": cancel(n.params)
            case "notifications/roots/list_changed": current()?.notify(n.method, n.params)
            default: break  // notifications/initialized: ward made its own to the server
            }
            return
        case .response(let members)?:
            hostAnswered(members)  // to a request of the server's
            return
        case nil: return
        }
        switch request.method {
        case "ping": answer(id, .success(.object([:])))
        case "initialize":
            hostInitialize.withLock { $0 = request.params }
            detached { [self] in answer(id, .success(initialize(request.params))) }
        case "tools/list": detached { [self] in answer(id, listTools().map { .object(["tools": $0.listed]) }) }
        case "tools/call": startCall(id: id, params: request.params)
        case "logging/setLevel": detached { [self] in answer(id, forward(request.method, request.params)) }
        default:
            answer(id, .failure(RPCError(.invalidArguments, "method not found: \(Params.quote(request.method)) (ward mcp proxy serves initialize, ping, tools/list, tools/call, logging/setLevel)",
                                         code: -32601, field: "method")))
        }
    }

    /// What the server is initialized with: the host's own `initialize`, else a minimal one.
    var initializeParams: JSONValue {
        hostInitialize.withLock { $0 } ?? .object([
            "protocolVersion": .string(MCPServer.protocolVersions[0]), "capabilities": .object([:]),
            "clientInfo": .object(["name": .string("ward"), "version": .string(version)]),
        ])
    }

    /// The server, started if it is not running (or a start under way waited for), by `deadline`.
    func process(by deadline: DispatchTime = .now() + ProxiedServer.startTimeout) throws(RPCError) -> ProxiedServer.Process {
        try proxied.running(initialize: initializeParams, deadline: deadline)
    }

    /// The server's process if it is running now (nothing is started for a notification).
    func current() -> ProxiedServer.Process? { proxied.live }

    /// The server's answer to the host's `initialize`, with ward's capabilities: tools (whose
    /// list may change: it changes with the server's, and may when the server restarts) and,
    /// when the server has it, logging. A server that cannot start is reported and the host
    /// still gets an answer; its tools/list then says why.
    func initialize(_ params: JSONValue) -> JSONValue {
        let asked = params.objectValue?["protocolVersion"]?.stringValue
        var agreed = asked.flatMap { MCPServer.protocolVersions.contains($0) ? $0 : nil } ?? MCPServer.protocolVersions[0]
        var capabilities: [String: JSONValue] = ["tools": .object(["listChanged": .bool(true)])]
        var serverInfo: [String: JSONValue] = ["name": .string("ward-proxy-\(policy.name)"), "version": .string(version)]
        var instructions = """
            ward runs this MCP server (\(policy.name)) in a sandbox and records every tool call in its ledger. A tool that is not \
            idempotent runs once per call: a repeated request gets the recorded result (marked replayed in _meta) instead of \
            running again; give each call its own ID in _meta["ward/callId"] to run it again on purpose.
            """
        do {
            let process = try process()
            let result = process.initializeResult.objectValue ?? [:]
            if let v = result["protocolVersion"]?.stringValue { agreed = v }
            if let logging = result["capabilities"]?.objectValue?["logging"] { capabilities["logging"] = logging }
            if let info = result["serverInfo"]?.objectValue {
                serverInfo["title"] = .string("\(info["name"]?.stringValue ?? policy.name) \(info["version"]?.stringValue ?? ""), through ward")
            }
            if let own = result["instructions"]?.stringValue { instructions = own + "\n\n" + instructions }
        } catch {
            log(error.message)
        }
        return .object([
            "protocolVersion": .string(agreed), "capabilities": .object(capabilities),
            "serverInfo": .object(serverInfo), "instructions": .string(instructions),
        ])
    }

    /// A request of ward's (or the host's) to the server, and its answer (nil: none within
    /// 30 s), with the process that answered. One the process never got (it had just
    /// stopped) goes to a new one, once.
    func ask(_ method: String, _ params: JSONValue) throws(RPCError) -> (ProxiedServer.Reply?, ProxiedServer.Process) {
        let deadline = DispatchTime.now() + 30
        var process = try process(by: deadline)
        var reply = process.request(method, params, deadline: deadline)
        if case .unsent? = reply {
            process = try self.process(by: deadline)
            reply = process.request(method, params, deadline: deadline)
        }
        return (reply, process)
    }

    /// A request the host makes of the server as it is (`logging/setLevel`).
    func forward(_ method: String, _ params: JSONValue) -> Result<JSONValue, RPCError> {
        do throws(RPCError) {
            switch try ask(method, params).0 {
            case .result(let r)?: return .success(r)
            case .error(let e)?: return .failure(RPCError(.invalidArguments, "MCP server \(policy.name): \(ProxiedServer.describe(e))", code: e.objectValue?["code"]?.integer()))
            case .lost(let why)?, .unsent(let why)?: return .failure(RPCError(.internal, "MCP server \(policy.name) \(why)"))
            case nil: return .failure(RPCError(.internal, "MCP server \(policy.name) did not answer \(method) within 30 s"))
            }
        } catch {
            return .failure(error)
        }
    }

    // MARK: - Tools

    /// The server's tools as published: each under a name hosts accept, described with what
    /// ward holds it to, and annotated from the policy, never from the server.
    struct Catalog: Sendable {
        var listed: JSONValue
        /// The server's name of each published tool.
        var serverNames: [String: String]
    }

    func listTools() -> Result<Catalog, RPCError> {
        if let known = catalog.withLock({ $0 }) { return .success(known) }
        let generation = catalogGeneration.withLock { $0 }
        do throws(RPCError) {
            var tools: [JSONValue] = []
            var cursor: JSONValue?
            var process: ProxiedServer.Process?
            for _ in 0..<100 {
                let params: JSONValue = cursor.map { .object(["cursor": $0]) } ?? .object([:])
                let (reply, answering) = try ask("tools/list", params)
                // Pages of one process only: a new one starts its list again.
                if let process, process !== answering { return listTools() }
                process = answering
                switch reply {
                case .result(let page)?:
                    tools += page.objectValue?["tools"]?.arrayValue ?? []
                    cursor = page.objectValue?["nextCursor"].flatMap { $0 == .null ? nil : $0 }
                case .error(let e)?: throw RPCError(.internal, "MCP server \(policy.name) refused tools/list: \(ProxiedServer.describe(e))")
                case .lost(let why)?, .unsent(let why)?: throw RPCError(.internal, "MCP server \(policy.name) \(why) before it listed its tools")
                case nil: throw RPCError(.internal, "MCP server \(policy.name) did not list its tools within 30 s")
                }
                if cursor == nil { break }
            }
            let made = publish(tools)
            // Kept only while this process serves (a new one may have other tools), and only
            // when the list did not change while it was being read.
            catalog.withLock { c in
                if process?.alive == true && catalogGeneration.withLock({ $0 }) == generation { c = made }
            }
            return .success(made)
        } catch {
            return .failure(error)
        }
    }

    func publish(_ tools: [JSONValue]) -> Catalog {
        var taken = Set<String>()
        var listed: [JSONValue] = []
        var names: [String: String] = [:]
        for tool in tools {
            guard var members = tool.objectValue, let name = members["name"]?.stringValue else { continue }
            let held = policy.tool(name)
            let published = MCPCatalog.publishedName(name, taken: &taken)
            names[published] = name
            members["name"] = .string(published)
            if published != name && members["title"] == nil { members["title"] = .string(name) }
            let said = members["description"]?.stringValue.map { $0 + "\n\n" } ?? ""
            members["description"] = .string(said + "Through ward: " + MCPCatalog.effectSentence(held.effect))
            members["annotations"] = MCPCatalog.annotations(effect: held.effect, destructive: held.destructive, network: policy.sandbox.network)
            listed.append(.object(members))
        }
        return Catalog(listed: .array(listed), serverNames: names)
    }

    /// A new server process: its tools may not be the last one's.
    func restarted(_ process: ProxiedServer.Process) {
        let hadList = catalog.withLock { $0 != nil }
        invalidateCatalog()
        if hadList { notifyHost("notifications/tools/list_changed", .object([:])) }
    }

    func invalidateCatalog() {
        catalog.withLock { c in
            c = nil
            catalogGeneration.withLock { $0 += 1 }
        }
    }

    func notifyHost(_ method: String, _ params: JSONValue) {
        send(["jsonrpc": .string("2.0"), "method": .string(method), "params": params])
    }

    // MARK: - From the server

    /// The capability a host must have declared for each request a server may make of it.
    static let hostCapabilities = ["sampling/createMessage": "sampling", "elicitation/create": "elicitation", "roots/list": "roots"]

    func inbound(_ message: [String: JSONValue], from process: ProxiedServer.Process) {
        let method = message["method"]?.stringValue ?? ""
        let params = message["params"] ?? .object([:])
        guard let id = message["id"] else {
            switch method {
            case "notifications/tools/list_changed":
                invalidateCatalog()
                notifyHost(method, params)
            case "notifications/progress", "notifications/message":
                notifyHost(method, params)
            case "notifications/cancelled":
                // The server gave up on a request it passed to the host.
                guard let theirs = params.objectValue?["requestId"] else { return }
                let ours = toHost.withLock { t -> String? in
                    guard let key = t.waiting.first(where: { $0.value.process === process && $0.value.id == theirs })?.key else { return nil }
                    t.waiting.removeValue(forKey: key)
                    return key
                }
                if let ours {
                    var p = params.objectValue ?? [:]
                    p["requestId"] = .string(ours)
                    notifyHost(method, .object(p))
                }
            default: break
            }
            return
        }
        if method == "ping" {
            process.respond(to: id, .success(.object([:])))
            return
        }
        guard let capability = MCPProxy.hostCapabilities[method] else {
            process.respond(to: id, .failure(RPCError(.invalidArguments, "method not found: \(Params.quote(method)) (ward passes on sampling/createMessage, elicitation/create and roots/list)", code: -32601)))
            return
        }
        let declared = initializeParams.objectValue?["capabilities"]?.objectValue?[capability] != nil
        guard declared else {
            process.respond(to: id, .failure(RPCError(.invalidArguments, "the host did not declare the \(capability) capability: ward declined \(method)", code: -32601)))
            return
        }
        let ours = toHost.withLock { t -> String in
            defer { t.next += 1 }
            let key = "ward-proxy-\(t.next)"
            t.waiting[key] = (process, id)
            return key
        }
        send(["jsonrpc": .string("2.0"), "id": .string(ours), "method": .string(method), "params": params])
    }

    /// A process ended: its requests to the host can no longer be answered.
    func forgetRequests(of process: ProxiedServer.Process) {
        toHost.withLock { t in t.waiting = t.waiting.filter { $0.value.process !== process } }
    }

    /// The host answered a request of the server's: passed on to the process that made it.
    func hostAnswered(_ members: [String: JSONValue]) {
        guard let key = members["id"]?.stringValue, let asked = toHost.withLock({ $0.waiting.removeValue(forKey: key) }) else {
            log("the host answered a request that was not made (or is over): dropped")
            return
        }
        asked.process.respond(to: asked.id, forwarding: members)
    }

    // MARK: - Cancellation

    /// A `tools/call` in flight, and where its request went.
    final class Call: Sendable {
        /// Answered or cancelled: nothing more is sent for it.
        let over = Lock<Bool>(false)
        let cancelled = Lock<Bool>(false)
        /// The request at the server, once sent.
        let sent = Lock<ProxiedServer.Pending?>(nil)
    }

    /// The host gave up on a request: no answer is sent for it, and it is cancelled at the
    /// server (its tree killed if it does not stop).
    func cancel(_ params: JSONValue) {
        guard let id = params.objectValue?["requestId"], let call = running.withLock({ $0[id.canonical] }) else { return }
        call.over.withLock { $0 = true }
        call.cancelled.withLock { $0 = true }
        call.sent.withLock { $0 }?.wake()
    }

    /// The most `tools/call`s in flight at once: each has a thread of its own.
    static let maximumCalls = 256

    /// A new call in flight under `id`; an error when the id is taken, or too many are.
    func register(_ id: JSONValue) -> Result<Call, RPCError> {
        let call = Call()
        return running.withLock { running in
            if running[id.canonical] != nil {
                return .failure(RPCError(.invalidArguments, "request id \(id.canonical) is already in use by a call in flight", code: -32600))
            }
            if running.count >= MCPProxy.maximumCalls {
                return .failure(RPCError(.internal, "\(MCPProxy.maximumCalls) calls are in flight already: wait for one to end"))
            }
            running[id.canonical] = call
            return .success(call)
        }
    }

    func unregister(_ id: JSONValue) { running.withLock { _ = $0.removeValue(forKey: id.canonical) } }
}
