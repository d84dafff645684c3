import FoundationEssentials
import VigilCore
import VigilSystem

/// The durable mission queue: typed access to the `missions` and `mission_locks` tables.
/// Every change is one `BEGIN IMMEDIATE` transaction; when a method returns, the change is
/// committed (durable with synchronous=FULL) and may be acknowledged. Transitions of a running
/// mission are guarded by `state='running' AND attempts=?`, so an actor holding a stale view
/// (an older attempt) changes nothing and gets nil back. See docs/missions.md.
public final class MissionQueue {
    public let db: Database

    public init(db: Database) {
        self.db = db
    }

    /// Outbox messages (key, adapter, body) to queue in the same transaction as a settlement,
    /// e.g. a mission's end notification: committed together, so a crash right after the
    /// commit cannot lose the message. Set by the runner; nil queues nothing.
    public var announce: ((_ id: Int64, _ attempt: Int, _ settlement: Settlement, _ outcome: SettleOutcome, _ queuedBy: String?, _ chatRef: String?) -> [OutboxItem])?
    /// Messages for a key whose breaker paused (or closed), queued with the settlement that did it.
    public var announceKey: ((_ key: String, _ told: KeyBreaker.Told) -> [OutboxItem])?
    /// The breaker per lock key; `limit` 0 turns it off.
    public var breakerPolicy = KeyBreakerPolicy()
    /// Breakers that paused or closed in settlements since the caller last took them
    /// (`takeKeyEvents`), for the journal: only committed ones are kept.
    private var keyEvents: [(key: String, told: KeyBreaker.Told)] = []
    private var pendingKeyEvents: [(key: String, told: KeyBreaker.Told)] = []
    /// Slots the committed transactions allocated or released (`takeSlotChanges`).
    private var slotChanges: [SlotChange] = []
    private var pendingSlotChanges: [SlotChange] = []

    /// What claims and settlements did to workspace slots in the transactions committed since
    /// the last call: the runner journals them and starts cleaners.
    public func takeSlotChanges() -> [SlotChange] {
        defer { slotChanges = [] }
        return slotChanges
    }

    /// Runs `body` as one write transaction and keeps the key and slot events it produced only
    /// when it committed.
    private func transaction<T>(_ body: () throws -> T) throws -> T {
        pendingKeyEvents = []
        pendingSlotChanges = []
        defer {
            pendingKeyEvents = []
            pendingSlotChanges = []
        }
        let r = try db.write(body)
        keyEvents += pendingKeyEvents
        slotChanges += pendingSlotChanges
        return r
    }

    /// What the breakers did in the transactions committed since the last call.
    public func takeKeyEvents() -> [(key: String, told: KeyBreaker.Told)] {
        defer { keyEvents = [] }
        return keyEvents
    }

    public static let defaultMaxAttempts = 3

    static let columns = """
        id, argv, cwd, lock_key, state, attempts, max_attempts, cancel_requested, exit_code, signal, \
        reason, shim_pid, shim_start, shim_boot, created_at, started_at, finished_at, let_daemons_go, \
        timeout_ns, silence_ns, stop_cause, at_most_once, retries, retry_backoff_ns, retried, retry_at, attempt_base, may_have_run, queued_by, \
        workspace, slot, chat_ref
        """

    static func decode(_ r: Database.Row) -> Mission {
        let argv = (r[1].text.flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }) ?? []
        var shim: MissionShim? = nil
        if let pid = r[11].int, let start = r[12].int, let boot = r[13].text {
            shim = MissionShim(identity: ProcessIdentity(pid: Int32(pid), startTicks: UInt64(start)), bootID: boot)
        }
        return Mission(
            id: r[0].int ?? 0, argv: argv, cwd: r[2].text ?? "/", lockKey: r[3].text,
            state: MissionState(rawValue: r[4].text ?? "") ?? .failed,
            attempts: Int(r[5].int ?? 0), maxAttempts: Int(r[6].int ?? 1), cancelRequested: (r[7].int ?? 0) != 0,
            exitCode: r[8].int.map { Int32(truncatingIfNeeded: $0) }, signal: r[9].int.map { Int32(truncatingIfNeeded: $0) },
            reason: r[10].text, shim: shim,
            createdAt: Date(timeIntervalSince1970: r[14].double ?? 0),
            startedAt: r[15].double.map { Date(timeIntervalSince1970: $0) },
            finishedAt: r[16].double.map { Date(timeIntervalSince1970: $0) },
            letDaemonsGo: (r[17].int ?? 0) != 0,
            timeout: r[18].int.map { TimeSpan(nanoseconds: $0) }, silenceLimit: r[19].int.map { TimeSpan(nanoseconds: $0) },
            stopCause: r[20].text.flatMap(StopCause.init(rawValue:)), atMostOnce: (r[21].int ?? 0) != 0,
            retries: Int(r[22].int ?? 0), retryBackoff: r[23].int.map { TimeSpan(nanoseconds: $0) }, retried: Int(r[24].int ?? 0),
            retryAt: r[25].double.map { Date(timeIntervalSince1970: $0) }, attemptBase: Int(r[26].int ?? 0), mayHaveRun: (r[27].int ?? 0) != 0,
            queuedBy: r[28].text, workspace: r[29].text, slot: r[30].int, chatRef: r[31].text)
    }

    static func now() -> Database.Value { .double(Clock.wall().timeIntervalSince1970) }

    // MARK: - Adding and reading

    /// Enqueues a mission and returns its id once the commit returned. `letDaemonsGo`: its
    /// processes outside its session are left alone at its end (docs/missions.md, "Every
    /// process of a mission").
    public func enqueue(argv: [String], cwd: String, lockKey: String? = nil, maxAttempts: Int = MissionQueue.defaultMaxAttempts,
                        letDaemonsGo: Bool = false, timeout: TimeSpan? = nil, silenceLimit: TimeSpan? = nil,
                        atMostOnce: Bool = false, retries: Int = 0, retryBackoff: TimeSpan? = nil, queuedBy: String? = nil,
                        workspace: String? = nil, chatRef: String? = nil) throws -> Int64 {
        precondition(!argv.isEmpty && maxAttempts >= 1)
        let json = String(decoding: try JSONEncoder().encode(argv), as: UTF8.self)
        return try db.write {
            if let workspace, try db.query("SELECT 1 FROM workspace_repos WHERE name = ?", [.text(workspace)]).isEmpty {
                throw WorkspaceError("no workspace repository named \(workspace) (vigil workspace add-repo)")
            }
            try db.execute("""
                INSERT INTO missions(argv, cwd, lock_key, max_attempts, created_at, let_daemons_go, timeout_ns, silence_ns, at_most_once,
                                     retries, retry_backoff_ns, queued_by, workspace, chat_ref)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [.text(json), .text(cwd), lockKey.map { .text($0) } ?? .null, .int(Int64(maxAttempts)), MissionQueue.now(),
                      .int(letDaemonsGo ? 1 : 0), timeout.map { .int($0.nanoseconds) } ?? .null, silenceLimit.map { .int($0.nanoseconds) } ?? .null,
                      .int(atMostOnce ? 1 : 0), .int(Int64(max(0, retries))), retryBackoff.map { .int($0.nanoseconds) } ?? .null,
                      queuedBy.map { .text($0) } ?? .null, workspace.map { .text($0) } ?? .null, chatRef.map { .text($0) } ?? .null])
            return db.lastInsertRowID
        }
    }

    public func mission(_ id: Int64) throws -> Mission? {
        try db.query("SELECT \(MissionQueue.columns) FROM missions WHERE id = ?", [.int(id)]).first.map(MissionQueue.decode)
    }

    /// Missions in id order; `last` keeps only the newest N.
    public func missions(last: Int? = nil) throws -> [Mission] {
        if let last {
            return try db.query("SELECT \(MissionQueue.columns) FROM missions ORDER BY id DESC LIMIT ?", [.int(Int64(last))])
                .map(MissionQueue.decode).reversed()
        }
        return try db.query("SELECT \(MissionQueue.columns) FROM missions ORDER BY id").map(MissionQueue.decode)
    }

    /// Missions in state `running`, in id order.
    public func running() throws -> [Mission] {
        try db.query("SELECT \(MissionQueue.columns) FROM missions WHERE state = 'running' ORDER BY id").map(MissionQueue.decode)
    }

    /// Counts per displayed state (waiting counted apart from pending).
    public func counts() throws -> [MissionState: Int] {
        var out: [MissionState: Int] = [:]
        for r in try db.query("SELECT state, count(*) FROM missions GROUP BY state") {
            if let s = r[0].text.flatMap(MissionState.init(rawValue:)) { out[s] = Int(r[1].int ?? 0) }
        }
        let view = try lockView()
        let waiting = try db.query("SELECT id, lock_key FROM missions WHERE state = 'pending' AND lock_key IS NOT NULL")
            .filter { r in
                guard let key = r[1].text, let id = r[0].int else { return false }
                return view.held[key] != nil || view.firstPending[key] != id
            }.count
        if waiting > 0 {
            out[.waiting] = waiting
            out[.pending, default: 0] -= waiting
        }
        return out
    }

    /// Who holds which key, and the first pending mission per key: what `waiting` is made of.
    public struct LockView: Sendable {
        /// key → the running mission holding it.
        public var held: [String: Int64]
        /// key → the lowest pending id naming it (the next to take it).
        public var firstPending: [String: Int64]

        /// `waiting` for a pending mission whose key is held or has an earlier pending
        /// mission; otherwise the stored state.
        public func state(of m: Mission) -> MissionState {
            guard m.state == .pending, let key = m.lockKey else { return m.state }
            return held[key] != nil || firstPending[key] != m.id ? .waiting : .pending
        }
    }

    public func lockView() throws -> LockView {
        var held: [String: Int64] = [:]
        for r in try db.query("SELECT key, mission_id FROM mission_locks") {
            if let k = r[0].text, let id = r[1].int { held[k] = id }
        }
        var first: [String: Int64] = [:]
        for r in try db.query("SELECT lock_key, min(id) FROM missions WHERE state = 'pending' AND lock_key IS NOT NULL GROUP BY lock_key") {
            if let k = r[0].text, let id = r[1].int { first[k] = id }
        }
        return LockView(held: held, firstPending: first)
    }

    // MARK: - Runner transitions

    /// How a running attempt ended, as the runner saw it.
    public enum Settlement: Sendable, Equatable {
        /// The shim wrote this result.
        case finished(MissionResult)
        /// The result file was corrupt (quarantined after the commit): failed, or cancelled.
        case resultCorrupt(why: String)
        /// The shim ended without a result: requeue, or fail after the max.
        case shimDied(reason: String, countAttempt: Bool)
        /// The shim could not be started: pending again, the attempt not counted.
        case revert(reason: String)
    }

    /// What a settlement did.
    public enum SettleOutcome: Sendable, Equatable {
        case ended(MissionState, reason: String?)
        /// A failed attempt of a mission with retries left: pending again, not before `at`.
        case retry(at: Double, reason: String)
        case died(ShimDeath)
        case reverted
        /// The attempt was not running any more: nothing changed.
        case stale
    }

    /// The runner's tick in one transaction (one fsync): settle ended attempts (releasing their
    /// locks), record shim identities, then claim up to `claimLimit` missions. Pending missions
    /// freed by a settlement (a released key) can be claimed in the same transaction.
    public func settleAndClaim(_ settlements: [(id: Int64, attempt: Int, settlement: Settlement)],
                               recordShims shims: [(id: Int64, attempt: Int, shim: MissionShim)] = [],
                               claimLimit: Int) throws -> (outcomes: [SettleOutcome], claimed: [Mission]) {
        try transaction {
            let outcomes = try settlements.map { try settleLocked($0.id, attempt: $0.attempt, $0.settlement) }
            try recordShimsLocked(shims)
            return (outcomes, try claimLocked(limit: claimLimit))
        }
    }

    /// Claims up to `limit` pending missions in id order, in one transaction: each becomes
    /// running with `attempts + 1` and takes its lock key. A key that is held, or already taken
    /// earlier in this pass, makes its mission wait (FIFO per key).
    public func claim(limit: Int) throws -> [Mission] {
        guard limit > 0 else { return [] }
        return try transaction { try claimLocked(limit: limit) }
    }

    /// Takes a pending mission back as running attempt `attempt` with `shim`: a live shim of
    /// that attempt that its claim was taken back from (a runner killed while spawning it could
    /// not record it, and the next one did not see it yet). Takes the lock key too. Nil (nothing
    /// changed) unless the row is pending with `attempt - 1` starts and its key is free. A
    /// mission with a workspace gets its slot back (the shim runs in it) only from `cleaning`
    /// (no other mission got it); otherwise nil. A worker cannot be in it meanwhile: the shim
    /// holds the slot's lock while its command runs, and one that has not taken it yet finds
    /// it held and runs nothing (docs/workspaces.md, "adopted").
    public func adopt(id: Int64, attempt: Int, shim: MissionShim) throws -> Mission? {
        try transaction {
            guard var m = try mission(id), m.state == .pending, m.attempts == attempt - 1 else { return nil }
            if let key = m.lockKey {
                guard try db.query("SELECT 1 FROM mission_locks WHERE key = ?", [.text(key)]).isEmpty else { return nil }
            }
            if m.workspace != nil {
                guard let slotID = m.slot, let s = try WorkspaceStore.slotLocked(db, slotID), s.record.phase == .cleaning,
                      let r = try WorkspaceStore.applyLocked(db, .adopted(mission: id), to: slotID) else { return nil }
                pendingSlotChanges.append(WorkspaceStore.change(r.before, r.after, mission: id))
            }
            if let key = m.lockKey {
                try db.execute("INSERT INTO mission_locks(key, mission_id) VALUES (?, ?)", [.text(key), .int(id)])
            }
            try db.execute("""
                UPDATE missions SET state = 'running', attempts = ?, started_at = ?, shim_pid = ?, shim_start = ?, shim_boot = ?
                WHERE id = ?
                """, [.int(Int64(attempt)), MissionQueue.now(), .int(Int64(shim.identity.pid)), .int(Int64(shim.identity.startTicks)),
                      .text(shim.bootID), .int(id)])
            m.state = .running
            m.attempts = attempt
            m.shim = shim
            return m
        }
    }

    /// Records the shims of freshly started attempts (one transaction for all).
    public func recordShims(_ shims: [(id: Int64, attempt: Int, shim: MissionShim)]) throws {
        guard !shims.isEmpty else { return }
        try db.write { try recordShimsLocked(shims) }
    }

    /// Undoes a claim whose shim could not be started: pending again, the attempt not counted.
    public func revertClaim(id: Int64, attempt: Int, reason: String) throws {
        try transaction { _ = try settleLocked(id, attempt: attempt, .revert(reason: reason)) }
    }

    /// Finalizes a running attempt from its shim's result and releases its lock. Returns the
    /// final state, or nil when the attempt is not running any more (stale).
    @discardableResult
    public func finish(id: Int64, attempt: Int, result: MissionResult) throws -> MissionState? {
        let outcome = try transaction { try settleLocked(id, attempt: attempt, .finished(result)) }
        if case .ended(let state, _) = outcome { return state }
        return nil
    }

    /// Settles one running attempt in its own transaction (start-up recovery).
    public func settle(id: Int64, attempt: Int, _ settlement: Settlement) throws -> SettleOutcome {
        try transaction { try settleLocked(id, attempt: attempt, settlement) }
    }

    public enum ShimDeath: Equatable, Sendable {
        /// Pending again; `attempts` starts so far.
        case requeued(attempts: Int)
        /// Pending again, the attempt not counted (it never started).
        case requeuedUncounted
        /// Out of attempts.
        case failed(reason: String)
        /// A cancel was asked: that is what it became.
        case cancelled
    }

    /// The shim of a running attempt died without a result: requeue it (attempts stay counted),
    /// fail it after `max_attempts` starts, or mark it cancelled when a cancel was asked. The
    /// lock is released in the same transaction. With `countAttempt: false` (a claim whose shim
    /// never started) the attempt is taken back. Nil when stale.
    @discardableResult
    public func shimDied(id: Int64, attempt: Int, reason: String, countAttempt: Bool = true) throws -> ShimDeath? {
        let outcome = try transaction { try settleLocked(id, attempt: attempt, .shimDied(reason: reason, countAttempt: countAttempt)) }
        if case .died(let death) = outcome { return death }
        return nil
    }

    /// How a finished attempt's result maps to a final state: `MissionLifecycle`'s rule
    /// (docs/missions.md, "Lifecycle"), the one place its reasons are worded.
    public static func outcome(of result: MissionResult, cancelRequested: Bool, stopCause: StopCause? = nil,
                               timeout: TimeSpan? = nil, silenceLimit: TimeSpan? = nil) -> (state: MissionState, reason: String?) {
        var record = MissionRecord()
        record.phase = .running
        record.attempts = max(1, result.attempt)
        record.cancelRequested = cancelRequested
        let policy = MissionPolicy(maxAttempts: max(1, result.attempt), retries: 0, timeout: timeout, silenceLimit: silenceLimit)
        let event = MissionEvent.exited(code: result.exitCode, signal: result.signal, reason: result.reason, stoppedFor: stopCause)
        guard let t = MissionLifecycle.apply(event, to: record, policy: policy, now: 0),
              let state = MissionState(rawValue: t.record.phase.rawValue) else { return (.failed, "no outcome for this result") }
        return (state, t.record.reason)
    }

    /// Records why the runner is ending a running attempt (`timeout`, `silence`) and the limit
    /// it applied, before it signals: the reason then survives a runner restart. Nil when stale.
    @discardableResult
    public func requestStop(id: Int64, attempt: Int, cause: StopCause, limit: TimeSpan) throws -> Bool {
        try db.write {
            let column = cause == .silence ? "silence_ns" : "timeout_ns"
            try db.execute("""
                UPDATE missions SET stop_cause = ?, \(column) = coalesce(\(column), ?)
                WHERE id = ? AND state = 'running' AND attempts = ? AND stop_cause IS NULL
                """, [.text(cause.rawValue), .int(limit.nanoseconds), .int(id), .int(Int64(attempt))])
            return db.changes > 0
        }
    }

    // MARK: - Inside a write transaction

    /// Claims what `ClaimSelection` (`MissionLifecycle.claimable`'s rules) chooses among the
    /// pending missions, read in id order in batches: held keys from `mission_locks` (also
    /// left out in SQL, which changes nothing the selection would choose), paused keys from
    /// `key_breakers`. Each chosen mission gets its key and `apply(.claimed)` in this
    /// transaction; a claim on a half-open key is its breaker's trial.
    private func claimLocked(limit: Int) throws -> [Mission] {
        guard limit > 0 else { return [] }
        let now = MissionQueue.now()
        let wallNow = Clock.wall().timeIntervalSince1970
        let held = Set(try db.query("SELECT key FROM mission_locks").compactMap { $0[0].text })
        var breakers: [String: KeyBreaker] = [:]
        if breakerPolicy.limit > 0 {
            for r in try db.query("SELECT key FROM key_breakers WHERE paused_at IS NOT NULL") {
                if let k = r[0].text { breakers[k] = try breakerLocked(k) }
            }
        }
        let paused = Set(breakers.filter { $0.value.isPaused(now: wallNow, coolOff: breakerPolicy.coolOff) }.keys)
        var selection = ClaimSelection(held: held, paused: paused, limit: limit, now: wallNow, capacity: try WorkspaceStore.capacityLocked(db))
        var chosen: [Mission] = []
        var after: Int64 = 0
        while !selection.isFull {
            let batch = limit - selection.chosen.count + 16
            let rows = try db.query("""
                SELECT \(MissionQueue.columns) FROM missions
                WHERE state = 'pending' AND id > ? AND (lock_key IS NULL OR lock_key NOT IN (SELECT key FROM mission_locks))
                    AND (workspace IS NULL OR workspace IN (SELECT repo FROM workspace_slots WHERE state = 'available'))
                ORDER BY id LIMIT ?
                """, [.int(after), .int(Int64(batch))])
            for r in rows where !selection.isFull {
                let m = MissionQueue.decode(r)
                after = m.id
                let candidate = PendingMission(id: m.id, lockKey: m.lockKey, retryAt: m.retryAt?.timeIntervalSince1970,
                                               maxBackoff: max(.seconds(60), m.retryBackoff ?? .seconds(1)), workspace: m.workspace)
                if selection.consider(candidate) { chosen.append(m) }
            }
            if rows.count < batch { break }
        }
        var claimed: [Mission] = []
        for var m in chosen {
            // Nil only for a mission that may have run at most once: it is never started again.
            guard let t = MissionLifecycle.apply(.claimed, to: m.record, policy: m.policy, now: wallNow) else { continue }
            // Its slot, in this transaction: both commit or neither (docs/workspaces.md).
            var slot: SlotChange? = nil
            if let repo = m.workspace {
                guard let s = try WorkspaceStore.allocateLocked(db, repo: repo, mission: m.id) else { continue }
                slot = s
                pendingSlotChanges.append(s)
            }
            if let key = m.lockKey {
                if var b = breakers[key] {
                    b.claimed(now: wallNow, coolOff: breakerPolicy.coolOff) // half-open: this one is the trial
                    try storeBreakerLocked(key, b)
                }
                try db.execute("INSERT INTO mission_locks(key, mission_id) VALUES (?, ?)", [.text(key), .int(m.id)])
            }
            try db.execute("""
                UPDATE missions SET state = 'running', attempts = ?, started_at = ?,
                    shim_pid = NULL, shim_start = NULL, shim_boot = NULL, stop_cause = NULL, retry_at = NULL, slot = coalesce(?, slot)
                WHERE id = ? AND state = 'pending'
                """, [.int(Int64(t.record.attempts)), now, slot.map { .int($0.slot) } ?? .null, .int(m.id)])
            m.state = .running
            if let slot { m.slot = slot.slot }
            m.attempts = t.record.attempts
            m.shim = nil
            claimed.append(m)
        }
        return claimed
    }

    private func recordShimsLocked(_ shims: [(id: Int64, attempt: Int, shim: MissionShim)]) throws {
        for s in shims {
            try db.execute("UPDATE missions SET shim_pid = ?, shim_start = ?, shim_boot = ? WHERE id = ? AND state = 'running' AND attempts = ?",
                           [.int(Int64(s.shim.identity.pid)), .int(Int64(s.shim.identity.startTicks)), .text(s.shim.bootID),
                            .int(s.id), .int(Int64(s.attempt))])
        }
    }

    /// Records the end of a running attempt: `MissionLifecycle.apply` decides (docs/missions.md,
    /// "Lifecycle"), this stores its record and releases the key, in the caller's transaction.
    private func settleLocked(_ id: Int64, attempt: Int, _ settlement: Settlement) throws -> SettleOutcome {
        guard let m = try db.query("SELECT \(MissionQueue.columns) FROM missions WHERE id = ? AND state = 'running' AND attempts = ?",
                                   [.int(id), .int(Int64(attempt))]).first.map(MissionQueue.decode) else { return .stale }
        let event: MissionEvent
        switch settlement {
        case .finished(let r): event = .exited(code: r.exitCode, signal: r.signal, reason: r.reason, stoppedFor: m.stopCause)
        case .resultCorrupt(let why): event = .resultCorrupt(why: why)
        case .shimDied(let reason, let countAttempt): event = .shimDied(reason: reason, mayHaveStarted: countAttempt)
        case .revert(let reason): event = .shimNotStarted(reason: reason)
        }
        let now = Clock.wall().timeIntervalSince1970
        guard let t = MissionLifecycle.apply(event, to: m.record, policy: m.policy, now: now, jitter: Double.random(in: 0..<1)) else { return .stale }
        let n = t.record
        guard let state = MissionState(rawValue: n.phase.rawValue) else { return .stale }
        try db.execute("""
            UPDATE missions SET state = ?, attempts = ?, reason = ?, exit_code = ?, signal = ?, retried = ?, retry_at = ?, may_have_run = ?,
                finished_at = CASE WHEN ? THEN ? ELSE finished_at END,
                shim_pid = CASE WHEN ? THEN NULL ELSE shim_pid END,
                shim_start = CASE WHEN ? THEN NULL ELSE shim_start END,
                shim_boot = CASE WHEN ? THEN NULL ELSE shim_boot END
            WHERE id = ?
            """, [.text(state.rawValue), .int(Int64(n.attempts)), n.reason.map { .text($0) } ?? .null,
                  n.exitCode.map { .int(Int64($0)) } ?? .null, n.signal.map { .int(Int64($0)) } ?? .null,
                  .int(Int64(n.retried)), n.retryAt.map { .double($0) } ?? .null, .int(n.mayHaveRun ? 1 : 0),
                  .int(n.phase.isFinal ? 1 : 0), MissionQueue.now(),
                  .int(n.phase == .pending ? 1 : 0), .int(n.phase == .pending ? 1 : 0), .int(n.phase == .pending ? 1 : 0),
                  .int(id)])
        let outcome: SettleOutcome
        switch (settlement, n.phase) {
        case (.revert, .pending):
            outcome = .reverted
        case (.shimDied, .pending):
            outcome = .died(n.attempts < attempt ? .requeuedUncounted : .requeued(attempts: attempt))
        case (.shimDied, .cancelled):
            outcome = .died(.cancelled)
        case (.shimDied, _):
            outcome = .died(.failed(reason: n.reason ?? "its shim died"))
        case (_, .pending):
            outcome = .retry(at: n.retryAt ?? now, reason: n.reason ?? "")
        default:
            outcome = .ended(state, reason: n.reason)
        }
        try db.execute("DELETE FROM mission_locks WHERE mission_id = ?", [.int(id)])
        // Its slot goes to the cleaner in this transaction, whatever the end (a retry gets a
        // slot again at its next claim).
        if let change = try WorkspaceStore.releaseLocked(db, mission: id) { pendingSlotChanges.append(change) }
        for m in announce?(id, attempt, settlement, outcome, m.queuedBy, m.chatRef) ?? [] {
            try Outbox.insertLocked(db, m)
        }
        // The key's breaker counts what the mission's own command did: a finished attempt that
        // ended the mission done or failed (a retry still pending, a cancel, a dead shim: not).
        if let key = m.lockKey, breakerPolicy.limit > 0, case .finished = settlement, case .ended(let state, _) = outcome, state != .cancelled {
            var b = try breakerLocked(key)
            let told = b.ended(success: state == .done, now: Clock.wall().timeIntervalSince1970, limit: breakerPolicy.limit)
            try storeBreakerLocked(key, b)
            if let told {
                for m in announceKey?(key, told) ?? [] { try Outbox.insertLocked(db, m) }
                pendingKeyEvents.append((key, told))
            }
        }
        return outcome
    }

    /// Ids of missions that ended (done, failed, cancelled) between `after` and `before`
    /// (wall-clock seconds), oldest first: whose checkpoints have outlived their retention.
    public func endedBetween(after: Double, before: Double) throws -> [Int64] {
        try db.query("""
            SELECT id FROM missions WHERE state IN ('done', 'failed', 'cancelled') AND finished_at > ? AND finished_at <= ? ORDER BY finished_at
            """, [.double(after), .double(before)]).compactMap { $0[0].int }
    }

    /// The earliest `retry_at` of a pending mission (wall-clock seconds), for the runner's wake.
    public func nextRetry() throws -> Double? {
        try db.query("SELECT min(retry_at) FROM missions WHERE state = 'pending' AND retry_at IS NOT NULL").first?[0].double
    }

    public enum RetryOutcome: Equatable, Sendable {
        case queued
        case notFailed(MissionState)
        /// At most once and interrupted: it may have run; add it anew if it must run again.
        case mayHaveRun
        case notFound
    }

    /// `vigil mission retry`: a failed mission is pending again with fresh budgets (its attempt
    /// numbers go on). Never one that ended "interrupted: may have run".
    public func retry(id: Int64) throws -> RetryOutcome {
        try db.write {
            guard let m = try mission(id) else { return .notFound }
            guard let t = MissionLifecycle.apply(.retryRequested, to: m.record, policy: m.policy, now: Clock.wall().timeIntervalSince1970) else {
                return m.state == .failed ? .mayHaveRun : .notFailed(m.state)
            }
            try db.execute("""
                UPDATE missions SET state = 'pending', reason = ?, retried = 0, retry_at = NULL, attempt_base = ?, exit_code = NULL,
                    signal = NULL, finished_at = NULL, cancel_requested = 0, shim_pid = NULL, shim_start = NULL, shim_boot = NULL
                WHERE id = ? AND state = 'failed'
                """, [t.record.reason.map { .text($0) } ?? .null, .int(Int64(t.record.attemptBase)), .int(id)])
            return .queued
        }
    }

    /// A lock row whose holder is not running.
    static let staleLock = "mission_id NOT IN (SELECT id FROM missions WHERE state = 'running')"

    /// Deletes locks whose holder is not running (a holder that died, or a row edited by hand).
    public func releaseStaleLocks() throws -> Int {
        try db.write {
            try db.execute("DELETE FROM mission_locks WHERE \(MissionQueue.staleLock)")
            return db.changes
        }
    }

    /// The locks `releaseStaleLocks` would delete: (key, holder id), by key. Read-only.
    public func staleLocks() throws -> [(key: String, mission: Int64)] {
        try db.query("SELECT key, mission_id FROM mission_locks WHERE \(MissionQueue.staleLock) ORDER BY key").compactMap { r in
            guard let k = r[0].text, let id = r[1].int else { return nil }
            return (k, id)
        }
    }

    // MARK: - Cancel

    public enum CancelOutcome: Equatable, Sendable {
        /// It had not started: cancelled now.
        case cancelled
        /// It runs: the runner will stop it (SIGTERM, SIGKILL after a grace).
        case requested
        case alreadyRequested
        case alreadyFinished(MissionState)
        case notFound
    }

    public func requestCancel(id: Int64) throws -> CancelOutcome {
        try db.write {
            guard let m = try mission(id) else { return .notFound }
            switch m.state {
            case .pending, .waiting:
                try db.execute("UPDATE missions SET state = 'cancelled', cancel_requested = 1, reason = ?, finished_at = ? WHERE id = ?",
                               [.text("cancelled by an operator before it started"), MissionQueue.now(), .int(id)])
                return .cancelled
            case .running:
                if m.cancelRequested { return .alreadyRequested }
                try db.execute("UPDATE missions SET cancel_requested = 1 WHERE id = ?", [.int(id)])
                return .requested
            case .done, .failed, .cancelled:
                return .alreadyFinished(m.state)
            }
        }
    }

    /// Ids of all missions that have a row, among `ids`.
    public func existing(_ ids: [Int64]) throws -> Set<Int64> {
        Set(try states(ids).keys)
    }

    /// The stored state of each mission among `ids` that has a row.
    public func states(_ ids: [Int64]) throws -> [Int64: MissionState] {
        var out: [Int64: MissionState] = [:]
        var i = 0
        while i < ids.count {
            let chunk = ids[i..<min(ids.count, i + 500)]
            let marks = chunk.map { _ in "?" }.joined(separator: ",")
            for r in try db.query("SELECT id, state FROM missions WHERE id IN (\(marks))", chunk.map { .int($0) }) {
                if let id = r[0].int { out[id] = r[1].text.flatMap(MissionState.init(rawValue:)) ?? .failed }
            }
            i += 500
        }
        return out
    }

    /// `PRAGMA data_version`: changes when another connection committed.
    public func dataVersion() throws -> Int64 {
        try db.scalarInt("PRAGMA data_version") ?? 0
    }
}
