import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// One message per incident (docs/chat.md, "One message per incident"): a real pair with console
/// and Matrix; the bridge hangs, the runner heals it through the tiers (and
/// is killed -9 in the middle, its successor goes on editing the same message); from an
/// operator's view of the room there is one original message and edits of it (`m.replace`),
/// the latest saying healed. The circuit-open alert is a separate message mentioning the operator.
@Suite(.serialized, .withSynapse, .timeLimit(.minutes(4))) struct IncidentMessageTests {
    struct Setup {
        var pair: PairProcesses
        var server: SynapseServer
        var room: String
        var alice: SynapseServer.User
        var bot: SynapseServer.User
    }

    func setUp() throws -> Setup {
        let (fx, server) = try SynapseFixture.require()
        let bot = try #require(fx.bot)
        let alice = try server.register("inc\(MatrixTests.counter.next())x\(getpid())")
        let room = try server.createRoom(as: alice, invite: [bot.id])
        let pair = try PairProcesses()
        pair.write("vigil.json", """
            {"chat": {"adapters": ["console", "matrix"], "backoff_initial": "50ms", "backoff_max": "300ms",
                      "matrix": {"homeserver": "\(server.baseURL)", "user": "vigil", "password": "\(fx.botPassword)", "room": "\(room)",
                                 "allow": ["\(alice.id)"], "sync_timeout": "1s", "timeout": "3s"}}}
            """)
        return Setup(pair: pair, server: server, room: room, alice: alice, bot: bot)
    }

    /// The bot's events in the room as the operator reads them, oldest first (raw JSON).
    func botEvents(_ s: Setup) throws -> [JSONValue] {
        let r = try s.server.call("GET", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/messages",
                                  query: [("dir", "b"), ("limit", "500")], token: s.alice.token)
        guard case .array(let events)? = r["chunk"] else { return [] }
        return events.filter { $0["sender"]?.stringValue == s.bot.id && $0["type"]?.stringValue == "m.room.message" }.reversed()
    }

    func identity(_ s: Setup, _ role: StateDirectory.Role) -> ProcessIdentity? {
        guard case .ok(let v) = StateFile.read(s.pair.dir.pidFile(role), kind: "process", as: JSONValue.self),
              let pid = v["identity"]?["pid"]?.intValue, let start = v["identity"]?["start_ticks"]?.intValue else { return nil }
        return ProcessIdentity(pid: Int32(pid), startTicks: UInt64(start))
    }

    /// Every Matrix row of incidents delivered (and at least `count` of them).
    func incidentRowsDelivered(_ s: Setup, atLeast count: Int, _ last: @escaping (OutboxMessage) -> Bool) throws -> [OutboxMessage] {
        var rows: [OutboxMessage] = []
        try s.pair.waitUntil("the incident's Matrix rows delivered") {
            rows = try s.pair.outbox().filter { $0.adapter == "matrix" && $0.key.hasPrefix("incident-") }.sorted { $0.id < $1.id }
            return rows.count >= count && rows.allSatisfy { $0.state == .delivered } && rows.last.map(last) == true
        }
        return rows
    }

    @Test func hungBridgeHealedIsOneMessageEditedThroughTheTiers() throws {
        let s = try setUp()
        defer { s.pair.finish() }
        try s.pair.startWrapper(PairProcesses.fast)
        try s.pair.waitUntil("bridge beating") { s.pair.bridgeBeating() }
        let bridge = try #require(identity(s, .bridge))
        // Hung (its loop stops; it ignores SIGTERM while it hangs): tier 2, then tier 3.
        s.pair.write("fault", "hang")
        try s.pair.waitUntil("tier 2 (SIGTERM) for the hang") {
            s.pair.events("heal").contains { $0["action"]?.stringValue == "terminate" }
        }
        unlink(s.pair.dir.fault) // the respawned bridge is fine
        // The runner dies mid-incident (its first message is out); the wrapper's next runner
        // goes on editing the same message.
        _ = try incidentRowsDelivered(s, atLeast: 1) { _ in true }
        let runner = try #require(identity(s, .runner))
        _ = runner.signal(.kill)
        try s.pair.waitUntil("recovered", timeout: 90) { !s.pair.events("recovered").isEmpty }
        #expect(s.pair.events("runner-started").count >= 2)
        let rows = try incidentRowsDelivered(s, atLeast: 2) { $0.body.contains("healed after") }

        // One first message (no `replaces`), every other row an edit of it.
        let first = try #require(rows.first)
        #expect(first.meta.replaces == nil && !first.key.contains("-v"))
        #expect(rows.dropFirst().allSatisfy { $0.meta.replaces == first.key }, "\(rows.map { ($0.key, $0.meta.replaces ?? "-") })")
        #expect(Set(rows.map(\.key)).count == rows.count)
        let original = try #require(first.remoteID)

        // The operator's view: the original, and m.replace events pointing at it.
        let events = try botEvents(s)
        let edits = events.filter { $0["content"]?["m.relates_to"]?["rel_type"]?.stringValue == "m.replace" }
        #expect(edits.count == rows.count - 1, "edits: \(edits.count), rows: \(rows.count)")
        #expect(edits.allSatisfy { $0["content"]?["m.relates_to"]?["event_id"]?.stringValue == original })
        let originals = events.filter { $0["content"]?["m.relates_to"] == nil && ($0["content"]?["body"]?.stringValue ?? "").hasPrefix("Vigil incident") }
        #expect(originals.map { $0["event_id"]?.stringValue } == [original], "one incident message")
        let latest = try #require(edits.last?["content"]?["m.new_content"])
        let body = try #require(latest["body"]?.stringValue)
        #expect(body.hasPrefix("Vigil incident ") && body.contains("bridge hung (pid \(bridge.pid))"), "\(body)")
        #expect(body.contains("• tier 2: sent SIGTERM"), "\(body)")
        #expect(body.contains("• tier 3: sent SIGKILL") && body.contains("): started a new bridge (pid "), "\(body)")
        #expect(body.contains("healed after"), "\(body)")
        let html = try #require(latest["formatted_body"]?.stringValue)
        #expect(html.contains("<ul><li>tier 2: sent SIGTERM</li>") && html.contains("healed after"), "\(html)")
        #expect(latest["format"]?.stringValue == MatrixContent.htmlFormat)

        // Console: the separate lines, as before.
        let log = try String(contentsOfFile: s.pair.dir.chatLog, encoding: .utf8)
        #expect(log.contains("; tier 2: sent SIGTERM."), "\(log)")
        #expect(log.contains("Vigil: bridge healthy again after"), "\(log)")
        #expect(!log.contains("Vigil incident"), "\(log)")
    }

    @Test func circuitOpenAlertMentionsTheOperatorAndTheIncidentSaysSo() throws {
        let s = try setUp()
        defer { s.pair.finish() }
        s.pair.write("fault", "exit-at-start")
        try s.pair.startRunner(PairProcesses.fast + ["--circuit-limit", "2"])
        try s.pair.waitUntil("circuit open") { !s.pair.events("circuit-open").isEmpty }
        var alert: OutboxMessage?
        try s.pair.waitUntil("the alert delivered to Matrix") {
            alert = try s.pair.outbox().first { $0.adapter == "matrix" && $0.key.hasSuffix("-circuit") && $0.state == .delivered }
            return alert != nil
        }
        let row = try #require(alert)
        #expect(row.priority == .alert && row.meta.replaces == nil && row.meta.mentions == [s.alice.id])
        _ = try incidentRowsDelivered(s, atLeast: 2) { $0.body.contains("CIRCUIT OPEN") }

        let events = try botEvents(s)
        let shown = try #require(events.first { $0["event_id"]?.stringValue == row.remoteID })
        #expect(shown["content"]?["m.relates_to"] == nil, "a new message, not an edit")
        #expect(shown["content"]?["m.mentions"]?["user_ids"] == .array([.string(s.alice.id)]))
        #expect(shown["content"]?["body"]?.stringValue?.contains(s.alice.id) == true)
        #expect(shown["content"]?["formatted_body"]?.stringValue?.contains("https://matrix.to/#/\(s.alice.id)") == true)
        let latest = events.last { $0["content"]?["m.relates_to"]?["rel_type"]?.stringValue == "m.replace" }
        #expect(latest?["content"]?["m.new_content"]?["body"]?.stringValue?.contains("circuit open: 2 failed respawns in a row") == true)

        // Console: the alert without the mention, at alert priority.
        let console = try #require(try s.pair.outbox().first { $0.adapter == "console" && $0.key == row.key })
        #expect(console.priority == .alert && !console.body.contains(s.alice.id))
    }
}
