import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// One command waiting for (or handled by) the bridge.
public struct InboxCommand: Sendable, Equatable {
    public var id: Int64
    /// The adapter it came from; the reply goes back there.
    public var adapter: String
    public var sender: String
    public var body: String
    public var state: String
    /// When it was said (wall clock, seconds since 1970): the chat server's timestamp of the
    /// message, or the enqueue time for `vigil say`. Commands too old are not run.
    public var saidWall: Double = 0
    /// The chat server's id of the message (a Matrix event id); nil for `vigil say`.
    public var originID: String? = nil
    public var meta: InboxMeta = InboxMeta()
}

/// Where a command came from beyond its text (the `chat_inbox.meta` column, JSON), so its
/// reply can answer it in place (docs/chat.md, "Replies, threads, edits").
public struct InboxMeta: Sendable, Equatable, Codable {
    /// The root of the thread it was said in (Matrix `m.thread`).
    public var thread: String?
    /// The room it was said in.
    public var room: String?

    public init(thread: String? = nil, room: String? = nil) {
        self.thread = thread
        self.room = room
    }

    public var columnText: String? {
        guard self != InboxMeta(), let data = try? JSONEncoder().encode(self) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    public static func parse(_ text: String?) -> InboxMeta {
        guard let text, let m = try? JSONDecoder().decode(InboxMeta.self, from: Data(text.utf8)) else { return InboxMeta() }
        return m
    }
}

/// Commands on their way to the bridge (`chat_inbox`), and the adapters' small persistent
/// values (`chat_state`). `vigil say` and the Matrix poller add; the bridge's pump takes them
/// one by one: new → handling (committed before the handler runs) → done, or → expired when
/// it was said longer ago than `command_max_age` (answered, not run). A command found
/// `handling` after a crash is not run again (it may have had effects): it is marked
/// `interrupted` and the sender is told.
public final class ChatInbox {
    public let db: Database

    public init(_ db: Database) { self.db = db }

    /// Adds a command. `originID` (e.g. a Matrix event id) makes it idempotent; `saidWall` is
    /// when it was said (default: now). Returns the row id, or nil when it was already there.
    @discardableResult
    public func add(adapter: String, sender: String, body: String, originID: String? = nil, saidWall: Double? = nil,
                    meta: InboxMeta = InboxMeta()) throws -> Int64? {
        try db.write { try addInTransaction(adapter: adapter, sender: sender, body: body, originID: originID, saidWall: saidWall, meta: meta) }
    }

    /// For callers that batch several adds with a state update in one transaction.
    func addInTransaction(adapter: String, sender: String, body: String, originID: String?, saidWall: Double? = nil,
                          state: String = "new", meta: InboxMeta = InboxMeta()) throws -> Int64? {
        try db.execute("""
            INSERT INTO chat_inbox (adapter, sender, body, origin_id, state, created_wall, origin_wall, meta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (adapter, origin_id) DO NOTHING
            """, [.text(adapter), .text(sender), .text(body), originID.map { .text($0) } ?? .null, .text(state),
                  .double(Clock.wall().timeIntervalSince1970), saidWall.map { .double($0) } ?? .null, meta.columnText.map { .text($0) } ?? .null])
        return db.changes > 0 ? db.lastInsertRowID : nil
    }

    /// Whether a command with this origin id (e.g. a Matrix event id) was ever added.
    func contains(adapter: String, originID: String) throws -> Bool {
        try db.scalarInt("SELECT EXISTS (SELECT 1 FROM chat_inbox WHERE adapter = ? AND origin_id = ?)", [.text(adapter), .text(originID)]) == 1
    }

    /// Takes the oldest new command: new → handling, stamped with `handler` (who runs it). One
    /// transaction. With `accepting`, only a command it says yes to (among the oldest 64 new
    /// ones) is taken, the rest stay new for another handler (the runner takes only what it can
    /// answer while the bridge is down).
    public func takeNext(handler: String? = nil, accepting: ((InboxCommand) -> Bool)? = nil) throws -> InboxCommand? {
        func candidates() throws -> [InboxCommand] {
            try db.query("""
                SELECT id, adapter, sender, body, COALESCE(origin_wall, created_wall), origin_id, meta FROM chat_inbox
                WHERE state = 'new' ORDER BY id LIMIT ?
                """, [.int(accepting == nil ? 1 : 64)]).compactMap { row in
                guard let id = row[0].int else { return nil }
                let cmd = InboxCommand(id: id, adapter: row[1].text ?? "", sender: row[2].text ?? "", body: row[3].text ?? "", state: "handling",
                                       saidWall: row[4].double ?? 0, originID: row[5].text, meta: InboxMeta.parse(row[6].text))
                return accepting.map { $0(cmd) } ?? true ? cmd : nil
            }
        }
        // Look first without the write lock: a standby that takes nothing (the usual case while
        // it stands in) then writes nothing on its tick.
        guard try !candidates().isEmpty else { return nil }
        return try db.write {
            guard let cmd = try candidates().first else { return nil }
            try db.execute("UPDATE chat_inbox SET state = 'handling', handler = ? WHERE id = ? AND state = 'new'",
                           [handler.map { .text($0) } ?? .null, .int(cmd.id)])
            return cmd
        }
    }

    /// Whether any command is waiting (cheap: an index lookup).
    public func hasNew() throws -> Bool {
        try db.scalarInt("SELECT EXISTS (SELECT 1 FROM chat_inbox WHERE state = 'new')") == 1
    }

    /// Marks a taken command finished and queues its reply in the same transaction.
    public func finish(_ id: Int64, state: String = "done", reply: OutboxItem?) throws {
        try finish(id, state: state, replies: reply.map { [$0] } ?? [])
    }

    /// `finish` with more than the reply (its reactions); the first item is the reply.
    public func finish(_ id: Int64, state: String = "done", replies: [OutboxItem]) throws {
        let now = Clock.wall().timeIntervalSince1970
        try db.write {
            for r in replies { try Outbox.insertLocked(db, r) }
            try db.execute("UPDATE chat_inbox SET state = ?, reply_key = ?, handled_wall = ?, handled_age = ? WHERE id = ?",
                           [.text(state), replies.first.map { .text($0.key) } ?? .null, .double(now), try Retention.stampLocked(db), .int(id)])
        }
    }

    /// Commands left `handling` by a handler that is gone (`isGone(handler)`; a row without a
    /// handler is from an older Vigil and counts as gone): marked interrupted. Returns them.
    public func interruptHandling(where isGone: (String) -> Bool = { _ in true }) throws -> [InboxCommand] {
        try db.write {
            let rows = try db.query("SELECT id, adapter, sender, body, handler, origin_id, meta FROM chat_inbox WHERE state = 'handling' ORDER BY id")
            var out: [InboxCommand] = []
            for row in rows {
                guard let id = row[0].int, row[4].text.map(isGone) ?? true else { continue }
                try db.execute("UPDATE chat_inbox SET state = 'interrupted', handled_wall = ?, handled_age = ? WHERE id = ? AND state = 'handling'",
                               [.double(Clock.wall().timeIntervalSince1970), try Retention.stampLocked(db), .int(id)])
                out.append(InboxCommand(id: id, adapter: row[1].text ?? "", sender: row[2].text ?? "", body: row[3].text ?? "", state: "interrupted",
                                        originID: row[5].text, meta: InboxMeta.parse(row[6].text)))
            }
            return out
        }
    }

    public func command(id: Int64) throws -> InboxCommand? {
        try db.query("SELECT id, adapter, sender, body, state, COALESCE(origin_wall, created_wall), origin_id, meta FROM chat_inbox WHERE id = ?",
                     [.int(id)]).first.map {
            InboxCommand(id: $0[0].int ?? 0, adapter: $0[1].text ?? "", sender: $0[2].text ?? "", body: $0[3].text ?? "", state: $0[4].text ?? "",
                         saidWall: $0[5].double ?? 0, originID: $0[6].text, meta: InboxMeta.parse($0[7].text))
        }
    }

    // MARK: - chat_state

    /// A random id made once per database: scopes Matrix transaction ids, so a new state
    /// directory never collides with transaction ids the homeserver remembers from an old one.
    public func instanceID() throws -> String {
        if let v = try value("outbox.instance") { return v }
        try db.write {
            try db.execute("INSERT INTO chat_state (name, value, updated_wall) VALUES ('outbox.instance', ?, ?) ON CONFLICT (name) DO NOTHING",
                           [.text(String(UInt64.random(in: 0...UInt64.max), radix: 36)), .double(Clock.wall().timeIntervalSince1970)])
        }
        return try value("outbox.instance") ?? ""
    }

    public func value(_ name: String) throws -> String? {
        try db.scalarString("SELECT value FROM chat_state WHERE name = ?", [.text(name)])
    }

    public func setValue(_ name: String, _ value: String?) throws {
        try db.write { try setValueInTransaction(name, value) }
    }

    func setValueInTransaction(_ name: String, _ value: String?) throws {
        if let value {
            try db.execute("""
                INSERT INTO chat_state (name, value, updated_wall) VALUES (?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_wall = excluded.updated_wall
                """, [.text(name), .text(value), .double(Clock.wall().timeIntervalSince1970)])
        } else {
            try db.execute("DELETE FROM chat_state WHERE name = ?", [.text(name)])
        }
    }
}
