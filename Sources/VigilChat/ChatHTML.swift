import VigilCore

/// The HTML form of chat messages (Matrix `formatted_body`, format `org.matrix.custom.html`;
/// docs/chat.md, "HTML"). Everything that goes in is text — from users, the journal, mission
/// output — and is escaped; the only tags are the ones made here (`<br>`, `<pre>`, `<code>`,
/// `<b>`, `<a>` for a mention), always balanced.
public enum ChatHTML {
    /// `&`, `<`, `>`, `"` and `'` as entities: the text can stand in an element or an attribute.
    public static func escape(_ text: String) -> String { HTMLText.escape(text) }

    /// Plain text as HTML: lines joined with `<br>`, `` `inline code` `` as `<code>`, and a
    /// block of fixed-width lines (a table: columns aligned with runs of spaces, or lines that
    /// start with spaces) as `<pre><code>`.
    public static func render(_ text: String) -> String {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var parts: [String] = []
        var i = 0
        while i < lines.count {
            // Two or more table-like lines in a row make a block.
            var j = i
            while j < lines.count && looksTabular(lines[j]) { j += 1 }
            if j - i >= 2 {
                parts.append(pre(lines[i..<j].joined(separator: "\n")))
                i = j
            } else {
                parts.append(inline(lines[i]))
                i += 1
            }
        }
        // A <pre> is a block: no <br> is needed around it.
        var out = ""
        for (k, p) in parts.enumerated() {
            if k > 0 && !p.hasPrefix("<pre>") && !parts[k - 1].hasPrefix("<pre>") { out += "<br>" }
            out += p
        }
        return out
    }

    /// The whole text as one fixed-width block (`/status`, `/missions`, `/journal`).
    public static func pre(_ text: String) -> String {
        "<pre><code>" + escape(text) + "</code></pre>"
    }

    /// A link that mentions `user` (a Matrix user id), shown as `name`.
    public static func mention(_ user: String, name: String? = nil) -> String {
        "<a href=\"https://matrix.to/#/" + escape(MatrixSession.encodeSegment(user, keeping: [UInt8(ascii: "@"), UInt8(ascii: ":")])) + "\">" + escape(name ?? user) + "</a>"
    }

    /// One line: escaped, `` `x` `` → `<code>x</code>` (an odd backtick stays as it is).
    static func inline(_ line: String) -> String {
        let pieces = line.split(separator: "`", omittingEmptySubsequences: false).map(String.init)
        guard pieces.count >= 3 else { return escape(line) }
        var out = ""
        let pairs = (pieces.count - 1) / 2 // backticks that pair up
        for (k, p) in pieces.enumerated() {
            if k == 0 { out += escape(p); continue }
            if k <= 2 * pairs {
                out += k % 2 == 1 ? "<code>" + escape(p) : "</code>" + escape(p)
            } else {
                out += "`" + escape(p)
            }
        }
        return out
    }

    /// Columns aligned with two or more spaces in a row, or an indented line.
    static func looksTabular(_ line: String) -> Bool {
        guard !line.trimmingWhitespace().isEmpty else { return false }
        return line.hasPrefix("  ") || line.contains("   ") || line.contains("\t")
    }
}

