import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

@Suite(.serialized, .withSynapse, .timeLimit(.minutes(3))) struct MatrixTests {
    /// A room with alice (operator, allow-listed), the bot invited; a state dir and a config.
    struct Setup {
        var state: TempState
        var config: ChatConfig
        var room: String
        var alice: SynapseServer.User
        var server: SynapseServer
        var bot: SynapseServer.User
        var configJSON: String
    }

    static let counter = Atomicish()

    /// `chatExtra`: more keys of the `chat` object, e.g. `"command_max_age": "2s", `.
    func setUp(extraUsers: [String] = [], chatExtra: String = "") throws -> Setup {
        let (fx, server) = try SynapseFixture.require()
        let n = MatrixTests.counter.next()
        let alice = try server.register("alice\(n)\(getpid())")
        let bot = try #require(fx.bot)
        let room = try server.createRoom(as: alice, invite: [bot.id])
        let json = """
        {\(chatExtra)"adapters": ["matrix"], "max_attempts": 50, "backoff_initial": "50ms", "backoff_max": "300ms",
         "circuit_failures": 3, "circuit_cooloff": "300ms", "circuit_cooloff_max": "1s",
         "matrix": {"homeserver": "\(server.baseURL)", "user": "vigil", "password": "\(fx.botPassword)", "room": "\(room)",
                    "allow": ["\(alice.id)"], "sync_timeout": "1s", "timeout": "3s"}}
        """
        let config = try JSONDecoder().decode(ChatConfig.self, from: Data(json.utf8))
        return Setup(state: try TempState(), config: config, room: room, alice: alice, server: server, bot: bot, configJSON: json)
    }

    func botMessages(_ s: Setup) throws -> [SynapseServer.Message] {
        try s.server.messages(as: s.alice, room: s.room).filter { $0.sender == s.bot.id }
    }

    @Test func healActionReachesTheRoom() throws {
        let s = try setUp()
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        Notifier(stateDir: s.state.dir, config: s.config, journal: s.state.journal)
            .notify(key: "heal:\(s.room):1", text: "bridge was hung: SIGTERM sent (tier 2) @room")
        #expect(try pumpUntil(service) { try s.state.outboxRows().first?.state == .delivered })
        let row = try #require(try s.state.outboxRows().first)
        let msgs = try botMessages(s)
        #expect(msgs.count == 1)
        #expect(msgs.first?.eventID == row.remoteID)
        #expect(msgs.first?.body == "bridge was hung: SIGTERM sent (tier 2) @\u{200B}room")
    }

    @Test func killedBetweenSendAndMarkDoesNotDuplicate() async throws {
        let s = try setUp()
        let key = "heal:\(s.room):crash"
        // A real bridge process sends, then is killed -9 (by its own fault injection) before it
        // marks the row delivered. (A separate process, not a swift-testing exit test: its
        // monitor spins on waitid while any other child of the test process is a zombie.)
        _ = try writeBridgeConfig(s)
        Notifier(stateDir: s.state.dir, config: s.config, journal: s.state.journal).notify(key: key, text: "healed once")
        let bridge = try BridgeProcess(stateDir: s.state.path, environment: ["VIGIL_CHAT_FAULT": "after-send"])
        defer { bridge.stop() }
        let status = try #require(bridge.waitForExit(), "the bridge did not kill itself after the send")
        #expect(status & 0x7f == SIGKILL, "wait status \(status)")
        let inFlight = try #require(try s.state.outboxRows().first)
        #expect(inFlight.state == .sending)
        let before = try botMessages(s).filter { $0.body == "healed once" }
        #expect(before.count == 1)
        // The next bridge retries it with the same transaction id: the homeserver returns the
        // first event, the room still shows one message.
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        #expect(try pumpUntil(service) { try s.state.outboxRows().first?.state == .delivered })
        let row = try #require(try s.state.outboxRows().first)
        #expect(row.attempts == 2)
        #expect(row.remoteID == before.first?.eventID)
        // (A bridge alone also says the runner is not running: only the healed message counts.)
        let after = try botMessages(s).filter { $0.body == "healed once" }
        #expect(after.map(\.eventID) == before.map(\.eventID))
        #expect(s.state.journalEvents("chat-redeliver").count == 1)
    }

    @Test func commandsFromAllowListedUsersOnly() throws {
        let s = try setUp()
        let (_, server) = try SynapseFixture.require()
        let mallory = try server.register("mallory\(MatrixTests.counter.next())\(getpid())")
        try server.join(as: mallory, room: try { () throws -> String in
            // alice invites mallory so mallory can talk in the room
            _ = try server.call("POST", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/invite",
                                token: s.alice.token, body: ["user_id": .string(mallory.id)])
            return s.room
        }())
        // History from before the bridge started is not replayed.
        try server.send(as: s.alice, room: s.room, text: "/restart runner")
        let handler = RecordingHandler()
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        // Wait for the first sync (the since-token is stored).
        let inbox = ChatInbox(try s.state.database())
        let sinceName = try MatrixSession(s.config.matrix!).sinceStateName
        #expect(try pumpUntil(service) { try inbox.value(sinceName) != nil })

        try server.send(as: mallory, room: s.room, text: "/restart bridge")
        try server.send(as: s.alice, room: s.room, text: "just chatting")
        try server.send(as: s.alice, room: s.room, text: "!status")
        try server.send(as: s.alice, room: s.room, text: "/mission deploy \u{1b}[31mnow\u{202E} @room")
        try server.send(as: s.alice, room: s.room, text: "/restart bridge", msgtype: "m.notice") // a bot's notice: never a command
        try server.send(as: s.alice, room: s.room, text: "/restart runner", msgtype: "m.emote")
        try server.send(as: s.alice, room: s.room, text: "/re\u{200B}start bridge") // hidden character in the name: refused
        try server.send(as: s.alice, room: s.room, text: "/launch-missiles")
        // Four replies (and the /mission's two reactions, 👀 and ✅).
        #expect(try pumpUntil(service) { try s.state.outboxRows().filter { $0.state == .delivered }.count == 6 })
        #expect(handler.calls.map(\.command) == [.status, .mission("deploy [31mnow @room")])
        #expect(handler.calls.allSatisfy { $0.sender == s.alice.id })
        let replies = try botMessages(s).map(\.body)
        #expect(replies.count == 4)
        #expect(replies.first == "status: all good")
        #expect(replies.dropFirst().first == "mission queued: deploy [31mnow @\u{200B}room")
        #expect(replies.dropFirst(2).first?.hasPrefix("The command name holds an invisible or invalid character") == true, "\(replies)")
        #expect(replies.last?.hasPrefix("Unknown command /launch-missiles.") == true)
        let ignored = s.state.journalEvents("chat-ignored")
        #expect(ignored.count == 1)
        #expect(ignored.first?["sender"]?.stringValue == mallory.id)

        // A restarted bridge continues from the stored since-token: nothing is run twice.
        service.shutdown(deadline: Clock.boot() + .seconds(2))
        let handler2 = RecordingHandler()
        let service2 = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler2)
        defer { service2.shutdown(deadline: Clock.boot() + .seconds(2)) }
        try server.send(as: s.alice, room: s.room, text: "/missions")
        #expect(try pumpUntil(service2) { try s.state.outboxRows().filter { $0.state == .delivered }.count == 7 })
        #expect(handler2.calls.map(\.command) == [.missions])
    }

    @Test func deadServerOpensCircuitKeepsHeartbeatAndDeliversInOrderWhenBack() throws {
        let s = try setUp()
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        let notifier = Notifier(stateDir: s.state.dir, config: s.config, journal: s.state.journal)
        notifier.notify(key: "\(s.room):0", text: "before the outage")
        #expect(try pumpUntil(service) { try s.state.outboxRows().first?.state == .delivered })

        s.server.stop()
        defer { if !s.server.isRunning { try? s.server.launch() } }
        for i in 1...5 { notifier.notify(key: "\(s.room):\(i)", text: "during the outage \(i)") }
        // The bridge's loop keeps turning (its heartbeat stays fresh) while the adapter fails.
        var longest = TimeSpan.zero
        #expect(pumpUntil(service, longestPump: &longest) { service.adapterStatus.first?.circuit == .open })
        #expect(longest < .seconds(1)) // far below any stale limit; a pump waiting on the network would take a 3 s timeout
        let waiting = try s.state.outboxRows().dropFirst()
        #expect(waiting.allSatisfy { $0.state == .pending || $0.state == .sending })
        #expect(waiting.first?.attempts ?? 0 >= 1)
        #expect(waiting.first?.lastError?.contains("connection refused") == true)
        #expect(waiting.dropFirst().allSatisfy { $0.attempts == 0 }) // held back behind the head: order
        #expect(s.state.journalEvents("chat-circuit").contains { $0["circuit"] == "open" })

        try s.server.launch()
        #expect(try pumpUntil(service, timeout: .seconds(30), longestPump: &longest) {
            try s.state.outboxRows().allSatisfy { $0.state == .delivered }
        })
        #expect(longest < .seconds(1))
        #expect(try botMessages(s).map(\.body) == ["before the outage"] + (1...5).map { "during the outage \($0)" })
        #expect(service.adapterStatus.first?.circuit == .closed)
    }
}

final class Atomicish: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func next() -> Int { lock.withLock { n += 1; return n } }
}
