/// The states of a call (docs/design.md, *Call states*; the moves between them: `CallState`).
public enum CallStatus: String, Sendable, Hashable, CaseIterable {
    case running, succeeded, failed
    case timedOut = "timed-out"
    case killed, denied
    case inDoubt = "in-doubt"
    case resolved
    /// A call of a gated tool (`approve = true`), recorded and waiting for an operator's verdict.
    case awaitingApproval = "awaiting-approval"
    /// Approved, its tool not begun yet: it runs, once, when the agent asks for it.
    case approved
}

/// What a sandboxed tool did: the outcome half of a `CallResult`.
public struct ToolOutcome: Sendable, Hashable {
    public var status: CallStatus
    public var exitCode: Int32?
    public var signal: Int32?
    public var stdout: [UInt8]
    public var stderr: [UInt8]
    /// stdout or stderr went past `limits.output` and was cut.
    public var truncated: Bool
    public var durationMs: Double
    /// What the tool attempted to change, when its policy traces it (`Trace`).
    public var trace: Trace? = nil

    public init(status: CallStatus, exitCode: Int32?, signal: Int32?, stdout: [UInt8], stderr: [UInt8], truncated: Bool, durationMs: Double) {
        self.status = status
        self.exitCode = exitCode
        self.signal = signal
        self.stdout = stdout
        self.stderr = stderr
        self.truncated = truncated
        self.durationMs = durationMs
    }
}

/// How an in-doubt call was settled: by an operator (`ward ledger resolve`) or by the
/// tool's reconcile command.
public struct Resolution: Sendable, Hashable {
    public enum Verdict: String, Sendable, Hashable, CaseIterable {
        case executed
        case notExecuted = "not-executed"
    }

    public var verdict: Verdict
    public var note: String
    /// `operator`, or `reconcile` for the tool's own reconcile command.
    public var by: String
    /// When it was settled (UTC, RFC 3339).
    public var at: String

    public init(verdict: Verdict, note: String, by: String, at: String) {
        self.verdict = verdict
        self.note = note
        self.by = by
        self.at = at
    }

    public var json: JSONValue {
        .object(["verdict": .string(verdict.rawValue), "note": .string(note), "by": .string(by), "at": .string(at)])
    }

    public init?(json: JSONValue) {
        guard let o = json.objectValue, let v = o["verdict"]?.stringValue, let verdict = Verdict(rawValue: v) else { return nil }
        self.init(verdict: verdict, note: o["note"]?.stringValue ?? "", by: o["by"]?.stringValue ?? "", at: o["at"]?.stringValue ?? "")
    }
}

/// The protocol's `CallResult` (docs/design.md, *Methods*): what an agent gets back for a
/// tool call.
public struct CallResult: Sendable, Hashable {
    public var callId: String
    public var tool: String
    public var outcome: ToolOutcome
    public var replayed: Bool
    public var attempt: Int
    /// Present when the call was caught in doubt and settled as executed: the verdict, and
    /// in `outcome.stdout` the reconcile command's output (empty for an operator's verdict).
    public var resolution: Resolution?

    public init(callId: String, tool: String, outcome: ToolOutcome, replayed: Bool, attempt: Int, resolution: Resolution? = nil) {
        self.callId = callId
        self.tool = tool
        self.outcome = outcome
        self.replayed = replayed
        self.attempt = attempt
        self.resolution = resolution
    }

    /// The JSON object of the protocol. stdout/stderr are UTF-8 strings, or
    /// `stdoutBase64`/`stderrBase64` when the bytes are not valid UTF-8.
    public var json: JSONValue {
        var members: [String: JSONValue] = [
            "callId": .string(callId),
            "tool": .string(tool),
            "status": .string(outcome.status.rawValue),
            "exitCode": outcome.exitCode.map { .number(Double($0)) } ?? .null,
            "signal": outcome.signal.map { .number(Double($0)) } ?? .null,
            "truncated": .bool(outcome.truncated),
            "durationMs": .number(outcome.durationMs),
            "replayed": .bool(replayed),
            "attempt": .number(Double(attempt)),
        ]
        if let resolution { members["resolution"] = resolution.json }
        CallResult.put(outcome.stdout, as: "stdout", into: &members)
        CallResult.put(outcome.stderr, as: "stderr", into: &members)
        return .object(members)
    }

    /// Output bytes as ward's JSON carries them: `name` for UTF-8 text, else `nameBase64`.
    public static func put(_ bytes: [UInt8], as name: String, into members: inout [String: JSONValue]) {
        if let text = String(validating: bytes, as: UTF8.self) {
            members[name] = .string(text)
        } else {
            members[name + "Base64"] = .string(Base64.encode(bytes))
        }
    }
}

/// Standard base64 (RFC 4648, with padding).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Decodes standard base64 (padding optional); nil on any other character.
    public static func decode(_ text: String) -> [UInt8]? {
        var values: [UInt8] = []
        for c in text.utf8 where c != UInt8(ascii: "=") {
            guard let i = alphabet.firstIndex(of: c) else { return nil }
            values.append(UInt8(i))
        }
        var out: [UInt8] = []
        var i = 0
        while i + 1 < values.count {
            let n = UInt32(values[i]) << 18 | UInt32(values[i + 1]) << 12 | (i + 2 < values.count ? UInt32(values[i + 2]) << 6 : 0) | (i + 3 < values.count ? UInt32(values[i + 3]) : 0)
            out.append(UInt8(n >> 16 & 0xFF))
            if i + 2 < values.count { out.append(UInt8(n >> 8 & 0xFF)) }
            if i + 3 < values.count { out.append(UInt8(n & 0xFF)) }
            i += 4
        }
        return out
    }

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)], alphabet[Int(n >> 6 & 63)], alphabet[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest > 0 {
            let n = UInt32(bytes[i]) << 16 | (rest == 2 ? UInt32(bytes[i + 1]) << 8 : 0)
            out += [alphabet[Int(n >> 18 & 63)], alphabet[Int(n >> 12 & 63)]]
            out += rest == 2 ? [alphabet[Int(n >> 6 & 63)], UInt8(ascii: "=")] : [UInt8(ascii: "="), UInt8(ascii: "=")]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension CallResult {
    /// Decodes the protocol's JSON object; nil when it is not a CallResult.
    public init?(json: JSONValue) {
        guard let o = json.objectValue, let callId = o["callId"]?.stringValue, let tool = o["tool"]?.stringValue,
              let statusText = o["status"]?.stringValue, let status = CallStatus(rawValue: statusText) else { return nil }
        func int(_ key: String) -> Int32? { o[key]?.integer(Int32.self) }
        func bytes(_ key: String) -> [UInt8] {
            if let s = o[key]?.stringValue { return Array(s.utf8) }
            if let b = o[key + "Base64"]?.stringValue { return Base64.decode(b) ?? [] }
            return []
        }
        var duration = 0.0
        if case .number(let d)? = o["durationMs"], d >= 0 { duration = d }
        let outcome = ToolOutcome(status: status, exitCode: int("exitCode"), signal: int("signal"), stdout: bytes("stdout"),
                                  stderr: bytes("stderr"), truncated: o["truncated"] == .bool(true), durationMs: duration)
        self.init(callId: callId, tool: tool, outcome: outcome, replayed: o["replayed"] == .bool(true), attempt: o["attempt"]?.integer() ?? 1,
                  resolution: o["resolution"].flatMap(Resolution.init(json:)))
    }
}
