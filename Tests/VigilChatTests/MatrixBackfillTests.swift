import Foundation
import Glibc
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem
import VigilTestSupport

/// A `vigil bridge` process started by a test (the built binary, its own session), stopped by
/// its pid (SIGTERM through a pidfd, SIGKILL if it does not go) and reaped; at the latest when
/// the value goes away, so no bridge outlives its test.
final class BridgeProcess {
    let identity: ProcessIdentity
    private var reaped = false

    init(stateDir: String, environment: [String: String] = [:]) throws {
        var opts = Spawner.Options()
        opts.outputPath = stateDir + "/bridge-\(UInt32.random(in: 0...UInt32.max)).out"
        opts.newSession = true
        opts.environment = environment
        identity = try Spawner.spawn([CLITests.vigil, "bridge", "--state-dir", stateDir], opts)
    }

    /// Waits (at most `timeout`) for the bridge to end by itself and reaps it: its wait status.
    func waitForExit(timeout: TimeSpan = .seconds(60)) -> Int32? {
        guard !reaped, let pidfd = identity.openPidFD(), pidfd.waitForExit(timeoutMilliseconds: Int32(timeout.nanoseconds / 1_000_000)) else { return nil }
        reaped = true
        return Spawner.wait(identity.pid)
    }

    /// Ends the bridge (graceful first) and reaps it. Idempotent.
    func stop() {
        guard !reaped else { return }
        reaped = true
        if let pidfd = identity.openPidFD() {
            _ = pidfd.signal(.terminate)
            if !pidfd.waitForExit(timeoutMilliseconds: 20_000) {
                _ = pidfd.signal(.kill)
                _ = pidfd.waitForExit(timeoutMilliseconds: 5000)
            }
        }
        _ = Spawner.wait(identity.pid)
    }

    deinit { stop() }
}

/// Back-fill and the age limit, with real bridge processes against the real Synapse
/// (docs/chat.md, "Matrix" and "Commands from chat").
extension MatrixTests {
    /// Writes `vigil.json` (the setup's chat config and an agent command, so `/mission` queues a
    /// mission row: a visible effect) and returns the since-token's name. `syncTimeout`
    /// replaces the setup's long-poll time.
    @discardableResult
    func writeBridgeConfig(_ s: Setup, syncTimeout: String? = nil) throws -> String {
        var chat = s.configJSON
        if let syncTimeout {
            #expect(chat.contains("\"sync_timeout\": \"1s\""))
            chat = chat.replacingOccurrences(of: "\"sync_timeout\": \"1s\"", with: "\"sync_timeout\": \"\(syncTimeout)\"")
        }
        let json = "{\"chat\": \(chat), \"agent-command\": [\"/bin/true\"]}"
        try json.write(toFile: s.state.dir.config, atomically: true, encoding: .utf8)
        return try MatrixSession(s.config.matrix!).sinceStateName
    }

    /// A second user in the room, not on the allow-list.
    func stranger(_ s: Setup) throws -> SynapseServer.User {
        let u = try s.server.register("mallory\(MatrixTests.counter.next())\(getpid())")
        _ = try s.server.call("POST", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/invite",
                              token: s.alice.token, body: ["user_id": .string(u.id)])
        try s.server.join(as: u, room: s.room)
        return u
    }

    /// Starts a bridge, waits for its first /sync to store the since-token, stops it.
    ///
    /// Synapse keeps the answer to a /sync request (same device, since-token, long-poll time, …)
    /// for a while and hands it to a repeat of the same request. The stopped bridge leaves a
    /// long-poll behind, which Synapse completes with whatever is said next; the next bridge
    /// asking the same would be given that answer and see the first messages without a gap. So
    /// this bridge long-polls for a different time than the next one: the next one's first
    /// /sync is computed afresh and its timeline is `limited`, as after any long outage.
    func runBridgeUntilPositioned(_ s: Setup, sinceName: String) throws {
        try writeBridgeConfig(s, syncTimeout: "1.5s")
        defer { _ = try? writeBridgeConfig(s) }
        let bridge = try BridgeProcess(stateDir: s.state.path)
        defer { bridge.stop() }
        let inbox = ChatInbox(try s.state.database())
        #expect(try waitUntil(timeout: .seconds(60)) { try inbox.value(sinceName) != nil }, "the bridge never stored a since-token")
    }

    /// Waits until the reply to the command of `eventID` is delivered; returns its body.
    func waitForReply(_ s: Setup, eventID: String) throws -> String? {
        let db = try s.state.database()
        var reply: OutboxMessage?
        _ = try waitUntil(timeout: .seconds(60)) {
            guard let id = try db.scalarInt("SELECT id FROM chat_inbox WHERE adapter = 'matrix' AND origin_id = ?", [.text(eventID)]) else {
                return false
            }
            reply = try Outbox(db).message(key: "reply:\(id)", adapter: "matrix")
            return reply?.state == .delivered
        }
        return reply?.state == .delivered ? reply?.body : nil
    }

    func missionCount(_ s: Setup) throws -> Int64 {
        try s.state.database().scalarInt("SELECT COUNT(*) FROM missions") ?? -1
    }

    @Test func commandSaidWhileTheBridgeWasDownIsHandledAfterAFlood() throws {
        let s = try setUp()
        let sinceName = try writeBridgeConfig(s)
        let mallory = try stranger(s)
        // Said before the bridge's first /sync: history, never replayed (the read-back stops at
        // the stored token).
        let history = try s.server.send(as: s.alice, room: s.room, text: "/mission from before the first sync")
        try runBridgeUntilPositioned(s, sinceName: sinceName)

        // The bridge is down. The operator's command comes first, then 80 messages from someone
        // else (chatter and commands Vigil must not obey): far more than one /sync timeline holds.
        let command = try s.server.send(as: s.alice, room: s.room, text: "/mission fix the flaky test")
        for i in 1...80 {
            try s.server.send(as: mallory, room: s.room, text: i % 4 == 0 ? "/restart bridge" : "chatter \(i)")
        }

        var bridge = try BridgeProcess(stateDir: s.state.path)
        defer { bridge.stop() }
        let reply = try waitForReply(s, eventID: command)
        #expect(reply == "Mission 1 queued.")
        #expect(try botMessages(s).filter { $0.body == "Mission 1 queued." }.count == 1)
        #expect(try missionCount(s) == 1)
        let backfills = s.state.journalEvents("chat-backfill")
        #expect(backfills.count == 1)
        #expect(backfills.first?["truncated"] == .bool(false))
        #expect(backfills.first?["commands"] == .int(1))
        #expect((backfills.first?["events"]?.intValue ?? 0) >= 31) // 81 said, 50 in the /sync timeline
        #expect(try s.state.database().scalarInt("SELECT COUNT(*) FROM chat_inbox WHERE origin_id = ?", [.text(history)]) == 0)
        #expect(s.state.journalEvents("chat-command-too-old").isEmpty)

        // A restarted bridge goes on from the stored token: the command is not taken again.
        bridge.stop()
        bridge = try BridgeProcess(stateDir: s.state.path)
        let later = try s.server.send(as: s.alice, room: s.room, text: "!missions")
        #expect(try waitForReply(s, eventID: later) != nil)
        #expect(try botMessages(s).filter { $0.body == "Mission 1 queued." }.count == 1)
        #expect(try missionCount(s) == 1)
        let ran = try s.state.database().scalarInt("SELECT COUNT(*) FROM chat_inbox WHERE origin_id = ?", [.text(command)])
        #expect(ran == 1)
    }

    @Test func commandOlderThanTheLimitIsAnsweredNotRun() throws {
        let s = try setUp(chatExtra: "\"command_max_age\": \"2s\", ")
        let sinceName = try writeBridgeConfig(s)
        try runBridgeUntilPositioned(s, sinceName: sinceName)

        let command = try s.server.send(as: s.alice, room: s.room, text: "/mission deploy friday")
        let event = try s.server.call("GET", "/_matrix/client/v3/rooms/\(MatrixSession.encodeSegment(s.room))/event/\(MatrixSession.encodeSegment(command))",
                                      token: s.alice.token)
        let said = try #require(event["origin_server_ts"]?.doubleValue) / 1000
        // Until the command is older than the limit (by the server's timestamp).
        #expect(waitUntil(timeout: .seconds(30)) { Clock.wall().timeIntervalSince1970 - said > 2.5 })

        let bridge = try BridgeProcess(stateDir: s.state.path)
        defer { bridge.stop() }
        let reply = try #require(try waitForReply(s, eventID: command))
        #expect(reply.hasPrefix("Too old, not run: your command \"/mission deploy friday\" was sent "))
        #expect(reply.contains("longer than the limit of 2s (command_max_age)"))
        #expect(try botMessages(s).filter { $0.body == reply }.count == 1)
        #expect(try missionCount(s) == 0)
        #expect(s.state.journalEvents("chat-command").isEmpty) // the bridge's handler never saw it
        let tooOld = s.state.journalEvents("chat-command-too-old")
        #expect(tooOld.count == 1)
        #expect(tooOld.first?["command"] == "mission")
        #expect((tooOld.first?["age_s"]?.doubleValue ?? 0) > 2)
        let state = try s.state.database().scalarString("SELECT state FROM chat_inbox WHERE origin_id = ?", [.text(command)])
        #expect(state == "expired")
    }
}
