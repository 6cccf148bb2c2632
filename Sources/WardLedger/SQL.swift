import GRDB
import GRDBSQLite

/// A value bound to a statement on the ledger's hot path.
enum SQLValue {
    case null
    case int(Int)
    case real(Double)
    case text(String)
    case blob([UInt8])

    init(_ text: String?) { self = text.map { .text($0) } ?? .null }
    init(_ int: Int?) { self = int.map { .int($0) } ?? .null }
}

/// The columns of the row a statement is positioned on, read by index.
struct SQLRow {
    let handle: OpaquePointer

    func isNull(_ i: Int32) -> Bool { sqlite3_column_type(handle, i) == SQLITE_NULL }
    func int(_ i: Int32) -> Int { Int(sqlite3_column_int64(handle, i)) }
    func optionalInt(_ i: Int32) -> Int? { isNull(i) ? nil : int(i) }
    func real(_ i: Int32) -> Double { sqlite3_column_double(handle, i) }
    func text(_ i: Int32) -> String {
        guard let p = sqlite3_column_text(handle, i) else { return "" }
        let n = Int(sqlite3_column_bytes(handle, i))
        return String(decoding: UnsafeBufferPointer(start: p, count: n), as: UTF8.self)
    }
    func optionalText(_ i: Int32) -> String? { isNull(i) ? nil : text(i) }
    func blob(_ i: Int32) -> [UInt8] {
        let n = Int(sqlite3_column_bytes(handle, i))
        guard n > 0, let p = sqlite3_column_blob(handle, i) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: n))
    }
}

/// The ledger's hot statements go through SQLite's C API on GRDB's cached statements: each
/// `tool.call` runs about ten of them inside two transactions, and GRDB's `Row` and
/// argument boxing cost more CPU than SQLite itself. GRDB still owns the connection, the
/// statement cache and the transactions.
extension Database {
    /// Runs `sql` to completion with `values` bound.
    func run(_ sql: String, _ values: [SQLValue] = []) throws {
        let handle = try prepared(sql, values)
        defer { sqlite3_reset(handle) }
        while try step(handle) {}
    }

    /// The first row of `sql`, read by `body`; nil when there is none.
    func first<T>(_ sql: String, _ values: [SQLValue] = [], _ body: (SQLRow) throws -> T) throws -> T? {
        let handle = try prepared(sql, values)
        defer { sqlite3_reset(handle) }
        return try step(handle) ? body(SQLRow(handle: handle)) : nil
    }

    /// Every row of `sql`, each read by `body`.
    func all<T>(_ sql: String, _ values: [SQLValue] = [], _ body: (SQLRow) throws -> T) throws -> [T] {
        let handle = try prepared(sql, values)
        defer { sqlite3_reset(handle) }
        var rows: [T] = []
        while try step(handle) { rows.append(try body(SQLRow(handle: handle))) }
        return rows
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
