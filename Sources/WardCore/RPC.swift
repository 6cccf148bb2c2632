/// The JSON-RPC 2.0 framing of the agent protocol (docs/design.md, *The protocol*): one
/// object per line. Everything here is pure (no socket, no ledger), so the decoder every
/// agent request goes through can be fuzzed on its own (Tests/Fuzz).

/// A JSON-RPC error with its `data.kind` (docs/design.md, *Errors*).
public struct RPCError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable, CaseIterable {
        case conflict, inProgress = "in-progress", inDoubt = "in-doubt", unknownTool = "unknown-tool"
        case invalidArguments = "invalid-arguments", policyDenied = "policy-denied", tooLarge = "too-large"
        case storage, `internal`
        /// The connection did not open with the agent's credential (`AgentCredential`).
        case unauthorized
        /// The call's tool is gated and the call waits for an operator's approval.
        case awaitingApproval = "awaiting-approval"
    }

    public let code: Int
    public let kind: Kind
    public let message: String
    /// The params member the error is about (`data.field`), for a client to point at.
    public let field: String?

    public init(_ kind: Kind, _ message: String, code: Int? = nil, field: String? = nil) {
        self.kind = kind
        self.message = message
        self.field = field
        switch kind {
        case .invalidArguments: self.code = code ?? -32602
        case .internal: self.code = code ?? -32603
        case .conflict: self.code = code ?? -32001
        case .inProgress: self.code = code ?? -32002
        case .inDoubt: self.code = code ?? -32003
        case .unknownTool: self.code = code ?? -32004
        case .policyDenied: self.code = code ?? -32005
        case .tooLarge: self.code = code ?? -32006
        case .storage: self.code = code ?? -32007
        case .unauthorized: self.code = code ?? -32008
        case .awaitingApproval: self.code = code ?? -32009
        }
    }

    public var description: String { message }

    /// `{"code": …, "message": …, "data": {"kind": …, "field"?: …}}`.
    public var json: JSONValue {
        var data: [String: JSONValue] = ["kind": .string(kind.rawValue)]
        if let field { data["field"] = .string(field) }
        return .object(["code": .number(Double(code)), "message": .string(message), "data": .object(data)])
    }

    static func parse(_ message: String) -> RPCError { RPCError(.invalidArguments, message, code: -32700) }
    static func invalidRequest(_ message: String) -> RPCError { RPCError(.invalidArguments, message, code: -32600) }
}

/// One decoded request line.
public struct RPCRequest: Sendable {
    /// nil for a notification (no answer is sent).
    public let id: JSONValue?
    public let method: String
    public let params: JSONValue

    /// A line that is not a request, with the id its error response carries.
    public struct Refusal: Error, Sendable {
        public let id: JSONValue
        public let error: RPCError
        /// A notification with bad params: JSON-RPC answers none (its sender expects none).
        public var silent = false
    }

    /// Decodes one line (without its newline). Never traps: any bytes are either a request
    /// or a refusal to answer with.
    public static func decode(_ line: [UInt8]) -> Result<RPCRequest, Refusal> {
        let request: JSONValue
        var inexact: String?
        do { request = try JSONValue.parse(line, inexactInteger: &inexact) } catch {
            return .failure(Refusal(id: .null, error: .parse("parse error: \(error)")))
        }
        guard let members = request.objectValue else {
            return .failure(Refusal(id: .null, error: .invalidRequest("a request must be a JSON object (batches are not supported)")))
        }
        let id = members["id"]
        if let id {
            // An id is echoed as it was sent: a number only when it is an integer a double
            // holds exactly (1e300, 0.5 or 2^64 would come back as another number, and a
            // client matching answers by id would never see its own).
            switch id {
            case .string, .null: break
            case .number(let d) where Int(exactly: d).map({ abs($0) <= Params.maximumInteger }) == true: break
            default:
                return .failure(Refusal(id: .null, error: .invalidRequest("id must be a string, null or an integer of at most 2^53 − 1 in magnitude")))
            }
        }
        guard members["jsonrpc"] == .string("2.0") else {
            return .failure(Refusal(id: id ?? .null, error: .invalidRequest("jsonrpc must be \"2.0\"")))
        }
        guard let method = members["method"]?.stringValue else {
            return .failure(Refusal(id: id ?? .null, error: .invalidRequest("method must be a string")))
        }
        if let inexact {
            // Stored, hashed and replayed as another number, a conflict would go unseen. The
            // member that holds it is named when one holds an integer past 2^53.
            let params = members["params"]?.objectValue ?? [:]
            let field = params.keys.sorted(by: JSONValue.utf16Precedes).first { params[$0]!.holdsIntegerPastExactRange }
            return .failure(Refusal(id: id ?? .null, error: RPCError(.invalidArguments,
                "\(method)\(field.map { ": " + $0 } ?? ""): the integer \(inexact.prefix(40)) cannot be held exactly: JSON numbers are doubles (integers up to 2^53); send it as a string",
                field: field), silent: id == nil))
        }
        return .success(RPCRequest(id: id, method: method, params: members["params"] ?? .object([:])))
    }

    /// A request line (without its newline), as a client sends it: the inverse of `decode`.
    public static func line(id: JSONValue, method: String, params: JSONValue) -> [UInt8] {
        JSONValue.object(["jsonrpc": .string("2.0"), "id": id, "method": .string(method), "params": params]).canonicalBytes
    }

    /// Blank lines between requests are allowed and ignored.
    public static func isBlank(_ line: [UInt8]) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }
    }
}

public enum RPCResponse {
    public static func line(id: JSONValue, result: JSONValue) -> [UInt8] {
        JSONValue.object(["jsonrpc": .string("2.0"), "id": id, "result": result]).canonicalBytes
    }

    public static func line(id: JSONValue, error: RPCError) -> [UInt8] {
        JSONValue.object(["jsonrpc": .string("2.0"), "id": id, "error": error.json]).canonicalBytes
    }
}

/// Splits a byte stream into lines (without the newline), refusing any line longer than a
/// limit as soon as that many bytes arrive without a newline: a peer cannot make ward buffer
/// more than the limit plus one read.
public struct LineFramer: Sendable {
    public struct TooLong: Error, Sendable {}

    public let maximumLineBytes: Int
    private var buffer: [UInt8] = []
    /// Where the first unreturned line starts in `buffer`.
    private var start = 0
    /// How far past `start` is known to hold no newline.
    private var scanned = 0

    public init(maximumLineBytes: Int = .max) { self.maximumLineBytes = maximumLineBytes }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        // Drop returned lines before growing, so the buffer holds at most one partial line
        // plus what was just read.
        if start > 0 {
            buffer.removeSubrange(0..<start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next whole line, nil when more bytes are needed.
    public mutating func next() throws(TooLong) -> [UInt8]? {
        guard let newline = buffer[(start + scanned)...].firstIndex(of: 0x0A) else {
            scanned = buffer.count - start
            if scanned > maximumLineBytes { throw TooLong() }
            return nil
        }
        if newline - start > maximumLineBytes { throw TooLong() }
        let line = Array(buffer[start..<newline])
        start = newline + 1
        scanned = 0
        return line
    }

    /// After `TooLong`: drops the over-long line. True when it ended in what was read (the
    /// bytes after its newline are kept); false when the rest of it is still to come, and
    /// the next line `next` returns is its end.
    public mutating func skipLine() -> Bool {
        if let newline = buffer[start...].firstIndex(of: 0x0A) {
            start = newline + 1
            scanned = 0
            return true
        }
        buffer.removeAll(keepingCapacity: true)
        start = 0
        scanned = 0
        return false
    }

    /// Bytes of a line begun but not finished (a request cut off by the peer's close).
    public var pendingBytes: Int { buffer.count - start }
}
