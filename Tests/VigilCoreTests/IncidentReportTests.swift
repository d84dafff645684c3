import Foundation
import Testing
import VigilCore

/// The incident message's core (docs/chat.md, "One message per incident"): lines appended per
/// event, keys of the first message and the edits, plain and HTML forms, the cap, Codable.
@Suite struct IncidentReportTests {
    func report() -> IncidentReport {
        IncidentReport(key: IncidentReport.key(since: BootInstant(nanoseconds: 42)), title: "Vigil incident 12:01:03 UTC: bridge hung (pid 123)")
    }

    @Test func keysOfTheFirstMessageAndItsEdits() {
        var r = report()
        #expect(r.key == "incident-42" && r.version == 0)
        r.add("tier 2: sent SIGTERM")
        #expect(r.version == 1 && r.currentKey == "incident-42" && r.replaces == nil)
        r.add("tier 3: sent SIGKILL")
        #expect(r.currentKey == "incident-42-v2" && r.replaces == "incident-42")
        r.add(nil, status: "healed after 2.30 s", closing: true)
        #expect(r.currentKey == "incident-42-v3" && r.replaces == "incident-42" && r.closed)
        // A state change without a line is still a new version (a new edit).
        r.add(nil)
        #expect(r.version == 4 && r.lines.count == 2)
    }

    @Test func plainTextIsTheWholeIncident() {
        var r = report()
        #expect(r.plain == "Vigil incident 12:01:03 UTC: bridge hung (pid 123)\nhealing")
        r.add("tier 2: sent SIGTERM")
        r.add("tier 3 (bridge dead): started a new bridge (pid 456)")
        r.add(nil, status: "✅ healed after 2.30 s (was hung, tier 3)", closing: true)
        #expect(r.plain == """
            Vigil incident 12:01:03 UTC: bridge hung (pid 123)
            • tier 2: sent SIGTERM
            • tier 3 (bridge dead): started a new bridge (pid 456)
            ✅ healed after 2.30 s (was hung, tier 3)
            """)
    }

    @Test func htmlEscapesAndLists() {
        var r = IncidentReport(key: "k", title: "a <b> & \"c\"")
        #expect(r.html == "<p><b>a &lt;b&gt; &amp; &quot;c&quot;</b></p><p><b>healing</b></p>")
        r.add("x < y", status: "s & t")
        r.add("z")
        #expect(r.html == "<p><b>a &lt;b&gt; &amp; &quot;c&quot;</b></p><ul><li>x &lt; y</li><li>z</li></ul><p><b>s &amp; t</b></p>")
        #expect(HTMLText.escape("plain 🚨 text") == "plain 🚨 text")
    }

    @Test func longIncidentsKeepTheNewestLinesAndCountTheRest() {
        var r = report()
        for i in 1...(IncidentReport.maxLines + 1) { r.add("step \(i)") }
        #expect(r.lines.count == IncidentReport.maxLines && r.folded == 1)
        #expect(r.shownLines.first == "… (1 earlier step)" && r.shownLines[1] == "step 2")
        for i in 0..<5 { r.add("more \(i)") }
        #expect(r.folded == 6 && r.shownLines.first == "… (6 earlier steps)" && r.lines.last == "more 4")
        #expect(r.plain.split(separator: "\n").count == 1 + 1 + IncidentReport.maxLines + 1)
        #expect(r.html.contains("<li>… (6 earlier steps)</li>"))
        #expect(r.version == IncidentReport.maxLines + 6)
    }

    @Test func survivesASaveAndLoad() throws {
        var r = report()
        r.add("tier 2: sent SIGTERM")
        r.add(nil, status: "🚨 CIRCUIT OPEN")
        let back = try JSONDecoder().decode(IncidentReport.self, from: JSONEncoder().encode(r))
        #expect(back == r)
        var a = back, b = r
        a.add("next")
        b.add("next")
        #expect(a.currentKey == b.currentKey && a.plain == b.plain, "the same step after a restart gives the same key and text")
    }

    @Test func clockTimeOfAnISOTime() {
        #expect(IncidentReport.clockTime("2026-12-02T12:01:03.123Z") == "12:01:03 UTC")
        #expect(IncidentReport.clockTime("not a time") == "not a time")
    }
}
