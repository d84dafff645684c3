/// The life of one outbox row as a pure function, like `HealMachine`: who may claim the head of
/// an adapter's queue now, and what an attempt's outcome does to the row. `Outbox` (SQL) stores
/// and claims; `DeliveryWorker` calls the chat server and applies the transition. Nothing here
/// touches the system. See docs/chat.md, "Delivery".
///
///     pending ──claim──► sending ──delivered──► delivered
///        ▲                 │  └───refused (4xx)──► failed
///        └──retryable──────┘  └───retryable, older than max age──► failed
///     sending, claimer gone or lease over ──take over──► sending (new claimer, attempts + 1)
///
/// Two processes deliver: the bridge (always) and the runner (standby: only while the bridge
/// cannot — not healthy, circuit open — or when the head has waited longer than a few seconds).
/// A claim carries the claimer's identity and a lease; a claim is taken over only when its
/// claimer is gone or its lease ran out, so each attempt is made by one process.
public enum OutboxLifecycle {
    /// The head of one adapter's queue (the oldest pending or sending row), reduced to facts.
    public struct Head: Equatable, Sendable {
        /// True while a claimer is sending it; false when pending.
        public var sending: Bool
        /// When a pending row may be tried next (nil: due now).
        public var nextAttempt: BootInstant?
        /// When a sending row's claim runs out (nil: unknown, e.g. written in an earlier boot or
        /// by an older Vigil — treated as run out).
        public var leaseUntil: BootInstant?
        /// How long the message has been in the outbox.
        public var waited: TimeSpan

        public init(sending: Bool, nextAttempt: BootInstant? = nil, leaseUntil: BootInstant? = nil, waited: TimeSpan = .zero) {
            self.sending = sending
            self.nextAttempt = nextAttempt
            self.leaseUntil = leaseUntil
            self.waited = waited
        }
    }

    /// Which deliverer is asking.
    public enum Role: Equatable, Sendable {
        /// The bridge: delivers whatever is due.
        case primary
        /// The runner: delivers while `active` (the bridge cannot), or a head that has waited
        /// at least `after` (the bridge is not getting it out).
        case standby(active: Bool, after: TimeSpan)
    }

    public enum Decision: Equatable, Sendable {
        /// Nothing to do until then (a pending row's next attempt).
        case notDue(BootInstant)
        /// Someone else holds a live claim; look again by `until` (the lease's end) at the latest.
        case busy(until: BootInstant?)
        /// A standby deliverer that is not needed yet: look again after `wait`.
        case notNeeded(wait: TimeSpan?)
        /// Claim the pending head.
        case claim
        /// Take the head over from a claimer that is gone or whose lease ran out.
        case takeOver
    }

    /// Who may act on the head now.
    public static func decide(_ head: Head, now: BootInstant, claimerGone: Bool, role: Role) -> Decision {
        let helpWait: TimeSpan?
        switch role {
        case .primary: helpWait = nil
        case .standby(let active, let after): helpWait = active || head.waited >= after ? nil : after - head.waited
        }
        if head.sending {
            let leaseOver = head.leaseUntil.map { now >= $0 } ?? true
            guard claimerGone || leaseOver else { return .busy(until: head.leaseUntil) }
            if let helpWait { return .notNeeded(wait: helpWait) }
            return .takeOver
        }
        if let next = head.nextAttempt, next > now { return .notDue(next) }
        if let helpWait { return .notNeeded(wait: helpWait) }
        return .claim
    }

    /// What an attempt came to.
    public enum Outcome: Equatable, Sendable {
        case delivered(remoteID: String?)
        /// Worth trying again (unreachable, timeout, 5xx, 429); `after` is a wait the server asked for.
        case retryable(String, after: TimeSpan?)
        /// Refused for good (another 4xx).
        case refused(String)
        /// Cut short by shutdown.
        case cancelled
    }

    public struct Policy: Equatable, Sendable {
        /// A message retried for this long without success fails (default 72 h).
        public var maxAge: TimeSpan
        /// At this attempt a message still not out is reported stuck (journal, status), once.
        public var stuckAfterAttempts: Int

        public init(maxAge: TimeSpan, stuckAfterAttempts: Int) {
            self.maxAge = maxAge
            self.stuckAfterAttempts = stuckAfterAttempts
        }
    }

    public enum Transition: Equatable, Sendable {
        case delivered(remoteID: String?)
        /// Back to pending, due at `at`. `stuck`: report it now (it just reached
        /// `stuckAfterAttempts`).
        case retry(at: BootInstant, error: String, stuck: Bool)
        /// Given up for good: visible as failed, and told through the other adapters.
        case failed(String)
    }

    /// The row's next state after an attempt (`attempts` counts this one).
    /// - Parameter backoff: the wait the backoff schedule gives after this attempt.
    public static func after(_ outcome: Outcome, attempts: Int, age: TimeSpan, now: BootInstant, backoff: TimeSpan,
                             policy: Policy) -> Transition {
        switch outcome {
        case .delivered(let id):
            return .delivered(remoteID: id)
        case .refused(let why):
            return .failed("refused: \(why)")
        case .cancelled:
            return .retry(at: now, error: "interrupted by shutdown", stuck: false)
        case .retryable(let why, let asked):
            if age >= policy.maxAge {
                return .failed("gave up after \(age) and \(attempts) attempts: \(why)")
            }
            let wait = max(backoff, asked ?? .zero)
            return .retry(at: now + wait, error: why, stuck: attempts == policy.stuckAfterAttempts)
        }
    }
}
