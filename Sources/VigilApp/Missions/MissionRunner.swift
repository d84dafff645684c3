import FoundationEssentials
import VigilChat
import VigilCore
import VigilStore
import VigilSystem

/// What start-up recovery did (docs/missions.md, "Start-up recovery").
public struct MissionRecoverySummary: Sendable, Equatable {
    /// Running missions whose shim is alive: watched again.
    public var reattached = 0
    /// Missions whose shim finished while no runner watched: recorded from their result file.
    public var finalized = 0
    /// Missions whose shim died without a result: queued again.
    public var requeued = 0
    /// Missions that failed during recovery (out of attempts, or a corrupt result file).
    public var failed = 0
    /// Missions whose cancel was asked and whose shim ended unseen.
    public var cancelled = 0
    /// Locks whose holder was not running any more.
    public var locksReleased = 0
    /// Orphans cleaned up: process groups of shims no mission claims, stray processes of
    /// missions that have not ended, scratch directories, and mission directories no row claims
    /// (moved to quarantine/, never deleted).
    public var orphansCleaned = 0

    public init() {}

    public var isEmpty: Bool {
        reattached == 0 && finalized == 0 && requeued == 0 && failed == 0 && cancelled == 0 && locksReleased == 0 && orphansCleaned == 0
    }

    /// One line for people (journal, chat).
    public var text: String {
        isEmpty ? "Missions: nothing to recover." : "Missions recovered after a runner restart: " + details + "."
    }

    /// What was done, as a list ("1 requeued after its shim died, 2 orphans cleaned up").
    public var details: String {
        if isEmpty { return "nothing to recover" }
        var parts: [String] = []
        func add(_ n: Int, _ one: String, _ many: String) { if n > 0 { parts.append("\(n) \(n == 1 ? one : many)") } }
        add(reattached, "still running (reattached)", "still running (reattached)")
        add(finalized, "finished while no runner watched (recorded)", "finished while no runner watched (recorded)")
        add(requeued, "requeued after its shim died", "requeued after their shim died")
        add(failed, "failed", "failed")
        add(cancelled, "cancelled", "cancelled")
        add(locksReleased, "lock of a dead holder released", "locks of dead holders released")
        add(orphansCleaned, "orphan cleaned up", "orphans cleaned up")
        return parts.joined(separator: ", ")
    }

    var journalFields: [String: JSONValue] {
        ["reattached": .int(Int64(reattached)), "finalized": .int(Int64(finalized)), "requeued": .int(Int64(requeued)),
         "failed": .int(Int64(failed)), "cancelled": .int(Int64(cancelled)), "locks_released": .int(Int64(locksReleased)),
         "orphans_cleaned": .int(Int64(orphansCleaned)), "text": .string(text)]
    }
}

/// Runs missions: one per runner process, used from the runner's single loop thread.
///
/// The runner calls `recover()` once at start (it is also run by the first `tick` that finds
/// it not done), then `tick(now:)` every loop turn, polling `wakeDescriptors` and waking by
/// `nextDeadline`. Every method that touches the database may throw (locked, full, corrupt):
/// the caller journals that and ticks again later; nothing in memory is lost by a throw.
///
/// - Important: only one `MissionRunner` may exist per state directory (it holds
///   `<state>/missions.lock`); a second one, in any process, fails in `init`.
public final class MissionRunner {
    public let stateDir: StateDirectory
    let journal: Journal
    let maxParallel: Int
    let shimExecutable: String
    let notify: (_ key: String, _ text: String) -> Void
    let termGrace: TimeSpan
    let busyTimeout: TimeSpan
    /// Output cap and environment of every mission, handed to each shim.
    let settings: MissionSettings
    let lock: FileLock
    let files: StateFiles
    var queue: MissionQueue?
    var recovered = false
    var tracked: [Int64: Tracked] = [:]
    var lastDataVersion: Int64? = nil
    var claimNeeded = true
    /// Checkpoint retention (docs/missions.md, "Checkpoints"): missions that ended up to this
    /// wall time have had theirs removed; pruned at start-up recovery and then hourly.
    var checkpointsPrunedUpTo: Double = 0
    var lastCheckpointPrune: BootInstant?
    /// The earliest pending retry or paused key's trial (wall-clock seconds): a claim pass is due then.
    var nextRetryWall: Double?
    /// Workspace workers and the periodic pass (`MissionRunner+Workspaces.swift`).
    var workspaces = WorkspaceTending()

    /// A running attempt this runner watches.
    final class Tracked {
        let id: Int64
        let attempt: Int
        var shim: MissionShim?
        var pidfd: PidFD?
        var identityRecorded: Bool
        /// `--let-daemons-go`: a cancel signals only the mission's session, not its processes outside it.
        var letDaemonsGo = false
        var cancelRequested = false
        var termSentAt: BootInstant?
        var killSentAt: BootInstant?
        /// The shim has ended; its result is not recorded yet.
        var exited = false
        /// Its wait status, when we reaped it.
        var waitStatus: Int32?
        /// The shim could not be started; the claim must be taken back.
        var spawnFailure: String?
        /// Ended or failed without a pidfd to wake the loop: the next tick is due at once.
        var needsTick = false
        /// `--timeout` / `--silence-limit` on the boot clock (`MissionLifecycle.watch`).
        var watch = AttemptWatch(startedAt: Clock.boot())
        var policy = MissionPolicy()
        /// Why the runner is ending it (stored in the row before its SIGTERM).
        var stopCause: StopCause?
        /// Size and inode of `output.log` when last looked at (silence: any change is output).
        var outputMark: (size: Int64, inode: UInt64)?

        init(id: Int64, attempt: Int, shim: MissionShim?, identityRecorded: Bool) {
            self.id = id
            self.attempt = attempt
            self.shim = shim
            self.identityRecorded = identityRecorded
        }
    }

    /// - Parameters:
    ///   - maxParallel: missions running at once (at least 1).
    ///   - shimExecutable: the `vigil` executable to start shims with (`Executable.path`).
    ///   - notify: queues a chat message (idempotency key, text); may be a no-op.
    ///   - termGrace: SIGTERM → SIGKILL wait when a mission is cancelled.
    ///   - busyTimeout: how long one statement of the runner waits for another writer.
    ///   - settings: output cap and environment of missions (`mission-output-cap`, `mission-env`).
    public init(stateDir: StateDirectory, journal: Journal, maxParallel: Int, shimExecutable: String,
                notify: @escaping (_ key: String, _ text: String) -> Void,
                termGrace: TimeSpan = .seconds(5), busyTimeout: TimeSpan = .milliseconds(250),
                settings: MissionSettings = .init()) throws {
        self.settings = settings
        self.stateDir = stateDir
        self.journal = journal
        self.maxParallel = max(1, maxParallel)
        self.shimExecutable = shimExecutable
        self.notify = notify
        self.termGrace = termGrace
        self.busyTimeout = busyTimeout
        self.files = StateFiles(dir: stateDir, journal: journal)
        // The state directory was prepared by the process; gone, it stays gone
        // (docs/operator-guide.md, "The state directory removed or replaced").
        let lockPath = stateDir.missionsLock
        guard let lock = try FileLock.tryLock(lockPath) else {
            throw CommandError("another runner already runs the missions of \(stateDir.path) (it holds \(lockPath)); stop it first")
        }
        self.lock = lock
    }

    /// Touches the wake file (`missionsWake`; the CLI does after `mission add`/`cancel`): an
    /// inotify event for the runner's loop (which watches the state directory), not a durable
    /// record. Touched (`StateFiles.touch`: never blocks; a FIFO or symlink there is
    /// quarantined). Errors are ignored: the runner's next periodic tick sees the change anyway.
    public static func poke(_ stateDir: StateDirectory, journal: Journal? = nil) {
        StateFiles(dir: stateDir, journal: journal ?? Journal(path: stateDir.journal, source: "cli")).touch(stateDir.missionsWake)
    }

    /// Pidfds of the running shims: readable when a shim ended, so its result is recorded at once.
    public var wakeDescriptors: [Int32] {
        tracked.values.filter { !$0.exited }.compactMap { $0.pidfd?.fd } + workspaceWakeDescriptors
    }

    /// When `tick` must run again at the latest (a cancel's SIGTERM → SIGKILL grace, or at once
    /// for a shim that ended before it could be watched), if ever.
    public var nextDeadline: BootInstant? {
        var next: BootInstant? = tracked.values.contains { $0.needsTick } ? Clock.boot() : nil
        if let w = workspaceDeadline { next = next.map { min($0, w) } ?? w }
        for t in tracked.values where t.cancelRequested && !t.exited {
            let due: BootInstant
            if let k = t.killSentAt { due = k + termGrace } else if let s = t.termSentAt { due = s + termGrace } else { due = Clock.boot() }
            next = next.map { min($0, due) } ?? due
        }
        if let r = nextRetryWall {
            // A wall-clock time on the boot clock; never later than the longest backoff from now.
            // Only ahead: one already due is claimed when a slot is free (an ending attempt ticks).
            let wait = min(r - Clock.wall().timeIntervalSince1970, 3600)
            if wait > 0 {
                let due = Clock.boot() + .seconds(wait)
                next = next.map { min($0, due) } ?? due
            }
        }
        for t in tracked.values where !t.cancelRequested && !t.exited {
            guard var due = MissionLifecycle.nextDeadline(t.watch, cancelRequested: t.stopCause != nil, policy: t.policy) else { continue }
            // Silence is judged from output seen at a tick: look at least once a second.
            if t.policy.silenceLimit != nil { due = min(due, Clock.boot() + .seconds(1)) }
            next = next.map { min($0, due) } ?? due
        }
        return next
    }

    /// Missions this runner watches now.
    public var runningCount: Int { tracked.count }

    /// When set, a mission's end notification is queued in the outbox (one row per adapter,
    /// body cleaned by `clean`) in the same transaction that records the end, so a runner
    /// killed right after that commit cannot lose it; `notify` still runs after the commit (a
    /// no-op then: same key). Set before the first `recover`/`tick`.
    public var endNoticesInOutbox: (adapters: [String], clean: (String) -> String)?

    func openQueue() throws -> MissionQueue {
        if let queue { return queue }
        let db = try Database(path: stateDir.database, busyTimeout: busyTimeout.seconds)
        let q = MissionQueue(db: db)
        q.breakerPolicy = settings.keyBreaker
        if let outbox = endNoticesInOutbox {
            q.announce = { id, attempt, settlement, outcome, queuedBy, chatRef in
                guard let n = MissionRunner.endNotice(id: id, attempt: attempt, settlement: settlement, outcome: outcome, queuedBy: queuedBy) else { return [] }
                return MissionRunner.endItems(n, adapters: outbox.adapters, ref: ChatRef.parse(chatRef), clean: outbox.clean)
            }
            let coolOff = settings.keyBreaker.coolOff
            q.announceKey = { key, told in
                let n = MissionRunner.keyNotice(key, told, coolOff: coolOff)
                return outbox.adapters.map { OutboxItem(key: n.key, adapter: $0, body: outbox.clean(n.text)) }
            }
        }
        queue = q
        return q
    }
}
