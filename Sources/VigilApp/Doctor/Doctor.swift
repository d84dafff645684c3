import FoundationEssentials
import VigilCore
import VigilStore
import VigilSystem

/// `vigil doctor`: looks at a state directory for anomalies and, with `fix`, repairs what is
/// safe, then looks again: a finding counts as fixed only when it is gone (or no longer needs
/// attention) afterwards. See docs/operator-guide.md, "Doctor".
public enum Doctor {
    public static func run(_ dir: StateDirectory, _ options: DoctorOptions) throws -> DoctorReport {
        var isDir = false
        guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDir) else {
            throw CommandError("no state directory at \(dir.path): nothing has run here (pass --state-dir or set VIGIL_STATE_DIR)")
        }
        guard isDir else { throw CommandError("\(dir.path) is not a directory (pass the state directory with --state-dir)") }
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
            scan.guarded("workspaces") { try scan.checkWorkspaces(db) }
        }
        return scan.findings
    }
}
