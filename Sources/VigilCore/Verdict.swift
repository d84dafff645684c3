/// What one probe concluded about the bridge. See docs/operator-guide.md, "Verdicts".
public enum Verdict: String, Codable, Sendable, CaseIterable {
    /// Identity alive, heartbeat fresh, version stamp equal to the current version.
    case healthy
    /// Alive and beating, but the stamped version differs from the program on disk now.
    case drifted
    /// Alive and beating, but its resident memory is above the configured limit.
    case bloated
    /// Alive (same PID and start time) but its heartbeat is stale.
    case hung
    /// The PID file names a process that is gone, a zombie, or a PID reused by another process.
    case dead
    /// No (valid) PID file at all: never started, cleaned up, or quarantined.
    case missing

    /// The tier that answers this verdict first: 1 for a live loop, 2 for a hung one, 3 when
    /// there is nothing left to ask.
    public var firstTier: Int {
        switch self {
        case .healthy: return 0
        case .drifted, .bloated: return 1
        case .hung: return 2
        case .dead, .missing: return 3
        }
    }

    /// True when the process named by the PID file is still running.
    public var processAlive: Bool {
        switch self {
        case .healthy, .drifted, .bloated, .hung: return true
        case .dead, .missing: return false
        }
    }
}

/// What a probe found, reduced to facts. Produced by the system layer from small files and
/// /proc; turned into a verdict by `classify`, which is pure.
public struct ProbeFacts: Equatable, Sendable {
    public enum Process: Equatable, Sendable {
        /// No identity file, or one that was corrupt and quarantined.
        case noIdentity
        /// The identity names a process that no longer runs as that identity.
        case gone
        /// The identity's PID runs with the recorded start time.
        case alive(rssBytes: UInt64?)
    }

    public var process: Process
    /// When the identified bridge last beat (its start when it has not beaten yet).
    public var lastBeat: BootInstant?
    /// The version the running bridge stamped.
    public var stampedVersion: String?
    /// The version of the program on disk now; nil when it cannot be determined (then no drift
    /// is judged).
    public var currentVersion: String?

    public init(process: Process, lastBeat: BootInstant? = nil, stampedVersion: String? = nil, currentVersion: String? = nil) {
        self.process = process
        self.lastBeat = lastBeat
        self.stampedVersion = stampedVersion
        self.currentVersion = currentVersion
    }
}

public struct ProbeLimits: Equatable, Sendable {
    public var staleAfter: TimeSpan
    public var rssLimit: UInt64?
    public init(staleAfter: TimeSpan, rssLimit: UInt64? = nil) {
        self.staleAfter = staleAfter
        self.rssLimit = rssLimit
    }
}

/// The verdict table, as a pure function.
public func classify(_ facts: ProbeFacts, now: BootInstant, limits: ProbeLimits) -> Verdict {
    switch facts.process {
    case .noIdentity:
        return .missing
    case .gone:
        return .dead
    case .alive(let rss):
        guard let beat = facts.lastBeat, now - beat < limits.staleAfter else { return .hung }
        if let current = facts.currentVersion, let stamped = facts.stampedVersion, current != stamped {
            return .drifted
        }
        if let limit = limits.rssLimit, let rss, rss > limit { return .bloated }
        return .healthy
    }
}
