/// Sizes ("512M", "1GiB", "64k", 4096) and durations ("30s", "500ms", "2m", 10) in policies.
///
/// A value too large for a UInt64 comes back as `UInt64.max` rather than nil, so the
/// loader's range check names it "too large" instead of "malformed"; nothing here traps.
enum Units {
    /// Bytes; suffixes K, M, G, T are binary (1K = 1024), optionally followed by "iB" or "B";
    /// a fraction is allowed with a suffix ("1.5G"), never on plain bytes ("1.5").
    static func size(_ text: String) -> UInt64? {
        var s = Substring(text.trimmingCharacters(in: " "))
        for suffix in ["iB", "B"] where s.hasSuffix(suffix) && s.count > suffix.count {
            s = s.dropLast(suffix.count)
            break
        }
        var multiplier: UInt64 = 1
        if let last = s.last, !last.isASCIIDigit {
            switch last.uppercased() {
            case "K": multiplier = 1 << 10
            case "M": multiplier = 1 << 20
            case "G": multiplier = 1 << 30
            case "T": multiplier = 1 << 40
            default: return nil
            }
            s = s.dropLast()
        } else if s.contains(".") {
            return nil  // a fraction of a byte means nothing
        }
        return scaled(s, by: multiplier)
    }

    /// Milliseconds; suffixes ms, s, m, h; a bare number is seconds; fractions allowed ("1.5s").
    static func milliseconds(_ text: String) -> UInt64? {
        let s = text.trimmingCharacters(in: " ")
        for (suffix, scale) in [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)] as [(String, UInt64)] where s.hasSuffix(suffix) {
            return scaled(s.dropLast(suffix.count), by: scale)
        }
        return scaled(Substring(s), by: 1000)
    }

    /// "12" or "1.5" times `scale`, rounded down; nil for anything else, `UInt64.max` when
    /// the result does not fit.
    private static func scaled(_ number: Substring, by scale: UInt64) -> UInt64? {
        let parts = number.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty, whole.allSatisfy(\.isASCIIDigit) else { return nil }
        var fractionPart: UInt64 = 0
        if parts.count == 2 {
            let fraction = parts[1]
            guard !fraction.isEmpty, fraction.count <= 9, fraction.allSatisfy(\.isASCIIDigit), let f = UInt64(fraction) else { return nil }
            var divisor: UInt64 = 1
            for _ in 0..<fraction.count { divisor *= 10 }
            // f < divisor ≤ 10^9, so f × scale can pass 64 bits ("1.99999999T") but the
            // quotient is below `scale`: divide the full-width product.
            fractionPart = divisor.dividingFullWidth(f.multipliedFullWidth(by: scale)).quotient
        }
        // Digits only, so UInt64() fails only when the number is too large.
        guard let n = UInt64(whole) else { return .max }
        let (base, overflow) = n.multipliedReportingOverflow(by: scale)
        let (sum, overflow2) = base.addingReportingOverflow(fractionPart)
        return overflow || overflow2 ? .max : sum
    }
}

extension Character {
    /// 0-9 only: `isNumber` also takes "½" and "٣", which UInt64() refuses.
    var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    func trimmingCharacters(in set: Character) -> String {
        var s = Substring(self)
        while s.first == set || s.first == "\t" { s.removeFirst() }
        while s.last == set || s.last == "\t" { s.removeLast() }
        return String(s)
    }
}
