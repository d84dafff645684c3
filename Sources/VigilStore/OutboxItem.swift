import FoundationEssentials
import VigilCore

/// How urgent a message is. Per adapter the outbox sends the lowest value first, then the
/// oldest (docs/chat.md, "Priorities"): the circuit alert is not held behind replies and
/// notices when the chat server rate-limits the bot.
public enum OutboxPriority: Int, Sendable, Codable, Comparable, CaseIterable {
    /// Wakes a person: the circuit opened, a heal failed for good.
    case alert = 0
    /// The answer to a command someone just typed.
    case reply = 1
    /// Everything else: incidents as they go, missions, start-up.
    case notice = 2

    public static func < (a: OutboxPriority, b: OutboxPriority) -> Bool { a.rawValue < b.rawValue }

    public var name: String {
        switch self {
        case .alert: return "alert"
        case .reply: return "reply"
        case .notice: return "notice"
        }
    }
}

/// What a message is to the chat beyond its text (the `outbox.meta` column, JSON). Adapters
/// that cannot show a field ignore it (console and webhook get the plain body). The names are
/// those of the Matrix Client-Server API's relations (docs/chat.md, "Replies, threads, edits").
public struct OutboxMeta: Sendable, Equatable, Codable {
    /// The event this message answers (`m.in_reply_to`).
    public var replyTo: String?
    /// The thread it belongs to: the thread's root event (`m.thread`).
    public var thread: String?
    /// An edit: this message replaces the one queued under this key for the same adapter
    /// (`m.replace`). Sent as a new message when that one was never delivered.
    public var replaces: String?
    /// A reaction (`m.annotation`) with this key (an emoji) to the event `replyTo`; the body
    /// is then only what the journal and `vigil outbox` show.
    public var reaction: String?
    /// Users the message mentions (`m.mentions.user_ids`): they are notified.
    public var mentions: [String]?
    /// The room the message was queued for, when it was queued with one in mind (a reply goes
    /// to the room the command came from).
    public var room: String?

    public init(replyTo: String? = nil, thread: String? = nil, replaces: String? = nil, reaction: String? = nil,
                mentions: [String]? = nil, room: String? = nil) {
        self.replyTo = replyTo
        self.thread = thread
        self.replaces = replaces
        self.reaction = reaction
        self.mentions = mentions
        self.room = room
    }

    public var isEmpty: Bool { self == OutboxMeta() }

    enum CodingKeys: String, CodingKey {
        case replyTo = "reply_to", thread, replaces, reaction, mentions, room
    }

    /// The column's text: nil when there is nothing to say.
    public var columnText: String? {
        guard !isEmpty, let data = try? JSONEncoder().encode(self) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// Reads the column; an unreadable value is treated as empty (the message still goes, as
    /// plain text).
    public static func parse(_ text: String?) -> OutboxMeta {
        guard let text, let m = try? JSONDecoder().decode(OutboxMeta.self, from: Data(text.utf8)) else { return OutboxMeta() }
        return m
    }
}

/// One message to queue for one adapter: what `Outbox.enqueue` stores.
public struct OutboxItem: Sendable, Equatable {
    /// The idempotency key (unique per adapter).
    public var key: String
    public var adapter: String
    /// Plain text: what every adapter can show.
    public var body: String
    /// The same message as HTML (Matrix `formatted_body`); nil for plain only.
    public var html: String?
    public var priority: OutboxPriority
    public var meta: OutboxMeta

    public init(key: String, adapter: String, body: String, html: String? = nil, priority: OutboxPriority = .notice,
                meta: OutboxMeta = OutboxMeta()) {
        self.key = key
        self.adapter = adapter
        self.body = body
        self.html = html
        self.priority = priority
        self.meta = meta
    }
}
