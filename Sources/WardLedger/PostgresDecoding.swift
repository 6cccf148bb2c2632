import Foundation
import NIOCore
import PostgresNIO

/// Values from PostgreSQL's binary result format (postgres-nio always asks for it), decoded by
/// each column's type: integers and `oid` as `.int`, floats as `.real`, `numeric` as `.int`
/// when integral and in range else `.real`, `bool` as `.int(1/0)`, `bytea` as `.blob`, `void`
/// as `.null`, and text-like types (text, varchar, bpchar, name, "char", json, jsonb, xml, uuid,
/// date, time, timestamp, timestamptz) as `.text` in the server's text form (timestamps in the
/// session's UTC). Any other type is an error that names the column: cast it (`::text`).
enum PostgresDecoding {
    static func result(_ result: PostgresQueryResult) throws -> PostgresResult {
        var columns: [String] = []
        var rows: [[SQLValue]] = []
        rows.reserveCapacity(result.rows.count)
        for row in result.rows {
            var values: [SQLValue] = []
            values.reserveCapacity(row.count)
            for cell in row {
                if rows.isEmpty { columns.append(cell.columnName) }
                values.append(try value(cell))
            }
            rows.append(values)
        }
        let metadata = result.metadata
        let affected: Int
        switch metadata.command {
        case "INSERT", "UPDATE", "DELETE": affected = metadata.rows ?? 0
        case let tag where tag.hasPrefix("MERGE "): affected = Int(tag.dropFirst(6)) ?? 0
        default: affected = 0
        }
        return PostgresResult(columns: columns, rows: rows, affected: affected, command: metadata.command)
    }

    static func value(_ cell: PostgresCell) throws -> SQLValue {
        guard var buffer = cell.bytes else { return .null }
        func bad() -> PostgresFailure {
            PostgresFailure(sqlState: nil, message: "column \"\(cell.columnName)\" holds a malformed \(cell.dataType) value", connectionLost: false)
        }
        switch cell.dataType.rawValue {
        case 16:  // bool
            guard let b: UInt8 = buffer.readInteger() else { throw bad() }
            return .int(b == 0 ? 0 : 1)
        case 21:  // int2
            guard let v: Int16 = buffer.readInteger() else { throw bad() }
            return .int(Int(v))
        case 23:  // int4
            guard let v: Int32 = buffer.readInteger() else { throw bad() }
            return .int(Int(v))
        case 20:  // int8
            guard let v: Int64 = buffer.readInteger() else { throw bad() }
            return .int(Int(v))
        case 26, 28, 29:  // oid, xid, cid: unsigned 32-bit
            guard let v: UInt32 = buffer.readInteger() else { throw bad() }
            return .int(Int(v))
        case 700:  // float4
            guard let v: UInt32 = buffer.readInteger() else { throw bad() }
            return .real(Double(Float(bitPattern: v)))
        case 701:  // float8
            guard let v: UInt64 = buffer.readInteger() else { throw bad() }
            return .real(Double(bitPattern: v))
        case 1700:  // numeric
            guard let v = numeric(&buffer) else { throw bad() }
            return v
        case 17:  // bytea
            return .blob(buffer.readBytes(length: buffer.readableBytes) ?? [])
        case 25, 1043, 1042, 19, 18, 705, 114, 142:  // text, varchar, bpchar, name, "char", unknown, json, xml
            return .text(buffer.readString(length: buffer.readableBytes) ?? "")
        case 3802:  // jsonb: a version byte (1), then the text
            guard let version: UInt8 = buffer.readInteger(), version == 1 else { throw bad() }
            return .text(buffer.readString(length: buffer.readableBytes) ?? "")
        case 2950:  // uuid
            guard let bytes = buffer.readBytes(length: 16) else { throw bad() }
            let hex = bytes.map { String(format: "%02x", $0) }.joined()
            var s = ""
            for (i, c) in hex.enumerated() {
                if [8, 12, 16, 20].contains(i) { s.append("-") }
                s.append(c)
            }
            return .text(s)
        case 1082:  // date: days since 2000-01-01
            guard let days: Int32 = buffer.readInteger() else { throw bad() }
            if days == .max { return .text("infinity") }
            if days == .min { return .text("-infinity") }
            let (day, bc) = date(Int(days))
            return .text(bc ? day + " BC" : day)
        case 1083:  // time: microseconds since midnight
            guard let micros: Int64 = buffer.readInteger() else { throw bad() }
            return .text(time(Int(micros)))
        case 1114, 1184:  // timestamp, timestamptz: microseconds since 2000-01-01 00:00 (UTC)
            guard let micros: Int64 = buffer.readInteger() else { throw bad() }
            if micros == .max { return .text("infinity") }
            if micros == .min { return .text("-infinity") }
            let m = Int(micros)
            let days = m >= 0 ? m / 86_400_000_000 : (m - 86_399_999_999) / 86_400_000_000
            let (day, bc) = date(days)
            var s = day + " " + time(m - days * 86_400_000_000)
            if cell.dataType.rawValue == 1184 { s += "+00" }
            return .text(bc ? s + " BC" : s)
        case 2278:  // void
            return .null
        default:
            throw PostgresFailure(
                sqlState: nil,
                message: "column \"\(cell.columnName)\" has type \(cell.dataType) (OID \(cell.dataType.rawValue)), which the ledger does not decode: cast it to text",
                connectionLost: false)
        }
    }

    /// numeric's binary form: digit count, weight (of the first base-10000 digit), sign,
    /// display scale, then the digits.
    private static func numeric(_ buffer: inout ByteBuffer) -> SQLValue? {
        guard let count: Int16 = buffer.readInteger(), let weight: Int16 = buffer.readInteger(),
              let sign: UInt16 = buffer.readInteger(), let _: Int16 = buffer.readInteger(), count >= 0 else { return nil }
        var digits: [Int] = []
        for _ in 0..<count {
            guard let d: Int16 = buffer.readInteger() else { return nil }
            digits.append(Int(d))
        }
        switch sign {
        case 0xC000: return .real(.nan)
        case 0xD000: return .real(.infinity)
        case 0xF000: return .real(-.infinity)
        case 0x0000, 0x4000: break
        default: return nil
        }
        let negative = sign == 0x4000
        let w = Int(weight)
        // Integral when no digit after the units position is nonzero.
        if digits.indices.allSatisfy({ $0 <= w || digits[$0] == 0 }) {
            var magnitude: UInt64 = 0
            var overflow = false
            if w >= 0 {
                for i in 0...w {
                    let (m, o1) = magnitude.multipliedReportingOverflow(by: 10_000)
                    let (a, o2) = m.addingReportingOverflow(UInt64(i < digits.count ? digits[i] : 0))
                    magnitude = a
                    if o1 || o2 { overflow = true; break }
                }
            }
            if !overflow {
                if !negative, magnitude <= UInt64(Int.max) { return .int(Int(magnitude)) }
                if negative, magnitude <= UInt64(Int.max) + 1 { return .int(Int(truncatingIfNeeded: 0 &- magnitude)) }
            }
        }
        // Otherwise the nearest double, through the decimal text.
        var text = negative ? "-" : ""
        if w < 0 {
            text += "0."
            text += String(repeating: "0000", count: -w - 1)
            for d in digits { text += pad(d, 4) }
        } else {
            for i in 0...w {
                let d = i < digits.count ? digits[i] : 0
                text += i == 0 ? String(d) : pad(d, 4)
            }
            if digits.count > w + 1 {
                text += "."
                for d in digits[(w + 1)...] { text += pad(d, 4) }
            }
        }
        return Double(text).map { .real($0) }
    }

    /// The ISO date (`YYYY-MM-DD`) of a day counted from 2000-01-01, and whether it is BC
    /// (PostgreSQL shows year 0 as 1 BC).
    private static func date(_ daysSince2000: Int) -> (text: String, bc: Bool) {
        // Howard Hinnant's civil_from_days, from 1970-01-01.
        let z = daysSince2000 + 10_957 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        let bc = year <= 0
        return ("\(pad(bc ? 1 - year : year, 4))-\(pad(month, 2))-\(pad(day, 2))", bc)
    }

    /// `HH:MM:SS[.ffffff]` (trailing zeros of the fraction dropped), as PostgreSQL prints it.
    private static func time(_ micros: Int) -> String {
        let seconds = micros / 1_000_000
        var s = "\(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):\(pad(seconds % 60, 2))"
        var fraction = micros % 1_000_000
        if fraction != 0 {
            var width = 6
            while fraction % 10 == 0 { fraction /= 10; width -= 1 }
            s += "." + pad(fraction, width)
        }
        return s
    }

    private static func pad(_ n: Int, _ width: Int) -> String {
        let s = String(n)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}

/// SQL text scanning: SQLite-style placeholders and statement boundaries, outside string
/// literals ('...', E'...' with backslash escapes), quoted identifiers ("..."), comments
/// (-- to the end of the line, nested /* */) and dollar-quoted bodies ($$...$$, $tag$...$tag$).
enum PostgresSQL {
    /// `sql` with each `?` replaced by `$1`, `$2`, ..., and each numbered `?N` (SQLite's) by
    /// `$N`, and how many values it takes (the highest number).
    static func placeholders(_ sql: String) -> (String, Int) {
        let utf8 = Array(sql.utf8)
        var positions: [Int] = []
        scan(utf8) { i, byte in if byte == UInt8(ascii: "?") { positions.append(i) } }
        guard !positions.isEmpty else { return (sql, 0) }
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count + positions.count * 2)
        var start = 0
        var next = 0, highest = 0
        for i in positions {
            out += utf8[start..<i]
            out.append(UInt8(ascii: "$"))
            var j = i + 1
            while j < utf8.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(utf8[j]) { j += 1 }
            if j > i + 1, let n = Int(String(decoding: utf8[(i + 1)..<j], as: UTF8.self)) {
                out += utf8[(i + 1)..<j]
                next = n
                highest = max(highest, n)
            } else {
                next += 1
                highest = max(highest, next)
                out += Array(String(next).utf8)
            }
            start = j
        }
        out += utf8[start...]
        return (String(decoding: out, as: UTF8.self), highest)
    }

    /// The statements of `script`, split at its top-level semicolons; those with nothing but
    /// blanks and comments are left out.
    static func statements(_ script: String) -> [String] {
        let utf8 = Array(script.utf8)
        var statements: [String] = []
        var start = 0
        var content = false
        scan(utf8) { i, byte in
            if byte == UInt8(ascii: ";") {
                if content { statements.append(String(decoding: utf8[start..<i], as: UTF8.self)) }
                start = i + 1
                content = false
            } else if !isBlank(byte) {
                content = true
            }
        }
        if content { statements.append(String(decoding: utf8[start...], as: UTF8.self)) }
        return statements
    }

    /// Calls `top` with each byte outside literals, identifiers, comments and dollar quotes
    /// (the opening byte of a literal, quoted identifier or dollar quote counts as content).
    static func scan(_ s: [UInt8], _ top: (Int, UInt8) -> Void) {
        var i = 0
        let n = s.count
        func at(_ j: Int) -> UInt8 { j < n ? s[j] : 0 }
        while i < n {
            let c = s[i]
            switch c {
            case UInt8(ascii: "'"):
                top(i, c)
                // E'...' takes backslash escapes: E (or e) right before the quote, not ending a word.
                let escapes = i > 0 && (s[i - 1] | 0x20) == UInt8(ascii: "e") && (i < 2 || !isWordByte(s[i - 2]))
                i += 1
                while i < n {
                    if escapes && s[i] == UInt8(ascii: "\\") { i += 2; continue }
                    if s[i] == UInt8(ascii: "'") {
                        if at(i + 1) == UInt8(ascii: "'") { i += 2; continue }
                        break
                    }
                    i += 1
                }
                i += 1
            case UInt8(ascii: "\""):
                top(i, c)
                i += 1
                while i < n {
                    if s[i] == UInt8(ascii: "\"") {
                        if at(i + 1) == UInt8(ascii: "\"") { i += 2; continue }
                        break
                    }
                    i += 1
                }
                i += 1
            case UInt8(ascii: "-") where at(i + 1) == UInt8(ascii: "-"):
                while i < n && s[i] != UInt8(ascii: "\n") { i += 1 }
            case UInt8(ascii: "/") where at(i + 1) == UInt8(ascii: "*"):
                var depth = 1
                i += 2
                while i < n && depth > 0 {
                    if s[i] == UInt8(ascii: "/") && at(i + 1) == UInt8(ascii: "*") { depth += 1; i += 2 }
                    else if s[i] == UInt8(ascii: "*") && at(i + 1) == UInt8(ascii: "/") { depth -= 1; i += 2 }
                    else { i += 1 }
                }
            case UInt8(ascii: "$") where i == 0 || !isWordByte(s[i - 1]):
                // $n is a parameter; $tag$ (tag: a letter or _ then letters, digits, _) opens a body.
                var j = i + 1
                if at(j) == UInt8(ascii: "$") || (isWordByte(at(j)) && !isDigit(at(j))) {
                    while j < n && isWordByte(s[j]) && s[j] != UInt8(ascii: "$") { j += 1 }
                    if at(j) == UInt8(ascii: "$") {
                        let tag = s[i...j]
                        top(i, c)
                        var k = j + 1
                        var closed = false
                        while k < n {
                            if s[k] == UInt8(ascii: "$"), k + tag.count <= n, s[k..<(k + tag.count)].elementsEqual(tag) {
                                k += tag.count
                                closed = true
                                break
                            }
                            k += 1
                        }
                        i = closed ? k : n
                        continue
                    }
                }
                top(i, c)
                i += 1
            default:
                top(i, c)
                i += 1
            }
        }
    }

    private static func isWordByte(_ b: UInt8) -> Bool {
        (b | 0x20 >= UInt8(ascii: "a") && b | 0x20 <= UInt8(ascii: "z")) || isDigit(b) || b == UInt8(ascii: "_") || b == UInt8(ascii: "$") || b >= 0x80
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    private static func isBlank(_ b: UInt8) -> Bool {
        b == UInt8(ascii: " ") || b == UInt8(ascii: "\n") || b == UInt8(ascii: "\t") || b == UInt8(ascii: "\r") || b == 0x0C
    }
}
