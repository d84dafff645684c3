import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// Chat in the bridge: delivers the outbox to every configured adapter and turns commands from
/// chat (and `vigil say`) into calls of the bridge's `ChatCommandHandler`.
///
/// The bridge calls `pump(now:)` on every turn of its main loop and polls `wakeDescriptors`.
/// `pump` never touches the network: each adapter delivers on its own thread (and Matrix
/// commands arrive on a /sync thread), so a dead or slow chat server cannot stall the loop or
/// its heartbeat. `pump` does only short database work with a 50 ms busy timeout, and runs the
/// handler for waiting commands.
///
/// The runner runs one too, in `standby` mode (docs/chat.md, "Delivery"): its workers deliver
/// only while the bridge cannot (not healthy, circuit open) or a message has waited too long; its
/// Matrix poller syncs only while the bridge cannot; it takes only the commands it can answer
/// itself (`/heal reset`, `/status`) and leaves the rest for the bridge.
///
/// - Important: create one per process; call `pump`, `shutdown` and the handler from the
///   owner's loop thread only.
///
/// Not Sendable: it belongs to the owner's loop thread (the compiler keeps it there). The
/// workers reach back only through `ChatStatusWriter` (Sendable, its own lock).
public final class ChatService {
    /// Who runs this service.
    public enum Mode: Sendable {
        /// The bridge: delivers everything, takes every command.
        case primary
        /// The runner standing in for the bridge. `role` is asked before every claim (and tells
        /// whether the runner is needed now); only commands `accepts` says yes to are taken.
        case standby(role: @Sendable () -> OutboxLifecycle.Role, accepts: @Sendable (ChatCommand) -> Bool)

        var role: @Sendable () -> OutboxLifecycle.Role {
            switch self {
            case .primary: return { .primary }
            case .standby(let role, _): return role
            }
        }
    }

    public let mode: Mode
    public let stateDir: StateDirectory
    public let config: ChatConfig
    private let journal: Journal
    private let handler: any ChatCommandHandler
    /// `pid:start_ticks:instance`: stamps the outbox rows this service is sending.
    public let owner: String
    private let instance: String
    private var workers: [String: DeliveryWorker] = [:]
    private var poller: MatrixPoller?
    private var started = false
    private var recovered = false
    private var lastRecoveryAttempt: BootInstant?
    private var stopped = false
    private var db: Database?
    private var lastOpenAttempt: BootInstant?
    private var openFailures = RepeatLimiter()
    private var lastSpoolCheck: BootInstant?
    private var lastPrune: BootInstant?
    private var replyBacklog: [(inboxID: Int64, replies: [OutboxItem], state: String)] = []
    private var moreCommands = false
    private let wake: WakePipe
    private let inotify: Inotify?
    private let statusWriter: ChatStatusWriter

    /// Commands handled per pump at most (the rest wait for the next turn, which `nextWake` asks for at once).
    static let commandsPerPump = 8

    public init(stateDir: StateDirectory, config: ChatConfig, journal: Journal, handler: any ChatCommandHandler,
                mode: Mode = .primary) throws {
        self.mode = mode
        self.stateDir = stateDir
        self.config = config
        self.journal = journal
        self.handler = handler
        try stateDir.makeDirectory(stateDir.chatDirectory)
        instance = String(UInt64.random(in: 0...UInt64.max), radix: 36)
        let me = ProcessIdentity.current
        owner = "\(me.pid):\(me.startTicks):\(instance)"
        wake = try WakePipe()
        let ino = try? Inotify()
        if let ino { try? ino.watch(directory: stateDir.chatDirectory) }
        inotify = ino

        statusWriter = ChatStatusWriter(stateDir: stateDir, adapters: config.adapters, isPrimary: { if case .primary = mode { return true } else { return false } }())
        let wakePipe = wake
        let wakeUp: @Sendable () -> Void = { wakePipe.wake() }
        var matrixSession: MatrixSession?
        if config.adapters.contains("matrix"), let m = config.matrix {
            matrixSession = try MatrixSession(m, onProblemChange: { [statusWriter] in statusWriter.write() })
        }
        let dir = stateDir
        let ownerName = owner
        for name in config.adapters {
            let adapter: any ChatAdapter
            switch name {
            case "console": adapter = ConsoleAdapter(stateDir: stateDir)
            case "webhook":
                guard let w = config.webhook else { throw ChatConfigError(message: "chat adapter \"webhook\" needs a \"webhook\" object") }
                adapter = try WebhookAdapter(w)
            case "matrix":
                guard let s = matrixSession else { throw ChatConfigError(message: "chat adapter \"matrix\" needs a \"matrix\" object") }
                let inboxBox = ThreadInbox(dir)
                adapter = MatrixAdapter(session: s, inbox: { inboxBox.get() })
            default:
                throw ChatConfigError(message: "unknown chat adapter \(name.debugDescription)")
            }
            workers[name] = try DeliveryWorker(adapter: adapter, stateDir: stateDir, config: config, journal: journal, owner: ownerName,
                                               isGone: ChatService.isGone, onCircuitChange: { [statusWriter] in statusWriter.write() },
                                               role: mode.role)
        }
        statusWriter.set(workers)
        if let s = matrixSession {
            var paused: (@Sendable () -> Bool)? = nil
            if case .standby(let role, _) = mode { paused = { !ChatService.needed(role()) } }
            poller = MatrixPoller(session: s, stateDir: stateDir, journal: journal, paused: paused, onCommand: wakeUp)
        }
        ChatService.liveInstances.withLock { _ = $0.insert(instance) }
    }

    deinit {
        if !stopped { shutdown(deadline: Clock.boot()) }
        ChatService.liveInstances.withLock { _ = $0.remove(instance) }
    }

    // MARK: - The seam

    /// Descriptors the bridge's loop should poll: readable when a command arrived or something
    /// was queued, so the loop turns (and calls `pump`) at once.
    public var wakeDescriptors: [Int32] { [wake.readFD] + (inotify.map { [$0.fd] } ?? []) }

    /// When `pump` wants to run again even if nothing wakes the loop (nil: no wish).
    public var nextWake: BootInstant? {
        if moreCommands || !replyBacklog.isEmpty { return Clock.boot() + .milliseconds(20) }
        if db == nil && started { return Clock.boot() + .seconds(1) }
        if !NotificationSpool.isEmpty(stateDir) { return Clock.boot() + .milliseconds(500) }
        return nil
    }

    /// One turn: start the workers (first call), take queued commands and run them, queue their
    /// replies. Returns within a few tens of milliseconds whatever the network does (the
    /// handler's own time aside). In standby mode it does nothing but drain its wake-ups while
    /// the bridge can deliver.
    public func pump(now: BootInstant) {
        guard !stopped else { return }
        drainWakeups()
        if !started { startUp() }
        var accepts: (@Sendable (ChatCommand) -> Bool)? = nil
        if case .standby(let role, let a) = mode {
            guard ChatService.needed(role()) else { return }
            accepts = a
        }
        guard let db = openDatabase(now) else { return }
        if !recovered, lastRecoveryAttempt.map({ now - $0 >= .seconds(5) }) ?? true { recover(db) }
        let inbox = ChatInbox(db)
        flushReplyBacklog(inbox)
        answerRestart(inbox)
        if lastSpoolCheck.map({ now - $0 >= .milliseconds(500) }) ?? true {
            lastSpoolCheck = now
            if !NotificationSpool.isEmpty(stateDir), (try? NotificationSpool.drain(into: Outbox(db), dir: stateDir)) ?? 0 > 0 {
                nudgeAll()
            }
        }
        if lastPrune.map({ now - $0 >= .seconds(3600) }) ?? true {
            lastPrune = now
            prune(db)
        }
        let turnEnd = Clock.boot() + .milliseconds(30)
        moreCommands = false
        for i in 0..<ChatService.commandsPerPump {
            if i > 0 && Clock.boot() > turnEnd { moreCommands = true; break }
            do {
                let filter: ((InboxCommand) -> Bool)? = accepts.map { accepts in
                    { [self] cmd in isAllowed(cmd) && ChatService.parse(cmd).map(accepts) == true }
                }
                guard let cmd = try inbox.takeNext(handler: owner, accepting: filter) else { break }
                handle(cmd, inbox: inbox)
                if i == ChatService.commandsPerPump - 1 && accepts == nil { moreCommands = (try? inbox.hasNew()) ?? true }
            } catch {
                moreCommands = true
                break
            }
        }
    }

    /// Best-effort flush on SIGTERM: stops taking commands, lets each adapter deliver what is due
    /// until `deadline`, then cancels calls in flight (their messages stay pending for the next
    /// bridge). Returns by about the deadline.
    public func shutdown(deadline: BootInstant) {
        guard !stopped else { return }
        stopped = true
        poller?.stop()
        for w in workers.values { w.beginShutdown(deadline: deadline) }
        if started {
            for w in workers.values where !w.join(until: deadline) {
                w.stopNow()
                _ = w.join(until: Clock.boot() + .milliseconds(500))
            }
            _ = poller?.join(until: max(deadline, Clock.boot() + .milliseconds(200)))
        }
        if let db, !replyBacklog.isEmpty { flushReplyBacklog(ChatInbox(db)) }
        writeStatusFile()
    }

    // MARK: - Status

    /// Each adapter's circuit and counters.
    public var adapterStatus: [ChatAdapterStatus] { statusWriter.status }

    /// The last /sync failure of the Matrix poller, if it is failing.
    public var matrixSyncError: String? { poller?.lastError }

    /// `<state>/chat/status.json` (a state file, kind `chat-status`): adapter circuits, for
    /// `vigil status` and `vigil doctor`. Written when a circuit changes and at shutdown.
    public static func readStatus(_ dir: StateDirectory) -> [ChatAdapterStatus]? {
        if case .ok(let adapters) = readStatusFile(dir) { return adapters }
        return nil
    }

    /// The path of the chat status file.

    /// `readStatus` that tells absent and corrupt apart (read-only; nothing is quarantined).
    public static func readStatusFile(_ dir: StateDirectory) -> StateFile.Read<[ChatAdapterStatus]> {
        switch StateFile.read(dir.chatStatus, kind: "chat-status", as: StatusFile.self) {
        case .absent: return .absent
        case .ok(let s): return .ok(s.adapters)
        case .corrupt(let why): return .corrupt(why)
        }
    }

    struct StatusFile: Codable, Sendable {
        var adapters: [ChatAdapterStatus]
        var pid: Int32
    }

    private func writeStatusFile() { statusWriter.write() }

    // MARK: - Inside

    /// Owners (`pid:start:instance`) of live services in this process.
    static let liveInstances = Mutex<Set<String>>([])

    /// Whether the claimer named by `owner` can no longer be sending: its process is gone, or it
    /// is an instance in this process that was shut down.
    public static func isGone(_ owner: String) -> Bool {
        let parts = owner.split(separator: ":")
        guard parts.count == 3, let pid = Int32(parts[0]), let start = UInt64(parts[1]) else { return true }
        let me = ProcessIdentity.current
        if pid == me.pid && start == me.startTicks {
            return !liveInstances.withLock { $0.contains(String(parts[2])) }
        }
        return ProcessIdentity(pid: pid, startTicks: start).liveness() == .gone
    }

    private func startUp() {
        started = true
        if case .standby = mode {
            recovered = true // the bridge's start-up recovery; a standby takes over rows as it needs them
        } else if let db = openDatabase(Clock.boot()) {
            recover(db)
        }
        for name in config.adapters { workers[name]?.start() }
        poller?.start()
        writeStatusFile()
    }

    /// Start-up recovery, once the database can be read: messages in flight when the last
    /// bridge died go back to pending; commands it was running are marked interrupted.
    private func recover(_ db: Database) {
        lastRecoveryAttempt = Clock.boot()
        do {
            let released = try Outbox(db).releaseInFlight(where: ChatService.isGone)
            if released > 0 { journal.append(.chatRedeliver, ["count": .int(Int64(released)), "reason": "in flight when the last bridge stopped"]) }
            let inbox = ChatInbox(db)
            for cmd in try inbox.interruptHandling(where: ChatService.isGone) {
                journal.append(.chatCommandInterrupted, ["adapter": .string(cmd.adapter), "sender": .string(ChatText.brief(cmd.sender, maxLength: 100)),
                                                            "text": .string(ChatText.brief(cmd.body, maxLength: 100))])
                let reply = "Your command \"\(ChatText.brief(cmd.body, maxLength: 80))\" was interrupted by a bridge restart; it may or may not have taken effect. Check /status or /missions."
                queueReply(inbox, cmd, body: reply, state: "interrupted")
            }
            recovered = true
        } catch {
            journal.append(.chatRecoveryFailed, ["error": .string(ChatText.brief("\(error)", maxLength: 300))])
        }
    }

    private func openDatabase(_ now: BootInstant) -> Database? {
        if let db { return db }
        if let last = lastOpenAttempt, now - last < .seconds(1) { return nil }
        lastOpenAttempt = now
        do {
            db = try Database(path: stateDir.database, busyTimeout: 0.05)
            if let report = openFailures.success(now: now) {
                journal.append(.chatOutboxAvailable, ["stage": "bridge"].merging(report.fields) { a, _ in a })
            }
        } catch {
            // Tried every second; journaled at once, then at most once a minute with the count.
            if let report = openFailures.failure(now: now) {
                journal.append(.chatOutboxUnavailable, ["stage": "bridge", "error": .string(ChatText.brief("\(error)", maxLength: 300))]
                    .merging(report.fields) { a, _ in a })
            }
        }
        return db
    }

    /// Delivered messages and handled commands older than `Retention.period` on the retention
    /// clock (docs/architecture.md, "Retention clock": a wall-clock jump prunes nothing early).
    private func prune(_ db: Database) {
        _ = try? Retention.prune(db)
    }

    /// A command's text as a command (`vigil say status` may leave out the slash).
    static func parse(_ cmd: InboxCommand) -> ChatCommand? {
        if let c = ChatCommand.parse(cmd.body) { return c }
        return cmd.adapter == "console" ? ChatCommand.parse("/" + cmd.body) : nil
    }

    /// Whether a standby deliverer is needed now (the bridge cannot deliver or take commands).
    static func needed(_ role: OutboxLifecycle.Role) -> Bool {
        if case .standby(let active, _) = role { return active }
        return true
    }

    private func drainWakeups() {
        wake.drain()
        // A kick in chat/ (something was queued by another process): the workers look now.
        // One inotify instance per service, not one per worker: each costs ~5 ms at process
        // exit, which a killed bridge's replacement waits for (docs/architecture.md).
        if let events = inotify?.drain(), !events.isEmpty { nudgeAll() }
    }

    private func nudgeAll() { for w in workers.values { w.nudge() } }

    /// Makes every delivery worker look at its queue now (a standby that just became needed).
    public func wakeWorkers() { nudgeAll() }

    private func isAllowed(_ cmd: InboxCommand) -> Bool {
        switch cmd.adapter {
        case "console": return true // `vigil say`: the local operator
        case "matrix": return (config.matrix?.role(of: cmd.sender) ?? .stranger) != .stranger
        default: return false
        }
    }

    private func handle(_ cmd: InboxCommand, inbox: ChatInbox) {
        guard isAllowed(cmd) else {
            journal.append(.chatIgnored, ["adapter": .string(cmd.adapter), "sender": .string(ChatText.brief(cmd.sender, maxLength: 100)),
                                            "text": .string(ChatText.brief(cmd.body, maxLength: 100)), "reason": "sender not on the allow-list"])
            queueReply(inbox, cmd, body: nil, state: "ignored")
            return
        }
        let parsed = ChatService.parse(cmd)
        // A viewer runs only the read-only commands (docs/chat.md, "Roles").
        if cmd.adapter == "matrix", let c = parsed, let role = config.matrix?.role(of: cmd.sender), !role.may(c) {
            journal.append(.chatRoleRefused, ["adapter": .string(cmd.adapter), "sender": .string(ChatText.brief(cmd.sender, maxLength: 100)),
                                                "command": .string(c.name), "role": .string(role.rawValue)])
            queueReply(inbox, cmd, body: ChatRole.refusal(c), state: "done")
            return
        }
        if let c = parsed, ChatService.reachesHandler(c), let age = tooOld(cmd) {
            refuseTooOld(cmd, command: c, age: age, inbox: inbox)
            return
        }
        let context = ChatService.context(cmd)
        if let c = parsed, c.takesTime, let seen = ChatService.reaction(context, "seen") {
            // 👀 on receipt: queued before the handler runs (a restart may take its time).
            do {
                try Outbox(inbox.db).enqueue([seen])
                workers[seen.adapter]?.nudge()
            } catch {
                // Best effort: the reply says the same.
            }
        }
        let result: ChatCommandResult
        switch parsed {
        case nil:
            result = ChatCommandResult(ChatCommand.unknownReply("Not a command."))
        case .help(let topic)?:
            result = ChatCommandResult(ChatCommand.helpReply(topic))
        case .unknown(let what)?:
            result = ChatCommandResult(ChatCommand.unknownReply(what))
        case let c?:
            result = handler.handle(c, context: context)
        }
        // The one entry of a command (the handlers journal nothing of their own).
        journal.append(.chatCommand, ["adapter": .string(cmd.adapter), "sender": .string(ChatText.brief(cmd.sender, maxLength: 100)),
                                        "command": .string(parsed?.name ?? "none")])
        let body = ChatText.clean(result.text.isEmpty ? "OK" : result.text, maxLength: config.maxMessageLength)
        var html = result.html
        if html == nil, parsed?.repliesWithTable == true { html = ChatHTML.pre(body) }
        var extra: [OutboxItem] = []
        if parsed?.takesTime == true, result.outcome != .pending,
           let done = ChatService.reaction(context, "done", emoji: result.outcome == .ok ? ChatService.doneEmoji : ChatService.failedEmoji) {
            extra.append(done)
        }
        queueReply(inbox, cmd, body: body, html: html, state: "done", extra: extra)
    }

    /// The reactions (docs/chat.md, "Reactions").
    public static let seenEmoji = "👀"
    public static let doneEmoji = "✅"
    public static let failedEmoji = "❌"

    /// What the handler is told of `cmd`.
    static func context(_ cmd: InboxCommand) -> ChatCommandContext {
        ChatCommandContext(inboxID: cmd.id, adapter: cmd.adapter, sender: cmd.sender, originID: cmd.originID, thread: cmd.meta.thread,
                           room: cmd.meta.room)
    }

    /// The reply to a command as its adapter gets it: for Matrix a reply to the command's
    /// event, in its thread, with an HTML form (given, or the rendered text); for console
    /// plain text. Key `reply:<inbox id>`, priority reply.
    public static func replyItem(_ context: ChatCommandContext, body: String, html: String? = nil, maxLength: Int) -> OutboxItem {
        let key = "reply:\(context.inboxID)"
        guard ChatNotice.hasRelations(context.adapter) else {
            return OutboxItem(key: key, adapter: context.adapter, body: body, priority: .reply)
        }
        return OutboxItem(key: key, adapter: context.adapter, body: body, html: ChatNotice.html(html, body: body, maxLength: maxLength),
                          priority: .reply, meta: OutboxMeta(replyTo: context.originID, thread: context.thread, room: context.room))
    }

    /// A reaction to the command (`stage`: `seen` or `done`; key `react:<inbox id>:<stage>`,
    /// so it is queued once). Nil when the adapter has no reactions or the command no event.
    public static func reaction(_ context: ChatCommandContext, _ stage: String, emoji: String? = nil) -> OutboxItem? {
        guard ChatNotice.hasRelations(context.adapter), let event = context.originID else { return nil }
        let e = emoji ?? seenEmoji
        return OutboxItem(key: "react:\(context.inboxID):\(stage)", adapter: context.adapter, body: "reaction \(e)", priority: .reply,
                          meta: OutboxMeta(replyTo: event, reaction: e, room: context.room))
    }

    /// Whether the bridge's handler would run `c` (the service answers `/help` and unknown
    /// commands itself, which is harmless however late).
    private static func reachesHandler(_ c: ChatCommand) -> Bool {
        switch c {
        case .help, .unknown: return false
        default: return true
        }
    }

    /// How long ago `cmd` was said, when that is longer than `command_max_age` (nil: young
    /// enough, or its time is unknown). A chat server's clock ahead of ours counts as age 0.
    private func tooOld(_ cmd: InboxCommand) -> TimeSpan? {
        guard cmd.saidWall > 0 else { return nil }
        let age = TimeSpan.seconds(max(0, Clock.wall().timeIntervalSince1970 - cmd.saidWall))
        return age > config.commandMaxAge ? age : nil
    }

    /// A command said too long ago is answered and journaled, never run late (docs/chat.md).
    private func refuseTooOld(_ cmd: InboxCommand, command: ChatCommand, age: TimeSpan, inbox: ChatInbox) {
        let shown = ChatText.brief(cmd.body, maxLength: 80)
        journal.append(.chatCommandTooOld, ["adapter": .string(cmd.adapter), "sender": .string(ChatText.brief(cmd.sender, maxLength: 100)),
                                                "command": .string(command.name), "text": .string(ChatText.brief(cmd.body, maxLength: 100)),
                                                "age_s": .double((age.seconds * 10).rounded() / 10),
                                                "limit_s": .double(config.commandMaxAge.seconds)])
        let reply = "Too old, not run: your command \"\(shown)\" was sent \(ChatService.ageText(age)) ago, "
            + "longer than the limit of \(config.commandMaxAge) (command_max_age). Send it again if you still want it."
        var extra: [OutboxItem] = []
        if command.takesTime, let r = ChatService.reaction(ChatService.context(cmd), "done", emoji: ChatService.failedEmoji) { extra.append(r) }
        queueReply(inbox, cmd, body: ChatText.clean(reply, maxLength: config.maxMessageLength), state: "expired", extra: extra)
    }

    /// `45s`, `3m 20s`, `2h 5m`, `3d 4h`: an age for people.
    static func ageText(_ age: TimeSpan) -> String {
        let s = Int64(max(0, age.seconds).rounded())
        switch s {
        case ..<60: return "\(s)s"
        case ..<3600: return s % 60 == 0 ? "\(s / 60)m" : "\(s / 60)m \(s % 60)s"
        case ..<86400: return (s % 3600) / 60 == 0 ? "\(s / 3600)h" : "\(s / 3600)h \((s % 3600) / 60)m"
        default: return (s % 86400) / 3600 == 0 ? "\(s / 86400)d" : "\(s / 86400)d \((s % 86400) / 3600)h"
        }
    }

    private func queueReply(_ inbox: ChatInbox, _ cmd: InboxCommand, body: String?, html: String? = nil, state: String,
                            extra: [OutboxItem] = []) {
        let items = body.map { [ChatService.replyItem(ChatService.context(cmd), body: $0, html: html, maxLength: config.maxMessageLength)] + extra } ?? []
        do {
            try inbox.finish(cmd.id, state: state, replies: items)
            workers[cmd.adapter]?.nudge()
        } catch {
            // Kept until the database takes it; the command is not run again either way.
            if !items.isEmpty { replyBacklog.append((cmd.id, items, state)) }
        }
    }

    private func flushReplyBacklog(_ inbox: ChatInbox) {
        while let r = replyBacklog.first {
            do {
                try inbox.finish(r.inboxID, state: r.state, replies: r.replies)
                replyBacklog.removeFirst()
                for a in Set(r.replies.map(\.adapter)) { workers[a]?.nudge() }
            } catch {
                return
            }
        }
    }

    // MARK: - Answers after a restart

    /// The chat_state entry of a `/restart bridge` waiting for the new bridge.
    static let restartPendingName = "chat.restart.bridge"

    struct PendingRestart: Codable {
        var inbox: Int64
        var adapter: String
        var event: String?
        var thread: String?
        var sender: String
        /// The service (`owner`) that wrote it: the new bridge's differs.
        var owner: String
    }

    /// Records that the command of `context` (`/restart bridge`) is answered by the next
    /// bridge: its first pump queues "bridge restarted (…)" as a reply, and ✅. Call from the
    /// handler (inside `pump`). False when it could not be recorded.
    @discardableResult
    public func expectRestart(_ context: ChatCommandContext) -> Bool {
        guard let db else { return false }
        let p = PendingRestart(inbox: context.inboxID, adapter: context.adapter, event: context.originID, thread: context.thread,
                               sender: context.sender, owner: owner)
        guard let data = try? JSONEncoder().encode(p) else { return false }
        return (try? ChatInbox(db).setValue(ChatService.restartPendingName, String(decoding: data, as: UTF8.self))) != nil
    }

    /// How the new bridge describes itself in "bridge restarted (…)": set by the owner.
    public var restartedDescription = "pid \(ThisProcess.pid)"
    private var restartChecked = false

    /// In the primary's pump, once the database answers: a restart recorded by an earlier
    /// bridge is answered now (this bridge is up: it beat before its first pump).
    private func answerRestart(_ inbox: ChatInbox) {
        guard case .primary = mode, !restartChecked else { return }
        let pending: String?
        do { pending = try inbox.value(ChatService.restartPendingName) } catch { return } // database busy: next turn
        restartChecked = true // looked once: nothing pending is the usual case, not a reason to look every turn
        guard let text = pending, let p = try? JSONDecoder().decode(PendingRestart.self, from: Data(text.utf8)), p.owner != owner else { return }
        let context = ChatCommandContext(inboxID: p.inbox, adapter: p.adapter, sender: p.sender, originID: p.event, thread: p.thread)
        var item = ChatService.replyItem(context, body: "bridge restarted (\(restartedDescription))", maxLength: config.maxMessageLength)
        item.key = "reply:\(p.inbox):restarted"
        var items = [item]
        if let r = ChatService.reaction(context, "done", emoji: ChatService.doneEmoji) { items.append(r) }
        do {
            try inbox.db.write {
                for i in items { try Outbox.insertLocked(inbox.db, i) }
                try inbox.setValueInTransaction(ChatService.restartPendingName, nil)
            }
            workers[p.adapter]?.nudge()
        } catch {
            restartChecked = false // the next turn tries again
        }
    }
}

/// A `ChatInbox` on a connection of the calling thread's own (one per thread that asks), kept
/// in that thread's own storage (`ThreadLocal`): no thread ever sees another's
/// connection, and it is closed when its thread ends. Sendable: it holds only constants.
final class ThreadInbox: Sendable {
    let dir: StateDirectory
    private let inbox = ThreadLocal<ChatInbox>()

    init(_ dir: StateDirectory) {
        self.dir = dir
    }

    func get() -> ChatInbox? {
        if let i = inbox.value { return i }
        guard let db = try? Database(path: dir.database, busyTimeout: 2) else { return nil }
        let i = ChatInbox(db)
        inbox.set(i)
        return i
    }
}

/// Writes `chat/status.json` (the bridge's; a standby service writes nothing), from the loop
/// thread and from the delivery workers when a circuit changes. Sendable: constants, and the
/// workers behind one `Mutex` that also serialises the writes.
final class ChatStatusWriter: Sendable {
    let stateDir: StateDirectory
    let adapters: [String]
    let isPrimary: Bool
    private let workers = Mutex<[String: DeliveryWorker]>([:])

    init(stateDir: StateDirectory, adapters: [String], isPrimary: Bool) {
        self.stateDir = stateDir
        self.adapters = adapters
        self.isPrimary = isPrimary
    }

    func set(_ all: [String: DeliveryWorker]) { workers.withLock { $0 = all } }

    var status: [ChatAdapterStatus] {
        workers.withLock { w in adapters.compactMap { w[$0]?.status } }
    }

    func write() {
        guard isPrimary else { return }
        workers.withLock { w in
            let s = ChatService.StatusFile(adapters: adapters.compactMap { w[$0]?.status }, pid: ThisProcess.pid)
            try? StateFile.write(s, kind: "chat-status", to: stateDir.chatStatus)
        }
    }
}
