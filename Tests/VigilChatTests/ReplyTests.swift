import Foundation
import Testing
@testable import VigilChat
import VigilCore
@testable import VigilStore
import VigilSystem
import VigilTestSupport

/// Whether `html` is what Vigil may put in a `formatted_body`: only the tags ChatHTML makes,
/// balanced and properly nested, every `&` an entity, no raw `<` or `>` in text. Returns the
/// problem, or nil.
func htmlProblem(_ html: String) -> String? {
    let allowed: Set<String> = ["br", "pre", "code", "b", "a"]
    var stack: [String] = []
    var i = html.startIndex
    while i < html.endIndex {
        let c = html[i]
        if c == "<" {
            guard let close = html[i...].firstIndex(of: ">") else { return "unclosed < at \(html.distance(from: html.startIndex, to: i))" }
            let inner = html[html.index(after: i)..<close]
            if inner.contains("<") { return "< inside a tag" }
            let closing = inner.hasPrefix("/")
            let name = String((closing ? inner.dropFirst() : inner).prefix { $0.isLetter })
            guard allowed.contains(name) else { return "tag <\(inner)> is not allowed" }
            if name == "a" && !closing && !inner.hasPrefix("a href=\"https://matrix.to/#/") { return "a link that is not a mention: <\(inner)>" }
            if name != "br" {
                if closing {
                    guard stack.last == name else { return "</\(name)> closes \(stack.last ?? "nothing")" }
                    stack.removeLast()
                } else {
                    stack.append(name)
                }
            }
            i = html.index(after: close)
            continue
        }
        if c == ">" { return "raw > in text" }
        if c == "&" {
            let rest = html[i...].prefix(8)
            guard ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(where: { rest.hasPrefix($0) }) else { return "bare & at \(html.distance(from: html.startIndex, to: i))" }
        }
        i = html.index(after: i)
    }
    return stack.isEmpty ? nil : "unclosed <\(stack.joined(separator: "><"))>"
}

/// The text a person sees of `html` (tags dropped, <br> a newline, entities decoded).
func htmlText(_ html: String) -> String {
    // <pre> is a block: it starts and ends a line.
    var s = html.replacingOccurrences(of: "<br>", with: "\n").replacingOccurrences(of: "<pre>", with: "\n<pre>")
        .replacingOccurrences(of: "</pre>", with: "</pre>\n")
    if html.hasPrefix("<pre>") { s.removeFirst() }
    if html.hasSuffix("</pre>") { s.removeLast() }
    while let r = s.range(of: "<[^>]*>", options: .regularExpression) { s.removeSubrange(r) }
    for (e, c) in [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&#39;", "'"), ("&amp;", "&")] { s = s.replacingOccurrences(of: e, with: c) }
    return s
}

@Suite struct ReplyTests {
    @Test func escapingIsComplete() {
        #expect(ChatHTML.escape("<script>alert('x')</script> & \"q\"") == "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;")
        #expect(ChatHTML.escape("&amp;") == "&amp;amp;") // an entity in the text stays text
        #expect(ChatHTML.escape("plain 👀 ü") == "plain 👀 ü")
    }

    @Test func renderLinesCodeAndTables() {
        #expect(ChatHTML.render("one\ntwo") == "one<br>two")
        #expect(ChatHTML.render("run `vigil status` now") == "run <code>vigil status</code> now")
        #expect(ChatHTML.render("odd ` tick") == "odd ` tick")
        #expect(ChatHTML.render("`a` and `b` and `c") == "<code>a</code> and <code>b</code> and `c")
        #expect(ChatHTML.render("`<b>`") == "<code>&lt;b&gt;</code>")
        let table = "Status:\nbridge    healthy   pid 12\nrunner    running   pid 10\ndone"
        let html = ChatHTML.render(table)
        #expect(html == "Status:<pre><code>bridge    healthy   pid 12\nrunner    running   pid 10</code></pre>done")
        #expect(htmlProblem(html) == nil)
        #expect(ChatHTML.pre("#1 done <x>\n#2 failed") == "<pre><code>#1 done &lt;x&gt;\n#2 failed</code></pre>")
        #expect(ChatHTML.render("") == "")
    }

    @Test func hostileTextStaysText() {
        let hostile = [
            "<script>alert(1)</script>", "</code></pre><img src=x onerror=alert(1)>", "a & b &amp; c &#x3c;",
            "\"quoted\" 'single'", "`</code><script>`", "  indented <b>\n   more <i>", "<a href=\"javascript:x\">click</a>",
            "@room <font color=red>", "tail <", "``", "`", "\n\n", "x\n`y`\n  z   w\n  q   r",
        ]
        for text in hostile {
            for html in [ChatHTML.render(text), ChatHTML.pre(text), ChatHTML.mention(text, name: text)] {
                #expect(htmlProblem(html) == nil, "\(text.debugDescription) → \(html)")
            }
            // What a person sees is the text itself (no markup slipped through); paired
            // backticks become code formatting, so they are not seen.
            let seen = text.filter { $0 != "`" }
            #expect(htmlText(ChatHTML.render(text)).filter { $0 != "`" } == seen, "\(text.debugDescription)")
            #expect(htmlText(ChatHTML.pre(text)) == text)
        }
        #expect(htmlProblem("<b>x") != nil && htmlProblem("<b><code>x</b></code>") != nil && htmlProblem("a & b") != nil
                && htmlProblem("<script>") != nil) // the checker itself
    }

    @Test func mentionIsALinkToTheUser() {
        let m = ChatHTML.mention("@alice:vigil.test")
        #expect(m == "<a href=\"https://matrix.to/#/@alice:vigil.test\">@alice:vigil.test</a>")
        #expect(htmlProblem(ChatHTML.mention("@x\"><script>:h")) == nil)
    }

    @Test func replyItemsPerAdapter() {
        let matrix = ChatCommandContext(inboxID: 7, adapter: "matrix", sender: "@a:h", originID: "$cmd", thread: "$root")
        let r = ChatService.replyItem(matrix, body: "Mission 3 queued <now>", maxLength: 4000)
        #expect(r.key == "reply:7" && r.adapter == "matrix" && r.priority == .reply)
        #expect(r.meta == OutboxMeta(replyTo: "$cmd", thread: "$root"))
        #expect(r.html == "Mission 3 queued &lt;now&gt;")
        let table = ChatService.replyItem(matrix, body: "#1 done", html: ChatHTML.pre("#1 done"), maxLength: 4000)
        #expect(table.html == "<pre><code>#1 done</code></pre>")
        // Console (`vigil say`): plain text, no relations.
        let console = ChatCommandContext(inboxID: 8, adapter: "console", sender: "uid 1000")
        let c = ChatService.replyItem(console, body: "ok", html: "<b>ok</b>", maxLength: 4000)
        #expect(c == OutboxItem(key: "reply:8", adapter: "console", body: "ok", priority: .reply))
        // Not in a thread: a plain reply.
        let flat = ChatService.replyItem(ChatCommandContext(inboxID: 9, adapter: "matrix", sender: "@a:h", originID: "$c"), body: "x", maxLength: 4000)
        #expect(flat.meta == OutboxMeta(replyTo: "$c"))
    }

    @Test func reactionItems() {
        let matrix = ChatCommandContext(inboxID: 7, adapter: "matrix", sender: "@a:h", originID: "$cmd", thread: "$root")
        let seen = ChatService.reaction(matrix, "seen")
        #expect(seen?.key == "react:7:seen" && seen?.meta == OutboxMeta(replyTo: "$cmd", reaction: "👀") && seen?.html == nil)
        let done = ChatService.reaction(matrix, "done", emoji: ChatService.doneEmoji)
        #expect(done?.key == "react:7:done" && done?.meta.reaction == "✅" && done?.meta.replyTo == "$cmd")
        #expect(ChatService.reaction(ChatCommandContext(inboxID: 8, adapter: "console", sender: "uid 0"), "seen") == nil)
        #expect(ChatService.reaction(ChatCommandContext(inboxID: 9, adapter: "matrix", sender: "@a:h"), "seen") == nil) // no event
        // The Matrix event: an annotation of the command.
        let now = Date()
        let msg = OutboxMessage(id: 1, key: done!.key, adapter: "matrix", body: done!.body, state: .sending, attempts: 1, created: now, updated: now,
                                html: nil, meta: done!.meta)
        let (type, content) = MatrixContent.make(msg, msgtype: "m.text", replacing: nil)
        #expect(type == "m.reaction")
        #expect(content["m.relates_to"]?["rel_type"]?.stringValue == "m.annotation")
        #expect(content["m.relates_to"]?["event_id"]?.stringValue == "$cmd" && content["m.relates_to"]?["key"]?.stringValue == "✅")
    }

    @Test func takesTimeAndTables() {
        #expect(ChatCommand.mission("x").takesTime && ChatCommand.restart("bridge").takesTime)
        #expect(!ChatCommand.status.takesTime && !ChatCommand.help(nil).takesTime)
        #expect(ChatCommand.status.repliesWithTable && ChatCommand.missions.repliesWithTable && ChatCommand.journal(nil).repliesWithTable)
        #expect(!ChatCommand.mission("x").repliesWithTable)
    }

    @Test func chatRefRoundTrips() {
        let ctx = ChatCommandContext(inboxID: 4, adapter: "matrix", sender: "@a:h", originID: "$e", thread: nil)
        let ref = ctx.chatRef
        #expect(ref == ChatRef(adapter: "matrix", event: "$e", thread: nil, sender: "@a:h", inbox: 4))
        #expect(ChatRef.parse(ref?.json) == ref)
        #expect(ChatRef.parse("{nope") == nil && ChatRef.parse(nil) == nil)
        #expect(ref?.meta(mention: true) == OutboxMeta(replyTo: "$e", mentions: ["@a:h"]))
        #expect(ChatCommandContext(inboxID: 5, adapter: "console", sender: "uid 0").chatRef == nil)
    }

    /// The service end to end on a console adapter: `vigil say` commands keep plain replies
    /// and get no reactions.
    @Test func consoleRepliesStayPlain() throws {
        let state = try TempState()
        let config = try JSONDecoder().decode(ChatConfig.self, from: Data(#"{"adapters": ["console"]}"#.utf8))
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        let inbox = ChatInbox(try state.database())
        try inbox.add(adapter: "console", sender: "uid 0", body: "/mission a <b>")
        #expect(try pumpUntil(service) { try state.outboxRows().contains { $0.key.hasPrefix("reply:") } })
        let rows = try state.outboxRows()
        #expect(rows.count == 1, "\(rows.map(\.key))")
        #expect(rows.first?.html == nil && rows.first?.meta.isEmpty == true && rows.first?.body == "mission queued: a <b>")
    }

    /// "Too old" and "interrupted" answers are Matrix replies too (in the thread), and a
    /// refused command that takes time gets ❌. The homeserver is a closed port: the rows are
    /// only queued here, which is what is checked.
    @Test func tooOldAndInterruptedAreRepliesInPlace() throws {
        let state = try TempState()
        let json = """
        {"adapters": ["matrix"], "command_max_age": "10m",
         "matrix": {"homeserver": "http://127.0.0.1:9", "access_token": "t", "room": "!r:h", "allow": ["@a:h"], "timeout": "1s"}}
        """
        let config = try JSONDecoder().decode(ChatConfig.self, from: Data(json.utf8))
        let inbox = ChatInbox(try state.database())
        // Handled by a process that is gone: interrupted at the next start.
        let cut = try #require(try inbox.add(adapter: "matrix", sender: "@a:h", body: "/restart runner", originID: "$cut", meta: InboxMeta(thread: "$t1")))
        _ = try inbox.takeNext(handler: "1:1:gone")
        let old = try #require(try inbox.add(adapter: "matrix", sender: "@a:h", body: "/mission late", originID: "$old",
                                             saidWall: Date().timeIntervalSince1970 - 3600, meta: InboxMeta(thread: "$t2")))
        let service = try ChatService(stateDir: state.dir, config: config, journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .milliseconds(200)) }
        #expect(try pumpUntil(service) { try state.outboxRows().count == 3 })
        let rows = try Dictionary(uniqueKeysWithValues: state.outboxRows().map { ($0.key, $0) })
        let interrupted = try #require(rows["reply:\(cut)"])
        #expect(interrupted.body.contains("was interrupted by a bridge restart") && interrupted.meta == OutboxMeta(replyTo: "$cut", thread: "$t1"))
        #expect(interrupted.priority == .reply && interrupted.html.map(htmlProblem) == .some(nil))
        let late = try #require(rows["reply:\(old)"])
        #expect(late.body.hasPrefix("Too old, not run") && late.meta == OutboxMeta(replyTo: "$old", thread: "$t2"))
        #expect(rows["react:\(old):done"]?.meta == OutboxMeta(replyTo: "$old", reaction: "❌"))
        #expect(rows["react:\(old):seen"] == nil) // never taken for running
    }
}
