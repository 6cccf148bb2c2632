/// The file a non-idempotent call's output is copied to while it runs, so that if ward dies
/// mid-call the operator who must decide "did it happen?" can read what the tool printed up
/// to the crash. The kernel keeps what was written through a crash of ward (the file is not
/// fsynced: a power loss may lose it, and fsyncing would double the cost of a call).
///
/// Layout: one JSON header line naming the call, then frames of `kind` (1 byte), `length`
/// (4 bytes, little-endian) and `length` bytes. A frame cut short by the crash is read as far
/// as it goes. The file's mtime is the call's last sign of life: every frame moves it, and
/// the sandbox touches it every second while a silent tool runs.
public enum OutputCapture {
    public enum Kind: UInt8, Sendable {
        case stdout = 1
        case stderr = 2
        /// The tool exited; the payload is the JSON `{status, exitCode, signal, durationMs}`.
        case exit = 3
        /// The call is traced (no payload): a trace with no effects after it is one where
        /// the tool had changed nothing yet, not one that was never kept.
        case traceStart = 4
        /// One effect of the trace, as the tracer was told of it (`Trace.Effect.json`).
        case effect = 5
        /// The trace reached `Trace.limit`: later effects are not in the file.
        case traceCut = 6
    }

    /// The 5 bytes that precede a frame's payload.
    public static func frameHeader(_ kind: Kind, length: Int) -> [UInt8] {
        let n = UInt32(truncatingIfNeeded: length)
        return [kind.rawValue, UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24)]
    }

    /// The header line of a capture file; `startedMs` is when the tool is started (Unix
    /// time in milliseconds), the mark its run time before a crash is measured from.
    public static func header(run: String, callId: String, execution: Int, startedMs: Int) -> [UInt8] {
        let json = JSONValue.object(["run": .string(run), "callId": .string(callId), "execution": .number(Double(execution)),
                                     "startedMs": .number(Double(startedMs))])
        return json.canonicalBytes + [0x0A]
    }

    /// What a capture file holds.
    public struct Contents: Sendable, Equatable {
        public var run: String
        public var callId: String
        public var execution: Int
        public var startedMs: Int
        public var stdout: [UInt8] = []
        public var stderr: [UInt8] = []
        /// The tool's exit as the sandbox saw it, when it got that far.
        public var exit: JSONValue?
        /// What the tool had attempted to change, when the call is traced.
        public var trace: Trace?

        public init(run: String, callId: String, execution: Int, startedMs: Int) {
            self.run = run
            self.callId = callId
            self.execution = execution
            self.startedMs = startedMs
        }
    }

    /// Parses a capture file; nil when its header is not one (not a capture file).
    public static func parse(_ bytes: [UInt8]) -> Contents? {
        guard let newline = bytes.firstIndex(of: 0x0A),
              let header = (try? JSONValue.parse(Array(bytes[..<newline])))?.objectValue,
              let run = header["run"]?.stringValue, let callId = header["callId"]?.stringValue,
              let execution = header["execution"]?.integer(Int.self),
              let startedMs = header["startedMs"]?.integer(Int.self) else { return nil }
        var contents = Contents(run: run, callId: callId, execution: execution, startedMs: startedMs)
        var i = newline + 1
        while i + 5 <= bytes.count {
            let kind = Kind(rawValue: bytes[i])
            let length = Int(bytes[i + 1]) | Int(bytes[i + 2]) << 8 | Int(bytes[i + 3]) << 16 | Int(bytes[i + 4]) << 24
            let payload = bytes[(i + 5)..<min(i + 5 + length, bytes.count)]
            switch kind {
            case .stdout?: contents.stdout += payload
            case .stderr?: contents.stderr += payload
            case .exit?: contents.exit = try? JSONValue.parse(Array(payload))
            case .traceStart?: contents.trace = contents.trace ?? Trace()
            case .effect?:
                if let json = try? JSONValue.parse(Array(payload)), let effect = Trace.Effect(json: json) {
                    contents.trace = contents.trace ?? Trace()
                    contents.trace!.effects.append(effect)
                }
            case .traceCut?: contents.trace?.dropped = nil
            case nil: return contents  // not a frame: the rest cannot be trusted
            }
            i += 5 + length
        }
        return contents
    }
}
