import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// Roles, strangers, edits, encrypted and wrong rooms, against the suite's real Synapse
/// (docs/chat.md, "Roles", "Edits", "Room problems").
extension MatrixTests {
    /// A user invited into `room` by alice, joined.
    func member(_ s: Setup, _ name: String) throws -> SynapseServer.User {
        let u = try s.server.register("\(name)\(MatrixTests.counter.next())\(getpid())")
        _ = try s.server.call("POST", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/invite",
                              token: s.alice.token, body: ["user_id": .string(u.id)])
        try s.server.join(as: u, room: s.room)
        return u
    }

    func waitForFirstSync(_ s: Setup, _ service: ChatService) throws {
        let inbox = ChatInbox(try s.state.database())
        let sinceName = try MatrixSession(s.config.matrix!).sinceStateName
        #expect(try pumpUntil(service) { try inbox.value(sinceName) != nil })
    }

    func delivered(_ s: Setup) throws -> [OutboxMessage] { try s.state.outboxRows().filter { $0.state == .delivered } }

    /// Runs the built `vigil` with `args` on the setup's state dir; its output.
    func vigil(_ args: [String], _ s: Setup) throws -> String {
        let out = s.state.path + "/cli-\(UInt32.random(in: 0...UInt32.max)).out"
        var opts = Spawner.Options()
        opts.outputPath = out
        opts.newSession = false
        let child = try Spawner.spawn([Binaries.vigil, "--state-dir", s.state.path] + args, opts)
        _ = Spawner.wait(child.pid)
        defer { unlink(out) }
        return (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
    }

    @Test func viewerRunsReadOnlyCommandsAndStrangerIsToldOnce() throws {
        var s = try setUp()
        let bob = try member(s, "bob")
        let carol = try member(s, "carol")
        s.config.matrix!.viewers = [bob.id]
        s.config.matrix!.tellStrangers = true
        let handler = RecordingHandler()
        var service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        try waitForFirstSync(s, service)
        try s.server.send(as: bob, room: s.room, text: "/status")
        try s.server.send(as: bob, room: s.room, text: "/mission rm -rf")
        try s.server.send(as: carol, room: s.room, text: "/status")
        try s.server.send(as: carol, room: s.room, text: "/missions")
        #expect(try pumpUntil(service) { try delivered(s).count == 3 })
        #expect(handler.calls.map(\.command) == [.status])
        #expect(handler.calls.first?.sender == bob.id)
        let replies = Set(try botMessages(s).map(\.body))
        #expect(replies == ["status: all good", "not allowed for viewers: /mission", MatrixPoller.strangerReply])
        #expect(s.state.journalEvents("chat-role-refused").first?["sender"]?.stringValue == bob.id)
        #expect(s.state.journalEvents("chat-stranger-told").count == 1)

        // Not again, not even after a restart (remembered in chat_state).
        service.shutdown(deadline: Clock.boot() + .seconds(2))
        service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler)
        try s.server.send(as: carol, room: s.room, text: "/status")
        try s.server.send(as: s.alice, room: s.room, text: "/missions")
        #expect(try pumpUntil(service) { try delivered(s).count == 4 })
        #expect(handler.calls.map(\.command) == [.status, .missions])
        #expect(try botMessages(s).filter { $0.body == MatrixPoller.strangerReply }.count == 1)
        #expect(s.state.journalEvents("chat-stranger-told").count == 1)
    }

    @Test func editsAreAnsweredNoticesAndEmotesAreNotCommands() throws {
        let s = try setUp()
        let handler = RecordingHandler()
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        try waitForFirstSync(s, service)
        let original = try s.server.send(as: s.alice, room: s.room, text: "/status")
        // An edit as Element sends it: fallback body, m.new_content, m.replace.
        let edit = try s.server.call("PUT", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/send/m.room.message/e1\(getpid())",
                                     token: s.alice.token, body: [
                                        "msgtype": "m.text", "body": "* /mission evil",
                                        "m.new_content": ["msgtype": "m.text", "body": "/mission evil"],
                                        "m.relates_to": ["rel_type": "m.replace", "event_id": .string(original)],
                                     ])["event_id"]?.stringValue
        try s.server.send(as: s.alice, room: s.room, text: "* /restart bridge") // a client's fallback-only edit
        try s.server.send(as: s.alice, room: s.room, text: "/mission from a notice", msgtype: "m.notice")
        try s.server.send(as: s.alice, room: s.room, text: "/restart runner", msgtype: "m.emote")
        try s.server.send(as: s.alice, room: s.room, text: "!missions")
        #expect(try pumpUntil(service) { try delivered(s).count == 4 })
        #expect(handler.calls.map(\.command) == [.status, .missions])
        let editReplies = try s.state.outboxRows().filter { $0.body == MatrixPoller.editReply }
        #expect(editReplies.count == 2)
        #expect(editReplies.contains { $0.meta.replyTo == edit })
        #expect(s.state.journalEvents("chat-edit-not-run").count == 2)
    }

    @Test func encryptedRoomIsSaidOnceAndShown() throws {
        var s = try setUp()
        let r = try s.server.call("POST", "/_matrix/client/v3/createRoom", token: s.alice.token, body: [
            "preset": "private_chat", "invite": [.string(s.bot.id)], "name": "encrypted ops",
            "initial_state": [["type": "m.room.encryption", "state_key": "", "content": ["algorithm": "m.megolm.v1.aes-sha2"]]],
        ])
        let room = try #require(r["room_id"]?.stringValue)
        s.room = room
        s.config.matrix!.room = room
        let handler = RecordingHandler()
        var service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        #expect(try pumpUntil(service) { try delivered(s).contains { $0.key == "room-encrypted:\(room)" } })
        #expect(try botMessages(s).map(\.body) == [MatrixPoller.encryptedNotice])
        #expect(ChatService.readStatus(s.state.dir)?.first?.problem == MatrixSession.encryptedProblem)
        #expect(s.state.journalEvents("chat-room-encrypted").count == 1)
        // An encrypted command from alice: unreadable, journaled, never run.
        _ = try s.server.call("PUT", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(room))/send/m.room.encrypted/x1\(getpid())",
                              token: s.alice.token, body: ["algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "AwgAEn…", "sender_key": "k",
                                                           "session_id": "s", "device_id": "D"])
        #expect(pumpUntil(service) { !s.state.journalEvents("chat-unreadable").isEmpty })
        #expect(handler.calls.isEmpty)
        let status = try vigil(["status"], s)
        #expect(status.contains("chat: room is encrypted: Vigil cannot read commands there"), "\(status)")
        let doctor = try vigil(["doctor"], s)
        #expect(doctor.contains("chat: room is encrypted"), "\(doctor)")
        // Said once: a restarted bridge does not say it again.
        service.shutdown(deadline: Clock.boot() + .seconds(2))
        service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: handler)
        try waitForFirstSync(s, service)
        #expect(pumpUntil(service, timeout: .seconds(2)) { false } == false)
        #expect(try botMessages(s).count == 1)
        #expect(s.state.journalEvents("chat-room-encrypted").count == 1)
    }

    @Test func unreachableRoomsAreShownInStatusAndDoctor() throws {
        var s = try setUp()
        let serverName = String(s.alice.id.split(separator: ":", maxSplits: 1)[1])
        // An alias that does not exist (404), then a room the bot was not invited to (403).
        for room in ["#nope\(getpid()):\(serverName)", try s.server.createRoom(as: s.alice, invite: [])] {
            let state = try TempState()
            s.state = state
            s.config.matrix!.room = room
            let service = try ChatService(stateDir: state.dir, config: s.config, journal: state.journal, handler: RecordingHandler())
            #expect(pumpUntil(service) { ChatService.readStatus(state.dir)?.first?.problem?.hasPrefix("room not reachable: \(room)") == true })
            #expect(pumpUntil(service) { !state.journalEvents("chat-room-unreachable").isEmpty })
            service.shutdown(deadline: Clock.boot() + .seconds(2))
            let status = try vigil(["status"], s)
            #expect(status.contains("chat: room not reachable: \(room)"), "\(status)")
            let doctor = try vigil(["doctor"], s)
            #expect(doctor.contains("chat: room not reachable"), "\(doctor)")
        }
    }

    @Test func aRoomChangeDoesNotRedirectQueuedMessages() throws {
        var s = try setUp()
        // Queued for the first room while no bridge runs; then the configuration names another.
        Notifier(stateDir: s.state.dir, config: s.config, journal: s.state.journal).notify(key: "old-room", text: "for the old room")
        let oldRoom = s.room
        let newRoom = try s.server.createRoom(as: s.alice, invite: [s.bot.id])
        s.config.matrix!.room = newRoom
        s.room = newRoom
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        #expect(try pumpUntil(service) { try s.state.outboxRows().first?.state == .failed })
        let row = try #require(try s.state.outboxRows().first)
        #expect(row.lastError?.contains("queued for room \(oldRoom), now configured \(newRoom)") == true, "\(row.lastError ?? "")")
        #expect(try botMessages(s).isEmpty)
        // An operator's retry sends it to the room configured now.
        #expect(try Outbox(try s.state.database()).retryFailed(id: row.id) == 1)
        #expect(try pumpUntil(service) { try s.state.outboxRows().first?.state == .delivered })
        #expect(try botMessages(s).map(\.body) == ["for the old room"])
    }

    /// Synapse's rate limit on the bot (the suite's server has it lifted; a per-user override
    /// puts one back: 1 message a second, burst 1): an alert queued after six notices arrives
    /// before the later notices, not after them.
    @Test func anAlertOvertakesNoticesUnderTheRateLimit() throws {
        let s = try setUp()
        let admin = try s.server.register("admin\(MatrixTests.counter.next())\(getpid())", admin: true)
        let path = "/_synapse/admin/v1/users/\(MatrixSession.encodeSegment(s.bot.id))/override_ratelimit"
        let set = try s.server.call("POST", path, token: admin.token, body: ["messages_per_second": 1, "burst_count": 1])
        #expect(set["messages_per_second"]?.doubleValue == 1)
        defer { _ = try? s.server.call("DELETE", path, token: admin.token) }
        let service = try ChatService(stateDir: s.state.dir, config: s.config, journal: s.state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        let notifier = Notifier(stateDir: s.state.dir, config: s.config, journal: s.state.journal)
        for i in 1...6 { notifier.notify(key: "n\(i)", text: "notice \(i)") }
        #expect(try pumpUntil(service) { try delivered(s).count >= 1 })
        notifier.notify(ChatNotice(key: "alert", text: "the circuit opened", priority: .alert))
        #expect(try pumpUntil(service, timeout: .seconds(40)) { try delivered(s).count == 7 })
        let order = try botMessages(s).map(\.body)
        let at = try #require(order.firstIndex(of: "the circuit opened"))
        #expect(at <= 2, "\(order)")
        #expect(order.filter { $0 != "the circuit opened" } == (1...6).map { "notice \($0)" })
        #expect(try s.state.outboxRows().contains { $0.attempts > 1 }, "the limit was not met (no send was refused with 429)")
    }
}

@Suite struct ChatRoleTests {
    func matrix(_ extra: String) throws -> ChatConfig.Matrix {
        let json = #"{"homeserver": "http://h", "access_token": "t", "room": "!r:h", "allow": ["@op:h"]"# + extra + "}"
        return try JSONDecoder().decode(ChatConfig.Matrix.self, from: Data(json.utf8))
    }

    @Test func rolesAndWhatTheyMayRun() throws {
        let m = try matrix(#", "viewers": ["@view:h"], "tell_strangers": true"#)
        #expect(m.role(of: "@op:h") == .operator)
        #expect(m.role(of: "@view:h") == .viewer)
        #expect(m.role(of: "@other:h") == .stranger)
        #expect(m.tellStrangers)
        #expect(try matrix("").tellStrangers == false)
        #expect(try matrix("").viewers == [])
        for c in [ChatCommand.status, .missions, .show(1), .journal(5), .help(nil), .unknown("x")] { #expect(ChatRole.viewer.may(c), "\(c)") }
        for c in [ChatCommand.mission("x"), .cancel("1"), .restart("bridge"), .healReset] {
            #expect(!ChatRole.viewer.may(c), "\(c)")
            #expect(ChatRole.operator.may(c))
            #expect(!ChatRole.stranger.may(c))
        }
        #expect(ChatRole.refusal(.mission("x")) == "not allowed for viewers: /mission")
    }

    @Test func userIDsAreValidated() throws {
        #expect(throws: DecodingError.self) { try matrix(#", "viewers": ["bob"]"#) }
        #expect(throws: DecodingError.self) { try matrix(#", "viewers": ["@op:h"]"#) } // in both lists
        #expect(throws: DecodingError.self) { try matrix(#", "viewers": ["@bo b:h"]"#) }
        #expect(ChatConfig.Matrix.isUserID("@alice.b_c=d-e/f+g:matrix.example.org:8448"))
        for bad in ["alice", "@alice", "@:h", "@alice:", "#ops:h", "@al ice:h", "@ålice:h"] { #expect(!ChatConfig.Matrix.isUserID(bad), "\(bad)") }
    }

    @Test func editsAreRecognised() {
        func content(_ v: JSONValue) -> JSONValue? { v }
        #expect(MatrixPoller.editedCommand(["msgtype": "m.text", "body": "* /mission x", "m.new_content": ["body": "/mission x"],
                                            "m.relates_to": ["rel_type": "m.replace", "event_id": "$e"]]) == "/mission x")
        #expect(MatrixPoller.editedCommand(["msgtype": "m.text", "body": "* !status"]) == "!status")
        #expect(MatrixPoller.editedCommand(["msgtype": "m.text", "body": "/status"]) == nil)
        #expect(MatrixPoller.editedCommand(["msgtype": "m.text", "body": "* typo fixed", "m.new_content": ["body": "typo fixed"]]) == nil)
        #expect(MatrixPoller.editedCommand(["msgtype": "m.text", "body": "* x", "m.relates_to": ["rel_type": "m.thread", "event_id": "$e"]]) == nil)
    }
}
