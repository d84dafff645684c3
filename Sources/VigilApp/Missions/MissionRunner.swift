import Foundation
import Glibc
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
    private let lock: FileLock
    private let files: StateFiles
    private var queue: MissionQueue?
    private var recovered = false
    private var tracked: [Int64: Tracked] = [:]
    private var lastDataVersion: Int64? = nil
    private var claimNeeded = true
    /// Checkpoint retention (docs/missions.md, "Checkpoints"): missions that ended up to this
    /// wall time have had theirs removed; pruned at start-up recovery and then hourly.
    private var checkpointsPrunedUpTo: Double = 0
    private var lastCheckpointPrune: BootInstant?
    /// The earliest pending retry or paused key's trial (wall-clock seconds): a claim pass is due then.
    private var nextRetryWall: Double?

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
        let lockPath = stateDir.file("missions.lock")
        guard let lock = try FileLock.tryLock(lockPath) else {
            throw CommandError("another runner already runs the missions of \(stateDir.path) (it holds \(lockPath)); stop it first")
        }
        self.lock = lock
    }

    /// The wake file the CLI touches after `mission add`/`cancel`: an inotify event for the
    /// runner's loop (which watches the state directory), not a durable record.
    public static func wakeFile(_ stateDir: StateDirectory) -> String { stateDir.file("missions.wake") }

    /// Touches the wake file (`StateFiles.touch`: never blocks; a FIFO or symlink there is
    /// quarantined). Errors are ignored: the runner's next periodic tick sees the change anyway.
    public static func poke(_ stateDir: StateDirectory, journal: Journal? = nil) {
        StateFiles(dir: stateDir, journal: journal ?? Journal(path: stateDir.journal, source: "cli")).touch(wakeFile(stateDir))
    }

    /// Pidfds of the running shims: readable when a shim ended, so its result is recorded at once.
    public var wakeDescriptors: [Int32] {
        tracked.values.filter { !$0.exited }.compactMap { $0.pidfd?.fd }
    }

    /// When `tick` must run again at the latest (a cancel's SIGTERM → SIGKILL grace, or at once
    /// for a shim that ended before it could be watched), if ever.
    public var nextDeadline: BootInstant? {
        var next: BootInstant? = tracked.values.contains { $0.needsTick } ? Clock.boot() : nil
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

    /// The runner's queue once opened (the benchmark claims through it).
    var queueForBench: MissionQueue? { queue }

    /// Missions this runner watches now.
    public var runningCount: Int { tracked.count }

    /// When set, a mission's end notification is queued in the outbox (one row per adapter,
    /// body cleaned by `clean`) in the same transaction that records the end, so a runner
    /// killed right after that commit cannot lose it; `notify` still runs after the commit (a
    /// no-op then: same key). Set before the first `recover`/`tick`.
    public var endNoticesInOutbox: (adapters: [String], clean: (String) -> String)?

    private func openQueue() throws -> MissionQueue {
        if let queue { return queue }
        let db = try Database(path: stateDir.database, busyTimeout: busyTimeout.seconds)
        let q = MissionQueue(db: db)
        q.breakerPolicy = settings.keyBreaker
        if let outbox = endNoticesInOutbox {
            q.announce = { id, attempt, settlement, outcome, queuedBy in
                guard let n = MissionRunner.endNotice(id: id, attempt: attempt, settlement: settlement, outcome: outcome, queuedBy: queuedBy) else { return [] }
                let body = outbox.clean(n.text)
                return outbox.adapters.map { (key: n.key, adapter: $0, body: body) }
            }
            let coolOff = settings.keyBreaker.coolOff
            q.announceKey = { key, told in
                let n = MissionRunner.keyNotice(key, told, coolOff: coolOff)
                return outbox.adapters.map { (key: n.key, adapter: $0, body: outbox.clean(n.text)) }
            }
        }
        queue = q
        return q
    }

    /// The chat message for an attempt that ended its mission (nil when it did not: requeued,
    /// reverted, stale, or cancelled because its shim died).
    static func endNotice(id: Int64, attempt: Int, settlement: MissionQueue.Settlement,
                          outcome: MissionQueue.SettleOutcome, queuedBy: String? = nil) -> (key: String, text: String)? {
        let key = "mission-\(id)-\(attempt)-end"
        // Who asked for it, when a chat user did (the notice is for them).
        let by = queuedBy.flatMap { $0.hasPrefix("chat ") ? " (queued by \($0.dropFirst(5)))" : nil } ?? ""
        switch outcome {
        case .ended(let state, let reason):
            var text = "Mission \(id)\(by) \(state == .done ? "done" : state.rawValue)"
            if case .finished(let r) = settlement { text += " (exit \(r.exitCode))" }
            if let reason { text += ": \(reason)" }
            return (key, text + ".")
        case .died(.failed(let reason)):
            return (key, "Mission \(id)\(by) failed: \(reason)")
        case .retry(let at, let reason):
            let wait = max(0, at - Clock.wall().timeIntervalSince1970)
            return (key, "Mission \(id)\(by) \(reason), in \(TimeSpan.seconds(wait.rounded()))." )
        default:
            return nil
        }
    }

    /// The chat message for a key whose breaker paused or closed (docs/missions.md, "A breaker
    /// per key"); its outbox key is unique per event.
    static func keyNotice(_ key: String, _ told: KeyBreaker.Told, coolOff: TimeSpan) -> (key: String, text: String) {
        let stamp = Int64(Clock.wall().timeIntervalSince1970 * 1000)
        switch told {
        case .paused(let failures):
            return ("key-\(key)-paused-\(stamp)", "Lock key \(key) is paused: \(failures) missions on it failed in a row, so the missions waiting for it do not start. One is tried again in \(coolOff); `vigil mission resume-key \(key)` resumes it now.")
        case .closed:
            return ("key-\(key)-closed-\(stamp)", "Lock key \(key) works again: missions on it start as usual.")
        }
    }

    /// Journals (and, without the outbox, notifies) what the key breakers did in the last commit.
    private func reportKeyEvents(_ q: MissionQueue) {
        for (key, told) in q.takeKeyEvents() {
            switch told {
            case .paused(let failures):
                journal.append("mission-key-paused", ["key": .string(key), "failures": .int(Int64(failures)),
                                                      "cooloff_ms": .int(Int64(settings.keyBreaker.coolOff.milliseconds))])
            case .closed:
                journal.append("mission-key-resumed", ["key": .string(key), "by": "a mission that succeeded"])
            }
            if endNoticesInOutbox == nil {
                let n = MissionRunner.keyNotice(key, told, coolOff: settings.keyBreaker.coolOff)
                notify(n.key, n.text)
            }
        }
    }

    private func announceEnd(_ id: Int64, _ attempt: Int, _ settlement: MissionQueue.Settlement, _ outcome: MissionQueue.SettleOutcome) {
        if let n = MissionRunner.endNotice(id: id, attempt: attempt, settlement: settlement, outcome: outcome) { notify(n.key, n.text) }
    }

    // MARK: - Recovery

    /// Start-up recovery, in order: reattach live shims → record the others' ended attempts as
    /// the tick does (result, corrupt result, or a dead shim: requeue or fail) → release locks
    /// of dead holders → only then clean orphans. Journals
    /// the summary and hands it to `notify` when not empty. Idempotent: when it throws (the
    /// database is unavailable), calling it again redoes what is left; no mission starts
    /// before it succeeded.
    @discardableResult
    public func recover() throws -> MissionRecoverySummary {
        let q = try openQueue()
        recovered = false
        tracked.removeAll()
        var summary = MissionRecoverySummary()
        let running = try q.running()
        let shims = MissionProcesses.shims(of: stateDir)

        // 1. Reattach missions whose shim is alive.
        var rest: [Mission] = []
        var toRecord: [(id: Int64, attempt: Int, shim: MissionShim)] = []
        for m in running {
            if let (shim, recorded) = MissionRunner.shimCandidate(of: m, among: shims), let fd = shim.identity.openPidFD() {
                watch(m, shim: shim, pidfd: fd, recorded: recorded)
                if !recorded { toRecord.append((m.id, m.attempts, shim)) }
                summary.reattached += 1
            } else {
                rest.append(m)
            }
        }
        try q.recordShims(toRecord)
        for r in toRecord { tracked[r.id]?.identityRecorded = true }

        // 2. The others' attempts are over: record each as the tick records an ended attempt
        //    (`judge`, then `settle` and `record`), one transaction each.
        for m in rest {
            let ended = judge(id: m.id, attempt: m.attempts, shim: m.shim, waitStatus: nil)
            let outcome = try q.settle(id: m.id, attempt: m.attempts, ended.settlement)
            reportKeyEvents(q)
            record(id: m.id, attempt: m.attempts, ended, outcome, summary: &summary)
            if case .died = outcome, m.lockKey != nil { summary.locksReleased += 1 }
            if case .shimDied = ended.settlement { CrashPoint.hit("recovery-after-requeue") }
        }

        // 3. Release locks held by dead holders.
        summary.locksReleased += try q.releaseStaleLocks()

        // 4. Only now: orphans.
        summary.orphansCleaned = try cleanOrphans(q, &summary)
        checkpointsPrunedUpTo = 0 // every mission that ended long enough ago, at the first prune
        lastCheckpointPrune = nil

        recovered = true
        lastDataVersion = nil
        claimNeeded = true
        var fields = summary.journalFields
        fields["cgroup"] = .string(MissionCgroup.probe(stateDir))
        journal.append("missions-recovered", fields)
        if !summary.isEmpty {
            notify("missions-recovered-\(Clock.bootID)-\(ProcessIdentity.current.pid)-\(ProcessIdentity.current.startTicks)", summary.text)
        }
        return summary
    }

    /// The shim that may run the current attempt of a running mission: the recorded one (this
    /// boot), or, when none is recorded yet (the runner stopped between spawn and record), a
    /// shim of this attempt found in /proc by its argv. Whether it is alive is the caller's
    /// question (recovery opens a pidfd; `vigil doctor` asks /proc).
    static func shimCandidate(of m: Mission, among shims: [MissionProcesses.ShimProcess]) -> (shim: MissionShim, recorded: Bool)? {
        if let shim = m.shim { return shim.bootID == Clock.bootID ? (shim, true) : nil }
        guard let p = shims.first(where: { $0.mission == m.id && $0.attempt == m.attempts }) else { return nil }
        return (MissionShim(identity: p.identity, bootID: Clock.bootID), false)
    }

    private func watch(_ m: Mission, shim: MissionShim, pidfd: PidFD, recorded: Bool) {
        let t = Tracked(id: m.id, attempt: m.attempts, shim: shim, identityRecorded: recorded)
        t.letDaemonsGo = m.letDaemonsGo
        t.pidfd = pidfd
        t.cancelRequested = m.cancelRequested
        t.policy = policy(of: m)
        t.stopCause = m.stopCause
        // The attempt's start on the boot clock, from its wall-clock start (as close as a
        // restarted runner can know it; never in the future).
        let now = Clock.boot()
        let ran = m.startedAt.map { max(0, Clock.wall().timeIntervalSince($0)) } ?? 0
        t.watch = AttemptWatch(startedAt: now - .seconds(ran), lastOutputAt: now)
        tracked[m.id] = t
    }

    /// The limits that apply to `m`: its own, else the configured defaults.
    private func policy(of m: Mission) -> MissionPolicy {
        MissionPolicy(maxAttempts: m.maxAttempts, timeout: m.timeout ?? settings.timeout, silenceLimit: m.silenceLimit ?? settings.silenceLimit,
                      termGrace: termGrace)
    }

    private func report(_ outcome: MissionQueue.ShimDeath?, id: Int64, attempt: Int, reason: String, summary: inout MissionRecoverySummary) {
        guard let outcome else { return }
        var fields: [String: JSONValue] = ["mission": .int(id), "attempt": .int(Int64(attempt)), "reason": .string(reason)]
        switch outcome {
        case .requeued, .requeuedUncounted:
            summary.requeued += 1
            fields["uncounted"] = .bool(outcome == .requeuedUncounted)
            journal.append("mission-requeued", fields)
        case .failed(let text):
            summary.failed += 1
            fields["reason"] = .string(text)
            journal.append("mission-failed", fields)
        case .cancelled:
            summary.cancelled += 1
            journal.append("mission-cancelled", fields)
        }
    }

    /// Shims no running attempt claims (with their attempt's processes), processes of missions
    /// that have not ended and that no live shim runs, scratch directories of missions that do
    /// not run; mission directories without a row are moved to quarantine/.
    /// A shim of the attempt after a pending mission's starts is adopted instead (reattached):
    /// its claim was taken back in step 2 because the shim was not visible yet (a spawn a killed
    /// runner never recorded); killing it would start the mission a second time.
    private func cleanOrphans(_ q: MissionQueue, _ summary: inout MissionRecoverySummary) throws -> Int {
        var cleaned = 0
        for p in MissionRunner.orphanShims(of: stateDir, claimed: Set(tracked.values.compactMap { $0.shim?.identity })) {
            // Only for this very row (its directory's owner record): after a restored backup, a
            // shim of a lost row with the same id is not this mission's.
            if tracked[p.mission] == nil, let pending = try q.mission(p.mission), pending.state == .pending, pending.attempts == p.attempt - 1,
               case .ok(let owner) = StateFile.read(MissionPaths(stateDir: stateDir, id: p.mission).owner, kind: MissionOwner.kind, as: MissionOwner.self),
               owner.owns(pending), let fd = p.identity.openPidFD(),
               let m = try q.adopt(id: p.mission, attempt: p.attempt, shim: MissionShim(identity: p.identity, bootID: Clock.bootID)) {
                watch(m, shim: m.shim!, pidfd: fd, recorded: true)
                journal.append("mission-adopted", ["mission": .int(m.id), "attempt": .int(Int64(m.attempts)), "shim_pid": .int(Int64(p.identity.pid))])
                summary.reattached += 1
                continue
            }
            MissionProcesses.killSession(of: p.identity)
            // Its attempt never reached its end (nothing was let go): what it started outside
            // its session goes too, unless a live shim runs that mission now.
            if tracked[p.mission] == nil {
                MissionProcesses.killMembers(of: stateDir, mission: p.mission, patience: .milliseconds(500), startedSince: p.identity.startTicks)
            }
            journal.append("mission-orphan-killed", ["pid": .int(Int64(p.identity.pid)), "mission": .int(p.mission),
                                                     "attempt": .int(Int64(p.attempt)), "what": "shim session"])
            cleaned += 1
        }
        // Mission cgroups of missions that do not run (what a killed shim left: processes of an
        // attempt that never reached its end, or an empty cgroup). What was let go is never in
        // one (it was moved to the parent at the end).
        for (id, group) in MissionCgroup.all(of: stateDir) where tracked[id] == nil {
            let n = group.kill(patience: .milliseconds(500)).killed
            if n > 0 {
                journal.append("mission-orphan-killed", ["mission": .int(id), "what": "cgroup", "processes": .int(Int64(n)), "cgroup": .string(group.cgroup.path)])
                cleaned += 1
            }
        }
        let claimed = Set(tracked.values.compactMap { $0.shim?.identity.pid })
        for p in try MissionRunner.orphanProcesses(of: stateDir, q, claimedSessions: claimed, watched: Set(tracked.keys)) {
            if p.identity.signal(SIGKILL) {
                journal.append("mission-orphan-killed", ["pid": .int(Int64(p.identity.pid)), "mission": .int(p.mission), "what": "process"])
                cleaned += 1
            }
        }
        let paths = try MissionRunner.orphanPaths(of: stateDir, q, running: Set(tracked.keys))
        for dir in paths.directories {
            // Never deleted: it holds the output and result of a mission this database does not
            // know (restored from an older backup?).
            guard let id = Int64((dir as NSString).lastPathComponent) else { continue }
            if quarantineDirectory(id, why: "no mission \(id) in the database (it was restored from an older backup, or the row was removed)") {
                cleaned += 1
            }
        }
        for dir in paths.scratch where (try? FileManager.default.removeItem(atPath: dir)) != nil {
            journal.append("mission-orphan-removed", ["path": .string(dir), "what": "scratch directory"])
            cleaned += 1
        }
        return cleaned
    }

    // MARK: - Orphans (read-only: recovery's last step acts on them, `vigil doctor` reports them)

    /// Live shims of `stateDir` that are none of `claimed` (the shims of running attempts).
    static func orphanShims(of stateDir: StateDirectory, claimed: Set<ProcessIdentity>) -> [MissionProcesses.ShimProcess] {
        MissionProcesses.shims(of: stateDir).filter { !claimed.contains($0.identity) }
    }

    /// Mission processes of `stateDir` (by environment) whose mission has not ended and that no
    /// live shim runs (docs/missions.md, "Every process of a mission"): outside
    /// `claimedSessions`, of a mission not in `watched` (running with a live shim, whose shim
    /// decides at the end), and whose mission has not ended. A mission has ended when its row is
    /// final or its directory holds its result (its shim killed or let go what was left then):
    /// what still lives of it is forgotten, never killed. A mission with no row and no
    /// directory is not known here: its processes are left alone too.
    static func orphanProcesses(of stateDir: StateDirectory, _ q: MissionQueue, claimedSessions: Set<Int32>,
                                watched: Set<Int64>) throws -> [MissionProcesses.MemberProcess] {
        // A process in the session of a live shim of its mission is that shim's business: a
        // claimed one decides at the end, an orphan one is killed with its session (a shim that
        // appeared after `orphanShims` looked, from a spawn a killed runner never recorded,
        // is left to the next recovery).
        let candidates = MissionProcesses.members(of: stateDir).filter { p in
            guard !claimedSessions.contains(p.session), !watched.contains(p.mission) else { return false }
            if let leader = ProcStat.read(pid: p.session), !leader.isZombie,
               MissionProcesses.parseShim(ProcStat.commandLine(pid: p.session), stateDir: stateDir)?.mission == p.mission { return false }
            return true
        }
        let ids = Array(Set(candidates.map(\.mission))).sorted()
        let states = try q.states(ids)
        var notEnded = Set<Int64>()
        for id in ids where !(states[id]?.isFinal ?? false) {
            let paths = MissionPaths(stateDir: stateDir, id: id)
            if case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self), r.mission == id { continue }
            if states[id] == nil && access(paths.directory, F_OK) != 0 { continue }
            notEnded.insert(id)
        }
        return candidates.filter { notEnded.contains($0.mission) }
    }

    /// Mission directories with no row (recovery moves them to quarantine/), and scratch
    /// directories of missions that are not in `running`.
    static func orphanPaths(of stateDir: StateDirectory, _ q: MissionQueue, running: Set<Int64>) throws -> (directories: [String], scratch: [String]) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: stateDir.missions)) ?? []
        let ids = names.compactMap { Int64($0) }.sorted()
        let existing = try q.existing(ids)
        var directories: [String] = []
        var scratch: [String] = []
        for id in ids where !running.contains(id) {
            let paths = MissionPaths(stateDir: stateDir, id: id)
            if !existing.contains(id) {
                directories.append(paths.directory)
            } else if access(paths.scratch, F_OK) == 0 {
                scratch.append(paths.scratch)
            }
        }
        return (directories, scratch)
    }

    // MARK: - Tick

    /// Records ended attempts, processes cancels, and claims and starts due missions up to
    /// `maxParallel` (respecting lock keys). Never waits for a child and never holds a
    /// transaction while anything runs: ended attempts, identities and claims share one
    /// transaction, the fresh shims' identities a second. Runs `recover()` first when it has
    /// not succeeded yet.
    public func tick(now: BootInstant) throws {
        processCancels(now: now)
        let q = try openQueue()
        if !recovered { try recover() }
        if lastCheckpointPrune.map({ now - $0 >= .seconds(3600) }) ?? true {
            lastCheckpointPrune = now
            pruneCheckpoints(q)
        }

        // Ended shims and failed starts: decide what happened (no database yet).
        var plan: [(t: Tracked, ended: EndedAttempt)] = []
        for t in tracked.values.sorted(by: { $0.id < $1.id }) {
            t.needsTick = false
            if let failure = t.spawnFailure {
                plan.append((t, EndedAttempt(settlement: .revert(reason: failure))))
                continue
            }
            if !t.exited, let fd = t.pidfd, fd.hasExited {
                t.waitStatus = fd.reapIfChild()
                t.exited = true
            }
            guard t.exited else { continue }
            plan.append((t, judge(id: t.id, attempt: t.attempt, shim: t.shim, waitStatus: t.waitStatus ?? 0)))
        }

        // Changes by other processes: new missions, cancels.
        let version = try q.dataVersion()
        if version != lastDataVersion {
            for m in try q.running() {
                if let t = tracked[m.id], t.attempt == m.attempts { t.cancelRequested = m.cancelRequested }
            }
            lastDataVersion = version
            claimNeeded = true
        }

        if let r = nextRetryWall, Clock.wall().timeIntervalSince1970 >= r { claimNeeded = true }

        // One transaction: settle, record identities left from an earlier failure, claim.
        let unrecorded = tracked.values.filter { !$0.identityRecorded && $0.shim != nil && !$0.exited }
        let free = maxParallel - (tracked.count - plan.count)
        let claimLimit = (claimNeeded || !plan.isEmpty) && free > 0 ? free : 0
        if !plan.isEmpty || !unrecorded.isEmpty || claimLimit > 0 {
            let (outcomes, claimed) = try q.settleAndClaim(
                plan.map { ($0.t.id, $0.t.attempt, $0.ended.settlement) },
                recordShims: unrecorded.map { ($0.id, $0.attempt, $0.shim!) },
                claimLimit: claimLimit)
            for t in unrecorded { t.identityRecorded = true }
            reportKeyEvents(q)
            if claimLimit > 0 {
                claimNeeded = false
                // The next moment a claim may find more: a retry due, a paused key's trial.
                nextRetryWall = [try? q.nextRetry(), try? q.nextBreakerTrial()].compactMap { $0 }.min()
            }
            var summary = MissionRecoverySummary() // counted for recovery only
            for (item, outcome) in zip(plan, outcomes) {
                tracked[item.t.id] = nil
                record(id: item.t.id, attempt: item.t.attempt, item.ended, outcome, summary: &summary)
            }
            for m in claimed { start(m) }
            let fresh = claimed.compactMap { tracked[$0.id] }.filter { $0.shim != nil && !$0.identityRecorded }
            if !fresh.isEmpty {
                try q.recordShims(fresh.map { ($0.id, $0.attempt, $0.shim!) })
                for t in fresh { t.identityRecorded = true }
            }
        }

        processCancels(now: now)
    }

    /// Cancels: SIGTERM to the mission's groups, SIGKILL after the grace (again every grace
    /// while the shim lives, for a child that appeared late). Needs no database, so it runs
    /// before the tick's first database call too: a locked database cannot stall a cancel.
    private func processCancels(now: BootInstant) {
        for t in tracked.values where t.cancelRequested && !t.exited {
            guard let shim = t.shim else { continue }
            if t.termSentAt == nil {
                let n = MissionRunner.signalMission(t.id, shim: shim.identity, SIGTERM, stateDir: stateDir, letDaemonsGo: t.letDaemonsGo)
                t.termSentAt = now
                journal.append("mission-cancel", ["mission": .int(t.id), "signal": "SIGTERM", "groups": .int(Int64(n)),
                                                  "grace_ms": .int(Int64(termGrace.milliseconds))])
            } else if now >= (t.killSentAt ?? t.termSentAt!) + termGrace {
                let n = MissionRunner.signalMission(t.id, shim: shim.identity, SIGKILL, stateDir: stateDir, letDaemonsGo: t.letDaemonsGo)
                if t.killSentAt == nil || n > 0 {
                    journal.append("mission-cancel", ["mission": .int(t.id), "signal": "SIGKILL", "groups": .int(Int64(n))])
                }
                t.killSentAt = now
            }
        }
        processLimits(now: now)
    }

    /// `--timeout` and `--silence-limit` (docs/missions.md, "Timeouts and silence"): the cause
    /// goes into the row first (so the reason survives a runner restart), then SIGTERM to every
    /// process of the mission, SIGKILL after the grace and again every grace while it lives.
    private func processLimits(now: BootInstant) {
        for t in tracked.values where !t.cancelRequested && !t.exited {
            guard let shim = t.shim, t.stopCause != nil || t.policy.timeout != nil || t.policy.silenceLimit != nil else { continue }
            if t.policy.silenceLimit != nil {
                var st = stat()
                let path = MissionPaths(stateDir: stateDir, id: t.id).output
                let mark = stat(path, &st) == 0 ? (Int64(st.st_size), UInt64(st.st_ino)) : nil
                if let mark, let old = t.outputMark, old != mark { t.watch.lastOutputAt = now }
                t.outputMark = mark
            }
            let (w, action) = MissionLifecycle.watch(t.watch, cancelRequested: t.stopCause != nil, policy: t.policy, now: now)
            t.watch = w
            guard case .signal(let sig)? = action else { continue }
            if sig == MissionLifecycle.sigterm, t.stopCause == nil, let cause = w.stopping, cause != .cancel {
                let limit = (cause == .timeout ? t.policy.timeout : t.policy.silenceLimit) ?? .zero
                do {
                    try queue?.requestStop(id: t.id, attempt: t.attempt, cause: cause, limit: limit)
                } catch {
                    journal.append("mission-stop-unrecorded", ["mission": .int(t.id), "cause": .string(cause.rawValue), "error": .string("\(error)")])
                }
                t.stopCause = cause
                journal.append(cause == .timeout ? "mission-timeout" : "mission-silent",
                               ["mission": .int(t.id), "attempt": .int(Int64(t.attempt)), "limit_ms": .int(Int64(limit.milliseconds)),
                                "grace_ms": .int(Int64(termGrace.milliseconds))])
            }
            let n = MissionRunner.signalMission(t.id, shim: shim.identity, sig, stateDir: stateDir, letDaemonsGo: t.letDaemonsGo)
            if sig == MissionLifecycle.sigkill && n > 0 {
                journal.append("mission-stop-kill", ["mission": .int(t.id), "signal": "SIGKILL", "processes": .int(Int64(n))])
            }
        }
    }

    /// Removes the checkpoints of missions that ended more than `CheckpointStore.retention` ago
    /// (each journaled `mission-checkpoints-removed`). Incremental: only missions that ended
    /// since the last prune's cutoff are looked at.
    private func pruneCheckpoints(_ q: MissionQueue) {
        let cutoff = Clock.wall().timeIntervalSince1970 - CheckpointStore.retention.seconds
        guard cutoff > checkpointsPrunedUpTo, let ids = try? q.endedBetween(after: checkpointsPrunedUpTo, before: cutoff) else { return }
        for id in ids where CheckpointStore(stateDir: stateDir, mission: id).removeAll() {
            journal.append("mission-checkpoints-removed", ["mission": .int(id), "retention_s": .int(Int64(CheckpointStore.retention.seconds))])
        }
        checkpointsPrunedUpTo = cutoff
    }

    /// Sends `signal` to every process of a running mission, each once: those in its cgroup
    /// when it has one (everything the command started is born there), else the process
    /// groups of its shim's session and the processes carrying its tag (started since its
    /// shim); with `letDaemonsGo`, only the groups of its session. Returns how many
    /// processes (cgroup) or groups and processes (otherwise) were signalled.
    static func signalMission(_ id: Int64, shim: ProcessIdentity, _ signal: Int32, stateDir: StateDirectory, letDaemonsGo: Bool) -> Int {
        // --let-daemons-go: only the session; what left it is the mission's to keep.
        if letDaemonsGo { return MissionProcesses.signalSession(of: shim, signal, sparingShim: true) }
        if let group = MissionCgroup.of(stateDir, mission: id), group.cgroup.isPopulated {
            return group.signal(signal)
        }
        return MissionProcesses.signalSession(of: shim, signal, sparingShim: true)
            + MissionProcesses.signalMembers(of: stateDir, mission: id, signal, outside: shim.pid, startedSince: shim.startTicks)
    }

    /// How an attempt ended, as `judge` read it from its files.
    struct EndedAttempt {
        var settlement: MissionQueue.Settlement
        /// The result file was corrupt: why (it is quarantined after the commit).
        var corrupt: String?
    }

    /// What ended attempt `attempt` of mission `id`: the one place that decides it, for the
    /// tick (its shim exited: `waitStatus` is set, 0 when it could not be reaped) and for
    /// start-up recovery (its shim is gone: nil). A result, a corrupt result, a shim that
    /// found another shim of the mission running (`ShimMain.busyExit`: the claim is taken back),
    /// or a shim that died without a result. For that last one, what the attempt left is
    /// killed here, before the commit can let the mission or its key be claimed again.
    private func judge(id: Int64, attempt: Int, shim: MissionShim?, waitStatus: Int32?) -> EndedAttempt {
        let paths = MissionPaths(stateDir: stateDir, id: id)
        switch StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self) {
        case .ok(let r) where r.mission == id && r.attempt == attempt:
            return EndedAttempt(settlement: .finished(r))
        case .corrupt(let why):
            return EndedAttempt(settlement: .resultCorrupt(why: why), corrupt: why)
        case .ok, .absent:
            break
        }
        if let status = waitStatus, exitCode(fromWaitStatus: status) == ShimMain.busyExit {
            // Another shim of this mission (left by a runner that died before recording it)
            // holds the run lock: the mission is claimed again once that one has finished
            // and its result is found.
            return EndedAttempt(settlement: .revert(reason: "another shim of this mission was still running"))
        }
        // No result: nothing was let go, so all of the attempt goes (what started after its
        // shim). Only for a shim known to have died in this boot: a claim whose shim was never
        // recorded may have a live one that recovery could not see yet, whose mission must not
        // be killed (it holds the run lock; its result is found later); a shim of an earlier
        // boot left nothing running.
        if let shim, shim.bootID == Clock.bootID {
            MissionProcesses.killSession(of: shim.identity)
            MissionCgroup.of(stateDir, mission: id)?.kill(patience: .milliseconds(500))
            MissionProcesses.killMembers(of: stateDir, mission: id, patience: .milliseconds(500), startedSince: shim.identity.startTicks)
        }
        // May its command have started? We saw its shim run, or it was recorded, or an
        // unrecorded one (a lost spawn) got as far as making scratch/, which it does just
        // before spawning the command (and which is removed after every attempt). Only "no"
        // lets an at-most-once mission run again (docs/missions.md, "Lifecycle").
        let scratchLeft = FileManager.default.fileExists(atPath: paths.scratch)
        let reason: String
        if let shim {
            reason = "its shim (\(shim.identity)) ended without recording an exit status"
        } else if scratchLeft || waitStatus != nil {
            reason = "its shim (never recorded: the runner stopped in between) ended without recording an exit status"
        } else {
            reason = "it was claimed but its shim never started (the runner stopped in between)"
        }
        return EndedAttempt(settlement: .shimDied(reason: reason, countAttempt: shim != nil || scratchLeft || waitStatus != nil))
    }

    /// A result's exit status and what its shim did with the mission's processes outside its
    /// session (`outside_killed`, `outside_let_go`, `outside_left`, when not 0), for
    /// `mission-finished`.
    static func addResult(_ r: MissionResult, to fields: inout [String: JSONValue]) {
        fields["exit_code"] = .int(Int64(r.exitCode))
        if let s = r.signal { fields["signal"] = .int(Int64(s)) }
        if let n = r.outsideKilled { fields["outside_killed"] = .int(Int64(n)) }
        if let n = r.outsideLetGo { fields["outside_let_go"] = .int(Int64(n)) }
        if let n = r.outsideLeft { fields["outside_left"] = .int(Int64(n)) }
    }

    /// After the commit of an ended attempt (tick and recovery alike): quarantine a corrupt
    /// result, journal, tell chat, clean up after a dead shim, and count it in `summary`.
    private func record(id: Int64, attempt: Int, _ ended: EndedAttempt, _ outcome: MissionQueue.SettleOutcome,
                        summary: inout MissionRecoverySummary) {
        let settlement = ended.settlement
        var fields: [String: JSONValue] = ["mission": .int(id), "attempt": .int(Int64(attempt))]
        if case .finished(let r) = settlement { MissionRunner.addResult(r, to: &fields) }
        switch outcome {
        case .stale:
            return
        case .reverted:
            journal.append("mission-start-reverted", fields)
            claimNeeded = true // try again (e.g. the executable was being replaced)
        case .retry(let at, let reason):
            fields["reason"] = .string(reason)
            fields["retry_at"] = .string(Clock.iso(Date(timeIntervalSince1970: at)))
            journal.append("mission-retry-scheduled", fields)
            nextRetryWall = min(nextRetryWall ?? at, at)
            summary.finalized += 1
            announceEnd(id, attempt, settlement, outcome)
        case .died(let death):
            guard case .shimDied(let reason, _) = settlement else { return }
            report(death, id: id, attempt: attempt, reason: reason, summary: &summary)
            cleanAfterDeadShim(id)
            announceEnd(id, attempt, settlement, outcome)
        case .ended(let state, let reason):
            if let why = ended.corrupt {
                // The database first: if we are killed between the two, the row is final and
                // the leftover file harms nobody.
                files.quarantine(MissionPaths(stateDir: stateDir, id: id).result, reason: "result of mission \(id) attempt \(attempt): \(why)")
                summary.failed += 1
            } else {
                summary.finalized += 1
            }
            fields["state"] = .string(state.rawValue)
            if let reason { fields["reason"] = .string(reason) }
            journal.append(ended.corrupt == nil ? "mission-finished" : "mission-failed", fields)
            announceEnd(id, attempt, settlement, outcome)
        }
    }

    /// Starts the shim of a claimed mission (after the claim committed).
    private func start(_ m: Mission) {
        CrashPoint.hit("after-claim")
        let t = Tracked(id: m.id, attempt: m.attempts, shim: nil, identityRecorded: false)
        t.letDaemonsGo = m.letDaemonsGo
        t.policy = policy(of: m)
        tracked[m.id] = t
        let paths = MissionPaths(stateDir: stateDir, id: m.id)
        do {
            try claimDirectory(m, paths)
            // An older attempt's result goes; this attempt's stays (a shim of it ran already,
            // started by a runner that died before recording it): the new shim sees it and
            // runs nothing, and the result is recorded.
            if case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self),
               r.mission == m.id, r.attempt == m.attempts {
            } else {
                unlink(paths.result)
            }
            var options = Spawner.Options()
            options.newSession = true
            options.outputPath = paths.output
            options.workingDirectory = "/"
            let identity = try Spawner.spawn(MissionProcesses.shimArguments(executable: shimExecutable, stateDir: stateDir, mission: m, settings: settings), options)
            t.shim = MissionShim(identity: identity, bootID: Clock.bootID)
            if let fd = identity.openPidFD() {
                t.pidfd = fd
            } else {
                // Already ended (a zombie child of ours): nothing to poll; record it next tick.
                Spawner.reap(identity.pid)
                t.exited = true
                t.needsTick = true
            }
            journal.append("mission-started", ["mission": .int(m.id), "attempt": .int(Int64(m.attempts)),
                                               "shim_pid": .int(Int64(identity.pid))])
        } catch {
            t.spawnFailure = "cannot start its shim: \(error)"
            t.needsTick = true
            journal.append("mission-start-failed", ["mission": .int(m.id), "error": .string("\(error)")])
        }
        CrashPoint.hit("after-spawn")
    }

    /// Makes `m`'s directory, or checks that the one there is its own (its `owner` record names
    /// this row): a directory another row of the same id left (a database restored from an
    /// older backup hands out the ids again) is moved to quarantine/ first, so the mission
    /// never appends to that output or takes that result for its own. Throws (the start fails
    /// and is retried) when such a directory cannot be moved.
    private func claimDirectory(_ m: Mission, _ paths: MissionPaths) throws {
        var why: String? = nil
        switch StateFile.read(paths.owner, kind: MissionOwner.kind, as: MissionOwner.self) {
        case .ok(let o) where o.owns(m):
            return
        case .ok(let o):
            why = "it was made for another mission \(o.mission) (created \(Clock.iso(Date(timeIntervalSince1970: o.created)))), not for this one (created \(Clock.iso(m.createdAt))): the database was restored from an older backup?"
        case .corrupt(let c):
            why = "its owner record is corrupt (\(c))"
        case .absent:
            AtomicFile.sweepTemps(in: paths.directory) // a runner killed while writing `owner`
            if !((try? FileManager.default.contentsOfDirectory(atPath: paths.directory)) ?? []).isEmpty {
                why = "it holds files but no owner record (left before mission \(m.id) existed, or by an older Vigil)"
            }
        }
        if let why, !quarantineDirectory(m.id, why: why) {
            throw CommandError("its directory \(paths.directory) was left by another mission and could not be moved to \(stateDir.quarantine)")
        }
        try stateDir.makeDirectory(paths.directory) // never re-creates a removed state dir
        try StateFile.write(MissionOwner(m), kind: MissionOwner.kind, to: paths.owner)
    }

    /// Sets `missions/ID/` aside for good: moved into quarantine/ (as `mission-ID.…`; never
    /// deleted), or removed when empty (nothing in it to keep), and journals it
    /// (`mission-dir-unclaimed`: `why`, `action`, `moved_to`, and the `result` it holds, if
    /// valid, so the journal keeps how that mission ended). Returns whether it is out of the way.
    @discardableResult
    private func quarantineDirectory(_ id: Int64, why: String) -> Bool {
        let paths = MissionPaths(stateDir: stateDir, id: id)
        var fields: [String: JSONValue] = ["mission": .int(id), "path": .string(paths.directory), "why": .string(why)]
        if case .ok(let r) = StateFile.read(paths.result, kind: MissionResult.kind, as: MissionResult.self), r.mission == id {
            var result: [String: JSONValue] = ["attempt": .int(Int64(r.attempt)), "finished": .string(r.finished)]
            MissionRunner.addResult(r, to: &result)
            fields["result"] = .object(result)
        }
        var gone = true
        if rmdir(paths.directory) == 0 {
            fields["action"] = "removed (it was empty)"
            try? AtomicFile.fsyncDirectory(stateDir.missions)
        } else if let target = files.moveToQuarantine(paths.directory, name: "mission-\(id)") {
            fields["action"] = "quarantined"
            fields["moved_to"] = .string(target)
        } else {
            fields["action"] = "kept (it could not be moved to quarantine/)"
            gone = false
        }
        journal.append("mission-dir-unclaimed", fields)
        return gone
    }

    /// What a dead shim could not clean: its scratch directory and a half-written result.
    private func cleanAfterDeadShim(_ id: Int64) {
        let paths = MissionPaths(stateDir: stateDir, id: id)
        try? FileManager.default.removeItem(atPath: paths.scratch)
        AtomicFile.sweepTemps(in: paths.directory)
    }
}
