import FoundationEssentials
import VigilCore
import VigilSystem

/// Where a message for a person is on its way (the `state` column; `vigil outbox --json`).
public enum OutboxState: String, Sendable, CaseIterable, Codable {
    /// Waiting for its turn or its next attempt.
    case pending
    /// Claimed by a bridge that is calling the chat server right now. After a crash the row is
    /// found with a dead claimer and goes back to `pending` (retried with the same idempotency
    /// key, so a chat that de-duplicates never shows it twice).
    case sending
    /// The chat server acknowledged it.
    case delivered
    /// Given up: max attempts reached or refused by the server. Visible, never dropped.
    case failed
}

/// One row of the outbox.
public struct OutboxMessage: Sendable, Equatable {
    public var id: Int64
    /// The idempotency key (unique per adapter).
    public var key: String
    public var adapter: String
    public var body: String
    public var state: OutboxState
    /// Attempts started so far (a claim counts, even if the sender crashed).
    public var attempts: Int
    /// When a pending message may be tried next (boot clock); nil when due now or not pending.
    public var nextAttempt: BootInstant?
    public var lastError: String?
    /// Who is sending it (`pid:start_ticks:instance`) while `sending`; once `delivered`, who
    /// delivered it (the bridge, or the runner standing in for it).
    public var claimedBy: String?
    /// When a `sending` row's claim runs out (boot clock; nil when unknown or not sending).
    public var leaseUntil: BootInstant?
    /// Reported stuck once (still retrying after `max_attempts`).
    public var stuck: Bool = false
    /// What the chat server called it (a Matrix event id).
    public var remoteID: String?
    public var created: Date
    public var updated: Date
    public var delivered: Date?
    /// The message as HTML (Matrix `formatted_body`), if it has one.
    public var html: String? = nil
    public var priority: OutboxPriority = .notice
    /// Its relations to other messages (reply, thread, edit, reaction, mentions).
    public var meta: OutboxMeta = OutboxMeta()

    /// The `vigil outbox --json` object.
    public var json: JSONValue {
        [
            "id": .int(id), "key": .string(key), "adapter": .string(adapter), "state": .string(state.rawValue),
            "attempts": .int(Int64(attempts)), "body": .string(body),
            "last_error": lastError.map { .string($0) } ?? .null,
            "remote_id": remoteID.map { .string($0) } ?? .null,
            "claimed_by": claimedBy.map { .string($0) } ?? .null, "stuck": .bool(stuck),
            "created": .string(Clock.iso(created)), "updated": .string(Clock.iso(updated)),
            "delivered": delivered.map { .string(Clock.iso($0)) } ?? .null,
            "next_attempt_in": nextAttempt.map { .double(max(0, ($0 - Clock.boot()).seconds)) } ?? .null,
            "priority": .string(priority.name), "html": html.map { .string($0) } ?? .null,
            "meta": meta.columnText.flatMap { JSONValue.parse(Data($0.utf8)) } ?? .null,
        ]
    }
}

/// The outbox: every message meant for a person, in the database, delivered by the bridge and,
/// while the bridge cannot, by the runner (`OutboxLifecycle.Role`).
///
/// Life of a row (`OutboxLifecycle`): `enqueue` (pending) → `claimNext` (sending, attempts + 1,
/// claimer and lease) → `markDelivered`, or `markRetry` (pending again, due after a backoff), or
/// `markFailed`. A sending row whose claimer is gone or whose lease ran out is taken over by the
/// next `claimNext`. Per adapter the messages go out in order of priority, then of age: only the
/// head (`head`) is ever claimed, so a message waiting for its retry holds back the ones after
/// it, and an alert goes before replies and notices queued earlier (docs/chat.md, "Priorities").
///
/// Every method is one short transaction on the given connection (`BEGIN IMMEDIATE` for
/// writes); durable when it returns. Use one `Outbox` per connection, one connection per thread.
public final class Outbox {
    public let db: Database

    public init(_ db: Database) {
        self.db = db
    }

    static let columns = "id, key, adapter, body, state, attempts, next_attempt, boot_id, last_error, claimed_by, remote_id, created_wall, updated_wall, delivered_wall, lease_until, stuck, html, priority, meta"

    /// Queues `body` for `adapter` under the idempotency key `key`. A second enqueue with the same
    /// (key, adapter) changes nothing and returns false. Durable when it returns.
    @discardableResult
    public func enqueue(key: String, adapter: String, body: String) throws -> Bool {
        try enqueue([OutboxItem(key: key, adapter: adapter, body: body)]) > 0
    }

    /// The one insert of the outbox, inside a write transaction the caller holds (another
    /// table's change and its message committed together). True when the message is new; a
    /// second insert with the same (key, adapter) changes nothing.
    @discardableResult
    package static func insertLocked(_ db: Database, _ item: OutboxItem) throws -> Bool {
        let now = Clock.wall().timeIntervalSince1970
        // An edit never goes before the message it edits: it is at most as urgent.
        var priority = item.priority.rawValue
        if let original = item.meta.replaces,
           let p = try db.scalarInt("SELECT priority FROM outbox WHERE key = ? AND adapter = ?", [.text(original), .text(item.adapter)]) {
            priority = max(priority, Int(p))
        }
        try db.execute("""
            INSERT INTO outbox (key, adapter, body, html, priority, meta, created_wall, updated_wall, boot_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key, adapter) DO NOTHING
            """, [.text(item.key), .text(item.adapter), .text(item.body), item.html.map { .text($0) } ?? .null,
                  .int(Int64(priority)), item.meta.columnText.map { .text($0) } ?? .null,
                  .double(now), .double(now), .text(Clock.bootID)])
        return db.changes > 0
    }

    /// Several messages in one transaction (a notification for every adapter, draining a spool
    /// or a memory backlog). Returns how many were new. Durable when it returns.
    @discardableResult
    public func enqueue(_ items: [OutboxItem]) throws -> Int {
        guard !items.isEmpty else { return 0 }
        return try db.write {
            var inserted = 0
            for item in items where try Outbox.insertLocked(db, item) { inserted += 1 }
            return inserted
        }
    }

    /// The newest `limit` messages (optionally of one state or adapter), oldest first.
    public func list(limit: Int, state: OutboxState? = nil, adapter: String? = nil) throws -> [OutboxMessage] {
        var conditions: [String] = []
        var params: [Database.Value] = []
        if let state { conditions.append("state = ?"); params.append(.text(state.rawValue)) }
        if let adapter { conditions.append("adapter = ?"); params.append(.text(adapter)) }
        let whereClause = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        params.append(.int(Int64(max(0, limit))))
        let rows = try db.query("SELECT \(Outbox.columns) FROM outbox \(whereClause) ORDER BY id DESC LIMIT ?", params)
        return rows.compactMap(Outbox.message).reversed()
    }

    public func message(id: Int64) throws -> OutboxMessage? {
        try db.query("SELECT \(Outbox.columns) FROM outbox WHERE id = ?", [.int(id)]).first.flatMap(Outbox.message)
    }

    public func message(key: String, adapter: String) throws -> OutboxMessage? {
        try db.query("SELECT \(Outbox.columns) FROM outbox WHERE key = ? AND adapter = ?", [.text(key), .text(adapter)])
            .first.flatMap(Outbox.message)
    }

    /// Messages by state; every state is present (0 when none); and `stuck`: unfinished ones
    /// still retrying after `max_attempts`.
    public func counts() throws -> [String: Int] {
        var out = Dictionary(uniqueKeysWithValues: OutboxState.allCases.map { ($0.rawValue, 0) })
        for row in try db.query("SELECT state, COUNT(*) FROM outbox GROUP BY state") {
            if let s = row[0].text, let n = row[1].int { out[s] = Int(n) }
        }
        out["stuck"] = Int(try db.scalarInt("SELECT COUNT(*) FROM outbox WHERE stuck = 1 AND state IN ('pending', 'sending')") ?? 0)
        return out
    }

    /// Messages by adapter and state (every state present for each adapter that has any), for
    /// the metrics (docs/operator-guide.md, "Probes and metrics").
    public func countsByAdapter() throws -> [String: [String: Int]] {
        var out: [String: [String: Int]] = [:]
        for row in try db.query("SELECT adapter, state, COUNT(*) FROM outbox GROUP BY adapter, state") {
            guard let a = row[0].text, let s = row[1].text, let n = row[2].int else { continue }
            if out[a] == nil { out[a] = Dictionary(uniqueKeysWithValues: OutboxState.allCases.map { ($0.rawValue, 0) }) }
            out[a]?[s] = Int(n)
        }
        return out
    }

    /// The most urgent, then oldest, unfinished (pending or sending) message of `adapter`: the
    /// only one that may go next. A `sending` row stays the head until it is settled (a claim is
    /// never overtaken, even by an alert queued after it).
    public func head(adapter: String) throws -> OutboxMessage? {
        try db.query("""
            SELECT \(Outbox.columns) FROM outbox WHERE adapter = ? AND state IN ('pending', 'sending')
            ORDER BY state = 'sending' DESC, priority, id LIMIT 1
            """, [.text(adapter)]).first.flatMap(Outbox.message)
    }

    public enum Claim: Equatable, Sendable {
        /// Nothing unfinished for this adapter.
        case empty
        /// The head is pending but its next attempt is later.
        case notDue(BootInstant)
        /// The head is being sent by a live claimer whose lease has not run out; look again by
        /// the lease's end.
        case inFlight(OutboxMessage)
        /// A standby deliverer is not needed for the head yet; look again after `wait`.
        case notNeeded(wait: TimeSpan?)
        /// Now `sending`, claimed by the caller; `attempts` already counts this attempt.
        /// `tookOver` when it was taken from a claimer that is gone or out of lease.
        case claimed(OutboxMessage, tookOver: Bool)
    }

    /// Claims the head of `adapter`'s queue when `OutboxLifecycle.decide` says so: pending (or a
    /// dead or out-of-lease claim) → sending, attempts + 1, `claimed_by = owner`, lease until
    /// `now + lease`. Looks first without a write lock (the common idle case takes no lock and
    /// writes nothing), then claims in one `BEGIN IMMEDIATE` transaction, deciding again there.
    public func claimNext(adapter: String, now: BootInstant, owner: String, lease: TimeSpan = .seconds(60),
                          role: OutboxLifecycle.Role = .primary, isGone: (String) -> Bool = { _ in false }) throws -> Claim {
        func decision(_ head: OutboxMessage) -> OutboxLifecycle.Decision {
            let facts = OutboxLifecycle.Head(sending: head.state == .sending, nextAttempt: head.nextAttempt, leaseUntil: head.leaseUntil,
                                             waited: .seconds(max(0, Clock.wall().timeIntervalSince(head.created))))
            let gone = head.state == .sending && (head.claimedBy.map(isGone) ?? true)
            return OutboxLifecycle.decide(facts, now: now, claimerGone: gone, role: role)
        }
        guard let peek = try head(adapter: adapter) else { return .empty }
        switch decision(peek) {
        case .notDue(let at): return .notDue(at)
        case .busy: return .inFlight(peek)
        case .notNeeded(let wait): return .notNeeded(wait: wait)
        case .claim, .takeOver: break
        }
        return try db.write {
            guard var head = try head(adapter: adapter) else { return .empty }
            let d = decision(head)
            switch d {
            case .notDue(let at): return .notDue(at)
            case .busy: return .inFlight(head)
            case .notNeeded(let wait): return .notNeeded(wait: wait)
            case .claim, .takeOver: break
            }
            let leaseEnd = now + lease
            try db.execute("""
                UPDATE outbox SET state = 'sending', attempts = attempts + 1, claimed_by = ?, lease_until = ?, boot_id = ?, updated_wall = ?
                WHERE id = ? AND state = ?
                """, [.text(owner), .int(leaseEnd.nanoseconds), .text(Clock.bootID), .double(Clock.wall().timeIntervalSince1970), .int(head.id),
                      .text(head.state.rawValue)])
            head.state = .sending
            head.attempts += 1
            head.claimedBy = owner
            head.leaseUntil = leaseEnd
            return .claimed(head, tookOver: d == .takeOver)
        }
    }

    /// Remembers that a row was reported stuck (so it is reported once).
    public func markStuck(id: Int64) throws {
        try db.write { try db.execute("UPDATE outbox SET stuck = 1 WHERE id = ?", [.int(id)]) }
    }

    /// The remote call succeeded. Only the claimer can mark (a released, re-claimed row is left
    /// to its new owner). Returns false when the row was not ours any more.
    @discardableResult
    public func markDelivered(id: Int64, owner: String, remoteID: String?) throws -> Bool {
        let now = Clock.wall().timeIntervalSince1970
        return try db.write {
            try db.execute("""
                UPDATE outbox SET state = 'delivered', remote_id = ?, last_error = NULL,
                    updated_wall = ?, delivered_wall = ?, delivered_age = ?
                WHERE id = ? AND state = 'sending' AND claimed_by = ?
                """, [remoteID.map { .text($0) } ?? .null, .double(now), .double(now), try Retention.stampLocked(db), .int(id), .text(owner)])
            return db.changes > 0
        }
    }

    /// The attempt failed in a way worth retrying: pending again, due at `at` (boot clock).
    @discardableResult
    public func markRetry(id: Int64, owner: String, error: String, at: BootInstant) throws -> Bool {
        try db.write {
            try db.execute("""
                UPDATE outbox SET state = 'pending', claimed_by = NULL, last_error = ?, next_attempt = ?, boot_id = ?,
                    updated_wall = ?
                WHERE id = ? AND state = 'sending' AND claimed_by = ?
                """, [.text(Outbox.clip(error)), .int(at.nanoseconds), .text(Clock.bootID),
                      .double(Clock.wall().timeIntervalSince1970), .int(id), .text(owner)])
            return db.changes > 0
        }
    }

    /// Given up on: refused by the server, or out of attempts. Stays visible as `failed`.
    @discardableResult
    public func markFailed(id: Int64, owner: String, error: String) throws -> Bool {
        try db.write {
            try db.execute("""
                UPDATE outbox SET state = 'failed', claimed_by = NULL, last_error = ?, updated_wall = ?
                WHERE id = ? AND state = 'sending' AND claimed_by = ?
                """, [.text(Outbox.clip(error)), .double(Clock.wall().timeIntervalSince1970), .int(id), .text(owner)])
            return db.changes > 0
        }
    }

    /// Puts messages whose sender is gone (`isGone(claimedBy)`) back to pending, due at once:
    /// deliveries in flight at a crash are retried. Returns how many.
    @discardableResult
    public func releaseInFlight(where isGone: (String) -> Bool) throws -> Int {
        try db.write {
            let rows = try db.query("SELECT id, claimed_by FROM outbox WHERE state = 'sending'")
            var released = 0
            for row in rows {
                guard let id = row[0].int else { continue }
                let owner = row[1].text ?? ""
                guard isGone(owner) else { continue }
                try db.execute("""
                    UPDATE outbox SET state = 'pending', claimed_by = NULL, next_attempt = 0,
                        last_error = COALESCE(last_error, 'interrupted: the sender stopped during delivery'), updated_wall = ?
                    WHERE id = ? AND state = 'sending'
                    """, [.double(Clock.wall().timeIntervalSince1970), .int(id)])
                released += db.changes
            }
            return released
        }
    }

    /// Failed messages (all, or one) back to pending with their attempts reset (an operator's
    /// retry). Returns how many.
    @discardableResult
    /// A retried row forgets the room it was queued for (`meta.room`): it goes to the room
    /// configured now (docs/chat.md, "Room problems").
    public func retryFailed(id: Int64? = nil) throws -> Int {
        try db.write {
            let rows = try db.query("SELECT id, meta FROM outbox WHERE state = 'failed'" + (id == nil ? "" : " AND id = ?"), id.map { [.int($0)] } ?? [])
            for row in rows {
                var meta = OutboxMeta.parse(row[1].text)
                guard meta.room != nil, let rid = row[0].int else { continue }
                meta.room = nil
                try db.execute("UPDATE outbox SET meta = ? WHERE id = ?", [meta.columnText.map { .text($0) } ?? .null, .int(rid)])
            }
            if let id {
                try db.execute("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt = 0, updated_wall = ? WHERE id = ? AND state = 'failed'",
                               [.double(Clock.wall().timeIntervalSince1970), .int(id)])
            } else {
                try db.execute("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt = 0, updated_wall = ? WHERE state = 'failed'",
                               [.double(Clock.wall().timeIntervalSince1970)])
            }
            return db.changes
        }
    }

    // Delivered messages are pruned by `Retention.prune` (aged by the retention clock).

    /// Error texts are kept short (they come from remote servers).
    static func clip(_ s: String) -> String {
        s.count <= 500 ? s : String(s.prefix(500)) + "…"
    }

    static func message(_ row: Database.Row) -> OutboxMessage? {
        guard row.count >= 19, let id = row[0].int, let key = row[1].text, let adapter = row[2].text,
              let body = row[3].text, let state = row[4].text.flatMap(OutboxState.init(rawValue:)) else { return nil }
        var next: BootInstant? = nil
        if state == .pending, let ns = row[6].int, ns > 0, row[7].text == Clock.bootID {
            next = BootInstant(nanoseconds: ns)
        }
        var lease: BootInstant? = nil
        if state == .sending, let ns = row[14].int, ns > 0, row[7].text == Clock.bootID {
            lease = BootInstant(nanoseconds: ns)
        }
        return OutboxMessage(
            id: id, key: key, adapter: adapter, body: body, state: state,
            attempts: Int(row[5].int ?? 0), nextAttempt: next, lastError: row[8].text, claimedBy: row[9].text,
            leaseUntil: lease, stuck: (row[15].int ?? 0) != 0, remoteID: row[10].text,
            created: Date(timeIntervalSince1970: row[11].double ?? 0),
            updated: Date(timeIntervalSince1970: row[12].double ?? 0),
            delivered: row[13].double.map { Date(timeIntervalSince1970: $0) },
            html: row[16].text, priority: row[17].int.flatMap { OutboxPriority(rawValue: Int($0)) } ?? .notice,
            meta: OutboxMeta.parse(row[18].text))
    }
}
