/// Number and text helpers for what the product once took from Foundation's
/// `String(format:)` and `trimmingCharacters(in:)`: the product links FoundationEssentials
/// only, without the internationalization half and its ICU data (docs/architecture.md,
/// "Foundation: Essentials only").
public enum DecimalText {
    /// `value` with exactly `places` digits after the point, rounded half to even, like
    /// `%.Nf` (`fixed(2.25, places: 1)` is `2.2`, `fixed(3, places: 3)` is `3.000`). No
    /// minus sign on a value that rounds to zero.
    public static func fixed(_ value: Double, places: Int) -> String {
        guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
        let places = max(0, min(places, 9))
        var scale: UInt64 = 1
        for _ in 0..<places { scale *= 10 }
        let scaled = (value.magnitude * Double(scale)).rounded(.toNearestOrEven)
        // Beyond 2^63 the integer path cannot hold it; such figures are not shown to a person.
        guard scaled < 9.2e18 else { return "\(value)" }
        let n = UInt64(scaled)
        var text = (value < 0 && n != 0 ? "-" : "") + "\(n / scale)"
        if places > 0 {
            let frac = String(n % scale)
            text += "." + String(repeating: "0", count: places - frac.count) + frac
        }
        return text
    }

    /// The shortest plain form, like `%g` for everyday values: `5` for 5.0, `2.5` for 2.5.
    public static func compact(_ value: Double) -> String {
        if value.isFinite, value == value.rounded(), value.magnitude < 1e15 { return "\(Int64(value))" }
        return "\(value)"
    }
}

extension StringProtocol {
    /// Without leading and trailing white space; newlines count as white space unless
    /// `keepingNewlines` (then only spaces and tabs, and the like, are removed).
    public func trimmingWhitespace(keepingNewlines: Bool = false) -> String {
        trimming { $0.isWhitespace && !(keepingNewlines && $0.isNewline) }
    }

    /// Without the leading and trailing characters `strip` picks (`"#12#".trimming { $0 == "#" }` is `12`).
    public func trimming(_ strip: (Character) -> Bool) -> String {
        guard let first = firstIndex(where: { !strip($0) }) else { return "" }
        let last = lastIndex(where: { !strip($0) }) ?? first
        return String(self[first...last])
    }

    /// Exactly `length` characters: cut, or filled with spaces on the right (what
    /// `padding(toLength:withPad:" ",startingAt:0)` did), for columns.
    public func padded(toLength length: Int) -> String {
        count >= length ? String(prefix(length)) : String(self) + String(repeating: " ", count: length - count)
    }
}

/// Text made safe to stand in HTML (or in the HTML-like markup of Slack-style webhooks): the
/// one escaper of the project.
public enum HTMLText {
    /// `&`, `<`, `>` as entities and, with `quotes`, `"` and `'` too (so the text can stand in
    /// an attribute).
    public static func escape(_ text: String, quotes: Bool = true) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"" where quotes: out += "&quot;"
            case "'" where quotes: out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
