import FoundationEssentials
import VigilCore
import VigilSystem

/// Retention of delivered outbox messages and handled chat commands, aged by the database's
/// `RetentionClock` (docs/architecture.md, "Retention clock"), never by comparing wall-clock
/// timestamps: a wall clock set 30 days ahead prunes nothing early, one set back keeps nothing
/// forever.
public enum Retention {
    /// How long delivered messages and handled commands are kept (failed messages stay until
    /// an operator deals with them).
    public static let period = TimeSpan.seconds(7 * 86400)

    /// The clocks now.
    public static func reading() -> RetentionClock.Reading {
        RetentionClock.Reading(wall: Clock.wall().timeIntervalSince1970, boot: Clock.boot(), bootID: Clock.bootID)
    }

    /// The persisted clock (nil before its first advance).
    public static func clock(_ db: Database) throws -> RetentionClock? {
        guard let row = try db.query("SELECT elapsed_ns, boot_ns, boot_id, wall FROM retention_clock WHERE id = 1").first,
              let e = row[0].int, let b = row[1].int, let id = row[2].text, let w = row[3].double else { return nil }
        return RetentionClock(elapsed: TimeSpan(nanoseconds: e), boot: BootInstant(nanoseconds: b), bootID: id, wall: w)
    }

    /// Advances the persisted clock to `now` and returns its value. Call inside a write
    /// transaction (the read and the write are one step: two processes advancing at once are
    /// serialised by `BEGIN IMMEDIATE`, and a crash leaves the old value or the new one).
    static func advanceLocked(_ db: Database, _ now: RetentionClock.Reading) throws -> TimeSpan {
        let next = try clock(db).map { $0.advanced(to: now) } ?? RetentionClock.start(now)
        try db.execute("""
            INSERT INTO retention_clock (id, elapsed_ns, boot_ns, boot_id, wall) VALUES (1, ?, ?, ?, ?)
            ON CONFLICT (id) DO UPDATE SET elapsed_ns = excluded.elapsed_ns, boot_ns = excluded.boot_ns,
                boot_id = excluded.boot_id, wall = excluded.wall
            """, [.int(next.elapsed.nanoseconds), .int(next.boot.nanoseconds), .text(next.bootID), .double(next.wall)])
        return next.elapsed
    }

    /// The stamp for a row that becomes prunable now, inside the caller's write transaction.
    public static func stampLocked(_ db: Database, _ now: RetentionClock.Reading = reading()) throws -> Database.Value {
        .int(try advanceLocked(db, now).nanoseconds)
    }

    public struct Pruned: Equatable, Sendable {
        public var outbox: Int
        public var inbox: Int
    }

    /// Deletes delivered messages and handled commands stamped `keep` or longer ago on the
    /// retention clock, in one write transaction. `now` is the seam tests use to make the wall
    /// clock jump.
    @discardableResult
    public static func prune(_ db: Database, keep: TimeSpan = Retention.period, now: RetentionClock.Reading = reading()) throws -> Pruned {
        try db.write {
            let elapsed = try advanceLocked(db, now)
            // Rows from before the retention clock: their retention starts now.
            try db.execute("UPDATE outbox SET delivered_age = ? WHERE state = 'delivered' AND delivered_age IS NULL", [.int(elapsed.nanoseconds)])
            try db.execute("UPDATE chat_inbox SET handled_age = ? WHERE handled_age IS NULL AND state IN \(handledStates)", [.int(elapsed.nanoseconds)])
            let cutoff = (elapsed - keep).nanoseconds
            try db.execute("DELETE FROM outbox WHERE state = 'delivered' AND delivered_age <= ?", [.int(cutoff)])
            let outbox = db.changes
            try db.execute("DELETE FROM chat_inbox WHERE state IN \(handledStates) AND handled_age <= ?", [.int(cutoff)])
            return Pruned(outbox: outbox, inbox: db.changes)
        }
    }

    static let handledStates = "('done', 'ignored', 'interrupted', 'expired')"
}
