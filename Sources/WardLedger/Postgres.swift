import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresNIO
import Synchronization

/// A failed PostgreSQL operation. Server errors carry their SQLSTATE (`23505` unique
/// violation, `40001` serialization failure, `40P01` deadlock, `57P01` shutdown, ...) and
/// the server's message and detail; `connectionLost` says the connection is gone (refused,
/// closed, timed out, or ended by the server), so the statement's fate may be unknown and
/// the link must be replaced. Never contains a password.
struct PostgresFailure: Error, CustomStringConvertible, Sendable {
    let sqlState: String?
    let message: String
    let connectionLost: Bool

    var description: String {
        if let sqlState { return "PostgreSQL error \(sqlState): \(message)" }
        return "PostgreSQL: \(message)"
    }
}

/// The rows of one statement, each value decoded by its column's type, and how many rows an
/// INSERT, UPDATE, DELETE or MERGE changed (0 for other statements). `columns` comes from the
/// rows: postgres-nio 1.33 hands a statement's row description over only with its rows, so
/// it is empty when there are none.
struct PostgresResult: Sendable {
    var columns: [String]
    var rows: [[SQLValue]]
    var affected: Int
    /// The command tag's command: "COMMIT", or "ROLLBACK" for a COMMIT of a failed transaction.
    var command: String = ""
}

/// One connection to PostgreSQL for callers on ordinary threads: every call blocks until the
/// server has answered. Not thread-safe: its owner serializes calls (PostgresPool does).
///
/// Statements take SQLite's `?` placeholders (rewritten to `$1, $2, ...`, outside quotes,
/// comments and dollar-quoted bodies; SQL without `?` is sent as written, so `$n` works too;
/// PostgreSQL's jsonb `?` operators cannot be used with `?` placeholders). Values are bound as
/// int8, float8, text and bytea, NULL untyped: a text value bound to a column of another type
/// (timestamptz, jsonb, ...) needs a cast (`?::jsonb`), and an untyped NULL in an expression
/// whose type PostgreSQL cannot infer (`? IS NULL`) needs one too (`?::text IS NULL`). Each
/// statement is one round trip (Parse, Bind, Describe, Execute and Sync sent together).
///
/// The session runs with `TimeZone=UTC`, so timestamps decode to the text the server would
/// print for them.
final class PostgresLink {
    let address: PostgresAddress
    private let connection: PostgresConnection
    private var failed = false
    private var closed = false
    /// `?` SQL to `$n` SQL and its number of placeholders (nil when the SQL had none).
    private var rewrites: [String: (sql: String, count: Int?)] = [:]
    private static let rewriteCacheLimit = 512

    /// True once the connection failed or was closed: its owner should make a new one.
    var isBroken: Bool { failed || closed || connection.isClosed }

    /// Connects and logs in, giving up after `timeout` seconds (or the URL's `connect_timeout`).
    init(_ address: PostgresAddress, timeout: Double) throws {
        self.address = address
        var configuration: PostgresConnection.Configuration
        switch address.endpoint {
        case .unix(let path):
            configuration = .init(unixSocketPath: path, username: address.user, password: address.password, database: address.database)
        case .tcp(let host, let port):
            configuration = .init(host: host, port: port, username: address.user, password: address.password,
                                  database: address.database, tls: try PostgresEventLoop.tls(address.tls))
        }
        let seconds = address.connectTimeout ?? timeout
        configuration.options.connectTimeout = .nanoseconds(Int64(max(seconds, 0.001) * 1e9))
        // A supervisor cut off inside a transaction must not hold its run's locks for the
        // server's TCP keepalive (hours): its session ends after a lease's worth of silence.
        let silence = Int((address.leaseSeconds ?? 15) * 1000)
        var parameters = [("TimeZone", "UTC"), ("idle_in_transaction_session_timeout", String(silence))]
        if let name = address.applicationName { parameters.append(("application_name", name)) }
        configuration.options.additionalStartupParameters = parameters
        let future = PostgresConnection.connect(
            on: PostgresEventLoop.group.next(), configuration: configuration,
            id: PostgresEventLoop.nextID(), logger: PostgresEventLoop.logger)
        do {
            connection = try future.wait()
        } catch {
            throw PostgresEventLoop.failure(error, address: address, connecting: true, connection: nil)
        }
    }

    deinit { close() }

    /// Runs one statement with `values` bound to its `?` placeholders, after every
    /// statement `enqueue`d before it: their failure, if any, is thrown (the first).
    func query(_ sql: String, _ values: [SQLValue] = []) throws -> PostgresResult {
        let own = Result { try send(sql, values) }
        try flush()
        return try receive(own.get())
    }

    /// Sends a statement whose answer nobody waits for now: the event loop sends the next
    /// as soon as this one is answered, and the calling thread waits once, at the next
    /// `query` or `flush`, for all of them, rather than once each (on a busy machine each
    /// wait is a wake-up of this thread and of the event loop's). The statements of one
    /// transaction run in order, all of them even when one fails (the server then refuses
    /// the rest of the transaction).
    func enqueue(_ sql: String, _ values: [SQLValue] = []) throws {
        pending.append(try send(sql, values))
    }

    /// Waits for every enqueued statement; throws the first failure among them.
    func flush() throws {
        guard !pending.isEmpty else { return }
        let waiting = pending
        pending = []
        var firstFailure: (any Error)?
        for future in waiting {
            do {
                _ = try receive(future)
            } catch {
                firstFailure = firstFailure ?? error
            }
        }
        if let firstFailure { throw firstFailure }
    }

    /// Rows changed by the last statement answered.
    private(set) var lastAffected = 0
    /// Answers received since the link was made: a transaction whose count did not move
    /// had nothing of it reach the server.
    private(set) var answered = 0
    private var pending: [EventLoopFuture<PostgresQueryResult>] = []

    private func send(_ sql: String, _ values: [SQLValue]) throws -> EventLoopFuture<PostgresQueryResult> {
        let rewritten: (sql: String, count: Int?)
        if let cached = rewrites[sql] {
            rewritten = cached
        } else {
            let (text, count) = PostgresSQL.placeholders(sql)
            rewritten = (text, count == 0 ? nil : count)
            if rewrites.count >= Self.rewriteCacheLimit { rewrites.removeAll(keepingCapacity: true) }
            rewrites[sql] = rewritten
        }
        if let count = rewritten.count, count != values.count {
            throw PostgresFailure(sqlState: nil, message: "the statement has \(count) ? placeholders but \(values.count) values were given: \(sql)", connectionLost: false)
        }
        return try start(rewritten.sql, values)
    }

    /// Runs a script of several statements (migrations), each as written (no placeholders),
    /// one after the other, stopping at the first failure. Split on `;` outside quotes,
    /// comments and dollar-quoted bodies (postgres-nio has no simple-query protocol, which would
    /// take them all at once). Each statement commits on its own unless the script has its own
    /// BEGIN and COMMIT.
    func execute(script: String) throws {
        for statement in PostgresSQL.statements(script) {
            _ = try receive(start(statement, []))
        }
    }

    /// Closes the connection (idempotent).
    func close() {
        guard !closed else { return }
        closed = true
        _ = try? connection.close().wait()
    }

    private func start(_ sql: String, _ values: [SQLValue]) throws -> EventLoopFuture<PostgresQueryResult> {
        guard !isBroken else {
            throw PostgresFailure(sqlState: nil, message: "the connection to \(address.redacted) is \(closed ? "closed" : "broken")", connectionLost: true)
        }
        var binds = PostgresBindings(capacity: values.count)
        for value in values {
            switch value {
            case .null: binds.appendNull()
            case .int(let v): binds.append(Bound(type: .int8, int: v))
            case .real(let v): binds.append(Bound(type: .float8, int: Int(Int64(bitPattern: v.bitPattern))))
            case .text(let v): binds.append(Bound(type: .text, text: v))
            case .blob(let v): binds.append(Bound(type: .bytea, bytes: v))
            }
        }
        return connection.query(PostgresQuery(unsafeSQL: sql, binds: binds), logger: PostgresEventLoop.logger)
    }

    private func receive(_ future: EventLoopFuture<PostgresQueryResult>) throws -> PostgresResult {
        let result: PostgresQueryResult
        do {
            result = try future.wait()
            answered += 1
        } catch {
            let failure = PostgresEventLoop.failure(error, address: address, connecting: false, connection: connection)
            if failure.connectionLost { failed = true }
            throw failure
        }
        let decoded = try PostgresDecoding.result(result)
        lastAffected = decoded.affected
        return decoded
    }
}

/// A value bound to a statement, in binary form with an explicit type.
private struct Bound: PostgresDynamicTypeEncodable {
    let psqlType: PostgresDataType
    var psqlFormat: PostgresFormat { .binary }
    private let int: Int
    private let text: String?
    private let bytes: [UInt8]?

    init(type: PostgresDataType, int: Int) { psqlType = type; self.int = int; text = nil; bytes = nil }
    init(type: PostgresDataType, text: String) { psqlType = type; int = 0; self.text = text; bytes = nil }
    init(type: PostgresDataType, bytes: [UInt8]) { psqlType = type; int = 0; text = nil; self.bytes = bytes }

    func encode<JSONEncoder: PostgresJSONEncoder>(into buffer: inout ByteBuffer, context: PostgresEncodingContext<JSONEncoder>) {
        if let text {
            buffer.writeString(text)
        } else if let bytes {
            buffer.writeBytes(bytes)
        } else {
            buffer.writeInteger(Int64(int), endianness: .big)
        }
    }
}

/// The event loop every link runs on, and the translation of postgres-nio's errors.
enum PostgresEventLoop {
    /// One thread for all connections: the ledger's statements are short and its callers block.
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    static let logger = Logger(label: "ward.postgres", factory: { _ in SwiftLogNoOpLogHandler() })
    private static let ids = Atomic<Int>(0)

    static func nextID() -> Int { ids.wrappingAdd(1, ordering: .relaxed).newValue }

    /// TLS as libpq's sslmode=prefer/require do it: encrypted, the certificate not checked.
    static func tls(_ mode: PostgresAddress.TLSMode) throws -> PostgresConnection.Configuration.TLS {
        switch mode {
        case .disable: return .disable
        case .prefer: return .prefer(try tlsContext.get())
        case .require: return .require(try tlsContext.get())
        }
    }

    private static let tlsContext: Result<NIOSSLContext, PostgresFailure> = {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        do {
            return .success(try NIOSSLContext(configuration: configuration))
        } catch {
            return .failure(PostgresFailure(sqlState: nil, message: "cannot set up TLS: \(error)", connectionLost: false))
        }
    }()

    /// A PostgresFailure for `error`, from connecting to `address` or from a statement on `connection`.
    static func failure(_ error: any Error, address: PostgresAddress, connecting: Bool, connection: PostgresConnection?) -> PostgresFailure {
        let at = "PostgreSQL at \(address.redacted)"
        let closedNow = connection?.isClosed ?? false
        if let failure = error as? PostgresFailure { return failure }
        guard let error = error as? PSQLError else {
            return PostgresFailure(sqlState: nil, message: "\(connecting ? "cannot connect to \(at): " : "")\(describe(error))", connectionLost: connecting || closedNow)
        }
        if error.code == .server, let info = error.serverInfo {
            let state = info[.sqlState]
            var message = info[.message] ?? "unknown error"
            if let detail = info[.detail] { message += " (\(detail))" }
            if let hint = info[.hint] { message += " Hint: \(hint)" }
            let severity = info[.severity] ?? info[.localizedSeverity] ?? "ERROR"
            // Class 08: connection exceptions; 57P01-57P03: the server is shutting down, crashed
            // or starting up; 53300: too many connections; FATAL and PANIC end the session.
            // While connecting, a login the server refuses (a missing database, a bad password)
            // is no lost connection; being full or starting up is, and is worth another try.
            let transient = state?.hasPrefix("08") == true || ["57P01", "57P02", "57P03", "53300"].contains(state ?? "")
            let lost = transient || (!connecting && (closedNow || severity == "FATAL" || severity == "PANIC"))
            if connecting || lost { message = "\(at): " + message }
            return PostgresFailure(sqlState: state, message: message, connectionLost: lost)
        }
        let underlying = error.underlying.map { ": " + describe($0) } ?? ""
        switch error.code {
        case .connectionError:
            return PostgresFailure(sqlState: nil, message: "cannot \(connecting ? "connect to" : "reach") \(at)\(underlying)", connectionLost: true)
        case .serverClosedConnection, .uncleanShutdown:
            return PostgresFailure(sqlState: nil, message: "\(at) closed the connection\(underlying)", connectionLost: true)
        case .clientClosedConnection:
            return PostgresFailure(sqlState: nil, message: "the connection to \(at) is closed\(underlying)", connectionLost: true)
        case .sslUnsupported:
            return PostgresFailure(sqlState: nil, message: "\(at) does not offer TLS, which sslmode=require asks for", connectionLost: false)
        case .authMechanismRequiresPassword:
            return PostgresFailure(sqlState: "28P01", message: "\(at) asks for a password and the URL and PGPASSWORD give none", connectionLost: false)
        case .unsupportedAuthMechanism:
            return PostgresFailure(sqlState: nil, message: "\(at) asks for an authentication method postgres-nio does not support", connectionLost: false)
        case .tooManyParameters:
            return PostgresFailure(sqlState: "54000", message: "a statement takes at most 65535 values", connectionLost: false)
        default:
            // Protocol and decoding errors leave the connection in an unknown state.
            return PostgresFailure(sqlState: nil, message: "\(at): \(error.code)\(underlying)", connectionLost: true)
        }
    }

    /// A short description of a transport error: the errno's text rather than NIO's dump.
    private static func describe(_ error: any Error) -> String {
        if let io = error as? IOError { return String(cString: strerror(io.errnoCode)) }
        if let connection = error as? NIOConnectionError, let first = connection.connectionErrors.first {
            return describe(first.error)
        }
        if case ChannelError.connectTimeout(let amount) = error {
            return "no answer within \(Double(amount.nanoseconds) / 1e9) s"
        }
        if let failure = error as? PostgresFailure { return failure.message }
        return String(describing: error)
    }
}
