import WardCore

/// Why a request to ward failed: ward answered it with one of the protocol's errors, or the
/// connection failed.
///
/// ```swift
/// do {
///     _ = try await ward.call(callId: "c1", tool: "shell", arguments: ["command": .string("ls")])
/// } catch where error.kind == .ward(.inDoubt) {
///     print(error.message)  // the two `ward ledger resolve` commands that settle it
/// }
/// ```
public struct WardClientError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Hashable, Sendable {
        /// ward answered with an error of this kind (its `data.kind`: docs/design.md,
        /// *Errors*); `internal` also when its answer could not be read.
        case ward(RPCError.Kind)
        /// The socket could not be reached, ward closed the connection, or no answer came in
        /// time.
        case connection
    }

    public let kind: Kind
    public let message: String
    /// The JSON-RPC error code, when ward sent one.
    public let code: Int?
    /// The params member ward blamed (`data.field`), when it named one.
    public let field: String?

    public init(_ kind: Kind, _ message: String, code: Int? = nil, field: String? = nil) {
        self.kind = kind
        self.message = message
        self.code = code
        self.field = field
    }

    /// The kind as the protocol spells it, then the message: `conflict: call c1 was …`.
    public var description: String {
        switch kind {
        case .ward(let kind): "\(kind.rawValue): \(message)"
        case .connection: "connection: \(message)"
        }
    }
}

extension WardClientError {
    /// ward's error object, `{code, message, data: {kind, field?}}`, read without trusting
    /// it: a kind this client does not know is `internal`, a code that is no integer is none.
    init(answer error: JSONValue) {
        let members = error.objectValue, data = members?["data"]?.objectValue
        self.init(.ward(data?["kind"]?.stringValue.flatMap(RPCError.Kind.init(rawValue:)) ?? .internal),
                  members?["message"]?.stringValue ?? "", code: members?["code"]?.integer(), field: data?["field"]?.stringValue)
    }

    /// An answer that is not what the method returns.
    static func malformed(_ what: String) -> WardClientError { WardClientError(.ward(.internal), "malformed \(what) from ward") }

    static func noAnswer(within timeout: Duration) -> WardClientError {
        WardClientError(.connection, "no answer from ward within \(timeout)")
    }
}

extension Duration {
    /// In nanoseconds, clamped to [0, 100 years]: a negative or huge timeout must not trap.
    var clampedNanoseconds: Int {
        guard components.seconds >= 0 else { return 0 }
        return Int(min(components.seconds, 3_153_600_000)) * 1_000_000_000 + Int(components.attoseconds / 1_000_000_000)
    }
}
