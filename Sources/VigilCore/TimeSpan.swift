import FoundationEssentials

/// A length of time in nanoseconds. Parsed from operator input as seconds with decimals
/// (`0.2`) or with a suffix (`200ms`, `2s`, `5m`, `1h`).
public struct TimeSpan: Comparable, Hashable, Sendable, Codable, CustomStringConvertible {
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }
    public static func seconds(_ s: Double) -> TimeSpan { TimeSpan(nanoseconds: Int64((s * 1e9).rounded())) }
    public static func milliseconds(_ ms: Double) -> TimeSpan { .seconds(ms / 1000) }
    public static let zero = TimeSpan(nanoseconds: 0)
    /// No duration an operator sets (flags, vigil.json) is shorter: below it a tick or a grace
    /// is a busy loop, not a setting (docs/operator-guide.md, "Bad input").
    public static let shortestSetting = TimeSpan(nanoseconds: 1_000_000)

    public var seconds: Double { Double(nanoseconds) / 1e9 }
    public var milliseconds: Double { Double(nanoseconds) / 1e6 }

    public static func < (a: TimeSpan, b: TimeSpan) -> Bool { a.nanoseconds < b.nanoseconds }
    public static func + (a: TimeSpan, b: TimeSpan) -> TimeSpan { TimeSpan(nanoseconds: a.nanoseconds &+ b.nanoseconds) }
    public static func - (a: TimeSpan, b: TimeSpan) -> TimeSpan { TimeSpan(nanoseconds: a.nanoseconds &- b.nanoseconds) }
    public static func * (a: TimeSpan, k: Double) -> TimeSpan { .seconds(a.seconds * k) }

    /// Human form: `250ms`, `1.5s`, `10m`.
    public var description: String {
        let s = seconds
        if s != 0 && abs(s) < 1 { return trimmed(s * 1000) + "ms" }
        if abs(s) >= 3600 && s.truncatingRemainder(dividingBy: 3600) == 0 { return trimmed(s / 3600) + "h" }
        if abs(s) >= 60 && s.truncatingRemainder(dividingBy: 60) == 0 { return trimmed(s / 60) + "m" }
        return trimmed(s) + "s"
    }

    private func trimmed(_ v: Double) -> String {
        var t = DecimalText.fixed(v, places: 3)
        while t.hasSuffix("0") { t.removeLast() }
        if t.hasSuffix(".") { t.removeLast() }
        return t
    }

    /// Seconds as a plain decimal (`0.0015`, `20`, `0.00005`), exact to the nanosecond and
    /// read back by `parse` to the same value: the form one process hands a duration to
    /// another in (never `5e-05`, which `parse` refuses).
    public var decimalSeconds: String {
        let m = nanoseconds.magnitude
        let whole = m / 1_000_000_000, frac = m % 1_000_000_000
        var text = (nanoseconds < 0 ? "-" : "") + "\(whole)"
        if frac != 0 {
            var f = String(frac)
            f = String(repeating: "0", count: 9 - f.count) + f
            while f.hasSuffix("0") { f.removeLast() }
            text += "." + f
        }
        return text
    }

    /// Parses `0.2`, `200ms`, `2s`, `5m`, `1h`. Returns nil for anything else (empty, garbage,
    /// non-finite). The sign is kept so callers can reject zero or negative values clearly.
    public static func parse(_ text: String) -> TimeSpan? {
        let t = text.trimmingWhitespace(keepingNewlines: true).lowercased()
        let units: [(String, Double)] = [("ms", 1e-3), ("us", 1e-6), ("s", 1), ("m", 60), ("h", 3600)]
        let (number, scale) = splitUnit(t, units)
        guard !number.isEmpty,
              number.allSatisfy({ $0.isNumber || $0 == "." || $0 == "-" || $0 == "+" }),
              let v = Double(number), v.isFinite else { return nil }
        let s = v * scale
        guard abs(s) < 1e9 else { return nil }
        return .seconds(s)
    }

    public init(from decoder: any Decoder) throws {
        nanoseconds = try decoder.singleValueContainer().decode(Int64.self)
    }
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(nanoseconds)
    }
}

/// A size in bytes, parsed from `512MB`, `1.5GB`, `800k`, `1048576`.
public enum ByteSize {
    public static func parse(_ text: String) -> UInt64? {
        let t = text.trimmingWhitespace(keepingNewlines: true).lowercased()
        let units: [(String, Double)] = [("kib", 1024), ("mib", 1_048_576), ("gib", 1_073_741_824),
                                         ("kb", 1000), ("mb", 1e6), ("gb", 1e9),
                                         ("k", 1024), ("m", 1_048_576), ("g", 1_073_741_824), ("b", 1)]
        let (number, scale) = splitUnit(t, units)
        guard !number.isEmpty, number.allSatisfy({ $0.isNumber || $0 == "." }),
              let v = Double(number), v.isFinite, v > 0 else { return nil }
        // `UInt64(_: Double)` traps above UInt64.max; a size that large is an input error.
        return UInt64(exactly: (v * scale).rounded(.down))
    }

    public static func format(_ bytes: UInt64) -> String {
        if bytes >= 1 << 30 { return DecimalText.fixed(Double(bytes) / Double(1 << 30), places: 1) + " GiB" }
        if bytes >= 1 << 20 { return DecimalText.fixed(Double(bytes) / Double(1 << 20), places: 1) + " MiB" }
        if bytes >= 1 << 10 { return DecimalText.fixed(Double(bytes) / Double(1 << 10), places: 1) + " KiB" }
        return "\(bytes) B"
    }
}

/// `text` split into its number and the scale of the first unit in `units` it ends with (1
/// when none): what `TimeSpan.parse` and `ByteSize.parse` share.
func splitUnit(_ text: String, _ units: [(String, Double)]) -> (number: String, scale: Double) {
    for (suffix, k) in units where text.hasSuffix(suffix) { return (String(text.dropLast(suffix.count)), k) }
    return (text, 1)
}
