import Foundation
import Testing
import VigilCore
import VigilSystem
@testable import VigilStore
import VigilTestSupport

/// Retention on a real database (docs/architecture.md, "Retention clock"): the wall clock is
/// made to jump through `Retention.prune`'s `now` (the system clock cannot be changed here).
@Suite("Retention", .serialized)
struct RetentionTests {
    static let day = 86400.0

    /// A delivered outbox row and a handled chat command, stamped with the real clocks now.
    func freshRows(_ db: Database) throws {
        let ob = Outbox(db)
        try ob.enqueue(key: "k1", adapter: "console", body: "hello")
        guard case .claimed(let m, _) = try ob.claimNext(adapter: "console", now: Clock.boot(), owner: "me") else {
            Issue.record("not claimed"); return
        }
        #expect(try ob.markDelivered(id: m.id, owner: "me", remoteID: nil))
        try db.write {
            try db.execute("INSERT INTO chat_inbox (adapter, sender, body, state, created_wall, handled_wall, handled_age) VALUES ('console', 'console', '/status', 'done', ?, ?, ?)",
                           [.double(0), .double(0), try Retention.stampLocked(db)])
        }
    }

    func counts(_ db: Database) throws -> (Int64, Int64) {
        (try db.scalarInt("SELECT COUNT(*) FROM outbox") ?? -1, try db.scalarInt("SELECT COUNT(*) FROM chat_inbox") ?? -1)
    }

    @Test("A wall clock 30 days ahead or behind prunes no fresh row; a week on the boot clock does")
    func wallJumpPrunesNothing() throws {
        let dir = try TempDir()
        let db = try Database(path: dir.file("vigil.db"))
        try freshRows(db)
        let real = Retention.reading()
        for jump in [30 * Self.day, -30 * Self.day, 3650 * Self.day] {
            let now = RetentionClock.Reading(wall: real.wall + jump, boot: real.boot, bootID: real.bootID)
            #expect(try Retention.prune(db, now: now) == .init(outbox: 0, inbox: 0), "wall jump of \(jump / Self.day) days")
        }
        #expect(try counts(db) == (1, 1))
        // Six days later on the boot clock, the wall clock 30 days back: still kept.
        let sixDays = RetentionClock.Reading(wall: real.wall - 30 * Self.day, boot: real.boot + .seconds(6 * Self.day), bootID: real.bootID)
        #expect(try Retention.prune(db, now: sixDays) == .init(outbox: 0, inbox: 0))
        // A week after they were stamped: pruned, whatever the wall clock says.
        let week = RetentionClock.Reading(wall: real.wall - 30 * Self.day, boot: real.boot + .seconds(7 * Self.day + 1), bootID: real.bootID)
        #expect(try Retention.prune(db, now: week) == .init(outbox: 1, inbox: 1))
        #expect(try counts(db) == (0, 0))
    }

    @Test("A reboot with the wall clock 30 days ahead counts at most a day of downtime")
    func rebootWithJump() throws {
        let dir = try TempDir()
        let db = try Database(path: dir.file("vigil.db"))
        try freshRows(db)
        let real = Retention.reading()
        let rebooted = RetentionClock.Reading(wall: real.wall + 30 * Self.day, boot: BootInstant(seconds: 10), bootID: "another-boot")
        #expect(try Retention.prune(db, now: rebooted) == .init(outbox: 0, inbox: 0))
        let clock = try #require(try Retention.clock(db))
        #expect(clock.bootID == "another-boot")
        #expect(clock.elapsed <= RetentionClock.rebootGapLimit + .seconds(20))
        #expect(try counts(db) == (1, 1))
    }

    @Test("Rows from before the retention clock (schema 4) get a full retention from the upgrade, not their wall age")
    func rowsFromBeforeTheUpgrade() throws {
        let dir = try TempDir()
        let path = dir.file("vigil.db")
        let monthAgo = Clock.wall().timeIntervalSince1970 - 30 * Self.day
        do {
            let old = try Database(path: path, migrate: false)
            try old.write {
                for sql in Schema.migrations.prefix(4).joined() { try old.execute(sql) }
                try old.execute("PRAGMA user_version = 4")
                try old.execute("INSERT INTO outbox (key, adapter, body, state, created_wall, updated_wall, delivered_wall) VALUES ('old', 'console', 'x', 'delivered', ?, ?, ?)",
                                [.double(monthAgo), .double(monthAgo), .double(monthAgo)])
                try old.execute("INSERT INTO chat_inbox (adapter, sender, body, state, created_wall, handled_wall) VALUES ('console', 'console', '/status', 'done', ?, ?)",
                                [.double(monthAgo), .double(monthAgo)])
            }
        }
        let db = try Database(path: path)
        #expect(try db.scalarInt("PRAGMA user_version") == Int64(Schema.currentVersion))
        let real = Retention.reading()
        #expect(try Retention.prune(db, now: real) == .init(outbox: 0, inbox: 0), "a month old by the wall clock, but new to the retention clock")
        #expect(try db.scalarInt("SELECT COUNT(*) FROM outbox WHERE delivered_age IS NOT NULL") == 1)
        let week = RetentionClock.Reading(wall: real.wall, boot: real.boot + .seconds(7 * Self.day), bootID: real.bootID)
        #expect(try Retention.prune(db, now: week) == .init(outbox: 1, inbox: 1))
    }
}
