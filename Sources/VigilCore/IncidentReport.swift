/// One incident of the bridge as a person reads it in chat: a heading (when, what was found),
/// one line per thing the watchdog did, and the incident's current state (healing, healed after
/// X s, circuit open, …). Matrix shows it as ONE message, edited (`m.replace`) at every change
/// with the full text; console and webhook, which cannot edit, get one line per event as before
/// (docs/chat.md, "One message per incident"). Pure and Codable: the runner keeps it in
/// heal.json next to the heal state, so a runner restarted mid-incident goes on editing the
/// same message with the lines so far.
public struct IncidentReport: Codable, Equatable, Sendable {
    /// The outbox key of the incident's first message (what every edit replaces).
    public var key: String
    /// E.g. "Vigil incident 12:01:03 UTC: bridge hung (pid 123)".
    public var title: String
    /// What was done, in order ("tier 2: sent SIGTERM").
    public var lines: [String]
    /// Where the incident stands now ("healing", "healed after 2.30 s", "circuit open …").
    public var status: String
    /// Over: healed, or given up by a reset. A closed report takes only late lines (the
    /// circuit closing); a new incident gets a new report.
    public var closed: Bool
    /// How many states were queued: 1 for the first message, every edit one more. The edit
    /// keys are derived from it, so a runner that repeats a step after a crash repeats the key.
    public var version: Int
    /// Lines dropped from the front (past `maxLines`).
    public var folded: Int

    /// Bullet of a line in the plain text.
    public static let bullet = "• "
    public static let maxLines = 40

    public init(key: String, title: String, status: String = "healing") {
        self.key = key
        self.title = title
        self.lines = []
        self.status = status
        self.closed = false
        self.version = 0
        self.folded = 0
    }

    /// Adds a line (and, when given, a new status). Past `maxLines` the oldest lines are
    /// dropped and counted (`folded`), so the message stays one screen.
    public mutating func add(_ line: String?, status: String? = nil, closing: Bool = false) {
        if let line { lines.append(line) }
        if lines.count > IncidentReport.maxLines {
            folded += lines.count - IncidentReport.maxLines
            lines.removeFirst(lines.count - IncidentReport.maxLines)
        }
        if let status { self.status = status }
        if closing { closed = true }
        version += 1
    }

    /// The lines as shown: the kept ones, after a count of the dropped ones.
    public var shownLines: [String] { (folded > 0 ? ["… (\(folded) earlier \(folded == 1 ? "step" : "steps"))"] : []) + lines }

    /// The key of the current state's row: the first message's key for version 1, then
    /// `KEY-vN`.
    public var currentKey: String { version <= 1 ? key : "\(key)-v\(version)" }
    /// What the current row replaces (nil for the first message).
    public var replaces: String? { version <= 1 ? nil : key }

    /// The full current state as plain text.
    public var plain: String {
        ([title] + shownLines.map { IncidentReport.bullet + $0 } + [status]).joined(separator: "\n")
    }

    /// The same as HTML (Matrix `formatted_body`): the heading in bold, the lines as a list,
    /// the status in bold.
    public var html: String {
        var out = "<p><b>\(HTMLText.escape(title))</b></p>"
        if !shownLines.isEmpty { out += "<ul>" + shownLines.map { "<li>\(HTMLText.escape($0))</li>" }.joined() + "</ul>" }
        out += "<p><b>\(HTMLText.escape(status))</b></p>"
        return out
    }

    /// The key of the first message of the incident that began at `since` (boot clock): stable
    /// for a runner that takes over mid-incident.
    public static func key(since: BootInstant) -> String { "incident-\(since.nanoseconds)" }

    /// "HH:MM:SS UTC" of an ISO-8601 UTC time ("2026-12-02T12:01:03.123Z"); the text itself
    /// when it is not one.
    public static func clockTime(_ iso: String) -> String {
        let chars = Array(iso)
        guard chars.count >= 19, chars[10] == "T" else { return iso }
        return String(chars[11..<19]) + " UTC"
    }

}

