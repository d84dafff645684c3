/// The life of a mission as a pure state machine, like `HealMachine`: a fact about the
/// mission, its stored record, its policy and the time go in; the new record, what to do and
/// what to tell come out. Nothing here touches the system or the database, so every phase ×
/// event × policy can be tested with made-up times (Tests/VigilCoreTests/MissionLifecycle*).
/// See docs/missions.md, "Lifecycle", for the rules and the diagram.
///
/// Three parts, each pure:
/// - `MissionLifecycle.apply`: the durable record (a `missions` row) through enqueue, claim,
///   the end of an attempt (result, corrupt result, dead shim, a shim that never started),
///   cancel and an operator's retry;
/// - `MissionLifecycle.watch`: a running attempt on the boot clock (cancel, `--timeout`,
///   `--silence-limit`: SIGTERM, SIGKILL after the grace, again every grace);
/// - `MissionLifecycle.claimable` and `KeyBreaker`: which pending missions may start now
///   (FIFO per lock key, one holder per key, retry backoff, keys paused by their breaker).
///
/// `MissionQueue` stores what `apply` returns and claims what `ClaimSelection` chooses (the
/// key breakers are `KeyBreaker`, stored by `VigilStore/KeyBreakers.swift`); `MissionRunner`
/// performs the actions and ends attempts for cancel, `--timeout` and `--silence-limit` with
/// `watch`.
public enum MissionPhase: String, Codable, Sendable, CaseIterable {
    case pending
    case running
    case done
    case failed
    case cancelled

    public var isFinal: Bool { self == .done || self == .failed || self == .cancelled }
}

/// Why the runner is ending a running attempt.
public enum StopCause: String, Codable, Sendable, CaseIterable {
    case cancel
    case timeout
    case silence
}

/// What a mission may do, chosen when it is added.
public struct MissionPolicy: Equatable, Sendable {
    /// Attempts in all, re-runs after a crash (a shim that died) included; at least 1.
    public var maxAttempts: Int
    /// Re-runs of an attempt that failed (non-zero exit, killed, timed out, silent).
    public var retries: Int
    /// The first retry's delay, doubled for each later one, capped, jittered (see `retryDelay`).
    public var retryBackoff: TimeSpan
    public var retryBackoffCap: TimeSpan
    /// An attempt that may have started its command is never started again after a crash.
    public var atMostOnce: Bool
    /// Ended (TERM, grace, KILL) this long after its attempt started.
    public var timeout: TimeSpan?
    /// Ended when it has written no output for this long.
    public var silenceLimit: TimeSpan?
    /// From SIGTERM to SIGKILL, and between SIGKILLs.
    public var termGrace: TimeSpan

    public init(maxAttempts: Int = 3, retries: Int = 0, retryBackoff: TimeSpan = .seconds(1), retryBackoffCap: TimeSpan = .seconds(60),
                atMostOnce: Bool = false, timeout: TimeSpan? = nil, silenceLimit: TimeSpan? = nil, termGrace: TimeSpan = .seconds(5)) {
        self.maxAttempts = max(1, maxAttempts)
        self.retries = max(0, retries)
        self.retryBackoff = retryBackoff
        self.retryBackoffCap = retryBackoffCap
        self.atMostOnce = atMostOnce
        self.timeout = timeout
        self.silenceLimit = silenceLimit
        self.termGrace = termGrace
    }
}

/// The durable part of a mission: what its row says. Times are wall-clock seconds since 1970
/// (`retryAt` must survive a reboot; see `MissionLifecycle.claimable` for wall jumps).
public struct MissionRecord: Equatable, Sendable {
    public var phase: MissionPhase = .pending
    /// Attempts started and counted (the running one included). Attempt numbers are 1, 2, …
    public var attempts: Int = 0
    /// Failed attempts that were retried (counts against `MissionPolicy.retries`) since the
    /// last operator's retry.
    public var retried: Int = 0
    /// `attempts` when an operator last retried the mission: the budgets count from there.
    public var attemptBase: Int = 0
    public var cancelRequested = false
    /// A retry is not claimed before this.
    public var retryAt: Double?
    /// Why it is in its phase (requeued, failed, cancelled), for people.
    public var reason: String?
    public var exitCode: Int32?
    public var signal: Int32?
    /// Set at an ended attempt of an at-most-once mission that may have run its command: it
    /// is never started again (the invariant the property tests check).
    public var mayHaveRun = false

    public init() {}
}

/// A fact about a mission, as the queue or the runner learned it.
public enum MissionEvent: Equatable, Sendable {
    /// Taken by the runner (only when `claimable` chose it): a new attempt.
    case claimed
    /// The claimed attempt's shim could not be started: pending again, not counted.
    case shimNotStarted(reason: String)
    /// The shim wrote its result: the command exited (`reason` set when it could not start).
    /// `stoppedFor`: the runner was ending the attempt for that cause when it exited.
    case exited(code: Int32, signal: Int32?, reason: String?, stoppedFor: StopCause?)
    /// The result file was there but corrupt (quarantined): no usable outcome.
    case resultCorrupt(why: String)
    /// The shim ended without a result. `mayHaveStarted`: the command may have run (its
    /// shim was recorded or found, or the attempt's start mark exists); false only when the
    /// shim is known never to have started it.
    case shimDied(reason: String, mayHaveStarted: Bool)
    /// `vigil mission cancel`.
    case cancelRequested
    /// `vigil mission retry`: a failed mission is queued again.
    case retryRequested
}

/// What the runner must do after a transition, in this order.
public enum MissionAction: Equatable, Sendable {
    /// Kill whatever the ended attempt left (cgroup, session, tagged processes) before the
    /// mission may start again or its key is released.
    case killLeftovers
    /// Start a shim for this attempt.
    case spawnShim(attempt: Int)
    /// Move the corrupt result file aside.
    case quarantineResult
    /// Release the lock key (in the transaction that records the transition).
    case releaseLock
    /// Signal every process of the running attempt (cancel, timeout, silence).
    case signal(Int32)
    /// Tell chat and the journal.
    case announce(MissionOutcome)
}

/// What became of a mission, for chat and the journal.
public enum MissionOutcome: Equatable, Sendable {
    case started(attempt: Int)
    case done
    case failed(reason: String)
    case cancelled(reason: String)
    /// A failed attempt will be retried at this wall time.
    case retryScheduled(at: Double, reason: String)
    /// A crash: queued again, the attempt counted.
    case requeued(reason: String)
    /// Queued again, the attempt not counted (its command never started).
    case requeuedUncounted(reason: String)
}

public struct MissionTransition: Equatable, Sendable {
    public var record: MissionRecord
    public var actions: [MissionAction]
}

public enum MissionLifecycle {
    // Signal numbers as on Linux (VigilCore makes no system calls; VigilSystem.Signal has the same numbers).
    public static let sigterm: Int32 = 15
    public static let sigkill: Int32 = 9

    /// The transition for `event`, or nil when the event does not apply to the record (a
    /// stale actor: the attempt it speaks of is over). `now` is wall-clock seconds; `jitter`
    /// in [0, 1) spreads retries (pass a random number; tests pass fixed ones).
    public static func apply(_ event: MissionEvent, to r: MissionRecord, policy: MissionPolicy, now: Double, jitter: Double = 0.5) -> MissionTransition? {
        var n = r
        switch (r.phase, event) {
        case (.pending, .claimed):
            guard !r.mayHaveRun else { return nil } // never again (at most once)
            n.phase = .running
            n.attempts += 1
            n.retryAt = nil
            return MissionTransition(record: n, actions: [.spawnShim(attempt: n.attempts), .announce(.started(attempt: n.attempts))])

        case (.pending, .cancelRequested):
            n.phase = .cancelled
            n.cancelRequested = true
            n.reason = "cancelled by an operator before it started"
            return MissionTransition(record: n, actions: [.announce(.cancelled(reason: n.reason!))])

        case (.running, .cancelRequested):
            guard !r.cancelRequested else { return MissionTransition(record: r, actions: []) }
            n.cancelRequested = true
            return MissionTransition(record: n, actions: [.signal(sigterm)])

        case (.running, .shimNotStarted(let reason)):
            n.phase = r.cancelRequested ? .cancelled : .pending
            n.attempts -= 1
            n.reason = r.cancelRequested ? "cancelled by an operator (\(reason))" : reason
            let told: MissionOutcome = r.cancelRequested ? .cancelled(reason: n.reason!) : .requeuedUncounted(reason: reason)
            return MissionTransition(record: n, actions: [.releaseLock, .announce(told)])

        case (.running, .exited(let code, let signal, let reason, let stoppedFor)):
            n.exitCode = code
            n.signal = signal
            if let reason { // could not start the command: retrying the same argv will not help
                return end(&n, .failed, reason: reason, actions: [.releaseLock])
            }
            let how = signal.map { "killed by \(SignalName.of($0))" } ?? "exited with status \(code)"
            if code == 0 { return end(&n, .done, reason: nil, actions: [.releaseLock]) }
            if r.cancelRequested { return end(&n, .cancelled, reason: "cancelled by an operator (\(how))", actions: [.releaseLock]) }
            var why = how
            switch stoppedFor {
            case .timeout: why = "timed out after \(policy.timeout.map(\.description) ?? "its timeout") (\(how))"
            case .silence: why = "silent for \(policy.silenceLimit.map(\.description) ?? "its silence limit") (\(how))"
            case .cancel, nil: break
            }
            if r.retried < policy.retries {
                n.phase = .pending
                n.retried += 1
                let at = now + retryDelay(retry: n.retried, policy: policy, jitter: jitter).seconds
                n.retryAt = at
                n.reason = "attempt \(r.attempts) \(why); retry \(n.retried) of \(policy.retries)"
                return MissionTransition(record: n, actions: [.releaseLock, .announce(.retryScheduled(at: at, reason: n.reason!))])
            }
            return end(&n, .failed, reason: r.retried > 0 ? "\(why) (after \(r.retried) retr\(r.retried == 1 ? "y" : "ies"))" : why,
                       actions: [.releaseLock])

        case (.running, .resultCorrupt(let why)):
            let reason = "its result file was corrupt (\(why)); the file was quarantined"
            return end(&n, r.cancelRequested ? .cancelled : .failed, reason: reason, actions: [.quarantineResult, .releaseLock])

        case (.running, .shimDied(let reason, let mayHaveStarted)):
            if r.cancelRequested {
                return end(&n, .cancelled, reason: "cancelled by an operator (\(reason))", actions: [.killLeftovers, .releaseLock])
            }
            if !mayHaveStarted {
                n.phase = .pending
                n.attempts -= 1
                n.reason = reason
                return MissionTransition(record: n, actions: [.killLeftovers, .releaseLock, .announce(.requeuedUncounted(reason: reason))])
            }
            if policy.atMostOnce {
                n.mayHaveRun = true
                return end(&n, .failed, reason: "interrupted: may have run (\(reason) on attempt \(r.attempts); at most once)",
                           actions: [.killLeftovers, .releaseLock])
            }
            if r.attempts - r.attemptBase >= policy.maxAttempts + r.retried {
                return end(&n, .failed, reason: "\(reason) on attempt \(r.attempts - r.attemptBase) of \(policy.maxAttempts); giving up",
                           actions: [.killLeftovers, .releaseLock])
            }
            n.phase = .pending
            n.reason = "attempt \(r.attempts - r.attemptBase) of \(policy.maxAttempts): \(reason); requeued"
            return MissionTransition(record: n, actions: [.killLeftovers, .releaseLock, .announce(.requeued(reason: n.reason!))])

        case (.failed, .retryRequested):
            guard !r.mayHaveRun else { return nil } // at most once: an operator must add it anew
            n.phase = .pending
            n.retryAt = nil
            n.retried = 0
            n.attemptBase = r.attempts
            n.reason = "retried by an operator"
            n.exitCode = nil
            n.signal = nil
            return MissionTransition(record: n, actions: [])

        case (.done, .cancelRequested), (.failed, .cancelRequested), (.cancelled, .cancelRequested):
            return MissionTransition(record: r, actions: []) // already over: nothing to do

        default:
            return nil
        }
    }

    private static func end(_ n: inout MissionRecord, _ phase: MissionPhase, reason: String?, actions: [MissionAction]) -> MissionTransition {
        n.phase = phase
        n.reason = reason
        n.retryAt = nil
        let told: MissionOutcome
        switch phase {
        case .done: told = .done
        case .cancelled: told = .cancelled(reason: reason ?? "cancelled")
        default: told = .failed(reason: reason ?? "failed")
        }
        return MissionTransition(record: n, actions: actions + [.announce(told)])
    }

    /// The delay before retry number `retry` (1, 2, …): `retryBackoff` doubled per earlier
    /// retry, capped at `retryBackoffCap`, then scaled into [½, 1] of that by `jitter` in
    /// [0, 1), so retries of missions that failed together spread out.
    public static func retryDelay(retry: Int, policy: MissionPolicy, jitter: Double) -> TimeSpan {
        let base = max(policy.retryBackoff.seconds, 0)
        let full = min(base * pow2(max(0, retry - 1)), max(policy.retryBackoffCap.seconds, base))
        let j = min(max(jitter, 0), 1)
        return .seconds(full * (0.5 + 0.5 * j))
    }

    private static func pow2(_ n: Int) -> Double {
        var v = 1.0
        for _ in 0..<min(n, 62) { v *= 2 }
        return v
    }
}

// MARK: - A running attempt on the boot clock

/// The runner's view of a running attempt (not stored: a restarted runner starts it again
/// from the attempt's start, which it reads from the row, and from now for output).
public struct AttemptWatch: Equatable, Sendable {
    public var startedAt: BootInstant
    public var lastOutputAt: BootInstant
    /// Why the runner is ending it, once it decided to.
    public var stopping: StopCause?
    public var termSentAt: BootInstant?
    public var killSentAt: BootInstant?

    public init(startedAt: BootInstant, lastOutputAt: BootInstant? = nil) {
        self.startedAt = startedAt
        self.lastOutputAt = lastOutputAt ?? startedAt
    }
}

extension MissionLifecycle {
    /// The attempt at `now`: starts ending it (SIGTERM) for a cancel, its timeout or its
    /// silence, whichever comes first, and SIGKILLs it `termGrace` after SIGTERM and again
    /// every `termGrace` while it lives. Returns the new watch and the signal to send, if any.
    public static func watch(_ w: AttemptWatch, cancelRequested: Bool, policy: MissionPolicy, now: BootInstant) -> (AttemptWatch, MissionAction?) {
        var n = w
        if let term = w.termSentAt {
            if now >= (w.killSentAt ?? term) + policy.termGrace {
                n.killSentAt = now
                return (n, .signal(sigkill))
            }
            return (n, nil)
        }
        let cause: StopCause?
        if cancelRequested {
            cause = .cancel
        } else if let t = policy.timeout, now >= w.startedAt + t {
            cause = .timeout
        } else if let s = policy.silenceLimit, now >= w.lastOutputAt + s {
            cause = .silence
        } else {
            cause = nil
        }
        guard let cause else { return (n, nil) }
        n.stopping = cause
        n.termSentAt = now
        return (n, .signal(sigterm))
    }

    /// When `watch` next decides something without a new fact (nil: only a fact can change it).
    public static func nextDeadline(_ w: AttemptWatch, cancelRequested: Bool, policy: MissionPolicy) -> BootInstant? {
        if let term = w.termSentAt { return (w.killSentAt ?? term) + policy.termGrace }
        if cancelRequested { return w.startedAt } // at once
        var d: [BootInstant] = []
        if let t = policy.timeout { d.append(w.startedAt + t) }
        if let s = policy.silenceLimit { d.append(w.lastOutputAt + s) }
        return d.min()
    }
}

// MARK: - Which pending missions may start

/// A pending mission as `claimable` needs it.
public struct PendingMission: Equatable, Sendable {
    public var id: Int64
    public var lockKey: String?
    public var retryAt: Double?
    /// A `retryAt` further ahead than this can only mean the wall clock went back (`isDue`).
    public var maxBackoff: TimeSpan
    /// The workspace repository it needs a slot of (docs/workspaces.md, "Handing out a slot").
    public var workspace: String?

    public init(id: Int64, lockKey: String? = nil, retryAt: Double? = nil, maxBackoff: TimeSpan = .seconds(60), workspace: String? = nil) {
        self.id = id
        self.lockKey = lockKey
        self.retryAt = retryAt
        self.maxBackoff = maxBackoff
        self.workspace = workspace
    }
}

extension MissionLifecycle {
    /// Whether a retry due at `retryAt` may start at `now` (nil: not a retry). Further ahead
    /// than the longest backoff counts as due: only a wall clock that went back puts it there,
    /// so no wall jump can hold a retry back.
    public static func isDue(retryAt: Double?, now: Double, maxBackoff: TimeSpan = .seconds(60)) -> Bool {
        guard let at = retryAt else { return true }
        return at <= now || at > now + maxBackoff.seconds
    }

    /// The pending missions to claim now, in id order, at most `limit`: one holder per key
    /// (keys in `held` are taken; a key goes to its lowest pending id, FIFO, and a mission
    /// behind it on the key waits even if the first is not due yet), none on a `paused` key,
    /// none whose retry is not due (`isDue`). A mission that needs a workspace slot takes one
    /// of `capacity[repo]` (the repository's available slots); when none is left, it and every
    /// later mission of that repository wait (FIFO per repository, like a key).
    public static func claimable(_ pending: [PendingMission], held: Set<String>, paused: Set<String> = [], limit: Int,
                                 now: Double, capacity: [String: Int] = [:]) -> [Int64] {
        var selection = ClaimSelection(held: held, paused: paused, limit: limit, now: now, capacity: capacity)
        for m in pending.sorted(by: { $0.id < $1.id }) where !selection.isFull { selection.consider(m) }
        return selection.chosen
    }
}

/// `claimable` one mission at a time, for a queue that reads its pending missions in batches
/// (in id order): what `MissionQueue` claims with. Same rules, same result.
public struct ClaimSelection: Sendable {
    private var taken: Set<String>
    private let paused: Set<String>
    private let limit: Int
    private let now: Double
    /// Free workspace slots per repository left in this pass.
    private var capacity: [String: Int]
    /// Repositories whose first waiting mission found no slot: the later ones wait too.
    private var starved: Set<String> = []
    public private(set) var chosen: [Int64] = []

    public init(held: Set<String>, paused: Set<String>, limit: Int, now: Double, capacity: [String: Int] = [:]) {
        taken = held
        self.paused = paused
        self.limit = max(0, limit)
        self.now = now
        self.capacity = capacity
    }

    public var isFull: Bool { chosen.count >= limit }

    /// Considers the next pending mission (ids must come in increasing order); true when it
    /// is chosen.
    @discardableResult
    public mutating func consider(_ m: PendingMission) -> Bool {
        guard !isFull else { return false }
        if let key = m.lockKey {
            if taken.contains(key) || paused.contains(key) { return false }
            taken.insert(key) // first in line for the key, due or not: FIFO
        }
        guard MissionLifecycle.isDue(retryAt: m.retryAt, now: now, maxBackoff: m.maxBackoff) else { return false }
        if let repo = m.workspace {
            // A retry not due yet takes no slot and holds nobody back; a due one first in line
            // without a slot makes the repository's later missions wait.
            guard !starved.contains(repo), let free = capacity[repo], free > 0 else {
                starved.insert(repo)
                return false
            }
            capacity[repo] = free - 1
        }
        chosen.append(m.id)
        return true
    }
}

// MARK: - A breaker per lock key

/// After `limit` missions on a key failed in a row, the key is paused: its missions wait (one
/// alert), until `coolOff` has passed (half-open: one mission may run; success closes, failure
/// pauses again) or an operator resumes it (`vigil mission resume-key KEY`). Cancelled
/// missions count neither way. Wall-clock seconds, like `retryAt`.
public struct KeyBreaker: Equatable, Sendable {
    public var failuresInARow = 0
    public var pausedAt: Double?
    /// Half-open: the trial mission was let through.
    public var trial = false

    public init() {}

    public enum Told: Equatable, Sendable {
        case paused(failures: Int)
        case closed
    }

    /// Whether missions on the key wait at `now`.
    public func isPaused(now: Double, coolOff: TimeSpan) -> Bool {
        guard let p = pausedAt else { return false }
        return !(now >= p + coolOff.seconds && !trial)
    }

    /// A mission on the key is claimed at `now` (call only when not paused): in half-open it
    /// is the trial.
    public mutating func claimed(now: Double, coolOff: TimeSpan) {
        if let p = pausedAt, now >= p + coolOff.seconds { trial = true }
    }

    /// A mission on the key ended (done or failed; not cancelled). Returns what to tell.
    public mutating func ended(success: Bool, now: Double, limit: Int) -> Told? {
        if success {
            let wasPaused = pausedAt != nil
            self = KeyBreaker()
            return wasPaused ? .closed : nil
        }
        failuresInARow += 1
        if trial {
            trial = false
            pausedAt = now
            return .paused(failures: failuresInARow)
        }
        if pausedAt == nil && failuresInARow >= max(1, limit) {
            pausedAt = now
            return .paused(failures: failuresInARow)
        }
        return nil
    }

    /// `vigil mission resume-key`.
    public mutating func resume() -> Told? {
        let wasPaused = pausedAt != nil
        self = KeyBreaker()
        return wasPaused ? .closed : nil
    }
}
