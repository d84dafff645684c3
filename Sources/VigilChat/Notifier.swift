import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// Queues messages for people: used by the runner, the bridge and the CLI. `notify` puts one
/// outbox row per configured adapter (idempotent by key) and wakes the bridge.
///
/// It never throws and never waits long: when the database cannot be written (locked beyond a
/// short busy timeout, corrupt, disk full), the message goes to the spool file
/// (`<state>/chat/spool.jsonl`, fsync'd), or when even that fails, to a bounded memory backlog;
/// `retryPending()` (call it every tick) moves both into the outbox as soon as it can. Failures
/// are journaled, at most once per 30 s.
/// Sendable: what changes (the outbox connection, the memory backlog, the failure counts) is
/// behind one `Mutex`; the rest is constant.
public final class Notifier: Sendable {
    public let stateDir: StateDirectory
    public let config: ChatConfig
    private let journal: Journal
    private let state = Mutex(State())
    private let busyTimeout: TimeInterval

    /// Only under `state`'s lock. The outbox's connection is used by whichever thread holds it.
    private struct State {
        var outbox: Outbox?
        var memory: [NotificationSpool.Item] = []
        var lastFailureJournaled: BootInstant?
        var failuresSinceJournal = 0
    }

    /// Messages kept in memory at most (older ones are dropped, and that is journaled).
    public static let memoryLimit = 10_000

    public init(stateDir: StateDirectory, config: ChatConfig, journal: Journal, busyTimeout: TimeInterval = 0.25) {
        self.stateDir = stateDir
        self.config = config
        self.journal = journal
        self.busyTimeout = busyTimeout
    }

    /// Messages not in the outbox yet (memory backlog; the spool file is not counted).
    public var backlog: Int { state.withLock { $0.memory.count } }

    /// Queues `text` for every configured adapter under the idempotency key `key` (the same key
    /// twice is one message). The text is cleaned (control characters, length).
    public func notify(key: String, text: String, priority: OutboxPriority = .notice) {
        notify(ChatNotice(key: key, text: text, priority: priority))
    }

    /// Queues `notice` for every configured adapter it is for (`notice.adapters`, or all), each
    /// with the form that adapter gets (`ChatNotice.item`). Text and HTML are cleaned.
    public func notify(_ notice: ChatNotice) {
        var items = config.adapters.compactMap { notice.item(for: $0, maxLength: config.maxMessageLength) }
        // A Matrix row remembers the room it was queued for: when the configured room changes
        // before it is sent, it is not sent to the new room silently (docs/chat.md, "Room problems").
        for i in items.indices where items[i].adapter == "matrix" && items[i].meta.room == nil { items[i].meta.room = config.matrix?.room }
        guard !items.isEmpty else { return }
        state.withLock { enqueueLocked(&$0, items) }
        ChatKick.poke(stateDir, journal: journal)
    }

    /// Moves the memory backlog and the spool file into the outbox, if the database can be
    /// written now. Cheap when there is nothing to do (a stat).
    public func retryPending() {
        let moved: Bool = state.withLock { s in
            let hadMemory = !s.memory.isEmpty
            if hadMemory { enqueueLocked(&s, []) }
            guard !NotificationSpool.isEmpty(stateDir), let outbox = openLocked(&s) else { return hadMemory && s.memory.isEmpty }
            do {
                return try NotificationSpool.drain(into: outbox, dir: stateDir) > 0 || (hadMemory && s.memory.isEmpty)
            } catch {
                failedLocked(&s, "spool_drain", error)
                return false
            }
        }
        if moved { ChatKick.poke(stateDir, journal: journal) }
    }

    private func enqueueLocked(_ s: inout State, _ items: [NotificationSpool.Item]) {
        let all = s.memory + items
        guard !all.isEmpty else { return }
        if let outbox = openLocked(&s) {
            do {
                try outbox.enqueue(all)
                s.memory.removeAll()
                return
            } catch {
                failedLocked(&s, "outbox", error)
                if (error as? Database.Error)?.isCorrupt == true { s.outbox = nil }
            }
        }
        // The database is not writable now: the spool file keeps it across restarts.
        do {
            try NotificationSpool.append(all, dir: stateDir)
            s.memory.removeAll()
        } catch {
            failedLocked(&s, "spool", error)
            s.memory = all
            if s.memory.count > Notifier.memoryLimit {
                let dropped = s.memory.count - Notifier.memoryLimit
                s.memory.removeFirst(dropped)
                journal.append(.chatNotificationDropped, ["count": .int(Int64(dropped)), "reason": "memory backlog full"])
            }
        }
    }

    private func openLocked(_ s: inout State) -> Outbox? {
        if let outbox = s.outbox { return outbox }
        do {
            let db = try Database(path: stateDir.database, busyTimeout: busyTimeout)
            s.outbox = Outbox(db)
            return s.outbox
        } catch {
            failedLocked(&s, "open", error)
            return nil
        }
    }

    private func failedLocked(_ s: inout State, _ stage: String, _ error: any Error) {
        s.failuresSinceJournal += 1
        let now = Clock.boot()
        if let last = s.lastFailureJournaled, now - last < .seconds(30) { return }
        s.lastFailureJournaled = now
        journal.append(.chatQueueFailed, [
            "stage": .string(stage), "error": .string(ChatText.brief("\(error)", maxLength: 300)),
            "failures": .int(Int64(s.failuresSinceJournal)), "backlog": .int(Int64(s.memory.count)),
        ])
        s.failuresSinceJournal = 0
    }
}
