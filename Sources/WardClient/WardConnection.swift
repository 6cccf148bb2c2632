import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// One connection to ward's socket, blocking: a request goes out as one line, and its answer
/// is the line that comes back with its id. `WardClient` is built on it; a program that makes
/// one request at a time uses it as it is (`ward call`, the bench). It also sends bytes as
/// they are and reads lines as they come, for tests of the protocol itself.
///
/// Use it from one thread at a time; `WardClient` shares one connection between tasks.
///
/// ```swift
/// let ward = try WardConnection()               // $WARD_SOCKET, with the agent's token
/// let result = try ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("ls")])
/// ```
public final class WardConnection {
    /// How a connection opens (docs/design.md, *Peers and the token*).
    public enum Opening: Sendable {
        /// With `session.auth` and `token`, else the token file beside the socket (`ward
        /// serve`), else `$WARD_TOKEN` (`ward run`): `AgentCredential.find(forSocket:)`.
        case agent(token: String? = nil)
        /// Without `session.auth`. ward serves such a peer only when the kernel vouches for it
        /// (a process in no call's cgroup or PID namespace) and refuses anything else: for
        /// probing that check.
        case unauthenticated
    }

    public let socketPath: String
    private let fd: Int32
    private var timeout: Duration?
    private var framer = LineFramer()
    /// Where each read lands: one buffer for the connection's life, none per line.
    private var chunk = [UInt8](repeating: 0, count: 1 << 16)
    private var lastID = 0

    /// Connects to `socketPath`, or to `$WARD_SOCKET`, and opens the connection as `opening`
    /// says.
    /// - Parameter timeout: how long each wait for ward's bytes may last before the read
    ///   fails with `.connection` (a stopped or wedged supervisor); nil: for ever. A tool call
    ///   lasts as long as its tool, so set it above the longest tool timeout.
    /// - Throws: `.ward(.unauthorized)` when there is no token or ward refuses it,
    ///   `.connection` when ward cannot be reached.
    public init(socketPath: String? = nil, opening: Opening = .agent(), timeout: Duration? = nil) throws(WardClientError) {
        guard let path = socketPath ?? getenv("WARD_SOCKET").map({ String(cString: $0) }) else {
            throw WardClientError(.connection, "no socket: set WARD_SOCKET (ward run does) or pass socketPath")
        }
        switch UnixSocket.connect(path) {
        case .success(let fd): self.fd = fd
        case .failure(let e): throw WardClientError(.connection, "cannot connect to \(path): \(e)")
        }
        self.socketPath = path
        // From here on a throw runs deinit, which closes the fd.
        if let timeout { setTimeout(timeout) }
        guard case .agent(let given) = opening else { return }
        guard let token = given ?? AgentCredential.find(forSocket: path) else {
            throw WardClientError(.ward(.unauthorized), "no token for \(path): set \(AgentCredential.environmentVariable) (ward run does) "
                + "or let this user read \(AgentCredential.tokenFile(forSocket: path)) (ward serve writes it)")
        }
        _ = try request(AgentCredential.method, .object(["token": .string(token)]))
    }

    deinit { close(fd) }

    // MARK: - Requests

    /// Sends a request and waits for its answer: its result, or the error ward answered.
    /// - Throws: that error (`.ward(kind)`), or `.connection`.
    public func request(_ method: String, _ params: JSONValue) throws(WardClientError) -> JSONValue {
        lastID += 1
        let id = lastID
        // ward answers a line past its limit and closes the connection before the rest of
        // it is sent: a failed send is reported only when no answer says why.
        var unsent: WardClientError?
        do { try send(WardConnection.line(id: .number(Double(id)), method: method, params: params)) } catch { unsent = error }
        while true {
            let line: [UInt8]
            do { line = try nextLine() } catch { throw unsent ?? error }
            // An error with `id: null` answers a line ward could not read as a request: with
            // one request in flight, this one. Any other line answers nothing of this
            // request's (the late answer of one that timed out, or no answer at all): passed
            // over, as `WardClient` drops it.
            if let answer = WardConnection.answer(line), answer.id == id || answer.id == nil { return try answer.result.get() }
        }
    }

    /// `tool.call`: runs the call, or replays its recorded result. `approvalTimeout`: how
    /// many seconds ward waits for the verdict on a gated tool's call.
    public func call(callId: String, tool: String, arguments: [String: JSONValue] = [:], checkpoint: JSONValue? = nil,
                     approvalTimeout: Double = 0) throws(WardClientError) -> CallResult {
        var params = ToolCall.params(callId: callId, tool: tool, arguments: arguments, checkpoint: checkpoint)
        if approvalTimeout > 0, case .object(var members) = params {
            members["approvalTimeout"] = .number(approvalTimeout)
            params = .object(members)
        }
        return try ToolCall.result(request(ToolCall.method, params))
    }

    // MARK: - Lines

    /// Sends `bytes` as they are: part of a line, several lines, or bytes that are no JSON.
    public func send(_ bytes: [UInt8]) throws(WardClientError) {
        guard UnixSocket.sendAll(fd, bytes) else {
            throw WardClientError(.connection, "sending to \(socketPath) failed: \(UnixSocket.Errno(errno))")
        }
    }

    /// Sends one request line with `id`, and reads nothing: answers are `nextLine()`'s.
    public func send(id: JSONValue, method: String, params: JSONValue) throws(WardClientError) {
        try send(WardConnection.line(id: id, method: method, params: params))
    }

    /// The next line ward sent, without its newline.
    /// - Throws: `.connection` when ward closed the connection, or sent nothing within the
    ///   timeout.
    public func nextLine() throws(WardClientError) -> [UInt8] {
        while true {
            // The framer has no length limit, so it never throws: ward's answers are trusted
            // to be as long as the output limits make them.
            if let line = try? framer.next() { return line }
            let n = chunk.withUnsafeMutableBytes { buffer in OS.retrying { recv(fd, buffer.baseAddress, buffer.count, 0) } }
            if n > 0 {
                chunk.withUnsafeBytes { framer.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                continue
            }
            if n == 0 { throw WardClientError(.connection, "ward at \(socketPath) closed the connection") }
            switch errno {
            case EAGAIN, EWOULDBLOCK: throw WardClientError.noAnswer(within: timeout ?? .zero)
            case let e: throw WardClientError(.connection, "reading from \(socketPath) failed: \(UnixSocket.Errno(e))")
            }
        }
    }

    // MARK: - What both faces share

    /// A request line with its newline.
    static func line(id: JSONValue, method: String, params: JSONValue) -> [UInt8] {
        var line = RPCRequest.line(id: id, method: method, params: params)
        line.append(0x0A)
        return line
    }

    /// `line` read as an answer: the id it answers, and its result or ward's error; the id
    /// is nil for an error with `id: null`, ward's answer to a line it could not read as a
    /// request. Nil when it is no answer to a request of this client's: not one, or with an
    /// id that is no integer.
    static func answer(_ line: [UInt8]) -> (id: Int?, result: Result<JSONValue, WardClientError>)? {
        guard let answer = try? JSONValue.parse(line).objectValue else { return nil }
        switch (answer["id"], answer["error"]) {
        case (.null?, let error?): return (nil, .failure(WardClientError(answer: error)))
        case (let id?, let error?): return id.integer().map { ($0, .failure(WardClientError(answer: error))) }
        case (let id?, nil): return id.integer().map { ($0, .success(answer["result"] ?? .null)) }
        case (nil, _): return nil
        }
    }

    /// Bounds each wait for ward's bytes (SO_RCVTIMEO: set once, nothing per request); nil:
    /// no bound.
    func setTimeout(_ timeout: Duration?) {
        self.timeout = timeout
        // A zero timeval means no bound: a zero timeout is the shortest one instead.
        let micros = timeout.map { max($0.clampedNanoseconds / 1000, 1) } ?? 0
        var bound = timeval(tv_sec: micros / 1_000_000, tv_usec: micros % 1_000_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &bound, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Ends the connection both ways: a read waiting on it returns. The fd stays open until
    /// deinit, so no other file can take its number while another thread still uses it.
    func shutdown() { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
}

/// `tool.call`'s params and result, for both faces of the client.
enum ToolCall {
    static let method = "tool.call"

    static func params(callId: String, tool: String, arguments: [String: JSONValue], checkpoint: JSONValue?) -> JSONValue {
        var params: [String: JSONValue] = ["callId": .string(callId), "tool": .string(tool), "arguments": .object(arguments)]
        if let checkpoint { params["checkpoint"] = checkpoint }
        return .object(params)
    }

    static func result(_ json: JSONValue) throws(WardClientError) -> CallResult {
        guard let result = CallResult(json: json) else { throw .malformed("CallResult") }
        return result
    }
}
