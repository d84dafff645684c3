import VigilCore

/// Making text from and for chat safe: hostile input (huge, control characters, terminal escape
/// sequences, bidi overrides, invalid UTF-8) and formatting injection in what is echoed back
/// (mass mentions, Slack/Mattermost link syntax).
public enum ChatText {
    /// Text fit to store, parse, print on a terminal and put in a journal: invalid UTF-8
    /// repaired (U+FFFD), C0/C1 control characters (and so ESC and terminal sequences) removed
    /// except newline and tab (kept only when `keepNewlines`), bidi overrides and other
    /// invisible format characters removed, and at most `maxLength` characters (cut with "…").
    public static func clean(_ text: String, maxLength: Int = 4000, keepNewlines: Bool = true) -> String {
        var out = String.UnicodeScalarView()
        var count = 0
        var truncated = false
        for scalar in text.unicodeScalars {
            let v = scalar.value
            var s = scalar
            if v == 0x0A || v == 0x09 {
                if !keepNewlines { s = " " }
            } else if v == 0x0D {
                continue
            } else if v < 0x20 || (0x7F...0x9F).contains(v) {
                continue
            } else if isInvisibleFormat(v) {
                continue
            }
            if count >= maxLength { truncated = true; break }
            out.append(s)
            count += 1
        }
        var result = String(out)
        if truncated { result += "…" }
        return result
    }

    /// Repairs bytes that may not be UTF-8 (a `vigil say` argument, a file) and cleans them.
    public static func clean(bytes: some Collection<UInt8>, maxLength: Int = 4000, keepNewlines: Bool = true) -> String {
        clean(String(decoding: bytes, as: UTF8.self), maxLength: maxLength, keepNewlines: keepNewlines)
    }

    /// Bidi embeddings/overrides/isolates, the zero-width space and word joiner (used for
    /// spoofing), BOM, interlinear annotation and tag characters. Not the zero-width joiner and
    /// non-joiner (U+200D, U+200C): emoji sequences and Indic and Persian words need them.
    static func isInvisibleFormat(_ v: UInt32) -> Bool {
        (0x202A...0x202E).contains(v) || (0x2066...0x2069).contains(v) || v == 0x200E || v == 0x200F
            || v == 0x200B || v == 0x2060 || v == 0xFEFF || (0xFFF9...0xFFFB).contains(v)
            || (0xE0000...0xE007F).contains(v) || v == 0x061C
    }

    /// The newest of `lines` (oldest first) that fit in `budget` characters together, oldest
    /// first, led by a line saying how many older ones were left out (`omitted(n)`): a long
    /// reply keeps its newest end, which a plain cut at the message size would drop.
    public static func newest(_ lines: [String], within budget: Int, omitted: (Int) -> String) -> String {
        var kept: [String] = []
        var used = 0
        for line in lines.reversed() {
            let cost = line.count + 1
            // Room for the note about what was left out.
            if used + cost + 80 > budget && !kept.isEmpty || used + cost > budget { break }
            kept.append(line)
            used += cost
        }
        let left = lines.count - kept.count
        return ((left > 0 ? [omitted(left)] : []) + kept.reversed()).joined(separator: "\n")
    }

    /// A short one-line form for journals and error messages.
    public static func brief(_ text: String, maxLength: Int = 200) -> String {
        clean(text, maxLength: maxLength, keepNewlines: false)
    }

    /// Neutralises mass mentions (`@room`, `@channel`, `@here`, `@everyone`, `@all`) by putting
    /// a zero-width space after the `@`, so echoed text cannot page a whole room. Apply last
    /// (`clean` would remove the zero-width space again).
    public static func defuseMentions(_ text: String) -> String {
        guard text.contains("@") else { return text }
        var result = ""
        var rest = Substring(text)
        let words = ["room", "channel", "here", "everyone", "all"]
        while let at = rest.firstIndex(of: "@") {
            result += rest[..<at]
            let after = rest[rest.index(after: at)...]
            if let w = words.first(where: { after.lowercased().hasPrefix($0) && !isWordChar(after.dropFirst($0.count).first) }) {
                result += "@\u{200B}"   // a zero-width space: looks the same, never matches a mention
                result += after.prefix(w.count)
                rest = after.dropFirst(w.count)
            } else {
                result += "@"
                rest = after
            }
        }
        result += rest
        return result
    }

    private static func isWordChar(_ c: Character?) -> Bool {
        guard let c else { return false }
        return c.isLetter || c.isNumber || c == "_" || c == "-"
    }

    /// Slack/Mattermost control sequences: `&`, `<`, `>` escaped as the Slack API asks, so
    /// `<!channel>` or `<https://evil|click>` in echoed text stays literal.
    public static func escapeSlack(_ text: String) -> String { HTMLText.escape(text, quotes: false) }
}
