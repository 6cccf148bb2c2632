import Dispatch
import Foundation
import WardCore

/// ward's Swift client: one connection to the supervisor's socket, any number of requests
/// in flight on it at once (answered by id). Built on `WardConnection`, which opens the
/// connection, frames the lines and reads the answers.
///
/// ```swift
/// let ward = try WardClient()                // $WARD_SOCKET, $WARD_TOKEN
/// let state = try await ward.resume()
/// let result = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("ls")])
/// ```
public final class WardClient: Sendable {
    /// Lines are read from it by the reader thread alone. Other threads only send through
    /// it, under `writer`, and sending reads nothing of it but its fd and path, which never
    /// change: no state of it is shared.
    private nonisolated(unsafe) let connection: WardConnection
    /// Held while a request line is written: one line at a time.
    private let writer = Lock(())
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
    ///   time (a stopped or wedged supervisor), instead of waiting forever; opening the
    ///   connection too.
    /// - Throws: `.ward(.unauthorized)` when ward refuses the token, `.connection` when it
    ///   cannot be reached.
    public init(socketPath: String? = nil, token: String? = nil, timeout: Duration? = nil) throws(WardClientError) {
        self.timeout = timeout
        connection = try WardConnection(socketPath: socketPath, opening: .agent(token: token), timeout: timeout)
        // Opened; from now on the reader waits as long as the connection lives, and each
        // request has its own timer: a bound on each read would fire between requests.
        if timeout != nil { connection.setTimeout(nil) }
        let reader = Thread { [self] in readLoop() }
        reader.name = "ward-client"
        reader.start()
    }

    /// Closes the connection; requests in flight fail with `.connection`. (The reader thread
    /// keeps the client alive until then.)
    public func close() { connection.shutdown() }

    // MARK: - Methods

    /// `run.resume`: {runId, attempt, checkpoint, completedSince, inDoubt, notExecuted}.
    public func resume() async throws(WardClientError) -> [String: JSONValue] {
        try await request("run.resume", .object([:])).objectValue ?? [:]
    }

    /// `tool.call`: runs the call, or replays its recorded result.
    public func call(callId: String, tool: String, arguments: [String: JSONValue] = [:], checkpoint: JSONValue? = nil) async throws(WardClientError) -> CallResult {
        try ToolCall.result(await request(ToolCall.method, ToolCall.params(callId: callId, tool: tool, arguments: arguments, checkpoint: checkpoint)))
    }

    /// `checkpoint.save`: returns the sequence number.
    public func saveCheckpoint(_ state: JSONValue, label: String? = nil) async throws(WardClientError) -> Int {
        var params: [String: JSONValue] = ["state": state]
        if let label { params["label"] = .string(label) }
        guard let seq = try await request("checkpoint.save", .object(params)).objectValue?["seq"]?.integer() else {
            throw .malformed("checkpoint.save result")
        }
        return seq
    }

    /// `checkpoint.load`: the given or latest checkpoint, or nil.
    public func loadCheckpoint(seq: Int? = nil) async throws(WardClientError) -> (seq: Int, state: JSONValue)? {
        let result = try await request("checkpoint.load", seq.map { .object(["seq": .number(Double($0))]) } ?? .object([:]))
        if result == .null { return nil }
        guard let o = result.objectValue, let s = o["seq"]?.integer(), let state = o["state"] else {
            throw .malformed("checkpoint.load result")
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
                    WardClient.timers.asyncAfter(deadline: .now() + .nanoseconds(timeout.clampedNanoseconds)) { [self] in
                        if let c = self.state.withLock({ $0.pending.removeValue(forKey: id) }) {
                            c.resume(throwing: WardClientError.noAnswer(within: timeout))
                        }
                    }
                }
                let line = WardConnection.line(id: .number(Double(id)), method: method, params: params)
                let failed = writer.withLock { _ -> WardClientError? in
                    do throws(WardClientError) { try connection.send(line) } catch { return error }
                    return nil
                }
                if let error = failed, let c = state.withLock({ $0.pending.removeValue(forKey: id) }) {
                    c.resume(throwing: error)
                }
            }
        } catch let error as WardClientError {
            throw error
        } catch {
            throw WardClientError(.ward(.internal), "\(error)")
        }
    }

    private func readLoop() {
        let closed: WardClientError
        while true {
            let line: [UInt8]
            do { line = try connection.nextLine() } catch {
                closed = error
                break
            }
            // An answer that is not one of ours (unparsable, a foreign or fractional id) is
            // dropped: its request times out or fails when the connection closes. So is an
            // error with `id: null`: with many requests in flight, it names none of them.
            guard let answer = WardConnection.answer(line), let id = answer.id,
                  let continuation = state.withLock({ $0.pending.removeValue(forKey: id) }) else { continue }
            continuation.resume(with: answer.result)
        }
        let pending = state.withLock { s -> [CheckedContinuation<JSONValue, any Error>] in
            s.closed = closed
            defer { s.pending.removeAll() }
            return Array(s.pending.values)
        }
        for c in pending { c.resume(throwing: closed) }
    }
}
