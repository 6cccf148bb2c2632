import Foundation
import GRDB
import GRDBSQLite

/// A value bound to a statement or read from a row, as the ledger's two stores hold it.
enum SQLValue: Equatable, Sendable {
    case null
    case int(Int)
    case real(Double)
    case text(String)
    case blob([UInt8])

    init(_ text: String?) { self = text.map { .text($0) } ?? .null }
    init(_ int: Int?) { self = int.map { .int($0) } ?? .null }

    var isNull: Bool { if case .null = self { true } else { false } }

    /// An INTEGER as stored; nil for any other type.
    var integer: Int? { if case .int(let n) = self { n } else { nil } }

    /// Equal as stored: text byte for byte (Swift's String equality takes "é" and "e\u{301}"
    /// for one), numbers by value whether integer or real.
    func same(as other: SQLValue) -> Bool {
        switch (self, other) {
        case (.null, .null): true
        case (.int(let a), .int(let b)): a == b
        case (.real(let a), .real(let b)): a == b
        case (.int(let a), .real(let b)), (.real(let b), .int(let a)): Int(exactly: b) == a
        case (.text(let a), .text(let b)): sameBytes(a, b)
        case (.blob(let a), .blob(let b)): a == b
        default: false
        }
    }
}

/// The same UTF-8 bytes (compared as memory: the generic comparison of two UTF-8 views
/// was a tenth of verify's time).
func sameBytes(_ a: String, _ b: String) -> Bool {
    var a = a, b = b
    return a.withUTF8 { x in b.withUTF8 { y in x.count == y.count && (x.isEmpty || memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0) } }
}

/// What binds as a value, off the hot path (whose statements build `SQLValue`s directly).
protocol SQLBindable {
    var sqlValue: SQLValue { get }
}

extension SQLValue: SQLBindable { var sqlValue: SQLValue { self } }
extension String: SQLBindable { var sqlValue: SQLValue { .text(self) } }
extension Int: SQLBindable { var sqlValue: SQLValue { .int(self) } }
extension Double: SQLBindable { var sqlValue: SQLValue { .real(self) } }
extension Array: SQLBindable where Element == UInt8 { var sqlValue: SQLValue { .blob(self) } }
extension Optional: SQLBindable where Wrapped: SQLBindable { var sqlValue: SQLValue { self?.sqlValue ?? .null } }

/// Which SQL a store speaks, where the ledger's statements differ (JSON functions, column
/// types a hostile edit could change).
enum SQLDialect: Sendable {
    case sqlite, postgres
}

/// One connection of a ledger store, inside a transaction (writes) or a read. The ledger's
/// logic is written once against this; each store runs it on its own database.
protocol SQLConnection: AnyObject {
    var dialect: SQLDialect { get }
    /// Rows changed by the last INSERT, UPDATE or DELETE.
    var changes: Int { get throws }
    /// Runs `sql` to completion with `values` bound (`?` placeholders).
    func run(_ sql: String, _ values: [SQLValue]) throws
    /// The first row of `sql`, read by `body`; nil when there is none.
    func first<T>(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> T) throws -> T?
    /// Every row of `sql`, each read by `body`.
    func all<T>(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> T) throws -> [T]
    /// Each row of `sql` in turn, read while it is current (SQLite steps a cursor, so a
    /// table of any length is read in constant memory).
    func each(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> Void) throws
}

extension SQLConnection {
    func run(_ sql: String) throws { try run(sql, []) }
    func first<T>(_ sql: String, _ body: (SQLRow) throws -> T) throws -> T? { try first(sql, [], body) }
    func all<T>(_ sql: String, _ body: (SQLRow) throws -> T) throws -> [T] { try all(sql, [], body) }

    // Off the hot path: rows kept past their statement, single values.

    /// The first row of `sql`, kept (its columns read by name).
    func row(_ sql: String, _ values: any SQLBindable...) throws -> SQLRow? { try first(sql, values.map(\.sqlValue)) { $0.kept } }
    /// Every row of `sql`, kept.
    func rows(_ sql: String, _ values: [SQLValue]) throws -> [SQLRow] { try all(sql, values) { $0.kept } }
    func rows(_ sql: String, _ values: any SQLBindable...) throws -> [SQLRow] { try rows(sql, values.map(\.sqlValue)) }
    /// The first column of the first row as text; nil for no row or NULL.
    func text(_ sql: String, _ values: any SQLBindable...) throws -> String? { try first(sql, values.map(\.sqlValue)) { $0.optionalText(0) } ?? nil }
    /// The first column of the first row as an integer; nil for no row or NULL.
    func int(_ sql: String, _ values: any SQLBindable...) throws -> Int? { try first(sql, values.map(\.sqlValue)) { $0.optionalInt(0) } ?? nil }
    /// The first column of every row as text.
    func texts(_ sql: String, _ values: any SQLBindable...) throws -> [String] { try all(sql, values.map(\.sqlValue)) { $0.text(0) } }
    /// The first column of every row as integers.
    func ints(_ sql: String, _ values: any SQLBindable...) throws -> [Int] { try all(sql, values.map(\.sqlValue)) { $0.int(0) } }
    /// Runs `sql` with `values` bound.
    func execute(_ sql: String, _ values: any SQLBindable...) throws { try run(sql, values.map(\.sqlValue)) }
}

/// The columns of one row, read by index (or, off the hot path, by name).
struct SQLRow {
    fileprivate enum Source {
        /// A SQLite statement positioned on the row: columns are read in place.
        case sqlite(OpaquePointer)
        /// Values already decoded (a PostgreSQL row).
        case values([SQLValue], columns: [String])
    }

    private let source: Source

    init(statement: OpaquePointer) { source = .sqlite(statement) }
    init(values: [SQLValue], columns: [String]) { source = .values(values, columns: columns) }

    func isNull(_ i: Int32) -> Bool {
        switch source {
        case .sqlite(let h): sqlite3_column_type(h, i) == SQLITE_NULL
        case .values(let v, _): v[Int(i)].isNull
        }
    }

    func int(_ i: Int32) -> Int {
        switch source {
        case .sqlite(let h): return Int(sqlite3_column_int64(h, i))
        case .values(let v, _):
            switch v[Int(i)] {
            case .int(let n): return n
            case .real(let d): return Int(exactly: d.rounded(.towardZero)) ?? 0
            case .text(let s): return Int(s) ?? 0
            default: return 0
            }
        }
    }

    func optionalInt(_ i: Int32) -> Int? { isNull(i) ? nil : int(i) }

    func real(_ i: Int32) -> Double {
        switch source {
        case .sqlite(let h): return sqlite3_column_double(h, i)
        case .values(let v, _):
            switch v[Int(i)] {
            case .int(let n): return Double(n)
            case .real(let d): return d
            case .text(let s): return Double(s) ?? 0
            default: return 0
            }
        }
    }

    func text(_ i: Int32) -> String {
        switch source {
        case .sqlite(let h):
            guard let p = sqlite3_column_text(h, i) else { return "" }
            let n = Int(sqlite3_column_bytes(h, i))
            return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
        case .values(let v, _):
            switch v[Int(i)] {
            case .text(let s): return s
            case .int(let n): return String(n)
            case .real(let d): return String(d)
            case .blob(let b): return String(decoding: b, as: UTF8.self)
            case .null: return ""
            }
        }
    }

    func optionalText(_ i: Int32) -> String? { isNull(i) ? nil : text(i) }

    func blob(_ i: Int32) -> [UInt8] {
        switch source {
        case .sqlite(let h):
            let n = Int(sqlite3_column_bytes(h, i))
            guard n > 0, let p = sqlite3_column_blob(h, i) else { return [] }
            return Array(UnsafeRawBufferPointer(start: p, count: n))
        case .values(let v, _):
            switch v[Int(i)] {
            case .blob(let b): return b
            case .text(let s): return Array(s.utf8)
            default: return []
            }
        }
    }

    /// The bytes of column `i` (a BLOB's, or a TEXT's UTF-8), lent to `body` without a copy
    /// where the store allows.
    func withBytes<T>(_ i: Int32, _ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        switch source {
        case .sqlite(let h):
            let p = sqlite3_column_blob(h, i)
            return try body(UnsafeRawBufferPointer(start: p, count: p == nil ? 0 : Int(sqlite3_column_bytes(h, i))))
        case .values:
            return try blob(i).withUnsafeBytes(body)
        }
    }

    /// Column `i` as the value it is stored as.
    func value(_ i: Int32) -> SQLValue {
        switch source {
        case .sqlite(let h):
            switch sqlite3_column_type(h, i) {
            case SQLITE_INTEGER: return .int(int(i))
            case SQLITE_FLOAT: return .real(real(i))
            case SQLITE_TEXT: return .text(text(i))
            case SQLITE_BLOB: return .blob(blob(i))
            default: return .null
            }
        case .values(let v, _): return v[Int(i)]
        }
    }

    /// Whether column `i` holds `expected`, as `SQLValue.same` compares them, read in place.
    func holds(_ expected: SQLValue, at i: Int32) -> Bool {
        guard case .sqlite(let h) = source else { return value(i).same(as: expected) }
        let type = sqlite3_column_type(h, i)
        switch expected {
        case .null:
            return type == SQLITE_NULL
        case .int(let n):
            return type == SQLITE_INTEGER ? sqlite3_column_int64(h, i) == Int64(n) : type == SQLITE_FLOAT && Int64(exactly: sqlite3_column_double(h, i)) == Int64(n)
        case .real(let d):
            return type == SQLITE_FLOAT ? sqlite3_column_double(h, i) == d : type == SQLITE_INTEGER && Int64(exactly: d) == sqlite3_column_int64(h, i)
        case .text(var text):
            guard type == SQLITE_TEXT, let p = sqlite3_column_text(h, i) else { return false }
            let n = Int(sqlite3_column_bytes(h, i))
            return text.withUTF8 { $0.count == n && (n == 0 || memcmp($0.baseAddress!, p, n) == 0) }
        case .blob(let data):
            guard type == SQLITE_BLOB else { return false }
            let n = Int(sqlite3_column_bytes(h, i))
            return data.count == n && (n == 0 || data.withUnsafeBytes { memcmp($0.baseAddress!, sqlite3_column_blob(h, i), n) == 0 })
        }
    }

    /// The names of its columns.
    var columnNames: [String] {
        switch source {
        case .sqlite(let h): (0..<sqlite3_column_count(h)).map { String(cString: sqlite3_column_name(h, $0)) }
        case .values(_, let columns): columns
        }
    }

    /// The row with its values copied out of the statement, to be kept past it.
    var kept: SQLRow {
        guard case .sqlite(let h) = source else { return self }
        let n = sqlite3_column_count(h)
        return SQLRow(values: (0..<n).map { value($0) }, columns: columnNames)
    }

    // Columns by name, off the hot path (`SELECT *` of audits), as GRDB's rows read them:
    // the type asked for, NULL as nil (or as 0 and "" where no optional is asked for).
    subscript(name: String) -> String {
        let v: SQLValue = self[name]
        return v.isNull ? "" : v.textValue ?? v.description
    }
    subscript(name: String) -> String? { let v: SQLValue = self[name]; return v.isNull ? nil : (self[name] as String) }
    subscript(name: String) -> Int { (self[name] as Int?) ?? 0 }
    subscript(name: String) -> Int? {
        switch self[name] as SQLValue {
        case .int(let n): n
        case .real(let d): Int(exactly: d)
        case .text(let s): Int(s)
        default: nil
        }
    }
    subscript(name: String) -> Double? {
        switch self[name] as SQLValue {
        case .int(let n): Double(n)
        case .real(let d): d
        case .text(let s): Double(s)
        default: nil
        }
    }
    subscript(name: String) -> [UInt8]? {
        switch self[name] as SQLValue {
        case .blob(let b): b
        case .text(let s): Array(s.utf8)
        default: nil
        }
    }

    /// The column named `name`; NULL when absent.
    subscript(name: String) -> SQLValue {
        switch source {
        case .sqlite(let h):
            for i in 0..<sqlite3_column_count(h) where String(cString: sqlite3_column_name(h, i)) == name { return value(i) }
            return .null
        case .values(let v, let columns):
            return columns.firstIndex(of: name).map { v[$0] } ?? .null
        }
    }
}

extension SQLValue: CustomStringConvertible {
    var textValue: String? { if case .text(let s) = self { s } else { nil } }

    /// The bytes of a BLOB (or of TEXT), empty for anything else.
    var bytes: [UInt8] {
        switch self {
        case .blob(let b): b
        case .text(let s): Array(s.utf8)
        default: []
        }
    }

    /// A value in a finding.
    var description: String {
        switch self {
        case .null: "none"
        case .int(let n): String(n)
        case .real(let d): d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
        case .text(let s): s
        case .blob(let b): Digest.hex(b)
        }
    }
}

/// The SQLite store's connection: GRDB owns the connection, the statement cache and the
/// transactions; the ledger's statements go through SQLite's C API on GRDB's cached
/// statements. Each `tool.call` runs about ten of them inside two transactions, and GRDB's
/// `Row` and argument boxing cost more CPU than SQLite itself.
extension Database: SQLConnection {
    var dialect: SQLDialect { .sqlite }
    var changes: Int { changesCount }

    func run(_ sql: String, _ values: [SQLValue]) throws {
        let handle = try prepared(sql, values)
        defer { sqlite3_reset(handle) }
        while try step(handle) {}
    }

    func first<T>(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> T) throws -> T? {
        let handle = try prepared(sql, values)
        defer { sqlite3_reset(handle) }
        return try step(handle) ? body(SQLRow(statement: handle)) : nil
    }

    func all<T>(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> T) throws -> [T] {
        let handle = try prepared(sql, values)
        defer { sqlite3_reset(handle) }
        var rows: [T] = []
        while try step(handle) { rows.append(try body(SQLRow(statement: handle))) }
        return rows
    }

    func each(_ sql: String, _ values: [SQLValue], _ body: (SQLRow) throws -> Void) throws {
        let handle = try prepared(sql, values)
        defer { sqlite3_reset(handle) }
        while try step(handle) { try body(SQLRow(statement: handle)) }
    }

    private func prepared(_ sql: String, _ values: [SQLValue]) throws -> OpaquePointer {
        let handle = try cachedStatement(sql: sql).sqliteStatement
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        for (i, value) in values.enumerated() {
            let index = Int32(i + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(handle, index)
            case .int(let v): rc = sqlite3_bind_int64(handle, index, Int64(v))
            case .real(let v): rc = sqlite3_bind_double(handle, index, v)
            case .text(var s): rc = s.withUTF8 { sqlite3_bind_text(handle, index, $0.baseAddress, Int32($0.count), sqliteTransient) }
            case .blob(let b) where b.isEmpty: rc = sqlite3_bind_zeroblob(handle, index, 0)  // a NULL pointer would bind NULL
            case .blob(let b): rc = b.withUnsafeBytes { sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), sqliteTransient) }
            }
            guard rc == SQLITE_OK else { throw error(handle, rc) }
        }
        return handle
    }

    private func step(_ handle: OpaquePointer) throws -> Bool {
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let rc: throw error(handle, rc)
        }
    }

    private func error(_ handle: OpaquePointer, _ rc: Int32) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: rc), message: String(cString: sqlite3_errmsg(sqlite3_db_handle(handle))),
                      sql: String(cString: sqlite3_sql(handle)))
    }
}

/// SQLite copies bound bytes before the bind call returns.
private let sqliteTransient = unsafeBitCast(OpaquePointer(bitPattern: -1), to: sqlite3_destructor_type.self)

extension SQLDialect {
    /// The value at `path` in the JSON text of `column`, as SQL: an object or array as its
    /// JSON text, a string as its text, a number as a number (SQLite) or its text (PostgreSQL).
    func json(_ column: String, _ path: String...) -> String {
        switch self {
        case .sqlite: "json_extract(\(column), '$.\(path.joined(separator: "."))')"
        case .postgres: "(\(column)::jsonb #>> '{\(path.joined(separator: ","))}')"
        }
    }

    /// As `json`, NULL where the text is not valid JSON (a hostile edit: verify reads it).
    func jsonIfValid(_ column: String, _ path: String...) -> String {
        let valid = self == .sqlite ? "json_valid(\(column))" : "ward_json_valid(\(column))"
        let value = switch self {
        case .sqlite: "json_extract(\(column), '$.\(path.joined(separator: "."))')"
        case .postgres: "(\(column)::jsonb #>> '{\(path.joined(separator: ","))}')"
        }
        return "CASE WHEN \(valid) THEN \(value) END"
    }

    /// The number at `path` in the JSON text of `column` (NULL for no number there; the text
    /// must be valid JSON on PostgreSQL).
    func jsonNumber(_ column: String, _ path: String...) -> String {
        switch self {
        case .sqlite: "json_extract(\(column), '$.\(path.joined(separator: "."))')"
        case .postgres:
            "(CASE WHEN jsonb_typeof(\(column)::jsonb #> '{\(path.joined(separator: ","))}') = 'number' THEN (\(column)::jsonb #>> '{\(path.joined(separator: ","))}')::numeric END)"
        }
    }

    /// Whether the text of `column` is a JSON object (false where it is no JSON at all).
    func isJSONObject(_ column: String) -> String {
        switch self {
        case .sqlite: "CASE WHEN json_valid(\(column)) THEN json_type(\(column)) = 'object' ELSE 0 END"
        case .postgres: "CASE WHEN ward_json_valid(\(column)) THEN jsonb_typeof(\(column)::jsonb) = 'object' ELSE false END"
        }
    }

    /// The values of `expression` over a group, joined by newlines.
    func lines(_ expression: String) -> String {
        switch self {
        case .sqlite: "group_concat(\(expression), char(10))"
        case .postgres: "string_agg(\(expression), chr(10))"
        }
    }
}
