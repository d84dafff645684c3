import Foundation
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
public final class Notifier: @unchecked Sendable {
    public let stateDir: StateDirectory
    public let config: ChatConfig
    private let journal: Journal
    private let lock = NSLock()
    private var outbox: Outbox?
    private var memory: [NotificationSpool.Item] = []
    private var lastFailureJournaled: BootInstant?
    private var failuresSinceJournal = 0
    private let busyTimeout: TimeInterval

    /// Messages kept in memory at most (older ones are dropped, and that is journaled).
    public static let memoryLimit = 10_000

    public init(stateDir: StateDirectory, config: ChatConfig, journal: Journal, busyTimeout: TimeInterval = 0.25) {
        self.stateDir = stateDir
        self.config = config
        self.journal = journal
        self.busyTimeout = busyTimeout
    }

    /// Messages not in the outbox yet (memory backlog; the spool file is not counted).
    public var backlog: Int { lock.withLock { memory.count } }

    /// Queues `text` for every configured adapter under the idempotency key `key` (the same key
    /// twice is one message). The text is cleaned (control characters, length).
    public func notify(key: String, text: String) {
        let body = ChatText.clean(text, maxLength: config.maxMessageLength)
        let items = config.adapters.map { NotificationSpool.Item(key: key, adapter: $0, body: body) }
        lock.withLock { enqueueLocked(items) }
        ChatKick.poke(stateDir, journal: journal)
    }

    /// Moves the memory backlog and the spool file into the outbox, if the database can be
    /// written now. Cheap when there is nothing to do (a stat).
    public func retryPending() {
        let moved: Bool = lock.withLock {
            let hadMemory = !memory.isEmpty
            if hadMemory { enqueueLocked([]) }
            guard !NotificationSpool.isEmpty(stateDir), let outbox = openLocked() else { return hadMemory && memory.isEmpty }
            do {
                return try NotificationSpool.drain(into: outbox, dir: stateDir) > 0 || (hadMemory && memory.isEmpty)
            } catch {
                failedLocked("spool_drain", error)
                return false
            }
        }
        if moved { ChatKick.poke(stateDir, journal: journal) }
    }

    private func enqueueLocked(_ items: [NotificationSpool.Item]) {
        let all = memory + items
        guard !all.isEmpty else { return }
        if let outbox = openLocked() {
            do {
                try outbox.enqueue(all.map { ($0.key, $0.adapter, $0.body) })
                memory.removeAll()
                return
            } catch {
                failedLocked("outbox", error)
                if (error as? Database.Error)?.isCorrupt == true { self.outbox = nil }
            }
        }
        // The database is not writable now: the spool file keeps it across restarts.
        do {
            try NotificationSpool.append(all, dir: stateDir)
            memory.removeAll()
        } catch {
            failedLocked("spool", error)
            memory = all
            if memory.count > Notifier.memoryLimit {
                let dropped = memory.count - Notifier.memoryLimit
                memory.removeFirst(dropped)
                journal.append(.chatNotificationDropped, ["count": .int(Int64(dropped)), "reason": "memory backlog full"])
            }
        }
    }

    private func openLocked() -> Outbox? {
        if let outbox { return outbox }
        do {
            let db = try Database(path: stateDir.database, busyTimeout: busyTimeout)
            outbox = Outbox(db)
            return outbox
        } catch {
            failedLocked("open", error)
            return nil
        }
    }

    private func failedLocked(_ stage: String, _ error: any Error) {
        failuresSinceJournal += 1
        let now = Clock.boot()
        if let last = lastFailureJournaled, now - last < .seconds(30) { return }
        lastFailureJournaled = now
        journal.append(.chatQueueFailed, [
            "stage": .string(stage), "error": .string(ChatText.brief("\(error)", maxLength: 300)),
            "failures": .int(Int64(failuresSinceJournal)), "backlog": .int(Int64(memory.count)),
        ])
        failuresSinceJournal = 0
    }
}
