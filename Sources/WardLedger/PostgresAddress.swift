import Foundation

/// Where a PostgreSQL ledger lives, parsed from a libpq-style URL:
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?PARAM=VALUE&...]` (or `postgresql://`).
///
/// An empty HOST means a Unix socket: in the directory `?host=/dir` names (else
/// `/var/run/postgresql`, Debian's), at `DIR/.s.PGSQL.PORT`. User, password and database are
/// percent-decoded; the password may also come from `PGPASSWORD`. Query parameters:
/// `host`, `port`, `user`, `password`, `dbname`, `connect_timeout` (seconds),
/// `application_name`, `sslmode` (`disable`, the default, `prefer` or `require`, over TCP; as
/// with libpq, `require` encrypts without checking the server's certificate, and
/// `verify-ca`/`verify-full` are refused: this build has no certificate store configured).
/// Any other parameter is an error. User and database default, as with libpq, to `PGUSER` or
/// the current user's name, and to the user name.
struct PostgresAddress: Sendable, Equatable, CustomStringConvertible {
    enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    enum TLSMode: String, Sendable, Equatable {
        case disable, prefer, require
    }

    var endpoint: Endpoint
    var user: String
    var password: String?
    var database: String
    /// Seconds, from `connect_timeout`; nil when the URL gives none.
    var connectTimeout: Double?
    var applicationName: String?
    var tls: TLSMode
    /// Seconds a supervisor's lease lasts unrenewed (`lease=`, ward's own parameter); nil
    /// for the default.
    var leaseSeconds: Double?

    /// The socket directory and port of a Unix endpoint, or host and port of a TCP one.
    private var hostForDisplay: String
    private var port: Int

    static func isURL(_ s: String) -> Bool {
        s.hasPrefix("postgres://") || s.hasPrefix("postgresql://")
    }

    struct Invalid: Error, CustomStringConvertible {
        let description: String
    }

    /// Reads `url`. An error names what is wrong, but repeats no piece of a URL that may
    /// hold a password: one holding an unencoded `/`, `?` or `@` is cut in the wrong places,
    /// and the pieces, read as a host, port, database or parameter, would be its password's.
    init(url: String, environment: [String: String] = ProcessInfo.processInfo.environment) throws {
        do {
            try self.init(parsing: url, environment: environment)
        } catch is Invalid where Self.mayHoldSecret(url) {
            throw Invalid(description: "invalid PostgreSQL URL (not repeated: it may hold a password): percent-encode /, ?, @, :, & and # "
                + "in the user name, the password and parameter values (%2F, %3F, %40, %3A, %26, %23)")
        }
    }

    /// Whether `url` has a password: `user:password@` or a `password=` parameter.
    private static func mayHoldSecret(_ url: String) -> Bool {
        guard let scheme = url.range(of: "://") else { return false }
        let rest = url[scheme.upperBound...]
        if let at = rest.lastIndex(of: "@"), rest[..<at].contains(":") { return true }
        return rest.contains("password=")
    }

    private init(parsing url: String, environment: [String: String]) throws {
        func invalid(_ what: String) -> Invalid { Invalid(description: "invalid PostgreSQL URL: \(what)") }
        let rest: Substring
        if url.hasPrefix("postgresql://") {
            rest = url.dropFirst("postgresql://".count)
        } else if url.hasPrefix("postgres://") {
            rest = url.dropFirst("postgres://".count)
        } else {
            throw invalid("it must start with postgres:// or postgresql://")
        }
        if rest.contains("#") { throw invalid("a fragment (#...) is not allowed") }
        let beforeQuery = rest.firstIndex(of: "?").map { rest[..<$0] } ?? rest
        let query = rest.firstIndex(of: "?").map { rest[rest.index(after: $0)...] } ?? ""
        let authority = beforeQuery.firstIndex(of: "/").map { beforeQuery[..<$0] } ?? beforeQuery
        let path = beforeQuery.firstIndex(of: "/").map { beforeQuery[beforeQuery.index(after: $0)...] } ?? ""

        var user: String?
        var password: String?
        var hostPort = authority
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            hostPort = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.decode(userInfo[..<colon], "user name")
                password = try Self.decode(userInfo[userInfo.index(after: colon)...], "password")
            } else {
                user = try Self.decode(userInfo, "user name")
            }
        }
        if hostPort.contains(",") { throw invalid("several hosts are not supported") }
        var host: String
        var portText: Substring?
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else { throw invalid("an IPv6 host lacks its closing ]") }
            host = String(hostPort[hostPort.index(after: hostPort.startIndex)..<close])
            let after = hostPort[hostPort.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw invalid("unexpected text after the IPv6 host: \(after)") }
                portText = after.dropFirst()
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            host = try Self.decode(hostPort[..<colon], "host")
            portText = hostPort[hostPort.index(after: colon)...]
        } else {
            host = try Self.decode(hostPort, "host")
        }
        // An @ there is a password's, cut at its / (an @ of the name itself is written %40).
        if path.contains("@") { throw invalid("the database name holds an @ (percent-encode it: %40)") }
        var database = path.isEmpty ? nil : try Self.decode(path, "database name")
        var port = 5432
        if let portText { port = try Self.port(portText, invalid) }
        var connectTimeout: Double?
        var applicationName: String?
        var tls = TLSMode.disable
        var leaseSeconds: Double?

        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            guard let eq = pair.firstIndex(of: "=") else { throw invalid("query parameter \(pair) has no value") }
            let name = try Self.decode(pair[..<eq], "query parameter name")
            let value = try Self.decode(pair[pair.index(after: eq)...], "value of \(name)")
            switch name {
            case "host": host = value
            case "port": port = try Self.port(Substring(value), invalid)
            case "user": user = value
            case "password": password = value
            case "dbname": database = value
            case "application_name": applicationName = value
            case "connect_timeout":
                guard let seconds = Double(value), seconds >= 0, seconds.isFinite else {
                    throw invalid("connect_timeout must be a number of seconds, not \(value)")
                }
                connectTimeout = seconds == 0 ? nil : max(seconds, 0.001)  // libpq: 0 means wait forever
            case "sslmode":
                switch value {
                case "disable", "allow": tls = .disable
                case "prefer": tls = .prefer
                case "require": tls = .require
                case "verify-ca", "verify-full":
                    throw invalid("sslmode=\(value) is not supported: this build checks no server certificates (use sslmode=require or disable)")
                default: throw invalid("sslmode must be disable, allow, prefer or require, not \(value)")
                }
            case "lease":
                // ward's own: how long a supervisor's lease on the ledger lasts unrenewed.
                guard let seconds = Double(value), seconds >= 0.5, seconds <= 3600 else {
                    throw invalid("lease must be a number of seconds from 0.5 to 3600, not \(value)")
                }
                leaseSeconds = seconds
            default: throw invalid("unknown query parameter \(name)")
            }
        }

        guard let user = user.flatMap({ $0.isEmpty ? nil : $0 }) ?? environment["PGUSER"] ?? Self.currentUserName() else {
            throw invalid("no user name")
        }
        self.user = user
        self.leaseSeconds = leaseSeconds
        self.password = password ?? environment["PGPASSWORD"]
        // As with libpq, the database defaults to the user's name.
        self.database = database.flatMap { $0.isEmpty ? nil : $0 } ?? user
        self.connectTimeout = connectTimeout
        self.applicationName = applicationName
        self.tls = tls
        self.port = port
        if host.isEmpty { host = "/var/run/postgresql" }
        if host.hasPrefix("/") {
            let socket = (host.hasSuffix("/") ? String(host.dropLast()) : host) + "/.s.PGSQL.\(port)"
            // sun_path holds 108 bytes with the terminating NUL.
            guard socket.utf8.count <= 107 else { throw invalid("the Unix socket path \(socket) is longer than 107 bytes") }
            endpoint = .unix(path: socket)
        } else {
            endpoint = .tcp(host: host, port: port)
        }
        hostForDisplay = host
    }

    /// The address as a URL without the password (`:***` stands in for one).
    var redacted: String {
        // Never the password, not even masked: commands ward prints for pasting (resolve,
        // resume) must work as printed, with the password from PGPASSWORD.
        var s = "postgres://" + Self.encode(user) + "@"
        var query: [String] = []
        switch endpoint {
        case .tcp(let host, let port):
            s += host.contains(":") ? "[\(host)]" : Self.encode(host)
            if port != 5432 { s += ":\(port)" }
        case .unix:
            query.append("host=" + Self.encode(hostForDisplay, keeping: "/"))
            if port != 5432 { query.append("port=\(port)") }
        }
        s += "/" + Self.encode(database)
        if let connectTimeout { query.append("connect_timeout=\(connectTimeout)") }
        if let applicationName { query.append("application_name=" + Self.encode(applicationName)) }
        if tls != .disable { query.append("sslmode=\(tls.rawValue)") }
        if let leaseSeconds { query.append("lease=\(leaseSeconds.formatted())") }
        if !query.isEmpty { s += "?" + query.joined(separator: "&") }
        return s
    }

    var description: String { redacted }

    // MARK: Helpers

    private static func port(_ text: Substring, _ invalid: (String) -> Invalid) throws -> Int {
        guard let port = Int(text), (1...65535).contains(port), text.allSatisfy(\.isASCII) else {
            throw invalid("the port must be a number from 1 to 65535, not \(text.isEmpty ? "nothing" : String(text))")
        }
        return port
    }

    /// Percent-decodes `text`; a stray `%` is an error.
    private static func decode(_ text: Substring, _ what: String) throws -> String {
        guard text.contains("%") else { return String(text) }
        var bytes: [UInt8] = []
        var utf8 = text.utf8[...]
        while let b = utf8.popFirst() {
            guard b == UInt8(ascii: "%") else { bytes.append(b); continue }
            guard let h = utf8.popFirst(), let l = utf8.popFirst(), let hi = hexValue(h), let lo = hexValue(l) else {
                throw Invalid(description: "invalid PostgreSQL URL: the \(what) has a % not followed by two hex digits")
            }
            bytes.append(hi << 4 | lo)
        }
        guard let decoded = String(validating: bytes, as: UTF8.self) else {
            throw Invalid(description: "invalid PostgreSQL URL: the \(what) is not UTF-8 once percent-decoded")
        }
        return decoded
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func encode(_ text: String, keeping extra: String = "") -> String {
        var out = ""
        for b in text.utf8 {
            let c = Character(Unicode.Scalar(b))
            if b < 0x80, c.isLetter || c.isNumber || "-._~".contains(c) || extra.contains(c) {
                out.append(c)
            } else {
                out += String(format: "%%%02X", b)
            }
        }
        return out
    }

    private static func currentUserName() -> String? {
        guard let pw = getpwuid(geteuid()), let name = pw.pointee.pw_name else { return nil }
        return String(cString: name)
    }
}
