import Dispatch
import Foundation
import WardCore
import WardPolicy
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// The MCP server behind `ward mcp proxy`: started in its sandbox when first needed, spoken
/// to over its pipes (newline-delimited JSON-RPC), and started again after it dies, no
/// sooner than its backoff allows. Thread-safe: each call's thread sends its request and
/// waits for the answer; one thread per process reads its stdout, one its stderr.
final class ProxiedServer: Sendable {
    /// What came back for a request.
    enum Reply: Sendable {
        case result(JSONValue)
        /// A JSON-RPC error object.
        case error(JSONValue)
        /// No answer will come: the process ended (or was killed) after the request was
        /// written. Why, in words.
        case lost(String)
        /// The request was never written: the process had ended. Why, in words.
        case unsent(String)
    }

    /// A message the server sent that is not an answer: a request (with its id) or a
    /// notification, and the process that sent it.
    typealias Inbound = @Sendable (_ message: [String: JSONValue], _ from: Process) -> Void

    let policy: ServerPolicy
    /// How long the server has to answer `initialize` at each start.
    static let startTimeout = 30.0
    /// Why a process is killed at ward's exit (not a failure).
    static let stopping = "ward is stopping"
    /// Longest wait for the backoff before a call is refused instead.
    static let longestWait = 2.0

    private struct State {
        var current: Process?
        /// Starts or deaths since the server last answered a call.
        var failures = 0
        /// No start before this.
        var notBefore = DispatchTime(uptimeNanoseconds: 0)
        var lastFailure: String?
    }

    private let state = Lock(State())
    /// The thread every process is started from (see `Launcher`).
    private let launcher = Launcher()
    /// One start at a time.
    private let starting = DispatchSemaphore(value: 1)
    let sandbox: @Sendable () -> Result<Sandbox, RPCError>
    let inbound: Inbound
    /// The process is new (its tools may differ from the last one's).
    let started: @Sendable (Process) -> Void
    let log: @Sendable (String) -> Void

    init(policy: ServerPolicy, sandbox: @escaping @Sendable () -> Result<Sandbox, RPCError>, inbound: @escaping Inbound,
         started: @escaping @Sendable (Process) -> Void, log: @escaping @Sendable (String) -> Void) {
        self.policy = policy
        self.sandbox = sandbox
        self.inbound = inbound
        self.started = started
        self.log = log
    }

    /// The running process, started (and initialized with the host's `initialize` params) if
    /// there is none. Throws a message naming why it cannot be had.
    func running(initialize params: JSONValue) throws(RPCError) -> Process {
        if let live = state.withLock({ $0.current }), live.alive { return live }
        starting.wait()
        defer { starting.signal() }
        if let live = state.withLock({ $0.current }), live.alive { return live }
        // Backoff after a failed start or a death: a server that crashes at once is not
        // started in a loop.
        let (notBefore, last) = state.withLock { ($0.notBefore, $0.lastFailure) }
        let now = DispatchTime.now()
        if now < notBefore {
            let wait = Double(notBefore.uptimeNanoseconds - now.uptimeNanoseconds) / 1e9
            if wait > ProxiedServer.longestWait {
                throw RPCError(.internal, "MCP server \(policy.name) is down (\(last ?? "it stopped")); ward starts it again in \(String(format: "%.1f", wait)) s")
            }
            usleep(UInt32(wait * 1e6))
        }
        // A process that fails its handshake is counted a failure when it is reaped.
        let process = try start(initialize: params)
        state.withLock { $0.current = process }
        started(process)
        return process
    }

    /// The last process ended or could not start: the next start waits 0.25 s, doubling
    /// with each failure in a row up to 30 s.
    func failed(_ why: String) {
        state.withLock { s in
            s.failures += 1
            s.lastFailure = why
            let delay = min(0.25 * pow(2, Double(min(s.failures - 1, 10))), 30)
            s.notBefore = .now() + delay
        }
    }

    /// A call was answered: the server works, and its backoff starts over.
    func answered() { state.withLock { $0.failures = 0 } }

    /// The process serving now, if one is.
    var live: Process? { state.withLock { $0.current }.flatMap { $0.alive ? $0 : nil } }

    /// Kills the running process's tree, if any (shutdown).
    func stop() {
        guard let process = state.withLock({ $0.current }) else { return }
        process.kill(ProxiedServer.stopping)
        process.waitForEnd(seconds: 5)
    }

    private func start(initialize params: JSONValue) throws(RPCError) -> Process {
        let sandbox: Sandbox
        switch self.sandbox() {
        case .success(let s): sandbox = s
        case .failure(let error): throw error
        }
        let launched: SandboxedProcess
        do { launched = try launcher.run { [policy] () throws(SandboxError) in try sandbox.launchServer(policy) } } catch {
            let message = "MCP server \(policy.name) could not start: \(error)"
            failed(message)
            throw RPCError(.internal, message)
        }
        let process = Process(launched, server: self)
        process.begin()
        // The handshake, as the host made it: its capabilities decide which of the
        // server's requests reach it.
        switch process.request("initialize", params, deadline: .now() + ProxiedServer.startTimeout) {
        case .result(let result)?:
            process.initializeResult = result
            process.notify("notifications/initialized", .object([:]))
            return process
        case .error(let error)?:
            process.kill("it refused initialize")
            throw RPCError(.internal, "MCP server \(policy.name) refused initialize: \(ProxiedServer.describe(error))")
        case .lost(let why)?, .unsent(let why)?:
            process.waitForEnd(seconds: 1)
            throw RPCError(.internal, "MCP server \(policy.name) \(why) before it answered initialize\(process.stderrTail)")
        case nil:
            process.kill("it did not answer initialize")
            throw RPCError(.internal, "MCP server \(policy.name) did not answer initialize within \(Int(ProxiedServer.startTimeout)) s\(process.stderrTail)")
        }
    }

    static func describe(_ error: JSONValue) -> String {
        let members = error.objectValue ?? [:]
        let code = members["code"]?.integer().map { String($0) } ?? "?"
        return "\(members["message"]?.stringValue ?? "no message") (code \(code))"
    }

    // MARK: - One process

    /// One run of the server, from its start to its death.
    final class Process: @unchecked Sendable {
        // @unchecked: `initializeResult` is set once, before the process is shared.
        let launched: SandboxedProcess
        unowned let server: ProxiedServer
        var initializeResult: JSONValue = .null
        private struct Wire {
            var nextID = 1
            var waiting: [Int: Pending] = [:]
            /// Why it ended (or is being ended); nil while it serves.
            var ended: String?
        }
        private let wire = Lock(Wire())
        /// stdin: whole lines, one writer at a time.
        private let writing = Lock(())
        /// The end of its stderr, for the message when it dies at start.
        private let stderrKept = Lock<[UInt8]>([])
        private let finished = DispatchSemaphore(value: 0)
        /// Its stderr reached its end (everything it wrote there is kept).
        private let stderrClosed = DispatchSemaphore(value: 0)

        init(_ launched: SandboxedProcess, server: ProxiedServer) {
            self.launched = launched
            self.server = server
        }

        var alive: Bool { wire.withLock { $0.ended == nil } }

        /// The server's last words on stderr, as a suffix for an error message.
        var stderrTail: String {
            let tail = String(decoding: stderrKept.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return tail.isEmpty ? "" : "; its stderr ends: \(tail)"
        }

        /// Starts the threads that read its stdout and stderr and wait for its end.
        func begin() {
            Thread { [self] in readStderr() }.start()
            Thread { [self] in
                MCPServer.readLines(from: launched.output, tooLong: { [self] in
                    kill("it wrote a line longer than \(MCPServer.maximumLineBytes) bytes")
                }, handle: { [self] line in received(line) })
                // Its stdout is closed: it is over, whether or not it has exited yet.
                end()
            }.start()
        }

        private func readStderr() {
            var chunk = [UInt8](repeating: 0, count: 1 << 14)
            var logged = 0
            while let n = chunk.withUnsafeMutableBytes({ OS.read(launched.errors, into: $0) }), n > 0 {
                let bytes = chunk[..<n]
                stderrKept.withLock { kept in
                    kept.append(contentsOf: bytes)
                    if kept.count > 2048 { kept.removeFirst(kept.count - 2048) }
                }
                // Passed on to ward's stderr, up to 1 MiB a process: a flood cannot fill a disk.
                if logged < 1 << 20 {
                    logged += n
                    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                        server.log("server \(server.policy.name): \(line)")
                    }
                }
            }
            stderrClosed.signal()
        }

        private func end() {
            // A server that closed stdout but lives on is ended: nothing it says can arrive.
            var p = pollfd(fd: launched.pidfd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 2000) != 1 { launched.terminate() }
            let how = launched.wait()
            // Its last words, for the message that says why it ended.
            _ = stderrClosed.wait(timeout: .now() + 1)
            let why: String
            let stopping = wire.withLock { $0.ended } == Process.killed(ProxiedServer.stopping)
            if let reason = wire.withLock({ $0.ended }) {
                why = reason
            } else if let code = how.code {
                why = "exited with status \(code)"
            } else {
                why = "was killed by signal \(how.signal ?? 0)"
            }
            let waiting = wire.withLock { w -> [Pending] in
                if w.ended == nil { w.ended = why }
                defer { w.waiting.removeAll() }
                return Array(w.waiting.values)
            }
            for pending in waiting { pending.deliver(.lost(why)) }
            if !stopping {
                server.failed("it \(why)")
                server.log("server \(server.policy.name) \(why)")
            }
            finished.signal()
        }

        static func killed(_ why: String) -> String { "was killed: \(why)" }

        /// Ends it: its whole tree is killed, and every request waiting gets `lost(why)`.
        func kill(_ why: String) {
            let first = wire.withLock { w -> Bool in
                guard w.ended == nil else { return false }
                w.ended = Process.killed(why)
                return true
            }
            if first { launched.terminate() }
        }

        /// Waits until it has been reaped (after `kill`).
        func waitForEnd(seconds: Double) {
            if finished.wait(timeout: .now() + seconds) == .success { finished.signal() }
        }

        private func received(_ line: [UInt8]) {
            guard case .object(let members)? = try? JSONValue.parse(line) else {
                let shown = String(decoding: line.prefix(200), as: UTF8.self)
                kill("it wrote something that is not a JSON-RPC message: \(shown)")
                return
            }
            if members["method"] != nil {
                server.inbound(members, self)
                return
            }
            // An answer: to one of ward's requests, by the id ward gave it.
            guard let id = members["id"]?.integer(),
                  let pending = wire.withLock({ $0.waiting.removeValue(forKey: id) }) else {
                server.log("server \(server.policy.name) answered a request ward did not make (or no longer waits for): dropped")
                return
            }
            if let error = members["error"] {
                pending.deliver(.error(error))
            } else {
                pending.deliver(.result(members["result"] ?? .null))
            }
        }

        /// Writes one message; false once the process is gone.
        @discardableResult
        func send(_ message: JSONValue) -> Bool {
            guard alive else { return false }
            return writing.withLock { _ in OS.writeAll(launched.input, message.canonicalBytes + [0x0A]) }
        }

        func notify(_ method: String, _ params: JSONValue) {
            send(.object(["jsonrpc": .string("2.0"), "method": .string(method), "params": params]))
        }

        /// Answers a request the server made.
        func respond(to id: JSONValue, _ outcome: Result<JSONValue, RPCError>) {
            switch outcome {
            case .success(let result): send(.object(["jsonrpc": .string("2.0"), "id": id, "result": result]))
            case .failure(let error): send(.object(["jsonrpc": .string("2.0"), "id": id, "error": error.json]))
            }
        }

        /// Passes on the host's answer to a request the server made (an error object or a result).
        func respond(to id: JSONValue, forwarding answer: [String: JSONValue]) {
            var message: [String: JSONValue] = ["jsonrpc": .string("2.0"), "id": id]
            if let error = answer["error"] { message["error"] = error } else { message["result"] = answer["result"] ?? .object([:]) }
            send(.object(message))
        }

        /// Sends a request under a new id; `sent` gets that id before anything can answer it.
        func start(_ method: String, _ params: JSONValue) -> (id: Int, pending: Pending) {
            let pending = Pending()
            let id = wire.withLock { w -> Int in
                defer { w.nextID += 1 }
                w.waiting[w.nextID] = pending
                return w.nextID
            }
            if let why = wire.withLock({ $0.ended }) {
                forget(id)
                pending.deliver(.unsent(why))
            } else if !send(.object(["jsonrpc": .string("2.0"), "id": .number(Double(id)), "method": .string(method), "params": params])) {
                pending.deliver(.lost(wire.withLock { $0.ended } ?? "closed its stdin"))
            }
            return (id, pending)
        }

        /// A request and its answer; nil when none came by `deadline`.
        func request(_ method: String, _ params: JSONValue, deadline: DispatchTime) -> Reply? {
            let (id, pending) = start(method, params)
            let reply = pending.wait(until: deadline)
            if reply == nil { forget(id) }
            return reply
        }

        /// No longer waiting for an answer to `id` (a late one is dropped).
        func forget(_ id: Int) { wire.withLock { _ = $0.waiting.removeValue(forKey: id) } }
    }

    /// One request waiting for its answer.
    final class Pending: Sendable {
        private let reply = Lock<Reply?>(nil)
        private let signal = DispatchSemaphore(value: 0)

        func deliver(_ r: Reply) {
            let first = reply.withLock { current -> Bool in
                guard current == nil else { return false }
                current = r
                return true
            }
            if first { signal.signal() }
        }

        /// Wakes the waiter without an answer (the host cancelled the call).
        func wake() { signal.signal() }

        /// The answer, or nil at `deadline` or when woken without one.
        func wait(until deadline: DispatchTime) -> Reply? {
            if let r = reply.withLock({ $0 }) { return r }
            _ = signal.wait(timeout: deadline)
            return reply.withLock { $0 }
        }
    }
}

/// One thread that lives as long as ward and starts every server process. A process's
/// parent-death signal (which kills its tree when ward dies) fires when the *thread* that
/// made it exits, not only the process: started from a request's own thread, the server
/// would be killed as soon as that request was answered.
final class Launcher: Sendable {
    private let job = Lock<(@Sendable () -> Void)?>(nil)
    private let ready = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)
    private let one = DispatchSemaphore(value: 1)

    init() {
        Thread { [job, ready, done] in
            while true {
                ready.wait()
                job.withLock { $0 }?()
                done.signal()
            }
        }.start()
    }

    /// Runs `body` on the launcher's thread and returns what it returned.
    func run<T: Sendable>(_ body: @escaping @Sendable () throws(SandboxError) -> T) throws(SandboxError) -> T {
        one.wait()
        defer { one.signal() }
        let result = Lock<Result<T, SandboxError>?>(nil)
        job.withLock { $0 = { result.withLock { $0 = Result { () throws(SandboxError) in try body() } } } }
        ready.signal()
        done.wait()
        return try result.withLock { $0! }.get()
    }
}
