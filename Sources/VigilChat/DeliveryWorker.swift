import FoundationEssentials
import Synchronization
import VigilCore
import VigilStore
import VigilSystem

/// How one adapter is doing (for `vigil status`, the status file and tests).
public struct ChatAdapterStatus: Sendable, Equatable, Codable {
    public var adapter: String
    public var circuit: CircuitBreaker.State
    public var consecutiveFailures: Int
    public var lastError: String?
    public var delivered: Int
    public var failed: Int
    /// What is wrong with the destination (Matrix: "room not reachable: …", "room is encrypted:
    /// …"), for `vigil status` and `vigil doctor` (docs/chat.md, "Room problems").
    public var problem: String?

    enum CodingKeys: String, CodingKey {
        case adapter, circuit, consecutiveFailures = "consecutive_failures", lastError = "last_error", delivered, failed, problem
    }
}

/// Delivers one adapter's outbox on its own thread: claims the head of the queue when due,
/// calls the adapter (blocking, off the caller's loop), marks the row, and schedules retries
/// with backoff and jitter behind a circuit breaker. Sleeps in `poll` on a wake pipe (nudged by
/// its `ChatService`, which watches `<state>/chat/` for kicks from `Notifier`/`vigil say` with
/// the one inotify instance of the service), with a 1 s fallback.
/// The decisions (claim, take over, retry, fail) are `OutboxLifecycle`'s; `role` says whether
/// this is the bridge's worker (primary) or the runner's (standby, docs/chat.md "Delivery").
///
/// Sendable: what changes (the circuit, the drain deadline, the stop flag, counters, the last
/// error, its thread) is behind one `Mutex`, `state`; the rest is constant.
final class DeliveryWorker: Sendable {
    let adapter: any ChatAdapter
    let stateDir: StateDirectory
    let config: ChatConfig
    let journal: Journal
    let owner: String
    let backoff: Backoff
    let isGone: @Sendable (String) -> Bool
    let onCircuitChange: @Sendable () -> Void
    /// Asked before every claim: primary (bridge) or standby (runner) and whether it is needed.
    let role: @Sendable () -> OutboxLifecycle.Role
    /// The other adapters (a message that fails here is told through them).
    let otherAdapters: [String]

    private let state: Mutex<State>
    private let wake: WakePipe

    /// Only under `state`'s lock.
    private struct State {
        var circuit: CircuitBreaker
        var drainDeadline: BootInstant?
        var hardStop = false
        var lastError: String?
        var deliveredCount = 0
        var failedCount = 0
        var thread: SystemThread?
    }

    /// Fault injection for crash tests: `VIGIL_CHAT_FAULT=after-send` kills the process with
    /// SIGKILL right after a successful send, before the row is marked delivered;
    /// `after-send:TEXT` does it once per state dir (`chat/fault-fired`), for the first row whose
    /// key contains TEXT.
    static let faultAfterSend: String? = {
        guard let f = ProcessInfo.processInfo.environment["VIGIL_CHAT_FAULT"] else { return nil }
        if f == "after-send" { return "" }
        return f.hasPrefix("after-send:") ? String(f.dropFirst(11)) : nil
    }()

    private func injectAfterSendFault(_ msg: OutboxMessage) {
        guard let match = DeliveryWorker.faultAfterSend else { return }
        if match.isEmpty { ThisProcess.raise(.kill) }
        guard msg.key.contains(match) else { return }
        guard let fd = try? FileDescriptor.open(stateDir.chatFaultFired, [.writeOnly, .create, .exclusive]) else { return } // fired already
        try? fd.sync()
        fd.close()
        ThisProcess.raise(.kill)
    }

    init(adapter: any ChatAdapter, stateDir: StateDirectory, config: ChatConfig, journal: Journal, owner: String,
         isGone: @escaping @Sendable (String) -> Bool, onCircuitChange: @escaping @Sendable () -> Void,
         role: @escaping @Sendable () -> OutboxLifecycle.Role = { .primary }) throws {
        self.adapter = adapter
        self.role = role
        otherAdapters = config.adapters.filter { $0 != adapter.name }
        self.stateDir = stateDir
        self.config = config
        self.journal = journal
        self.owner = owner
        self.isGone = isGone
        self.onCircuitChange = onCircuitChange
        backoff = Backoff(initial: config.backoffInitial, max: config.backoffMax, jitter: config.backoffJitter)
        state = Mutex(State(circuit: CircuitBreaker(threshold: config.circuitFailures, cooloff: config.circuitCooloff, maxCooloff: config.circuitCooloffMax)))
        wake = try WakePipe()
    }

    var status: ChatAdapterStatus {
        state.withLock { s in
            ChatAdapterStatus(adapter: adapter.name, circuit: s.circuit.state, consecutiveFailures: s.circuit.consecutiveFailures,
                              lastError: s.lastError, delivered: s.deliveredCount, failed: s.failedCount, problem: adapter.problem)
        }
    }

    func start() {
        do {
            let thread = try SystemThread.start(name: "vigil-chat-\(adapter.name)") { [self] in self.run() }
            state.withLock { $0.thread = thread }
        } catch {
            state.withLock { $0.lastError = "could not start its thread: \(error)" }
        }
    }

    /// Look at the queue now (something was queued).
    func nudge() {
        wake.wake()
    }

    /// Deliver what is due until `deadline`, then stop.
    func beginShutdown(deadline: BootInstant) {
        state.withLock { s in s.drainDeadline = deadline }
        nudge()
    }

    /// Stop now: the call in flight is cancelled (its message goes back to pending).
    func stopNow() {
        state.withLock { s in s.hardStop = true }
        adapter.cancel()
        nudge()
    }

    func join(until deadline: BootInstant) -> Bool {
        guard let thread = state.withLock({ $0.thread }) else { return true }
        return thread.join(until: deadline)
    }

    private enum Mode { case running, draining, stop }

    private func mode(_ now: BootInstant) -> Mode {
        state.withLock { s in
            if s.hardStop { return .stop }
            if let d = s.drainDeadline { return now >= d ? .stop : .draining }
            return .running
        }
    }

    /// Sleeps until `until` (at most 1 s) or a nudge.
    private func wait(until: BootInstant?) {
        let now = Clock.boot()
        var ms: Int64 = 1000
        if let until { ms = min(ms, max(0, (until - now).nanoseconds / 1_000_000 + 1)) }
        if let d = state.withLock({ s in s.drainDeadline }) { ms = min(ms, max(0, (d - now).nanoseconds / 1_000_000)) }
        let fds = [wake.readFD]
        let ready = pollReadable(fds, timeoutMilliseconds: Int32(ms))
        if ready.contains(wake.readFD) { wake.drain() }
    }

    /// A mark that could not be written yet (database busy): retried before anything else.
    private struct PendingMark {
        var message: OutboxMessage
        var result: DeliveryResult
        var retryAt: BootInstant
    }

    private func run() {
        var outbox: Outbox?
        var pendingMark: PendingMark?
        var dbFailures = 0
        // The database's failures journaled at a bounded rate (docs/architecture.md, "Repeated failures").
        var dbReports = RepeatLimiter()
        if mode(Clock.boot()) == .running { adapter.prepare() }
        while true {
            let now = Clock.boot()
            let m = mode(now)
            if m == .stop { break }
            if outbox == nil {
                do {
                    outbox = Outbox(try Database(path: stateDir.database, busyTimeout: 2))
                    dbFailures = 0
                } catch {
                    dbFailures += 1
                    noteDatabaseFailure(error, &dbReports)
                    if m == .draining { break }
                    wait(until: now + .seconds(1))
                    continue
                }
            }
            guard let ob = outbox else { continue }
            do {
                if let pm = pendingMark {
                    try apply(pm.result, to: pm.message, retryAt: pm.retryAt, outbox: ob)
                    pendingMark = nil
                }
                let allowed = state.withLock { s in s.circuit.allows(now: now) }
                if !allowed {
                    if m == .draining { break }
                    wait(until: state.withLock { s in s.circuit.openUntil })
                    continue
                }
                switch try ob.claimNext(adapter: adapter.name, now: now, owner: owner, lease: adapter.lease, role: role(), isGone: isGone) {
                case .empty:
                    if m == .draining { return }
                    wait(until: nil)
                case .notDue(let at):
                    if m == .draining { return }
                    wait(until: at)
                case .notNeeded(let after):
                    if m == .draining { return }
                    wait(until: after.map { now + $0 })
                case .inFlight(let msg):
                    // A live claimer is sending it: look again when its lease runs out (or sooner).
                    if m == .draining { return }
                    wait(until: msg.leaseUntil ?? now + .seconds(1))
                case .claimed(let msg, let tookOver):
                    if tookOver {
                        journal.append(.chatDeliveryTakeover, [
                            "adapter": .string(adapter.name), "id": .int(msg.id), "key": .string(ChatText.brief(msg.key, maxLength: 120)),
                            "attempts": .int(Int64(msg.attempts)),
                        ])
                    }
                    let result = adapter.deliver(msg)
                    if case .delivered = result { injectAfterSendFault(msg) }
                    let retryAt = retryTime(for: result, attempts: msg.attempts)
                    updateCircuit(result, now: Clock.boot())
                    pendingMark = PendingMark(message: msg, result: result, retryAt: retryAt)
                    try apply(result, to: msg, retryAt: retryAt, outbox: ob)
                    pendingMark = nil
                }
                dbFailures = 0
                noteDatabaseWorks(&dbReports)
            } catch {
                dbFailures += 1
                noteDatabaseFailure(error, &dbReports)
                if (error as? Database.Error)?.isCorrupt == true { outbox = nil }
                if m == .draining && pendingMark == nil { break }
                wait(until: Clock.boot() + .milliseconds(min(5000, 100 * Double(dbFailures))))
            }
        }
    }

    /// The backoff schedule's wait after this attempt (the transition adds a wait the server
    /// asked for). Drawn once per attempt so a mark retried after a busy database keeps it.
    private func retryTime(for result: DeliveryResult, attempts: Int) -> BootInstant {
        Clock.boot() + backoff.delay(afterAttempt: attempts)
    }

    private func updateCircuit(_ result: DeliveryResult, now: BootInstant) {
        var changed: (CircuitBreaker.State, String?)?
        state.withLock { s in
            switch result {
            case .delivered, .failed:
                if let old = s.circuit.recordSuccess() { changed = (.closed, "was \(old.rawValue)") }
                if case .delivered = result { s.lastError = nil }
            case .retry(let why, _):
                s.lastError = why
                if let next = s.circuit.recordFailure(now: now) { changed = (next, why) }
            case .cancelled:
                break
            }
        }
        if let (state, why) = changed {
            var fields: [String: JSONValue] = ["adapter": .string(adapter.name), "circuit": .string(state.rawValue)]
            if let why { fields["reason"] = .string(ChatText.brief(why, maxLength: 300)) }
            if state == .open, let until = self.state.withLock({ s in s.circuit.openUntil }) {
                fields["retry_in_s"] = .double(((until - now).seconds * 1000).rounded() / 1000)
            }
            journal.append(.chatCircuit, fields)
            onCircuitChange()
        }
    }

    private func apply(_ result: DeliveryResult, to msg: OutboxMessage, retryAt: BootInstant, outbox: Outbox) throws {
        let now = Clock.boot()
        let policy = OutboxLifecycle.Policy(maxAge: config.maxAge, stuckAfterAttempts: config.maxAttempts)
        let age = TimeSpan.seconds(max(0, Clock.wall().timeIntervalSince(msg.created)))
        switch OutboxLifecycle.after(result.outcome, attempts: msg.attempts, age: age, now: now, backoff: max(.zero, retryAt - now), policy: policy) {
        case .delivered(let rid):
            try outbox.markDelivered(id: msg.id, owner: owner, remoteID: rid)
            state.withLock { s in s.deliveredCount += 1 }
        case .failed(let why):
            guard try outbox.markFailed(id: msg.id, owner: owner, error: why) else { return }
            state.withLock { s in s.failedCount += 1 }
            journalFailed(msg, why)
            tellOthers(msg, why, outbox: outbox)
        case .retry(let at, let why, let stuck):
            guard try outbox.markRetry(id: msg.id, owner: owner, error: why, at: at) else { return }
            if stuck && !msg.stuck {
                try outbox.markStuck(id: msg.id)
                journal.append(.chatDeliveryStuck, [
                    "adapter": .string(adapter.name), "id": .int(msg.id), "key": .string(ChatText.brief(msg.key, maxLength: 120)),
                    "attempts": .int(Int64(msg.attempts)), "error": .string(ChatText.brief(why, maxLength: 300)),
                    "gives_up_in_s": .double(max(0, (config.maxAge - age).seconds.rounded())),
                ])
            }
        }
    }

    /// A message that failed for good here is told through the other adapters (once per
    /// message: the key names it), so a person hears that something did not arrive.
    private func tellOthers(_ msg: OutboxMessage, _ why: String, outbox: Outbox) {
        guard !otherAdapters.isEmpty, !msg.key.hasPrefix("undelivered:") else { return }
        let text = ChatText.clean("Vigil: a message to \(adapter.name) could not be delivered (\(ChatText.brief(why, maxLength: 200))): \"\(ChatText.brief(msg.body, maxLength: 300))\"",
                                  maxLength: config.maxMessageLength)
        let items = otherAdapters.map { OutboxItem(key: "undelivered:\(adapter.name):\(msg.id)", adapter: $0, body: text, priority: .alert) }
        _ = try? outbox.enqueue(items)
        ChatKick.poke(stateDir, journal: journal)
    }

    private func journalFailed(_ msg: OutboxMessage, _ why: String) {
        journal.append(.chatDeliveryFailed, [
            "adapter": .string(adapter.name), "id": .int(msg.id), "key": .string(ChatText.brief(msg.key, maxLength: 120)),
            "attempts": .int(Int64(msg.attempts)), "error": .string(ChatText.brief(why, maxLength: 300)),
        ])
    }

    private func noteDatabaseFailure(_ error: any Error, _ reports: inout RepeatLimiter) {
        state.withLock { s in s.lastError = "database: \(error)" }
        guard let report = reports.failure(now: Clock.boot()) else { return }
        journal.append(.chatOutboxUnavailable, ["adapter": .string(adapter.name), "error": .string(ChatText.brief("\(error)", maxLength: 300))]
            .merging(report.fields) { a, _ in a })
    }

    private func noteDatabaseWorks(_ reports: inout RepeatLimiter) {
        guard reports.isFailing, let report = reports.success(now: Clock.boot()) else { return }
        journal.append(.chatOutboxAvailable, ["adapter": .string(adapter.name)].merging(report.fields) { a, _ in a })
    }
}
