import VigilStore

/// A message for people before it is queued: the plain text every adapter shows, and what only
/// Matrix can show (HTML, relations). `Notifier.notify` turns it into one `OutboxItem` per
/// configured adapter (docs/chat.md, "Replies, threads, edits").
public struct ChatNotice: Sendable, Equatable {
    /// The idempotency key: the same key twice is one message.
    public var key: String
    public var text: String
    /// The same message as HTML, for adapters that show it (Matrix). When nil, or longer than
    /// four times the message size, Matrix gets `ChatHTML.render` of the text: every Matrix
    /// message has a `formatted_body`.
    public var html: String?
    public var priority: OutboxPriority
    /// Relations (reply, thread, edit, reaction, mentions): kept for adapters that have them.
    public var meta: OutboxMeta
    /// Only these adapters (nil: every configured one).
    public var adapters: Set<String>?

    public init(key: String, text: String, html: String? = nil, priority: OutboxPriority = .notice, meta: OutboxMeta = OutboxMeta(),
                adapters: Set<String>? = nil) {
        self.key = key
        self.text = text
        self.html = html
        self.priority = priority
        self.meta = meta
        self.adapters = adapters
    }

    /// Adapters that show HTML and relations. The others (console, webhook) get the plain text
    /// as a new line; a reaction is not sent to them at all.
    public static func hasRelations(_ adapter: String) -> Bool { adapter == "matrix" }

    /// The row for `adapter`, or nil when this message is not for it.
    public func item(for adapter: String, maxLength: Int) -> OutboxItem? {
        if let adapters, !adapters.contains(adapter) { return nil }
        let rich = ChatNotice.hasRelations(adapter)
        if meta.reaction != nil && !rich { return nil }
        let body = ChatText.clean(text, maxLength: maxLength)
        let html = rich && meta.reaction == nil ? ChatNotice.html(self.html, body: body, maxLength: maxLength) : nil
        return OutboxItem(key: key, adapter: adapter, body: body, html: html, priority: priority, meta: rich ? meta : OutboxMeta())
    }

    /// The HTML a Matrix row gets: the producer's (when it fits in four message sizes), else
    /// the rendered plain body. Never nil (docs/chat.md, "HTML").
    public static func html(_ given: String?, body: String, maxLength: Int) -> String {
        if let given, given.utf8.count <= 4 * maxLength { return given }
        return ChatHTML.render(body)
    }
}
