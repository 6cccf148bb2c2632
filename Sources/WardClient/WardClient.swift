import Dispatch
import Foundation
import WardCore

#if canImport(Glibc)
import Glibc
#endif

/// A protocol error from ward (`kind` is its `data.kind`: docs/design.md, *Errors*), or a
/// broken connection.
public struct WardClientError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case conflict, inProgress = "in-progress", inDoubt = "in-doubt", unknownTool = "unknown-tool"
        case invalidArguments = "invalid-arguments", policyDenied = "policy-denied", tooLarge = "too-large"
        case storage, `internal`, unauthorized
        /// The socket could not be reached, or ward closed it.
        case connection
    }

    public let kind: Kind
    public let message: String
    /// The JSON-RPC error code, when ward sent one.
    public let code: Int?

    public var description: String { "\(kind.rawValue): \(message)" }
}

/// ward's Swift client: one connection to the supervisor's socket, any number of requests
/// in flight on it at once (answered by id).
///
/// ```swift
/// let ward = try WardClient()                // $WARD_SOCKET, $WARD_TOKEN
/// let state = try await ward.resume()
/// let result = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("ls")])
/// ```
public final class WardClient: Sendable {
    private let fd: Int32
    /// The same fd, for writing: one request line at a time.
    private let writer: Lock<Int32>
    private let state = Lock(State())

    private struct State {
        var nextID = 1
        var pending: [Int: CheckedContinuation<JSONValue, any Error>] = [:]
        var closed: WardClientError?
    }

    /// How long a request may wait for its answer (nil: forever; a tool call lasts as long
    /// as its tool, so set it above the longest tool timeout).
    public let timeout: Duration?

    /// Connects to `socketPath`, or to `$WARD_SOCKET`, and opens the connection with the
    /// agent's token: `token`, else the token file beside the socket (`ward serve`), else
    /// `$WARD_TOKEN` (`ward run`).
    /// - Parameter timeout: fail a request with `.connection` when ward does not answer in
    ///   time (a stopped or wedged supervisor), instead of waiting forever.
    /// - Throws: `.unauthorized` when ward refuses the token, `.connection` when it cannot be reached.
    public init(socketPath: String? = nil, token: String? = nil, timeout: Duration? = nil) throws(WardClientError) {
        self.timeout = timeout
        guard let path = socketPath ?? ProcessInfo.processInfo.environment["WARD_SOCKET"] else {
            throw WardClientError(kind: .connection, message: "no socket: set WARD_SOCKET (ward run does) or pass socketPath", code: nil)
        }
        switch UnixSocket.connect(path) {
        case .success(let fd):
            self.fd = fd
            writer = Lock(fd)
        case .failure(let e): throw WardClientError(kind: .connection, message: "cannot connect to \(path): \(e)", code: nil)
        }
        // Answered before the reader starts: nothing else is in flight yet. (A throw from
        // here on runs deinit, which closes the fd.)
        if let refusal = AgentCredential.authenticate(fd: fd, socketPath: path, token: token) {
            throw WardClientError(kind: WardClientError.Kind(rawValue: refusal.kind) ?? .connection, message: refusal.message, code: nil)
        }
        let reader = Thread { [self] in readLoop() }
        reader.name = "ward-client"
        reader.start()
    }

    deinit { Glibc.close(fd) }

    /// Closes the connection; requests in flight fail with `.connection`. (The reader thread
    /// keeps the client alive until then.)
    public func close() { shutdown(fd, Int32(SHUT_RDWR)) }

    // MARK: - Methods

    /// `run.resume`: {runId, attempt, checkpoint, completedSince, inDoubt}.
    public func resume() async throws(WardClientError) -> [String: JSONValue] {
        try await request("run.resume", .object([:])).objectValue ?? [:]
    }

    /// `tool.call`: runs the call, or replays its recorded result.
    public func call(callId: String, tool: String, arguments: [String: JSONValue] = [:], checkpoint: JSONValue? = nil) async throws(WardClientError) -> CallResult {
        var params: [String: JSONValue] = ["callId": .string(callId), "tool": .string(tool), "arguments": .object(arguments)]
        if let checkpoint { params["checkpoint"] = checkpoint }
        let json = try await request("tool.call", .object(params))
        guard let result = CallResult(json: json) else { throw WardClientError(kind: .internal, message: "malformed CallResult", code: nil) }
        return result
    }

    /// `checkpoint.save`: returns the sequence number.
    public func saveCheckpoint(_ state: JSONValue, label: String? = nil) async throws(WardClientError) -> Int {
        var params: [String: JSONValue] = ["state": state]
        if let label { params["label"] = .string(label) }
        guard let seq = try await request("checkpoint.save", .object(params)).objectValue?["seq"]?.integer() else {
            throw WardClientError(kind: .internal, message: "malformed checkpoint.save result", code: nil)
        }
        return seq
    }

    /// `checkpoint.load`: the given or latest checkpoint, or nil.
    public func loadCheckpoint(seq: Int? = nil) async throws(WardClientError) -> (seq: Int, state: JSONValue)? {
        let result = try await request("checkpoint.load", seq.map { .object(["seq": .number(Double($0))]) } ?? .object([:]))
        if result == .null { return nil }
        guard let o = result.objectValue, let s = o["seq"]?.integer(), let state = o["state"] else {
            throw WardClientError(kind: .internal, message: "malformed checkpoint.load result", code: nil)
        }
        return (s, state)
    }

    /// The value recorded under `key`; the first time, records `make()` (not called after).
    public func journal(_ key: String, _ make: () async throws -> JSONValue) async throws -> JSONValue {
        let existing = try await request("journal.record", .object(["key": .string(key)])).objectValue
        if existing?["found"] == .bool(true) { return existing?["value"] ?? .null }
        let value = try await make()
        return try await request("journal.record", .object(["key": .string(key), "value": value])).objectValue?["value"] ?? .null
    }

    /// Where request timeouts fire: a queue of its own, which libdispatch gives a thread even
    /// when the global queues' few threads (one per CPU) are all blocked by the caller's work;
    /// a timer there fired seconds late.
    private static let timers = DispatchQueue(label: "ward-client-timeouts")

    /// Any method: its result, or the error ward answered.
    public func request(_ method: String, _ params: JSONValue) async throws(WardClientError) -> JSONValue {
        do {
            return try await withCheckedThrowingContinuation { continuation in
                let id: Int? = state.withLock { s in
                    if let closed = s.closed { continuation.resume(throwing: closed); return nil }
                    let id = s.nextID
                    s.nextID += 1
                    s.pending[id] = continuation
                    return id
                }
                guard let id else { return }
                if let timeout {
                    // Clamped to [0, 100 years]: a negative or huge Duration must not trap.
                    let seconds = min(max(timeout.components.seconds, 0), 3_153_600_000)
                    let nanos = Int(seconds) * 1_000_000_000 + Int(max(timeout.components.attoseconds, 0) / 1_000_000_000)
                    WardClient.timers.asyncAfter(deadline: .now() + .nanoseconds(nanos)) { [self] in
                        if let c = self.state.withLock({ $0.pending.removeValue(forKey: id) }) {
                            c.resume(throwing: WardClientError(kind: .connection, message: "no answer from ward within \(timeout)", code: nil))
                        }
                    }
                }
                let line = JSONValue.object(["jsonrpc": .string("2.0"), "id": .number(Double(id)), "method": .string(method), "params": params]).canonicalBytes
                let sent = writer.withLock { fd in UnixSocket.sendAll(fd, line + [0x0A]) }
                if !sent, let c = state.withLock({ $0.pending.removeValue(forKey: id) }) {
                    c.resume(throwing: WardClientError(kind: .connection, message: "sending to ward failed", code: nil))
                }
            }
        } catch let error as WardClientError {
            throw error
        } catch {
            throw WardClientError(kind: .internal, message: "\(error)", code: nil)
        }
    }

    private func readLoop() {
        var reader = LineReader(fd: fd)
        while let line = reader.next() {
            // An answer that is not one of ours (unparsable, a foreign or fractional id) is
            // dropped: its request times out or fails when the connection closes.
            guard let response = try? JSONValue.parse(line).objectValue, let id = response["id"]?.integer(),
                  let continuation = state.withLock({ $0.pending.removeValue(forKey: id) }) else { continue }
            if let error = response["error"]?.objectValue {
                let kind = WardClientError.Kind(rawValue: error["data"]?.objectValue?["kind"]?.stringValue ?? "") ?? .internal
                let code = error["code"]?.integer()
                continuation.resume(throwing: WardClientError(kind: kind, message: error["message"]?.stringValue ?? "", code: code))
            } else {
                continuation.resume(returning: response["result"] ?? .null)
            }
        }
        let closed = WardClientError(kind: .connection, message: "ward closed the connection", code: nil)
        let pending = state.withLock { s -> [CheckedContinuation<JSONValue, any Error>] in
            s.closed = closed
            defer { s.pending.removeAll() }
            return Array(s.pending.values)
        }
        for c in pending { c.resume(throwing: closed) }
    }
}
