import FoundationEssentials

/// The Prometheus text exposition format, version 0.0.4 (docs/operator-guide.md, "Probes and
/// metrics"): per family a `# HELP` and a `# TYPE` line, then its samples
/// `name{label="value",…} number`, one a line, ending in a newline.
struct Exposition {
    static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private(set) var text = ""
    private var families: Set<String> = []

    enum Kind: String {
        case counter, gauge, histogram
    }

    /// Starts a family (once per name: the families are fixed, and the tests read every one).
    mutating func family(_ name: String, _ kind: Kind, _ help: String) {
        assert(Exposition.isName(name) && families.insert(name).inserted, "metric family \(name)")
        text += "# HELP \(name) \(Exposition.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    mutating func sample(_ name: String, _ labels: KeyValuePairs<String, String> = [:], _ value: Double) {
        sample(name, labels.map { ($0.key, $0.value) }, value)
    }

    mutating func sample(_ name: String, _ labels: [(String, String)], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{" + labels.map { "\($0.0)=\"\(Exposition.escapeLabel($0.1))\"" }.joined(separator: ",") + "}"
        }
        text += " \(Exposition.number(value))\n"
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    static func isName(_ s: String) -> Bool {
        guard let first = s.unicodeScalars.first, first.isASCII, first == "_" || first == ":" || first.properties.isAlphabetic else { return false }
        return s.unicodeScalars.allSatisfy { $0.isASCII && ($0 == "_" || $0 == ":" || $0.properties.isAlphabetic || ("0"..."9").contains($0)) }
    }

    /// Label values: backslash, double quote and line feed escaped.
    static func escapeLabel(_ s: String) -> String { escape(s, quote: true) }

    /// HELP text: backslash and line feed escaped.
    static func escapeHelp(_ s: String) -> String { escape(s, quote: false) }

    private static func escape(_ s: String, quote: Bool) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "\\": out += "\\\\"
            case "\"" where quote: out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    /// Whole numbers without a fraction, `+Inf`/`-Inf`/`NaN` as the format spells them.
    static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded(), abs(v) < 1e15 { return String(Int64(v)) }
        return "\(v)"
    }
}
