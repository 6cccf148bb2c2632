import ArgumentParser
import WardCore
import WardLedger
import WardPolicy
import WardSandbox

#if canImport(Glibc)
import Glibc
#endif

/// Checks of option values that ArgumentParser's types cannot express: a value ward does not
/// understand is refused (exit 2) instead of silently matching nothing.
enum Checks {
    /// An ID given on the command line (run, call): empty matches nothing and names nothing.
    static func nonEmpty(_ value: String?, _ option: String) throws {
        if let value, value.isEmpty { throw ValidationError("\(option) must not be empty") }
    }

    /// A count or duration that must be a finite number at least zero.
    static func notNegative(_ value: Double, _ option: String) throws {
        guard value.isFinite, value >= 0 else { throw ValidationError("\(option) must be a number of 0 or more, not \(JSONValue.format(number: value))") }
    }

    /// Refuses to start tools when one of them could change what ward trusts (see
    /// `Sandbox.checkLayout`): the ledger's files, the policies, the socket's directory
    /// (which no tool may even read when it holds a published token).
    static func layout(policies: PolicySet, workspace: String, ledger: Ledger?, socket: String? = nil, tokenPublished: Bool = false) throws {
        var protected = ProtectedPath.policies(policies.directory)
        for file in ledger?.files ?? [] { protected.append(ProtectedPath("the ledger", file)) }
        if let socket {
            let directory = socket.lastIndex(of: "/").map { $0 == socket.startIndex ? "/" : String(socket[..<$0]) } ?? "."
            protected.append(ProtectedPath(tokenPublished ? "the socket and its token" : "the socket", directory, secret: tokenPublished))
        }
        do { try Sandbox.checkLayout(policies: policies, workspace: workspace, protecting: protected) } catch {
            throw CLIError(message: error.message, exitCode: 1)
        }
    }

    /// `--status`: one of the states of a call.
    static func status(_ value: String?) throws {
        guard let value, CallStatus(rawValue: value) == nil else { return }
        throw ValidationError("unknown status \"\(value)\" (one of: \(CallStatus.allCases.map(\.rawValue).joined(separator: ", ")))")
    }

    static let sinceForms = "a date or time as in RFC 3339, UTC unless it has an offset (2026-11-21, 2026-11-21T20:00, 2026-11-21T20:00:05.250+01:00), or a duration ago (90s, 10m, 2h, 1d)"

    /// `--since` in the ledger's own timestamp form ("2026-11-21T20:57:06.123Z"), which
    /// compares as text; nil when `text` is none of `sinceForms`. A time without a zone is UTC.
    static func since(_ text: String, now: Double) -> String? {
        if let unit = text.last, let seconds = ["s": 1.0, "m": 60, "h": 3600, "d": 86400][unit],
           let count = UInt32(text.dropLast()), text.first?.isASCII == true, text.first?.isNumber == true {
            return timestamp(milliseconds: Int64((now - Double(count) * seconds) * 1000))
        }
        let pattern = /(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?([Zz]|[+-]\d{2}:\d{2})?)?/
        guard let m = try? pattern.wholeMatch(in: text) else { return nil }
        func int(_ s: Substring?) -> Int32 { s.flatMap { Int32($0) } ?? 0 }
        var t = tm()
        t.tm_year = int(m.1) - 1900
        t.tm_mon = int(m.2) - 1
        t.tm_mday = int(m.3)
        t.tm_hour = int(m.4)
        t.tm_min = int(m.5)
        t.tm_sec = int(m.6)
        let fields = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)
        let seconds = timegm(&t)
        // timegm normalizes 2026-02-30 to March 2: a date that moved did not exist.
        guard fields == (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec) else { return nil }
        var offset = 0
        if let zone = m.8, zone.count == 6 {
            let hours = Int(zone.dropFirst().prefix(2))!, minutes = Int(zone.suffix(2))!
            guard hours < 24, minutes < 60 else { return nil }
            offset = (zone.first == "-" ? -1 : 1) * (hours * 3600 + minutes * 60)
        }
        let millis = Int64(String((m.7 ?? "") + "000").prefix(3))!
        return timestamp(milliseconds: (Int64(seconds) - Int64(offset)) * 1000 + millis)
    }

    /// "YYYY-MM-DDTHH:MM:SS.mmmZ", as the ledger records times.
    static func timestamp(milliseconds: Int64) -> String? {
        var seconds = time_t(milliseconds.quotientAndRemainder(dividingBy: 1000).quotient)
        var ms = milliseconds % 1000
        if ms < 0 { ms += 1000; seconds -= 1 }
        var t = tm()
        guard gmtime_r(&seconds, &t) != nil, (0...9999).contains(t.tm_year + 1900) else { return nil }
        func digits(_ v: some BinaryInteger, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(digits(t.tm_year + 1900, 4))-\(digits(t.tm_mon + 1, 2))-\(digits(t.tm_mday, 2))T"
            + "\(digits(t.tm_hour, 2)):\(digits(t.tm_min, 2)):\(digits(t.tm_sec, 2)).\(digits(ms, 3))Z"
    }
}
