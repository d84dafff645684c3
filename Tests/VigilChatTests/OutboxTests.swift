import Foundation
import Testing
@testable import VigilChat
import VigilCore
import VigilStore
import VigilSystem

@Suite(.serialized) struct OutboxTests {
    @Test func enqueueIsIdempotentAndDurable() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        #expect(try outbox.enqueue(key: "heal:1", adapter: "console", body: "restarted"))
        #expect(try !outbox.enqueue(key: "heal:1", adapter: "console", body: "restarted again"))
        #expect(try outbox.enqueue(key: "heal:1", adapter: "matrix", body: "restarted"))
        // Another connection (another process) sees it committed.
        let rows = try Outbox(try state.database()).list(limit: 10)
        #expect(rows.map(\.adapter) == ["console", "matrix"])
        #expect(rows[0].body == "restarted")
        #expect(rows[0].state == .pending)
        #expect(try outbox.counts() == ["pending": 2, "sending": 0, "delivered": 0, "failed": 0, "stuck": 0])
    }

    @Test func headOfLineClaimRetryDeliverFail() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        try outbox.enqueue(key: "a", adapter: "x", body: "first")
        try outbox.enqueue(key: "b", adapter: "x", body: "second")
        let now = Clock.boot()
        guard case .claimed(let m1, _) = try outbox.claimNext(adapter: "x", now: now, owner: "me") else { Issue.record("no claim"); return }
        #expect(m1.key == "a" && m1.attempts == 1 && m1.state == .sending)
        // The head is in flight: nothing else goes (order).
        guard case .inFlight = try outbox.claimNext(adapter: "x", now: now, owner: "me") else { Issue.record("claimed past the head"); return }
        #expect(try outbox.markRetry(id: m1.id, owner: "me", error: "HTTP 503", at: now + .seconds(60)))
        guard case .notDue(let at) = try outbox.claimNext(adapter: "x", now: now, owner: "me") else { Issue.record("due too early"); return }
        #expect(at == now + .seconds(60))
        guard case .claimed(let again, _) = try outbox.claimNext(adapter: "x", now: now + .seconds(61), owner: "me") else { Issue.record("not due"); return }
        #expect(again.id == m1.id && again.attempts == 2 && again.lastError == "HTTP 503")
        // Only the claimer marks.
        #expect(try !outbox.markDelivered(id: again.id, owner: "someone else", remoteID: nil))
        #expect(try outbox.markDelivered(id: again.id, owner: "me", remoteID: "$ev"))
        guard case .claimed(let m2, _) = try outbox.claimNext(adapter: "x", now: now, owner: "me") else { Issue.record("second not claimed"); return }
        #expect(m2.key == "b")
        #expect(try outbox.markFailed(id: m2.id, owner: "me", error: "HTTP 404"))
        #expect(try outbox.claimNext(adapter: "x", now: now, owner: "me") == .empty)
        let rows = try outbox.list(limit: 10)
        #expect(rows.map(\.state) == [.delivered, .failed])
        #expect(rows[0].remoteID == "$ev" && rows[0].delivered != nil)
        #expect(rows[1].lastError == "HTTP 404")
        #expect(try outbox.retryFailed() == 1)
        #expect(try outbox.message(id: m2.id)?.state == .pending)
    }

    @Test func inFlightOfADeadSenderIsReleased() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        try outbox.enqueue(key: "a", adapter: "x", body: "hello")
        // A sender that no longer exists: PID 1's identity with a wrong start time.
        let dead = "1:999999999:zzz"
        guard case .claimed(_, _) = try outbox.claimNext(adapter: "x", now: Clock.boot(), owner: dead) else { Issue.record("no claim"); return }
        #expect(ChatService.isGone(dead))
        #expect(try outbox.releaseInFlight(where: ChatService.isGone) == 1)
        let m = try #require(try outbox.list(limit: 1).first)
        #expect(m.state == .pending && m.attempts == 1 && m.nextAttempt == nil)
        #expect(m.lastError?.contains("interrupted") == true)
    }

    @Test func jsonHasTheContractFields() throws {
        let state = try TempState()
        let outbox = Outbox(try state.database())
        try outbox.enqueue(key: "k", adapter: "console", body: "b")
        let json = try #require(try outbox.list(limit: 1).first).json
        for field in ["id", "key", "adapter", "state", "attempts", "body"] { #expect(json[field] != nil, "missing \(field)") }
        #expect(json["state"] == "pending")
    }
}

@Suite(.serialized) struct NotifierTests {
    @Test func notifyQueuesForEveryAdapter() throws {
        let state = try TempState()
        let n = Notifier(stateDir: state.dir, config: testConfig(adapters: ["console", "webhook"], webhook: .init(url: "http://127.0.0.1:9/")), journal: state.journal)
        n.notify(key: "heal:7", text: "bridge restarted\u{1b}[2J")
        n.notify(key: "heal:7", text: "bridge restarted")
        let rows = try state.outboxRows()
        #expect(rows.map(\.adapter) == ["console", "webhook"])
        #expect(rows.allSatisfy { $0.body == "bridge restarted[2J" })
    }

    @Test func lockedDatabaseSpoolsAndCatchesUp() throws {
        let state = try TempState()
        _ = try state.database() // create + migrate
        let n = Notifier(stateDir: state.dir, config: .console, journal: state.journal, busyTimeout: 0.05)
        // Someone holds the write lock (a long transaction in another connection).
        let holder = try Database(path: state.dir.database)
        try holder.execute("BEGIN IMMEDIATE")
        n.notify(key: "circuit:open", text: "circuit open")
        n.notify(key: "heal:2", text: "recovered")
        #expect(!NotificationSpool.isEmpty(state.dir))
        #expect(n.backlog == 0) // on disk, not only in memory
        #expect(state.journalEvents("chat-queue-failed").count == 1) // rate-limited: one entry
        // A restart of the notifying process loses nothing: a new notifier drains the spool.
        try holder.execute("COMMIT")
        let n2 = Notifier(stateDir: state.dir, config: .console, journal: state.journal)
        n2.retryPending()
        #expect(NotificationSpool.isEmpty(state.dir))
        #expect(try state.outboxRows().map(\.key) == ["circuit:open", "heal:2"])
    }

    @Test func corruptDatabaseKeepsNotificationsUntilItIsBack() throws {
        let state = try TempState()
        try Data("this is not a database, just garbage bytes".utf8).write(to: URL(fileURLWithPath: state.dir.database))
        let n = Notifier(stateDir: state.dir, config: .console, journal: state.journal)
        n.notify(key: "heal:9", text: "healed while the db is broken")
        #expect(!NotificationSpool.isEmpty(state.dir))
        #expect(!state.journalEvents("chat-queue-failed").isEmpty)
        // The operator repairs the database (here: a fresh one).
        try FileManager.default.removeItem(atPath: state.dir.database)
        n.retryPending()
        #expect(try state.outboxRows().map(\.key) == ["heal:9"])
    }

    @Test func spoolSkipsTornLines() {
        let good = NotificationSpool.Item(key: "k", adapter: "console", body: "line\nwith newline")
        var data = NotificationSpool.encode(good)
        data.append(Data("deadbeef {\"key\":\"x\"}\n".utf8))
        data.append(NotificationSpool.encode(good).prefix(10))
        #expect(NotificationSpool.decode(data) == [good])
    }
}
