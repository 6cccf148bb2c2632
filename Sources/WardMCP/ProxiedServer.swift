import Dispatch
import CWardOS
import Foundation
import WardCore
import WardPolicy
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// The MCP server behind `ward mcp proxy`: started in its sandbox when first needed, spoken
/// to over its pipes (newline-delimited JSON-RPC), and started again after it dies, no
/// sooner than its backoff allows. Thread-safe. Each process has three threads of its own:
/// one writes to its stdin what did not fit at once (its stdin is non-blocking, so no other
/// thread ever waits on a server that stops reading), one reads its stdout, one its stderr.
final class ProxiedServer: Sendable {
    /// What came back for a request.
    enum Reply: Sendable {
        case result(JSONValue)
        /// A JSON-RPC error object.
        case error(JSONValue)
        /// No answer will come: the process ended (or was killed) after the whole request
        /// was written to it. Why, in words.
        case lost(String)
        /// The request was never (wholly) written: the process had stopped. Why, in words.
        case unsent(String)
    }

    /// A message the server sent that is not an answer: a request (with its id) or a
    /// notification, and the process that sent it.
    typealias Inbound = @Sendable (_ message: [String: JSONValue], _ from: Process) -> Void

    let policy: ServerPolicy
    /// How long the server has to answer `initialize` at each start.
    static let startTimeout = 30.0
    /// Longest wait for the backoff before a request is refused instead.
    static let longestWait = 2.0
    /// Why a process is killed at ward's exit (not a failure).
    static let stopping = "ward is stopping"

    private struct State {
        var current: Process?
        /// The start under way, which every request that needs the server waits for.
        var starting: Start?
        /// Starts or deaths since the server last answered a call.
        var failures = 0
        /// No start before this.
        var notBefore = DispatchTime(uptimeNanoseconds: 0)
        var lastFailure: String?
    }

    private let state = Lock(State())
    /// The thread every process is started from (see `Launcher`).
    private let launcher = Launcher()
    let sandbox: @Sendable () -> Result<Sandbox, RPCError>
    let inbound: Inbound
    /// The process is new (its tools may differ from the last one's).
    let started: @Sendable (Process) -> Void
    /// The process ended: nothing it asked of the host can be answered any more.
    let ended: @Sendable (Process) -> Void
    let log: @Sendable (String) -> Void

    init(policy: ServerPolicy, sandbox: @escaping @Sendable () -> Result<Sandbox, RPCError>, inbound: @escaping Inbound,
         started: @escaping @Sendable (Process) -> Void, ended: @escaping @Sendable (Process) -> Void, log: @escaping @Sendable (String) -> Void) {
        self.policy = policy
        self.sandbox = sandbox
        self.inbound = inbound
        self.started = started
        self.ended = ended
        self.log = log
    }

    /// One start of the server, shared by every request waiting for it.
    final class Start: Sendable {
        private let result = Lock<Result<Process, RPCError>?>(nil)
        private let done = DispatchSemaphore(value: 0)

        func finish(_ r: Result<Process, RPCError>) {
            result.withLock { $0 = r }
            done.signal()
        }

        /// Its outcome, or nil at `deadline`.
        func wait(until deadline: DispatchTime) -> Result<Process, RPCError>? {
            guard done.wait(timeout: deadline) == .success else { return nil }
            done.signal()  // for the next waiter
            return result.withLock { $0 }
        }
    }

    /// The running process, started (and initialized with the host's `initialize` params)
    /// if there is none; a start under way is waited for, not repeated. Throws a message
    /// naming why the server cannot be had by `deadline`.
    func running(initialize params: JSONValue, deadline: DispatchTime) throws(RPCError) -> Process {
        let (live, start, mine, wait): (Process?, Start?, Bool, Double) = state.withLock { s in
            if let current = s.current, current.alive { return (current, nil, false, 0) }
            if let start = s.starting { return (nil, start, false, 0) }
            // Backoff after a failed start or a death: a server that crashes at once is not
            // started in a loop.
            let now = DispatchTime.now()
            let wait = now < s.notBefore ? Double(s.notBefore.uptimeNanoseconds - now.uptimeNanoseconds) / 1e9 : 0
            if wait > ProxiedServer.longestWait { return (nil, nil, false, wait) }
            let start = Start()
            s.starting = start
            return (nil, start, true, wait)
        }
        if let live { return live }
        guard let start else {
            let last = state.withLock { $0.lastFailure } ?? "it stopped"
            throw RPCError(.internal, "MCP server \(policy.name) is down (\(last)); ward starts it again in \(String(format: "%.1f", wait)) s")
        }
        if mine {
            // On a thread of its own: a request that stops waiting (its deadline) leaves the
            // start to finish for the next one.
            Thread { [self] in
                if wait > 0 { usleep(UInt32(wait * 1e6)) }
                let result = Result { () throws(RPCError) in try self.start(initialize: params) }
                state.withLock { s in
                    s.starting = nil
                    if case .success(let process) = result { s.current = process }
                }
                if case .success(let process) = result { started(process) }
                start.finish(result)
            }.start()
        }
        guard let result = start.wait(until: deadline) else {
            throw RPCError(.internal, "MCP server \(policy.name) is still starting")
        }
        return try result.get()
    }

    /// The process serving now, if one is.
    var live: Process? { state.withLock { $0.current }.flatMap { $0.alive ? $0 : nil } }

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
        let failure: String
        switch process.request("initialize", params, deadline: .now() + ProxiedServer.startTimeout) {
        case .result(let result)?:
            process.initializeResult = result
            process.notify("notifications/initialized", .object([:]))
            return process
        case .error(let error)?:
            failure = "refused initialize: \(ProxiedServer.describe(error))"
            process.kill("it refused initialize")
        case .lost(let why)?, .unsent(let why)?:
            process.waitForEnd(seconds: 2)
            failure = "\(why) before it answered initialize\(process.stderrTail)"
        case nil:
            failure = "did not answer initialize within \(Int(ProxiedServer.startTimeout)) s\(process.stderrTail)"
            process.kill("it did not answer initialize")
        }
        // Counted now, not when it is reaped: the next request must see the backoff.
        process.countFailure("it \(failure)")
        throw RPCError(.internal, "MCP server \(policy.name) \(failure)")
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
            /// Serving: false from the moment its stdout ends or ward kills it.
            var open = true
            /// Why it ended (or is being ended).
            var ended: String?
            /// Lines for its stdin not written yet (or not all: `from`), each with the request
            /// it is (if one).
            var queue: [(line: [UInt8], from: Int, request: Pending?)] = []
            var queuedBytes = 0
            /// The writer thread is writing a line it took off the queue.
            var busy = false
            /// Bytes written to its stdin so far.
            var written = 0
            /// Its death was counted against the server's backoff.
            var counted = false
        }
        private let wire = Lock(Wire())
        private let queued = DispatchSemaphore(value: 0)
        /// More than this waiting for its stdin: it stopped reading, and is killed.
        static let maximumQueuedBytes = 64 << 20
        /// The end of its stderr, for the message when it dies at start.
        private let stderrKept = Lock<[UInt8]>([])
        private let finished = DispatchSemaphore(value: 0)
        /// Its stderr reached its end (everything it wrote there is kept).
        private let stderrClosed = DispatchSemaphore(value: 0)

        init(_ launched: SandboxedProcess, server: ProxiedServer) {
            self.launched = launched
            self.server = server
        }

        var alive: Bool { wire.withLock { $0.open } }

        /// The server's last words on stderr, as a suffix for an error message.
        var stderrTail: String {
            let tail = String(decoding: stderrKept.withLock { $0 }, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return tail.isEmpty ? "" : "; its stderr ends: \(tail)"
        }

        /// Starts the threads that write its stdin, read its stdout and stderr, and wait for
        /// its end.
        func begin() {
            let flags = fcntl(launched.input, F_GETFL)
            _ = fcntl(launched.input, F_SETFL, flags | O_NONBLOCK)
            Thread { [self] in writeStdin() }.start()
            Thread { [self] in readStderr() }.start()
            Thread { [self] in
                MCPServer.readLines(from: launched.output, tooLong: { [self] in
                    kill("it wrote a line longer than \(MCPServer.maximumLineBytes) bytes")
                }, handle: { [self] line in received(line) })
                // Its stdout is closed: it is over, whether or not it has exited yet.
                end()
            }.start()
        }

        /// The writer thread: what could not be written at once, in order. Its stdin is
        /// non-blocking; the thread waits for room in `poll`, looking every 100 ms whether
        /// the process is still there.
        private func writeStdin() {
            while true {
                queued.wait()
                guard let next = wire.withLock({ w -> (line: [UInt8], from: Int, request: Pending?)? in
                    guard w.open, !w.queue.isEmpty else { return nil }
                    w.busy = true
                    return w.queue.removeFirst()
                }) else {
                    if !alive { return }
                    continue
                }
                var offset = next.from
                while offset < next.line.count {
                    let n = next.line.withUnsafeBytes { Glibc.write(launched.input, $0.baseAddress! + offset, $0.count - offset) }
                    if n < 0 && (errno == EAGAIN || errno == EINTR) {
                        guard alive else { return }
                        var p = pollfd(fd: launched.input, events: Int16(POLLOUT), revents: 0)
                        _ = poll(&p, 1, 100)
                        continue
                    }
                    guard n > 0 else { return }  // its reader is gone
                    offset += n
                    let end = wire.withLock { w -> Int in
                        w.written += n
                        w.queuedBytes -= n
                        return w.written
                    }
                    if offset == next.line.count { next.request?.written(upTo: end) }
                }
                wire.withLock { $0.busy = false }
            }
        }

        private func readStderr() {
            var chunk = [UInt8](repeating: 0, count: 1 << 14)
            var partial: [UInt8] = []
            var logged = 0
            while let n = chunk.withUnsafeMutableBytes({ OS.read(launched.errors, into: $0) }), n > 0 {
                let bytes = chunk[..<n]
                stderrKept.withLock { kept in
                    kept.append(contentsOf: bytes)
                    if kept.count > 2048 { kept.removeFirst(kept.count - 2048) }
                }
                // Passed on to ward's stderr a line at a time, control characters shown
                // escaped, up to 1 MiB a process: a flood cannot fill a disk.
                guard logged < 1 << 20 else { continue }
                partial += bytes
                while let newline = partial.firstIndex(of: 0x0A) {
                    let line = partial[..<newline]
                    partial.removeSubrange(...newline)
                    logged += line.count + 1
                    server.log("server \(server.policy.name): \(ProxiedServer.printable(line))")
                    if logged >= 1 << 20 {
                        server.log("server \(server.policy.name): more than 1 MiB on stderr; the rest is not shown")
                        break
                    }
                }
                if partial.count > 4096 {
                    logged += partial.count
                    server.log("server \(server.policy.name): \(ProxiedServer.printable(partial[...]))")
                    partial.removeAll()
                }
            }
            if !partial.isEmpty && logged < 1 << 20 { server.log("server \(server.policy.name): \(ProxiedServer.printable(partial[...]))") }
            stderrClosed.signal()
        }

        private func end() {
            wire.withLock { $0.open = false }
            queued.signal()  // the writer sees it is over
            // A server that closed stdout but lives on is ended: nothing it says can arrive.
            var p = pollfd(fd: launched.pidfd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 2000) != 1 { launched.terminate() }
            let how = launched.wait()
            // What it read of its stdin: what ward wrote, less what is still in the pipe.
            let unread = Int(ward_unread_bytes(launched.input))
            // Its last words, for the message that says why it ended.
            _ = stderrClosed.wait(timeout: .now() + 1)
            let (why, waiting, consumed) = wire.withLock { w -> (String, [Pending], Int) in
                if w.ended == nil {
                    w.ended = how.code.map { "exited with status \($0)" } ?? "was killed by signal \(how.signal ?? 0)"
                }
                defer { w.waiting.removeAll() }
                // Unknown (not a pipe): everything written counts as read.
                return (w.ended!, Array(w.waiting.values), unread >= 0 ? w.written - unread : w.written)
            }
            // A request it read whole may have been acted on; one it never read to its end
            // (a line is acted on only once its newline is read) was not.
            for pending in waiting {
                let read = pending.writtenUpTo.map { $0 <= consumed } ?? false
                pending.deliver(read ? .lost(why) : .unsent(why))
            }
            if why != Process.killed(ProxiedServer.stopping) {
                if countFailure("it \(why)") { server.log("server \(server.policy.name) \(why)") }
            }
            server.ended(self)
            finished.signal()
        }

        /// Counts its death against the server's backoff, once; false when it already was.
        @discardableResult
        func countFailure(_ why: String) -> Bool {
            guard wire.withLock({ w -> Bool in
                defer { w.counted = true }
                return !w.counted
            }) else { return false }
            server.failed(why)
            return true
        }

        static func killed(_ why: String) -> String { "was killed: \(why)" }

        /// Ends it: its whole tree is killed, and every request waiting gets `lost(why)` (or
        /// `unsent`, if it never got it whole).
        func kill(_ why: String) {
            wire.withLock { w in
                w.open = false
                if w.ended == nil { w.ended = Process.killed(why) }
            }
            queued.signal()
            launched.terminate()
        }

        /// Waits until it has been reaped (after `kill`).
        func waitForEnd(seconds: Double) {
            if finished.wait(timeout: .now() + seconds) == .success { finished.signal() }
        }

        private func received(_ line: [UInt8]) {
            // One message, or a batch of them (protocol revision 2025-03-26).
            let messages: [JSONValue]
            switch try? JSONValue.parse(line) {
            case let message? where message.objectValue != nil: messages = [message]
            case .array(let items)? where !items.isEmpty && items.allSatisfy({ $0.objectValue != nil }): messages = items
            default:
                kill("it wrote something that is not a JSON-RPC message: \(ProxiedServer.printable(line.prefix(200)))")
                return
            }
            for message in messages { received(message.objectValue!) }
        }

        private func received(_ members: [String: JSONValue]) {
            if members["method"] != nil {
                server.inbound(members, self)
                return
            }
            // An answer: to one of ward's requests, by the id ward gave it.
            guard let id = members["id"]?.integer(), let pending = wire.withLock({ $0.waiting.removeValue(forKey: id) }) else {
                server.log("server \(server.policy.name) answered a request ward did not make (or no longer waits for): dropped")
                return
            }
            // Only a well-formed answer is passed on (and recorded, and replayed).
            if let error = members["error"] {
                let fields = error.objectValue ?? [:]
                guard fields["code"]?.integer() != nil, fields["message"]?.stringValue != nil else {
                    kill("it answered request \(id) with a malformed error: \(ProxiedServer.printable(error.canonicalBytes.prefix(200)))")
                    pending.deliver(.lost(Process.killed("it answered with a malformed error")))
                    return
                }
                pending.deliver(.error(error))
            } else if case .object? = members["result"] {
                pending.deliver(.result(members["result"]!))
            } else {
                kill("it answered request \(id) with neither a result object nor an error")
                pending.deliver(.lost(Process.killed("it answered with neither a result object nor an error")))
            }
        }

        /// Queues one message for its stdin; false once it is gone. A server that lets more
        /// than `maximumQueuedBytes` wait is killed: it stopped reading.
        @discardableResult
        func send(_ message: JSONValue, request: Pending? = nil) -> Bool {
            let line = message.canonicalBytes + [0x0A]
            let (sent, handed, overflow) = wire.withLock { w -> (Bool, Bool, Bool) in
                guard w.open else { return (false, false, false) }
                var from = 0
                if w.queue.isEmpty && !w.busy {
                    // The usual case: the pipe has room, and the line goes now, from this
                    // thread, without waking the writer (its stdin is non-blocking).
                    let n = line.withUnsafeBytes { Glibc.write(launched.input, $0.baseAddress!, $0.count) }
                    if n > 0 {
                        w.written += n
                        from = n
                    }
                    if from == line.count {
                        request?.written(upTo: w.written)
                        return (true, false, false)
                    }
                }
                w.queue.append((line, from, request))
                w.queuedBytes += line.count - from
                return (true, true, w.queuedBytes > Process.maximumQueuedBytes)
            }
            if handed { queued.signal() }
            if overflow { kill("it stopped reading its stdin (\(Process.maximumQueuedBytes >> 20) MiB waiting)") }
            return sent
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

        /// Sends a request under a new id, registered and queued at once (a process that
        /// stopped gets none: `unsent`).
        func start(_ method: String, _ params: JSONValue) -> (id: Int, pending: Pending) {
            let pending = Pending()
            let (id, stopped) = wire.withLock { w -> (Int, String?) in
                guard w.open else { return (0, w.ended ?? "had stopped") }
                defer { w.nextID += 1 }
                w.waiting[w.nextID] = pending
                return (w.nextID, nil)
            }
            if let stopped {
                pending.deliver(.unsent(stopped))
            } else if !send(.object(["jsonrpc": .string("2.0"), "id": .number(Double(id)), "method": .string(method), "params": params]), request: pending) {
                forget(id)
                pending.deliver(.unsent(wire.withLock { $0.ended } ?? "had stopped"))
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
        private let end = Lock<Int?>(nil)

        /// Its whole line was written to the server, ending at this offset of its stdin.
        func written(upTo offset: Int) { end.withLock { $0 = offset } }
        var writtenUpTo: Int? { end.withLock { $0 } }

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

    /// Bytes a server wrote, as text for ward's stderr and messages: control characters escaped.
    static func printable(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes, as: UTF8.self).unicodeScalars.map { s in
            s.properties.generalCategory == .control ? s.escaped(asASCII: true) : String(s)
        }.joined()
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
