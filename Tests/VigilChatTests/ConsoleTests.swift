import Foundation
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem

@Suite(.serialized, .timeLimit(.minutes(1))) struct ConsoleTests {
    @Test func notificationReachesChatLogAndFollower() throws {
        let state = try TempState()
        let follower = ConsoleFollower(stateDir: state.dir)
        let handler = RecordingHandler()
        let service = try ChatService(stateDir: state.dir, config: testConfig(), journal: state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        let notifier = Notifier(stateDir: state.dir, config: testConfig(), journal: state.journal)
        notifier.notify(key: "heal:1", text: "bridge was dead: respawned (tier 3)\nsecond line")
        var shown: [String] = []
        // The line is written before the row is marked delivered (send, then mark): wait for both.
        #expect(try pumpUntil(service) { shown += follower.poll(); let marked = try state.outboxRows().first?.state == .delivered; return !shown.isEmpty && marked })
        #expect(shown.count == 1)
        #expect(shown[0].hasPrefix("[chat "))
        #expect(shown[0].hasSuffix("bridge was dead: respawned (tier 3)\n    second line"))
        let row = try #require(try state.outboxRows().first)
        #expect(row.state == .delivered && row.attempts == 1)
        let log = try String(contentsOfFile: state.dir.chatLog, encoding: .utf8)
        #expect(log.split(separator: "\n").count == 1)
    }

    /// Removed under a running pair, the state directory stays gone: the console adapter and the
    /// chat service make `chat/` only inside it (docs/operator-guide.md, "The state directory
    /// removed or replaced").
    @Test func chatNeverRecreatesARemovedStateDirectory() throws {
        let state = try TempState()
        let gone = StateDirectory(state.dir.path + "/removed")
        _ = ConsoleAdapter(stateDir: gone)
        #expect(throws: (any Error).self) {
            _ = try ChatService(stateDir: gone, config: testConfig(), journal: state.journal, handler: RecordingHandler())
        }
        #expect(!FileManager.default.fileExists(atPath: gone.path))
    }

    /// The runner's echo keeps its place across restarts: lines written while it was down are
    /// shown when it is back, none twice; a first start with no log yet shows the log from its
    /// start; a backlog over the limit is skipped whole-line and said.
    @Test func echoResumesWhereTheLastRunnerStopped() throws {
        let state = try TempState()
        let adapter = ConsoleAdapter(stateDir: state.dir)
        let outbox = Outbox(try state.database())
        func line(_ id: Int64, _ text: String) {
            _ = try? outbox.enqueue(key: "k\(id)", adapter: "console", body: text)
            guard case .claimed(let m, _) = try? outbox.claimNext(adapter: "console", now: Clock.boot(), owner: "t") else {
                Issue.record("no claim")
                return
            }
            #expect(adapter.deliver(m) == .delivered(remoteID: "[#\(m.id)]"))
            _ = try? outbox.markDelivered(id: m.id, owner: "t", remoteID: nil)
        }
        let first = ConsoleFollower(stateDir: state.dir, persist: true) // no chat.log yet
        line(1, "one")
        #expect(first.poll().map { $0.hasSuffix("one") } == [true])
        first.commit()
        // The runner is down while two lines are written.
        line(2, "two")
        line(3, "three")
        let second = ConsoleFollower(stateDir: state.dir, persist: true)
        #expect(second.poll().map { String($0.split(separator: " ").last!) } == ["two", "three"])
        second.commit()
        // Killed after printing, before committing: shown again (never skipped).
        line(4, "four")
        let third = ConsoleFollower(stateDir: state.dir, persist: true)
        #expect(third.poll().count == 1)
        let fourth = ConsoleFollower(stateDir: state.dir, persist: true)
        #expect(fourth.poll().map { String($0.split(separator: " ").last!) } == ["four"])
        fourth.commit()
        // A backlog longer than the replay limit: the newest part, from a whole line.
        let big = String(repeating: "x", count: 1000)
        for i in 0..<400 { line(Int64(10 + i), "\(big) \(i)") }
        let fifth = ConsoleFollower(stateDir: state.dir, persist: true)
        #expect(fifth.skipped > 0)
        let shown = fifth.poll()
        #expect(shown.count < 400 && shown.count > 200)
        #expect(shown.allSatisfy { $0.contains(big) })
        #expect(shown.last?.hasSuffix(" 399") == true)
        // Without persist (tests, `vigil say --wait`): from the end, as before.
        #expect(ConsoleFollower(stateDir: state.dir).poll().isEmpty)
    }

    @Test func commandOlderThanTheLimitIsAnsweredNotRun() throws {
        let state = try TempState()
        let handler = RecordingHandler()
        let service = try ChatService(stateDir: state.dir, config: testConfig(), journal: state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        let inbox = ChatInbox(try state.database())
        // `vigil say` commands are as old as their enqueue time; one said an hour ago (moved back
        // in the database), one now; a Matrix-style one with its own (old) timestamp.
        let old = try #require(try inbox.add(adapter: "console", sender: "console", body: "/restart runner"))
        try inbox.db.write { try inbox.db.execute("UPDATE chat_inbox SET created_wall = created_wall - 3725 WHERE id = ?", [.int(old)]) }
        let fresh = try #require(try inbox.add(adapter: "console", sender: "console", body: "/status"))
        let stamped = try #require(try inbox.add(adapter: "console", sender: "console", body: "/missions", originID: "e1",
                                                 saidWall: Clock.wall().timeIntervalSince1970 - 601))
        let help = try #require(try inbox.add(adapter: "console", sender: "console", body: "/help", originID: "e2",
                                              saidWall: Clock.wall().timeIntervalSince1970 - 3600))
        ChatKick.poke(state.dir)
        #expect(try pumpUntil(service) { try state.outboxRows().filter { $0.state == .delivered }.count == 4 })
        #expect(handler.calls.map(\.command) == [.status])
        let bodies = Dictionary(uniqueKeysWithValues: try state.outboxRows().map { ($0.key, $0.body) })
        #expect(bodies["reply:\(old)"] == "Too old, not run: your command \"/restart runner\" was sent 1h 2m ago, longer than the limit of 10m (command_max_age). Send it again if you still want it.")
        #expect(bodies["reply:\(stamped)"]?.hasPrefix("Too old, not run: your command \"/missions\" was sent 10m") == true)
        #expect(bodies["reply:\(fresh)"] == "status: all good")
        #expect(bodies["reply:\(help)"] == ChatCommand.helpText) // answered by the service: harmless however late
        #expect(try inbox.command(id: old)?.state == "expired")
        #expect(try inbox.command(id: fresh)?.state == "done")
        #expect(state.journalEvents("chat-command-too-old").map { $0["command"] } == ["restart", "missions"])
        #expect(ChatService.ageText(.seconds(59.4)) == "59s")
        #expect(ChatService.ageText(.seconds(7200)) == "2h")
        #expect(ChatService.ageText(.seconds(90_000)) == "1d 1h")
    }

    @Test func sayRunsTheHandlerAndRepliesInTheChatLog() throws {
        let state = try TempState()
        let handler = RecordingHandler()
        let service = try ChatService(stateDir: state.dir, config: testConfig(), journal: state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        service.pump(now: Clock.boot())
        // `vigil say` writes to the inbox durably and kicks.
        let inbox = ChatInbox(try state.database())
        let id = try #require(try inbox.add(adapter: "console", sender: "console", body: "/mission write the docs"))
        try inbox.add(adapter: "console", sender: "console", body: "status")     // prefix optional on the console
        try inbox.add(adapter: "console", sender: "console", body: "/bogus")
        ChatKick.poke(state.dir)
        #expect(try pumpUntil(service) { try state.outboxRows().filter { $0.state == .delivered }.count == 3 })
        #expect(handler.calls.map(\.command) == [.mission("write the docs"), .status])
        #expect(handler.calls.allSatisfy { $0.sender == "console" })
        let replies = try state.outboxRows()
        #expect(replies[0].key == "reply:\(id)" && replies[0].body == "mission queued: write the docs")
        #expect(replies[2].body.hasPrefix("Unknown command /bogus."))
        #expect(try inbox.command(id: id)?.state == "done")
        #expect(!state.journalEvents("chat-command").isEmpty)
    }

    @Test func commandInterruptedByACrashIsNotRunTwice() throws {
        let state = try TempState()
        let inbox = ChatInbox(try state.database())
        let id = try #require(try inbox.add(adapter: "console", sender: "console", body: "/mission once"))
        _ = try inbox.takeNext() // a bridge took it, then died before finishing
        let handler = RecordingHandler()
        let service = try ChatService(stateDir: state.dir, config: testConfig(), journal: state.journal, handler: handler)
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        #expect(try pumpUntil(service) { try state.outboxRows().first?.state == .delivered })
        #expect(handler.calls.isEmpty)
        #expect(try inbox.command(id: id)?.state == "interrupted")
        #expect(try state.outboxRows().first?.body.contains("interrupted by a bridge restart") == true)
    }

    @Test func retryAfterCrashDoesNotDuplicateTheLine() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        try outbox.enqueue(key: "k1", adapter: "console", body: "only once")
        // A bridge claimed it, wrote the line, and died before marking delivered.
        guard case .claimed(let m, _) = try outbox.claimNext(adapter: "console", now: Clock.boot(), owner: "1:999999999:dead") else { Issue.record("no claim"); return }
        #expect(ConsoleAdapter(stateDir: state.dir).deliver(m) == .delivered(remoteID: "[#\(m.id)]"))
        let service = try ChatService(stateDir: state.dir, config: testConfig(), journal: state.journal, handler: RecordingHandler())
        defer { service.shutdown(deadline: Clock.boot() + .seconds(2)) }
        #expect(try pumpUntil(service) { try state.outboxRows().first?.state == .delivered })
        #expect(try state.outboxRows().first?.attempts == 2)
        let log = try String(contentsOfFile: state.dir.chatLog, encoding: .utf8)
        #expect(log.components(separatedBy: "only once").count == 2) // exactly one line
        #expect(state.journalEvents("chat-redeliver").count == 1)
    }

    @Test func shutdownFlushesWhatIsDue() throws {
        let state = try TempState()
        let service = try ChatService(stateDir: state.dir, config: testConfig(), journal: state.journal, handler: RecordingHandler())
        service.pump(now: Clock.boot())
        let outbox = Outbox(try state.database())
        for i in 0..<20 { try outbox.enqueue(key: "k\(i)", adapter: "console", body: "message \(i)") }
        service.shutdown(deadline: Clock.boot() + .seconds(5))
        #expect(try outbox.counts()["delivered"] == 20)
    }
}
