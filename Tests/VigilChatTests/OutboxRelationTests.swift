import Foundation
import Testing
@testable import VigilChat
import VigilCore
@testable import VigilStore
import VigilSystem

/// The outbox's priorities and relations (docs/chat.md, "Priorities" and "Replies, threads,
/// edits"), and the Matrix events they become.
@Suite(.serialized) struct OutboxRelationTests {
    @Test func alertsGoBeforeRepliesAndNoticesButNeverOvertakeASend() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        try outbox.enqueue([OutboxItem(key: "n1", adapter: "x", body: "notice 1"), OutboxItem(key: "n2", adapter: "x", body: "notice 2")])
        let now = Clock.boot()
        guard case .claimed(let first, _) = try outbox.claimNext(adapter: "x", now: now, owner: "me") else { Issue.record("no claim"); return }
        #expect(first.key == "n1")
        try outbox.enqueue([OutboxItem(key: "r", adapter: "x", body: "reply", priority: .reply),
                            OutboxItem(key: "a", adapter: "x", body: "alert", priority: .alert)])
        // n1 is being sent: nothing overtakes it.
        guard case .inFlight(let busy) = try outbox.claimNext(adapter: "x", now: now, owner: "me") else { Issue.record("overtook a send"); return }
        #expect(busy.key == "n1")
        #expect(try outbox.markDelivered(id: first.id, owner: "me", remoteID: nil))
        var order: [String] = []
        while case .claimed(let m, _) = try outbox.claimNext(adapter: "x", now: now, owner: "me") {
            order.append(m.key)
            #expect(try outbox.markDelivered(id: m.id, owner: "me", remoteID: nil))
        }
        #expect(order == ["a", "r", "n2"])
        #expect(try outbox.message(key: "a", adapter: "x")?.priority == .alert)
    }

    @Test func anEditIsNeverMoreUrgentThanWhatItEdits() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        try outbox.enqueue([OutboxItem(key: "incident", adapter: "matrix", body: "detected")])
        try outbox.enqueue([OutboxItem(key: "incident-healed", adapter: "matrix", body: "healed", priority: .alert,
                                       meta: OutboxMeta(replaces: "incident"))])
        let edit = try #require(try outbox.message(key: "incident-healed", adapter: "matrix"))
        #expect(edit.priority == .notice)
        #expect(edit.meta.replaces == "incident")
        guard case .claimed(let m, _) = try outbox.claimNext(adapter: "matrix", now: Clock.boot(), owner: "me") else { Issue.record("no claim"); return }
        #expect(m.key == "incident")
    }

    @Test func htmlPriorityAndMetaSurviveTheSpoolAndTheTable() throws {
        let state = try TempState()
        let meta = OutboxMeta(replyTo: "$cmd", thread: "$root", mentions: ["@op:localhost"], room: "!r:localhost")
        let item = OutboxItem(key: "k", adapter: "matrix", body: "plain", html: "<b>bold</b>", priority: .reply, meta: meta)
        let plain = OutboxItem(key: "p", adapter: "console", body: "just text")
        try NotificationSpool.append([item, plain], dir: state.dir)
        let outbox = Outbox(try state.database())
        #expect(try NotificationSpool.drain(into: outbox, dir: state.dir) == 2)
        let got = try #require(try outbox.message(key: "k", adapter: "matrix"))
        #expect(got.html == "<b>bold</b>" && got.priority == .reply && got.meta == meta)
        let p = try #require(try outbox.message(key: "p", adapter: "console"))
        #expect(p.html == nil && p.priority == .notice && p.meta.isEmpty)
        // A spool line written by an older Vigil (key, adapter, body only) reads as a plain notice.
        let old = Data(#"{"adapter":"console","body":"old","key":"o"}"#.utf8)
        let line = Data((CRC32.hex(old) + " ").utf8) + old + Data([0x0A])
        #expect(NotificationSpool.decode(line) == [OutboxItem(key: "o", adapter: "console", body: "old")])
        // An unreadable meta column is no relation, not a lost message.
        #expect(OutboxMeta.parse("{not json") == OutboxMeta())
        #expect(got.json["meta"]?["reply_to"]?.stringValue == "$cmd")
    }

    @Test func aNoticeBecomesTheFormEachAdapterCanShow() {
        let n = ChatNotice(key: "k", text: "hello\u{7}", html: "<b>hello</b>", priority: .alert, meta: OutboxMeta(replyTo: "$e"))
        let m = n.item(for: "matrix", maxLength: 100)
        #expect(m?.html == "<b>hello</b>" && m?.meta.replyTo == "$e" && m?.priority == .alert && m?.body == "hello")
        let c = n.item(for: "console", maxLength: 100)
        #expect(c?.html == nil && c?.meta.isEmpty == true && c?.body == "hello")
        let reaction = ChatNotice(key: "r", text: "👀", meta: OutboxMeta(replyTo: "$e", reaction: "👀"))
        #expect(reaction.item(for: "console", maxLength: 100) == nil)
        #expect(reaction.item(for: "matrix", maxLength: 100)?.meta.reaction == "👀")
        #expect(ChatNotice(key: "x", text: "t", adapters: ["matrix"]).item(for: "webhook", maxLength: 100) == nil)
        // HTML too long for a message is replaced by the rendered text; the text still goes.
        let long = ChatNotice(key: "l", text: "t <", html: String(repeating: "<i>x</i>", count: 100)).item(for: "matrix", maxLength: 100)
        #expect(long?.html == "t &lt;" && long?.body == "t <")
        // No HTML given: Matrix gets the rendered text (every Matrix message has a formatted_body).
        #expect(ChatNotice(key: "p", text: "a & b").item(for: "matrix", maxLength: 100)?.html == "a &amp; b")
    }

    private func message(_ body: String, html: String? = nil, _ meta: OutboxMeta) -> OutboxMessage {
        let now = Date()
        return OutboxMessage(id: 1, key: "k", adapter: "matrix", body: body, state: .sending, attempts: 1, created: now, updated: now,
                             html: html, meta: meta)
    }

    @Test func matrixContentFollowsTheClientServerSpec() {
        // Plain: a message with an empty m.mentions, mass mentions defused.
        var (type, c) = MatrixContent.make(message("hi @room", OutboxMeta()), msgtype: "m.notice", replacing: nil)
        #expect(type == "m.room.message")
        #expect(c["msgtype"]?.stringValue == "m.notice" && c["body"]?.stringValue == "hi @\u{200B}room")
        #expect(c["m.mentions"] == .object([:]) && c["m.relates_to"] == nil)
        // No HTML in the row: the rendered text (every Matrix message has one).
        #expect(c["format"]?.stringValue == "org.matrix.custom.html" && c["formatted_body"]?.stringValue == "hi @\u{200B}room")
        // HTML and a reply.
        (type, c) = MatrixContent.make(message("ok", html: "<code>ok</code>", OutboxMeta(replyTo: "$cmd", mentions: ["@op:h"])),
                                       msgtype: "m.notice", replacing: nil)
        #expect(c["format"]?.stringValue == "org.matrix.custom.html" && c["formatted_body"]?.stringValue == "<code>ok</code>")
        #expect(c["m.relates_to"]?["m.in_reply_to"]?["event_id"]?.stringValue == "$cmd")
        #expect(c["m.mentions"]?["user_ids"] == .array(["@op:h"]))
        // In a thread, replying to the command.
        (_, c) = MatrixContent.make(message("ok", OutboxMeta(replyTo: "$cmd", thread: "$root")), msgtype: "m.notice", replacing: nil)
        #expect(c["m.relates_to"]?["rel_type"]?.stringValue == "m.thread" && c["m.relates_to"]?["event_id"]?.stringValue == "$root")
        #expect(c["m.relates_to"]?["m.in_reply_to"]?["event_id"]?.stringValue == "$cmd")
        #expect(c["m.relates_to"]?["is_falling_back"] == .bool(false))
        // An edit whose original was delivered.
        (_, c) = MatrixContent.make(message("healed", html: "<b>healed</b>", OutboxMeta(replaces: "first")), msgtype: "m.notice", replacing: "$first")
        #expect(c["body"]?.stringValue == "* healed" && c["m.new_content"]?["body"]?.stringValue == "healed")
        #expect(c["m.new_content"]?["formatted_body"]?.stringValue == "<b>healed</b>")
        #expect(c["m.relates_to"]?["rel_type"]?.stringValue == "m.replace" && c["m.relates_to"]?["event_id"]?.stringValue == "$first")
        // An edit whose original never got there: a new message.
        (_, c) = MatrixContent.make(message("healed", OutboxMeta(replaces: "first")), msgtype: "m.notice", replacing: nil)
        #expect(c["body"]?.stringValue == "healed" && c["m.relates_to"] == nil)
        // A reaction.
        (type, c) = MatrixContent.make(message("👀", OutboxMeta(replyTo: "$cmd", reaction: "👀")), msgtype: "m.notice", replacing: nil)
        #expect(type == "m.reaction")
        #expect(c["m.relates_to"] == ["rel_type": "m.annotation", "event_id": "$cmd", "key": "👀"])
        #expect(c["body"] == nil)
    }
}
