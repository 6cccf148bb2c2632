/// Sizes ("512M", "1GiB", "64k", 4096) and durations ("30s", "500ms", "2m", 10) in policies.
enum Units {
    /// Bytes; suffixes K, M, G, T are binary (1K = 1024), optionally followed by "iB" or "B".
    static func size(_ text: String) -> UInt64? {
        var s = Substring(text.trimmingCharacters(in: " "))
        for suffix in ["iB", "B"] where s.hasSuffix(suffix) && s.count > suffix.count {
            s = s.dropLast(suffix.count)
            break
        }
        var multiplier: UInt64 = 1
        if let last = s.last, !last.isNumber {
            switch last.uppercased() {
            case "K": multiplier = 1 << 10
            case "M": multiplier = 1 << 20
            case "G": multiplier = 1 << 30
            case "T": multiplier = 1 << 40
            default: return nil
            }
            s = s.dropLast()
        }
        guard !s.isEmpty, s.allSatisfy(\.isNumber), let n = UInt64(s) else { return nil }
        let (product, overflow) = n.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }

    /// Milliseconds; suffixes ms, s, m, h; a bare number is seconds.
    static func milliseconds(_ text: String) -> UInt64? {
        let s = text.trimmingCharacters(in: " ")
        let table: [(String, UInt64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (suffix, scale) in table where s.hasSuffix(suffix) {
            let number = s.dropLast(suffix.count)
            guard !number.isEmpty, number.allSatisfy(\.isNumber), let n = UInt64(number) else { return nil }
            let (v, overflow) = n.multipliedReportingOverflow(by: scale)
            return overflow ? nil : v
        }
        guard !s.isEmpty, s.allSatisfy(\.isNumber), let n = UInt64(s) else { return nil }
        let (v, overflow) = n.multipliedReportingOverflow(by: 1000)
        return overflow ? nil : v
    }

    /// "512 MiB", "30 s" and friends for `ward policy explain`.
    static func describe(bytes: UInt64) -> String {
        for (unit, shift) in [("GiB", 30), ("MiB", 20), ("KiB", 10)] as [(String, UInt64)] where bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return "\(bytes >> shift) \(unit)"
        }
        return "\(bytes) B"
    }

    static func describe(milliseconds ms: UInt64) -> String {
        if ms % 1000 == 0 { return "\(ms / 1000) s" }
        return "\(ms) ms"
    }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set || s.first == "\t" { s.removeFirst() }
        while s.last == set || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
