import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Replies in context, reactions and HTML against a real Synapse: alice (a second client
/// user, allow-listed) sends commands; the room is read back as alice.
@Suite(.serialized, .withSynapse, .timeLimit(.minutes(3))) struct MatrixReplyTests {
    let base = MatrixTests()

    /// The room's events as alice reads them (`/messages`, oldest first).
    func events(_ s: MatrixTests.Setup) throws -> [JSONValue] {
        let r = try s.server.call("GET", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/messages",
                                  query: [("dir", "b"), ("limit", "200")], token: s.alice.token)
        guard case .array(let chunk)? = r["chunk"] else { return [] }
        return chunk.reversed()
    }

    /// Sends `content` as alice (an `m.room.message`); returns the event id.
    func send(_ s: MatrixTests.Setup, _ content: JSONValue) throws -> String {
        let txn = "t" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let r = try s.server.call("PUT", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/send/m.room.message/\(txn)",
                                  token: s.alice.token, body: content)
        return try #require(r["event_id"]?.stringValue)
    }

    func waitForFirstSync(_ s: MatrixTests.Setup, _ service: ChatService) throws {
        let inbox = ChatInbox(try s.state.database())
        let sinceName = try MatrixSession(s.config.matrix!).sinceStateName
        #expect(try pumpUntil(service) { try inbox.value(sinceName) != nil })
    }

    /// The bot's `m.room.message` whose reply target is `event`.
    func replies(to event: String, in evs: [JSONValue], bot: String) -> [JSONValue] {
        evs.filter {
            $0["sender"]?.stringValue == bot && $0["type"]?.stringValue == "m.room.message"
                && $0["content"]?["m.relates_to"]?["m.in_reply_to"]?["event_id"]?.stringValue == event
        }
    }

    func reactions(to event: String, in evs: [JSONValue], bot: String) -> [String] {
        evs.compactMap {
            guard $0["sender"]?.stringValue == bot, $0["type"]?.stringValue == "m.reaction",
                  $0["content"]?["m.relates_to"]?["event_id"]?.stringValue == event,
                  $0["content"]?["m.relates_to"]?["rel_type"]?.stringValue == "m.annotation" else { return nil }
            return $0["content"]?["m.relates_to"]?["key"]?.stringValue
        }
    }

    @Test func missionCommandGetsAReplyReactionsAndHTML() throws {
        let s = try base.setUp()
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        try waitForFirstSync(s, service)

        let t0 = Clock.boot()
        let cmd = try s.server.send(as: s.alice, room: s.room, text: "/mission fix <script>alert('x')</script> & \"more\"")
        var replyAt: TimeSpan? = nil
        #expect(try pumpUntil(service) {
            let rows = try s.state.outboxRows()
            if replyAt == nil, rows.contains(where: { $0.key.hasPrefix("reply:") && $0.state == .delivered }) { replyAt = Clock.boot() - t0 }
            return rows.count == 3 && rows.allSatisfy { $0.state == .delivered }
        })
        print("measure: /mission command → reply delivered: \(replyAt.map { "\(Int($0.milliseconds)) ms" } ?? "?")")

        let evs = try events(s)
        let reply = try #require(replies(to: cmd, in: evs, bot: s.bot.id).first)
        let content = try #require(reply["content"])
        #expect(content["body"]?.stringValue == "mission queued: fix <script>alert('x')</script> & \"more\"")
        #expect(content["format"]?.stringValue == "org.matrix.custom.html")
        let html = try #require(content["formatted_body"]?.stringValue)
        #expect(html == "mission queued: fix &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
        #expect(htmlProblem(html) == nil)
        print("sample: body=\(content["body"]?.stringValue ?? "") formatted_body=\(html)")
        #expect(content["m.relates_to"]?["rel_type"] == nil) // not in a thread
        // 👀 on receipt, ✅ when done; each once.
        #expect(reactions(to: cmd, in: evs, bot: s.bot.id).sorted() == ["✅", "👀"].sorted())
        let seenID = evs.firstIndex { $0["type"]?.stringValue == "m.reaction" && $0["content"]?["m.relates_to"]?["key"]?.stringValue == "👀" }
        let replyID = evs.firstIndex { $0["event_id"] == reply["event_id"] }
        #expect(seenID != nil && replyID != nil && seenID! < replyID!) // 👀 before the reply
    }

    @Test func aCommandInAThreadIsAnsweredInItsThread() throws {
        let s = try base.setUp()
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: TableHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        try waitForFirstSync(s, service)

        let root = try s.server.send(as: s.alice, room: s.room, text: "deploy thread")
        let t0 = Clock.boot()
        let cmd = try send(s, ["msgtype": "m.text", "body": "/status",
                               "m.relates_to": ["rel_type": "m.thread", "event_id": .string(root), "is_falling_back": true,
                                                "m.in_reply_to": ["event_id": .string(root)]]])
        #expect(try pumpUntil(service) { try s.state.outboxRows().first?.state == .delivered })
        print("measure: /status in a thread → reply delivered: \(Int((Clock.boot() - t0).milliseconds)) ms")
        let evs = try events(s)
        let reply = try #require(replies(to: cmd, in: evs, bot: s.bot.id).first)
        let rel = reply["content"]?["m.relates_to"]
        #expect(rel?["rel_type"]?.stringValue == "m.thread")
        #expect(rel?["event_id"]?.stringValue == root)
        #expect(rel?["is_falling_back"] == .bool(false))
        let html = try #require(reply["content"]?["formatted_body"]?.stringValue)
        #expect(html == "<pre><code>" + ChatHTML.escape(TableHandler.status) + "</code></pre>")
        #expect(htmlProblem(html) == nil)
        print("sample: body=\(reply["content"]?["body"]?.stringValue ?? "") formatted_body=\(html)")
        #expect(reactions(to: cmd, in: evs, bot: s.bot.id).isEmpty) // /status takes no time: no reactions
    }

    @Test func restartBridgeIsAnsweredByTheNextBridge() throws {
        let s = try base.setUp()
        let handler = RestartHandler()
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler)
        handler.service = service
        try waitForFirstSync(s, service)
        let t0 = Clock.boot()
        let cmd = try s.server.send(as: s.alice, room: s.room, text: "/restart bridge")
        #expect(try pumpUntil(service) { try s.state.outboxRows().filter { $0.state == .delivered }.count == 2 })
        // The old bridge stops; a new one (another service) says it is up, in reply, and ✅.
        service.shutdown(deadline: Clock.boot() + .seconds(2))
        let service2 = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        service2.restartedDescription = "pid 4242, version 9.9"
        defer { service2.shutdown(deadline: Clock.boot() + .seconds(2)) }
        #expect(try pumpUntil(service2) { try s.state.outboxRows().filter { $0.state == .delivered }.count == 4 })
        print("measure: /restart bridge → 'bridge restarted' delivered: \(Int((Clock.boot() - t0).milliseconds)) ms")
        let evs = try events(s)
        let bodies = replies(to: cmd, in: evs, bot: s.bot.id).compactMap { $0["content"]?["body"]?.stringValue }
        #expect(bodies == ["Restart marker written for the bridge.", "bridge restarted (pid 4242, version 9.9)"])
        #expect(reactions(to: cmd, in: evs, bot: s.bot.id).sorted() == ["✅", "👀"].sorted())
        // Once: a third bridge says nothing more.
        service2.shutdown(deadline: Clock.boot() + .seconds(2))
        let service3 = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        defer { service3.shutdown(deadline: Clock.boot() + .seconds(2)) }
        _ = pumpUntil(service3, timeout: .milliseconds(500)) { false }
        #expect(try s.state.outboxRows().count == 4)
    }
}

extension MatrixReplyTests {
    /// A real `vigil bridge` re-execs itself on `/restart bridge`; the new program says so in
    /// reply once it is up, and reacts ✅.
    @Test func realBridgeSaysItRestarted() throws {
        let s = try base.setUp()
        let sinceName = try base.writeBridgeConfig(s)
        let bridge = try BridgeProcess(stateDir: s.state.path)
        defer { bridge.stop() }
        let inbox = ChatInbox(try s.state.database())
        #expect(try waitUntil(timeout: .seconds(60)) { try inbox.value(sinceName) != nil }, "the bridge never stored a since-token")
        let t0 = Clock.boot()
        let cmd = try s.server.send(as: s.alice, room: s.room, text: "/restart bridge")
        let db = try s.state.database()
        var restarted: OutboxMessage?
        _ = try waitUntil(timeout: .seconds(60)) {
            guard let id = try db.scalarInt("SELECT id FROM chat_inbox WHERE adapter = 'matrix' AND origin_id = ?", [.text(cmd)]) else { return false }
            restarted = try Outbox(db).message(key: "reply:\(id):restarted", adapter: "matrix")
            let done = try Outbox(db).message(key: "react:\(id):done", adapter: "matrix")
            return restarted?.state == .delivered && done?.state == .delivered
        }
        print("measure: real bridge /restart bridge → 'bridge restarted' delivered: \(Int((Clock.boot() - t0).milliseconds)) ms")
        // A re-exec keeps the pid.
        #expect(restarted?.body.hasPrefix("bridge restarted (pid \(bridge.identity.pid), version ") == true, "\(restarted?.body ?? "nil")")
        #expect(s.state.journalEvents("bridge-reexec").count == 1)
        let evs = try events(s)
        let bodies = replies(to: cmd, in: evs, bot: s.bot.id).compactMap { $0["content"]?["body"]?.stringValue }
        #expect(bodies == ["Restart marker written for the bridge. The new bridge will say when it is up.", restarted?.body ?? "?"])
        #expect(reactions(to: cmd, in: evs, bot: s.bot.id).sorted() == ["✅", "👀"].sorted())
        for e in evs where e["sender"]?.stringValue == s.bot.id && e["type"]?.stringValue == "m.room.message" {
            #expect(e["content"]?["formatted_body"]?.stringValue.flatMap(htmlProblem) == nil)
        }
    }
}

/// Answers `/status` with a fixed-width table.
final class TableHandler: ChatCommandHandler {
    static let status = "bridge    healthy   beat 1s ago\nrunner    running   <pid 12>"
    func handle(_ command: ChatCommand, sender: String) -> String { TableHandler.status }
}

/// Answers `/restart bridge` as the bridge does: the next bridge says it is up.
final class RestartHandler: ChatCommandHandler {
    weak var service: ChatService?
    func handle(_ command: ChatCommand, sender: String) -> String { "" }
    func handle(_ command: ChatCommand, context: ChatCommandContext) -> ChatCommandResult {
        let answered = service?.expectRestart(context) ?? false
        return ChatCommandResult("Restart marker written for the bridge.", outcome: answered ? .pending : .ok)
    }
}
