import VigilStore

/// One anomaly `vigil doctor` found: what, why it matters, what to do, and whether `--fix`
/// can repair it.
public struct DoctorFinding: Sendable, Equatable {
    public enum Severity: String, Sendable, Comparable, CaseIterable {
        /// Worth knowing; needs no attention (does not make the exit code 1).
        case info
        /// Something is wrong or degraded.
        case warning
        /// Work or messages are at risk, or the watchdog cannot act.
        case critical

        var rank: Int { Severity.allCases.firstIndex(of: self)! }
        public static func < (a: Severity, b: Severity) -> Bool { a.rank < b.rank }
    }

    /// The check that found it (`missions.long-running`, `database.integrity`, …).
    public var check: String
    /// What it is about (`mission 12`, `heal.json`); with `check` it names the finding.
    public var subject: String?
    public var severity: Severity
    public var what: String
    public var why: String
    /// What a person can do.
    public var action: String
    /// What `--fix` does about it; nil when it needs a person.
    public var repair: DoctorRepair?
    /// `--fix` repaired it (checked by looking again afterwards).
    public var fixed = false
    /// Gone when looked at again after `--fix` (repaired, or resolved meanwhile).
    public var resolved = false
    /// What `--fix` did about it, or why it did nothing.
    public var note: String?

    public init(check: String, subject: String? = nil, severity: Severity, what: String, why: String, action: String,
                repair: DoctorRepair? = nil) {
        self.check = check
        self.subject = subject
        self.severity = severity
        self.what = what
        self.why = why
        self.action = action
        self.repair = repair
    }

    var key: String { check + "\u{1F}" + (subject ?? "") }

    /// Not info, and still there.
    public var needsAttention: Bool { severity != .info && !resolved }
}

/// What `--fix` can do about a finding. Each is safe to run while the bridge and the runner
/// run, or checks at the moment of repair that the process it could race is not running.
public enum DoctorRepair: Hashable, Sendable {
    /// `AtomicFile.sweepTemps` in these directories (temp files of dead writers only).
    case sweepTemps([String])
    /// `StateFiles.quarantine` (journaled), only while `writer` (if any) is not running.
    case quarantine(path: String, reason: String, writer: StateDirectory.Role?)
    /// `MissionQueue.releaseStaleLocks` (locks of holders that are not running).
    case releaseStaleLocks
    /// The runner's start-up recovery (`MissionRunner.recover`), only while no runner runs:
    /// it takes `missions.lock` first, as a runner would.
    case missionRecovery
    /// `MissionQueue.requestCancel`: the normal cancel path. Needs `--release-long-running`.
    case cancelMission(Int64)
    /// `Outbox.releaseInFlight` for senders that are gone.
    case releaseOutbox
    /// `wal_checkpoint(TRUNCATE)`.
    case checkpoint
    /// The schema migrations every Vigil command runs when it opens the database.
    case migrate
    /// `vigil workspace auto-recover` with its conservative defaults, and a worker for every slot
    /// being cleaned or cloned that nobody works on (docs/workspaces.md).
    case workspaceAutoRecover
    /// Deletes these files of `quarantine/`. Needs `--purge-quarantine`.
    case purgeQuarantine([String])

    /// The flag `--fix` needs beside itself for this repair.
    public var requiredFlag: String? {
        switch self {
        case .cancelMission: return "--release-long-running"
        case .purgeQuarantine: return "--purge-quarantine"
        default: return nil
        }
    }

    /// Repairs run in this order: files first, then the database, then missions.
    var phase: Int {
        switch self {
        case .sweepTemps: return 0
        case .quarantine: return 1
        case .migrate: return 2
        case .checkpoint: return 3
        case .releaseStaleLocks: return 4
        case .missionRecovery: return 5
        case .cancelMission: return 6
        case .workspaceAutoRecover: return 6
        case .releaseOutbox: return 7
        case .purgeQuarantine: return 8
        }
    }
}
