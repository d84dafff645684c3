import Foundation
import Glibc
import VigilCore
import VigilStore
import VigilSystem

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
        case .releaseOutbox: return 7
        case .purgeQuarantine: return 8
        }
    }
}

/// The thresholds and permissions of one `vigil doctor` run.
public struct DoctorOptions: Sendable {
    /// Repair what is safe.
    public var fix = false
    /// With `fix`: cancel missions running longer than `maxRuntime`.
    public var releaseLongRunning = false
    /// With `fix`: delete files in `quarantine/` older than `quarantineAge`.
    public var purgeQuarantine = false
    public var maxRuntime = TimeSpan.seconds(6 * 3600)
    /// Outbox messages undelivered (or in flight) longer than this are stuck.
    public var stuckAfter = TimeSpan.seconds(600)
    public var quarantineAge = TimeSpan.seconds(30 * 86400)
    /// A WAL file larger than this is checkpointed by `--fix`.
    public var maxWAL: UInt64 = 64 << 20
    /// Free space below this, or below `minFreePercent`, is low.
    public var minFreeBytes: UInt64 = 100 << 20
    public var minFreePercent = 5.0
    /// How long a database statement waits for another writer.
    public var busyTimeout = TimeSpan.seconds(2)

    public init() {}
}

/// What one run found and did.
public struct DoctorReport: Sendable {
    public var stateDir: String
    public var fixMode: Bool
    public var findings: [DoctorFinding]

    public var fixedCount: Int { findings.filter(\.fixed).count }
    /// Findings a person must handle: after `--fix`, everything still needing attention;
    /// without it, what `--fix` cannot repair.
    public var needsPersonCount: Int { findings.filter(needsPerson).count }
    /// Without `--fix`: what `--fix` would repair (some only with an extra flag).
    public var fixableCount: Int { fixMode ? 0 : findings.filter { $0.needsAttention && $0.repair != nil }.count }
    public var remainingCount: Int { findings.filter(\.needsAttention).count }
    /// 0 when nothing needs attention, 1 when findings remain.
    public var exitCode: Int32 { remainingCount > 0 ? 1 : 0 }

    func needsPerson(_ f: DoctorFinding) -> Bool {
        f.needsAttention && (fixMode || f.repair == nil)
    }

    /// `vigil doctor --json`.
    public var json: JSONValue {
        .object([
            "state_dir": .string(stateDir),
            "fix": .bool(fixMode),
            "ok": .bool(remainingCount == 0),
            "fixed": .int(Int64(fixedCount)),
            "needs_person": .int(Int64(needsPersonCount)),
            "fixable": .int(Int64(fixableCount)),
            "remaining": .int(Int64(remainingCount)),
            "findings": .array(findings.map { f in
                .object([
                    "check": .string(f.check),
                    "subject": f.subject.map { .string($0) } ?? .null,
                    "severity": .string(f.severity.rawValue),
                    "what": .string(f.what),
                    "why": .string(f.why),
                    "action": .string(f.action),
                    "fixable": .bool(f.repair != nil),
                    "requires": f.repair?.requiredFlag.map { .string($0) } ?? .null,
                    "fixed": .bool(f.fixed),
                    "needs_person": .bool(needsPerson(f)),
                    "note": f.note.map { .string($0) } ?? .null,
                ])
            }),
        ])
    }

    /// The list for people.
    public var text: String {
        var lines = ["vigil doctor: \(stateDir)"]
        if findings.isEmpty {
            lines.append("No problems found.")
            return lines.joined(separator: "\n")
        }
        for f in findings {
            let label = f.fixed ? "FIXED" : f.severity.rawValue.uppercased()
            lines.append("")
            lines.append("\(label.padding(toLength: 9, withPad: " ", startingAt: 0))\(f.what)")
            lines.append("         why: \(f.why)")
            if !f.fixed { lines.append("         do:  \(f.action)") }
            if let note = f.note {
                lines.append("         fix: \(note)")
            } else if f.needsAttention, let r = f.repair {
                lines.append("         fix: `vigil doctor --fix\(r.requiredFlag.map { " " + $0 } ?? "")` repairs this")
            } else if f.needsAttention {
                lines.append("         fix: needs a person")
            }
        }
        lines.append("")
        var summary = "\(findings.count) finding\(findings.count == 1 ? "" : "s"): "
        var parts: [String] = []
        if fixMode { parts.append("\(fixedCount) fixed") }
        if !fixMode && fixableCount > 0 { parts.append("\(fixableCount) --fix can repair") }
        parts.append("\(needsPersonCount) need\(needsPersonCount == 1 ? "s" : "") a person")
        let info = findings.filter { $0.severity == .info && !$0.fixed }.count
        if info > 0 { parts.append("\(info) for information") }
        summary += parts.joined(separator: ", ") + "."
        lines.append(summary)
        return lines.joined(separator: "\n")
    }
}

/// `vigil doctor`: looks at a state directory for anomalies and, with `fix`, repairs what is
/// safe, then looks again: a finding counts as fixed only when it is gone (or no longer needs
/// attention) afterwards. See docs/operator-guide.md, "Doctor".
public enum Doctor {
    public static func run(_ dir: StateDirectory, _ options: DoctorOptions) throws -> DoctorReport {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir) else {
            throw CommandError("no state directory at \(dir.path): nothing has run here (pass --state-dir or set VIGIL_STATE_DIR)")
        }
        guard isDir.boolValue else { throw CommandError("\(dir.path) is not a directory (pass the state directory with --state-dir)") }
        let before = examine(dir, options)
        guard options.fix else { return DoctorReport(stateDir: dir.path, fixMode: false, findings: before) }

        let outcomes = repair(before, dir, options)
        let after = examine(dir, options)
        let afterByKey = Dictionary(after.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        var final: [DoctorFinding] = []
        for var f in before {
            let outcome = f.repair.flatMap { outcomes[$0] }
            if let now = afterByKey[f.key], now.needsAttention || f.severity == .info {
                // Still there: show it as it is now, with what --fix did.
                var g = now
                g.note = outcome.map { $0.note(stillThere: true) }
                final.append(g)
                continue
            }
            f.resolved = true
            if case .done(let text)? = outcome {
                f.fixed = true
                f.note = text
            } else {
                f.note = outcome.map { $0.note(stillThere: false) } ?? "no longer present"
            }
            if let now = afterByKey[f.key] { f.note = (f.note ?? "") + "; now: " + now.what }
            final.append(f)
        }
        let known = Set(before.map(\.key))
        final += after.filter { !known.contains($0.key) }
        return DoctorReport(stateDir: dir.path, fixMode: true, findings: final)
    }

    /// What a repair came to.
    enum RepairOutcome {
        case done(String)
        case skipped(String)
        case failed(String)

        func note(stillThere: Bool) -> String {
            switch self {
            case .done(let t): return stillThere ? "\(t); but it is still there" : t
            case .skipped(let t): return "not done: \(t)"
            case .failed(let t): return "failed: \(t)"
            }
        }
    }

    /// All checks, in the order they are shown. Never throws: a check that cannot run reports
    /// that as a finding.
    public static func examine(_ dir: StateDirectory, _ options: DoctorOptions) -> [DoctorFinding] {
        let scan = DoctorScan(dir: dir, options: options)
        scan.checkConfiguration()
        scan.checkProcesses()
        scan.checkHeal()
        scan.checkStateFiles()
        scan.checkQuarantine()
        scan.checkTempFiles()
        scan.checkDisk()
        scan.checkDatabase()
        if let db = scan.db {
            scan.guarded("missions") { try scan.checkMissions(db) }
            scan.guarded("outbox") { try scan.checkOutbox(db) }
        }
        return scan.findings
    }
}
