import Foundation
import VigilCore
import VigilStore
import VigilSystem

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
        func want(_ group: String) -> Bool { options.only?.contains(group) ?? true }
        if want("config") { scan.checkConfiguration() }
        if want("processes") { scan.checkProcesses() }
        if want("heal") { scan.checkHeal() }
        if want("state-files") { scan.checkStateFiles() }
        if want("quarantine") { scan.checkQuarantine() }
        if want("temp-files") { scan.checkTempFiles() }
        if want("disk") { scan.checkDisk() }
        if want("memory") { scan.checkMemory() }
        let needsDatabase = ["missions", "outbox", "workspaces"].contains(where: want)
        if want("database") || needsDatabase { scan.checkDatabase(integrity: want("database")) }
        if let db = scan.db {
            if want("missions") { scan.guarded("missions") { try scan.checkMissions(db) } }
            if want("outbox") { scan.guarded("outbox") { try scan.checkOutbox(db) } }
            if want("workspaces") { scan.guarded("workspaces") { try scan.checkWorkspaces(db) } }
        }
        return scan.findings
    }

    /// The groups of checks `--only` names, in the order they run; a finding's check name
    /// starts with its group (`database.wal` is in `database`).
    public static let groups = ["config", "processes", "heal", "state-files", "quarantine", "temp-files", "disk", "memory",
                                "database", "missions", "outbox", "workspaces"]

    /// The group a finding's check belongs to (`database.integrity` → `database`; `runner` and
    /// `bridge` and `stop` → `processes`; `heal.circuit` → `heal`).
    public static func group(ofCheck check: String) -> String {
        let head = String(check.split(separator: ".").first ?? Substring(check))
        switch head {
        case "runner", "bridge", "stop": return "processes"
        case "state-file": return "state-files"
        case "doctor": return "config"
        default: return head
        }
    }
}
